//! The embedded default runtime: each desktop is an `orgo-agent --spawn-xvfb` process tree in
//! bubblewrap, contained as `sandbox` says (by default an unprivileged user namespace with an
//! allow-listed view of the system, its own network behind slirp4netns and a seccomp filter),
//! with its own home (`/home/user`), `/tmp` and run directory under the gateway's data dir
//! (kept across stop/start). The agent's socket is in the run directory. Memory, CPU and pids
//! limits come from cgroups where the machine has them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::cgroup::{Cgroups, Groups};
use super::sandbox::{Network, Sandbox, sandbox_pid};
use crate::config::LocalSandbox;
use orgo_proto::connect::Target;

use super::{DesktopSpec, Runtime, agent_answers};
use crate::error::ApiError;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct LocalRuntime {
    data_dir: PathBuf,
    agent_bin: PathBuf,
    cgroups: Cgroups,
    sandbox: Sandbox,
    running: Mutex<HashMap<String, Running>>,
}

/// A started desktop: its bubblewrap process, the groups that limit it and its network.
struct Running {
    child: Child,
    groups: Groups,
    _network: Option<Network>,
}

impl LocalRuntime {
    /// Refuses (with what to install or allow) when the machine cannot contain desktops as
    /// `sandbox` asks.
    pub fn new(data_dir: &Path, agent_bin: PathBuf, sandbox: LocalSandbox) -> anyhow::Result<Self> {
        let data_dir = std::fs::canonicalize(data_dir)?;
        let sandbox = Sandbox::prepare(&data_dir, sandbox)?;
        let cgroups = Cgroups::detect();
        let ids: Vec<String> = std::fs::read_dir(data_dir.join("desktops"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        cgroups.sweep(ids.iter().map(String::as_str));
        match &cgroups {
            Cgroups::Unavailable(why) => {
                tracing::warn!(reason = %why, "cgroups unavailable: desktops run without memory, CPU and pids limits")
            }
            found => tracing::info!(cgroups = ?found, "desktops get memory, CPU and pids limits"),
        }
        Ok(LocalRuntime {
            data_dir,
            agent_bin,
            cgroups,
            sandbox,
            running: Mutex::new(HashMap::new()),
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("desktops").join(id)
    }

    pub fn socket(&self, id: &str) -> PathBuf {
        self.dir(id).join("run").join("agent.sock")
    }

    /// The bubblewrap command of a desktop, behind a gate: a shell holds it until a line
    /// arrives on its stdin, so the process can be put into its cgroups before it starts
    /// anything.
    fn command(&self, spec: &DesktopSpec) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", self.sandbox.gate_script(), "sh"])
            .arg(self.sandbox.dir())
            .arg("bwrap")
            .args(self.sandbox.args(&self.dir(&spec.id), &self.agent_bin))
            .arg("/run/orgo-agent")
            .args(["--spawn-xvfb", &format!("{}x{}x24", spec.width, spec.height)])
            .args(["--display", ":1", "--wm", "openbox", "--home", "/home/user"])
            .args(["--listen", "unix:///run/orgo/agent.sock"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// Host pids of `root`'s descendants.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let name = stat.split(['(', ')']).nth(1).unwrap_or("").to_string();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid, name));
            }
        }
    }
    let mut found = vec![root];
    let mut out = Vec::new();
    while let Some(p) = found.pop() {
        for (pid, ppid, name) in &parent_of {
            if *ppid == p {
                found.push(*pid);
                out.push((*pid, name.clone()));
            }
        }
    }
    out
}

/// Stops a desktop and removes its cgroups.
async fn stop_running(running: Running) {
    stop_child(running.child).await;
    running.groups.remove().await;
}

async fn stop_child(mut child: Child) {
    // SIGTERM to the agent lets it stop Xvfb cleanly (no stale lock); bwrap then exits with it.
    if let Some(pid) = child.id() {
        for (p, name) in descendants(pid) {
            if name == "orgo-agent" {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

#[tonic::async_trait]
impl Runtime for LocalRuntime {
    async fn start(&self, spec: &DesktopSpec) -> Result<Target, ApiError> {
        let dir = self.dir(&spec.id);
        for sub in ["home", "tmp", "run"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| ApiError::Internal(format!("desktop dir: {e}")))?;
        }
        // The previous run is gone entirely before its files are touched: a dying X server
        // removes its lock and socket on exit, which would pull them from under the new one.
        let mut running = self.running.lock().await;
        if let Some(old) = running.remove(&spec.id) {
            stop_running(old).await;
        }
        // A desktop killed hard leaves X's lock behind, and Xvfb would refuse display :1.
        let _ = std::fs::remove_file(dir.join("tmp/.X1-lock"));
        let _ = std::fs::remove_file(dir.join("tmp/.X11-unix/X1"));
        let socket = self.socket(&spec.id);
        let _ = std::fs::remove_file(&socket);
        let target = Target::Unix(socket.clone());
        // Without groups (none on this machine, or a failure) the desktop runs unlimited.
        let groups = match self.cgroups.create(&spec.id, spec.ram_gb, spec.cpu) {
            Ok(g) => g,
            Err(e) => {
                if !matches!(self.cgroups, Cgroups::Unavailable(_)) {
                    tracing::warn!(error = %e, desktop = %spec.id, "cannot limit this desktop");
                }
                Groups::default()
            }
        };
        if self.sandbox.mode() == LocalSandbox::None {
            tracing::warn!(desktop = %spec.id, "local_sandbox = \"none\": this desktop runs unsandboxed, as the gateway's user with the host's files and network");
        }
        let mut child = self
            .command(spec)
            .spawn()
            .map_err(|e| ApiError::Internal(format!("cannot start bubblewrap: {e}")))?;
        if let Some(pid) = child.id()
            && let Err(e) = groups.join(pid)
        {
            tracing::warn!(error = %e, desktop = %spec.id, "cannot put the desktop in its cgroups");
        }
        // Open the gate: bubblewrap starts, inside the groups.
        let mut gate = child.stdin.take();
        if let Some(gate) = gate.as_mut() {
            let _ = gate.write_all(b"\n").await;
        }
        let sandbox_pid = match (self.sandbox.mode(), child.stdout.take()) {
            (LocalSandbox::Strict, Some(info)) => {
                // The sandbox waits on the gate's pipe until its user is mapped.
                let released = async {
                    let pid = sandbox_pid(info).await?;
                    Sandbox::map_user(pid)?;
                    let exited = || ApiError::Internal("bubblewrap exited during start-up".into());
                    let gate = gate.as_mut().ok_or_else(exited)?;
                    gate.write_all(b"1").await.map_err(|_| exited())?;
                    Ok::<_, ApiError>(pid)
                };
                match released.await {
                    Ok(pid) => Some(pid),
                    Err(e) => {
                        stop_running(Running {
                            child,
                            groups,
                            _network: None,
                        })
                        .await;
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        drop(gate);
        let mut network = None;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ApiError::Internal(format!(
                    "desktop exited during start-up: {status}"
                )));
            }
            // The network is connected as soon as bubblewrap is done (at the latest when the
            // agent's socket shows it), and comes up while the agent starts; a call never finds
            // it down.
            if let Some(pid) = sandbox_pid.filter(|_| network.is_none())
                && (Sandbox::is_set_up(pid) || socket.exists())
            {
                match self.sandbox.connect_network(pid) {
                    Ok(connected) => {
                        // The desktop's network stack counts against its limits too.
                        if let Err(e) = connected.0.pid().map_or(Ok(()), |p| groups.join(p)) {
                            tracing::warn!(error = %e, desktop = %spec.id, "cannot put slirp4netns in the desktop's cgroups");
                        }
                        network = Some(connected);
                    }
                    Err(e) => {
                        stop_running(Running {
                            child,
                            groups,
                            _network: None,
                        })
                        .await;
                        return Err(e);
                    }
                }
            }
            if socket.exists() && agent_answers(&target).await {
                let up = match network.as_mut() {
                    Some((_, ready)) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        tokio::time::timeout(left, ready.wait())
                            .await
                            .unwrap_or_else(|_| {
                                Err(ApiError::Internal(
                                    "the desktop's network did not come up in time".into(),
                                ))
                            })
                    }
                    None => Ok(()),
                };
                let network = network.map(|(n, _)| n);
                if let Err(e) = up {
                    stop_running(Running {
                        child,
                        groups,
                        _network: network,
                    })
                    .await;
                    return Err(e);
                }
                running.insert(
                    spec.id.clone(),
                    Running {
                        child,
                        groups,
                        _network: network,
                    },
                );
                return Ok(target);
            }
            if Instant::now() > deadline {
                stop_running(Running {
                    child,
                    groups,
                    _network: network.map(|(n, _)| n),
                })
                .await;
                return Err(ApiError::Internal("desktop did not become ready in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(&self, id: &str) -> Result<(), ApiError> {
        let desktop = self.running.lock().await.remove(id);
        if let Some(desktop) = desktop {
            stop_running(desktop).await;
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), ApiError> {
        self.stop(id).await?;
        match std::fs::remove_dir_all(self.dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ApiError::Internal(format!("cannot delete desktop files: {e}"))),
        }
    }

    /// Local desktops end with the gateway that started them (bubblewrap dies with its parent),
    /// so there is never one to take over.
    async fn adopt(&self, _known: &[String]) -> Vec<(String, Target)> {
        Vec::new()
    }

    fn outlives_gateway(&self) -> bool {
        false
    }

    async fn is_alive(&self, id: &str) -> bool {
        let mut running = self.running.lock().await;
        match running.get_mut(id) {
            Some(desktop) => matches!(desktop.child.try_wait(), Ok(None)),
            None => false,
        }
    }
}
