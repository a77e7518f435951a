//! Screen capture. The X server copies the root window straight into a System V shared-memory
//! segment (MIT-SHM) that lives as long as the connection; plain `GetImage` is the fallback when
//! the server lacks the extension or the segment cannot be shared. Pixels come out as BGRX,
//! 4 bytes a pixel, which the encoder takes as they are.

use x11rb::connection::Connection;
use x11rb::protocol::shm::ConnectionExt as _;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, ImageOrder};

use crate::error::{AgentError, Result};
use crate::x11::XConn;

/// A rectangle of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
}

/// A captured BGRX image borrowed from the capturer's buffers until the next capture.
pub struct Bgrx<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
}

/// Capture state on its own X connection: the shared segment when MIT-SHM works, else a
/// reusable buffer for `GetImage` replies.
pub struct Capturer {
    pub x: XConn,
    shm: Option<shm_segment::Segment>,
    fallback: Vec<u8>,
}

impl Capturer {
    pub fn connect(display: &str) -> Result<Self> {
        let x = XConn::open(display)?;
        let setup = x.conn.setup();
        let bpp32 = setup
            .pixmap_formats
            .iter()
            .any(|f| f.depth == x.depth && f.bits_per_pixel == 32);
        if !(x.depth == 24 || x.depth == 32) || !bpp32 || setup.image_byte_order != ImageOrder::LSB_FIRST {
            return Err(AgentError::Unsupported(format!(
                "screen depth {} is not supported; start the display with 24-bit colour",
                x.depth
            )));
        }
        let size = usize::from(x.width) * usize::from(x.height) * 4;
        let shm = match shm_segment::Segment::attach(&x, size) {
            Ok(seg) => Some(seg),
            Err(e) => {
                tracing::warn!(error = %e, "MIT-SHM unavailable, capturing with GetImage");
                None
            }
        };
        Ok(Capturer {
            x,
            shm,
            fallback: Vec::new(),
        })
    }

    /// Whether captures go through shared memory.
    pub fn uses_shm(&self) -> bool {
        self.shm.is_some()
    }

    pub fn full_screen(&self) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: self.x.width,
            height: self.x.height,
        }
    }

    /// Checks that a region lies inside the screen and is not empty.
    pub fn check_region(&self, r: Rect) -> Result<Rect> {
        let fits_x = u32::from(r.x) + u32::from(r.width) <= u32::from(self.x.width);
        let fits_y = u32::from(r.y) + u32::from(r.height) <= u32::from(self.x.height);
        if r.width == 0 || r.height == 0 || !fits_x || !fits_y {
            return Err(AgentError::InvalidArgument(format!(
                "region {}x{} at ({}, {}) does not fit the {}x{} screen",
                r.width, r.height, r.x, r.y, self.x.width, self.x.height
            )));
        }
        Ok(r)
    }

    pub fn capture(&mut self, r: Rect) -> Result<Bgrx<'_>> {
        let len = usize::from(r.width) * usize::from(r.height) * 4;
        let (w, h) = (usize::from(r.width), usize::from(r.height));
        if let Some(seg) = &self.shm {
            let reply = self
                .x
                .conn
                .shm_get_image(
                    self.x.root,
                    r.x as i16,
                    r.y as i16,
                    r.width,
                    r.height,
                    !0,
                    ImageFormat::Z_PIXMAP.into(),
                    seg.id,
                    0,
                )?
                .reply()?;
            debug_assert!(reply.size as usize >= len);
            return Ok(Bgrx {
                data: &seg.bytes()[..len],
                width: w,
                height: h,
            });
        }
        let reply = self
            .x
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.x.root,
                r.x as i16,
                r.y as i16,
                r.width,
                r.height,
                !0,
            )?
            .reply()?;
        self.fallback = reply.data;
        if self.fallback.len() < len {
            return Err(AgentError::X11("GetImage returned a short image".into()));
        }
        Ok(Bgrx {
            data: &self.fallback[..len],
            width: w,
            height: h,
        })
    }
}

/// The one place that touches shared memory.
#[allow(unsafe_code)]
mod shm_segment {
    use x11rb::connection::{Connection, RequestConnection};
    use x11rb::protocol::shm::ConnectionExt as _;

    use crate::error::{AgentError, Result};
    use crate::x11::XConn;

    /// A segment attached to this process and to the X server, already marked for removal so
    /// it disappears with the last detach even if the agent is killed.
    pub struct Segment {
        pub id: u32,
        addr: *mut u8,
        size: usize,
    }

    // SAFETY: the mapping is plain memory owned by this value; access goes through `&self`/`&mut`
    // borrows of the capturer, which a mutex serialises.
    unsafe impl Send for Segment {}

    impl Segment {
        pub fn attach(x: &XConn, size: usize) -> Result<Self> {
            x.conn
                .extension_information(x11rb::protocol::shm::X11_EXTENSION_NAME)?
                .ok_or_else(|| AgentError::Unsupported("no MIT-SHM extension".into()))?;
            x.conn.shm_query_version()?.reply()?;
            // SAFETY: shmget has no memory-safety preconditions; the result is checked.
            let shmid = unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | 0o600) };
            if shmid < 0 {
                return Err(AgentError::Unsupported(format!(
                    "shmget: {}",
                    std::io::Error::last_os_error()
                )));
            }
            // SAFETY: shmid is a segment we just created; a null address lets the kernel choose.
            let addr = unsafe { libc::shmat(shmid, std::ptr::null(), 0) };
            let attached = addr as isize != -1;
            let seg = attached.then(|| x.conn.generate_id());
            let server_attached = match seg {
                Some(Ok(id)) => x
                    .conn
                    .shm_attach(id, shmid as u32, false)
                    .map_err(AgentError::from)
                    .and_then(|c| c.check().map_err(AgentError::from))
                    .map(|()| id),
                Some(Err(e)) => Err(e.into()),
                None => Err(AgentError::Unsupported(format!(
                    "shmat: {}",
                    std::io::Error::last_os_error()
                ))),
            };
            // SAFETY: marks our own segment for removal; it stays mapped while attached.
            unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
            match server_attached {
                Ok(id) => Ok(Segment {
                    id,
                    addr: addr.cast(),
                    size,
                }),
                Err(e) => {
                    if attached {
                        // SAFETY: addr came from a successful shmat above and is not used again.
                        unsafe { libc::shmdt(addr) };
                    }
                    Err(e)
                }
            }
        }

        pub fn bytes(&self) -> &[u8] {
            // SAFETY: addr maps `size` bytes for as long as self lives; the server writes them
            // only during a GetImage whose reply we have already waited for.
            unsafe { std::slice::from_raw_parts(self.addr, self.size) }
        }
    }

    impl Drop for Segment {
        fn drop(&mut self) {
            // SAFETY: addr came from shmat and is detached exactly once, here.
            unsafe { libc::shmdt(self.addr.cast()) };
        }
    }
}
