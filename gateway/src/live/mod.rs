//! The live view behind every computer's `url`: a page of our own (`viewer.html`, no build step)
//! that shows the desktop on a canvas and sends the mouse and keyboard back, over one WebSocket
//! per viewer. Frames come from the agent's damage-driven stream (latest frame wins); input goes
//! through the same agent calls as the REST actions. Access is by viewer token (see `token`),
//! never by API key: a token opens one desktop, view-only or with control, until it expires.

pub mod token;

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use orgo_proto::connect::Agent;
use orgo_proto::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::computers::{Screen, button, call, scroll_direction};
use crate::api::parse_body;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Computer, now};
use token::{Grant, Mode};

/// The viewer page; it reads its token from the URL's fragment, which browsers never send.
const PAGE: &str = include_str!("viewer.html");

/// Bounds of a requested token lifetime, in seconds.
const TTL_RANGE: std::ops::RangeInclusive<i64> = 10..=86_400;
const DEFAULT_TTL: i64 = 900;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<f64>,
}

/// `POST /api/computers/{id}/viewer-token`: a viewer token and the link that opens it.
pub async fn issue(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: TokenRequest = parse_body(&body)?;
    let mode = match req.mode.as_deref() {
        None => Mode::Control,
        Some(m) => Mode::parse(m).ok_or_else(|| {
            ApiError::BadRequest(format!("mode must be \"view\" or \"control\", not {m:?}"))
        })?,
    };
    let ttl = match req.ttl_seconds {
        None => DEFAULT_TTL,
        Some(t) if t.fract() == 0.0 && TTL_RANGE.contains(&(t as i64)) => t as i64,
        Some(t) => {
            return Err(ApiError::BadRequest(format!(
                "ttl_seconds must be a whole number from {} to {}, not {t}",
                TTL_RANGE.start(),
                TTL_RANGE.end()
            )));
        }
    };
    let computer = state
        .store
        .computer(&account.id, &id)?
        .ok_or_else(|| ApiError::NotFound(format!("computer {id:?} not found")))?;
    let grant = Grant {
        computer: computer.id.clone(),
        account: account.id,
        mode,
        expires_at: now() + ttl,
    };
    let token = state.desktops.viewers.issue(&grant);
    Ok(Json(json!({
        "token": token,
        "mode": mode.as_str(),
        "expires_at": grant.expires_at,
        "url": state.desktops.viewer_url(&computer, &token),
    })))
}

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/desktops/{name}", axum::routing::get(page))
        .route("/desktops/{name}/session", axum::routing::get(session))
        .route("/desktops/{name}/stream", axum::routing::get(stream))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    token: Option<String>,
    fps: Option<u32>,
    quality: Option<u32>,
}

/// The computer a token opens at this page, or why not.
fn admit(state: &AppState, name: &str, token: Option<&str>) -> Result<(Grant, Computer), ApiError> {
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::Unauthorized(
            "a viewer token is needed; create one with POST /api/computers/{id}/viewer-token".into(),
        )
    })?;
    let grant = state.desktops.viewers.verify(token, now())?;
    let computer = state
        .store
        .computer(&grant.account, &grant.computer)?
        .ok_or_else(|| ApiError::NotFound("this desktop no longer exists".into()))?;
    if computer.name != name && computer.id != name {
        return Err(ApiError::Forbidden(
            "this viewer token is for another desktop".into(),
        ));
    }
    Ok((grant, computer))
}

/// What the page needs before it connects, and a clear refusal when it should not.
async fn session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    let (grant, computer) = admit(&state, &name, q.token.as_deref())?;
    Ok(Json(json!({
        "computer": computer.id,
        "name": computer.name,
        "status": computer.status.as_str(),
        "mode": grant.mode.as_str(),
        "expires_at": grant.expires_at,
        "width": state.config.screen_width,
        "height": state.config.screen_height,
    })))
}

async fn stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<StreamQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // The token is judged first, so a refusal reads the same to a browser and to anything else.
    let (grant, computer) = admit(&state, &name, q.token.as_deref())?;
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("this route takes a WebSocket: {e}")))?;
    let fps = q.fps.unwrap_or(30);
    if !(1..=60).contains(&fps) {
        return Err(ApiError::BadRequest(format!("fps must be 1–60, not {fps}")));
    }
    let quality = q.quality.unwrap_or(70);
    if !(1..=100).contains(&quality) {
        return Err(ApiError::BadRequest(format!(
            "quality must be 1–100, not {quality}"
        )));
    }
    let agent = state.desktops.agent(&computer).await?;
    let request = pb::WatchScreenRequest {
        max_fps: fps,
        quality,
        ..Default::default()
    };
    let frames = call(state.desktops.deadline(), agent.clone().watch_screen(request)).await?;
    Ok(ws.on_upgrade(move |socket| async move {
        let viewer = Viewer {
            state,
            computer,
            mode: grant.mode,
            agent,
            held: BTreeSet::new(),
        };
        viewer.run(socket, frames).await;
    }))
}

/// One input event from the page.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Input {
    Move {
        x: i64,
        y: i64,
    },
    Button {
        button: String,
        down: bool,
        x: i64,
        y: i64,
    },
    Scroll {
        direction: String,
        amount: Option<u32>,
        x: i64,
        y: i64,
    },
    KeyDown {
        key: String,
    },
    KeyUp {
        key: String,
    },
    Key {
        key: String,
    },
    Text {
        text: String,
    },
}

/// How often an open viewer counts as activity on its desktop (for idle auto-stop).
const VIEWING_IS_ACTIVITY: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest text one message may type.
const MAX_TEXT: usize = 10_000;

struct Viewer {
    state: AppState,
    computer: Computer,
    mode: Mode,
    agent: Agent,
    /// Keys this viewer holds down, released when it leaves so none stays stuck.
    held: BTreeSet<String>,
}

impl Viewer {
    async fn run(mut self, socket: WebSocket, mut frames: tonic::Streaming<pb::Frame>) {
        let (mut sink, mut incoming) = socket.split();
        let hello = json!({
            "type": "hello",
            "mode": self.mode.as_str(),
            "width": self.state.config.screen_width,
            "height": self.state.config.screen_height,
        });
        if sink.send(Message::Text(hello.to_string().into())).await.is_err() {
            return;
        }
        // The writer owns the socket's sending half: frames as they come, notices in between.
        let (notices, mut notice_rx) = mpsc::channel::<Value>(16);
        let desktops = self.state.desktops.clone();
        let id = self.computer.id.clone();
        let mut writer = tokio::spawn(async move {
            // Watching is activity even while the screen stands still and no frame flows.
            let mut watching = tokio::time::interval(VIEWING_IS_ACTIVITY);
            loop {
                let message = tokio::select! {
                    _ = watching.tick() => {
                        let _ = desktops.note_activity(&id);
                        continue;
                    }
                    frame = frames.message() => match frame {
                        Ok(Some(f)) => {
                            let mut bytes = Vec::with_capacity(8 + f.jpeg.len());
                            bytes.extend_from_slice(&f.captured_at_micros.to_le_bytes());
                            bytes.extend_from_slice(&f.jpeg);
                            Message::Binary(bytes.into())
                        }
                        Ok(None) | Err(_) => {
                            let bye = json!({"type": "error", "error": "the desktop stopped streaming (stopped or restarting)"});
                            let _ = sink.send(Message::Text(bye.to_string().into())).await;
                            let _ = sink.close().await;
                            return;
                        }
                    },
                    notice = notice_rx.recv() => match notice {
                        Some(n) => Message::Text(n.to_string().into()),
                        None => return,
                    },
                };
                if sink.send(message).await.is_err() {
                    return;
                }
            }
        });
        loop {
            let message = tokio::select! {
                _ = &mut writer => break,
                m = incoming.next() => m,
            };
            let text = match message {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            };
            if let Err(e) = self.input(text.as_str()).await {
                let _ = notices.try_send(json!({"type": "error", "error": e.to_string()}));
            }
        }
        writer.abort();
        self.release_held().await;
    }

    async fn input(&mut self, text: &str) -> Result<(), ApiError> {
        if self.mode == Mode::View {
            return Err(ApiError::Forbidden("this viewer token is view-only".into()));
        }
        let input: Input = serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("not an input event: {e}")))?;
        let screen = Screen::of(&self.state);
        let deadline = self.state.desktops.deadline();
        let agent = &mut self.agent;
        match input {
            Input::Move { x, y } => {
                call(
                    deadline,
                    agent.move_pointer(pb::MovePointerRequest {
                        to: Some(screen.point(x, y)?),
                    }),
                )
                .await?;
            }
            Input::Button {
                button: b,
                down,
                x,
                y,
            } => {
                let request = pb::ButtonRequest {
                    at: Some(screen.point(x, y)?),
                    button: button(Some(&b))?.into(),
                };
                if down {
                    call(deadline, agent.press_button(request)).await?;
                } else {
                    call(deadline, agent.release_button(request)).await?;
                }
            }
            Input::Scroll {
                direction,
                amount,
                x,
                y,
            } => {
                call(
                    deadline,
                    agent.scroll(pb::ScrollRequest {
                        at: Some(screen.point(x, y)?),
                        direction: scroll_direction(Some(&direction))?.into(),
                        amount: amount.unwrap_or(1).clamp(1, 20),
                    }),
                )
                .await?;
            }
            Input::KeyDown { key } => {
                call(deadline, agent.key_down(key_request(&key))).await?;
                self.held.insert(key);
            }
            Input::KeyUp { key } => {
                self.held.remove(&key);
                call(deadline, agent.key_up(key_request(&key))).await?;
            }
            Input::Key { key } => {
                call(deadline, agent.press_key(key_request(&key))).await?;
            }
            Input::Text { text } => {
                if text.len() > MAX_TEXT {
                    return Err(ApiError::BadRequest(format!(
                        "text must be at most {MAX_TEXT} bytes"
                    )));
                }
                call(
                    deadline,
                    agent.type_text(pb::TypeTextRequest {
                        text,
                        delay_millis: 0,
                    }),
                )
                .await?;
            }
        }
        self.state.desktops.note_activity(&self.computer.id)
    }

    async fn release_held(&mut self) {
        let deadline = self.state.desktops.deadline();
        for key in std::mem::take(&mut self.held) {
            let _ = call(deadline, self.agent.key_up(key_request(&key))).await;
        }
    }
}

fn key_request(key: &str) -> pb::KeyRequest {
    pb::KeyRequest {
        combo: key.to_string(),
        repeat: 0,
    }
}
