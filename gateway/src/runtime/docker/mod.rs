//! The Docker runtime: one hardened container per desktop from the desktop image, over the Docker
//! Engine API (API version negotiated, so Debian's 1.41 engines work). Containers are labelled
//! with the desktop; they get the desktop's memory and CPUs, a pids cap, an init, `/tmp` on tmpfs,
//! no capabilities, no new privileges, no published ports and no Docker socket; they sit on a
//! bridge network of their own with inter-container traffic off, so a desktop reaches the
//! internet but no other desktop. The agent is
//! reached over a Unix socket in a bind-mounted per-desktop run directory or, for engines that
//! cannot share the host's filesystem, over TCP on a port published on loopback only, with a
//! per-desktop token copied into the container before it starts. Stop keeps the
//! container, so files in `/home/user` survive; containers outlive the gateway and are adopted
//! again at its next start, and containers no desktop owns are removed. The disk limit is a
//! checked one ([`disk`]).

mod disk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::UploadToContainerOptions;
use bollard::container::{
    Config, CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::models::{HostConfig, PortBinding};
use bollard::network::{CreateNetworkOptions, ListNetworksOptions};
use tokio::sync::Mutex;

use super::cgroup::PIDS_MAX;
use super::cpus;
use orgo_proto::connect::Target;

use super::RuntimeError;
use super::{DesktopSpec, Found, Runtime, agent_answers};
use crate::config::DockerTransport;

const LABEL: &str = "orgo.desktop";
/// Names the gateway (by its data dir) that owns a container, so gateways sharing an engine never
/// take or remove each other's desktops.
const OWNER: &str = "orgo.gateway";
/// The desktops' network: a bridge with inter-container communication disabled.
const NETWORK: &str = "orgo-desktops";
/// The agent's port inside the container, for the TCP transport.
const AGENT_PORT: &str = "7000/tcp";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How a desktop's container is removed: running or not, with its anonymous volumes.
const REMOVE: RemoveContainerOptions = RemoveContainerOptions {
    force: true,
    v: true,
    link: false,
};
/// The desktop image's user, who must be able to create the agent's socket.
const DESKTOP_UID: u32 = 1000;

/// A desktop's container as the engine sees it.
enum Container {
    /// Running; the host pid of its init.
    Running(u32),
    /// Not running, or not there; why.
    Ended(String),
}

pub struct DockerRuntime {
    docker: Docker,
    image: String,
    transport: DockerTransport,
    /// Id of the desktops' network.
    network: String,
    data_dir: PathBuf,
    /// This gateway's value of the owner label.
    owner: String,
    /// Host pid of each running desktop's init, to tell cheaply whether it is still there.
    pids: Mutex<HashMap<String, u32>>,
    /// The engine's CPUs: a desktop may not ask for more (the engine refuses it).
    cpus: Option<i64>,
}

/// Memory, CPU time and CPUs of a desktop, as the engine takes them at create and update.
struct Limits {
    memory: i64,
    nano_cpus: i64,
    /// `None` where the engine did not say how many CPUs it has.
    cpuset_cpus: Option<String>,
}

fn engine(e: bollard::errors::Error) -> RuntimeError {
    RuntimeError::Failed(format!("docker: {e}"))
}

fn container_name(id: &str) -> String {
    format!("orgo-{id}")
}

/// The id of the desktops' network, created when missing. The engine's duplicate check races,
/// and two networks of one name make every container start on either fail ("network … is
/// ambiguous": the engine finds a container's networks by name), so gateways on this machine
/// take turns under a file lock; a duplicate made anyway (by a gateway elsewhere on the same
/// engine) is removed, keeping the lowest id.
async fn ensure_network(docker: &Docker) -> anyhow::Result<String> {
    let _turn = tokio::task::spawn_blocking(network_lock).await??;
    let ours = || async {
        let options = ListNetworksOptions {
            filters: HashMap::from([("name", vec![NETWORK])]),
        };
        let mut ids: Vec<String> = docker
            .list_networks(Some(options))
            .await
            .map_err(|e| anyhow::anyhow!("cannot list Docker networks: {e}"))?
            .into_iter()
            // The name filter also matches parts of names.
            .filter(|n| n.name.as_deref() == Some(NETWORK))
            .filter_map(|n| n.id)
            .collect();
        ids.sort();
        anyhow::Ok(ids)
    };
    let mut ids = ours().await?;
    if ids.is_empty() {
        let options = CreateNetworkOptions {
            name: NETWORK,
            driver: "bridge",
            check_duplicate: true,
            options: HashMap::from([("com.docker.network.bridge.enable_icc", "false")]),
            ..Default::default()
        };
        if let Err(e) = docker.create_network(options).await {
            tracing::debug!("creating {NETWORK}: {e}");
        }
        ids = ours().await?;
    }
    let Some((keep, extra)) = ids.split_first() else {
        anyhow::bail!("cannot create the Docker network {NETWORK}");
    };
    for id in extra {
        let _ = docker.remove_network(id).await;
    }
    Ok(keep.clone())
}

/// An exclusive lock on a file every gateway of this machine agrees on, held while the guard
/// lives.
fn network_lock() -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = Path::new("/run/lock");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("{NETWORK}.lock"));
    // Read access is all a lock needs, so a gateway of another user can take the file made by
    // the first one.
    let file = std::fs::File::open(&path)
        .or_else(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", path.display()))
}

impl DockerRuntime {
    /// Connects to the engine and checks that the image is there, with sentences that say what
    /// to do when not.
    /// Checks the running desktops' files against their limits every `disk_check` ([`disk`]).
    pub async fn connect(
        data_dir: &Path,
        image: &str,
        transport: DockerTransport,
        disk_check: Duration,
    ) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_unix_defaults()
            .map_err(|e| anyhow::anyhow!("cannot reach the Docker engine at /var/run/docker.sock: {e}"))?
            .negotiate_version()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the Docker engine at /var/run/docker.sock: {e}"))?;
        docker.inspect_image(image).await.map_err(|_| {
            anyhow::anyhow!("the desktop image {image} is missing; build it with `cargo xtask image minimal`")
        })?;
        let network = ensure_network(&docker).await?;
        let cpus = docker.info().await.ok().and_then(|i| i.ncpu);
        let data_dir = std::fs::canonicalize(data_dir)?;
        let owner = data_dir.display().to_string();
        tokio::spawn(disk::watch(
            docker.clone(),
            owner.clone(),
            data_dir.join("desktops"),
            disk_check,
        ));
        Ok(DockerRuntime {
            docker,
            image: image.to_string(),
            transport,
            network,
            owner,
            data_dir,
            pids: Mutex::new(HashMap::new()),
            cpus,
        })
    }

    /// The gateway's files of a desktop (its agent token, disk limit); `run` beneath it is
    /// the desktop's.
    fn desktop_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("desktops").join(id)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.desktop_dir(id).join("run")
    }

    /// A desktop's limits, or why the engine cannot give them: more vcpus than it has CPUs.
    /// Its CPUs are numbered 0 to `NCPU` − 1, as on a machine with none offline.
    fn limits(&self, spec: &DesktopSpec) -> Result<Limits, RuntimeError> {
        if let Some(cpus) = self.cpus.filter(|&n| spec.cpu > n as f64) {
            return Err(RuntimeError::Unavailable(format!(
                "this machine's Docker engine has {cpus} CPUs: a desktop of {} cannot run on it; ask for at most {cpus}",
                spec.cpu
            )));
        }
        let all: Vec<u32> = (0..self.cpus.unwrap_or(0).max(0) as u32).collect();
        Ok(Limits {
            memory: i64::from(spec.ram_gb) << 30,
            nano_cpus: (spec.cpu * 1e9) as i64,
            // No record of the other containers' CPUs is read: their ids spread them.
            cpuset_cpus: cpus::pick(&spec.id, spec.cpu, &all, &cpus::Placement::default()),
        })
    }

    fn config(&self, spec: &DesktopSpec, limits: Limits) -> Config<String> {
        let mut host = HostConfig {
            memory: Some(limits.memory),
            memory_swap: Some(limits.memory),
            nano_cpus: Some(limits.nano_cpus),
            cpuset_cpus: limits.cpuset_cpus,
            pids_limit: Some(i64::from(PIDS_MAX)),
            init: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,exec,nosuid,size=1g,mode=1777".to_string(),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            network_mode: Some(self.network.clone()),
            ..Default::default()
        };
        let mut config = Config {
            image: Some(self.image.clone()),
            labels: Some(HashMap::from([
                (LABEL.to_string(), spec.id.clone()),
                (OWNER.to_string(), self.owner.clone()),
            ])),
            env: Some(vec![format!("ORGO_SPAWN_XVFB={}x{}x24", spec.width, spec.height)]),
            // Numeric, as the image's `user` is: the engine looks a name up in the image's
            // /etc/passwd at every start, and under load that lookup fails now and then
            // ("unable to find user user").
            user: Some(format!("{DESKTOP_UID}:{DESKTOP_UID}")),
            ..Default::default()
        };
        match self.transport {
            DockerTransport::Unix => {
                host.binds = Some(vec![format!("{}:/run/orgo", self.run_dir(&spec.id).display())]);
            }
            DockerTransport::Tcp => {
                // Appended to the image's entrypoint; the agent takes the last --listen.
                config.cmd = Some(
                    [
                        "--listen",
                        "tcp://0.0.0.0:7000",
                        "--token-file",
                        "/run/orgo/token",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                config.exposed_ports = Some(HashMap::from([(AGENT_PORT.to_string(), HashMap::new())]));
                host.port_bindings = Some(HashMap::from([(
                    AGENT_PORT.to_string(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )]));
            }
        }
        config.host_config = Some(host);
        config
    }

    fn token_file(&self, id: &str) -> PathBuf {
        self.desktop_dir(id).join("agent.token")
    }

    /// For the TCP transport: a new token, kept (0600) in the data dir for adoption after a
    /// gateway restart, and copied into the created container as `/run/orgo/token`, readable by
    /// the desktop's user only.
    async fn install_token(&self, id: &str, container: &str) -> Result<(), RuntimeError> {
        use rand::Rng;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let token = hex::encode(rand::rng().random::<[u8; 32]>());
        let file = self.token_file(id);
        let _ = std::fs::remove_file(&file);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .map_err(|e| RuntimeError::Failed(format!("agent token: {e}")))?;
        let tar = token_tar(&token).map_err(|e| RuntimeError::Failed(format!("agent token: {e}")))?;
        let options = UploadToContainerOptions {
            path: "/run",
            ..Default::default()
        };
        self.docker
            .upload_to_container(container, Some(options), tar.into())
            .await
            .map_err(engine)
    }

    /// Creates the desktop's container (with its agent token, for TCP) unless it exists.
    async fn create(&self, spec: &DesktopSpec) -> Result<(), RuntimeError> {
        let name = container_name(&spec.id);
        if self.docker.inspect_container(&name, None).await.is_ok() {
            return Ok(());
        }
        let options = CreateContainerOptions {
            name: name.clone(),
            platform: None,
        };
        self.docker
            .create_container(Some(options), self.config(spec, self.limits(spec)?))
            .await
            .map_err(engine)?;
        if self.transport == DockerTransport::Tcp {
            self.install_token(&spec.id, &name).await?;
        }
        Ok(())
    }

    /// Where the agent of a desktop (whose container runs) listens.
    async fn target(&self, id: &str) -> Option<Target> {
        match self.transport {
            DockerTransport::Unix => Some(Target::Unix(self.run_dir(id).join("agent.sock"))),
            DockerTransport::Tcp => {
                let token = std::fs::read_to_string(self.token_file(id)).ok()?;
                let info = self
                    .docker
                    .inspect_container(&container_name(id), None)
                    .await
                    .ok()?;
                let ports = info.network_settings?.ports?;
                let binding = ports.get(AGENT_PORT)?.as_ref()?.first()?.clone();
                Some(Target::Tcp {
                    addr: format!("127.0.0.1:{}", binding.host_port?),
                    token,
                })
            }
        }
    }

    /// The host pid of a running container's init, or None when it is not running.
    async fn running_pid(&self, name: &str) -> Option<u32> {
        match self.container(name).await {
            Ok(Container::Running(pid)) => Some(pid),
            _ => None,
        }
    }

    /// What the engine says of a container; an error when it did not say.
    async fn container(&self, name: &str) -> Result<Container, RuntimeError> {
        let info = match self.docker.inspect_container(name, None).await {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                return Ok(Container::Ended("its container is gone".into()));
            }
            Err(e) => return Err(engine(e)),
        };
        let state = info.state.unwrap_or_default();
        Ok(match (state.running, state.pid) {
            (Some(true), Some(pid)) if pid > 0 => Container::Running(pid as u32),
            _ if state.oom_killed == Some(true) => Container::Ended(super::OOM_KILLED.into()),
            _ => Container::Ended(match state.exit_code {
                Some(code) => format!("its container exited with status {code}"),
                None => "its container is not running".into(),
            }),
        })
    }
}

#[tonic::async_trait]
impl Runtime for DockerRuntime {
    async fn start(&self, spec: &DesktopSpec) -> Result<Target, RuntimeError> {
        // Refused before anything is made.
        self.limits(spec)?;
        let run = self.run_dir(&spec.id);
        std::fs::create_dir_all(&run).map_err(|e| RuntimeError::Failed(format!("desktop dir: {e}")))?;
        std::os::unix::fs::chown(&run, Some(DESKTOP_UID), Some(DESKTOP_UID))
            .map_err(|e| RuntimeError::Failed(format!("chown desktop dir: {e}")))?;
        let name = container_name(&spec.id);
        if let Some(pid) = self.running_pid(&name).await {
            // Already running (its record was lost, or its agent was briefly out of reach):
            // the same desktop, when its agent answers; else it starts afresh.
            if let Some(target) = self.target(&spec.id).await
                && agent_answers(&target).await
            {
                self.pids.lock().await.insert(spec.id.clone(), pid);
                return Ok(target);
            }
            let _ = self
                .docker
                .stop_container(&name, Some(StopContainerOptions { t: 2 }))
                .await;
        }
        let _ = std::fs::remove_file(run.join("agent.sock"));
        disk::set_limit(&self.desktop_dir(&spec.id), spec.disk_gb)?;
        disk::clear(&self.desktop_dir(&spec.id));
        self.create(spec).await?;
        self.docker
            .start_container::<String>(&name, None)
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError { message, .. }
                    if message.contains("memory") =>
                {
                    RuntimeError::Failed(format!("docker could not start the desktop (memory): {message}"))
                }
                other => engine(other),
            })?;
        let target = self.target(&spec.id).await;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let present = match &target {
                Some(Target::Unix(socket)) => socket.exists(),
                Some(Target::Tcp { .. }) => true,
                None => false,
            };
            if let Some(target) = target.as_ref().filter(|_| present)
                && agent_answers(target).await
            {
                if let Some(pid) = self.running_pid(&name).await {
                    self.pids.lock().await.insert(spec.id.clone(), pid);
                }
                return Ok(target.clone());
            }
            if Instant::now() > deadline || self.running_pid(&name).await.is_none() {
                let _ = self
                    .docker
                    .stop_container(&name, Some(StopContainerOptions { t: 2 }))
                    .await;
                return Err(RuntimeError::Failed(
                    "desktop container did not become ready".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn copy_home(&self, from: &str, to: &DesktopSpec) -> Result<(), RuntimeError> {
        let run = self.run_dir(&to.id);
        std::fs::create_dir_all(&run).map_err(|e| RuntimeError::Failed(format!("desktop dir: {e}")))?;
        std::os::unix::fs::chown(&run, Some(DESKTOP_UID), Some(DESKTOP_UID))
            .map_err(|e| RuntimeError::Failed(format!("chown desktop dir: {e}")))?;
        self.create(to).await?;
        // The source's /home/user as a tar stream (its owners and modes kept), straight into
        // the new container's /home: a task forwards it, so a failure mid-way is known.
        let (tx, rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(4);
        let docker = self.docker.clone();
        let source = container_name(from);
        let forward = tokio::spawn(async move {
            let options = bollard::container::DownloadFromContainerOptions { path: "/home/user" };
            let mut archive = std::pin::pin!(docker.download_from_container(&source, Some(options)));
            while let Some(piece) = futures::StreamExt::next(&mut archive).await {
                if tx.send(piece?).await.is_err() {
                    break;
                }
            }
            Ok::<_, bollard::errors::Error>(())
        });
        let options = UploadToContainerOptions {
            path: "/home",
            ..Default::default()
        };
        let uploaded = self
            .docker
            .upload_to_container_streaming(
                &container_name(&to.id),
                Some(options),
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )
            .await;
        let read = forward
            .await
            .map_err(|e| RuntimeError::Failed(format!("copying the home: {e}")))?;
        read.map_err(engine)?;
        uploaded.map_err(engine)
    }

    async fn resize(&self, spec: &DesktopSpec) -> Result<(), RuntimeError> {
        let limits = self.limits(spec)?;
        let update = bollard::container::UpdateContainerOptions::<String> {
            memory: Some(limits.memory),
            memory_swap: Some(limits.memory),
            nano_cpus: Some(limits.nano_cpus),
            cpuset_cpus: limits.cpuset_cpus,
            ..Default::default()
        };
        self.docker
            .update_container(&container_name(&spec.id), update)
            .await
            .map_err(engine)?;
        disk::set_limit(&self.desktop_dir(&spec.id), spec.disk_gb)
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.pids.lock().await.remove(id);
        let name = container_name(id);
        match self
            .docker
            .stop_container(&name, Some(StopContainerOptions { t: 5 }))
            .await
        {
            Ok(()) => {}
            // Already stopped, or gone: either way it is not running.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(e) => return Err(engine(e)),
        }
        let _ = std::fs::remove_file(self.run_dir(id).join("agent.sock"));
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.pids.lock().await.remove(id);
        // By label, not by name: an orphan may have been made under any name.
        let options = ListContainersOptions {
            all: true,
            filters: HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL}={id}"), format!("{OWNER}={}", self.owner)],
            )]),
            ..Default::default()
        };
        let containers = self.docker.list_containers(Some(options)).await.map_err(engine)?;
        for container in containers.into_iter().filter_map(|c| c.id) {
            match self.docker.remove_container(&container, Some(REMOVE)).await {
                Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => return Err(engine(e)),
            }
        }
        // A label is anything anyone with the engine wrote: only a plain name is a directory.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(());
        }
        match std::fs::remove_dir_all(self.desktop_dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Failed(format!("cannot delete desktop files: {e}"))),
        }
    }

    fn outlives_gateway(&self) -> bool {
        true
    }

    async fn ended(&self, id: &str) -> Option<String> {
        let known = self.pids.lock().await.get(id).copied();
        if known.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
            return None;
        }
        // Unknown here (started by another replica, or before this gateway started) or gone
        // since (perhaps restarted by another replica): the engine knows.
        match self.container(&container_name(id)).await {
            Ok(Container::Running(pid)) => {
                self.pids.lock().await.insert(id.to_string(), pid);
                None
            }
            Ok(Container::Ended(why)) => {
                self.pids.lock().await.remove(id);
                Some(disk::stopped_for(&self.desktop_dir(id)).unwrap_or(why))
            }
            // The engine did not answer (busy, restarting): not a sign the desktop is gone.
            Err(e) => {
                tracing::debug!(desktop = id, error = %e, "cannot ask the engine whether a desktop runs");
                None
            }
        }
    }

    async fn found(&self) -> Result<Vec<Found>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            filters: HashMap::from([("label".to_string(), vec![LABEL.to_string()])]),
            ..Default::default()
        };
        let containers = self.docker.list_containers(Some(options)).await.map_err(engine)?;
        let mut found = Vec::new();
        for c in containers {
            let labels = c.labels.clone().unwrap_or_default();
            let (Some(id), Some(owner)) = (labels.get(LABEL), labels.get(OWNER)) else {
                continue;
            };
            if *owner != self.owner {
                // A container whose gateway's data dir is gone can never be found by anyone.
                if !Path::new(owner).exists() {
                    tracing::info!(container = ?c.names, owner, "removing an abandoned container");
                    let container = c.id.clone().unwrap_or_else(|| container_name(id));
                    let _ = self.docker.remove_container(&container, Some(REMOVE)).await;
                }
                continue;
            }
            let mut agent = None;
            if let Some(pid) = self.running_pid(&container_name(id)).await
                && let Some(target) = self.target(id).await
                && agent_answers(&target).await
            {
                self.pids.lock().await.insert(id.clone(), pid);
                agent = Some(target);
            }
            found.push(Found {
                id: id.clone(),
                agent,
            });
        }
        Ok(found)
    }
}

/// A tar holding `orgo/token` (and its directory) owned by the desktop's user, for `/run`.
fn token_tar(token: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_path("orgo/")?;
    dir.set_mode(0o700);
    dir.set_uid(u64::from(DESKTOP_UID));
    dir.set_gid(u64::from(DESKTOP_UID));
    dir.set_size(0);
    dir.set_cksum();
    tar.append(&dir, std::io::empty())?;
    let mut file = tar::Header::new_gnu();
    file.set_path("orgo/token")?;
    file.set_mode(0o400);
    file.set_uid(u64::from(DESKTOP_UID));
    file.set_gid(u64::from(DESKTOP_UID));
    file.set_size(token.len() as u64);
    file.set_cksum();
    tar.append(&file, token.as_bytes())?;
    tar.into_inner()
}
