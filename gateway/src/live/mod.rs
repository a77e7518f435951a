//! The live view behind every computer's `url`: a page of our own (`viewer.html`, no build step)
//! that shows the desktop on a canvas and sends the mouse and keyboard back, over one WebSocket
//! per viewer. Frames come from the agent's damage-driven stream (latest frame wins); input is
//! the REST actions' own, parsed and run through the same path (`viewer`). Access is by viewer
//! token (see `token`, `links`), never by API key: a token opens one desktop, view-only or with
//! control, until it expires.

mod links;
mod viewer;

use std::sync::Arc;

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orgo_proto::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};

pub use links::Links;

use crate::desktops::Desktops;
use crate::error::ApiError;
use crate::store::Computer;
use crate::token::Grant;

/// The viewer page; it reads its token from the URL's fragment, which browsers never send.
const PAGE: &str = include_str!("viewer.html");

/// What the live view's routes share.
#[derive(Clone)]
pub struct Live {
    pub desktops: Arc<Desktops>,
    pub links: Arc<Links>,
}

/// The live view's routes, for any router's state.
pub fn routes<S>(live: Live) -> axum::Router<S> {
    axum::Router::new()
        .route("/desktops/{name}", axum::routing::get(page))
        .route("/desktops/{name}/session", axum::routing::get(session))
        .route("/desktops/{name}/stream", axum::routing::get(stream))
        .with_state(live)
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
async fn admit(live: &Live, name: &str, token: Option<&str>) -> Result<(Grant, Computer), ApiError> {
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::Unauthorized(
            "a viewer token is needed; create one with POST /api/computers/{id}/viewer-token".into(),
        )
    })?;
    let grant = live.links.verify(token)?;
    if !matches!(grant.mode, crate::token::Mode::View | crate::token::Mode::Control) {
        return Err(ApiError::Unauthorized(
            "this token opens gRPC calls or a file, not the live view; create a viewer token with POST /api/computers/{id}/viewer-token".into(),
        ));
    }
    let computer = live
        .desktops
        .find(&grant.account, &grant.computer)
        .await
        .map_err(|_| ApiError::NotFound("this desktop no longer exists".into()))?;
    grant.still_in(&computer.project_id)?;
    if computer.name != name && computer.id != name {
        return Err(ApiError::Forbidden(
            "this viewer token is for another desktop".into(),
        ));
    }
    Ok((grant, computer))
}

/// What the page needs before it connects, and a clear refusal when it should not.
async fn session(
    State(live): State<Live>,
    Path(name): Path<String>,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    let (grant, computer) = admit(&live, &name, q.token.as_deref()).await?;
    let screen = live.desktops.screen(&computer);
    Ok(Json(json!({
        "computer": computer.id,
        "name": computer.name,
        "status": computer.status.as_str(),
        "mode": grant.mode.as_str(),
        "expires_at": grant.expires_at,
        "width": screen.width(),
        "height": screen.height(),
    })))
}

async fn stream(
    State(live): State<Live>,
    Path(name): Path<String>,
    Query(q): Query<StreamQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // The token is judged first, so a refusal reads the same to a browser and to anything else.
    let (grant, computer) = admit(&live, &name, q.token.as_deref()).await?;
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
    let frames = live.desktops.watch(&computer, request).await?;
    Ok(ws.on_upgrade(move |socket| viewer::Viewer::new(live.desktops, grant, computer).run(socket, frames)))
}
