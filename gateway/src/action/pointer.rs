//! Pointer actions from their JSON bodies: click, move, mouse-down/up, drag and scroll.
//! Unknown fields are ignored (the SDK sends some); integers may be written `7.0`.

use serde::Deserialize;

use super::{
    Action, Button, Direction, Input, MAX_DRAG, MAX_DRAG_POINTS, MAX_SCROLL, Point, Screen, seconds,
};
use crate::json::{Invalid, int, opt_int, parse_body};

impl Button {
    /// `left` (also when absent), `right` or `middle`, in any case.
    pub fn named(name: Option<&str>) -> Result<Button, Invalid> {
        match name.map(str::to_ascii_lowercase).as_deref() {
            None | Some("left") => Ok(Button::Left),
            Some("right") => Ok(Button::Right),
            Some("middle") => Ok(Button::Middle),
            Some(other) => Err(Invalid(format!(
                "button must be left, right or middle, not {other:?}"
            ))),
        }
    }
}

impl Direction {
    /// `down` (also when absent), `up`, `left` or `right`, in any case.
    pub fn named(name: Option<&str>) -> Result<Direction, Invalid> {
        match name.map(str::to_ascii_lowercase).as_deref() {
            None | Some("down") => Ok(Direction::Down),
            Some("up") => Ok(Direction::Up),
            Some("left") => Ok(Direction::Left),
            Some("right") => Ok(Direction::Right),
            Some(other) => Err(Invalid(format!(
                "direction must be up, down, left or right, not {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Click {
    #[serde(deserialize_with = "int")]
    x: i64,
    #[serde(deserialize_with = "int")]
    y: i64,
    #[serde(default)]
    button: Option<String>,
    #[serde(default)]
    double: Option<bool>,
    #[serde(default, deserialize_with = "opt_int")]
    count: Option<u32>,
}

/// `{"x", "y", "button"?, "double"?, "count"? (1–3, over "double")}`.
pub(super) fn click(input: Input<'_>, screen: &Screen) -> Result<Action, Invalid> {
    let c: Click = parse_body(input.body)?;
    let count = match (c.double.unwrap_or(false), c.count) {
        (_, Some(n)) => click_count(n)?,
        (true, None) => 2,
        (false, None) => 1,
    };
    Ok(Action::Click {
        at: Some(screen.point(c.x, c.y)?),
        button: Button::named(c.button.as_deref())?,
        count,
    })
}

#[derive(Debug, Deserialize)]
struct To {
    #[serde(deserialize_with = "int")]
    x: i64,
    #[serde(deserialize_with = "int")]
    y: i64,
}

/// A click's count: 1, 2 or 3 (single, double, triple).
pub fn click_count(n: u32) -> Result<u32, Invalid> {
    if !(1..=3).contains(&n) {
        return Err(Invalid(format!("count must be 1, 2 or 3, not {n}")));
    }
    Ok(n)
}

/// A drag's path: 2 to [`MAX_DRAG_POINTS`] points (each already checked on the screen).
pub fn drag_path(path: Vec<Point>) -> Result<Vec<Point>, Invalid> {
    if !(2..=MAX_DRAG_POINTS).contains(&path.len()) {
        return Err(Invalid(format!(
            "path must have 2 to {MAX_DRAG_POINTS} points, not {}",
            path.len()
        )));
    }
    Ok(path)
}

/// A scroll's wheel clicks: 1 to [`MAX_SCROLL`].
pub fn scroll_amount(amount: i64) -> Result<u32, Invalid> {
    if !(1..=i64::from(MAX_SCROLL)).contains(&amount) {
        return Err(Invalid(format!(
            "amount must be from 1 to {MAX_SCROLL}, not {amount}"
        )));
    }
    Ok(amount as u32)
}

/// `{"x", "y"}`.
pub(super) fn move_to(input: Input<'_>, screen: &Screen) -> Result<Action, Invalid> {
    let p: To = parse_body(input.body)?;
    Ok(Action::Move {
        to: screen.point(p.x, p.y)?,
    })
}

#[derive(Debug, Deserialize)]
struct ButtonBody {
    #[serde(default, deserialize_with = "opt_int")]
    x: Option<i64>,
    #[serde(default, deserialize_with = "opt_int")]
    y: Option<i64>,
    #[serde(default)]
    button: Option<String>,
}

fn button(input: Input<'_>, screen: &Screen, down: bool) -> Result<Action, Invalid> {
    let b: ButtonBody = parse_body(input.body)?;
    let at = match (b.x, b.y) {
        (Some(x), Some(y)) => Some(screen.point(x, y)?),
        (None, None) => None,
        _ => return Err(Invalid("give both x and y, or neither".into())),
    };
    Ok(Action::Button {
        at,
        button: Button::named(b.button.as_deref())?,
        down,
    })
}

/// `{"x"?, "y"? (both or neither), "button"?}`.
pub(super) fn mouse_down(input: Input<'_>, screen: &Screen) -> Result<Action, Invalid> {
    button(input, screen, true)
}

/// As [`mouse_down`].
pub(super) fn mouse_up(input: Input<'_>, screen: &Screen) -> Result<Action, Invalid> {
    button(input, screen, false)
}

#[derive(Debug, Deserialize)]
struct Drag {
    #[serde(deserialize_with = "int")]
    start_x: i64,
    #[serde(deserialize_with = "int")]
    start_y: i64,
    #[serde(deserialize_with = "int")]
    end_x: i64,
    #[serde(deserialize_with = "int")]
    end_y: i64,
    #[serde(default)]
    button: Option<String>,
    #[serde(default)]
    duration: Option<f64>,
}

/// `{"start_x", "start_y", "end_x", "end_y", "button"?, "duration"? (seconds, 0–10, 0.5)}`.
pub(super) fn drag(input: Input<'_>, screen: &Screen) -> Result<Action, Invalid> {
    let d: Drag = parse_body(input.body)?;
    let from = Point {
        x: screen.x("start_x", d.start_x)?,
        y: screen.y("start_y", d.start_y)?,
    };
    let to = Point {
        x: screen.x("end_x", d.end_x)?,
        y: screen.y("end_y", d.end_y)?,
    };
    Ok(Action::Drag {
        path: vec![from, to],
        button: Button::named(d.button.as_deref())?,
        duration: seconds("duration", d.duration, 0.5, MAX_DRAG, true)?,
    })
}

#[derive(Debug, Deserialize)]
struct Scroll {
    #[serde(default, deserialize_with = "opt_int")]
    x: Option<i64>,
    #[serde(default, deserialize_with = "opt_int")]
    y: Option<i64>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default, deserialize_with = "opt_int")]
    amount: Option<i64>,
}

/// `{"x"?, "y"?, "direction"?, "amount"? (1–100, 3)}`. Orgo's Linux desktops scroll at
/// (x, y) with a missing axis taken as 0, and where the pointer is when both are missing.
pub(super) fn scroll(input: Input<'_>, screen: &Screen) -> Result<Action, Invalid> {
    let s: Scroll = parse_body(input.body)?;
    let direction = Direction::named(s.direction.as_deref())?;
    let amount = scroll_amount(s.amount.unwrap_or(3))?;
    let at = match (s.x, s.y) {
        (None, None) => None,
        (x, y) => Some(screen.point(x.unwrap_or(0), y.unwrap_or(0))?),
    };
    Ok(Action::Scroll {
        at,
        direction,
        amount,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::action::{Parser, parse_json as parse};

    fn refused(parser: Parser, body: &str, needle: &str) {
        let e = parse(parser, body).expect_err(body);
        assert!(e.contains(needle), "{body}: {e:?} lacks {needle:?}");
    }

    #[test]
    fn clicks() {
        assert_eq!(
            parse(click, r#"{"x": 1, "y": 2, "unknown": true}"#),
            Ok(Action::Click {
                at: Some(Point { x: 1, y: 2 }),
                button: Button::Left,
                count: 1
            })
        );
        assert_eq!(
            parse(
                click,
                r#"{"x": 1279.0, "y": 799, "button": "RIGHT", "double": true}"#
            ),
            Ok(Action::Click {
                at: Some(Point { x: 1279, y: 799 }),
                button: Button::Right,
                count: 2
            })
        );
        let triple = parse(click, r#"{"x": 1, "y": 2, "double": true, "count": 3}"#).unwrap();
        assert!(matches!(triple, Action::Click { count: 3, .. }));
        refused(
            click,
            r#"{"x": 1280, "y": 2}"#,
            "x=1280 is outside the screen (0–1279)",
        );
        refused(click, r#"{"x": 1, "y": 800}"#, "y=800");
        refused(click, r#"{"x": -1, "y": 0}"#, "x=-1");
        refused(click, r#"{"x": 1.5, "y": 2}"#, "\"x\"");
        refused(click, r#"{"x": 1e30, "y": 2}"#, "\"x\"");
        refused(click, r#"{"x": null, "y": 2}"#, "\"x\"");
        refused(click, r#"{"y": 2}"#, "missing field `x`");
        refused(
            click,
            r#"{"x": 1, "y": 2, "count": 4}"#,
            "count must be 1, 2 or 3, not 4",
        );
        refused(click, r#"{"x": 1, "y": 2, "count": 0}"#, "count");
        refused(click, r#"{"x": 1, "y": 2, "double": "yes"}"#, "\"double\"");
        refused(
            click,
            r#"{"x": 1, "y": 2, "button": "back"}"#,
            "button must be left, right or middle",
        );
        refused(click, "[1, 2]", "JSON object");
    }

    #[test]
    fn moves_and_buttons() {
        assert_eq!(
            parse(move_to, r#"{"x": 5, "y": 5}"#),
            Ok(Action::Move {
                to: Point { x: 5, y: 5 }
            })
        );
        refused(move_to, r#"{"x": -5, "y": 5}"#, "x=-5");
        assert_eq!(
            parse(mouse_up, r#"{"button": "middle"}"#),
            Ok(Action::Button {
                at: None,
                button: Button::Middle,
                down: false
            })
        );
        assert_eq!(
            parse(mouse_down, r#"{"x": 3, "y": 4}"#),
            Ok(Action::Button {
                at: Some(Point { x: 3, y: 4 }),
                button: Button::Left,
                down: true
            })
        );
        refused(mouse_down, r#"{"x": 5}"#, "both x and y");
        refused(mouse_up, r#"{"y": 5, "x": null}"#, "both x and y");
    }

    #[test]
    fn drags() {
        assert_eq!(
            parse(drag, r#"{"start_x": 0, "start_y": 0, "end_x": 9, "end_y": 9}"#),
            Ok(Action::Drag {
                path: vec![Point { x: 0, y: 0 }, Point { x: 9, y: 9 }],
                button: Button::Left,
                duration: Duration::from_millis(500)
            })
        );
        let at_once = parse(
            drag,
            r#"{"start_x": 0, "start_y": 0, "end_x": 9, "end_y": 9, "duration": 0}"#,
        );
        assert!(matches!(
            at_once,
            Ok(Action::Drag {
                duration: Duration::ZERO,
                ..
            })
        ));
        refused(
            drag,
            r#"{"start_x": 0, "start_y": 0, "end_x": 9999, "end_y": 9}"#,
            "end_x=9999",
        );
        refused(
            drag,
            r#"{"start_x": 0, "start_y": 900, "end_x": 9, "end_y": 9}"#,
            "start_y=900",
        );
        for duration in ["-1", "10.5", "1e400"] {
            let body =
                format!(r#"{{"start_x": 0, "start_y": 0, "end_x": 9, "end_y": 9, "duration": {duration}}}"#);
            refused(drag, &body, "duration");
        }
    }

    #[test]
    fn scrolls() {
        assert_eq!(
            parse(scroll, "{}"),
            Ok(Action::Scroll {
                at: None,
                direction: Direction::Down,
                amount: 3
            })
        );
        assert_eq!(
            parse(scroll, r#"{"x": 7, "direction": "Left", "amount": 100}"#),
            Ok(Action::Scroll {
                at: Some(Point { x: 7, y: 0 }),
                direction: Direction::Left,
                amount: 100
            })
        );
        refused(
            scroll,
            r#"{"direction": "diagonal"}"#,
            "direction must be up, down, left or right",
        );
        refused(
            scroll,
            r#"{"direction": "up", "amount": 101}"#,
            "amount must be from 1 to 100, not 101",
        );
        refused(scroll, r#"{"amount": 0}"#, "amount");
        refused(scroll, r#"{"amount": "3"}"#, "\"amount\"");
        refused(scroll, r#"{"x": 1280}"#, "x=1280");
    }
}
