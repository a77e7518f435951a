//! Idle auto-stop: running desktops with no API activity for their plan's idle time are
//! stopped, judged again in their turn.

use std::sync::Arc;
use std::time::Duration;

use super::{DesktopError, Desktops};
use crate::store::{Status, now};

impl Desktops {
    /// Stops running desktops that have seen no API activity for their plan's idle time.
    /// Answers how many it stopped.
    pub async fn stop_idle(&self) -> Result<usize, DesktopError> {
        let mut stopped = 0;
        for mut computer in self.store.all_computers()? {
            if computer.status != Status::Running {
                continue;
            }
            let Some(account) = self.store.account(&computer.account_id)? else {
                continue;
            };
            let Some(idle) = self.config.idle_stop(&account.plan) else {
                continue;
            };
            if now() - computer.last_active < idle.as_secs() as i64 {
                continue;
            }
            // Judged again in turn: it may have been used, stopped or deleted meanwhile.
            let Ok(_turn) = self.turn(&mut computer).await else {
                continue;
            };
            if computer.status == Status::Running && now() - computer.last_active >= idle.as_secs() as i64 {
                tracing::info!(computer = %computer.name, idle_seconds = idle.as_secs(), "stopping idle desktop");
                self.stop_in_turn(&mut computer).await?;
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    /// Checks for idle desktops in the background, often enough for the shortest idle time.
    pub fn spawn_idle_stopper(self: &Arc<Self>) {
        let shortest = self
            .config
            .plans
            .values()
            .map(|p| p.idle_stop_seconds)
            .filter(|s| *s > 0)
            .min();
        let Some(shortest) = shortest else { return };
        let every = Duration::from_secs(shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let desktops = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(desktops) = desktops.upgrade() else {
                    return;
                };
                if let Err(e) = desktops.stop_idle().await {
                    tracing::warn!(error = %e, "idle check failed");
                }
            }
        });
    }
}
