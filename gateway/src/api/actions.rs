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

use crate::action::{ACTIONS, Form, Image, Input, Method, Outcome, Program, Ran};
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
                        Caller(account): Caller,
                        Path(id): Path<String>,
                        RawQuery(query): RawQuery,
                        body: Bytes| async move {
        let computer = state.desktops.find(&account.id, &id).await?;
        let input = Input {
            body: &body,
            query: query.as_deref().unwrap_or(""),
        };
        // Parsed before the agent is looked up, so bad input never reaches it.
        let action = (form.parse)(input, &state.desktops.screen(&computer))?;
        let outcome = state.desktops.act(&computer, action).await?;
        Ok::<_, ApiError>(Json(answer(outcome)))
    };
    match form.method {
        Method::Get => get(handler),
        Method::Post => post(handler),
    }
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
    let error = if o.timed_out {
        "execution timed out".to_string()
    } else {
        stderr.clone()
    };
    json!({
        "success": success,
        "output": output,
        "error": if success { Value::Null } else { Value::String(error) },
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": o.exit_code,
        "timed_out": o.timed_out,
        "truncated": o.truncated,
        "duration_ms": o.took.as_millis() as u64,
    })
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
/// readable by the account that took it only.
pub async fn stored_screenshot(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let (format, bytes) = state.desktops.storage().read(&account.id, &file).await?;
    Ok(([(header::CONTENT_TYPE, format.mime())], bytes).into_response())
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
            json!({"success": true, "output": "out\nerr\n", "error": null, "stdout": "out\n", "stderr": "err\n",
                   "exit_code": 0, "timed_out": false, "truncated": false, "duration_ms": 12})
        );
        let python = answer(Outcome::Ran(ran(Program::Python, Some(1), false)));
        assert_eq!(
            (python["output"].as_str(), python["error"].as_str()),
            (Some("out\n"), Some("err\n"))
        );
        let late = answer(Outcome::Ran(ran(Program::Python, None, true)));
        assert_eq!(
            (late["success"].as_bool(), late["error"].as_str()),
            (Some(false), Some("execution timed out"))
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
