//! The warm pool: per configured size (`[[pool]]`), started desktops no account owns yet,
//! handed out on create and made again in the background, so a create of a pooled size is a
//! store update rather than a boot.
//!
//! Pooled desktops are computers of a reserved account ([`POOL_ACCOUNT`], in a project of its
//! own), so every replica, reconciliation and the store see them as they see any desktop:
//! Docker and Kubernetes ones survive a gateway's crash like the rest and are adopted by the
//! next start; a clean shutdown of a gateway with its store to itself deletes them (replicas
//! leave them to each other); local ones end with the gateway either way and are made again. A create claims one with a conditional update of its owner —
//! only a pooled desktop still running can be claimed, and only once, across replicas — in the
//! account's admission turn, after the plan's check: pooled desktops count against the
//! machine, never against a plan, and a claimed one counts against its new account's. The
//! pool account's plan is configured nowhere, so its desktops never stop for idleness. A
//! pooled desktop has never run anything for anyone (no tenant data until it is handed out),
//! and one that stopped, failed or ended is deleted, never handed out or reused; a deleted
//! desktop is gone for good, pooled or not. Pools are per size rather than resized at hand-out:
//! a create of a size no pool keeps boots a desktop of its own.
//!
//! Filling is a singleton (the leader's): after each hand-out and every few seconds, it
//! deletes what may not be handed out and boots what each size lacks, one at a time.

use serde::Serialize;

use super::admission::{Shape, new_computer};
use super::{DesktopError, Desktops, new_id, random_suffix, turn};
use crate::config::PoolSize;
use crate::store::{Account, Computer, Project, Status, StoreError, now};

/// The account that owns pooled desktops. Its name cannot be an account's: `keys create`
/// refuses names starting with `_`.
pub const POOL_ACCOUNT: &str = "_pool";
/// Its plan, configured nowhere: no idle stop, no admission (the pool admits itself).
const POOL_PLAN: &str = "_pool";
const POOL_PROJECT: &str = "pool";
/// Generated names tried per claim.
const NAME_TRIES: usize = 8;

/// One size's pool as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolState {
    pub ram_gb: u32,
    pub cpu: f64,
    pub wanted: u32,
    /// Running and unclaimed.
    pub ready: u32,
}

fn of_size(c: &Computer, size: &PoolSize) -> bool {
    c.ram_gb == size.ram_gb && c.cpu == size.cpu
}

impl Desktops {
    fn pool_size(&self, ram_gb: u32, cpu: f64) -> Option<&PoolSize> {
        self.config
            .pool
            .iter()
            .find(|p| p.count > 0 && p.ram_gb == ram_gb && p.cpu == cpu)
    }

    /// The pool's account and project, made the first time.
    async fn pool_owner(&self) -> Result<(Account, Project), DesktopError> {
        self.pool_owner
            .get_or_try_init(|| async {
                let account = self
                    .store
                    .ensure_account(POOL_ACCOUNT, POOL_PLAN, &new_id())
                    .await?;
                if let Some(project) = self.store.project(&account.id, POOL_PROJECT).await? {
                    return Ok((account, project));
                }
                let project = Project {
                    id: new_id(),
                    account_id: account.id.clone(),
                    name: POOL_PROJECT.into(),
                    created_at: now(),
                };
                match self.store.insert_project(&project).await {
                    // Another replica made it meanwhile.
                    Err(StoreError::Conflict(_)) => {}
                    other => other?,
                }
                let project = self
                    .store
                    .project(&account.id, POOL_PROJECT)
                    .await?
                    .ok_or_else(|| StoreError::Database("the pool's project vanished".into()))?;
                Ok((account, project))
            })
            .await
            .cloned()
    }

    /// Hands a pooled desktop of this size to `account` as `name` (generated when absent) in
    /// `project`, when a pool keeps the size and has one ready: the computer as it now is. Run
    /// in the account's admission turn, after the plan admitted it.
    pub(super) async fn claim_pooled(
        &self,
        account: &Account,
        project: &Project,
        name: Option<&str>,
        shape: &Shape,
    ) -> Result<Option<Computer>, DesktopError> {
        // Pooled desktops have the configured screen and home; any other is started afresh.
        let pooled_shape = self.default_shape(shape.ram_gb, shape.cpu);
        if (shape.resolution, shape.disk_gb) != (pooled_shape.resolution, pooled_shape.disk_gb) {
            return Ok(None);
        }
        let Some(size) = self.pool_size(shape.ram_gb, shape.cpu) else {
            return Ok(None);
        };
        let (pool, _) = self.pool_owner().await?;
        let ready = self.store.computers_of_account(&pool.id).await?;
        for pooled in ready
            .iter()
            .filter(|c| c.status == Status::Running && of_size(c, size))
        {
            // In the desktop's turn, so no delete (a fill round's, a drain's) is between its
            // reading the desktop as pooled and removing it; one in another change's turn, or
            // whose processes ended, is passed over.
            let Some(turn) = self.try_turn(&turn::of_computer(&pooled.id)).await? else {
                continue;
            };
            let claimed = match self.ended(&pooled.id).await {
                Some(_) => Ok(None),
                None => {
                    self.claim_in_turn(&pool, pooled, account, project, name, shape.auto_stop_minutes)
                        .await
                }
            };
            turn.end().await;
            if let Some(computer) = claimed? {
                self.pool_wanted.notify_one();
                return Ok(Some(computer));
            }
        }
        Ok(None)
    }

    /// The claim itself: generated names are tried again on a clash (a few times: a clash
    /// that persists is something else, such as the project deleted meanwhile).
    async fn claim_in_turn(
        &self,
        pool: &Account,
        pooled: &Computer,
        account: &Account,
        project: &Project,
        name: Option<&str>,
        auto_stop_minutes: Option<u32>,
    ) -> Result<Option<Computer>, DesktopError> {
        for _ in 0..NAME_TRIES {
            let chosen = name.map_or_else(|| format!("computer-{}", random_suffix()), str::to_string);
            let claimed = self
                .store
                .claim_pooled(&pool.id, &pooled.id, &account.id, &project.id, &chosen, now())
                .await;
            match claimed {
                Ok(true) => {
                    if auto_stop_minutes.is_some() {
                        self.store.set_auto_stop(&pooled.id, auto_stop_minutes).await?;
                    }
                    return Ok(self.store.computer(&account.id, &pooled.id).await?);
                }
                // Claimed by another create, or ended: the next one.
                Ok(false) => return Ok(None),
                Err(StoreError::Conflict(_)) if name.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict("no free computer name was found; try again".into()).into())
    }

    /// Each pool's size, how many it keeps and how many are ready.
    pub async fn pool_state(&self) -> Result<Vec<PoolState>, DesktopError> {
        if self.config.pool.iter().all(|p| p.count == 0) {
            return Ok(Vec::new());
        }
        let (pool, _) = self.pool_owner().await?;
        let pooled = self.store.computers_of_account(&pool.id).await?;
        Ok(self
            .config
            .pool
            .iter()
            .map(|size| PoolState {
                ram_gb: size.ram_gb,
                cpu: size.cpu,
                wanted: size.count,
                ready: pooled
                    .iter()
                    .filter(|c| c.status == Status::Running && of_size(c, size))
                    .count() as u32,
            })
            .collect())
    }

    /// Deletes pooled desktops that may not be handed out (stopped, failed, ended, or of a size
    /// no longer pooled), then boots what each size lacks, one at a time, while this replica
    /// leads. A boot that fails ends the round: the next tries again.
    pub(super) async fn fill_pool(&self) -> Result<(), DesktopError> {
        let pooling = self.config.pool.iter().any(|p| p.count > 0);
        // Without pools, only what an earlier configuration pooled is left to delete.
        let pool = match pooling {
            true => self.pool_owner().await?.0,
            false => match self.store.account_by_name(POOL_ACCOUNT).await? {
                Some(account) => account,
                None => return Ok(()),
            },
        };
        let mut usable = Vec::new();
        for pooled in self.store.computers_of_account(&pool.id).await? {
            let keep = match pooled.status {
                Status::Creating => true,
                Status::Running => {
                    self.pool_size(pooled.ram_gb, pooled.cpu).is_some()
                        && self.ended(&pooled.id).await.is_none()
                }
                _ => false,
            };
            if keep {
                usable.push(pooled);
                continue;
            }
            tracing::info!(desktop = %pooled.id, status = pooled.status.as_str(), "deleting a pooled desktop that may not be handed out");
            match self.delete(&pooled).await {
                // Claimed meanwhile: no longer the pool's.
                Ok(()) | Err(DesktopError::NotFound(_)) => {}
                Err(e) => tracing::warn!(desktop = %pooled.id, error = %e, "cannot delete a pooled desktop"),
            }
        }
        if !pooling {
            return Ok(());
        }
        let (_, project) = self.pool_owner().await?;
        for size in &self.config.pool {
            let have = usable.iter().filter(|c| of_size(c, size)).count() as u32;
            for _ in have..size.count {
                if !self.is_leading() {
                    return Ok(());
                }
                self.boot_pooled(&project, size).await?;
            }
        }
        Ok(())
    }

    /// At a clean shutdown of a gateway that has its store to itself: deletes the pool's
    /// desktops (they hold nothing of anyone's, and the next start makes them again), so none
    /// outlives its gateway unowned. Replicas sharing a store leave the pool to the others.
    pub async fn drain_pool(&self) -> Result<(), DesktopError> {
        if self.store.shared() {
            return Ok(());
        }
        let Some(pool) = self.store.account_by_name(POOL_ACCOUNT).await? else {
            return Ok(());
        };
        for pooled in self.store.computers_of_account(&pool.id).await? {
            match self.delete(&pooled).await {
                Ok(()) | Err(DesktopError::NotFound(_)) => {}
                Err(e) => tracing::warn!(desktop = %pooled.id, error = %e, "cannot delete a pooled desktop"),
            }
        }
        Ok(())
    }

    async fn boot_pooled(&self, project: &Project, size: &PoolSize) -> Result<(), DesktopError> {
        let mut computer = new_computer(
            project,
            format!("pool-{}", random_suffix()),
            &self.default_shape(size.ram_gb, size.cpu),
        );
        let turn = self.wait_turn(&turn::of_computer(&computer.id)).await?;
        let made = async {
            self.store.insert_computer(&computer).await?;
            self.boot(&mut computer).await
        };
        turn.then(made.await).await
    }
}
