//! Runtimes create, stop and remove desktops; the gateway then reaches each desktop's agent
//! over the Unix socket the runtime answers. A runtime owns no HTTP code.

pub mod cgroup;
pub mod local;

use std::path::PathBuf;

use crate::error::ApiError;

/// What a desktop is made with.
#[derive(Debug, Clone)]
pub struct DesktopSpec {
    pub id: String,
    pub ram_gb: u32,
    pub cpu: f64,
    pub width: u32,
    pub height: u32,
}

#[tonic::async_trait]
pub trait Runtime: Send + Sync {
    /// Starts the desktop (again, with its files, if it ran before) and answers its agent's
    /// socket once the agent accepts connections.
    async fn start(&self, spec: &DesktopSpec) -> Result<PathBuf, ApiError>;
    /// Stops the desktop; its files stay.
    async fn stop(&self, id: &str) -> Result<(), ApiError>;
    /// Stops the desktop if needed and deletes its files.
    async fn remove(&self, id: &str) -> Result<(), ApiError>;
    /// Whether the desktop's processes are still there.
    async fn is_alive(&self, id: &str) -> bool;
}
