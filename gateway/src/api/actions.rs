//! The desktop actions' REST routes, one per action, made from `action::ACTIONS` (so metrics
//! and logs carry `/api/computers/{id}/click`, `/api/computers/{id}/exec`, …), and their
//! answers: each call finds the computer in the caller's account, parses its input against
//! the desktop's screen and runs it through `Desktops::act`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use base64::Engine;
use serde_json::{Value, json};

use crate::action::{
    ACTIONS, Action, Button, Direction, Form, Image, Input, Method, Outcome, Press, Program, Ran,
};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// `/computers/{id}/NAME` for every action, and a 404 naming any other name.
pub fn routes() -> axum::Router<AppState> {
    let router = ACTIONS.iter().fold(axum::Router::new(), |router, form| {
        router.route(&format!("/computers/{{id}}/{}", form.name), route(form))
    });
    router.route(
        "/computers/{id}/{action}",
        axum::routing::any(|Path((_, action)): Path<(String, String)>| async move {
            ApiError::NotFound(format!("no computer action {action:?}"))
        }),
    )
}

fn route(form: &'static Form) -> MethodRouter<AppState> {
    let handler = move |State(state): State<AppState>,
                        caller: Caller,
                        Path(id): Path<String>,
                        RawQuery(query): RawQuery,
                        body: Bytes| async move {
        let computer = caller.computer(&state, &id).await?;
        let input = Input {
            body: &body,
            query: query.as_deref().unwrap_or(""),
        };
        // Parsed before the agent is looked up, so bad input never reaches it.
        let action = (form.parse)(input, &state.desktops.screen(&computer))?;
        let echo = echo(&action);
        let outcome = state.desktops.act(&computer, action).await?;
        let mut answer = answer(outcome);
        if let (Some((name, details)), Value::Object(map)) = (echo, &mut answer) {
            map.insert("action".into(), json!(name));
            map.extend(details);
        }
        Ok::<_, ApiError>(Json(answer))
    };
    match form.method {
        Method::Get => get(handler),
        Method::Post => post(handler),
    }
}

/// What today's Orgo answers echo of an action: its `action` name and the fields to add
/// (`details`, and bash's `command`); none for screenshots and the cursor, which answer as
/// they always did.
fn echo(action: &Action) -> Option<(&'static str, serde_json::Map<String, Value>)> {
    let button = |b: &Button| match b {
        Button::Left => "left",
        Button::Right => "right",
        Button::Middle => "middle",
    };
    let (name, details) = match action {
        Action::Screenshot(_) | Action::Cursor => return None,
        Action::Click { at, button: b, count } => (
            "click",
            json!({ "x": at.map(|p| p.x), "y": at.map(|p| p.y), "button": button(b), "double": *count == 2, "count": count }),
        ),
        Action::Move { to } => ("move", json!({ "x": to.x, "y": to.y })),
        Action::Button { at, button: b, down } => (
            if *down { "mouse_down" } else { "mouse_up" },
            json!({ "x": at.map(|p| p.x), "y": at.map(|p| p.y), "button": button(b) }),
        ),
        Action::Drag { path, .. } => {
            let (start, end) = (path.first(), path.last());
            (
                "drag",
                json!({
                    "start_x": start.map(|p| p.x), "start_y": start.map(|p| p.y),
                    "end_x": end.map(|p| p.x), "end_y": end.map(|p| p.y),
                }),
            )
        }
        Action::Scroll {
            at,
            direction,
            amount,
        } => {
            let direction = match direction {
                Direction::Up => "up",
                Direction::Down => "down",
                Direction::Left => "left",
                Direction::Right => "right",
            };
            (
                "scroll",
                json!({ "direction": direction, "amount": amount, "x": at.map(|p| p.x), "y": at.map(|p| p.y) }),
            )
        }
        Action::Type { text, .. } => ("type", json!({ "text_length": text.chars().count() })),
        Action::Key { combo, press, .. } => (
            match press {
                Press::Both => "key_press",
                Press::Down => "key_down",
                Press::Up => "key_up",
            },
            json!({ "key": combo }),
        ),
        Action::Run {
            program: Program::Bash,
            source,
            ..
        } => {
            let mut fields = serde_json::Map::new();
            fields.insert("details".into(), json!({}));
            fields.insert("command".into(), json!(source));
            return Some(("bash", fields));
        }
        Action::Run { .. } => ("exec", json!({})),
        Action::Wait { seconds } => ("wait", json!({ "seconds": seconds })),
    };
    let mut fields = serde_json::Map::new();
    fields.insert("details".into(), details);
    Some((name, fields))
}

/// An outcome as Orgo's clients read it.
fn answer(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Pointer(p) => json!({ "success": true, "x": p.x, "y": p.y }),
        Outcome::Sent(sent) => json!({ "success": true, "sent": sent }),
        Outcome::Waited(seconds) => json!({ "success": true, "duration": seconds }),
        Outcome::Ran(ran) => ran_json(ran),
        Outcome::Screenshot(image) => image_json(image),
    }
}

fn ran_json(o: Ran) -> Value {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let success = o.exit_code == Some(0) && !o.timed_out;
    // bash answers what a terminal shows; Python's `output` is what it printed.
    let output = match o.program {
        Program::Bash => format!("{stdout}{stderr}"),
        Program::Python => stdout.clone(),
    };
    let raised = (o.program == Program::Python && !success && !o.timed_out)
        .then(|| uncaught(&stderr))
        .flatten();
    let error = match (&raised, o.timed_out) {
        (_, true) => "execution timed out".to_string(),
        (Some((_, message)), _) => message.clone(),
        (None, _) => stderr.clone(),
    };
    json!({
        "success": success,
        "output": output,
        "error": if success { Value::Null } else { Value::String(error) },
        "error_type": raised.map(|(class, _)| class),
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": o.exit_code,
        "timeout": o.timed_out,
        "timed_out": o.timed_out,
        "truncated": o.truncated,
        "duration_ms": o.took.as_millis() as u64,
    })
}

/// The uncaught exception a Python traceback on stderr ends with: its class (as Python
/// prints it, `json.decoder.JSONDecodeError` qualified) and its message. A program that does
/// not compile prints no traceback header, only its `SyntaxError` (or a subclass) at the end.
fn uncaught(stderr: &str) -> Option<(String, String)> {
    let traced = stderr.rfind("Traceback (most recent call last):");
    let tail = &stderr[traced.unwrap_or(0)..];
    let last = tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with(' '))?;
    let compile_error = ["SyntaxError", "IndentationError", "TabError"]
        .iter()
        .any(|e| last.starts_with(&format!("{e}:")));
    if traced.is_none() && !compile_error {
        return None;
    }
    let (class, message) = last.split_once(':').unwrap_or((last, ""));
    let is_name = !class.is_empty()
        && class.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        });
    is_name.then(|| (class.to_string(), message.trim().to_string()))
}

fn image_json(image: Image) -> Value {
    let storage_path = format!("screenshots/{}.{}", image.id, image.format.extension());
    let timestamp =
        jiff::Timestamp::from_second(image.taken_at).map_or_else(|_| String::new(), |t| t.to_string());
    let metadata = json!({
        "id": image.id,
        "timestamp": timestamp,
        "size": image.bytes.len(),
        "storage_path": storage_path,
    });
    if image.kept {
        return json!({ "success": true, "image": format!("/api/storage/{storage_path}"), "metadata": metadata });
    }
    json!({
        "success": true,
        "image": base64::engine::general_purpose::STANDARD.encode(&image.bytes),
        "mime_type": image.format.mime(),
        "width": image.width,
        "height": image.height,
        "metadata": metadata,
    })
}

/// `GET /api/storage/screenshots/{file}`: a screenshot kept by `?response_format=url`,
/// readable by the account that took it only; a workspace-scoped key reads its workspace's
/// (403 `workspace_scope_mismatch` for another's; one kept before workspaces were recorded is
/// not found for it).
pub async fn stored_screenshot(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let (format, kept) = state.desktops.storage().read(&caller.account.id, &file).await?;
    match (&kept.project_id, &caller.workspace) {
        (Some(project), _) => caller.reaches(project)?,
        (None, Some(_)) => return Err(crate::storage::StorageError::Missing.into()),
        (None, None) => {}
    }
    Ok(([(header::CONTENT_TYPE, format.mime())], kept.bytes).into_response())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::action::ImageFormat;

    #[test]
    fn runs_answer_as_orgo_does() {
        let ran = |program, exit_code, timed_out| Ran {
            program,
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
            exit_code,
            signal: None,
            timed_out,
            truncated: false,
            took: Duration::from_micros(12_345),
        };
        let bash = answer(Outcome::Ran(ran(Program::Bash, Some(0), false)));
        assert_eq!(
            bash,
            json!({"success": true, "output": "out\nerr\n", "error": null, "error_type": null, "stdout": "out\n",
                   "stderr": "err\n", "exit_code": 0, "timeout": false, "timed_out": false, "truncated": false,
                   "duration_ms": 12})
        );
        let python = answer(Outcome::Ran(ran(Program::Python, Some(1), false)));
        assert_eq!(
            (python["output"].as_str(), python["error"].as_str()),
            (Some("out\n"), Some("err\n"))
        );
        let late = answer(Outcome::Ran(ran(Program::Python, None, true)));
        assert_eq!(
            (
                late["success"].as_bool(),
                late["error"].as_str(),
                late["timeout"].as_bool()
            ),
            (Some(false), Some("execution timed out"), Some(true))
        );
    }

    #[test]
    fn uncaught_exceptions_are_named_by_class() {
        let traceback = "Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\n\
                         ZeroDivisionError: division by zero\n";
        assert_eq!(
            uncaught(traceback),
            Some(("ZeroDivisionError".into(), "division by zero".into()))
        );
        let chained = format!(
            "{traceback}\nDuring handling of the above exception, another exception occurred:\n\n\
             Traceback (most recent call last):\n  File \"<string>\", line 3\njson.decoder.JSONDecodeError: Expecting value: line 1\n"
        );
        assert_eq!(uncaught(&chained).unwrap().0, "json.decoder.JSONDecodeError");
        assert_eq!(
            uncaught("Traceback (most recent call last):\n  File \"x\"\nKeyboardInterrupt\n"),
            Some(("KeyboardInterrupt".into(), String::new()))
        );
        assert_eq!(uncaught("plain stderr\n"), None);
        let syntax = "  File \"<string>\", line 1\n    1 +\n       ^\nSyntaxError: invalid syntax\n";
        assert_eq!(
            uncaught(syntax),
            Some(("SyntaxError".into(), "invalid syntax".into())),
            "compile errors print no traceback header"
        );
    }

    #[test]
    fn screenshots_answer_inline_or_as_a_link() {
        let image = Image {
            id: "00ff".into(),
            taken_at: 1_796_000_000,
            format: ImageFormat::Png,
            bytes: vec![1, 2, 3],
            width: 4,
            height: 5,
            kept: false,
            capture_micros: 1,
            encode_micros: 2,
        };
        let inline = answer(Outcome::Screenshot(image.clone()));
        assert_eq!(inline["image"], "AQID");
        assert_eq!(inline["mime_type"], "image/png");
        assert_eq!(inline["metadata"]["timestamp"], "2026-11-30T00:53:20Z");
        assert_eq!(inline["metadata"]["storage_path"], "screenshots/00ff.png");
        let linked = answer(Outcome::Screenshot(Image { kept: true, ..image }));
        assert_eq!(linked["image"], "/api/storage/screenshots/00ff.png");
        assert!(linked.get("mime_type").is_none());
    }
}
