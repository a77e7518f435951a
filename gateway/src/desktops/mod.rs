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
mod files;
mod idle;
mod leader;
mod lifecycle;
mod pool;
mod reconcile;
mod turn;

pub use admission::Shape;
pub use files::{BodyError, Upload};
pub use pool::{POOL_ACCOUNT, PoolState};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::time::{Duration, Instant};

use orgo_proto::connect::{Agent, Files, Link};
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
use crate::store::{Account, Computer, Project, Status, Store, StoreError, now};

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
    agents: Mutex<HashMap<String, (String, Link)>>,
    /// When each desktop's activity was last written, so a burst of actions costs one write.
    touched: std::sync::Mutex<HashMap<String, Instant>>,
    /// The warm pool's account and project, once made ([`pool`]).
    pool_owner: tokio::sync::OnceCell<(Account, Project)>,
    /// Woken when a pooled desktop is handed out, so the pool is filled again at once.
    pool_wanted: Arc<tokio::sync::Notify>,
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
            pool_owner: tokio::sync::OnceCell::new(),
            pool_wanted: Arc::new(tokio::sync::Notify::new()),
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
    pub fn screen(&self, computer: &Computer) -> Screen {
        let r = self.config.resolution_of(computer);
        Screen::new(r.width, r.height)
    }

    /// Screenshots kept for links.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// How long an agent has to answer a call, on top of what the action itself takes.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.config.agent_deadline_seconds)
    }

    /// Why the desktop's processes ended by themselves, if its runtime is sure they did: its
    /// runtime's words, kept to one line of at most [`REASON_CHARS`] characters, as they are
    /// stored and shown (`status_reason`, the 409 of a call).
    pub(super) async fn ended(&self, id: &str) -> Option<String> {
        let why = self.runtime.ended(id).await?;
        Some(one_line(&why))
    }

    /// The agent of a running computer, or why there is none; the call counts as activity.
    pub async fn agent(&self, computer: &Computer) -> Result<Agent, DesktopError> {
        Ok(orgo_proto::connect::agent(self.link(computer, true).await?))
    }

    /// The link to a running computer's agent, or why there is none; counts as activity.
    /// `shared`: the one cached link all of its calls share; else a link of its own, for
    /// streams of files, which could otherwise hold the shared link's flow-control window
    /// while their client reads slowly and stall every other call to the desktop.
    async fn link(&self, computer: &Computer, shared: bool) -> Result<Link, DesktopError> {
        if computer.status == Status::Error {
            return Err(DesktopError::NotRunning(format!(
                "computer {:?} stopped unexpectedly or failed to start ({}); start it again with POST /api/computers/{}/start",
                computer.name,
                computer.ended.as_deref().unwrap_or("no reason recorded"),
                computer.id
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
        let lost = |why: &str| {
            DesktopError::NotRunning(format!(
                "computer {:?} stopped unexpectedly ({why}); start it again with POST /api/computers/{}/start",
                computer.name, computer.id
            ))
        };
        let target = computer.agent.as_deref().unwrap_or_default();
        if let Some(why) = self.ended(&computer.id).await {
            // Its processes are gone: it crashed or was killed. Recorded only if no change
            // began since this request read it.
            self.agents.lock().await.remove(&computer.id);
            self.store
                .mark_lost(&computer.id, computer.generation, target, &why)
                .await?;
            return Err(lost(&why));
        }
        let cached = match shared {
            true => self.agents.lock().await.get(&computer.id).cloned(),
            false => None,
        };
        let client = match cached {
            Some((made_for, client)) if made_for == target => client,
            _ => {
                let address = agent::parse_target(target)
                    .ok_or_else(|| lost("where its agent listens is not recorded"))?;
                let client = agent::connect(&address, self.deadline()).await?;
                if shared {
                    self.agents
                        .lock()
                        .await
                        .insert(computer.id.clone(), (target.to_string(), client.clone()));
                }
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
        self.using_link(computer, true, async |link| {
            call(orgo_proto::connect::agent(link)).await
        })
        .await
    }

    /// [`Desktops::using`] with the agent's `Files` service, on a link of its own.
    pub async fn using_files<T>(
        &self,
        computer: &Computer,
        call: impl AsyncFnOnce(Files) -> Result<T, DesktopError>,
    ) -> Result<T, DesktopError> {
        self.using_link(computer, false, async |link| {
            call(orgo_proto::connect::files(link)).await
        })
        .await
    }

    async fn using_link<T>(
        &self,
        computer: &Computer,
        shared: bool,
        call: impl AsyncFnOnce(Link) -> Result<T, DesktopError>,
    ) -> Result<T, DesktopError> {
        // Reaching the agent can fail the same way: the store said running, and it stopped.
        let result = match self.link(computer, shared).await {
            Ok(link) => call(link).await,
            Err(e) => Err(e),
        };
        match result {
            Err(DesktopError::Agent(e)) if e.is_lost() => Err(self.lost_under_call(computer, e).await),
            other => other,
        }
    }

    /// What an agent failure `e` that may mean the desktop went away (see
    /// [`AgentError::is_lost`]) means to the caller: deleted, stopped or restarted, or ended by
    /// itself (then recorded) while the call ran — or the failure itself. Calls and streams
    /// that fail mid-way use it alike.
    pub async fn lost_under_call(&self, computer: &Computer, e: AgentError) -> DesktopError {
        self.agents.lock().await.remove(&computer.id);
        let now = match self.store.computer(&computer.account_id, &computer.id).await {
            Ok(Some(now)) => now,
            Ok(None) => {
                return DesktopError::NotFound(format!(
                    "computer {:?} was deleted while this call ran",
                    computer.name
                ));
            }
            Err(store) => return store.into(),
        };
        if now.generation == computer.generation && now.status == Status::Error {
            // Another call on it already found it dead and recorded why.
            return DesktopError::NotRunning(format!(
                "computer {:?} stopped while this call ran ({}); start it again with POST /api/computers/{}/start",
                computer.name,
                now.ended.as_deref().unwrap_or("no reason recorded"),
                computer.id
            ));
        }
        if now.generation != computer.generation || now.status != Status::Running {
            return DesktopError::NotRunning(format!(
                "computer {:?} was stopped, restarted or deleted while this call ran; call again once it runs",
                computer.name
            ));
        }
        let Some(why) = self.ended(&computer.id).await else {
            return DesktopError::Agent(e);
        };
        // Gone by itself (killed, or stopped by its runtime for going over a limit), not by a
        // lifecycle change.
        let agent = now.agent.as_deref().unwrap_or_default();
        if let Err(store) = self
            .store
            .mark_lost(&computer.id, now.generation, agent, &why)
            .await
        {
            return store.into();
        }
        DesktopError::NotRunning(format!(
            "computer {:?} stopped while this call ran ({why}); start it again with POST /api/computers/{}/start",
            computer.name, computer.id
        ))
    }

    /// The desktop's screen as a stream of frames (the live view's), opened within the agent
    /// deadline.
    pub async fn watch(
        &self,
        computer: &Computer,
        request: orgo_proto::v1::WatchScreenRequest,
    ) -> Result<tonic::Streaming<orgo_proto::v1::Frame>, DesktopError> {
        let deadline = self.deadline();
        self.using(computer, async |mut agent| {
            Ok(agent::call(deadline, Duration::ZERO, agent.watch_screen(request)).await?)
        })
        .await
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

/// The longest reason a desktop keeps for why it ended (a cluster's messages can be long).
const REASON_CHARS: usize = 500;

/// `text` as one line of at most [`REASON_CHARS`] characters: control characters (a
/// cluster's multi-line messages) become spaces.
fn one_line(text: &str) -> String {
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REASON_CHARS)
        .collect();
    if text.trim().chars().count() > REASON_CHARS {
        format!("{line}…")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::{REASON_CHARS, one_line};

    #[test]
    fn reasons_are_kept_to_one_short_line() {
        assert_eq!(one_line(" Evicted:\nlow on\tmemory \n"), "Evicted: low on memory");
        let long = "x".repeat(REASON_CHARS + 10);
        let kept = one_line(&long);
        assert_eq!(kept.chars().count(), REASON_CHARS + 1);
        assert!(kept.ends_with('…'));
    }
}
