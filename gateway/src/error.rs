//! The gateway's one error type, its one `IntoResponse`, and the one table from the agent's gRPC
//! codes to HTTP statuses. 5xx answers carry a generic sentence; the detail goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;

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
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PlanLimit(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::NotRunning(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Agent(_) => StatusCode::BAD_GATEWAY,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::AgentTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The one mapping from an agent's gRPC status to the gateway's error. Messages of the agent's
/// own argument checks are meant for people and pass through; the rest are logged.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let detail = format!("{:?}: {}", s.code(), s.message());
        match s.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                ApiError::BadRequest(s.message().to_string())
            }
            Code::NotFound => ApiError::NotFound(s.message().to_string()),
            // Another program changed the desktop's keyboard mapping during the call; the
            // message names what may not have arrived, and typing it again works.
            Code::Aborted => ApiError::Conflict(s.message().to_string()),
            Code::Unavailable => {
                if s.message().contains("display") {
                    ApiError::NotReady(detail)
                } else {
                    ApiError::NotReady(format!("agent unreachable: {detail}"))
                }
            }
            Code::DeadlineExceeded | Code::Cancelled => ApiError::AgentTimeout(detail),
            _ => ApiError::Agent(detail),
        }
    }
}

/// Whole seconds to wait, at least one (`Retry-After` takes whole seconds).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Agent(d)
            | ApiError::NotReady(d)
            | ApiError::AgentTimeout(d)
            | ApiError::Internal(d) => {
                tracing::warn!(%status, detail = %d, "request failed");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
        if let ApiError::RateLimited(wait) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
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
    fn grpc_codes_map_to_http() {
        let check = |code: Code, msg: &str, want: StatusCode| {
            assert_eq!(
                ApiError::from(tonic::Status::new(code, msg)).status(),
                want,
                "{code:?}"
            );
        };
        check(Code::InvalidArgument, "unknown key name", StatusCode::BAD_REQUEST);
        check(
            Code::Unavailable,
            "the desktop's display is not available",
            StatusCode::SERVICE_UNAVAILABLE,
        );
        check(Code::DeadlineExceeded, "", StatusCode::GATEWAY_TIMEOUT);
        check(Code::Aborted, "keyboard mapping changed", StatusCode::CONFLICT);
        check(Code::Internal, "boom", StatusCode::BAD_GATEWAY);
        check(Code::Unauthenticated, "token", StatusCode::BAD_GATEWAY);
    }
}
