//! Key names to keysyms: xdotool's names (X keysym names such as `Return`, `Page_Up`,
//! `XF86AudioMute`), the seed's and common agents' aliases (`enter`, `esc`, `ctrl`, `cmd`, `pgdn`),
//! any single character, and `+` combos, all case-insensitive. Pure logic: no X connection.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{AgentError, Result};

/// An X keysym value.
pub type Keysym = u32;

/// Aliases beyond X's own names, matched case-insensitively before the keysym table.
const ALIASES: &[(&str, &str)] = &[
    ("enter", "Return"),
    ("return", "Return"),
    ("esc", "Escape"),
    ("escape", "Escape"),
    ("tab", "Tab"),
    ("space", "space"),
    ("spacebar", "space"),
    ("backspace", "BackSpace"),
    ("bksp", "BackSpace"),
    ("del", "Delete"),
    ("delete", "Delete"),
    ("ins", "Insert"),
    ("insert", "Insert"),
    ("home", "Home"),
    ("end", "End"),
    ("pgup", "Prior"),
    ("pageup", "Prior"),
    ("page_up", "Prior"),
    ("pgdn", "Next"),
    ("pagedown", "Next"),
    ("page_down", "Next"),
    ("up", "Up"),
    ("down", "Down"),
    ("left", "Left"),
    ("right", "Right"),
    ("arrowup", "Up"),
    ("arrowdown", "Down"),
    ("arrowleft", "Left"),
    ("arrowright", "Right"),
    ("ctrl", "Control_L"),
    ("control", "Control_L"),
    ("lctrl", "Control_L"),
    ("rctrl", "Control_R"),
    ("alt", "Alt_L"),
    ("lalt", "Alt_L"),
    ("ralt", "Alt_R"),
    ("altgr", "ISO_Level3_Shift"),
    ("option", "Alt_L"),
    ("shift", "Shift_L"),
    ("lshift", "Shift_L"),
    ("rshift", "Shift_R"),
    ("super", "Super_L"),
    ("win", "Super_L"),
    ("windows", "Super_L"),
    // `meta` is the Windows/Command key of today's keyboards, which X calls Super_L; X's own
    // Meta_L keeps its name.
    ("meta", "Super_L"),
    ("cmd", "Super_L"),
    ("command", "Super_L"),
    ("capslock", "Caps_Lock"),
    ("numlock", "Num_Lock"),
    ("scrolllock", "Scroll_Lock"),
    ("printscreen", "Print"),
    ("prtsc", "Print"),
    ("prtscr", "Print"),
    ("print", "Print"),
    ("pause", "Pause"),
    ("break", "Break"),
    ("menu", "Menu"),
    ("apps", "Menu"),
    ("plus", "plus"),
    ("minus", "minus"),
    ("volumeup", "XF86AudioRaiseVolume"),
    ("volumedown", "XF86AudioLowerVolume"),
    ("volumemute", "XF86AudioMute"),
    ("mute", "XF86AudioMute"),
];

/// Keysym ranges that hold every named keysym xkeysym knows: the core table, the named
/// Unicode keysyms, and the vendor pages (XF86, Sun, HP, OSF, DEC).
fn named_ranges() -> impl Iterator<Item = Keysym> {
    (0..0x1_0000u32)
        .chain(0x0100_0000..0x0101_0000)
        .chain((0x1000u32..=0x1008).flat_map(|page| (0xfe00..=0xffffu32).map(move |low| (page << 16) | low)))
}

/// A keysym's X name without the `XK_` prefix (`XF86XK_AudioMute` → `XF86AudioMute`), as
/// xdotool and `parse_combo` spell it.
pub fn keysym_name(sym: Keysym) -> Option<String> {
    let (vendor, rest) = xkeysym::Keysym::new(sym).name()?.split_once("XK_")?;
    Some(format!("{vendor}{rest}"))
}

struct Table {
    exact: HashMap<String, Keysym>,
    folded: HashMap<String, Keysym>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut exact = HashMap::new();
        let mut folded: HashMap<String, Keysym> = HashMap::new();
        for sym in named_ranges() {
            let Some(name) = keysym_name(sym) else {
                continue;
            };
            exact.entry(name.clone()).or_insert(sym);
            let lower = name.to_lowercase();
            // On a case-insensitive clash ("Aacute"/"aacute") the lowercase keysym wins, so a
            // name never adds an implicit Shift.
            let prefer_this = name == lower;
            match folded.get(&lower) {
                Some(_) if !prefer_this => {}
                _ => {
                    folded.insert(lower, sym);
                }
            }
        }
        Table { exact, folded }
    })
}

/// Looks up one key name.
pub fn keysym_for_name(name: &str) -> Option<Keysym> {
    let lower = name.to_lowercase();
    if let Some((_, target)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return table().exact.get(*target).copied();
    }
    let mut chars = name.chars();
    if let (Some(ch), None) = (chars.next(), chars.next()) {
        // A single character names its own key; letters are case-insensitive like every name.
        let ch = if ch.is_ascii_alphabetic() {
            ch.to_ascii_lowercase()
        } else {
            ch
        };
        return match xkeysym::Keysym::from_char(ch) {
            xkeysym::Keysym::NoSymbol => None,
            sym => Some(sym.raw()),
        };
    }
    let t = table();
    t.exact.get(name).or_else(|| t.folded.get(&lower)).copied()
}

/// A parsed `+` combo: modifiers first, in the order given, the final key last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combo {
    pub keysyms: Vec<Keysym>,
}

/// Parses `ctrl+shift+i`, `Return`, `ctrl++` (the plus key) or `+`.
pub fn parse_combo(combo: &str) -> Result<Combo> {
    let trimmed = combo.trim();
    if trimmed.is_empty() {
        return Err(AgentError::InvalidArgument("key must not be empty".into()));
    }
    let names = split_combo(trimmed);
    let mut keysyms = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        if name.is_empty() {
            return Err(AgentError::InvalidArgument(format!(
                "key combo {combo:?} has an empty part"
            )));
        }
        let sym = keysym_for_name(name)
            .ok_or_else(|| AgentError::InvalidArgument(format!("unknown key name {name:?} in {combo:?}")))?;
        if controls_the_server(sym) {
            return Err(AgentError::InvalidArgument(format!(
                "key {name:?} controls the X server itself (it would end or reconfigure the desktop's display) and is not sent"
            )));
        }
        keysyms.push(sym);
    }
    Ok(Combo { keysyms })
}

/// Keysyms whose XKB action works on the server rather than on a window: Terminate_Server
/// ends the X server, the AccessX toggles (slow, sticky, bounce, mouse keys, repeat off) would
/// change how every later key press is taken, and XFree86's VT switches, grab breaks and
/// video-mode keys reconfigure the server.
fn controls_the_server(sym: Keysym) -> bool {
    matches!(sym, 0xfe70..=0xfe7a | 0xfed5 | 0x1008_fe01..=0x1008_fe0c | 0x1008_fe20..=0x1008_fe25)
}

/// Splits on `+`, treating a `+` at the very end (or alone) as the plus key itself.
fn split_combo(combo: &str) -> Vec<&str> {
    if combo == "+" {
        return vec!["+"];
    }
    if let Some(head) = combo.strip_suffix("++") {
        let mut parts: Vec<&str> = head.split('+').collect();
        parts.push("+");
        return parts;
    }
    combo.split('+').collect()
}

/// The keysym of one character typed as text: a line break (`\n`, or `\r`) is Return, `\t`
/// Tab, U+0008 BackSpace; other control characters have none.
pub fn keysym_for_char(ch: char) -> Option<Keysym> {
    match ch {
        '\n' | '\r' => Some(0xff0d),
        '\t' => Some(0xff09),
        '\u{8}' => Some(0xff08),
        c if c.is_control() => None,
        // A character X has no name for still has its Unicode keysym.
        c => match xkeysym::Keysym::from_char(c) {
            xkeysym::Keysym::NoSymbol => Some(unicode_keysym(c)),
            sym => Some(sym.raw()),
        },
    }
}

/// One key a text asks for: the keysym, and the character it comes from with its position
/// (counted from 1), to name it when it cannot be typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextKey {
    pub keysym: Keysym,
    pub ch: char,
    pub at: usize,
}

impl std::fmt::Display for TextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ch.is_control() {
            write!(f, "U+{:04X} (character {})", self.ch as u32, self.at)
        } else {
            write!(f, "{:?} (character {})", self.ch, self.at)
        }
    }
}

/// The keys that type `text`, by one rule for control characters: a line break is one Return
/// whichever form it takes (`\r\n`, `\n` or a lone `\r`), `\t` is Tab, U+0008 is BackSpace,
/// and any other control character (Unicode category Cc: U+0000–U+001F, U+007F–U+009F)
/// refuses the whole text, naming the character and its position.
pub fn text_keys(text: &str) -> Result<Vec<TextKey>> {
    let mut keys: Vec<TextKey> = Vec::with_capacity(text.len());
    let mut after_cr = false;
    for (i, ch) in text.chars().enumerate() {
        let crlf = after_cr && ch == '\n';
        after_cr = ch == '\r';
        if crlf {
            continue;
        }
        let keysym = keysym_for_char(ch).ok_or_else(|| {
            AgentError::InvalidArgument(format!(
                "text contains the control character U+{:04X} at character {}; of the control characters only line breaks (\\n, \\r\\n, \\r), tab and backspace (U+0008) can be typed",
                ch as u32,
                i + 1
            ))
        })?;
        keys.push(TextKey {
            keysym,
            ch,
            at: i + 1,
        });
    }
    Ok(keys)
}

/// The keysym X uses for a character when it has to invent one: Latin-1 as itself, the rest as
/// `0x01000000 + code point`. Xlib and xkbcommon both turn these back into the character.
pub fn unicode_keysym(ch: char) -> Keysym {
    let cp = ch as u32;
    if (0x20..=0x7e).contains(&cp) || (0xa0..=0xff).contains(&cp) {
        cp
    } else {
        0x0100_0000 + cp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(combo: &str, expected: &[Keysym]) {
        let parsed = parse_combo(combo).unwrap_or_else(|e| panic!("{combo:?}: {e}"));
        assert_eq!(parsed.keysyms, expected, "combo {combo:?}");
    }

    const RETURN: Keysym = 0xff0d;
    const ESCAPE: Keysym = 0xff1b;
    const CTRL: Keysym = 0xffe3;
    const SHIFT: Keysym = 0xffe1;
    const ALT: Keysym = 0xffe9;
    const SUPER: Keysym = 0xffeb;

    #[test]
    fn seed_examples() {
        check("Enter", &[RETURN]);
        check("enter", &[RETURN]);
        check("Tab", &[0xff09]);
        check("Escape", &[ESCAPE]);
        check("esc", &[ESCAPE]);
        check("space", &[0x20]);
        check("ctrl+c", &[CTRL, 'c' as u32]);
        check("ctrl+v", &[CTRL, 'v' as u32]);
        check("ctrl+a", &[CTRL, 'a' as u32]);
        check("alt+tab", &[ALT, 0xff09]);
        check("ctrl+shift+i", &[CTRL, SHIFT, 'i' as u32]);
    }

    #[test]
    fn case_insensitive_names_and_letters() {
        check("CTRL+SHIFT+I", &[CTRL, SHIFT, 'i' as u32]);
        check("RETURN", &[RETURN]);
        check("page_down", &[0xff56]);
        check("Page_Down", &[0xff56]);
        check("f5", &[0xffc2]);
        check("F24", &[0xffd5]);
        check("a", &['a' as u32]);
        check("A", &['a' as u32]);
    }

    #[test]
    fn aliases_and_modifiers() {
        for (name, sym) in [
            ("super", SUPER),
            ("win", SUPER),
            ("meta", SUPER),
            ("cmd", SUPER),
            ("pgup", 0xff55),
            ("pgdn", 0xff56),
            ("del", 0xffff),
            ("backspace", 0xff08),
            ("up", 0xff52),
            ("Left", 0xff51),
            ("home", 0xff50),
            ("end", 0xff57),
            ("insert", 0xff63),
            ("printscreen", 0xff61),
            ("XF86AudioMute", 0x1008ff12),
            ("xf86audiomute", 0x1008ff12),
            ("KP_Enter", 0xff8d),
            ("BackSpace", 0xff08),
            ("Caps_Lock", 0xffe5),
            ("minus", 0x2d),
            ("comma", 0x2c),
        ] {
            check(name, &[sym]);
        }
    }

    #[test]
    fn plus_key_and_characters() {
        check("+", &['+' as u32]);
        check("ctrl++", &[CTRL, '+' as u32]);
        check("ctrl+plus", &[CTRL, '+' as u32]);
        check("é", &[0xe9]);
        check("ctrl+1", &[CTRL, '1' as u32]);
        check("ctrl + c", &[CTRL, 'c' as u32]);
    }

    #[test]
    fn bad_names_are_named_in_the_error() {
        for (combo, needle) in [
            ("ctrl+foo", "\"foo\""),
            ("hyperdrive", "\"hyperdrive\""),
            ("ctrl+", "empty"),
            ("", "empty"),
            ("Terminate_Server", "controls the X server"),
            ("ctrl+alt+terminate_server", "controls the X server"),
            ("SlowKeys_Enable", "controls the X server"),
            ("XF86Switch_VT_1", "controls the X server"),
            ("XF86Ungrab", "controls the X server"),
        ] {
            let err = parse_combo(combo).unwrap_err().to_string();
            assert!(err.contains(needle), "{combo:?} gave {err:?}");
        }
    }

    #[test]
    fn control_characters_follow_one_rule() {
        let syms = |t: &str| text_keys(t).unwrap().iter().map(|k| k.keysym).collect::<Vec<_>>();
        assert_eq!(syms("a\r\nb"), vec![0x61, RETURN, 0x62], "CR LF is one Return");
        assert_eq!(syms("a\rb\nc"), vec![0x61, RETURN, 0x62, RETURN, 0x63]);
        assert_eq!(syms("\r\r\n\n"), vec![RETURN, RETURN, RETURN], "CR, CR LF, LF");
        assert_eq!(syms("\n\r"), vec![RETURN, RETURN], "LF CR is two line breaks");
        assert_eq!(syms("\t\u{8}"), vec![0xff09, 0xff08]);
        let keys = text_keys("x\r\ny").unwrap();
        assert_eq!(
            (keys[2].ch, keys[2].at),
            ('y', 4),
            "positions count the text's characters"
        );
        for (text, at) in [
            ("ab\u{1b}", 3),
            ("\u{0}", 1),
            ("é\u{7f}", 2),
            ("\u{85}", 1),
            ("\r\n\u{c}", 3),
        ] {
            let err = text_keys(text).unwrap_err();
            assert!(matches!(err, AgentError::InvalidArgument(_)), "{text:?}");
            let ch = text.chars().nth(at - 1).unwrap();
            let want = format!("U+{:04X} at character {at};", ch as u32);
            assert!(err.to_string().contains(&want), "{text:?}: {err}");
        }
    }

    #[test]
    fn characters_to_keysyms() {
        assert_eq!(keysym_for_char('a'), Some(0x61));
        assert_eq!(keysym_for_char('\n'), Some(RETURN));
        assert_eq!(keysym_for_char('\u{7}'), None);
        assert_eq!(unicode_keysym('é'), 0xe9);
        assert_eq!(unicode_keysym('€'), 0x0100_20ac);
        assert_eq!(unicode_keysym('😀'), 0x0101_f600);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Names users and agents write, mixed case as they come.
        const NAMES: &[&str] = &[
            "ctrl",
            "Shift",
            "alt",
            "super",
            "cmd",
            "Return",
            "enter",
            "esc",
            "Tab",
            "space",
            "BackSpace",
            "Delete",
            "Page_Up",
            "pgdn",
            "F1",
            "F12",
            "Left",
            "minus",
            "a",
            "Z",
            "7",
            "é",
            "XF86AudioMute",
            "KP_Enter",
        ];

        proptest! {
            #[test]
            fn any_text_parses_or_is_refused_without_panic(s in any::<String>()) {
                let _ = parse_combo(&s);
            }

            #[test]
            fn combos_made_of_known_names_parse_back(
                names in prop::collection::vec(prop::sample::select(NAMES), 1..5),
                plus_last in any::<bool>(),
            ) {
                let mut combo = names.join("+");
                let mut want: Vec<Keysym> = names.iter().map(|n| keysym_for_name(n).unwrap()).collect();
                if plus_last {
                    combo.push_str("++");
                    want.push(keysym_for_name("+").unwrap());
                }
                prop_assert_eq!(parse_combo(&combo).unwrap().keysyms, want);
                // Surrounding blanks and case do not matter.
                let padded = format!("  {}  ", combo.to_uppercase());
                prop_assert!(parse_combo(&padded).is_ok(), "{padded:?}");
            }

            #[test]
            fn every_character_but_controls_can_be_typed(c in any::<char>()) {
                let typeable = keysym_for_char(c).is_some();
                prop_assert!(typeable != (c.is_control() && !"\n\r\t\u{8}".contains(c)), "{c:?}");
                // The invented keysym is unique per character and decodes back.
                let sym = unicode_keysym(c);
                let back = if sym >= 0x0100_0000 { sym - 0x0100_0000 } else { sym };
                prop_assert_eq!(back, c as u32);
            }
        }
    }
}
