//! The agent's one error type and its single mapping to `tonic::Status`.

use tonic::{Code, Status};

/// Everything an agent call can fail with; each variant says which gRPC code the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request itself is wrong: an unknown key name, a point off the screen, a bad region, a
    /// path with a NUL byte.
    #[error("{0}")]
    InvalidArgument(String),
    /// The X server is not answering (starting, restarting or gone); retrying later can work.
    #[error("the desktop's display is not available: {0}")]
    DisplayUnavailable(String),
    /// The display works but cannot do what was asked (an unsupported pixel format, say).
    #[error("{0}")]
    Unsupported(String),
    /// Another program changed the keyboard mapping while keys were pressed: the named
    /// characters may have been lost. Typing them again works.
    #[error("{0}")]
    KeymapChanged(String),
    /// A process could not be started or read.
    #[error("process error: {0}")]
    Process(#[from] std::io::Error),
    /// An X request failed in a way a retry will not fix.
    #[error("X11 error: {0}")]
    X11(String),
    /// Image encoding failed.
    #[error("image encoding failed: {0}")]
    Encode(String),
    /// A file the call names does not exist; the message names the path.
    #[error("{0}")]
    NotFound(String),
    /// The call may not touch what it names: a path leading outside the home, the home itself,
    /// or a file the desktop user may not open. The message gives the reason.
    #[error("{0}")]
    PermissionDenied(String),
    /// What the path names is not what the call acts on: a directory where a file is wanted, a
    /// non-empty directory removed without `recursive`.
    #[error("{0}")]
    WrongKind(String),
    /// More bytes than a limit allows, or no space left for them.
    #[error("{0}")]
    TooLarge(String),
    /// A file operation failed in a way the caller cannot fix (an I/O error, say).
    #[error("file error: {0}")]
    File(String),
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl From<x11rb::errors::ConnectionError> for AgentError {
    fn from(e: x11rb::errors::ConnectionError) -> Self {
        AgentError::DisplayUnavailable(e.to_string())
    }
}

impl From<x11rb::errors::ReplyError> for AgentError {
    fn from(e: x11rb::errors::ReplyError) -> Self {
        match e {
            x11rb::errors::ReplyError::ConnectionError(c) => c.into(),
            x11rb::errors::ReplyError::X11Error(x) => AgentError::X11(format!("{x:?}")),
        }
    }
}

impl From<x11rb::errors::ReplyOrIdError> for AgentError {
    fn from(e: x11rb::errors::ReplyOrIdError) -> Self {
        match e {
            x11rb::errors::ReplyOrIdError::ConnectionError(c) => c.into(),
            x11rb::errors::ReplyOrIdError::X11Error(x) => AgentError::X11(format!("{x:?}")),
            x11rb::errors::ReplyOrIdError::IdsExhausted => AgentError::X11("X ids exhausted".into()),
        }
    }
}

impl AgentError {
    /// True when the X connection behind the error is gone and must be made again.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, AgentError::DisplayUnavailable(_))
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Self {
        let code = match &e {
            AgentError::InvalidArgument(_) => Code::InvalidArgument,
            AgentError::DisplayUnavailable(_) => Code::Unavailable,
            AgentError::Unsupported(_) | AgentError::WrongKind(_) => Code::FailedPrecondition,
            AgentError::KeymapChanged(_) => Code::Aborted,
            AgentError::NotFound(_) => Code::NotFound,
            AgentError::PermissionDenied(_) => Code::PermissionDenied,
            AgentError::TooLarge(_) => Code::ResourceExhausted,
            AgentError::Process(_) | AgentError::X11(_) | AgentError::Encode(_) | AgentError::File(_) => {
                tracing::error!(error = %e, "agent call failed");
                Code::Internal
            }
        };
        Status::new(code, e.to_string())
    }
}
