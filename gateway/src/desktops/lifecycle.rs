//! State changes of a desktop — boot, start, stop, restart, delete — through the runtime,
//! one at a time per desktop across every replica (its turn), each from the state the
//! previous one left.

use super::turn::{self, Turn};
use super::{DesktopError, Desktops, agent};
use crate::json::Invalid;
use crate::runtime::{DesktopSpec, RuntimeError};
use crate::store::{Account, Computer, Status, now};

/// Why a start failed, in words its user may read later (`status_reason`): a runtime's
/// reason a user can act on is kept; anything else is said without the internals the API
/// hides.
fn failed_start(e: &DesktopError) -> String {
    match e {
        DesktopError::Runtime(RuntimeError::Unavailable(why)) => format!("it could not start: {why}"),
        DesktopError::Runtime(RuntimeError::Busy(_)) => "it was not ready in time; start it again".into(),
        _ => "it failed to start; start it again".into(),
    }
}

impl Desktops {
    /// What the runtime starts for a computer: its size, screen and home.
    pub(super) fn spec(&self, computer: &Computer) -> DesktopSpec {
        let screen = self.config.resolution_of(computer);
        DesktopSpec {
            id: computer.id.clone(),
            ram_gb: computer.ram_gb,
            cpu: computer.cpu,
            width: screen.width,
            height: screen.height,
            disk_gb: self.config.disk_gb_of(computer),
        }
    }

    /// Waits for the desktop's turn to change state, then reloads it: concurrent starts,
    /// stops, restarts, deletes and idle stops of one desktop run one after another, on
    /// whichever replicas they arrive, each from the state the previous one left (a restart's
    /// stop would otherwise kill a concurrent start's processes, and two starts would race for
    /// the same files).
    pub(super) async fn turn(&self, computer: &mut Computer) -> Result<Turn, DesktopError> {
        let turn = self.wait_turn(&turn::of_computer(&computer.id)).await?;
        *computer = self
            .store
            .computer(&computer.account_id, &computer.id)
            .await?
            .ok_or_else(|| DesktopError::NotFound(format!("computer {:?} not found", computer.name)))?;
        Ok(turn)
    }

    /// Starts the desktop's processes and records where its agent listens. Whatever fails,
    /// nothing of it stays running unrecorded: a desktop started but unreachable, or whose
    /// record cannot be written, is stopped again.
    pub(super) async fn boot(&self, computer: &mut Computer) -> Result<(), DesktopError> {
        let spec = self.spec(computer);
        self.store.set_status(&computer.id, Status::Creating).await?;
        let started = async {
            let target = self.runtime.start(&spec).await?;
            let client = agent::connect(&target, self.deadline()).await?;
            let recorded = agent::target_string(&target);
            self.store.set_running(&computer.id, &recorded).await?;
            self.store.touch(&computer.id, now()).await?;
            Ok::<_, DesktopError>((recorded, client))
        };
        match started.await {
            Ok((recorded, client)) => {
                self.agents
                    .lock()
                    .await
                    .insert(computer.id.clone(), (recorded.clone(), client));
                computer.status = Status::Running;
                computer.ended = None;
                computer.agent = Some(recorded);
                computer.generation += 1;
                Ok(())
            }
            Err(e) => {
                if let Err(stop) = self.runtime.stop(&computer.id).await {
                    tracing::warn!(computer = %computer.name, error = %stop, "cannot stop a desktop that failed to start");
                }
                let why = failed_start(&e);
                if let Err(record) = self.store.set_failed(&computer.id, &why).await {
                    tracing::warn!(computer = %computer.name, error = %record, "cannot record a failed start");
                }
                computer.status = Status::Error;
                computer.ended = Some(why);
                Err(e)
            }
        }
    }

    pub async fn start(&self, account: &Account, computer: &mut Computer) -> Result<(), DesktopError> {
        let turn = self.turn(computer).await?;
        turn.then(self.start_in_turn(account, computer).await).await
    }

    pub async fn stop(&self, computer: &mut Computer) -> Result<(), DesktopError> {
        let turn = self.turn(computer).await?;
        turn.then(self.stop_in_turn(computer).await).await
    }

    pub async fn restart(&self, account: &Account, computer: &mut Computer) -> Result<(), DesktopError> {
        let turn = self.turn(computer).await?;
        let restarted = async {
            self.stop_in_turn(computer).await?;
            self.start_in_turn(account, computer).await
        };
        turn.then(restarted.await).await
    }

    /// Gives the running desktop `ram_gb`, `cpu` and a home of `disk_gb` at once (in its turn,
    /// within the account's plan, counted without its old size): NotRunning when it is not
    /// running; the runtime's refusal when it cannot change a running desktop.
    pub async fn resize(
        &self,
        account: &Account,
        computer: &mut Computer,
        ram_gb: u32,
        cpu: f64,
        disk_gb: u32,
    ) -> Result<(), DesktopError> {
        let turn = self.turn(computer).await?;
        let resized = async {
            if computer.status != Status::Running {
                return Err(DesktopError::NotRunning(format!(
                    "computer {:?} is {}; start it to resize it",
                    computer.name,
                    computer.status.as_str()
                )));
            }
            // Judged again as it now is: another resize may have grown the home meanwhile.
            let home = self.config.disk_gb_of(computer);
            if disk_gb < home {
                return Err(DesktopError::Invalid(Invalid(format!(
                    "disk_size_gb only grows: it is {home} GB, not {disk_gb}"
                ))));
            }
            let admission = self.wait_turn(&turn::of_admission(&account.id)).await?;
            let admitted = self.admit(account, ram_gb, cpu, Some(&computer.id)).await;
            let applied = async {
                admitted?;
                let old = self.spec(computer);
                let mut spec = old.clone();
                (spec.ram_gb, spec.cpu, spec.disk_gb) = (ram_gb, cpu, disk_gb);
                let recorded = match self.runtime.resize(&spec).await {
                    Ok(()) => self
                        .store
                        .set_size(&computer.id, ram_gb, cpu, disk_gb)
                        .await
                        .map_err(DesktopError::from),
                    Err(e) => Err(e.into()),
                };
                if recorded.is_err() {
                    // Back to the size on record (a half-applied change, or one not recorded),
                    // so what runs is what the plan counts.
                    if let Err(e) = self.runtime.resize(&old).await {
                        tracing::warn!(computer = %computer.name, error = %e, "cannot restore a desktop's size after a failed resize");
                    }
                }
                recorded
            };
            admission.then(applied.await).await?;
            (computer.ram_gb, computer.cpu, computer.disk_gb) = (ram_gb, cpu, Some(disk_gb));
            Ok(())
        };
        turn.then(resized.await).await
    }

    pub async fn delete(&self, computer: &Computer) -> Result<(), DesktopError> {
        let mut computer = computer.clone();
        let turn = self.turn(&mut computer).await?;
        let deleted = async {
            self.agents.lock().await.remove(&computer.id);
            // As a stop does: calls cut short under it are told so, not recorded as deaths.
            self.store.begin_stop(&computer.id).await?;
            self.runtime.remove(&computer.id).await?;
            self.store.delete_computer(&computer.id).await?;
            Ok(())
        };
        turn.then(deleted.await).await
    }

    async fn start_in_turn(&self, account: &Account, computer: &mut Computer) -> Result<(), DesktopError> {
        if computer.status == Status::Running && self.ended(&computer.id).await.is_none() {
            return Ok(());
        }
        let admission = self.wait_turn(&turn::of_admission(&account.id)).await?;
        let admitted = async {
            self.admit(account, computer.ram_gb, computer.cpu, Some(&computer.id))
                .await?;
            Ok::<_, DesktopError>(self.store.set_status(&computer.id, Status::Creating).await?)
        };
        admission.then(admitted.await).await?;
        self.boot(computer).await
    }

    pub(super) async fn stop_in_turn(&self, computer: &mut Computer) -> Result<(), DesktopError> {
        self.agents.lock().await.remove(&computer.id);
        self.store.begin_stop(&computer.id).await?;
        self.runtime.stop(&computer.id).await?;
        self.store.set_status(&computer.id, Status::Stopped).await?;
        computer.status = Status::Stopped;
        computer.ended = None;
        computer.agent = None;
        computer.generation += 1;
        Ok(())
    }

    /// At a clean gateway shutdown: stops every running desktop that would not outlive the
    /// gateway (their files stay and they are recorded as stopped). Desktops that do outlive it
    /// (containers) keep running, reached by every replica where the store says.
    pub async fn stop_all(&self) -> Result<(), DesktopError> {
        if self.runtime.outlives_gateway() {
            return Ok(());
        }
        for mut computer in self.store.all_computers().await? {
            if computer.status.is_live() {
                self.stop(&mut computer).await?;
            }
        }
        Ok(())
    }
}
