//! Turns: one change at a time per desktop (and one admission at a time per account), across
//! every replica. A turn is a lease in the store (`computer:ID`, `admission:ACCOUNT`) taken by
//! a conditional write, renewed while held (never taken back once lost), let go when dropped
//! — also when the request that asked for it went away mid-take; a replica that dies holding
//! one loses it when it expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{DesktopError, Desktops};
use crate::runtime::RuntimeError;
use crate::store::{Lease, Store, StoreError};

/// How long a turn outlives its holder's last renewal (a crashed replica's turn frees then).
pub(super) const TURN_TTL: Duration = Duration::from_secs(30);
/// How often a held turn is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The longest a change waits for its turn (past the longest start a runtime allows).
const TURN_WAIT: Duration = Duration::from_secs(150);
/// The first and the longest pause between two asks for a turn another holds.
const FIRST_STEP: Duration = Duration::from_millis(20);
const LONGEST_STEP: Duration = Duration::from_millis(500);

/// Lets a turn go when dropped, unless disarmed: set before the turn is asked for, so a turn
/// taken by a request that was cancelled meanwhile is let go too.
struct Release {
    store: Arc<dyn Store>,
    name: String,
    holder: String,
    armed: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, name, holder) = (self.store.clone(), self.name.clone(), self.holder.clone());
        // Letting go early is a courtesy: if it fails, the turn frees when it expires.
        runtime.spawn(async move {
            if let Err(e) = store.release_lease(&name, &holder).await {
                tracing::debug!(turn = %name, error = %e, "cannot let a turn go; it expires");
            }
        });
    }
}

/// A held turn; dropping it lets the turn go.
pub(super) struct Turn {
    release: Release,
    renew: JoinHandle<()>,
}

impl Turn {
    /// Lets the turn go now, and waits until it is let go, so the next change (often the same
    /// client's next call) finds it free instead of waiting for a release in the background.
    pub(super) async fn end(mut self) {
        self.renew.abort();
        let r = &mut self.release;
        if let Err(e) = r.store.release_lease(&r.name, &r.holder).await {
            tracing::debug!(turn = %r.name, error = %e, "cannot let a turn go; it expires");
        }
        r.armed = false;
    }

    /// Ends the turn, then answers `result` (what was done in it).
    pub(super) async fn then<T>(self, result: T) -> T {
        self.end().await;
        result
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // A renewal still in flight cannot take the turn back after the release: renewals
        // only extend a lease that has not expired, and a release expires it.
        self.renew.abort();
    }
}

impl Desktops {
    /// Takes the turn `name` if it is free now.
    pub(super) async fn try_turn(&self, name: &str) -> Result<Option<Turn>, StoreError> {
        // Each turn has a holder of its own, so two changes on this replica also take turns.
        let mut release = Release {
            store: self.store.clone(),
            name: name.to_string(),
            holder: format!("{}/{}", self.replica, super::new_id()),
            armed: true,
        };
        let taken = self.store.take_lease(name, &release.holder, TURN_TTL).await;
        let lease = match taken {
            Ok(Some(lease)) => lease,
            other => {
                release.armed = false;
                return other.map(|_| None);
            }
        };
        let renew = tokio::spawn(renew(self.store.clone(), lease));
        Ok(Some(Turn { release, renew }))
    }

    /// Waits for the turn `name` (asking less often the longer it waits), at most
    /// [`TURN_WAIT`]: then the answer says another change is still under way.
    pub(super) async fn wait_turn(&self, name: &str) -> Result<Turn, DesktopError> {
        let deadline = Instant::now() + TURN_WAIT;
        let mut step = FIRST_STEP;
        loop {
            if let Some(turn) = self.try_turn(name).await? {
                return Ok(turn);
            }
            if Instant::now() + step > deadline {
                return Err(DesktopError::Runtime(RuntimeError::Busy(format!(
                    "{name}: another change is still under way after {} s",
                    TURN_WAIT.as_secs()
                ))));
            }
            tokio::time::sleep(step).await;
            step = (step * 2).min(LONGEST_STEP);
        }
    }
}

/// Renews a held turn until it is dropped (this task aborted) or lost.
async fn renew(store: Arc<dyn Store>, lease: Lease) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.renew_lease(&lease, TURN_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(turn = %lease.name, "a turn expired while held");
                return;
            }
            Err(e) => tracing::warn!(turn = %lease.name, error = %e, "cannot renew a turn"),
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
