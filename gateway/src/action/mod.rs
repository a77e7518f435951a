//! Desktop actions in the gateway's own terms. Every way into a desktop — REST, the live view,
//! and later gRPC and batches — parses its input into one [`Action`], checked against the
//! desktop's [`Screen`] and the limits here, and runs it through `Desktops::act`. No serde on
//! these types: each way in owns its wire shape, and [`ACTIONS`] is the one table of the
//! REST forms (the routes, the OpenAPI document and the tests are checked against it).
//!
//! Adding an action: a variant here, its parser (with literal-JSON tests) in the module of
//! its kind, a line in [`ACTIONS`], its agent call in `desktops::act`, its answer in
//! `api::actions` and its entry in `openapi.json`.

mod keyboard;
mod pointer;
mod run;
mod screen;

use std::time::Duration;

pub use keyboard::{combo, repeat, type_delay, typeable};
pub use pointer::{click_count, drag_path, scroll_amount};
pub use run::{options as run_options, source, timeout as run_timeout};
pub use screen::{Asked, Screen};

use crate::json::Invalid;

/// A point on the screen, in pixels from the top-left corner, checked to be on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub x: i32,
    pub y: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Left,
    Right,
    Middle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Left,
    Right,
}

/// The interpreter of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Bash,
    Python,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

/// A rectangle of the screen, inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// What a screenshot is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shot {
    pub format: ImageFormat,
    /// JPEG quality 1–100; 0 for the agent's default.
    pub quality: u32,
    /// Bounds to scale the image down into (aspect kept); 0 for none.
    pub max_width: u32,
    pub max_height: u32,
    pub region: Option<Region>,
    /// Kept in the account's storage and answered as a link, not inline.
    pub keep: bool,
}

/// One checked desktop action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Screenshot(Shot),
    Cursor,
    Click {
        /// Where the pointer is when absent.
        at: Option<Point>,
        button: Button,
        /// 1, 2 or 3 (single, double, triple).
        count: u32,
    },
    Move {
        to: Point,
    },
    /// A button pressed (`down`) or released, where the pointer is when `at` is absent.
    Button {
        at: Option<Point>,
        button: Button,
        down: bool,
    },
    Drag {
        /// Pressed at the first point, moved through the others, released at the last: 2 to
        /// [`MAX_DRAG_POINTS`] points.
        path: Vec<Point>,
        button: Button,
        /// How long the pointer takes along the path (0 to [`MAX_DRAG`]).
        duration: Duration,
    },
    Scroll {
        /// Where the pointer is when absent.
        at: Option<Point>,
        direction: Direction,
        /// Wheel clicks, 1 to [`MAX_SCROLL`].
        amount: u32,
    },
    /// Text typed as the characters it holds (1 to [`MAX_TEXT_CHARS`]).
    Type {
        text: String,
        /// A pause after each character (0 to [`MAX_TYPE_DELAY`]; characters × pause at most
        /// [`MAX_WAIT`]); zero types as fast as the X server takes it.
        delay: Duration,
    },
    /// A key or combo (`ctrl+c`) pressed and released (`repeat` times, 1 to [`MAX_REPEAT`]),
    /// or only pressed or released (once).
    Key {
        combo: String,
        press: Press,
        repeat: u32,
    },
    Run {
        program: Program,
        source: String,
        /// The run's hard timeout (more than 0, at most [`MAX_RUN`]).
        timeout: Duration,
        options: RunOptions,
    },
    /// Nothing done for `seconds` (0 to [`MAX_WAIT`]), on a running desktop.
    Wait {
        seconds: f64,
    },
}

/// How a run is started beyond its source, where a way in offers it (gRPC's `ExecRequest`);
/// the default is the agent's: the desktop user's home, the desktop's environment, 1 MiB.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunOptions {
    /// The working directory (at most [`MAX_PATH_BYTES`]); the home when absent.
    pub cwd: Option<String>,
    /// Variables added to the environment (at most [`MAX_ENV_VARS`], names
    /// `[A-Za-z_][A-Za-z0-9_]*`, [`MAX_ENV_BYTES`] in all).
    pub env: Vec<(String, String)>,
    /// Cap on each of stdout and stderr (1 to [`MAX_OUTPUT_BYTES`]); the agent's 1 MiB when 0.
    pub max_output_bytes: u64,
}

/// What an action did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Where the pointer is afterwards (pointer actions and the cursor).
    Pointer(Point),
    /// How many key events the agent sent.
    Sent(u32),
    Ran(Ran),
    /// Waited this many seconds.
    Waited(f64),
    Screenshot(Image),
}

/// A finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    pub program: Program,
    /// Each capped by the agent while read (see `truncated`).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// None when the run was killed (a timeout or a signal).
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub truncated: bool,
    pub took: Duration,
}

/// A screenshot taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// 24 hex digits; the stored file's name when kept.
    pub id: String,
    /// Seconds since the Unix epoch.
    pub taken_at: i64,
    pub format: ImageFormat,
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Kept in the account's storage (see `storage`).
    pub kept: bool,
    /// What the agent spent capturing and encoding it, in microseconds.
    pub capture_micros: u64,
    pub encode_micros: u64,
}

impl ImageFormat {
    /// The file extension and the media type.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
        }
    }
}

/// Which half of a key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    Both,
    Down,
    Up,
}

/// The longest typed text, in characters.
pub const MAX_TEXT_CHARS: usize = 100_000;
/// The longest key name or combo, in bytes.
pub const MAX_COMBO_BYTES: usize = 200;
/// The longest source of a run, in bytes.
pub const MAX_SOURCE_BYTES: usize = 100_000;
/// The most wheel clicks of one scroll.
pub const MAX_SCROLL: u32 = 100;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The longest run timeout.
pub const MAX_RUN: Duration = Duration::from_secs(300);
/// The most points of a drag's path.
pub const MAX_DRAG_POINTS: usize = 1_000;
/// The longest pause after a typed character.
pub const MAX_TYPE_DELAY: Duration = Duration::from_secs(1);
/// The most presses of one key action.
pub const MAX_REPEAT: u32 = 100;
/// The longest working directory of a run, in bytes.
pub const MAX_PATH_BYTES: usize = 4_096;
/// The most environment variables a run adds.
pub const MAX_ENV_VARS: usize = 100;
/// The most bytes of a run's added variables, names and values together.
pub const MAX_ENV_BYTES: usize = 65_536;
/// The largest output cap of a run, for each of stdout and stderr.
pub const MAX_OUTPUT_BYTES: u64 = 16 << 20;
/// The longest drag. Input is one queue per desktop: a drag holds it, and calls behind it
/// must still end well inside their budget.
pub const MAX_DRAG: Duration = Duration::from_secs(10);

impl Action {
    /// The action's name, as in its REST route (`click`, `key-down`, …): the label of its
    /// metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Screenshot(_) => "screenshot",
            Action::Cursor => "cursor",
            Action::Click { .. } => "click",
            Action::Move { .. } => "move",
            Action::Button { down: true, .. } => "mouse-down",
            Action::Button { down: false, .. } => "mouse-up",
            Action::Drag { .. } => "drag",
            Action::Scroll { .. } => "scroll",
            Action::Type { .. } => "type",
            Action::Key {
                press: Press::Both, ..
            } => "key",
            Action::Key {
                press: Press::Down, ..
            } => "key-down",
            Action::Key { press: Press::Up, .. } => "key-up",
            Action::Run {
                program: Program::Bash,
                ..
            } => "bash",
            Action::Run {
                program: Program::Python,
                ..
            } => "exec",
            Action::Wait { .. } => "wait",
        }
    }

    /// What the action takes by itself beyond an answer's usual time (a drag's duration, a
    /// run's timeout): the deadline of its agent call comes on top.
    pub fn takes(&self) -> Duration {
        /// What a run may take beyond its timeout: killing its group and reading what is left.
        const RUN_SLACK: Duration = Duration::from_secs(5);
        match self {
            Action::Drag { duration, .. } => *duration,
            Action::Run { timeout, .. } => *timeout + RUN_SLACK,
            Action::Type { text, delay } => *delay * text.chars().count() as u32,
            Action::Wait { seconds } => Duration::from_secs_f64(*seconds),
            _ => Duration::ZERO,
        }
    }
}

/// What a REST route of an action takes its input from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`, parameters in the query string.
    Get,
    /// `POST`, a JSON object body.
    Post,
}

/// The input of one REST call of an action.
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    pub body: &'a [u8],
    pub query: &'a str,
}

/// One action's REST form: its route `/api/computers/{id}/NAME`, its method and its parser.
pub struct Form {
    pub name: &'static str,
    pub method: Method,
    pub parse: Parser,
}

/// Every action's REST form: the routes are made from this table.
pub const ACTIONS: &[Form] = &[
    Form {
        name: "screenshot",
        method: Method::Get,
        parse: screen::screenshot,
    },
    Form {
        name: "cursor",
        method: Method::Get,
        parse: screen::cursor,
    },
    Form {
        name: "click",
        method: Method::Post,
        parse: pointer::click,
    },
    Form {
        name: "move",
        method: Method::Post,
        parse: pointer::move_to,
    },
    Form {
        name: "mouse-down",
        method: Method::Post,
        parse: pointer::mouse_down,
    },
    Form {
        name: "mouse-up",
        method: Method::Post,
        parse: pointer::mouse_up,
    },
    Form {
        name: "drag",
        method: Method::Post,
        parse: pointer::drag,
    },
    Form {
        name: "scroll",
        method: Method::Post,
        parse: pointer::scroll,
    },
    Form {
        name: "type",
        method: Method::Post,
        parse: keyboard::type_text,
    },
    Form {
        name: "key",
        method: Method::Post,
        parse: keyboard::key,
    },
    Form {
        name: "key-down",
        method: Method::Post,
        parse: keyboard::key_down,
    },
    Form {
        name: "key-up",
        method: Method::Post,
        parse: keyboard::key_up,
    },
    Form {
        name: "bash",
        method: Method::Post,
        parse: run::bash,
    },
    Form {
        name: "exec",
        method: Method::Post,
        parse: run::python,
    },
    Form {
        name: "wait",
        method: Method::Post,
        parse: run::wait,
    },
];

/// The form of the action named `name`.
pub fn form(name: &str) -> Option<&'static Form> {
    ACTIONS.iter().find(|f| f.name == name)
}

/// A parser of an action's REST form.
pub type Parser = fn(Input<'_>, &Screen) -> Result<Action, Invalid>;

/// Runs `parser` on a JSON body on a 1280×800 screen: the action, or the error's sentence.
#[cfg(test)]
fn parse_json(parser: Parser, body: &str) -> Result<Action, String> {
    let input = Input {
        body: body.as_bytes(),
        query: "",
    };
    parser(input, &Screen::new(1280, 800)).map_err(|e| e.0)
}

/// Seconds as a duration: more than 0 and at most `max` (exactly 0 too when `zero` allows),
/// `default` when absent; errors name the field.
fn seconds(
    field: &str,
    v: Option<f64>,
    default: f64,
    max: Duration,
    zero: bool,
) -> Result<Duration, Invalid> {
    let v = v.unwrap_or(default);
    if zero && v == 0.0 {
        return Ok(Duration::ZERO);
    }
    let max = max.as_secs_f64();
    if !v.is_finite() || v <= 0.0 || v > max {
        return Err(Invalid(format!(
            "{field} must be more than 0 and at most {max} seconds, not {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_is_named_once_and_parses_to_an_action_of_its_name() {
        let mut names: Vec<_> = ACTIONS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len(), "a name appears twice");
        let screen = Screen::new(1280, 800);
        let bodies = [
            ("click", r#"{"x": 1, "y": 2}"#),
            ("move", r#"{"x": 1, "y": 2}"#),
            ("mouse-down", "{}"),
            ("mouse-up", "{}"),
            ("drag", r#"{"start_x": 0, "start_y": 0, "end_x": 9, "end_y": 9}"#),
            ("scroll", "{}"),
            ("type", r#"{"text": "hi"}"#),
            ("key", r#"{"key": "a"}"#),
            ("key-down", r#"{"key": "a"}"#),
            ("key-up", r#"{"key": "a"}"#),
            ("bash", r#"{"command": "ls"}"#),
            ("exec", r#"{"code": "1"}"#),
            ("wait", r#"{"duration": 0}"#),
        ];
        for form in ACTIONS {
            let body = bodies
                .iter()
                .find(|(n, _)| *n == form.name)
                .map_or("", |(_, b)| b);
            let input = Input {
                body: body.as_bytes(),
                query: "",
            };
            let action = (form.parse)(input, &screen).unwrap_or_else(|e| panic!("{}: {e}", form.name));
            assert_eq!(action.name(), form.name);
            assert_eq!(form.method == Method::Get, body.is_empty(), "{}", form.name);
        }
    }

    #[test]
    fn seconds_are_bounded_and_name_their_field() {
        let max = Duration::from_secs(60);
        assert_eq!(seconds("t", None, 2.0, max, false), Ok(Duration::from_secs(2)));
        assert_eq!(seconds("t", Some(0.0), 2.0, max, true), Ok(Duration::ZERO));
        for bad in [0.0, -1.0, 61.0, f64::NAN, f64::INFINITY] {
            let e = seconds("timeout", Some(bad), 2.0, max, false).unwrap_err();
            assert!(
                e.0.starts_with("timeout must be more than 0 and at most 60 seconds"),
                "{e}"
            );
        }
    }
}
