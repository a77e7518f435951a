//! Typing plans against any keyboard mapping: texts typed one after another (with restores in
//! between) never panic, and replaying each plan's remaps and strokes on the mapping, by X's
//! level rules, produces exactly the text's keysyms. Borrowed keycodes are always spares.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use orgo_agent::keymap::{Keymap, Lease};
use orgo_agent::keys::keysym_for_char;

#[derive(Debug, Arbitrary)]
enum Step {
    Type(String),
    Restore,
}

#[derive(Debug, Arbitrary)]
struct Case {
    min_keycode: u8,
    per: u8,
    /// Small values so that rows collide with the typed text's keysyms.
    syms: Vec<u8>,
    steps: Vec<Step>,
}

fuzz_target!(|case: Case| {
    let mut live = Keymap {
        min_keycode: case.min_keycode,
        per: usize::from(case.per % 8),
        syms: case.syms.iter().map(|&b| u32::from(b)).collect(),
    };
    let spares = live.spare_keycodes();
    let mut lease = Lease::default();
    for step in case.steps {
        match step {
            Step::Restore => {
                for kc in lease.borrowed() {
                    live.set_row(kc, 0);
                }
                lease.clear();
            }
            Step::Type(text) => {
                let want: Vec<u32> = text.chars().filter_map(keysym_for_char).collect();
                let Ok(batches) = lease.plan(&live, &want) else {
                    assert!(spares.is_empty(), "refused with spares {spares:?}");
                    continue;
                };
                let mut typed = Vec::with_capacity(want.len());
                for batch in &batches {
                    for &(kc, sym) in &batch.remaps {
                        assert!(spares.contains(&kc), "borrowed keycode {kc} is not spare");
                        live.set_row(kc, sym);
                    }
                    typed.extend(batch.strokes.iter().map(|s| live.level(s.keycode, s.shift)));
                }
                assert_eq!(typed, want, "{text:?}");
            }
        }
    }
});
