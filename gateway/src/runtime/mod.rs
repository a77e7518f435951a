//! Runtimes create, stop and remove desktops; the gateway then reaches each desktop's agent
//! where the runtime says (a Unix socket, or TCP with a token). A runtime owns no HTTP code.

pub mod cgroup;
mod cpus;
pub mod docker;
pub mod home;
pub mod kubernetes;
pub mod local;
mod programs;
pub mod sandbox;

use orgo_proto::connect::Target;

/// Why a runtime could not do what it was asked; the sentence names what failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Something the desktop needs is still in use (its previous run's home is still being
    /// let go): trying again shortly works.
    #[error("{0}")]
    Busy(String),
    /// The desktop cannot start now for a reason its user can act on or wait out (no room in
    /// the cluster, an image that cannot be pulled, the cluster's API server away); the
    /// sentence says which.
    #[error("{0}")]
    Unavailable(String),
    /// The desktop could not be made, started, stopped or removed.
    #[error("{0}")]
    Failed(String),
    /// This runtime cannot do that to a desktop in its state; the sentence says what can.
    #[error("{0}")]
    Unsupported(String),
}

/// What a desktop is made with.
#[derive(Debug, Clone)]
pub struct DesktopSpec {
    pub id: String,
    pub ram_gb: u32,
    pub cpu: f64,
    pub width: u32,
    pub height: u32,
    /// The size limit of the desktop's files, in GiB: its home's size (local), what its
    /// container may write (Docker, checked every `disk_check_seconds`), its volume's request
    /// (Kubernetes).
    pub disk_gb: u32,
}

/// A desktop a runtime holds.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    /// Where its agent answers, when it runs and answers.
    pub agent: Option<Target>,
}

#[tonic::async_trait]
pub trait Runtime: Send + Sync {
    /// Starts the desktop (again, with its files, if it ran before) and answers where its agent
    /// listens once the agent answers.
    async fn start(&self, spec: &DesktopSpec) -> Result<Target, RuntimeError>;
    /// Stops the desktop; its files stay.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError>;
    /// Gives the running desktop `spec`'s memory and CPUs at once (its cgroups, `docker
    /// update`), and its home `spec.disk_gb` where the runtime sizes homes while they are in
    /// use (else from its next start).
    async fn resize(&self, spec: &DesktopSpec) -> Result<(), RuntimeError>;
    /// Gives the desktop `to`, recorded but never started, a copy of desktop `from`'s home (its
    /// files as they are now, running or stopped): a clone's. Its next `start` runs on it.
    async fn copy_home(&self, from: &str, to: &DesktopSpec) -> Result<(), RuntimeError>;
    /// Stops the desktop if needed and deletes its files.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Why the desktop's processes ended by themselves, once the runtime is sure they did (out
    /// of memory, an exit status, evicted, its node lost), in words its user can read; None
    /// while they run, and when the runtime cannot tell now.
    async fn ended(&self, id: &str) -> Option<String>;
    /// Every desktop of this installation the runtime holds, running or not, for
    /// reconciliation (the caller removes those that belong to no desktop); an error when the
    /// runtime could not say (nothing may be judged gone then).
    async fn found(&self) -> Result<Vec<Found>, RuntimeError>;
    /// Whether desktops keep running when the gateway exits (and so need no stopping then).
    fn outlives_gateway(&self) -> bool;
}

/// Why a desktop ended when the kernel killed it for going over its memory limit (the
/// Kubernetes and Docker term first, so it reads the same whichever runtime ran it).
pub const OOM_KILLED: &str =
    "OOMKilled: the desktop went over its memory limit; start it again, or give it more memory";

/// How long an agent has to answer a health check: one that accepts connections but never
/// answers (frozen, paused) must not hold up a start or a reconciliation.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether an agent answers there within [`HEALTH_TIMEOUT`].
pub async fn agent_answers(target: &Target) -> bool {
    let check = async {
        match orgo_proto::connect::connect(target).await {
            Ok(mut agent) => agent.health(orgo_proto::v1::HealthRequest {}).await.is_ok(),
            Err(_) => false,
        }
    };
    tokio::time::timeout(HEALTH_TIMEOUT, check).await.unwrap_or(false)
}
