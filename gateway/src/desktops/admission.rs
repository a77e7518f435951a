//! Plans: what an account may run at once (desktops, RAM, CPU), checked in the account's
//! admission turn (across replicas) so two creates cannot both squeeze under a limit; and
//! creating projects and computers within them.

use super::turn;
use super::{DesktopError, Desktops, new_id, random_suffix};
use crate::store::{Account, Computer, Project, Resolution, Status, StoreError, now};

/// How many names `… (clone N)` a clone tries before it gives up (409).
const CLONE_NAME_TRIES: u32 = 50;

/// What a new computer is made with, checked by the way it was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub ram_gb: u32,
    /// Cores; 0.5 allowed.
    pub cpu: f64,
    /// The home's size limit, GiB.
    pub disk_gb: u32,
    pub resolution: Resolution,
    /// Its own idle time in minutes (0 never); none: its plan's.
    pub auto_stop_minutes: Option<u32>,
}

/// A computer about to be made in `project` (its account's), not yet recorded.
pub(super) fn new_computer(project: &Project, name: String, shape: &Shape) -> Computer {
    Computer {
        id: new_id(),
        account_id: project.account_id.clone(),
        project_id: project.id.clone(),
        name,
        status: Status::Creating,
        ram_gb: shape.ram_gb,
        cpu: shape.cpu,
        created_at: now(),
        last_active: now(),
        agent: None,
        generation: 0,
        ended: None,
        disk_gb: Some(shape.disk_gb),
        resolution: Some(shape.resolution),
        auto_stop_minutes: shape.auto_stop_minutes,
    }
}

impl Desktops {
    /// Checks that starting a desktop of this size keeps the account within its plan
    /// (`except`: a desktop already counted, being started again).
    pub(super) async fn admit(
        &self,
        account: &Account,
        ram_gb: u32,
        cpu: f64,
        except: Option<&str>,
    ) -> Result<(), DesktopError> {
        let name = &account.plan;
        let plan = self.config.plan(name).ok_or_else(|| {
            DesktopError::PlanLimit(format!("account plan {name:?} is not configured on this gateway"))
        })?;
        let live: Vec<Computer> = self
            .store
            .computers_of_account(&account.id)
            .await?
            .into_iter()
            .filter(|c| c.status.is_live() && Some(c.id.as_str()) != except)
            .collect();
        let (ram, cpus) = live.iter().fold((0, 0.0), |(r, c), m| (r + m.ram_gb, c + m.cpu));
        if live.len() as u32 + 1 > plan.max_desktops {
            return Err(DesktopError::PlanLimit(format!(
                "plan {name:?} allows {} running desktops and {} are running; stop or delete one first",
                plan.max_desktops,
                live.len()
            )));
        }
        if ram + ram_gb > plan.max_ram_gb {
            return Err(DesktopError::PlanLimit(format!(
                "plan {name:?} allows {} GB of RAM across running desktops; {ram} GB are in use and this desktop needs {ram_gb} GB",
                plan.max_ram_gb
            )));
        }
        if cpus + cpu > f64::from(plan.max_cpu) {
            return Err(DesktopError::PlanLimit(format!(
                "plan {name:?} allows {} CPU cores across running desktops; {cpus} are in use and this desktop needs {cpu}",
                plan.max_cpu
            )));
        }
        Ok(())
    }

    /// A new project with no computers (the SDK's workspace).
    pub async fn create_project(&self, account: &Account, name: &str) -> Result<Project, DesktopError> {
        let project = Project {
            id: new_id(),
            account_id: account.id.clone(),
            name: name.into(),
            created_at: now(),
        };
        self.store.insert_project(&project).await?;
        Ok(project)
    }

    /// A computer of the configured size and screen with `ram_gb` and `cpu`.
    pub fn default_shape(&self, ram_gb: u32, cpu: f64) -> Shape {
        Shape {
            ram_gb,
            cpu,
            disk_gb: self.config.disk_size_gb,
            resolution: self.config.screen(),
            auto_stop_minutes: None,
        }
    }

    /// A new running computer in a project; `name` is generated when absent.
    pub async fn create_computer(
        &self,
        account: &Account,
        project: &Project,
        name: Option<String>,
        shape: &Shape,
    ) -> Result<Computer, DesktopError> {
        let admission = self.wait_turn(&turn::of_admission(&account.id)).await?;
        if let Err(e) = self.admit(account, shape.ram_gb, shape.cpu, None).await {
            return admission.then(Err(e)).await;
        }
        match self.claim_pooled(account, project, name.as_deref(), shape).await {
            Ok(Some(computer)) => return admission.then(Ok(computer)).await,
            Ok(None) => {}
            Err(e) => return admission.then(Err(e)).await,
        }
        let name_or_new = name
            .clone()
            .unwrap_or_else(|| format!("computer-{}", random_suffix()));
        let mut computer = new_computer(project, name_or_new, shape);
        let turn = self.wait_turn(&turn::of_computer(&computer.id)).await?;
        let inserted = loop {
            match self.store.insert_computer(&computer).await {
                Err(StoreError::Conflict(_)) if name.is_none() => {
                    computer.name = format!("computer-{}", random_suffix())
                }
                other => break other,
            }
        };
        admission.end().await;
        if let Err(e) = inserted {
            return turn.then(Err(e.into())).await;
        }
        let booted = self.boot(&mut computer).await;
        turn.then(booted).await?;
        Ok(computer)
    }

    /// A new running computer in `project` with a copy of `source`'s home and its size and
    /// screen, counted against the plan: named `name`, else `<source> (clone)`, `(clone 2)`, ….
    /// The source is held in its turn while its home is copied (no stop or delete meanwhile).
    /// A copy that fails leaves nothing behind.
    pub async fn clone_computer(
        &self,
        account: &Account,
        source: &Computer,
        project: &Project,
        name: Option<String>,
    ) -> Result<Computer, DesktopError> {
        let mut source = source.clone();
        let source_turn = self.turn(&mut source).await?;
        let cloned = async {
            let shape = Shape {
                ram_gb: source.ram_gb,
                cpu: source.cpu,
                disk_gb: self.config.disk_gb_of(&source),
                resolution: self.config.resolution_of(&source),
                auto_stop_minutes: source.auto_stop_minutes,
            };
            let admission = self.wait_turn(&turn::of_admission(&account.id)).await?;
            if let Err(e) = self.admit(account, shape.ram_gb, shape.cpu, None).await {
                return admission.then(Err(e)).await;
            }
            let mut computer = new_computer(project, String::new(), &shape);
            let turn = self.wait_turn(&turn::of_computer(&computer.id)).await?;
            let mut inserted = Err(StoreError::Conflict("no free clone name was found".into()));
            for n in 1..=CLONE_NAME_TRIES {
                computer.name = match (&name, n) {
                    (Some(given), _) => given.clone(),
                    (None, 1) => format!("{} (clone)", source.name),
                    (None, n) => format!("{} (clone {n})", source.name),
                };
                inserted = self.store.insert_computer(&computer).await;
                if name.is_some() || !matches!(inserted, Err(StoreError::Conflict(_))) {
                    break;
                }
            }
            admission.end().await;
            if let Err(e) = inserted {
                return turn.then(Err(e.into())).await;
            }
            let made = async {
                if let Err(e) = self.runtime.copy_home(&source.id, &self.spec(&computer)).await {
                    let _ = self.runtime.remove(&computer.id).await;
                    self.store.delete_computer(&computer.id).await?;
                    return Err(e.into());
                }
                self.boot(&mut computer).await
            };
            turn.then(made.await).await?;
            Ok(computer)
        };
        source_turn.then(cloned.await).await
    }

    /// The seed's `POST /projects`: a project named like its one desktop.
    pub async fn create_project_with_desktop(
        &self,
        account: &Account,
        shape: &Shape,
    ) -> Result<(Project, Computer), DesktopError> {
        let admission = self.wait_turn(&turn::of_admission(&account.id)).await?;
        let admitted = async {
            self.admit(account, shape.ram_gb, shape.cpu, None).await?;
            loop {
                match self
                    .create_project(account, &format!("computer-{}", random_suffix()))
                    .await
                {
                    Err(DesktopError::Store(StoreError::Conflict(_))) => continue,
                    other => break other,
                }
            }
        };
        // Ended here, not dropped: a dropped turn is let go in the background, and the create
        // below would wait for its own account's admission turn until that landed.
        let project = admission.then(admitted.await).await?;
        let computer = self
            .create_computer(account, &project, Some(project.name.clone()), shape)
            .await?;
        Ok((project, computer))
    }
}
