//! Pointer and keyboard input through XTest on the input connection. Every action ends with a
//! round trip, so when a call returns the server has delivered its events. The agent owns click
//! timing: a double click is two clicks inside the double-click interval, and two separate click
//! calls at the same spot are spaced so that applications never merge them into one.

use std::time::{Duration, Instant};

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT, ConnectionExt as _, KEY_PRESS_EVENT, KEY_RELEASE_EVENT,
    MOTION_NOTIFY_EVENT,
};
use x11rb::protocol::xtest::ConnectionExt as _;

use crate::error::{AgentError, Result};
use crate::keymap::{Batch, Keymap, Lease, Stroke};
use crate::keys::{self, Keysym};
use crate::x11::XConn;

const SHIFT_L: Keysym = 0xffe1;
/// Distance within which toolkits count two clicks as one multi-click.
const MULTI_CLICK_SLOP: i32 = 8;
/// Pause between borrowed-keycode batches, so slow clients translate the previous batch's
/// presses before its keycodes are rebound.
const BATCH_SETTLE: Duration = Duration::from_millis(100);

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
    keymap: Option<Keymap>,
    lease: Lease,
    lease_used: Instant,
    last_click: Option<LastClick>,
    held_keys: Vec<u8>,
}

impl Input {
    pub fn connect(display: &str, timing: InputTiming) -> Result<Self> {
        let x = XConn::open(display)?;
        x.conn
            .extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)?
            .ok_or_else(|| AgentError::Unsupported("the X server has no XTEST extension".into()))?;
        Ok(Input {
            x,
            timing,
            keymap: None,
            lease: Lease::default(),
            lease_used: Instant::now(),
            last_click: None,
            held_keys: Vec::new(),
        })
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<()> {
        self.x
            .conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.x.root, x, y, 0)?;
        Ok(())
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

    /// The current keymap, fetched again after anyone (this agent included) changed it.
    fn keymap(&mut self) -> Result<&mut Keymap> {
        while let Some(event) = self.x.conn.poll_for_event()? {
            if matches!(event, Event::MappingNotify(_)) {
                self.keymap = None;
            }
        }
        if self.keymap.is_none() {
            let setup = self.x.conn.setup();
            let (min, max) = (setup.min_keycode, setup.max_keycode);
            let reply = self.x.conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
            self.keymap = Some(Keymap {
                min_keycode: min,
                per: usize::from(reply.keysyms_per_keycode),
                syms: reply.keysyms,
            });
        }
        Ok(self.keymap.as_mut().expect("keymap was just fetched"))
    }

    /// Sends the rows `keycodes` span, from the local keymap, in one request.
    fn push_rows(&mut self, keycodes: impl Iterator<Item = u8> + Clone) -> Result<()> {
        let (Some(lo), Some(hi)) = (keycodes.clone().min(), keycodes.max()) else {
            return Ok(());
        };
        let map = self.keymap.as_ref().expect("keymap loaded before remapping");
        let rows: Vec<Keysym> = (lo..=hi).flat_map(|kc| map.row(kc).to_vec()).collect();
        self.x
            .conn
            .change_keyboard_mapping(hi - lo + 1, lo, map.per as u8, &rows)?;
        Ok(())
    }

    fn run_batches(&mut self, batches: &[Batch], delay: Duration) -> Result<()> {
        let shift = self.keymap()?.find(SHIFT_L).map(|s| s.keycode);
        for (i, batch) in batches.iter().enumerate() {
            if i > 0 {
                self.x.sync()?;
                std::thread::sleep(BATCH_SETTLE);
            }
            if !batch.remaps.is_empty() {
                let map = self.keymap()?;
                for &(kc, sym) in &batch.remaps {
                    map.set_row(kc, sym);
                }
                self.push_rows(batch.remaps.iter().map(|r| r.0))?;
            }
            for stroke in &batch.strokes {
                self.stroke(*stroke, shift)?;
                if !delay.is_zero() {
                    self.x.sync()?;
                    std::thread::sleep(delay);
                }
            }
        }
        self.lease_used = Instant::now();
        self.x.sync()
    }

    fn stroke(&self, stroke: Stroke, shift: Option<u8>) -> Result<()> {
        let shift = if stroke.shift {
            Some(shift.ok_or_else(|| AgentError::Unsupported("the keyboard has no Shift key".into()))?)
        } else {
            None
        };
        if let Some(s) = shift {
            self.fake(KEY_PRESS_EVENT, s, 0, 0)?;
        }
        self.fake(KEY_PRESS_EVENT, stroke.keycode, 0, 0)?;
        self.fake(KEY_RELEASE_EVENT, stroke.keycode, 0, 0)?;
        if let Some(s) = shift {
            self.fake(KEY_RELEASE_EVENT, s, 0, 0)?;
        }
        Ok(())
    }

    /// Types text; answers the number of characters sent.
    pub fn type_text(&mut self, text: &str, delay: Duration) -> Result<u32> {
        let map = self.keymap()?.clone();
        let mut syms = Vec::with_capacity(text.len());
        for ch in text.chars() {
            let own = keys::keysym_for_char(ch).ok_or_else(|| {
                AgentError::InvalidArgument(format!("cannot type control character {ch:?}"))
            })?;
            // Prefer the keyboard's own keysym; otherwise the Unicode one every client decodes.
            syms.push(if map.find(own).is_some() {
                own
            } else {
                keys::unicode_keysym(ch)
            });
        }
        let batches = self.lease.plan(&map, &syms)?;
        self.run_batches(&batches, delay)?;
        Ok(syms.len() as u32)
    }

    /// Plans the strokes of a combo: its keys' keycodes plus Shift where a key needs it.
    fn combo_keycodes(&mut self, combo: &str) -> Result<Vec<u8>> {
        let parsed = keys::parse_combo(combo)?;
        let map = self.keymap()?.clone();
        let batches = self.lease.plan(&map, &parsed.keysyms)?;
        if batches.len() != 1 {
            return Err(AgentError::Unsupported(
                "too many unmapped keys in one combo".into(),
            ));
        }
        let batch = &batches[0];
        if !batch.remaps.is_empty() {
            let m = self.keymap()?;
            for &(kc, sym) in &batch.remaps {
                m.set_row(kc, sym);
            }
            self.push_rows(batch.remaps.iter().map(|r| r.0))?;
            self.lease_used = Instant::now();
        }
        let mut codes = Vec::new();
        if batch.strokes.iter().any(|s| s.shift) {
            let shift = self.keymap()?.find(SHIFT_L).map(|s| s.keycode);
            if let Some(s) = shift.filter(|s| !batch.strokes.iter().any(|k| k.keycode == *s)) {
                codes.push(s);
            }
        }
        codes.extend(batch.strokes.iter().map(|s| s.keycode));
        Ok(codes)
    }

    /// Presses and releases a combo `repeat` times.
    pub fn key(&mut self, combo: &str, repeat: u32) -> Result<u32> {
        let codes = self.combo_keycodes(combo)?;
        for _ in 0..repeat {
            for &kc in &codes {
                self.fake(KEY_PRESS_EVENT, kc, 0, 0)?;
            }
            for &kc in codes.iter().rev() {
                self.fake(KEY_RELEASE_EVENT, kc, 0, 0)?;
            }
        }
        self.x.sync()?;
        Ok(repeat)
    }

    /// Presses (and holds) or releases a combo's keys.
    pub fn key_hold(&mut self, combo: &str, press: bool) -> Result<u32> {
        let codes = self.combo_keycodes(combo)?;
        if press {
            for &kc in &codes {
                self.fake(KEY_PRESS_EVENT, kc, 0, 0)?;
                self.held_keys.push(kc);
            }
        } else {
            for &kc in codes.iter().rev() {
                self.fake(KEY_RELEASE_EVENT, kc, 0, 0)?;
                self.held_keys.retain(|&h| h != kc);
            }
        }
        self.x.sync()?;
        Ok(codes.len() as u32)
    }

    /// Binds borrowed keycodes back to nothing once they have been idle for `after`, in one
    /// request; held keys keep their bindings.
    pub fn restore_keymap_if_idle(&mut self, after: Duration) -> Result<()> {
        if self.lease.is_empty() || self.lease_used.elapsed() < after || !self.held_keys.is_empty() {
            return Ok(());
        }
        let borrowed = self.lease.borrowed();
        self.keymap()?;
        let map = self.keymap.as_mut().expect("keymap loaded");
        for &kc in &borrowed {
            map.set_row(kc, 0);
        }
        self.push_rows(borrowed.iter().copied())?;
        self.lease.clear();
        self.x.sync()
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
