//! Actions that run or wait, from their JSON bodies: bash and Python runs with their hard
//! timeouts, and waits.

use serde::Deserialize;

use super::{Action, Input, MAX_RUN, MAX_SOURCE_BYTES, MAX_WAIT, Program, Screen, seconds};
use crate::json::{Invalid, parse_body};

/// A run's source: at most [`MAX_SOURCE_BYTES`].
fn source(source: String) -> Result<String, Invalid> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Invalid(format!("code must be at most {MAX_SOURCE_BYTES} bytes")));
    }
    Ok(source)
}

#[derive(Debug, Deserialize)]
struct Bash {
    command: String,
    #[serde(default)]
    timeout: Option<f64>,
}

/// `{"command", "timeout"? (seconds, 30)}`.
pub(super) fn bash(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    let b: Bash = parse_body(input.body)?;
    Ok(Action::Run {
        program: Program::Bash,
        timeout: seconds("timeout", b.timeout, 30.0, MAX_RUN, false)?,
        source: source(b.command)?,
    })
}

#[derive(Debug, Deserialize)]
struct Python {
    code: String,
    #[serde(default)]
    timeout: Option<f64>,
}

/// `{"code", "timeout"? (seconds, 10)}`.
pub(super) fn python(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    let p: Python = parse_body(input.body)?;
    Ok(Action::Run {
        program: Program::Python,
        timeout: seconds("timeout", p.timeout, 10.0, MAX_RUN, false)?,
        source: source(p.code)?,
    })
}

#[derive(Debug, Deserialize)]
struct Wait {
    duration: f64,
}

/// `{"duration"}`: seconds, 0 to 60.
pub(super) fn wait(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    let w: Wait = parse_body(input.body)?;
    seconds("duration", Some(w.duration), 0.0, MAX_WAIT, true)?;
    Ok(Action::Wait { seconds: w.duration })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::action::{Parser, parse_json as parse};

    #[test]
    fn runs() {
        assert_eq!(
            parse(bash, r#"{"command": "ls"}"#),
            Ok(Action::Run {
                program: Program::Bash,
                source: "ls".into(),
                timeout: Duration::from_secs(30)
            })
        );
        assert_eq!(
            parse(python, r#"{"code": "print(1)", "timeout": 2.5}"#),
            Ok(Action::Run {
                program: Program::Python,
                source: "print(1)".into(),
                timeout: Duration::from_millis(2500)
            })
        );
        assert!(
            matches!(parse(python, r#"{"code": "x"}"#), Ok(Action::Run { timeout, .. }) if timeout == Duration::from_secs(10))
        );
        let big = format!(r#"{{"command": "{}"}}"#, "x".repeat(MAX_SOURCE_BYTES + 1));
        for (parser, body, needle) in [
            (
                bash as Parser,
                r#"{"command": "ls", "timeout": 301}"#,
                "timeout must be more than 0 and at most 300",
            ),
            (bash, r#"{"command": "ls", "timeout": 0}"#, "timeout"),
            (bash, big.as_str(), "at most 100000 bytes"),
            (bash, r#"{"cmd": "ls"}"#, "missing field `command`"),
            (python, r#"{"code": "print(1)", "timeout": "NaN"}"#, "\"timeout\""),
            (python, r#"{"code": 5}"#, "\"code\""),
        ] {
            let e = parse(parser, body).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn waits() {
        assert_eq!(
            parse(wait, r#"{"duration": 0.5}"#),
            Ok(Action::Wait { seconds: 0.5 })
        );
        assert_eq!(
            parse(wait, r#"{"duration": 0}"#),
            Ok(Action::Wait { seconds: 0.0 })
        );
        for body in [r#"{"duration": -1}"#, r#"{"duration": 61}"#, "{}"] {
            assert!(parse(wait, body).unwrap_err().contains("duration"), "{body}");
        }
    }
}
