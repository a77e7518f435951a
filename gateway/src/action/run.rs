//! Actions that run or wait, from their JSON bodies: bash and Python runs with their hard
//! timeouts, and waits.

use serde::Deserialize;

use std::time::Duration;

use super::{
    Action, Input, MAX_ENV_BYTES, MAX_ENV_VARS, MAX_OUTPUT_BYTES, MAX_PATH_BYTES, MAX_RUN, MAX_SOURCE_BYTES,
    MAX_WAIT, Program, RunOptions, Screen, seconds,
};
use crate::json::{Invalid, parse_body};

/// A run's source: at most [`MAX_SOURCE_BYTES`].
pub fn source(source: String) -> Result<String, Invalid> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Invalid(format!("code must be at most {MAX_SOURCE_BYTES} bytes")));
    }
    Ok(source)
}

impl Program {
    /// The timeout of a run that names none: 200 s for bash, 10 s for Python (Orgo's).
    pub fn default_timeout(self) -> f64 {
        match self {
            Program::Bash => 200.0,
            Program::Python => 10.0,
        }
    }
}

/// A run's timeout in seconds: more than 0 and at most [`MAX_RUN`], the program's default
/// when absent.
pub fn timeout(program: Program, seconds_asked: Option<f64>) -> Result<Duration, Invalid> {
    seconds(
        "timeout",
        seconds_asked,
        program.default_timeout(),
        MAX_RUN,
        false,
    )
}

/// A run's options: a working directory of at most [`MAX_PATH_BYTES`] without NUL, at most
/// [`MAX_ENV_VARS`] variables named `[A-Za-z_][A-Za-z0-9_]*` (values without NUL,
/// [`MAX_ENV_BYTES`] in all), an output cap of at most [`MAX_OUTPUT_BYTES`].
pub fn options(
    cwd: Option<String>,
    env: Vec<(String, String)>,
    max_output_bytes: u64,
) -> Result<RunOptions, Invalid> {
    if cwd
        .as_deref()
        .is_some_and(|c| c.len() > MAX_PATH_BYTES || c.contains('\0'))
    {
        return Err(Invalid(format!(
            "cwd must be a path of at most {MAX_PATH_BYTES} bytes without NUL"
        )));
    }
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if env.len() > MAX_ENV_VARS || bytes > MAX_ENV_BYTES {
        return Err(Invalid(format!(
            "env must hold at most {MAX_ENV_VARS} variables and {MAX_ENV_BYTES} bytes"
        )));
    }
    let named = |k: &str| {
        k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if let Some((k, _)) = env.iter().find(|(k, v)| !named(k) || v.contains('\0')) {
        return Err(Invalid(format!(
            "env {k:?}: names are letters, digits and '_' (not first a digit); values hold no NUL"
        )));
    }
    if max_output_bytes > MAX_OUTPUT_BYTES {
        return Err(Invalid(format!(
            "max_output_bytes must be at most {MAX_OUTPUT_BYTES} (0: 1 MiB)"
        )));
    }
    Ok(RunOptions {
        cwd,
        env,
        max_output_bytes,
    })
}

#[derive(Debug, Deserialize)]
struct Bash {
    command: String,
    #[serde(default)]
    timeout: Option<f64>,
}

/// `{"command", "timeout"? (seconds, 200)}`.
pub(super) fn bash(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    let b: Bash = parse_body(input.body)?;
    Ok(Action::Run {
        program: Program::Bash,
        timeout: timeout(Program::Bash, b.timeout)?,
        source: source(b.command)?,
        options: RunOptions::default(),
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
        timeout: timeout(Program::Python, p.timeout)?,
        source: source(p.code)?,
        options: RunOptions::default(),
    })
}

#[derive(Debug, Deserialize)]
struct Wait {
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    seconds: Option<f64>,
}

/// `{"duration"}` or `{"seconds"}` (Orgo's docs name the one, its service the other): seconds,
/// 0 to 60.
pub(super) fn wait(input: Input<'_>, _: &Screen) -> Result<Action, Invalid> {
    let w: Wait = parse_body(input.body)?;
    let (field, value) = match (w.duration, w.seconds) {
        (Some(d), None) => ("duration", d),
        (None, Some(s)) => ("seconds", s),
        (Some(_), Some(_)) => return Err(Invalid("give duration or seconds, not both".into())),
        (None, None) => return Err(Invalid("duration (or seconds) is required".into())),
    };
    seconds(field, Some(value), 0.0, MAX_WAIT, true)?;
    Ok(Action::Wait { seconds: value })
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
                timeout: Duration::from_secs(200),
                options: RunOptions::default(),
            })
        );
        assert_eq!(
            parse(python, r#"{"code": "print(1)", "timeout": 2.5}"#),
            Ok(Action::Run {
                program: Program::Python,
                source: "print(1)".into(),
                timeout: Duration::from_millis(2500),
                options: RunOptions::default(),
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
        assert_eq!(
            parse(wait, r#"{"seconds": 1}"#),
            Ok(Action::Wait { seconds: 1.0 })
        );
        for body in [r#"{"duration": -1}"#, r#"{"duration": 61}"#, "{}"] {
            assert!(parse(wait, body).unwrap_err().contains("duration"), "{body}");
        }
        for body in [r#"{"seconds": 61}"#, r#"{"seconds": 1, "duration": 1}"#] {
            assert!(parse(wait, body).unwrap_err().contains("seconds"), "{body}");
        }
    }
}
