//! Planning keystrokes against the X keyboard mapping. Pure logic over a snapshot of the core
//! keymap: which keycode (and Shift level) produces a keysym, and which spare keycodes get
//! borrowed for keysyms the keyboard lacks. The [`Lease`] remembers what is borrowed so that
//! successive calls reuse remapped keycodes, rotate through all spares (a keycode is never
//! rebound while a client may still be translating its last press), and restore once.

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

/// The borrowed keycodes of one agent, kept between calls until restored.
#[derive(Debug, Default)]
pub struct Lease {
    spares: Vec<u8>,
    cursor: usize,
    bound: HashMap<Keysym, u8>,
}

impl Lease {
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// The keycodes currently borrowed; restoring binds them back to nothing.
    pub fn borrowed(&self) -> Vec<u8> {
        self.bound.values().copied().collect()
    }

    pub fn clear(&mut self) {
        self.bound.clear();
        self.spares.clear();
    }

    fn holder_of(&self, keycode: u8) -> Option<Keysym> {
        self.bound
            .iter()
            .find(|(_, kc)| **kc == keycode)
            .map(|(sym, _)| *sym)
    }

    /// Plans keysyms into batches of strokes. Keysyms on the keyboard use their own keycode;
    /// the rest borrow spares in rotation, starting a new batch only when one call needs more
    /// distinct borrowed keysyms than there are spares.
    pub fn plan(&mut self, keymap: &Keymap, syms: &[Keysym]) -> Result<Vec<Batch>> {
        if self.bound.is_empty() {
            self.spares = keymap.spare_keycodes();
            self.cursor = 0;
        }
        let mut batches = vec![Batch::default()];
        let mut in_batch: Vec<Keysym> = Vec::new();
        for &sym in syms {
            if let Some(&keycode) = self.bound.get(&sym) {
                if !in_batch.contains(&sym) {
                    in_batch.push(sym);
                }
                batches.last_mut().expect("one batch").strokes.push(Stroke {
                    keycode,
                    shift: false,
                });
                continue;
            }
            if let Some(stroke) = keymap.find(sym).filter(|s| !self.spares.contains(&s.keycode)) {
                batches.last_mut().expect("one batch").strokes.push(stroke);
                continue;
            }
            if self.spares.is_empty() {
                return Err(AgentError::Unsupported(
                    "the keyboard has no spare keycode to type this character".into(),
                ));
            }
            let keycode = self.spares[self.cursor % self.spares.len()];
            self.cursor = (self.cursor + 1) % self.spares.len();
            if let Some(old) = self.holder_of(keycode) {
                if in_batch.contains(&old) {
                    // Every spare is bound to a keysym this batch still sends: start another.
                    batches.push(Batch::default());
                    in_batch.clear();
                }
                self.bound.remove(&old);
            }
            self.bound.insert(sym, keycode);
            in_batch.push(sym);
            let batch = batches.last_mut().expect("one batch");
            batch.remaps.push((keycode, sym));
            batch.strokes.push(Stroke {
                keycode,
                shift: false,
            });
        }
        Ok(batches)
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
            assert!(Lease::default().plan(&map, &['a' as u32]).is_err());
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

    #[test]
    fn missing_keysyms_borrow_spares_in_one_batch() {
        let map = keymap();
        let mut lease = Lease::default();
        let batches = lease.plan(&map, &[0xe9, 'a' as u32, 0x0101_f600, 0xe9]).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].remaps, vec![(13, 0xe9), (14, 0x0101_f600)]);
        let codes: Vec<u8> = batches[0].strokes.iter().map(|s| s.keycode).collect();
        assert_eq!(codes, vec![13, 10, 14, 13]);
    }

    #[test]
    fn later_calls_reuse_bindings_and_rotate() {
        let map = keymap();
        let mut lease = Lease::default();
        lease.plan(&map, &[0xe9]).unwrap();
        let again = lease.plan(&map, &[0xe9, 0xea]).unwrap();
        assert_eq!(
            again[0].remaps,
            vec![(14, 0xea)],
            "é stays bound, ê takes the next spare"
        );
        let third = lease.plan(&map, &[0xeb]).unwrap();
        assert_eq!(third[0].remaps, vec![(15, 0xeb)]);
        let fourth = lease.plan(&map, &[0xec]).unwrap();
        assert_eq!(
            fourth[0].remaps,
            vec![(13, 0xec)],
            "the oldest binding is recycled"
        );
    }

    #[test]
    fn more_distinct_keysyms_than_spares_split_into_batches() {
        let map = keymap();
        let mut lease = Lease::default();
        let syms = [0x100, 0x101, 0x102, 0x103, 0x100];
        let batches = lease.plan(&map, &syms).unwrap();
        assert_eq!(batches.len(), 2);
        let sent: usize = batches.iter().map(|b| b.strokes.len()).sum();
        assert_eq!(sent, syms.len());
        for batch in &batches {
            for stroke in &batch.strokes {
                assert!(batch.remaps.iter().any(|(kc, _)| *kc == stroke.keycode) || stroke.keycode < 13);
            }
        }
    }

    #[test]
    fn no_spares_is_a_clear_error() {
        let map = Keymap {
            min_keycode: 8,
            per: 1,
            syms: vec!['a' as u32],
        };
        let err = Lease::default().plan(&map, &[0xe9]).unwrap_err();
        assert!(err.to_string().contains("spare keycode"));
    }
}
