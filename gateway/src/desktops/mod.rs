//! Desktops as the API sees them, whatever way the call came in and whichever replica it
//! reached: lookups scoped by account, the agent channel of each running desktop (found where
//! the store says its agent listens, made once per replica and reused), activity for idle
//! auto-stop, and [`DesktopError`], this layer's one error. Plans and admission
//! (`admission`), turns (`turn`), state changes (`lifecycle`), running actions (`act`), the
//! singletons under one leader (`leader`), idle auto-stop (`idle`) and reconciliation
//! (`reconcile`) each have their own module.

mod act;
mod admission;
mod agent;
mod idle;
mod leader;
mod lifecycle;
mod reconcile;
mod turn;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::time::{Duration, Instant};

use orgo_proto::connect::Agent;
use rand::Rng;
use tokio::sync::Mutex;

pub use agent::AgentError;
pub use leader::Leadership;

use crate::action::Screen;
use crate::config::Config;
use crate::json::Invalid;
use crate::metrics::Metrics;
use crate::runtime::{Runtime, RuntimeError};
use crate::storage::{Storage, StorageError};
use crate::store::{Computer, Status, Store, StoreError, now};

/// Why a desktop call or change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such desktop or project in the caller's account (another account's reads the same).
    #[error("{0}")]
    NotFound(String),
    /// The desktop is not running (or stopped during the call): start it and call again.
    #[error("{0}")]
    NotRunning(String),
    /// The account's plan does not allow it.
    #[error("{0}")]
    PlanLimit(String),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct Desktops {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    runtime: Arc<dyn Runtime>,
    metrics: Arc<Metrics>,
    storage: Storage,
    /// This gateway among the replicas sharing the store, as lease holders name it.
    replica: String,
    /// The epoch of the singletons' lease while this replica leads, else 0.
    leading: AtomicI64,
    /// Set at a clean shutdown: this replica no longer takes the singletons' lease.
    resigned: AtomicBool,
    /// Each running desktop's agent channel, with the target it was made for: a desktop
    /// started again (by any replica) gets a new channel when its target changed.
    agents: Mutex<HashMap<String, (String, Agent)>>,
    /// When each desktop's activity was last written, so a burst of actions costs one write.
    touched: std::sync::Mutex<HashMap<String, Instant>>,
}

/// Activity is recorded at most this often per desktop; idle times are counted in seconds.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new random id: 24 hex digits.
pub fn new_id() -> String {
    hex::encode(rand::rng().random::<[u8; 12]>())
}

impl Desktops {
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        runtime: Arc<dyn Runtime>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // A store only this gateway uses has one holder for good, so a restart takes its
        // leases back at once instead of waiting for the previous process's to expire.
        let replica = if store.shared() {
            format!("replica-{}", new_id())
        } else {
            "gateway".to_string()
        };
        Desktops {
            storage: Storage::new(store.clone()),
            store,
            config,
            runtime,
            metrics,
            replica,
            leading: AtomicI64::new(0),
            resigned: AtomicBool::new(false),
            agents: Mutex::new(HashMap::new()),
            touched: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The computer `id_or_name` of `account`; another account's is not found, exactly like a
    /// missing one.
    pub async fn find(&self, account: &str, id_or_name: &str) -> Result<Computer, DesktopError> {
        self.store
            .computer(account, id_or_name)
            .await?
            .ok_or_else(|| DesktopError::NotFound(format!("computer {id_or_name:?} not found")))
    }

    /// The screen of a desktop, which its actions' coordinates are checked against.
    pub fn screen(&self, _computer: &Computer) -> Screen {
        Screen::new(self.config.screen_width, self.config.screen_height)
    }

    /// Screenshots kept for links.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// How long an agent has to answer a call, on top of what the action itself takes.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.config.agent_deadline_seconds)
    }

    /// The agent of a running computer, or why there is none; the call counts as activity.
    pub async fn agent(&self, computer: &Computer) -> Result<Agent, DesktopError> {
        if computer.status == Status::Error {
            return Err(DesktopError::NotRunning(format!(
                "computer {:?} stopped unexpectedly or failed to start; start it again with POST /api/computers/{}/start",
                computer.name, computer.id
            )));
        }
        if computer.status != Status::Running {
            return Err(DesktopError::NotRunning(format!(
                "computer {:?} is {}; start it with POST /api/computers/{}/start",
                computer.name,
                computer.status.as_str(),
                computer.id
            )));
        }
        let lost = || {
            DesktopError::NotRunning(format!(
                "computer {:?} stopped unexpectedly; start it again with POST /api/computers/{}/start",
                computer.name, computer.id
            ))
        };
        let target = computer.agent.as_deref().unwrap_or_default();
        if !self.runtime.is_alive(&computer.id).await {
            // Its processes are gone: it crashed or was killed. Recorded only if no change
            // began since this request read it.
            self.agents.lock().await.remove(&computer.id);
            self.store
                .mark_lost(&computer.id, computer.generation, target)
                .await?;
            return Err(lost());
        }
        let cached = self.agents.lock().await.get(&computer.id).cloned();
        let client = match cached {
            Some((made_for, client)) if made_for == target => client,
            _ => {
                let address = agent::parse_target(target).ok_or_else(lost)?;
                let client = agent::connect(&address, self.deadline()).await?;
                self.agents
                    .lock()
                    .await
                    .insert(computer.id.clone(), (target.to_string(), client.clone()));
                client
            }
        };
        self.note_activity(&computer.id).await?;
        Ok(client)
    }

    /// Runs `call` with the agent of a running computer. When the call fails because the
    /// desktop was stopped, restarted or deleted under it (its agent went away mid-call), the
    /// answer says so, as for any call to a stopped or missing desktop, instead of a 5xx.
    pub async fn using<T>(
        &self,
        computer: &Computer,
        call: impl AsyncFnOnce(Agent) -> Result<T, DesktopError>,
    ) -> Result<T, DesktopError> {
        // Reaching the agent can fail the same way: the store said running, and it stopped.
        let result = match self.agent(computer).await {
            Ok(agent) => call(agent).await,
            Err(e) => Err(e),
        };
        match result {
            Err(DesktopError::Agent(e)) if e.is_lost() => {
                self.agents.lock().await.remove(&computer.id);
                let Some(now) = self.store.computer(&computer.account_id, &computer.id).await? else {
                    return Err(DesktopError::NotFound(format!(
                        "computer {:?} was deleted while this call ran",
                        computer.name
                    )));
                };
                if now.generation != computer.generation || now.status != Status::Running {
                    return Err(DesktopError::NotRunning(format!(
                        "computer {:?} was stopped or restarted while this call ran; call again once it runs",
                        computer.name
                    )));
                }
                if !self.runtime.is_alive(&computer.id).await {
                    // Gone by itself (killed, or stopped by its runtime for going over a
                    // limit), not by a lifecycle change.
                    self.store
                        .mark_lost(
                            &computer.id,
                            now.generation,
                            now.agent.as_deref().unwrap_or_default(),
                        )
                        .await?;
                    return Err(DesktopError::NotRunning(format!(
                        "computer {:?} stopped while this call ran; start it again with POST /api/computers/{}/start",
                        computer.name, computer.id
                    )));
                }
                Err(DesktopError::Agent(e))
            }
            other => other,
        }
    }

    /// The desktop's screen as a stream of frames (the live view's), opened within the agent
    /// deadline.
    pub async fn watch(
        &self,
        computer: &Computer,
        request: orgo_proto::v1::WatchScreenRequest,
    ) -> Result<tonic::Streaming<orgo_proto::v1::Frame>, DesktopError> {
        let mut agent = self.agent(computer).await?;
        Ok(agent::call(self.deadline(), Duration::ZERO, agent.watch_screen(request)).await?)
    }

    /// Records API activity on a desktop (for idle auto-stop), at most once a second per
    /// replica; the store keeps the latest of what replicas write.
    pub async fn note_activity(&self, id: &str) -> Result<(), DesktopError> {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match touched.get(id) {
                Some(at) if now.duration_since(*at) < TOUCH_EVERY => return Ok(()),
                _ => touched.insert(id.to_string(), now),
            };
        }
        Ok(self.store.touch(id, now()).await?)
    }
}
