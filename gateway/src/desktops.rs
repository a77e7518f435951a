//! Desktops as the API sees them: creating projects and computers within the plan, their
//! lifecycle through the runtime, and the agent channel of each running desktop, made once and
//! reused. All lookups are scoped by the caller's account.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgo_proto::connect::{Agent, Target};
use rand::Rng;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::Config;
use crate::error::ApiError;
use crate::live::token::{Grant, Mode, Signer};
use crate::runtime::{DesktopSpec, Runtime};
use crate::store::{Account, Computer, Project, Status, Store, now};

pub struct Desktops {
    store: Arc<Store>,
    config: Arc<Config>,
    runtime: Arc<dyn Runtime>,
    agents: Mutex<HashMap<String, Agent>>,
    /// Admission is serialised so two creates cannot both squeeze under a plan limit.
    admission: Mutex<()>,
    /// Signs and checks the live view's tokens.
    pub viewers: Signer,
    /// When each desktop's activity was last written, so a burst of actions costs one write.
    touched: std::sync::Mutex<HashMap<String, Instant>>,
    lifecycles: std::sync::Mutex<HashMap<String, Lifecycle>>,
}

/// What each desktop's lifecycle changes share.
#[derive(Default)]
struct Lifecycle {
    /// Taken by each change in turn (see [`Desktops::turn`]).
    turn: Arc<Mutex<()>>,
    /// How many times the desktop has been stopped: a call that fails while this changes was
    /// cut short by a stop or restart (see [`Desktops::using`]).
    stops: u64,
}

/// Activity is recorded at most this often per desktop; idle times are counted in seconds.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn new_id() -> String {
    hex::encode(rand::rng().random::<[u8; 12]>())
}

impl Desktops {
    pub fn new(store: Arc<Store>, config: Arc<Config>, runtime: Arc<dyn Runtime>, viewers: Signer) -> Self {
        Desktops {
            viewers,
            store,
            config,
            runtime,
            agents: Mutex::new(HashMap::new()),
            admission: Mutex::new(()),
            touched: std::sync::Mutex::new(HashMap::new()),
            lifecycles: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Reads or changes a desktop's lifecycle record.
    fn lifecycle<T>(&self, id: &str, f: impl FnOnce(&mut Lifecycle) -> T) -> T {
        let mut all = self.lifecycles.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry(id.to_string()).or_default())
    }

    /// Runs `call` with the agent of a running computer. When the call fails because the
    /// desktop was stopped, restarted or deleted under it (its agent went away mid-call), the
    /// answer says so, as for any call to a stopped or missing desktop, instead of a 5xx.
    pub async fn using<T>(
        &self,
        computer: &Computer,
        call: impl AsyncFnOnce(Agent) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let stops = self.lifecycle(&computer.id, |l| l.stops);
        let agent = self.agent(computer).await?;
        match call(agent).await {
            Err(ApiError::NotReady(_) | ApiError::Agent(_))
                if self.store.computer(&computer.account_id, &computer.id)?.is_none() =>
            {
                Err(ApiError::NotFound(format!(
                    "computer {:?} was deleted while this call ran",
                    computer.name
                )))
            }
            Err(ApiError::NotReady(_) | ApiError::Agent(_))
                if self.lifecycle(&computer.id, |l| l.stops) != stops =>
            {
                Err(ApiError::NotRunning(format!(
                    "computer {:?} was stopped or restarted while this call ran; call again once it runs",
                    computer.name
                )))
            }
            other => other,
        }
    }

    /// Waits for the desktop's turn to change state, then reloads it: concurrent starts,
    /// stops, restarts, deletes and idle stops of one desktop run one after another, each from
    /// the state the previous one left (a restart's stop would otherwise kill a concurrent
    /// start's processes, and two starts would race for the same files).
    async fn turn(&self, computer: &mut Computer) -> Result<OwnedMutexGuard<()>, ApiError> {
        let turn = self
            .lifecycle(&computer.id, |l| l.turn.clone())
            .lock_owned()
            .await;
        *computer = self
            .store
            .computer(&computer.account_id, &computer.id)?
            .ok_or_else(|| ApiError::NotFound(format!("computer {:?} not found", computer.name)))?;
        Ok(turn)
    }

    /// Checks that starting a desktop of this size keeps the account within its plan.
    fn admit(&self, account: &Account, ram_gb: u32, cpu: f64, except: Option<&str>) -> Result<(), ApiError> {
        let plan = self.config.plan(&account.plan).ok_or_else(|| {
            ApiError::Internal(format!("account plan {:?} is not configured", account.plan))
        })?;
        let live: Vec<Computer> = self
            .store
            .computers_of_account(&account.id)?
            .into_iter()
            .filter(|c| c.status.is_live() && Some(c.id.as_str()) != except)
            .collect();
        let (ram, cpus) = live.iter().fold((0, 0.0), |(r, c), m| (r + m.ram_gb, c + m.cpu));
        let name = &account.plan;
        if live.len() as u32 + 1 > plan.max_desktops {
            return Err(ApiError::PlanLimit(format!(
                "plan {name:?} allows {} running desktops and {} are running; stop or delete one first",
                plan.max_desktops,
                live.len()
            )));
        }
        if ram + ram_gb > plan.max_ram_gb {
            return Err(ApiError::PlanLimit(format!(
                "plan {name:?} allows {} GB of RAM across running desktops; {ram} GB are in use and this desktop needs {ram_gb} GB",
                plan.max_ram_gb
            )));
        }
        if cpus + cpu > f64::from(plan.max_cpu) {
            return Err(ApiError::PlanLimit(format!(
                "plan {name:?} allows {} CPU cores across running desktops; {cpus} are in use and this desktop needs {cpu}",
                plan.max_cpu
            )));
        }
        Ok(())
    }

    /// How long an agent has to answer a call, on top of what the action itself takes.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.config.agent_deadline_seconds)
    }

    /// The live view of a computer, opened with a fresh control token in the link's fragment
    /// (only the owner's authenticated answers carry it).
    pub fn url(&self, computer: &Computer) -> String {
        let grant = Grant {
            computer: computer.id.clone(),
            account: computer.account_id.clone(),
            mode: Mode::Control,
            expires_at: now() + self.config.viewer_link_seconds,
        };
        self.viewer_url(computer, &self.viewers.issue(&grant))
    }

    /// The live view of a computer opened with `token`.
    pub fn viewer_url(&self, computer: &Computer, token: &str) -> String {
        format!(
            "{}/desktops/{}#token={token}",
            self.config.public_url(),
            computer.name
        )
    }

    /// A new project with no computers (the SDK's workspace).
    pub fn create_project(&self, account: &Account, name: &str) -> Result<Project, ApiError> {
        let project = Project {
            id: new_id(),
            account_id: account.id.clone(),
            name: name.into(),
            created_at: now(),
        };
        self.store.insert_project(&project)?;
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
    ) -> Result<Computer, ApiError> {
        let _admission = self.admission.lock().await;
        self.admit(account, ram_gb, cpu, None)?;
        let mut computer = Computer {
            id: new_id(),
            account_id: account.id.clone(),
            project_id: project.id.clone(),
            name: name
                .clone()
                .unwrap_or_else(|| format!("computer-{}", random_suffix())),
            status: Status::Creating,
            ram_gb,
            cpu,
            created_at: now(),
            last_active: now(),
        };
        let _turn = self
            .lifecycle(&computer.id, |l| l.turn.clone())
            .lock_owned()
            .await;
        loop {
            match self.store.insert_computer(&computer) {
                Err(ApiError::Conflict(_)) if name.is_none() => {
                    computer.name = format!("computer-{}", random_suffix())
                }
                other => break other?,
            }
        }
        drop(_admission);
        self.boot(&mut computer).await?;
        Ok(computer)
    }

    /// The seed's `POST /projects`: a project named like its one desktop.
    pub async fn create_project_with_desktop(
        &self,
        account: &Account,
        ram_gb: u32,
        cpu: f64,
    ) -> Result<(Project, Computer), ApiError> {
        let _admission = self.admission.lock().await;
        self.admit(account, ram_gb, cpu, None)?;
        let project = loop {
            match self.create_project(account, &format!("computer-{}", random_suffix())) {
                Err(ApiError::Conflict(_)) => continue,
                other => break other?,
            }
        };
        drop(_admission);
        let computer = self
            .create_computer(account, &project, Some(project.name.clone()), ram_gb, cpu)
            .await?;
        Ok((project, computer))
    }

    async fn boot(&self, computer: &mut Computer) -> Result<(), ApiError> {
        let spec = DesktopSpec {
            id: computer.id.clone(),
            ram_gb: computer.ram_gb,
            cpu: computer.cpu,
            width: self.config.screen_width,
            height: self.config.screen_height,
            disk_gb: self.config.disk_size_gb,
        };
        self.store.set_status(&computer.id, Status::Creating)?;
        match self.runtime.start(&spec).await {
            Ok(target) => {
                let client = orgo_proto::connect::connect(&target)
                    .await
                    .map_err(|e| ApiError::NotReady(format!("agent connect: {e}")))?;
                self.agents.lock().await.insert(computer.id.clone(), client);
                self.store.set_status(&computer.id, Status::Running)?;
                self.store.touch(&computer.id)?;
                self.touched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(computer.id.clone(), Instant::now());
                computer.status = Status::Running;
                Ok(())
            }
            Err(e) => {
                self.store.set_status(&computer.id, Status::Error)?;
                computer.status = Status::Error;
                Err(e)
            }
        }
    }

    pub async fn start(&self, account: &Account, computer: &mut Computer) -> Result<(), ApiError> {
        let _turn = self.turn(computer).await?;
        self.start_in_turn(account, computer).await
    }

    pub async fn stop(&self, computer: &mut Computer) -> Result<(), ApiError> {
        let _turn = self.turn(computer).await?;
        self.stop_in_turn(computer).await
    }

    pub async fn restart(&self, account: &Account, computer: &mut Computer) -> Result<(), ApiError> {
        let _turn = self.turn(computer).await?;
        self.stop_in_turn(computer).await?;
        self.start_in_turn(account, computer).await
    }

    pub async fn delete(&self, computer: &Computer) -> Result<(), ApiError> {
        let mut computer = computer.clone();
        let _turn = self.turn(&mut computer).await?;
        self.agents.lock().await.remove(&computer.id);
        self.runtime.remove(&computer.id).await?;
        self.store.delete_computer(&computer.id)?;
        self.lifecycles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&computer.id);
        Ok(())
    }

    async fn start_in_turn(&self, account: &Account, computer: &mut Computer) -> Result<(), ApiError> {
        if computer.status == Status::Running && self.runtime.is_alive(&computer.id).await {
            return Ok(());
        }
        {
            let _admission = self.admission.lock().await;
            self.admit(account, computer.ram_gb, computer.cpu, Some(&computer.id))?;
            self.store.set_status(&computer.id, Status::Creating)?;
        }
        self.boot(computer).await
    }

    async fn stop_in_turn(&self, computer: &mut Computer) -> Result<(), ApiError> {
        self.lifecycle(&computer.id, |l| l.stops += 1);
        self.agents.lock().await.remove(&computer.id);
        self.store.set_status(&computer.id, Status::Stopping)?;
        self.runtime.stop(&computer.id).await?;
        self.store.set_status(&computer.id, Status::Stopped)?;
        computer.status = Status::Stopped;
        Ok(())
    }

    /// The agent of a running computer, or why there is none.
    pub async fn agent(&self, computer: &Computer) -> Result<Agent, ApiError> {
        if computer.status != Status::Running {
            return Err(ApiError::NotRunning(format!(
                "computer {:?} is {}; start it with POST /api/computers/{}/start",
                computer.name,
                computer.status.as_str(),
                computer.id
            )));
        }
        let client = self.agents.lock().await.get(&computer.id).cloned();
        let client = match client {
            Some(c) if self.runtime.is_alive(&computer.id).await => c,
            _ => {
                // Its processes are gone: it crashed, was killed, or left with an old gateway.
                self.agents.lock().await.remove(&computer.id);
                self.store.set_status(&computer.id, Status::Error)?;
                return Err(ApiError::NotRunning(format!(
                    "computer {:?} stopped unexpectedly; start it again with POST /api/computers/{}/start",
                    computer.name, computer.id
                )));
            }
        };
        self.note_activity(&computer.id)?;
        Ok(client)
    }

    /// Records API activity on a desktop (for idle auto-stop), at most once a second.
    pub fn note_activity(&self, id: &str) -> Result<(), ApiError> {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match touched.get(id) {
                Some(at) if now.duration_since(*at) < TOUCH_EVERY => return Ok(()),
                _ => touched.insert(id.to_string(), now),
            };
        }
        self.store.touch(id)
    }

    /// Stops running desktops that have seen no API activity for their plan's idle time.
    /// Answers how many it stopped.
    pub async fn stop_idle(&self) -> Result<usize, ApiError> {
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
                    tracing::warn!(error = ?e, "idle check failed");
                }
            }
        });
    }

    /// At a clean gateway shutdown: stops every running desktop that would not outlive the
    /// gateway (their files stay and they are recorded as stopped). Desktops that do outlive it
    /// (containers) keep running and are adopted at the next start.
    pub async fn stop_all(&self) -> Result<(), ApiError> {
        if self.runtime.outlives_gateway() {
            return Ok(());
        }
        for mut computer in self.store.all_computers()? {
            if computer.status.is_live() {
                self.stop(&mut computer).await?;
            }
        }
        Ok(())
    }

    /// At gateway start: takes over desktops the runtime kept running (containers outlive the
    /// gateway) and marks the rest stopped, so the database never claims a desktop that is not
    /// there and none is lost from it.
    pub async fn reconcile(&self) -> Result<(), ApiError> {
        let computers = self.store.all_computers()?;
        let known: Vec<String> = computers.iter().map(|c| c.id.clone()).collect();
        let alive: HashMap<String, Target> = self.runtime.adopt(&known).await.into_iter().collect();
        for computer in computers {
            match alive.get(&computer.id) {
                Some(target) => match orgo_proto::connect::connect(target).await {
                    Ok(client) => {
                        tracing::info!(computer = %computer.name, "adopted a running desktop");
                        self.agents.lock().await.insert(computer.id.clone(), client);
                        self.store.set_status(&computer.id, Status::Running)?;
                    }
                    Err(e) => {
                        tracing::warn!(computer = %computer.name, error = %e, "cannot reach an adopted desktop");
                        self.store.set_status(&computer.id, Status::Error)?;
                    }
                },
                None if computer.status != Status::Stopped => {
                    tracing::info!(computer = %computer.name, was = computer.status.as_str(), "marking stopped");
                    self.store.set_status(&computer.id, Status::Stopped)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}
