//! State changes of a desktop — boot, start, stop, restart, delete — through the runtime,
//! one at a time per desktop (its turn), each from the state the previous one left.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{AgentError, DesktopError, Desktops};
use crate::runtime::DesktopSpec;
use crate::store::{Account, Computer, Status};

/// What each desktop's lifecycle changes share.
#[derive(Default)]
pub(super) struct Lifecycle {
    /// Taken by each change in turn (see [`Desktops::turn`]).
    turn: Arc<Mutex<()>>,
    /// How many times the desktop has been stopped: a call that fails while this changes was
    /// cut short by a stop or restart (see [`Desktops::using`]).
    pub(super) stops: u64,
}

impl Desktops {
    /// Reads or changes a desktop's lifecycle record.
    pub(super) fn lifecycle<T>(&self, id: &str, f: impl FnOnce(&mut Lifecycle) -> T) -> T {
        let mut all = self.lifecycles.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry(id.to_string()).or_default())
    }

    /// The turn of a desktop not yet in the store.
    pub(super) async fn first_turn(&self, id: &str) -> OwnedMutexGuard<()> {
        self.lifecycle(id, |l| l.turn.clone()).lock_owned().await
    }

    /// Waits for the desktop's turn to change state, then reloads it: concurrent starts,
    /// stops, restarts, deletes and idle stops of one desktop run one after another, each from
    /// the state the previous one left (a restart's stop would otherwise kill a concurrent
    /// start's processes, and two starts would race for the same files).
    pub(super) async fn turn(&self, computer: &mut Computer) -> Result<OwnedMutexGuard<()>, DesktopError> {
        let turn = self.first_turn(&computer.id).await;
        *computer = self
            .store
            .computer(&computer.account_id, &computer.id)?
            .ok_or_else(|| DesktopError::NotFound(format!("computer {:?} not found", computer.name)))?;
        Ok(turn)
    }

    pub(super) async fn boot(&self, computer: &mut Computer) -> Result<(), DesktopError> {
        let spec = DesktopSpec {
            id: computer.id.clone(),
            ram_gb: computer.ram_gb,
            cpu: computer.cpu,
            width: self.config.screen_width,
            height: self.config.screen_height,
            disk_gb: self.config.disk_size_gb,
        };
        self.store.set_status(&computer.id, Status::Creating)?;
        let started = async {
            let target = self.runtime.start(&spec).await?;
            match orgo_proto::connect::connect(&target).await {
                Ok(client) => Ok(client),
                Err(e) => {
                    // Started but out of reach: nothing of it may stay running.
                    if let Err(stop) = self.runtime.stop(&computer.id).await {
                        tracing::warn!(computer = %computer.name, error = %stop, "cannot stop an unreachable desktop");
                    }
                    Err(DesktopError::Agent(AgentError::Unreachable(format!(
                        "agent connect: {e}"
                    ))))
                }
            }
        };
        match started.await {
            Ok(client) => {
                self.agents.lock().await.insert(computer.id.clone(), client);
                self.store.set_status(&computer.id, Status::Running)?;
                self.store.touch(&computer.id)?;
                self.touched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(computer.id.clone(), Instant::now());
                computer.status = Status::Running;
                Ok(())
            }
            Err(e) => {
                self.store.set_status(&computer.id, Status::Error)?;
                computer.status = Status::Error;
                Err(e)
            }
        }
    }

    pub async fn start(&self, account: &Account, computer: &mut Computer) -> Result<(), DesktopError> {
        let _turn = self.turn(computer).await?;
        self.start_in_turn(account, computer).await
    }

    pub async fn stop(&self, computer: &mut Computer) -> Result<(), DesktopError> {
        let _turn = self.turn(computer).await?;
        self.stop_in_turn(computer).await
    }

    pub async fn restart(&self, account: &Account, computer: &mut Computer) -> Result<(), DesktopError> {
        let _turn = self.turn(computer).await?;
        self.stop_in_turn(computer).await?;
        self.start_in_turn(account, computer).await
    }

    pub async fn delete(&self, computer: &Computer) -> Result<(), DesktopError> {
        let mut computer = computer.clone();
        let _turn = self.turn(&mut computer).await?;
        self.agents.lock().await.remove(&computer.id);
        self.runtime.remove(&computer.id).await?;
        self.store.delete_computer(&computer.id)?;
        self.lifecycles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&computer.id);
        Ok(())
    }

    async fn start_in_turn(&self, account: &Account, computer: &mut Computer) -> Result<(), DesktopError> {
        if computer.status == Status::Running && self.runtime.is_alive(&computer.id).await {
            return Ok(());
        }
        {
            let _admission = self.admission.lock().await;
            self.admit(account, computer.ram_gb, computer.cpu, Some(&computer.id))?;
            self.store.set_status(&computer.id, Status::Creating)?;
        }
        self.boot(computer).await
    }

    pub(super) async fn stop_in_turn(&self, computer: &mut Computer) -> Result<(), DesktopError> {
        self.lifecycle(&computer.id, |l| l.stops += 1);
        self.agents.lock().await.remove(&computer.id);
        self.store.set_status(&computer.id, Status::Stopping)?;
        self.runtime.stop(&computer.id).await?;
        self.store.set_status(&computer.id, Status::Stopped)?;
        computer.status = Status::Stopped;
        Ok(())
    }

    /// At a clean gateway shutdown: stops every running desktop that would not outlive the
    /// gateway (their files stay and they are recorded as stopped). Desktops that do outlive it
    /// (containers) keep running and are adopted at the next start.
    pub async fn stop_all(&self) -> Result<(), DesktopError> {
        if self.runtime.outlives_gateway() {
            return Ok(());
        }
        for mut computer in self.store.all_computers()? {
            if computer.status.is_live() {
                self.stop(&mut computer).await?;
            }
        }
        Ok(())
    }
}
