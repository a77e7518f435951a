//! Image encoding: JPEG with libjpeg-turbo straight from the captured BGRX pixels (4:2:0), PNG on
//! request, and an area-averaging downscale to fit a bound. Buffers are kept between frames:
//! fresh multi-megabyte buffers per frame cost more than the encode itself.

use turbojpeg::{Compressor, Image, PixelFormat, Subsamp};

use crate::capture::Bgrx;
use crate::error::{AgentError, Result};

pub const DEFAULT_QUALITY: u8 = 75;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg { quality: u8 },
    Png,
}

/// An encoded image and its size in pixels.
#[derive(Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

pub struct Encoder {
    jpeg: Compressor,
    scaled: Vec<u8>,
    out: Vec<u8>,
}

/// The size that fits `(w, h)` inside the bounds (0 = unbounded), keeping the aspect ratio and
/// never enlarging.
pub fn fit(w: usize, h: usize, max_w: usize, max_h: usize) -> (usize, usize) {
    let sx = if max_w == 0 {
        1.0
    } else {
        (max_w as f64 / w as f64).min(1.0)
    };
    let sy = if max_h == 0 {
        1.0
    } else {
        (max_h as f64 / h as f64).min(1.0)
    };
    let s = sx.min(sy);
    if s >= 1.0 {
        return (w, h);
    }
    (
        ((w as f64 * s).round() as usize).max(1),
        ((h as f64 * s).round() as usize).max(1),
    )
}

/// Downscales BGRX by averaging the source pixels each destination pixel covers.
pub fn downscale(src: &Bgrx<'_>, dw: usize, dh: usize, dst: &mut Vec<u8>) {
    dst.clear();
    dst.resize(dw * dh * 4, 0);
    for dy in 0..dh {
        let y0 = dy * src.height / dh;
        let y1 = ((dy + 1) * src.height / dh).max(y0 + 1);
        for dx in 0..dw {
            let x0 = dx * src.width / dw;
            let x1 = ((dx + 1) * src.width / dw).max(x0 + 1);
            let mut acc = [0u32; 3];
            for y in y0..y1 {
                let row = &src.data[(y * src.width + x0) * 4..(y * src.width + x1) * 4];
                for px in row.chunks_exact(4) {
                    acc[0] += u32::from(px[0]);
                    acc[1] += u32::from(px[1]);
                    acc[2] += u32::from(px[2]);
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let o = (dy * dw + dx) * 4;
            dst[o] = (acc[0] / n) as u8;
            dst[o + 1] = (acc[1] / n) as u8;
            dst[o + 2] = (acc[2] / n) as u8;
            dst[o + 3] = 0xff;
        }
    }
}

impl Encoder {
    pub fn new() -> Result<Self> {
        let mut jpeg = Compressor::new().map_err(|e| AgentError::Encode(e.to_string()))?;
        jpeg.set_subsamp(Subsamp::Sub2x2);
        Ok(Encoder {
            jpeg,
            scaled: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Encodes a capture, downscaled first when it does not fit `max_w`×`max_h`.
    pub fn encode(&mut self, src: &Bgrx<'_>, format: Format, max_w: usize, max_h: usize) -> Result<Encoded> {
        let (w, h) = fit(src.width, src.height, max_w, max_h);
        let pixels: &[u8] = if (w, h) == (src.width, src.height) {
            src.data
        } else {
            downscale(src, w, h, &mut self.scaled);
            &self.scaled
        };
        let bytes = match format {
            Format::Jpeg { quality } => {
                self.jpeg.set_quality(i32::from(quality.clamp(1, 100)));
                let image = Image {
                    pixels,
                    width: w,
                    pitch: w * 4,
                    height: h,
                    format: PixelFormat::BGRX,
                };
                let need = self
                    .jpeg
                    .buf_len(w, h)
                    .map_err(|e| AgentError::Encode(e.to_string()))?;
                if self.out.len() < need {
                    self.out.resize(need, 0);
                }
                let n = self
                    .jpeg
                    .compress_to_slice(image, &mut self.out)
                    .map_err(|e| AgentError::Encode(e.to_string()))?;
                self.out[..n].to_vec()
            }
            Format::Png => encode_png(pixels, w, h)?,
        };
        Ok(Encoded {
            bytes,
            width: w,
            height: h,
        })
    }
}

fn encode_png(bgrx: &[u8], w: usize, h: usize) -> Result<Vec<u8>> {
    let rgb: Vec<u8> = bgrx.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
    let mut out = Vec::with_capacity(rgb.len() / 4);
    let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut writer = enc
        .write_header()
        .map_err(|e| AgentError::Encode(e.to_string()))?;
    writer
        .write_image_data(&rgb)
        .map_err(|e| AgentError::Encode(e.to_string()))?;
    writer.finish().map_err(|e| AgentError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_never_enlarges() {
        assert_eq!(fit(1280, 800, 0, 0), (1280, 800));
        assert_eq!(fit(1280, 800, 640, 0), (640, 400));
        assert_eq!(fit(1280, 800, 0, 400), (640, 400));
        assert_eq!(fit(1280, 800, 1024, 768), (1024, 640));
        assert_eq!(fit(100, 50, 4000, 4000), (100, 50));
        assert_eq!(fit(1000, 1, 10, 10), (10, 1));
    }

    #[test]
    fn downscale_averages_blocks() {
        // 2x2 image: two red pixels above two blue ones, down to 1x1 = their average.
        let data = [0, 0, 200, 0, 0, 0, 200, 0, 100, 0, 0, 0, 100, 0, 0, 0];
        let src = Bgrx {
            data: &data,
            width: 2,
            height: 2,
        };
        let mut out = Vec::new();
        downscale(&src, 1, 1, &mut out);
        assert_eq!(out, vec![50, 0, 100, 255]);
    }

    #[test]
    fn jpeg_and_png_round_trip_sizes() {
        let data: Vec<u8> = (0..64 * 32).flat_map(|i| [(i % 256) as u8, 0, 255, 0]).collect();
        let src = Bgrx {
            data: &data,
            width: 64,
            height: 32,
        };
        let mut enc = Encoder::new().unwrap();
        let jpeg = enc.encode(&src, Format::Jpeg { quality: 80 }, 32, 0).unwrap();
        assert_eq!((jpeg.width, jpeg.height), (32, 16));
        assert_eq!(&jpeg.bytes[..2], &[0xff, 0xd8]);
        let png = enc.encode(&src, Format::Png, 0, 0).unwrap();
        assert_eq!(&png.bytes[1..4], b"PNG");
        let decoded = png::Decoder::new(std::io::Cursor::new(png.bytes))
            .read_info()
            .unwrap();
        assert_eq!((decoded.info().width, decoded.info().height), (64, 32));
    }
}
