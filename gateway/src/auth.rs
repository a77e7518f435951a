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
use crate::store::{Account, Computer};

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

/// The caller behind a presented key, or why not.
pub async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Caller, ApiError> {
    authenticate_key(state, bearer(header)?).await
}

/// The caller behind an API key, its request rate taken, or why not.
pub async fn authenticate_key(state: &AppState, key: &str) -> Result<Caller, ApiError> {
    let invalid = || ApiError::Unauthorized("invalid or revoked API key".into());
    let id = key_id(key).ok_or_else(invalid)?;
    let live = state.store.live_key(id).await?.ok_or_else(invalid)?;
    let presented = Sha256::digest(key.as_bytes());
    if !bool::from(presented.as_slice().ct_eq(&live.hash)) {
        return Err(invalid());
    }
    let account = state.store.account(&live.account).await?.ok_or_else(invalid)?;
    take_rate(state, id, &account)?;
    Ok(Caller {
        account,
        workspace: live.workspace,
    })
}

/// The authenticated caller: an account, and the one workspace its key is limited to, if it
/// is (Orgo's workspace-scoped keys).
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Account,
    pub workspace: Option<String>,
}

impl Caller {
    /// The caller's whole account (a key that is not workspace-scoped).
    pub fn of_account(account: Account) -> Caller {
        Caller {
            account,
            workspace: None,
        }
    }

    /// Whether the key may reach workspace `project` (a project id): 403
    /// `workspace_scope_mismatch` naming both workspaces when it is limited to another.
    pub fn reaches(&self, project: &str) -> Result<(), ApiError> {
        match &self.workspace {
            Some(own) if own != project => Err(ApiError::ScopeMismatch {
                key_workspace: own.clone(),
                target_workspace: project.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The caller's computer `id_or_name`, in reach of its key: another account's is not
    /// found, exactly like a missing one; another workspace's of its own account is a 403.
    pub async fn computer(&self, state: &AppState, id_or_name: &str) -> Result<Computer, ApiError> {
        let computer = state.desktops.find(&self.account.id, id_or_name).await?;
        self.reaches(&computer.project_id)?;
        Ok(computer)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        authenticate(state, header).await
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
