//! Tokens for one computer: `POST /api/computers/{id}/viewer-token` (view-only or with
//! control, and the live view's link that opens it) and `POST /api/computers/{id}/desktop-token`
//! (its gRPC calls without the API key); gRPC's `Computers` issues both the same way.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::parse_body;
use crate::state::AppState;
use crate::store::{Computer, now};
use crate::token::{Grant, Mode};

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

/// A token's lifetime in seconds: [`TTL_RANGE`], [`DEFAULT_TTL`] when absent.
pub fn ttl(asked: Option<f64>) -> Result<i64, ApiError> {
    match asked {
        None => Ok(DEFAULT_TTL),
        Some(t) if t.fract() == 0.0 && TTL_RANGE.contains(&(t as i64)) => Ok(t as i64),
        Some(t) => Err(ApiError::BadRequest(format!(
            "ttl_seconds must be a whole number from {} to {}, not {t}",
            TTL_RANGE.start(),
            TTL_RANGE.end()
        ))),
    }
}

/// A viewer token's mode: `control` when absent.
pub fn viewer_mode(asked: Option<&str>) -> Result<Mode, ApiError> {
    match asked {
        None => Ok(Mode::Control),
        Some(m @ ("view" | "control")) => Ok(Mode::parse(m).expect("a viewer mode")),
        Some(m) => Err(ApiError::BadRequest(format!(
            "mode must be \"view\" or \"control\", not {m:?}"
        ))),
    }
}

/// A token of `mode` for the caller's computer `id`, living `ttl` seconds: its grant and the
/// token.
pub async fn issue_token(
    state: &AppState,
    caller: &Caller,
    id: &str,
    mode: Mode,
    ttl: i64,
) -> Result<(Computer, Grant, String), ApiError> {
    let computer = caller.computer(state, id).await?;
    let grant = Grant {
        computer: computer.id.clone(),
        account: caller.account.id.clone(),
        mode,
        expires_at: now() + ttl,
        workspace: Some(computer.project_id.clone()),
    };
    let token = state.links.issue(&grant);
    Ok((computer, grant, token))
}

/// `POST /api/computers/{id}/viewer-token`: a viewer token and the link that opens it.
pub async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: TokenRequest = parse_body(&body)?;
    let mode = viewer_mode(req.mode.as_deref())?;
    let ttl = ttl(req.ttl_seconds)?;
    let (computer, grant, token) = issue_token(&state, &caller, &id, mode, ttl).await?;
    Ok(Json(json!({
        "token": token,
        "mode": mode.as_str(),
        "expires_at": grant.expires_at,
        "url": state.links.viewer_url(&computer, &token),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesktopTokenRequest {
    #[serde(default)]
    ttl_seconds: Option<f64>,
}

/// `POST /api/computers/{id}/desktop-token`: a token for this computer's gRPC calls
/// (`orgo.agent.v1.Agent` through the gateway), accepted there in place of the API key.
pub async fn issue_desktop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: DesktopTokenRequest = parse_body(&body)?;
    let ttl = ttl(req.ttl_seconds)?;
    let (computer, grant, token) = issue_token(&state, &caller, &id, Mode::Desktop, ttl).await?;
    Ok(Json(json!({
        "token": token,
        "mode": Mode::Desktop.as_str(),
        "expires_at": grant.expires_at,
        "computer": computer.id,
    })))
}
