//! Typing plans against any keyboard mapping: texts typed one after another (with restores and
//! foreign keymap loads in between) never panic; every batch rebinds only spares the caller
//! allows (a batch that covers nothing binds nothing, and once every spare is allowed a batch
//! always covers something; a keycode the caller did not allow only gains a second level); and
//! replaying each batch's remaps and strokes on the mapping, by X's level rules, produces
//! exactly the text's keysyms.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use orgo_agent::keymap::{Keymap, Lease, Levels};
use orgo_agent::keys::text_keys;

#[derive(Debug, Arbitrary)]
enum Step {
    /// Text, and which keycodes the caller allows to be rebound (bit `kc % 64`).
    Type(String, u64),
    Restore,
    /// Another program rewrites one row.
    Load(u8, u8),
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
    let mut lease = Lease::default();
    for step in case.steps {
        match step {
            Step::Restore => {
                lease.reconcile(&live);
                for kc in lease.borrowed() {
                    live.set_row(kc, [0; 2]);
                }
                lease.clear();
            }
            Step::Load(keycode, sym) => {
                if live.keycodes().any(|kc| kc == keycode) {
                    live.set_row(keycode, [u32::from(sym); 2]);
                }
            }
            Step::Type(text, allowed) => {
                let Ok(keys) = text_keys(&text) else { continue };
                let want: Vec<u32> = keys.iter().map(|k| k.keysym).collect();
                let mut typed = Vec::with_capacity(want.len());
                let mut done = 0;
                while done < want.len() {
                    // What may be borrowed: bound to nothing, or still held by the lease.
                    lease.reconcile(&live);
                    let mut spares = live.spare_keycodes();
                    spares.extend(lease.borrowed());
                    let allows = |kc: u8| allowed & (1 << (kc % 64)) != 0;
                    let Ok((mut batch, mut n)) = lease.next_batch(&live, &want[done..], Levels::Both, allows)
                    else {
                        break;
                    };
                    if n == 0 {
                        assert!(batch.remaps.is_empty() && batch.strokes.is_empty());
                        // The caller waits until every spare may be rebound.
                        let Ok(next) = lease.next_batch(&live, &want[done..], Levels::Both, |_| true) else {
                            break;
                        };
                        (batch, n) = next;
                        assert!(n > 0, "no progress with every spare allowed");
                    } else {
                        // Filling a held keycode's free second level keeps its first.
                        for &(kc, row) in &batch.remaps {
                            assert!(
                                allows(kc) || live.level(kc, false) == row[0],
                                "rebound keycode {kc} the caller did not allow"
                            );
                        }
                    }
                    for &(kc, row) in &batch.remaps {
                        assert!(spares.contains(&kc), "borrowed keycode {kc} is not spare");
                        live.set_row(kc, row);
                    }
                    typed.extend(batch.strokes.iter().map(|s| live.level(s.keycode, s.shift)));
                    done += n;
                }
                if done == want.len() {
                    assert_eq!(typed, want, "{text:?}");
                }
            }
        }
    }
});
