//! API keys: `orgo_<id>_<secret>`, shown once, stored as a SHA-256 hash, looked up by id and
//! compared in constant time; per-key request rates; the axum extractor that turns
//! `Authorization: Bearer` into the caller's account (gRPC reads the same from metadata).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Account;

const PREFIX: &str = "orgo_";

/// A new key: (id, the full key to show once, its hash to store).
pub fn generate() -> (String, String, Vec<u8>) {
    let mut rng = rand::rng();
    let id = hex::encode(rng.random::<[u8; 6]>());
    let secret = hex::encode(rng.random::<[u8; 24]>());
    let key = format!("{PREFIX}{id}_{secret}");
    let hash = Sha256::digest(key.as_bytes()).to_vec();
    (id, key, hash)
}

/// The key id inside a presented key, if it has our shape.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && !secret.is_empty() && key.len() <= 128).then_some(id)
}

/// The credential of an `Authorization: Bearer <credential>` header (or gRPC metadata).
pub fn bearer(header: Option<&str>) -> Result<&str, ApiError> {
    let header =
        header.ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <api key>".into()))?;
    let (scheme, key) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "Authorization must be \"Bearer <api key>\"".into(),
        ));
    }
    Ok(key.trim())
}

/// Whether a presented credential is shaped as an API key (rather than a token).
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

/// Takes one request from `bucket`'s rate, the plan of `account`'s: 429 when used up.
pub fn take_rate(state: &AppState, bucket: &str, account: &Account) -> Result<(), ApiError> {
    let rate = state
        .config
        .plan(&account.plan)
        .map_or(1, |p| p.requests_per_second);
    state.limiter.take(bucket, rate).map_err(ApiError::RateLimited)
}

/// The account behind a presented key, or why not.
pub async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Account, ApiError> {
    authenticate_key(state, bearer(header)?).await
}

/// The account behind an API key, its request rate taken, or why not.
pub async fn authenticate_key(state: &AppState, key: &str) -> Result<Account, ApiError> {
    let invalid = || ApiError::Unauthorized("invalid or revoked API key".into());
    let id = key_id(key).ok_or_else(invalid)?;
    let (stored, account_id) = state.store.live_key(id).await?.ok_or_else(invalid)?;
    let presented = Sha256::digest(key.as_bytes());
    if !bool::from(presented.as_slice().ct_eq(&stored)) {
        return Err(invalid());
    }
    let account = state.store.account(&account_id).await?.ok_or_else(invalid)?;
    take_rate(state, id, &account)?;
    Ok(account)
}

/// The authenticated caller.
pub struct Caller(pub Account);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        authenticate(state, header).await.map(Caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_an_id_and_hash_to_what_is_stored() {
        let (id, key, hash) = generate();
        assert_eq!(key_id(&key), Some(id.as_str()));
        assert_eq!(Sha256::digest(key.as_bytes()).to_vec(), hash);
        assert_eq!(key_id("orgo_short_x"), None);
        assert_eq!(key_id("sk-whatever"), None);
        assert_eq!(key_id(&format!("orgo_{id}_")), None);
    }
}
