//! Calls to a desktop's agent: each within its budget, and [`AgentError`], the one reading of
//! the agent's gRPC status codes (never of their message text).

use std::future::Future;
use std::time::Duration;

use orgo_proto::connect::Target;
use tonic::Code;

/// How an agent call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent refused the request's arguments (an unknown key name, …); the sentence is
    /// meant for people.
    #[error("{0}")]
    Refused(String),
    /// The agent found nothing there (NOT_FOUND).
    #[error("{0}")]
    Missing(String),
    /// The agent refused to reach that (a path leading outside the desktop's home).
    #[error("{0}")]
    Forbidden(String),
    /// More than the agent was told to take (a file over its size limit).
    #[error("{0}")]
    TooLarge(String),
    /// Another program changed the desktop's keyboard mapping during the call; the message
    /// names what may not have arrived, and typing it again works.
    #[error("{0}")]
    Interrupted(String),
    /// The agent (or its display) could not be reached.
    #[error("the desktop is not ready; try again in a moment")]
    Unreachable(String),
    /// No answer within the call's budget.
    #[error("the desktop did not answer in time")]
    TimedOut(String),
    /// Anything else the agent answered.
    #[error("the desktop failed to carry out the request")]
    Failed(String),
}

impl AgentError {
    /// Whether the agent may have gone away under the call (stopped, restarted, deleted): a
    /// call still queued when the agent shuts down ends CANCELLED, one in flight UNAVAILABLE
    /// or with a transport error.
    pub fn is_lost(&self) -> bool {
        matches!(
            self,
            AgentError::Unreachable(_) | AgentError::TimedOut(_) | AgentError::Failed(_)
        )
    }

    /// What goes to the log beside the answer's sentence, for the failures whose sentence is
    /// generic.
    pub fn detail(&self) -> Option<&str> {
        match self {
            AgentError::Unreachable(d) | AgentError::TimedOut(d) | AgentError::Failed(d) => Some(d),
            _ => None,
        }
    }
}

/// The one mapping from an agent's gRPC status: messages of the agent's own argument checks
/// are meant for people and pass through; the rest are details for the log.
impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        let detail = || format!("{:?}: {}", s.code(), s.message());
        match s.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                AgentError::Refused(s.message().to_string())
            }
            Code::NotFound => AgentError::Missing(s.message().to_string()),
            Code::PermissionDenied => AgentError::Forbidden(s.message().to_string()),
            Code::ResourceExhausted => AgentError::TooLarge(s.message().to_string()),
            Code::Aborted => AgentError::Interrupted(s.message().to_string()),
            Code::Unavailable => AgentError::Unreachable(detail()),
            Code::DeadlineExceeded | Code::Cancelled => AgentError::TimedOut(detail()),
            _ => AgentError::Failed(detail()),
        }
    }
}

/// Runs an agent call that takes `takes` by itself (a drag's duration, a run's timeout; zero
/// for most) within `takes + deadline`.
pub async fn call<T>(
    deadline: Duration,
    takes: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, AgentError> {
    let budget = takes + deadline;
    match tokio::time::timeout(budget, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(AgentError::TimedOut(format!("no answer within {budget:?}"))),
    }
}

/// A link to the agent at `target`, made within `deadline`.
pub(super) async fn connect(
    target: &Target,
    deadline: Duration,
) -> Result<orgo_proto::connect::Link, AgentError> {
    match tokio::time::timeout(deadline, orgo_proto::connect::link(target)).await {
        Ok(Ok(agent)) => Ok(agent),
        Ok(Err(e)) => Err(AgentError::Unreachable(format!("agent connect: {e}"))),
        Err(_) => Err(AgentError::TimedOut(format!(
            "agent connect: no answer within {deadline:?}"
        ))),
    }
}

/// How the store records where an agent listens: `unix:PATH`, or `tcp:HOST:PORT TOKEN`.
pub(super) fn target_string(target: &Target) -> String {
    match target {
        Target::Unix(path) => format!("unix:{}", path.display()),
        Target::Tcp { addr, token } => format!("tcp:{addr} {token}"),
    }
}

/// The target a [`target_string`] names; None for anything else.
pub(super) fn parse_target(s: &str) -> Option<Target> {
    if let Some(path) = s.strip_prefix("unix:") {
        return (!path.is_empty()).then(|| Target::Unix(path.into()));
    }
    let (addr, token) = s.strip_prefix("tcp:")?.split_once(' ')?;
    (!addr.is_empty() && !token.is_empty()).then(|| Target::Tcp {
        addr: addr.to_string(),
        token: token.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_are_read_once() {
        let read = |code: Code, msg: &str| AgentError::from(tonic::Status::new(code, msg));
        assert!(
            matches!(read(Code::InvalidArgument, "unknown key name"), AgentError::Refused(m) if m == "unknown key name")
        );
        assert!(matches!(
            read(Code::FailedPrecondition, "x"),
            AgentError::Refused(_)
        ));
        assert!(matches!(read(Code::NotFound, "x"), AgentError::Missing(_)));
        assert!(matches!(
            read(Code::Aborted, "keyboard mapping changed"),
            AgentError::Interrupted(_)
        ));
        assert!(matches!(
            read(Code::Unavailable, "the desktop's display is not available"),
            AgentError::Unreachable(_)
        ));
        assert!(matches!(
            read(Code::DeadlineExceeded, ""),
            AgentError::TimedOut(_)
        ));
        assert!(matches!(read(Code::Cancelled, ""), AgentError::TimedOut(_)));
        let failed = read(Code::Internal, "boom");
        assert_eq!(failed.detail(), Some("Internal: boom"));
        assert_eq!(failed.to_string(), "the desktop failed to carry out the request");
        assert!(matches!(
            read(Code::Unauthenticated, "token"),
            AgentError::Failed(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_budget_times_out() {
        let never = std::future::pending::<Result<tonic::Response<()>, tonic::Status>>();
        let e = call(Duration::from_secs(1), Duration::from_secs(2), never)
            .await
            .unwrap_err();
        assert!(
            matches!(e, AgentError::TimedOut(ref d) if d.contains("3s")),
            "{e:?}"
        );
    }

    #[test]
    fn agent_targets_are_recorded_and_read_back() {
        for s in [
            "unix:/var/lib/orgo/desktops/ab/run/agent.sock",
            "tcp:127.0.0.1:49153 00ff",
        ] {
            assert_eq!(target_string(&parse_target(s).unwrap()), s);
        }
        for bad in ["", "unix:", "tcp:127.0.0.1:1", "tcp: t", "http://x"] {
            assert!(parse_target(bad).is_none(), "{bad:?}");
        }
    }
}
