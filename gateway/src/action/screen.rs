//! The screen's bounds, and the actions that read the screen: a screenshot (its format,
//! scaling and region, from the query string) and the pointer's position.

use serde::Deserialize;

use super::{Action, ImageFormat, Input, Point, Region, Shot};
use crate::json::{Invalid, parse_query};

/// A desktop's screen size in pixels: coordinates are checked against it, errors name the
/// field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screen {
    width: u32,
    height: u32,
}

impl Screen {
    pub fn new(width: u32, height: u32) -> Screen {
        Screen { width, height }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// `v` as a column, named `field` in the error.
    pub fn x(&self, field: &str, v: i64) -> Result<i32, Invalid> {
        axis(field, v, self.width)
    }

    /// `v` as a row, named `field` in the error.
    pub fn y(&self, field: &str, v: i64) -> Result<i32, Invalid> {
        axis(field, v, self.height)
    }

    /// The point (`x`, `y`).
    pub fn point(&self, x: i64, y: i64) -> Result<Point, Invalid> {
        Ok(Point {
            x: self.x("x", x)?,
            y: self.y("y", y)?,
        })
    }
}

fn axis(field: &str, v: i64, size: u32) -> Result<i32, Invalid> {
    if v < 0 || v >= i64::from(size) {
        return Err(Invalid(format!(
            "{field}={v} is outside the screen (0–{})",
            size - 1
        )));
    }
    Ok(v as i32)
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct ScreenshotQuery {
    response_format: Option<String>,
    format: Option<String>,
    quality: Option<u32>,
    max_width: Option<u32>,
    max_height: Option<u32>,
    x: Option<u32>,
    y: Option<u32>,
    width: Option<u32>,
    height: Option<u32>,
}

/// A screenshot's numbers as asked, before they are checked; absent ones take their defaults.
/// Every way in that takes a screenshot fills one and checks it with [`Asked::shot`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    pub quality: Option<u32>,
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    /// Any of x, y, width, height makes a region: x and y default to 0, and width and height
    /// to the rest of the screen from there, which also bounds them.
    pub x: Option<u32>,
    pub y: Option<u32>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl Asked {
    /// The screenshot asked for on `screen`, or the error naming the field: quality 1–100,
    /// bounds at most 65535, a region's corner on the screen.
    pub fn shot(self, screen: &Screen, format: ImageFormat, keep: bool) -> Result<Shot, Invalid> {
        if self.quality.is_some_and(|v| !(1..=100).contains(&v)) {
            return Err(Invalid("quality must be from 1 to 100".into()));
        }
        if self.max_width.max(self.max_height).is_some_and(|v| v > 65_535) {
            return Err(Invalid(
                "max_width and max_height must be at most 65535 (0: no bound)".into(),
            ));
        }
        let region = match (self.x, self.y, self.width, self.height) {
            (None, None, None, None) => None,
            (x, y, width, height) => {
                let at = screen.point(i64::from(x.unwrap_or(0)), i64::from(y.unwrap_or(0)))?;
                let (x, y) = (at.x as u32, at.y as u32);
                let (rest_w, rest_h) = (screen.width - x, screen.height - y);
                let fits = |v: Option<u32>, max: u32| v.is_none_or(|v| (1..=max).contains(&v));
                if !fits(width, screen.width) || !fits(height, screen.height) {
                    return Err(Invalid(format!(
                        "a region's width and height must be from 1 to the screen's {}x{}",
                        screen.width, screen.height
                    )));
                }
                Some(Region {
                    x,
                    y,
                    width: width.map_or(rest_w, |w| w.min(rest_w)),
                    height: height.map_or(rest_h, |h| h.min(rest_h)),
                })
            }
        };
        Ok(Shot {
            format,
            quality: self.quality.unwrap_or(0),
            max_width: self.max_width.unwrap_or(0),
            max_height: self.max_height.unwrap_or(0),
            region,
            keep,
        })
    }
}

/// `GET …/screenshot?format=jpeg|png&quality=&max_width=&max_height=&x=&y=&width=&height=
/// &response_format=base64|url`.
pub(super) fn screenshot(input: Input<'_>, screen: &Screen) -> Result<Action, Invalid> {
    let q: ScreenshotQuery = parse_query(input.query)?;
    let format = match q.format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("jpeg") | Some("jpg") => ImageFormat::Jpeg,
        Some("png") => ImageFormat::Png,
        Some(other) => {
            return Err(Invalid(format!("format must be jpeg or png, not {other:?}")));
        }
    };
    let keep = match q.response_format.as_deref() {
        None | Some("base64") => false,
        Some("url") => true,
        Some(other) => {
            return Err(Invalid(format!(
                "response_format must be base64 or url, not {other:?}"
            )));
        }
    };
    let asked = Asked {
        quality: q.quality,
        max_width: q.max_width,
        max_height: q.max_height,
        x: q.x,
        y: q.y,
        width: q.width,
        height: q.height,
    };
    Ok(Action::Screenshot(asked.shot(screen, format, keep)?))
}

/// `GET …/cursor`.
pub(super) fn cursor(_: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    Ok(Action::Cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(query: &str) -> Result<Shot, String> {
        let input = Input { body: b"", query };
        match screenshot(input, &Screen::new(1280, 800)) {
            Ok(Action::Screenshot(s)) => Ok(s),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn a_plain_screenshot_is_a_whole_jpeg_inline() {
        let s = shot("").unwrap();
        assert_eq!(
            s,
            Shot {
                format: ImageFormat::Jpeg,
                quality: 0,
                max_width: 0,
                max_height: 0,
                region: None,
                keep: false,
            }
        );
        let s = shot("format=PNG&response_format=url&quality=50&max_width=640").unwrap();
        assert_eq!(
            (s.format, s.keep, s.quality, s.max_width),
            (ImageFormat::Png, true, 50, 640)
        );
    }

    #[test]
    fn regions_default_to_the_rest_of_the_screen_and_stay_on_it() {
        let r = shot("x=1000&y=700").unwrap().region.unwrap();
        assert_eq!(
            r,
            Region {
                x: 1000,
                y: 700,
                width: 280,
                height: 100
            }
        );
        let r = shot("width=5000").unwrap_err();
        assert!(r.contains("width and height"), "{r}");
        let r = shot("x=5&width=2000").unwrap_err();
        assert!(r.contains("width and height"), "{r}");
        let r = shot("x=5&width=1280").unwrap().region.unwrap();
        assert_eq!(r.width, 1275, "clipped to the screen's edge");
        assert!(shot("height=0").unwrap_err().contains("width and height"));
        assert!(
            shot("x=1280")
                .unwrap_err()
                .contains("x=1280 is outside the screen (0–1279)")
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, needle) in [
            ("format=gif", "format must be jpeg or png, not \"gif\""),
            ("response_format=xml", "response_format"),
            ("quality=0", "quality must be from 1 to 100"),
            ("quality=101", "quality"),
            ("quality=abc", "query: quality:"),
            ("max_height=70000", "65535"),
            ("x=-1", "query: x:"),
        ] {
            let e = shot(query).unwrap_err();
            assert!(e.contains(needle), "{query}: {e}");
        }
    }
}
