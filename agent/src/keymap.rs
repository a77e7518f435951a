//! Planning keystrokes against the X keyboard mapping. Pure logic over a snapshot of the core
//! keymap: which keycode (and Shift level) produces a keysym, and which spare keycodes get
//! borrowed for keysyms the keyboard lacks. The [`Lease`] remembers what is borrowed so that
//! successive calls reuse remapped keycodes, rotate through all spares, and restore once; it is
//! checked against the server's mapping whenever it plans, so a keymap another program loaded
//! drops the bindings it emptied. Whether a borrowed keycode may be rebound yet (no client may
//! still translate its last press) is the caller's to say: see `inflight`.

use std::collections::HashMap;

use crate::error::{AgentError, Result};
use crate::keys::Keysym;

const NO_SYMBOL: Keysym = 0;

/// The core keyboard mapping: `per` keysyms for every keycode from `min_keycode` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keymap {
    pub min_keycode: u8,
    pub per: usize,
    pub syms: Vec<Keysym>,
}

/// One key press and release; `shift` holds Shift around it for the second level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stroke {
    pub keycode: u8,
    pub shift: bool,
}

/// Keycodes to rebind, then strokes to send with those bindings in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub remaps: Vec<(u8, Keysym)>,
    pub strokes: Vec<Stroke>,
}

impl Keymap {
    /// The keycodes the mapping has whole rows for (none when it is empty).
    pub fn keycodes(&self) -> impl Iterator<Item = u8> + use<> {
        let rows = self.syms.len().checked_div(self.per).unwrap_or(0);
        let first = usize::from(self.min_keycode);
        (first..(first + rows).min(256)).map(|kc| kc as u8)
    }

    pub fn row(&self, keycode: u8) -> &[Keysym] {
        let start = (keycode - self.min_keycode) as usize * self.per;
        &self.syms[start..start + self.per]
    }

    /// The keysym a keycode gives at a Shift level, with X's rule that a lone lowercase letter
    /// in the first column implies its uppercase in the second.
    pub fn level(&self, keycode: u8, shift: bool) -> Keysym {
        let row = self.row(keycode);
        let first = row.first().copied().unwrap_or(NO_SYMBOL);
        let second = row.get(1).copied().unwrap_or(NO_SYMBOL);
        if !shift {
            return first;
        }
        if second != NO_SYMBOL {
            return second;
        }
        match char::from_u32(first) {
            Some(c) if first < 0x100 && c.is_lowercase() => {
                c.to_uppercase().next().map_or(first, |u| u as u32)
            }
            _ => first,
        }
    }

    /// Where the keyboard already has the keysym: its keycode and whether Shift is needed.
    pub fn find(&self, sym: Keysym) -> Option<Stroke> {
        for shift in [false, true] {
            for keycode in self.keycodes() {
                if self.level(keycode, shift) == sym {
                    return Some(Stroke { keycode, shift });
                }
            }
        }
        None
    }

    /// Keycodes bound to nothing: the ones that may be borrowed.
    pub fn spare_keycodes(&self) -> Vec<u8> {
        self.keycodes()
            .filter(|&kc| self.row(kc).iter().all(|&s| s == NO_SYMBOL))
            .collect()
    }

    /// Rebinds a row to one keysym on both Shift levels of the first group, so a held Shift
    /// or Caps Lock cannot change it; the other groups stay empty, or the server's XKB would
    /// grow extra groups on every key.
    pub fn set_row(&mut self, keycode: u8, sym: Keysym) {
        let start = (keycode - self.min_keycode) as usize * self.per;
        let row = &mut self.syms[start..start + self.per];
        row.fill(NO_SYMBOL);
        let levels = self.per.min(2);
        row[..levels].fill(sym);
    }
}

/// How many spare keycodes the agent never borrows, so other programs in the desktop can.
const LEFT_FREE: usize = 2;

/// The borrowed keycodes of one agent, kept between calls until restored.
#[derive(Debug, Default, Clone)]
pub struct Lease {
    /// Keycodes that may be borrowed: bound to nothing, or to a keysym this lease bound.
    spares: Vec<u8>,
    bound: HashMap<Keysym, u8>,
    /// When each spare was last used (bound or pressed), to rotate through them oldest first.
    used: HashMap<u8, u64>,
    tick: u64,
}

impl Lease {
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// The keycodes currently borrowed; restoring binds them back to nothing.
    pub fn borrowed(&self) -> Vec<u8> {
        self.bound.values().copied().collect()
    }

    /// The keysym the lease bound to a keycode, if it borrowed it.
    pub fn holder_of(&self, keycode: u8) -> Option<Keysym> {
        self.bound
            .iter()
            .find(|(_, kc)| **kc == keycode)
            .map(|(sym, _)| *sym)
    }

    pub fn clear(&mut self) {
        self.bound.clear();
    }

    /// Checks the lease against the server's mapping as it is now: bindings the server no
    /// longer has (another program loaded a keymap) are dropped, and the spares are what is
    /// bound to nothing plus what this lease still holds.
    pub fn reconcile(&mut self, keymap: &Keymap) {
        let rows: Vec<u8> = keymap.keycodes().collect();
        self.bound
            .retain(|&sym, &mut kc| rows.contains(&kc) && keymap.level(kc, false) == sym);
        let mut spares = keymap.spare_keycodes();
        spares.extend(self.bound.values().copied());
        spares.sort_unstable();
        spares.dedup();
        // The highest of them stay unbound for the desktop's other programs (xdotool and
        // Xlib-based typing borrow one the same way, and fail with BadValue when there is
        // none), where the keyboard has enough to spare.
        if spares.len() >= 2 * LEFT_FREE {
            spares.truncate(spares.len() - LEFT_FREE);
        }
        self.spares = spares;
    }

    fn touch(&mut self, keycode: u8) {
        self.tick += 1;
        self.used.insert(keycode, self.tick);
    }

    /// Plans the longest start of `syms` that one keymap change serves, against `keymap` as the
    /// server has it; answers the batch and how many keysyms it covers. Keysyms on the
    /// keyboard use their own keycode; the rest reuse their borrowed keycode or borrow the
    /// spare used longest ago among those `may_rebind` allows and the batch does not press.
    /// Covering none means no spare may be rebound yet.
    pub fn next_batch(
        &mut self,
        keymap: &Keymap,
        syms: &[Keysym],
        may_rebind: impl Fn(u8) -> bool,
    ) -> Result<(Batch, usize)> {
        self.reconcile(keymap);
        let mut batch = Batch::default();
        let mut pressed: Vec<u8> = Vec::new();
        for (i, &sym) in syms.iter().enumerate() {
            let stroke = if let Some(&keycode) = self.bound.get(&sym) {
                Stroke {
                    keycode,
                    shift: false,
                }
            } else if let Some(stroke) = keymap.find(sym).filter(|s| !self.spares.contains(&s.keycode)) {
                stroke
            } else {
                if self.spares.is_empty() {
                    return Err(AgentError::Unsupported(
                        "the keyboard has no spare keycode to type this character".into(),
                    ));
                }
                let pick = self
                    .spares
                    .iter()
                    .copied()
                    .filter(|kc| !pressed.contains(kc) && may_rebind(*kc))
                    .min_by_key(|kc| self.used.get(kc).copied().unwrap_or(0));
                let Some(keycode) = pick else {
                    return Ok((batch, i));
                };
                if let Some(old) = self.holder_of(keycode) {
                    self.bound.remove(&old);
                }
                self.bound.insert(sym, keycode);
                batch.remaps.push((keycode, sym));
                Stroke {
                    keycode,
                    shift: false,
                }
            };
            if self.spares.contains(&stroke.keycode) {
                pressed.push(stroke.keycode);
                self.touch(stroke.keycode);
            }
            batch.strokes.push(stroke);
        }
        Ok((batch, syms.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny keyboard: 10 → a/A, 11 → 1/!, 12 → Shift_L, 13..=15 spare.
    fn keymap() -> Keymap {
        Keymap {
            min_keycode: 10,
            per: 2,
            syms: vec![
                'a' as u32, 'A' as u32, '1' as u32, '!' as u32, 0xffe1, 0, 0, 0, 0, 0, 0, 0,
            ],
        }
    }

    #[test]
    fn keyboard_characters_use_their_keys_and_levels() {
        let map = keymap();
        assert_eq!(
            map.find('a' as u32),
            Some(Stroke {
                keycode: 10,
                shift: false
            })
        );
        assert_eq!(
            map.find('A' as u32),
            Some(Stroke {
                keycode: 10,
                shift: true
            })
        );
        assert_eq!(
            map.find('!' as u32),
            Some(Stroke {
                keycode: 11,
                shift: true
            })
        );
        assert_eq!(map.spare_keycodes(), vec![13, 14, 15]);
    }

    /// Seen while writing the `type_plan` fuzz target: a mapping with no whole row (which no X
    /// server sends, but nothing here trusts that) has no keycodes, not a row 0 out of range.
    #[test]
    fn a_mapping_without_rows_has_no_keys_and_refuses_to_borrow() {
        for (min_keycode, per, syms) in [(0, 2, vec![]), (0, 0, vec![1, 2]), (255, 3, vec![7, 8])] {
            let map = Keymap {
                min_keycode,
                per,
                syms,
            };
            assert_eq!(map.keycodes().count(), 0);
            assert_eq!(map.find('a' as u32), None);
            assert!(
                Lease::default()
                    .next_batch(&map, &['a' as u32], |_| true)
                    .is_err()
            );
        }
        let last_row = Keymap {
            min_keycode: 255,
            per: 1,
            syms: vec![0, 0],
        };
        assert_eq!(last_row.spare_keycodes(), vec![255]);
    }

    #[test]
    fn implied_uppercase_for_a_lone_lowercase_letter() {
        let map = Keymap {
            min_keycode: 8,
            per: 2,
            syms: vec!['q' as u32, 0],
        };
        assert_eq!(
            map.find('Q' as u32),
            Some(Stroke {
                keycode: 8,
                shift: true
            })
        );
    }

    /// Plans `syms` to the end the way the agent does, binding each batch's remaps on `map` as
    /// the server would; `may_rebind` says which spares a batch may take.
    fn type_all(
        lease: &mut Lease,
        map: &mut Keymap,
        syms: &[Keysym],
        may_rebind: impl Fn(u8) -> bool,
    ) -> Vec<Batch> {
        let mut batches = Vec::new();
        let mut done = 0;
        while done < syms.len() {
            let (batch, n) = lease.next_batch(map, &syms[done..], &may_rebind).unwrap();
            assert!(n > 0, "no progress at {done}");
            for &(kc, sym) in &batch.remaps {
                map.set_row(kc, sym);
            }
            done += n;
            batches.push(batch);
        }
        batches
    }

    #[test]
    fn missing_keysyms_borrow_spares_in_one_batch() {
        let mut map = keymap();
        let mut lease = Lease::default();
        let batches = type_all(
            &mut lease,
            &mut map,
            &[0xe9, 'a' as u32, 0x0101_f600, 0xe9],
            |_| true,
        );
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].remaps, vec![(13, 0xe9), (14, 0x0101_f600)]);
        let codes: Vec<u8> = batches[0].strokes.iter().map(|s| s.keycode).collect();
        assert_eq!(codes, vec![13, 10, 14, 13]);
    }

    /// With enough spares, the two highest are never borrowed, however many keysyms a text
    /// needs; a keyboard with few spares lends them all.
    #[test]
    fn the_highest_spares_stay_free_for_other_programs() {
        let mut map = Keymap {
            min_keycode: 10,
            per: 2,
            syms: vec![0; 2 * 8],
        };
        let mut lease = Lease::default();
        let syms: Vec<Keysym> = (0..40).map(|i| 0x0100_0400 + i).collect();
        let batches = type_all(&mut lease, &mut map, &syms, |_| true);
        let used: std::collections::BTreeSet<u8> = batches
            .iter()
            .flat_map(|b| b.strokes.iter().map(|s| s.keycode))
            .collect();
        assert_eq!(used, (10..=15).collect());
        assert_eq!(map.spare_keycodes(), vec![16, 17]);

        let mut lease = Lease::default();
        let batches = type_all(&mut lease, &mut keymap(), &syms[..3], |_| true);
        assert_eq!(
            batches[0].remaps.len(),
            3,
            "all three of the tiny keyboard's spares"
        );
    }

    #[test]
    fn later_calls_reuse_bindings_and_rotate() {
        let mut map = keymap();
        let mut lease = Lease::default();
        type_all(&mut lease, &mut map, &[0xe9], |_| true);
        let again = type_all(&mut lease, &mut map, &[0xe9, 0xea], |_| true);
        assert_eq!(
            again[0].remaps,
            vec![(14, 0xea)],
            "é stays bound, ê takes the next spare"
        );
        let third = type_all(&mut lease, &mut map, &[0xeb], |_| true);
        assert_eq!(third[0].remaps, vec![(15, 0xeb)]);
        let fourth = type_all(&mut lease, &mut map, &[0xec], |_| true);
        assert_eq!(
            fourth[0].remaps,
            vec![(13, 0xec)],
            "the binding used longest ago is recycled"
        );
    }

    #[test]
    fn more_distinct_keysyms_than_spares_split_into_batches() {
        let mut map = keymap();
        let mut lease = Lease::default();
        let syms = [0x100, 0x101, 0x102, 0x103, 0x100];
        let batches = type_all(&mut lease, &mut map, &syms, |_| true);
        assert_eq!(batches.len(), 2);
        let mut replay = keymap();
        let mut typed = Vec::new();
        for batch in &batches {
            for &(kc, sym) in &batch.remaps {
                replay.set_row(kc, sym);
            }
            typed.extend(batch.strokes.iter().map(|s| replay.level(s.keycode, s.shift)));
        }
        assert_eq!(typed, syms);
    }

    #[test]
    fn a_spare_is_rebound_only_when_allowed() {
        let mut map = keymap();
        let mut lease = Lease::default();
        type_all(&mut lease, &mut map, &[0x100, 0x101, 0x102], |_| true);
        let (batch, n) = lease.next_batch(&map, &[0x103], |_| false).unwrap();
        assert_eq!(
            (n, batch),
            (0, Batch::default()),
            "every spare may still be translated"
        );
        let (batch, n) = lease
            .next_batch(&map, &[0x100, 0x103, 0x104], |kc| kc == 14)
            .unwrap();
        assert_eq!(
            n, 2,
            "one spare may be rebound: the batch ends where a second is needed"
        );
        assert_eq!(batch.remaps, vec![(14, 0x103)]);
    }

    #[test]
    fn a_reloaded_keymap_drops_the_bindings_it_emptied() {
        let mut map = keymap();
        let mut lease = Lease::default();
        type_all(&mut lease, &mut map, &[0xfc], |_| true);
        assert_eq!(lease.borrowed(), vec![13]);
        // Another program loads a keymap: the spares are empty again and 14 is now a real key.
        let mut reloaded = keymap();
        reloaded.set_row(14, 'b' as u32);
        let (batch, n) = lease
            .next_batch(&reloaded, &[0xfc, 'b' as u32, 0xe9], |_| true)
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            batch.remaps,
            vec![(15, 0xfc), (13, 0xe9)],
            "ü is bound again; 14 is not spare"
        );
        assert_eq!(batch.strokes[1].keycode, 14);
    }

    #[test]
    fn no_spares_is_a_clear_error() {
        let map = Keymap {
            min_keycode: 8,
            per: 1,
            syms: vec!['a' as u32],
        };
        let err = Lease::default().next_batch(&map, &[0xe9], |_| true).unwrap_err();
        assert!(err.to_string().contains("spare keycode"));
    }
}
