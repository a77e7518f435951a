//! The embedded default runtime: each desktop is an `orgo-agent --spawn-xvfb` process tree in
//! bubblewrap, with its own mount, pid and ipc namespaces, its own home (`/home/user`), `/tmp`
//! and run directory under the gateway's data dir (kept across stop/start), the rest of the
//! host read-only and the data dir itself hidden. The agent's socket is in the run directory.
//! Memory, CPU and pids limits come from cgroups where the machine has them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::cgroup::{Cgroups, Groups};
use orgo_proto::connect::Target;

use super::{DesktopSpec, Runtime, agent_answers};
use crate::error::ApiError;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct LocalRuntime {
    data_dir: PathBuf,
    agent_bin: PathBuf,
    cgroups: Cgroups,
    running: Mutex<HashMap<String, Running>>,
}

/// A started desktop: its bubblewrap process and the groups that limit it.
struct Running {
    child: Child,
    groups: Groups,
}

impl LocalRuntime {
    pub fn new(data_dir: &Path, agent_bin: PathBuf) -> anyhow::Result<Self> {
        let data_dir = std::fs::canonicalize(data_dir)?;
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
            running: Mutex::new(HashMap::new()),
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("desktops").join(id)
    }

    pub fn socket(&self, id: &str) -> PathBuf {
        self.dir(id).join("run").join("agent.sock")
    }

    /// The bubblewrap command of a desktop. With `gated`, a shell holds it until a line arrives
    /// on its stdin, so the process can be put into its cgroups before it starts anything.
    fn command(&self, spec: &DesktopSpec, gated: bool) -> Command {
        let dir = self.dir(&spec.id);
        let mut cmd = if gated {
            let mut sh = Command::new("sh");
            sh.args(["-c", "read _ && exec \"$@\"", "sh", "bwrap"])
                .stdin(Stdio::piped());
            sh
        } else {
            let mut bwrap = Command::new("bwrap");
            bwrap.stdin(Stdio::null());
            bwrap
        };
        cmd.args([
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--new-session",
        ])
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
        .arg("--tmpfs")
        .arg(&self.data_dir)
        .args(["--tmpfs", "/run", "--tmpfs", "/home"])
        .arg("--bind")
        .arg(dir.join("run"))
        .arg("/run/orgo")
        .arg("--bind")
        .arg(dir.join("tmp"))
        .arg("/tmp")
        .arg("--bind")
        .arg(dir.join("home"))
        .arg("/home/user")
        .arg("--ro-bind")
        .arg(&self.agent_bin)
        .arg("/run/orgo-agent")
        .args([
            "--setenv",
            "HOME",
            "/home/user",
            "--setenv",
            "USER",
            "user",
            "--setenv",
            "DISPLAY",
            ":1",
            // A UTF-8 locale, as in the desktop images: a terminal in the C locale turns
            // every non-ASCII character typed into it into escapes.
            "--setenv",
            "LANG",
            "C.utf8",
        ])
        .args(["--chdir", "/home/user", "/run/orgo-agent"])
        .args(["--spawn-xvfb", &format!("{}x{}x24", spec.width, spec.height)])
        .args(["--display", ":1", "--wm", "openbox", "--home", "/home/user"])
        .args(["--listen", "unix:///run/orgo/agent.sock"])
        .env("RUST_LOG", "warn")
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
        let groups = match self.cgroups.create(&spec.id, spec.ram_gb, spec.cpu) {
            Ok(g) => Some(g),
            Err(e) => {
                if !matches!(self.cgroups, Cgroups::Unavailable(_)) {
                    tracing::warn!(error = %e, desktop = %spec.id, "cannot limit this desktop");
                }
                None
            }
        };
        let mut child = self
            .command(spec, groups.is_some())
            .spawn()
            .map_err(|e| ApiError::Internal(format!("cannot start bubblewrap: {e}")))?;
        if let (Some(groups), Some(pid)) = (&groups, child.id()) {
            if let Err(e) = groups.join(pid) {
                tracing::warn!(error = %e, desktop = %spec.id, "cannot put the desktop in its cgroups");
            }
            // Let the gate open: bubblewrap starts, inside the groups.
            if let Some(mut gate) = child.stdin.take() {
                use tokio::io::AsyncWriteExt;
                let _ = gate.write_all(b"\n").await;
            }
        }
        let running_desktop = |child| Running {
            child,
            groups: groups.unwrap_or_default(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ApiError::Internal(format!(
                    "desktop exited during start-up: {status}"
                )));
            }
            if socket.exists() && agent_answers(&target).await {
                break;
            }
            if Instant::now() > deadline {
                stop_running(running_desktop(child)).await;
                return Err(ApiError::Internal("desktop did not become ready in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        running.insert(spec.id.clone(), running_desktop(child));
        Ok(target)
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
