//! Turns: one change at a time per desktop (and one admission at a time per account), across
//! every replica. A turn is a lease in the store (`computer:ID`, `admission:ACCOUNT`) taken by
//! a conditional write, renewed while held, let go when dropped; a replica that dies holding one
//! loses it when it expires.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{DesktopError, Desktops};
use crate::store::{Lease, Store, StoreError};

/// How long a turn outlives its holder's last renewal (a crashed replica's turn frees then).
pub(super) const TURN_TTL: Duration = Duration::from_secs(30);
/// How often a held turn is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often a waiting change asks again for a turn another holds.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// A held turn; dropping it lets the turn go.
pub(super) struct Turn {
    store: Arc<dyn Store>,
    lease: Lease,
    renew: JoinHandle<()>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.renew.abort();
        let store = self.store.clone();
        let lease = self.lease.clone();
        // Letting go early is a courtesy: if it fails, the turn frees when it expires.
        tokio::spawn(async move {
            if let Err(e) = store.release_lease(&lease.name, &lease.holder).await {
                tracing::debug!(turn = %lease.name, error = %e, "cannot let a turn go; it expires");
            }
        });
    }
}

impl Desktops {
    /// Takes the turn `name` if it is free now.
    pub(super) async fn try_turn(&self, name: &str) -> Result<Option<Turn>, StoreError> {
        // Each turn has a holder of its own, so two changes on this replica also take turns.
        let holder = format!("{}/{}", self.replica, super::new_id());
        let Some(lease) = self.store.take_lease(name, &holder, TURN_TTL).await? else {
            return Ok(None);
        };
        let store = self.store.clone();
        let renewed = lease.clone();
        let renew = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.take_lease(&renewed.name, &renewed.holder, TURN_TTL).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tracing::warn!(turn = %renewed.name, "a turn expired while held");
                        return;
                    }
                    Err(e) => tracing::warn!(turn = %renewed.name, error = %e, "cannot renew a turn"),
                }
            }
        });
        Ok(Some(Turn {
            store: self.store.clone(),
            lease,
            renew,
        }))
    }

    /// Waits for the turn `name`, however long the holder keeps it.
    pub(super) async fn wait_turn(&self, name: &str) -> Result<Turn, DesktopError> {
        loop {
            if let Some(turn) = self.try_turn(name).await? {
                return Ok(turn);
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }
}

/// The turn of a desktop's lifecycle changes.
pub(super) fn of_computer(id: &str) -> String {
    format!("computer:{id}")
}

/// The turn of an account's admissions (so two creates cannot both squeeze under a limit).
pub(super) fn of_admission(account: &str) -> String {
    format!("admission:{account}")
}
