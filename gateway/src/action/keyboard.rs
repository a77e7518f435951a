//! Keyboard actions from their JSON bodies: typed text and key presses.

use serde::Deserialize;

use std::time::Duration;

use super::{
    Action, Input, MAX_COMBO_BYTES, MAX_REPEAT, MAX_TEXT_CHARS, MAX_TYPE_DELAY, MAX_WAIT, Press, Screen,
};
use crate::json::{Invalid, parse_body};

/// Checks text to type: 1 to [`MAX_TEXT_CHARS`] characters, and the agent's rule for control
/// characters (`orgo_agent::keys::text_keys`) checked before the call: line breaks (`\n`,
/// `\r\n`, a lone `\r`), tab and backspace are typed as keys; any other control character (Cc)
/// refuses the text, named with its position in the agent's words. `openapi.json` states the
/// same set as the field's pattern.
pub fn typeable(text: String) -> Result<String, Invalid> {
    let n = text.chars().count();
    if n == 0 || n > MAX_TEXT_CHARS {
        return Err(Invalid(format!("text must be 1 to {MAX_TEXT_CHARS} characters")));
    }
    match text
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{8}'))
    {
        None => Ok(text),
        Some((i, c)) => Err(Invalid(format!(
            "text contains the control character U+{:04X} at character {}; of the control characters only line breaks (\\n, \\r\\n, \\r), tab and backspace (U+0008) can be typed",
            c as u32,
            i + 1
        ))),
    }
}

/// Checks a key name or combo (`ctrl+c`): not blank, at most [`MAX_COMBO_BYTES`]. Whether
/// the names exist is the agent's to say (it knows the desktop's keysyms).
pub fn combo(key: String) -> Result<String, Invalid> {
    if key.trim().is_empty() || key.len() > MAX_COMBO_BYTES {
        return Err(Invalid(
            "key must be a key name or combo such as \"ctrl+c\"".into(),
        ));
    }
    Ok(key)
}

/// The pause after each typed character: at most [`MAX_TYPE_DELAY`], and all the pauses of
/// `text` together at most [`MAX_WAIT`] (a typed text waits no longer than a wait may).
pub fn type_delay(text: &str, delay: Duration) -> Result<Duration, Invalid> {
    let total = delay.saturating_mul(text.chars().count() as u32);
    if delay > MAX_TYPE_DELAY || total > MAX_WAIT {
        return Err(Invalid(format!(
            "delay must be at most {} ms a character and {} s for the whole text",
            MAX_TYPE_DELAY.as_millis(),
            MAX_WAIT.as_secs()
        )));
    }
    Ok(delay)
}

/// How many times a key is pressed: 1 to [`MAX_REPEAT`].
pub fn repeat(n: u32) -> Result<u32, Invalid> {
    if !(1..=MAX_REPEAT).contains(&n) {
        return Err(Invalid(format!("repeat must be from 1 to {MAX_REPEAT}, not {n}")));
    }
    Ok(n)
}

#[derive(Debug, Deserialize)]
struct TypeText {
    text: String,
    #[serde(default)]
    delay_ms: Option<f64>,
}

/// `{"text", "delay_ms"? (a pause after each character, ms; 0 or absent: as fast as the X
/// server takes it)}`.
pub(super) fn type_text(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    let t: TypeText = parse_body(input.body)?;
    let text = typeable(t.text)?;
    let delay = match t.delay_ms {
        None => Duration::ZERO,
        Some(ms) if ms.is_finite() && ms >= 0.0 && ms <= MAX_TYPE_DELAY.as_millis() as f64 => {
            Duration::from_secs_f64(ms / 1000.0)
        }
        Some(ms) => {
            return Err(Invalid(format!(
                "delay_ms must be from 0 to {} ms, not {ms}",
                MAX_TYPE_DELAY.as_millis()
            )));
        }
    };
    Ok(Action::Type {
        delay: type_delay(&text, delay)?,
        text,
    })
}

#[derive(Debug, Deserialize)]
struct Key {
    key: String,
}

fn press(input: Input<'_>, press: Press) -> Result<Action, Invalid> {
    let k: Key = parse_body(input.body)?;
    Ok(Action::Key {
        combo: combo(k.key)?,
        press,
        repeat: 1,
    })
}

/// `{"key"}`: pressed and released.
pub(super) fn key(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    press(input, Press::Both)
}

/// `{"key"}`: pressed and held.
pub(super) fn key_down(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    press(input, Press::Down)
}

/// `{"key"}`: released.
pub(super) fn key_up(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    press(input, Press::Up)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::action::parse_json as parse;

    #[test]
    fn text() {
        assert_eq!(
            parse(type_text, r#"{"text": "héllo\r\nwörld\t\b"}"#),
            Ok(Action::Type {
                text: "héllo\r\nwörld\t\u{8}".into(),
                delay: std::time::Duration::ZERO,
            })
        );
        let at_limit = format!(r#"{{"text": "{}"}}"#, "ж".repeat(MAX_TEXT_CHARS));
        assert!(
            parse(type_text, &at_limit).is_ok(),
            "the limit counts characters, not bytes"
        );
        let over = format!(r#"{{"text": "{}"}}"#, "x".repeat(MAX_TEXT_CHARS + 1));
        for (body, needle) in [
            (r#"{"text": 5}"#, "\"text\""),
            ("{}", "missing field `text`"),
            (r#"{"text": ""}"#, "text must be 1 to 100000 characters"),
            (over.as_str(), "100000"),
            (r#"{"text": "ab\u0007"}"#, "U+0007 at character 3;"),
            (r#"{"text": "\u001b[A"}"#, "U+001B at character 1;"),
        ] {
            let e = parse(type_text, body).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(
            parse(key, r#"{"key": "ctrl+c"}"#),
            Ok(Action::Key {
                combo: "ctrl+c".into(),
                press: Press::Both,
                repeat: 1,
            })
        );
        assert!(matches!(
            parse(key_down, r#"{"key": "shift"}"#),
            Ok(Action::Key {
                press: Press::Down,
                ..
            })
        ));
        assert!(matches!(
            parse(key_up, r#"{"key": "shift"}"#),
            Ok(Action::Key { press: Press::Up, .. })
        ));
        let long = format!(r#"{{"key": "{}"}}"#, "a".repeat(MAX_COMBO_BYTES + 1));
        for body in [r#"{"key": "  "}"#, r#"{"key": ""}"#, long.as_str()] {
            assert!(
                parse(key, body).unwrap_err().contains("key must be a key name"),
                "{body}"
            );
        }
        assert!(parse(key, r#"{"key": 1}"#).unwrap_err().contains("\"key\""));
    }
}
