//! `POST /api/computers/{id}/viewer-token`: a viewer token of the caller's computer, view-only
//! or with control, and the live view's link that opens it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::parse_body;
use crate::state::AppState;
use crate::store::now;
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
    let computer = state.desktops.find(&account.id, &id).await?;
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
