//! Connections to the desktop's X server. Each component (capture, input) owns one connection,
//! made on first use and made again after the server went away (the supervisor restarts Xvfb),
//! so no call pays for connecting and a dead server costs one failed call, not a dead agent.

use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

use crate::error::{AgentError, Result};

/// One open connection and the facts of its screen.
pub struct XConn {
    pub conn: RustConnection,
    pub root: u32,
    pub width: u16,
    pub height: u16,
    pub depth: u8,
}

impl XConn {
    pub fn open(display: &str) -> Result<Self> {
        let (conn, screen_num) = x11rb::connect(Some(display))
            .map_err(|e| AgentError::DisplayUnavailable(format!("cannot connect to {display}: {e}")))?;
        let screen = &conn.setup().roots[screen_num];
        let (root, width, height, depth) = (
            screen.root,
            screen.width_in_pixels,
            screen.height_in_pixels,
            screen.root_depth,
        );
        Ok(XConn {
            conn,
            root,
            width,
            height,
            depth,
        })
    }

    /// A round trip: every request sent before it has been processed by the server when it returns.
    pub fn sync(&self) -> Result<()> {
        self.conn.get_input_focus()?.reply()?;
        Ok(())
    }

    /// Sends one XTest event (a key or button press or release, or a motion to `x`, `y`).
    pub fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<()> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0)?;
        Ok(())
    }

    /// Checks that a point lies on the screen.
    pub fn check_point(&self, x: i32, y: i32) -> Result<(i16, i16)> {
        let (w, h) = (i32::from(self.width), i32::from(self.height));
        if !(0..w).contains(&x) || !(0..h).contains(&y) {
            return Err(AgentError::InvalidArgument(format!(
                "point ({x}, {y}) is outside the screen (x 0–{}, y 0–{})",
                w - 1,
                h - 1
            )));
        }
        Ok((x as i16, y as i16))
    }
}

/// A component state built on a connection, rebuilt when the connection breaks.
pub struct Reconnecting<S> {
    display: String,
    state: Option<S>,
}

impl<S> Reconnecting<S> {
    pub fn new(display: impl Into<String>) -> Self {
        Reconnecting {
            display: display.into(),
            state: None,
        }
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// Runs `f` on the state, connecting first if needed; a disconnect drops the state so the
    /// next call connects again.
    pub fn with<T>(
        &mut self,
        connect: impl FnOnce(&str) -> Result<S>,
        f: impl FnOnce(&mut S) -> Result<T>,
    ) -> Result<T> {
        if self.state.is_none() {
            self.state = Some(connect(&self.display)?);
        }
        let state = self.state.as_mut().expect("state was just set");
        let result = f(state);
        if matches!(&result, Err(e) if e.is_disconnect()) {
            self.state = None;
        }
        result
    }

    /// The state if connected, without connecting.
    pub fn get_mut(&mut self) -> Option<&mut S> {
        self.state.as_mut()
    }
}
