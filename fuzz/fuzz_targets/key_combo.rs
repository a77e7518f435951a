//! Key combos (`ctrl+shift+t`, `Return`, `ctrl++`): any text parses or is refused, never a
//! panic; a parsed combo written back with X's names parses to the same keysyms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orgo_agent::keys::{keysym_name, parse_combo};

fuzz_target!(|text: &str| {
    let Ok(combo) = parse_combo(text) else {
        return;
    };
    assert!(!combo.keysyms.is_empty());
    let names: Vec<String> = combo
        .keysyms
        .iter()
        .map(|&sym| {
            // A character X has no name for is written as itself, as a client would.
            keysym_name(sym)
                .or_else(|| char::from_u32(sym.wrapping_sub(0x0100_0000)).map(String::from))
                .unwrap_or_else(|| panic!("parsed keysym {sym:#x} has no spelling"))
        })
        .collect();
    let written = names.join("+");
    let again = parse_combo(&written).unwrap_or_else(|e| panic!("{written:?} from {text:?}: {e}"));
    assert_eq!(again.keysyms, combo.keysyms, "{text:?} → {written:?}");
});
