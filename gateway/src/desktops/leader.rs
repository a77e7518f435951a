//! The singletons — reconciliation with the runtime and removal of orphans (when a replica
//! begins to lead, then every so often), idle auto-stop, dropping old kept screenshots — run on
//! one replica at a time, under the `singletons` lease. Its epoch fences their writes: a leader deposed while
//! paused (its lease expired and taken) has its late writes refused.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::{DesktopError, Desktops};
use crate::store::Lease;

/// The singletons' lease.
const LEASE: &str = "singletons";
/// How long leadership outlives the leader's last renewal: the longest a dead leader's
/// singletons pause before another replica takes over.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// The longest between two rounds (renewals), well inside [`LEASE_TTL`].
const MOST_BETWEEN_ROUNDS: Duration = Duration::from_secs(5);
/// How often the leader reconciles again, in rounds (besides when it begins to lead).
const RECONCILE_EVERY_ROUNDS: u64 = 60;
/// How often the leader drops expired kept screenshots, in rounds.
const FORGET_EVERY_ROUNDS: u64 = 720;

/// This replica as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Leadership {
    pub replica: String,
    /// The singletons' lease epoch while this replica leads.
    pub lease_epoch: Option<i64>,
}

impl Desktops {
    pub fn leadership(&self) -> Leadership {
        let epoch = self.leading.load(Ordering::Relaxed);
        Leadership {
            replica: self.replica.clone(),
            lease_epoch: (epoch > 0).then_some(epoch),
        }
    }

    /// One round: takes or renews the lease; a replica that begins to lead reconciles first;
    /// the leader then stops idle desktops. Answers the lease while this replica leads.
    pub async fn lead(&self, round: u64) -> Result<Option<Lease>, DesktopError> {
        if self.resigned.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let taken = self.store.take_lease(LEASE, &self.replica, LEASE_TTL).await;
        let lease = match taken {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                self.set_leading(0);
                return Ok(None);
            }
            Err(e) => {
                // Unsure whether the lease is still ours: act as if not until it is renewed.
                self.set_leading(0);
                return Err(e.into());
            }
        };
        if self.leading.load(Ordering::Relaxed) != lease.epoch {
            tracing::info!(replica = %self.replica, epoch = lease.epoch, "leading the singletons");
            self.reconcile(&lease).await?;
            self.set_leading(lease.epoch);
        } else if round.is_multiple_of(RECONCILE_EVERY_ROUNDS) {
            self.reconcile(&lease).await?;
        }
        self.stop_idle(&lease).await?;
        if round.is_multiple_of(FORGET_EVERY_ROUNDS) {
            let dropped = self.storage.forget_old().await?;
            if dropped > 0 {
                tracing::info!(dropped, "dropped expired kept screenshots");
            }
        }
        Ok(Some(lease))
    }

    /// Fills the warm pool while this replica leads: at once, after each hand-out, and every
    /// `every` (a pooled desktop that ended is replaced), apart from the lease's rounds, whose
    /// renewals must not wait for a boot.
    fn fill_pool_in_background(self: &Arc<Self>, every: Duration) {
        let desktops = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(me) = desktops.upgrade() else {
                    return;
                };
                if me.is_leading()
                    && !me.resigned.load(Ordering::Relaxed)
                    && let Err(e) = me.fill_pool().await
                {
                    tracing::warn!(error = %e, "cannot fill the warm pool; trying again");
                }
                let wanted = me.pool_wanted.clone();
                drop(me);
                tokio::select! {
                    () = wanted.notified() => {}
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// At a clean shutdown: lets the singletons' lease go, so another replica takes over at
    /// its next round instead of after the lease expires.
    pub async fn resign(&self) {
        self.resigned.store(true, Ordering::Relaxed);
        if self.leading.swap(0, Ordering::Relaxed) == 0 {
            return;
        }
        self.metrics.set_leading(0);
        if let Err(e) = self.store.release_lease(LEASE, &self.replica).await {
            tracing::warn!(error = %e, "cannot let the singletons' lease go; it expires");
        }
    }

    /// Whether this replica runs the singletons now.
    pub(super) fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed) > 0
    }

    fn set_leading(&self, epoch: i64) {
        self.leading.store(epoch, Ordering::Relaxed);
        self.metrics.set_leading(epoch);
    }

    /// Runs the first round now (so a single gateway has reconciled before it serves), then
    /// a round every few seconds in the background, often enough for the shortest idle time.
    pub async fn start_singletons(self: &Arc<Self>) -> Result<(), DesktopError> {
        self.lead(0).await?;
        let shortest = self
            .config
            .plans
            .values()
            .map(|p| p.idle_stop_seconds)
            .filter(|s| *s > 0)
            .min()
            .unwrap_or(u64::MAX);
        let every = Duration::from_secs(shortest / 4).clamp(Duration::from_secs(1), MOST_BETWEEN_ROUNDS);
        self.fill_pool_in_background(every);
        let desktops = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            for round in 1.. {
                tick.tick().await;
                let Some(desktops) = desktops.upgrade() else {
                    return;
                };
                if let Err(e) = desktops.lead(round).await {
                    tracing::warn!(error = %e, "singletons' round failed");
                }
            }
        });
        Ok(())
    }
}
