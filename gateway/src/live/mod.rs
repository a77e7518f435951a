//! The live view behind every computer's `url`: a page of our own (`viewer.html`, no build step)
//! that shows the desktop on a canvas and sends the mouse and keyboard back, over one WebSocket
//! per viewer. Frames come from the agent's damage-driven stream (latest frame wins); input is
//! the REST actions' own, parsed and run through the same path (`viewer`). Access is by viewer
//! token (see `token`, `links`), never by API key: a token opens one desktop, view-only or with
//! control, until it expires.

mod links;
pub mod token;
mod viewer;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orgo_proto::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};

pub use links::Links;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::parse_body;
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
    let computer = state.desktops.find(&account.id, &id)?;
    let grant = Grant {
        computer: computer.id.clone(),
        account: account.id,
        mode,
        expires_at: now() + ttl,
    };
    let token = state.links.issue(&grant);
    Ok(Json(json!({
        "token": token,
        "mode": mode.as_str(),
        "expires_at": grant.expires_at,
        "url": state.links.viewer_url(&computer, &token),
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
    let grant = state.links.verify(token)?;
    let computer = state
        .desktops
        .find(&grant.account, &grant.computer)
        .map_err(|_| ApiError::NotFound("this desktop no longer exists".into()))?;
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
    let request = pb::WatchScreenRequest {
        max_fps: fps,
        quality,
        ..Default::default()
    };
    let frames = state.desktops.watch(&computer, request).await?;
    Ok(ws.on_upgrade(move |socket| viewer::Viewer::new(state, grant, computer).run(socket, frames)))
}
