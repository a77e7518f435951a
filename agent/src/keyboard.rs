//! The keyboard: key combos and Unicode text through XTest on the input connection.
//! Characters the keyboard has are typed with their own keys and Shift level; the rest borrow
//! spare keycodes, both Shift levels of each ([`Lease`]). Each batch rebinds them in one request with the server grabbed,
//! the mapping read fresh under the grab, so the rows written back are the server's own apart
//! from the borrowed ones; a keycode is rebound only once no client may still translate its
//! last press ([`InFlight`]); after the presses the borrowed keycodes are read back, so a keymap
//! another program loaded meanwhile fails the call naming the characters that may be lost; the
//! borrowed keycodes are restored once idle.

use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{ConnectionExt as _, KEY_PRESS_EVENT, KEY_RELEASE_EVENT};

use crate::error::{AgentError, Result};
use crate::inflight::InFlight;
use crate::keymap::{Batch, Keymap, Lease, Levels, Stroke};
use crate::keys::{self, Keysym, TextKey};
use crate::x11::XConn;

const SHIFT_L: Keysym = 0xffe1;

/// Keyboard state of the input connection.
pub struct Keyboard {
    keymap: Option<Keymap>,
    lease: Lease,
    lease_used: Instant,
    held: Vec<u8>,
    inflight: InFlight,
}

impl Keyboard {
    pub fn new(display: &str, x: &XConn) -> Result<Keyboard> {
        Ok(Keyboard {
            keymap: None,
            lease: Lease::default(),
            lease_used: Instant::now(),
            held: Vec::new(),
            inflight: InFlight::new(display, x)?,
        })
    }

    fn read_keymap(&mut self, x: &XConn) -> Result<Keymap> {
        let setup = x.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let reply = x.conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
        Ok(Keymap {
            min_keycode: min,
            per: usize::from(reply.keysyms_per_keycode),
            syms: reply.keysyms,
        })
    }

    /// The current keymap, fetched again after anyone (this agent included) changed it.
    fn keymap(&mut self, x: &XConn) -> Result<&Keymap> {
        while let Some(event) = x.conn.poll_for_event()? {
            if matches!(event, Event::MappingNotify(_)) {
                self.keymap = None;
            }
        }
        if self.keymap.is_none() {
            self.keymap = Some(self.read_keymap(x)?);
        }
        Ok(self.keymap.as_ref().expect("keymap was just fetched"))
    }

    /// Runs `f` with the server grabbed on the mapping read fresh, then writes back the rows
    /// `f` names (spanning them, in one request) and keeps the result as the current keymap.
    fn change_keymap<T>(
        &mut self,
        x: &XConn,
        f: impl FnOnce(&mut Self, &mut Keymap) -> Result<(T, Vec<u8>)>,
    ) -> Result<T> {
        x.conn.grab_server()?;
        let changed = self.read_keymap(x).and_then(|mut map| {
            let (out, rows) = f(self, &mut map)?;
            if let (Some(&lo), Some(&hi)) = (rows.iter().min(), rows.iter().max()) {
                let span: Vec<Keysym> = (lo..=hi).flat_map(|kc| map.row(kc).to_vec()).collect();
                x.conn
                    .change_keyboard_mapping(hi - lo + 1, lo, map.per as u8, &span)?;
            }
            self.keymap = Some(map);
            Ok(out)
        });
        let ungrabbed = x.conn.ungrab_server();
        let out = changed?;
        ungrabbed?;
        Ok(out)
    }

    /// Plans the next batch of `syms` and binds its borrowed keycodes; answers the batch and
    /// how many keysyms it covers. Waits while every spare it would rebind may still be
    /// translated by the focused client.
    fn next_batch(&mut self, x: &XConn, syms: &[Keysym], levels: Levels) -> Result<(Batch, usize)> {
        loop {
            let free = self.inflight.free(x)?;
            // Planned on the cached mapping first: most batches rebind nothing.
            let mut trial = self.lease.clone();
            let (batch, n) = trial.next_batch(self.keymap(x)?, syms, levels, |kc| free.allows(kc))?;
            if n > 0 && batch.remaps.is_empty() {
                self.lease = trial;
                return Ok((batch, n));
            }
            if n > 0 {
                let (batch, n) = self.change_keymap(x, |kb, map| {
                    let (batch, n) = kb.lease.next_batch(map, syms, levels, |kc| free.allows(kc))?;
                    for &(kc, row) in &batch.remaps {
                        map.set_row(kc, row);
                    }
                    let rows = batch.remaps.iter().map(|r| r.0).collect();
                    Ok(((batch, n), rows))
                })?;
                if n > 0 {
                    return Ok((batch, n));
                }
            }
            self.inflight.wait(x)?;
        }
    }

    /// Presses a batch's strokes, Shift around those on the second level.
    fn press(&mut self, x: &XConn, batch: &Batch, delay: Duration) -> Result<()> {
        let shift = match batch.strokes.iter().any(|s| s.shift) {
            true => Some(
                self.keymap(x)?
                    .find(SHIFT_L)
                    .ok_or_else(|| AgentError::Unsupported("the keyboard has no Shift key".into()))?
                    .keycode,
            ),
            false => None,
        };
        for stroke in &batch.strokes {
            if stroke.shift {
                x.fake(KEY_PRESS_EVENT, shift.expect("looked up above"), 0, 0)?;
            }
            x.fake(KEY_PRESS_EVENT, stroke.keycode, 0, 0)?;
            x.fake(KEY_RELEASE_EVENT, stroke.keycode, 0, 0)?;
            if stroke.shift {
                x.fake(KEY_RELEASE_EVENT, shift.expect("looked up above"), 0, 0)?;
            }
            if !delay.is_zero() {
                x.sync()?;
                std::thread::sleep(delay);
            }
        }
        self.note_pressed(x, batch)
    }

    fn note_pressed(&mut self, x: &XConn, batch: &Batch) -> Result<()> {
        let borrowed: Vec<u8> = self.borrowed_strokes(batch).map(|(_, s)| s.keycode).collect();
        if !borrowed.is_empty() {
            let client = self.inflight.focused(x)?;
            self.inflight.note_pressed(client, borrowed.into_iter());
            self.lease_used = Instant::now();
        }
        Ok(())
    }

    fn borrowed_strokes<'a>(&'a self, batch: &'a Batch) -> impl Iterator<Item = (usize, Stroke)> + 'a {
        batch
            .strokes
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, s)| self.lease.is_borrowed(s.keycode))
    }

    /// After the presses (and the round trip that ends every input call): the borrowed
    /// keycodes the batch pressed must still give the keysyms `syms` planned. A keycode that
    /// does not was emptied by a keymap another program loaded during the call, and its presses
    /// may have been translated with that keymap; answers the indices of those strokes.
    fn lost(&mut self, x: &XConn, batch: &Batch, syms: &[Keysym]) -> Result<Vec<usize>> {
        let used: Vec<(usize, Stroke)> = self.borrowed_strokes(batch).collect();
        let keycodes = || used.iter().map(|u| u.1.keycode);
        let (Some(lo), Some(hi)) = (keycodes().min(), keycodes().max()) else {
            return x.sync().map(|()| Vec::new());
        };
        let reply = x.conn.get_keyboard_mapping(lo, hi - lo + 1)?.reply()?;
        let now = Keymap {
            min_keycode: lo,
            per: usize::from(reply.keysyms_per_keycode),
            syms: reply.keysyms,
        };
        let lost: Vec<usize> = used
            .into_iter()
            .filter(|&(i, s)| now.level(s.keycode, s.shift) != syms[i])
            .map(|(i, _)| i)
            .collect();
        if !lost.is_empty() {
            self.keymap = None;
        }
        Ok(lost)
    }

    /// Types text; answers the number of characters typed. Control characters follow
    /// [`keys::text_keys`]: a line break in any form is one Return, `\t` Tab, U+0008 BackSpace,
    /// any other refuses the text.
    pub fn type_text(&mut self, x: &XConn, text: &str, delay: Duration) -> Result<u32> {
        let typed = keys::text_keys(text)?;
        let map = self.keymap(x)?;
        // Prefer the keyboard's own keysym; otherwise the Unicode one every client decodes.
        let syms: Vec<Keysym> = typed
            .iter()
            .map(|k| match map.find(k.keysym).is_some() || k.ch.is_control() {
                true => k.keysym,
                false => keys::unicode_keysym(k.ch),
            })
            .collect();
        let mut done = 0;
        while done < syms.len() {
            let (batch, n) = self.next_batch(x, &syms[done..], Levels::Both)?;
            self.press(x, &batch, delay)?;
            let lost = self.lost(x, &batch, &syms[done..done + n])?;
            if !lost.is_empty() {
                let names: Vec<String> = lost.iter().map(|&i| typed[done + i].to_string()).collect();
                return Err(keymap_changed(&names, typed.get(done + n)));
            }
            done += n;
        }
        Ok(text.chars().count() as u32)
    }

    /// The keycodes of a combo, modifiers first, plus Shift where a key needs it, and the batch
    /// that bound them.
    fn combo(&mut self, x: &XConn, combo: &str) -> Result<(Vec<u8>, Batch, Vec<Keysym>)> {
        let syms = keys::parse_combo(combo)?.keysyms;
        let (batch, n) = self.next_batch(x, &syms, Levels::First)?;
        if n != syms.len() {
            return Err(AgentError::Unsupported(format!(
                "{combo:?} has more keys the keyboard lacks than can be bound at once"
            )));
        }
        let mut codes = Vec::new();
        if batch.strokes.iter().any(|s| s.shift) {
            let shift = self.keymap(x)?.find(SHIFT_L).map(|s| s.keycode);
            if let Some(s) = shift.filter(|s| !batch.strokes.iter().any(|k| k.keycode == *s)) {
                codes.push(s);
            }
        }
        codes.extend(batch.strokes.iter().map(|s| s.keycode));
        Ok((codes, batch, syms))
    }

    /// Fails a combo call whose borrowed key a foreign keymap emptied.
    fn check_combo(&mut self, x: &XConn, combo: &str, batch: &Batch, syms: &[Keysym]) -> Result<()> {
        self.note_pressed(x, batch)?;
        if self.lost(x, batch, syms)?.is_empty() {
            return Ok(());
        }
        Err(keymap_changed(&[format!("{combo:?}")], None))
    }

    /// Presses and releases a combo `repeat` times. Names follow [`keys::parse_combo`]: `meta`,
    /// `super`, `win` and `cmd` are Super_L.
    pub fn key(&mut self, x: &XConn, combo: &str, repeat: u32) -> Result<u32> {
        let (codes, batch, syms) = self.combo(x, combo)?;
        for _ in 0..repeat {
            for &kc in &codes {
                x.fake(KEY_PRESS_EVENT, kc, 0, 0)?;
            }
            for &kc in codes.iter().rev() {
                x.fake(KEY_RELEASE_EVENT, kc, 0, 0)?;
            }
        }
        self.check_combo(x, combo, &batch, &syms)?;
        Ok(repeat)
    }

    /// Presses (and holds) or releases a combo's keys.
    pub fn key_hold(&mut self, x: &XConn, combo: &str, press: bool) -> Result<u32> {
        let (codes, batch, syms) = self.combo(x, combo)?;
        if press {
            for &kc in &codes {
                x.fake(KEY_PRESS_EVENT, kc, 0, 0)?;
                self.held.push(kc);
            }
        } else {
            for &kc in codes.iter().rev() {
                x.fake(KEY_RELEASE_EVENT, kc, 0, 0)?;
                self.held.retain(|&h| h != kc);
            }
        }
        self.check_combo(x, combo, &batch, &syms)?;
        Ok(codes.len() as u32)
    }

    /// Binds borrowed keycodes back to nothing once they have been idle for `after`, in one
    /// request; held keys keep their bindings. Answers whether to try again later: while the
    /// focused client may still translate a borrowed key's last press, the restore waits, for
    /// at most another `after`.
    pub fn restore_if_idle(&mut self, x: &XConn, after: Duration) -> Result<bool> {
        let idle = self.lease_used.elapsed();
        if self.lease.is_empty() || idle < after || !self.held.is_empty() {
            return Ok(false);
        }
        let free = self.inflight.free(x)?;
        if idle < after * 2 && !self.lease.borrowed().iter().all(|&kc| free.allows(kc)) {
            return Ok(true);
        }
        self.change_keymap(x, |kb, map| {
            kb.lease.reconcile(map);
            let borrowed = kb.lease.borrowed();
            for &kc in &borrowed {
                map.set_row(kc, [0; 2]);
            }
            kb.lease.clear();
            Ok(((), borrowed))
        })?;
        x.sync()?;
        Ok(false)
    }
}

/// The error of a call whose characters a foreign keymap change may have swallowed.
fn keymap_changed(lost: &[String], untyped: Option<&TextKey>) -> AgentError {
    let rest = untyped
        .map(|k| format!("; the text from character {} on was not typed", k.at))
        .unwrap_or_default();
    AgentError::KeymapChanged(format!(
        "another program changed the keyboard mapping while typing: {} may not have arrived{rest}",
        lost.join(", ")
    ))
}
