//! Pointer and keyboard input through XTest on the input connection (the keyboard's own logic is
//! in [`crate::keyboard`]). Every action ends with a round trip, so when a call returns the
//! server has delivered its events. The agent owns click timing: a double click is two clicks
//! inside the double-click interval, and two separate click calls at the same spot are spaced so
//! that applications never merge them into one.

use std::time::{Duration, Instant};

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{
    BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT, ConnectionExt as _, MOTION_NOTIFY_EVENT,
};

use crate::error::{AgentError, Result};
use crate::keyboard::Keyboard;
use crate::x11::XConn;

/// Distance within which toolkits count two clicks as one multi-click.
const MULTI_CLICK_SLOP: i32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Left,
    Middle,
    Right,
}

impl Button {
    fn detail(self) -> u8 {
        match self {
            Button::Left => 1,
            Button::Middle => 2,
            Button::Right => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrollDirection {
    Up,
    Down,
    Left,
    Right,
}

impl ScrollDirection {
    fn button(self) -> u8 {
        match self {
            ScrollDirection::Up => 4,
            ScrollDirection::Down => 5,
            ScrollDirection::Left => 6,
            ScrollDirection::Right => 7,
        }
    }
}

/// Tunables of input timing.
#[derive(Debug, Clone, Copy)]
pub struct InputTiming {
    /// Clicks closer than this at one spot would merge; separate calls are spaced by it.
    pub double_click: Duration,
}

struct LastClick {
    button: Button,
    x: i32,
    y: i32,
    at: Instant,
}

/// Input state on its own X connection.
pub struct Input {
    pub x: XConn,
    timing: InputTiming,
    keyboard: Keyboard,
    last_click: Option<LastClick>,
}

impl Input {
    pub fn connect(display: &str, timing: InputTiming) -> Result<Self> {
        let x = XConn::open(display)?;
        x.conn
            .extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)?
            .ok_or_else(|| AgentError::Unsupported("the X server has no XTEST extension".into()))?;
        let keyboard = Keyboard::new(display, &x)?;
        Ok(Input {
            x,
            timing,
            keyboard,
            last_click: None,
        })
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<()> {
        self.x.fake(kind, detail, x, y)
    }

    fn motion(&self, x: i16, y: i16) -> Result<()> {
        self.fake(MOTION_NOTIFY_EVENT, 0, x, y)
    }

    pub fn cursor(&self) -> Result<(i32, i32)> {
        let reply = self.x.conn.query_pointer(self.x.root)?.reply()?;
        Ok((i32::from(reply.root_x), i32::from(reply.root_y)))
    }

    /// Moves to `at` if given; answers where the pointer now is.
    fn go(&self, at: Option<(i32, i32)>) -> Result<(i32, i32)> {
        match at {
            Some((x, y)) => {
                let (px, py) = self.x.check_point(x, y)?;
                self.motion(px, py)?;
                Ok((x, y))
            }
            None => self.cursor(),
        }
    }

    pub fn move_to(&mut self, x: i32, y: i32) -> Result<(i32, i32)> {
        self.go(Some((x, y)))?;
        self.x.sync()?;
        Ok((x, y))
    }

    /// Waits out the double-click interval if the previous click was the same button at the
    /// same spot, so this click is not merged into it.
    fn space_from_last_click(&self, button: Button, x: i32, y: i32) {
        if let Some(last) = &self.last_click {
            let near = (last.x - x).abs() <= MULTI_CLICK_SLOP && (last.y - y).abs() <= MULTI_CLICK_SLOP;
            let elapsed = last.at.elapsed();
            if last.button == button && near && elapsed < self.timing.double_click {
                std::thread::sleep(self.timing.double_click - elapsed);
            }
        }
    }

    pub fn click(&mut self, at: Option<(i32, i32)>, button: Button, count: u32) -> Result<(i32, i32)> {
        if !(1..=3).contains(&count) {
            return Err(AgentError::InvalidArgument(format!(
                "click count must be 1, 2 or 3, not {count}"
            )));
        }
        if let Some((x, y)) = at {
            self.x.check_point(x, y)?;
        }
        let (cx, cy) = match at {
            Some(p) => p,
            None => self.cursor()?,
        };
        self.space_from_last_click(button, cx, cy);
        self.go(at)?;
        for _ in 0..count {
            self.fake(BUTTON_PRESS_EVENT, button.detail(), 0, 0)?;
            self.fake(BUTTON_RELEASE_EVENT, button.detail(), 0, 0)?;
        }
        self.x.sync()?;
        self.last_click = Some(LastClick {
            button,
            x: cx,
            y: cy,
            at: Instant::now(),
        });
        Ok((cx, cy))
    }

    pub fn button(&mut self, at: Option<(i32, i32)>, button: Button, press: bool) -> Result<(i32, i32)> {
        let pos = self.go(at)?;
        let kind = if press {
            BUTTON_PRESS_EVENT
        } else {
            BUTTON_RELEASE_EVENT
        };
        self.fake(kind, button.detail(), 0, 0)?;
        self.x.sync()?;
        if !press {
            self.last_click = Some(LastClick {
                button,
                x: pos.0,
                y: pos.1,
                at: Instant::now(),
            });
        }
        Ok(pos)
    }

    /// Presses at the first point, moves through the rest spread over `duration`, releases at
    /// the last. Straight segments are walked in steps of a few pixels so toolkits see motion.
    pub fn drag(&mut self, path: &[(i32, i32)], button: Button, duration: Duration) -> Result<(i32, i32)> {
        if path.len() < 2 {
            return Err(AgentError::InvalidArgument(
                "a drag needs a start and an end point".into(),
            ));
        }
        for &(x, y) in path {
            self.x.check_point(x, y)?;
        }
        let points = interpolate(path, 12);
        let pause = duration / points.len().max(1) as u32;
        let (sx, sy) = path[0];
        self.motion(sx as i16, sy as i16)?;
        self.fake(BUTTON_PRESS_EVENT, button.detail(), 0, 0)?;
        for &(x, y) in &points[1..] {
            self.motion(x as i16, y as i16)?;
            if !pause.is_zero() {
                self.x.conn.flush()?;
                std::thread::sleep(pause);
            }
        }
        self.fake(BUTTON_RELEASE_EVENT, button.detail(), 0, 0)?;
        self.x.sync()?;
        let end = *path.last().expect("checked above");
        self.last_click = Some(LastClick {
            button,
            x: end.0,
            y: end.1,
            at: Instant::now(),
        });
        Ok(end)
    }

    pub fn scroll(
        &mut self,
        at: Option<(i32, i32)>,
        direction: ScrollDirection,
        amount: u32,
    ) -> Result<(i32, i32)> {
        let pos = self.go(at)?;
        for _ in 0..amount {
            self.fake(BUTTON_PRESS_EVENT, direction.button(), 0, 0)?;
            self.fake(BUTTON_RELEASE_EVENT, direction.button(), 0, 0)?;
        }
        self.x.sync()?;
        Ok(pos)
    }

    pub fn type_text(&mut self, text: &str, delay: Duration) -> Result<u32> {
        self.keyboard.type_text(&self.x, text, delay)
    }

    pub fn key(&mut self, combo: &str, repeat: u32) -> Result<u32> {
        self.keyboard.key(&self.x, combo, repeat)
    }

    pub fn key_hold(&mut self, combo: &str, press: bool) -> Result<u32> {
        self.keyboard.key_hold(&self.x, combo, press)
    }

    /// See [`Keyboard::restore_if_idle`]: true when it should be tried again later.
    pub fn restore_keymap_if_idle(&mut self, after: Duration) -> Result<bool> {
        self.keyboard.restore_if_idle(&self.x, after)
    }
}

/// Points along the path's segments at most `step` pixels apart, ends included.
pub fn interpolate(path: &[(i32, i32)], step: i32) -> Vec<(i32, i32)> {
    let mut out = vec![path[0]];
    for pair in path.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        let n = ((x1 - x0).abs().max((y1 - y0).abs()) / step.max(1)).max(1);
        for i in 1..=n {
            out.push((x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::interpolate;

    #[test]
    fn interpolation_walks_each_segment_to_its_end() {
        let pts = interpolate(&[(0, 0), (30, 0), (30, 5)], 10);
        assert_eq!(pts, vec![(0, 0), (10, 0), (20, 0), (30, 0), (30, 5)]);
        assert_eq!(interpolate(&[(5, 5), (5, 5)], 10), vec![(5, 5), (5, 5)]);
    }
}
