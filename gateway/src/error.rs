//! The HTTP edge's one error type: made here, once, from each layer's own error (input,
//! desktops and their agents, runtimes, the store, storage, viewer tokens), with its one
//! `IntoResponse`. 5xx answers carry a generic sentence; the detail is logged there, once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::desktops::{AgentError, DesktopError};
use crate::json::Invalid;
use crate::runtime::RuntimeError;
use crate::storage::StorageError;
use crate::store::StoreError;
use crate::token::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    PlanLimit(String),
    #[error("{0}")]
    Forbidden(String),
    /// A workspace-scoped key used on another workspace's resource (Orgo's
    /// `workspace_scope_mismatch`).
    #[error(
        "this API key is limited to workspace {key_workspace}; the resource is in workspace {target_workspace}"
    )]
    ScopeMismatch {
        key_workspace: String,
        target_workspace: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotRunning(String),
    #[error("{0}")]
    TooLarge(String),
    /// The key's request rate is used up; retry after this long.
    #[error("too many requests with this key; retry after {} s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    /// The desktop's agent failed or could not be reached.
    #[error("the desktop failed to carry out the request")]
    Agent(String),
    #[error("the desktop is not ready; try again in a moment")]
    NotReady(String),
    #[error("the desktop did not answer in time")]
    AgentTimeout(String),
    /// Something the request needs is missing for now; the sentence says what (no room in the
    /// cluster, an image that cannot be pulled).
    #[error("{0}")]
    Unavailable(String),
    /// The store's database cannot be reached; the same call works once it is back.
    #[error("the database is unavailable; try again in a moment")]
    StoreUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PlanLimit(_) | ApiError::Forbidden(_) | ApiError::ScopeMismatch { .. } => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::NotRunning(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Agent(_) => StatusCode::BAD_GATEWAY,
            ApiError::NotReady(_) | ApiError::StoreUnavailable(_) | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::AgentTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Refused(m) => ApiError::BadRequest(m),
            AgentError::Missing(m) => ApiError::NotFound(m),
            AgentError::Forbidden(m) => ApiError::Forbidden(m),
            AgentError::TooLarge(m) => ApiError::TooLarge(m),
            AgentError::Interrupted(m) => ApiError::Conflict(m),
            AgentError::Unreachable(d) => ApiError::NotReady(d),
            AgentError::TimedOut(d) => ApiError::AgentTimeout(d),
            AgentError::Failed(d) => ApiError::Agent(d),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Busy(d) => ApiError::NotReady(d),
            RuntimeError::Unavailable(m) => ApiError::Unavailable(m),
            RuntimeError::Failed(d) => ApiError::Internal(d),
            RuntimeError::Unsupported(m) => ApiError::Conflict(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Database(e) => ApiError::Internal(format!("database: {e}")),
            StoreError::Unavailable(e) => ApiError::StoreUnavailable(e),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Missing => ApiError::NotFound(e.to_string()),
            StorageError::Store(e) => e.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

impl From<DesktopError> for ApiError {
    fn from(e: DesktopError) -> Self {
        match e {
            DesktopError::Invalid(e) => e.into(),
            DesktopError::NotFound(m) => ApiError::NotFound(m),
            DesktopError::NotRunning(m) => ApiError::NotRunning(m),
            DesktopError::PlanLimit(m) => ApiError::PlanLimit(m),
            DesktopError::Agent(e) => e.into(),
            DesktopError::Runtime(e) => e.into(),
            DesktopError::Store(e) => e.into(),
            DesktopError::Storage(e) => e.into(),
        }
    }
}

/// Whole seconds to wait, at least one (`Retry-After` takes whole seconds).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl ApiError {
    /// The sentence the client reads, over REST or gRPC alike; the detail behind a generic
    /// sentence (the 5xx answers) is logged here, once.
    pub fn sentence(&self) -> String {
        match self {
            ApiError::Agent(d)
            | ApiError::NotReady(d)
            | ApiError::AgentTimeout(d)
            | ApiError::StoreUnavailable(d)
            | ApiError::Internal(d) => {
                tracing::warn!(status = %self.status(), detail = %d, "request failed");
                self.to_string()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.sentence();
        let body = match &self {
            ApiError::ScopeMismatch {
                key_workspace,
                target_workspace,
            } => serde_json::json!({
                "error": message,
                "code": "workspace_scope_mismatch",
                "key_workspace_id": key_workspace,
                "target_workspace_id": target_workspace,
            }),
            _ => serde_json::json!({ "error": message }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            ApiError::RateLimited(wait) => Some(retry_after_secs(wait)),
            ApiError::StoreUnavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"orgo\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layer_maps_to_its_status_and_5xx_hide_their_detail() {
        let check = |e: ApiError, want: StatusCode| assert_eq!(e.status(), want, "{e:?}");
        let agent = |s: tonic::Status| ApiError::from(DesktopError::Agent(s.into()));
        check(
            agent(tonic::Status::invalid_argument("unknown key name")),
            StatusCode::BAD_REQUEST,
        );
        check(
            agent(tonic::Status::unavailable("display")),
            StatusCode::SERVICE_UNAVAILABLE,
        );
        check(
            agent(tonic::Status::deadline_exceeded("")),
            StatusCode::GATEWAY_TIMEOUT,
        );
        check(
            agent(tonic::Status::aborted("keyboard mapping changed")),
            StatusCode::CONFLICT,
        );
        check(agent(tonic::Status::internal("boom")), StatusCode::BAD_GATEWAY);
        check(agent(tonic::Status::not_found("x")), StatusCode::NOT_FOUND);
        check(Invalid("x".into()).into(), StatusCode::BAD_REQUEST);
        check(
            RuntimeError::Busy("home".into()).into(),
            StatusCode::SERVICE_UNAVAILABLE,
        );
        check(
            RuntimeError::Unavailable("no room: 0/2 nodes are available".into()).into(),
            StatusCode::SERVICE_UNAVAILABLE,
        );
        check(
            RuntimeError::Failed("bwrap".into()).into(),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        check(StoreError::Conflict("taken".into()).into(), StatusCode::CONFLICT);
        check(
            StoreError::Unavailable("connection refused".into()).into(),
            StatusCode::SERVICE_UNAVAILABLE,
        );
        check(TokenError::Expired.into(), StatusCode::UNAUTHORIZED);
        check(StorageError::Missing.into(), StatusCode::NOT_FOUND);
        check(
            DesktopError::PlanLimit("plan".into()).into(),
            StatusCode::FORBIDDEN,
        );
        check(
            DesktopError::NotRunning("stopped".into()).into(),
            StatusCode::CONFLICT,
        );
        let hidden = ApiError::from(RuntimeError::Failed("cannot start bubblewrap: ENOENT".into()));
        assert_eq!(hidden.to_string(), "internal error");
    }
}
