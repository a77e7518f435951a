//! Plans: what an account may run at once (desktops, RAM, CPU), checked in the account's
//! admission turn (across replicas) so two creates cannot both squeeze under a limit; and
//! creating projects and computers within them.

use super::turn;
use super::{DesktopError, Desktops, new_id, random_suffix};
use crate::store::{Account, Computer, Project, Status, StoreError, now};

/// A computer about to be made in `project` (its account's), not yet recorded.
pub(super) fn new_computer(project: &Project, name: String, ram_gb: u32, cpu: f64) -> Computer {
    Computer {
        id: new_id(),
        account_id: project.account_id.clone(),
        project_id: project.id.clone(),
        name,
        status: Status::Creating,
        ram_gb,
        cpu,
        created_at: now(),
        last_active: now(),
        agent: None,
        generation: 0,
        ended: None,
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

    /// A new running computer in a project; `name` is generated when absent.
    pub async fn create_computer(
        &self,
        account: &Account,
        project: &Project,
        name: Option<String>,
        ram_gb: u32,
        cpu: f64,
    ) -> Result<Computer, DesktopError> {
        let admission = self.wait_turn(&turn::of_admission(&account.id)).await?;
        if let Err(e) = self.admit(account, ram_gb, cpu, None).await {
            return admission.then(Err(e)).await;
        }
        match self
            .claim_pooled(account, project, name.as_deref(), ram_gb, cpu)
            .await
        {
            Ok(Some(computer)) => return admission.then(Ok(computer)).await,
            Ok(None) => {}
            Err(e) => return admission.then(Err(e)).await,
        }
        let name_or_new = name
            .clone()
            .unwrap_or_else(|| format!("computer-{}", random_suffix()));
        let mut computer = new_computer(project, name_or_new, ram_gb, cpu);
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

    /// The seed's `POST /projects`: a project named like its one desktop.
    pub async fn create_project_with_desktop(
        &self,
        account: &Account,
        ram_gb: u32,
        cpu: f64,
    ) -> Result<(Project, Computer), DesktopError> {
        let admission = self.wait_turn(&turn::of_admission(&account.id)).await?;
        let admitted = async {
            self.admit(account, ram_gb, cpu, None).await?;
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
            .create_computer(account, &project, Some(project.name.clone()), ram_gb, cpu)
            .await?;
        Ok((project, computer))
    }
}
