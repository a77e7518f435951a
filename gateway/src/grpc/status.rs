//! The gRPC edge's one error mapping: an [`ApiError`] (made from each layer's own error, as for
//! REST) becomes a status carrying the same sentence REST gives; a rate limit carries
//! `google.rpc.RetryInfo`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::ApiError;

/// The status code of each API error, beside REST's status in `error`.
fn code(e: &ApiError) -> Code {
    match e {
        ApiError::BadRequest(_) => Code::InvalidArgument,
        ApiError::Unauthorized(_) => Code::Unauthenticated,
        ApiError::PlanLimit(_) | ApiError::Forbidden(_) | ApiError::ScopeMismatch { .. } => {
            Code::PermissionDenied
        }
        ApiError::NotFound(_) => Code::NotFound,
        // Another change or program got there first (a name taken, the keymap changed).
        ApiError::Conflict(_) => Code::Aborted,
        ApiError::NotRunning(_) => Code::FailedPrecondition,
        ApiError::TooLarge(_) | ApiError::RateLimited(_) => Code::ResourceExhausted,
        ApiError::Agent(_)
        | ApiError::NotReady(_)
        | ApiError::Unavailable(_)
        | ApiError::StoreUnavailable(_) => Code::Unavailable,
        ApiError::AgentTimeout(_) => Code::DeadlineExceeded,
        ApiError::Internal(_) => Code::Internal,
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let (code, message) = (code(&e), e.sentence());
        match e {
            ApiError::RateLimited(wait) => {
                Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(wait)))
            }
            ApiError::StoreUnavailable(_) => Status::with_error_details(
                code,
                message,
                ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1))),
            ),
            _ => Status::new(code, message),
        }
    }
}

/// A layer's error at the gRPC edge: through [`ApiError`], so both edges say the same.
pub fn status(e: impl Into<ApiError>) -> Status {
    e.into().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_code_and_the_rest_sentence() {
        let cases = [
            (
                ApiError::BadRequest("x=2000 is outside the screen".into()),
                Code::InvalidArgument,
            ),
            (
                ApiError::Unauthorized("invalid or revoked API key".into()),
                Code::Unauthenticated,
            ),
            (ApiError::PlanLimit("plan".into()), Code::PermissionDenied),
            (
                ApiError::NotFound("computer \"x\" not found".into()),
                Code::NotFound,
            ),
            (ApiError::NotRunning("stopped".into()), Code::FailedPrecondition),
            (ApiError::AgentTimeout("late".into()), Code::DeadlineExceeded),
            (ApiError::NotReady("down".into()), Code::Unavailable),
        ];
        for (e, want) in cases {
            let sentence = e.to_string();
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (want, sentence.as_str()));
        }
        let limited = Status::from(ApiError::RateLimited(std::time::Duration::from_millis(1500)));
        assert_eq!(limited.code(), Code::ResourceExhausted);
        let retry = limited.get_details_retry_info().expect("retry info");
        assert_eq!(retry.retry_delay, Some(std::time::Duration::from_millis(1500)));
    }
}
