//! Planning keystrokes against the X keyboard mapping. Pure logic over a snapshot of the core
//! keymap: which keycode (and Shift level) produces a keysym, and which spare keycodes get
//! borrowed for keysyms the keyboard lacks — two per spare, one on each Shift level, so a batch
//! holds twice as many characters as there are spares. The [`Lease`] remembers what is
//! borrowed so that successive calls reuse remapped keycodes, rotate through all spares, and
//! restore once; it is checked against the server's mapping whenever it plans, so a keymap
//! another program loaded drops the bindings it emptied. Whether a borrowed keycode may be
//! rebound yet (no client may still translate its last press) is the caller's to say: see
//! `inflight`; filling the empty second level of a borrowed keycode changes nothing a queued
//! unshifted press translates to, so it needs no such wait.

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

/// Keycodes to rebind (the first group's two levels of each), then strokes to send with those
/// bindings in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub remaps: Vec<(u8, [Keysym; 2])>,
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

    /// Rebinds a row to `levels` (unshifted, shifted) in the first group; the other groups stay
    /// empty, or the server's XKB would grow extra groups on every key. A mapping of one keysym
    /// per keycode keeps the first level only.
    pub fn set_row(&mut self, keycode: u8, levels: [Keysym; 2]) {
        let start = (keycode - self.min_keycode) as usize * self.per;
        let row = &mut self.syms[start..start + self.per];
        row.fill(NO_SYMBOL);
        for (slot, sym) in row.iter_mut().zip(levels) {
            *slot = sym;
        }
    }
}

/// Which Shift levels of borrowed keycodes a batch may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Levels {
    /// Both: text, where a Shift held around a character changes nothing the client reads.
    Both,
    /// The first only: key combos, whose modifiers the client reads.
    First,
}

/// How many spare keycodes the agent never borrows, so other programs in the desktop can.
const LEFT_FREE: usize = 2;

/// The borrowed keycodes of one agent, kept between calls until restored.
#[derive(Debug, Default, Clone)]
pub struct Lease {
    /// Keycodes that may be borrowed: bound to nothing, or to keysyms this lease bound.
    spares: Vec<u8>,
    /// Where each borrowed keysym is: a spare keycode and its level.
    bound: HashMap<Keysym, Stroke>,
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
        let mut keycodes: Vec<u8> = self.bound.values().map(|s| s.keycode).collect();
        keycodes.sort_unstable();
        keycodes.dedup();
        keycodes
    }

    /// Whether the lease borrowed a keycode.
    pub fn is_borrowed(&self, keycode: u8) -> bool {
        self.bound.values().any(|s| s.keycode == keycode)
    }

    /// The keysym the lease bound to a keycode's level, if any.
    fn bound_at(&self, slot: Stroke) -> Option<Keysym> {
        self.bound.iter().find(|(_, s)| **s == slot).map(|(sym, _)| *sym)
    }

    /// A borrowed keycode's row as the lease wants it: a level bound alone is on both, so a
    /// held Shift cannot change it.
    fn row_of(&self, keycode: u8) -> [Keysym; 2] {
        let first = self.bound_at(Stroke {
            keycode,
            shift: false,
        });
        let second = self.bound_at(Stroke { keycode, shift: true });
        match (first, second) {
            (Some(a), Some(b)) => [a, b],
            (Some(a), None) | (None, Some(a)) => [a, a],
            (None, None) => [NO_SYMBOL; 2],
        }
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
            .retain(|&sym, s| rows.contains(&s.keycode) && keymap.level(s.keycode, s.shift) == sym);
        let mut spares = keymap.spare_keycodes();
        spares.extend(self.bound.values().map(|s| s.keycode));
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

    /// A borrowed keycode whose second level is free to take without a wait: its first level
    /// is bound by the lease and the second by nothing, and the server's row holds nothing
    /// foreign there (or the batch rebinds the whole row anyway).
    fn free_second_level(&self, keymap: &Keymap, remapped: &[u8], levels: Levels) -> Option<u8> {
        if keymap.per < 2 || levels == Levels::First {
            return None;
        }
        let ours = |kc: u8| {
            let first = self.bound_at(Stroke {
                keycode: kc,
                shift: false,
            });
            let second = keymap.row(kc)[1];
            first.is_some() && (remapped.contains(&kc) || second == NO_SYMBOL || Some(second) == first)
        };
        let open = |kc: &u8| {
            self.bound_at(Stroke {
                keycode: *kc,
                shift: true,
            })
            .is_none()
                && ours(*kc)
        };
        // This batch's own rows first: they cost no extra rebinding.
        remapped
            .iter()
            .copied()
            .find(|kc| open(kc))
            .or_else(|| self.spares.iter().copied().find(|kc| open(kc)))
    }

    /// Plans the longest start of `syms` that one keymap change serves, against `keymap` as the
    /// server has it; answers the batch and how many keysyms it covers. Keysyms on the
    /// keyboard use their own keycode; the rest reuse their borrowed slot, take the free
    /// second level of a borrowed keycode (with [`Levels::Both`]), or borrow the spare used
    /// longest ago among those `may_rebind` allows and the batch does not press. Covering none
    /// means no spare may be rebound yet.
    pub fn next_batch(
        &mut self,
        keymap: &Keymap,
        syms: &[Keysym],
        levels: Levels,
        may_rebind: impl Fn(u8) -> bool,
    ) -> Result<(Batch, usize)> {
        self.reconcile(keymap);
        let mut strokes = Vec::new();
        let mut remapped: Vec<u8> = Vec::new();
        let mut pressed: Vec<u8> = Vec::new();
        let mut covered = syms.len();
        for (i, &sym) in syms.iter().enumerate() {
            // A combo's client reads Shift: it takes a keycode whose two levels are this keysym
            // alone, never one sharing its row with text's second character.
            let alone = |s: &&Stroke| !s.shift && self.bound_at(Stroke { shift: true, ..**s }).is_none();
            let borrowed = self
                .bound
                .get(&sym)
                .filter(|s| levels == Levels::Both || alone(s));
            let stroke = if let Some(&slot) = borrowed {
                slot
            } else if let Some(stroke) = keymap.find(sym).filter(|s| !self.spares.contains(&s.keycode)) {
                stroke
            } else {
                if self.spares.is_empty() {
                    return Err(AgentError::Unsupported(
                        "the keyboard has no spare keycode to type this character".into(),
                    ));
                }
                let slot = if let Some(keycode) = self.free_second_level(keymap, &remapped, levels) {
                    Stroke { keycode, shift: true }
                } else {
                    let pick = self
                        .spares
                        .iter()
                        .copied()
                        .filter(|kc| !pressed.contains(kc) && may_rebind(*kc))
                        .min_by_key(|kc| self.used.get(kc).copied().unwrap_or(0));
                    let Some(keycode) = pick else {
                        covered = i;
                        break;
                    };
                    self.bound.retain(|_, s| s.keycode != keycode);
                    Stroke {
                        keycode,
                        shift: false,
                    }
                };
                self.bound.insert(sym, slot);
                if !remapped.contains(&slot.keycode) {
                    remapped.push(slot.keycode);
                }
                slot
            };
            if self.spares.contains(&stroke.keycode) {
                pressed.push(stroke.keycode);
                self.touch(stroke.keycode);
            }
            strokes.push(stroke);
        }
        let remaps = remapped.into_iter().map(|kc| (kc, self.row_of(kc))).collect();
        Ok((Batch { remaps, strokes }, covered))
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
                    .next_batch(&map, &['a' as u32], Levels::Both, |_| true)
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
            let (batch, n) = lease
                .next_batch(map, &syms[done..], Levels::Both, &may_rebind)
                .unwrap();
            assert!(n > 0, "no progress at {done}");
            for &(kc, row) in &batch.remaps {
                map.set_row(kc, row);
            }
            let typed: Vec<Keysym> = batch
                .strokes
                .iter()
                .map(|s| map.level(s.keycode, s.shift))
                .collect();
            assert_eq!(typed, syms[done..done + n], "as X translates the strokes");
            done += n;
            batches.push(batch);
        }
        batches
    }

    fn stroke(keycode: u8, shift: bool) -> Stroke {
        Stroke { keycode, shift }
    }

    #[test]
    fn missing_keysyms_borrow_both_levels_of_a_spare_in_one_batch() {
        let mut map = keymap();
        let mut lease = Lease::default();
        let batches = type_all(
            &mut lease,
            &mut map,
            &[0xe9, 'a' as u32, 0x0101_f600, 0xe9],
            |_| true,
        );
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].remaps, vec![(13, [0xe9, 0x0101_f600])]);
        assert_eq!(
            batches[0].strokes,
            vec![
                stroke(13, false),
                stroke(10, false),
                stroke(13, true),
                stroke(13, false)
            ]
        );
    }

    /// A keysym borrowed alone is on both levels, so a held Shift cannot change it.
    #[test]
    fn a_keysym_alone_on_a_spare_fills_both_levels() {
        let mut map = keymap();
        let mut lease = Lease::default();
        let batches = type_all(&mut lease, &mut map, &[0x3b1], |_| true);
        assert_eq!(batches[0].remaps, vec![(13, [0x3b1, 0x3b1])]);
        assert_eq!(map.level(13, true), 0x3b1);
        let one_level = Keymap {
            min_keycode: 8,
            per: 1,
            syms: vec!['a' as u32, 0, 0],
        };
        let mut lease = Lease::default();
        let (batch, n) = lease
            .next_batch(&one_level, &[0x3b1, 0x3b2], Levels::Both, |_| true)
            .unwrap();
        assert_eq!(n, 2);
        assert!(batch.strokes.iter().all(|s| !s.shift), "no second level to use");
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
        assert_eq!(batches[0].strokes.len(), 12, "six spares, two levels each");
        let used: std::collections::BTreeSet<u8> = batches
            .iter()
            .flat_map(|b| b.strokes.iter().map(|s| s.keycode))
            .collect();
        assert_eq!(used, (10..=15).collect());
        assert_eq!(map.spare_keycodes(), vec![16, 17]);

        let mut lease = Lease::default();
        let batches = type_all(&mut lease, &mut keymap(), &syms[..6], |_| true);
        assert_eq!(
            batches[0].remaps.len(),
            3,
            "all three of the tiny keyboard's spares"
        );
    }

    #[test]
    fn later_calls_reuse_bindings_fill_second_levels_and_rotate() {
        let mut map = keymap();
        let mut lease = Lease::default();
        type_all(&mut lease, &mut map, &[0xe9], |_| true);
        let again = type_all(&mut lease, &mut map, &[0xe9, 0xea], |_| true);
        assert_eq!(
            again[0].remaps,
            vec![(13, [0xe9, 0xea])],
            "é stays, ê takes its keycode's second level"
        );
        let third = type_all(&mut lease, &mut map, &[0xeb, 0xec, 0xed, 0xee], |_| true);
        assert_eq!(third[0].remaps, vec![(14, [0xeb, 0xec]), (15, [0xed, 0xee])]);
        let fourth = type_all(&mut lease, &mut map, &[0xef], |_| true);
        assert_eq!(
            fourth[0].remaps,
            vec![(13, [0xef, 0xef])],
            "the keycode used longest ago is recycled, both its levels"
        );
        assert!(!lease.bound.contains_key(&0xea));
    }

    #[test]
    fn more_distinct_keysyms_than_slots_split_into_batches() {
        let mut map = keymap();
        let mut lease = Lease::default();
        let syms: Vec<Keysym> = (0x100..0x108).chain([0x100]).collect();
        let batches = type_all(&mut lease, &mut map, &syms, |_| true);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].strokes.len(), 6, "three spares, two levels each");
    }

    #[test]
    fn a_spare_is_rebound_only_when_allowed_but_a_free_level_is_taken_at_once() {
        let mut map = keymap();
        let mut lease = Lease::default();
        type_all(&mut lease, &mut map, &[0x100, 0x101, 0x102], |_| true);
        let (batch, n) = lease.next_batch(&map, &[0x103], Levels::Both, |_| false).unwrap();
        assert_eq!(n, 1, "14's second level was free");
        assert_eq!(batch.remaps, vec![(14, [0x102, 0x103])]);
        map.set_row(14, [0x102, 0x103]);
        type_all(&mut lease, &mut map, &[0x104, 0x105], |_| true);
        let (batch, n) = lease.next_batch(&map, &[0x106], Levels::Both, |_| false).unwrap();
        assert_eq!(
            (n, batch),
            (0, Batch::default()),
            "every slot taken and every spare may still be translated"
        );
        let (batch, n) = lease
            .next_batch(&map, &[0x100, 0x106, 0x107, 0x108], Levels::Both, |kc| kc == 14)
            .unwrap();
        assert_eq!(
            n, 3,
            "one spare may be rebound: the batch ends where a second is needed"
        );
        assert_eq!(batch.remaps, vec![(14, [0x106, 0x107])]);
    }

    #[test]
    fn a_reloaded_keymap_drops_the_bindings_it_emptied() {
        let mut map = keymap();
        let mut lease = Lease::default();
        type_all(&mut lease, &mut map, &[0xfc], |_| true);
        assert_eq!(lease.borrowed(), vec![13]);
        // Another program loads a keymap: the spares are empty again and 14 is now a real key.
        let mut reloaded = keymap();
        reloaded.set_row(14, ['b' as u32, 'B' as u32]);
        let (batch, n) = lease
            .next_batch(&reloaded, &[0xfc, 'b' as u32, 0xe9], Levels::Both, |_| true)
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            batch.remaps,
            vec![(15, [0xfc, 0xe9])],
            "ü is bound again; 14 is not spare"
        );
        assert_eq!(batch.strokes[1].keycode, 14);
    }

    /// Key combos keep to first levels (their client reads Shift as a modifier): a keysym text
    /// put on a second level is bound again on a first one.
    #[test]
    fn combos_use_first_levels_only() {
        let mut map = keymap();
        let mut lease = Lease::default();
        type_all(&mut lease, &mut map, &[0xffca, 0xffd5], |_| true);
        assert_eq!(lease.bound[&0xffd5], stroke(13, true));
        let (batch, n) = lease
            .next_batch(&map, &[0xffd5, 0xffca], Levels::First, |_| true)
            .unwrap();
        assert_eq!(n, 2);
        assert!(batch.strokes.iter().all(|s| !s.shift), "{batch:?}");
        assert!(
            batch.remaps.iter().all(|(kc, _)| *kc != 13),
            "F13 shares its row with F24: it is bound again alone {batch:?}"
        );
    }

    /// A second level another program wrote on a keycode the lease holds is not overwritten.
    #[test]
    fn a_foreign_second_level_is_left_alone() {
        let mut map = keymap();
        let mut lease = Lease::default();
        type_all(&mut lease, &mut map, &[0xfc], |_| true);
        map.set_row(13, [0xfc, 0xe0]);
        let (batch, _) = lease.next_batch(&map, &[0xe9], Levels::Both, |_| true).unwrap();
        assert_eq!(batch.remaps, vec![(14, [0xe9, 0xe9])]);
    }

    #[test]
    fn no_spares_is_a_clear_error() {
        let map = Keymap {
            min_keycode: 8,
            per: 1,
            syms: vec!['a' as u32],
        };
        let err = Lease::default()
            .next_batch(&map, &[0xe9], Levels::Both, |_| true)
            .unwrap_err();
        assert!(err.to_string().contains("spare keycode"));
    }
}
