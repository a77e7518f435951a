//! Reconciliation (a singleton: when a replica begins to lead, then every so often): the
//! store made to agree with what the runtime holds, and what the runtime holds for no desktop
//! removed.

use std::collections::{HashMap, HashSet};

use super::{DesktopError, Desktops, agent, turn};
use crate::runtime::agent_answers;
use crate::store::{Lease, Status};

impl Desktops {
    /// Records desktops the runtime still runs (containers outlive the gateway) as running,
    /// where their agent listens; marks the rest stopped, so the store never claims a desktop
    /// that is not there and none is lost from it; removes what belongs to no desktop. A
    /// desktop in another change's turn is left to that change.
    pub(super) async fn reconcile(&self, lease: &Lease) -> Result<(), DesktopError> {
        let found = self.runtime.found().await?;
        // Read after listing: a desktop is recorded before its runtime makes anything, so
        // whatever was listed and is not in the store now is an orphan.
        let computers = self.store.all_computers().await?;
        let known: HashSet<&str> = computers.iter().map(|c| c.id.as_str()).collect();
        for orphan in found.iter().filter(|f| !known.contains(f.id.as_str())) {
            tracing::info!(desktop = %orphan.id, "removing what belongs to no desktop");
            if let Err(e) = self.runtime.remove(&orphan.id).await {
                tracing::warn!(desktop = %orphan.id, error = %e, "cannot remove an orphan");
            }
        }
        let running: HashMap<&str, String> = found
            .iter()
            .filter_map(|f| Some((f.id.as_str(), agent::target_string(f.agent.as_ref()?))))
            .collect();
        for computer in &computers {
            let target = running.get(computer.id.as_str());
            let agrees = match target {
                Some(t) => computer.status == Status::Running && computer.agent.as_ref() == Some(t),
                None => !computer.status.is_live(),
            };
            if agrees {
                continue;
            }
            let Some(_turn) = self.try_turn(&turn::of_computer(&computer.id)).await? else {
                continue;
            };
            // Judged again in turn: a change that ended meanwhile may have settled it.
            let Some(fresh) = self.store.computer(&computer.account_id, &computer.id).await? else {
                continue;
            };
            match target {
                Some(target) if fresh.status != Status::Running || fresh.agent.as_ref() != Some(target) => {
                    // Listed before the store was read: it may have been stopped since.
                    let answers = match agent::parse_target(target) {
                        Some(address) => agent_answers(&address).await,
                        None => false,
                    };
                    if !answers || self.ended(&fresh.id).await.is_some() {
                        continue;
                    }
                    tracing::info!(computer = %fresh.name, "adopted a running desktop");
                    self.store.set_running(&fresh.id, target).await?;
                }
                None if fresh.status.is_live() => {
                    let Some(why) = self.ended(&fresh.id).await else {
                        continue;
                    };
                    if fresh.status == Status::Running && self.runtime.outlives_gateway() {
                        // It ended by itself (no gateway's exit ends these): an error, with why.
                        tracing::info!(computer = %fresh.name, why = %why, "marking lost");
                        self.store
                            .mark_lost(
                                &fresh.id,
                                fresh.generation,
                                fresh.agent.as_deref().unwrap_or_default(),
                                &why,
                            )
                            .await?;
                    } else {
                        tracing::info!(computer = %fresh.name, was = fresh.status.as_str(), "marking stopped");
                        self.store
                            .set_status_fenced(&fresh.id, Status::Stopped, lease)
                            .await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
