//! Idle auto-stop (a singleton): running desktops with no API activity for their own
//! `auto_stop_minutes` (else their plan's idle time) are stopped, judged again in their turn,
//! the decision fenced by the leader's lease.

use super::{DesktopError, Desktops};
use crate::store::{Lease, Status, now};

impl Desktops {
    /// Stops running desktops that have seen no API activity for their idle time.
    /// Answers how many it stopped.
    pub(super) async fn stop_idle(&self, lease: &Lease) -> Result<usize, DesktopError> {
        let mut stopped = 0;
        for computer in self.store.all_computers().await? {
            if computer.status != Status::Running {
                continue;
            }
            let Some(account) = self.store.account(&computer.account_id).await? else {
                continue;
            };
            let Some(idle) = self.config.auto_stop(&computer, &account.plan) else {
                continue;
            };
            let idle = idle.as_secs() as i64;
            if now() - computer.last_active < idle {
                continue;
            }
            // Judged again in turn: it may have been used, stopped or deleted meanwhile; a
            // desktop in another change's turn is judged next round.
            let mut computer = computer;
            let Some(_turn) = self.try_turn(&super::turn::of_computer(&computer.id)).await? else {
                continue;
            };
            let Some(fresh) = self.store.computer(&computer.account_id, &computer.id).await? else {
                continue;
            };
            computer = fresh;
            let still_idle = self
                .config
                .auto_stop(&computer, &account.plan)
                .is_some_and(|idle| now() - computer.last_active >= idle.as_secs() as i64);
            if computer.status != Status::Running || !still_idle {
                continue;
            }
            if !self
                .store
                .set_status_fenced(&computer.id, Status::Stopping, lease)
                .await?
            {
                tracing::warn!(computer = %computer.name, "no longer leading: leaving the idle stop to the leader");
                return Ok(stopped);
            }
            tracing::info!(computer = %computer.name, idle_seconds = idle, "stopping idle desktop");
            self.stop_in_turn(&mut computer).await?;
            self.metrics.record_idle_stop();
            stopped += 1;
        }
        Ok(stopped)
    }
}
