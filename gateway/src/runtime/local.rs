//! The embedded default runtime: each desktop is an `orgo-agent --spawn-xvfb` process tree in
//! bubblewrap, contained as `sandbox` says (by default an unprivileged user namespace with an
//! allow-listed view of the system, its own network behind slirp4netns and a seccomp filter),
//! with its own home (`/home/user`, a size-limited file system in an image under the gateway's
//! data dir, kept across stop/start, as `home` says) and `/tmp` and run dir in memory (gone at
//! stop). The agent's socket is in the run dir, which the gateway reaches through the sandbox's
//! root in /proc. Memory, CPU and pids limits come from cgroups where the machine has them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::Mutex;

use super::cgroup::{Cgroups, Groups};
use super::home::{Homes, Owner};
use super::sandbox::{Network, Sandbox, sandbox_pid};
use crate::config::LocalSandbox;
use orgo_proto::connect::Target;

use super::RuntimeError;
use super::{DesktopSpec, Found, Runtime, agent_answers};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// What of a desktop's own output reaches the gateway's log: lines a minute, bytes a line.
const LOG_LINES: u32 = 100;
const LOG_LINE_BYTES: u64 = 4096;

pub struct LocalRuntime {
    data_dir: PathBuf,
    agent_bin: PathBuf,
    cgroups: Cgroups,
    sandbox: Sandbox,
    homes: Homes,
    running: Mutex<HashMap<String, Running>>,
}

/// A started desktop: its bubblewrap process, the groups that limit it and its network.
struct Running {
    child: Child,
    groups: Groups,
    network: Option<Network>,
    /// The measuring of a checked home.
    watch: Option<tokio::task::JoinHandle<()>>,
}

impl LocalRuntime {
    /// Refuses (with what to install or allow) when the machine cannot contain desktops as
    /// `sandbox` asks, or cannot limit their homes.
    pub fn new(data_dir: &Path, agent_bin: PathBuf, sandbox: LocalSandbox) -> anyhow::Result<Self> {
        let data_dir = std::fs::canonicalize(data_dir)?;
        let sandbox = Sandbox::prepare(&data_dir, sandbox)?;
        let homes = Homes::detect(&data_dir)?;
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
            homes,
            running: Mutex::new(HashMap::new()),
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("desktops").join(id)
    }

    /// The bubblewrap command of a desktop, behind a gate: a shell holds it until a line
    /// arrives on its stdin, so the process can be put into its cgroups before it starts
    /// anything.
    fn command(&self, spec: &DesktopSpec, home: &Path, owner: Owner, groups: &Groups) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", self.sandbox.gate_script(), "sh"])
            .args([self.sandbox.dir(), home, &self.agent_bin])
            .args(self.sandbox.launcher(owner))
            .args(self.sandbox.args(home, &self.agent_bin, groups))
            .arg("/run/orgo-agent")
            .args(["--spawn-xvfb", &format!("{}x{}x24", spec.width, spec.height)])
            .args(["--display", ":1", "--wm", "openbox", "--home", "/home/user"])
            .args(["--listen", "unix:///run/orgo/agent.sock"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Takes a spawned desktop (in its cgroups, its home mounted) from its gate to an agent
    /// that answers: its user mapped (strict), its network connected, and answers where the
    /// agent listens.
    async fn bring_up(
        &self,
        desktop: &mut Running,
        spec: &DesktopSpec,
        owner: Owner,
    ) -> Result<Target, RuntimeError> {
        let exited = || RuntimeError::Failed("bubblewrap exited during start-up".into());
        // Open the gate: bubblewrap starts, inside the groups.
        let mut gate = desktop.child.stdin.take().ok_or_else(exited)?;
        gate.write_all(b"\n").await.map_err(|_| exited())?;
        let info = desktop.child.stdout.take().ok_or_else(exited)?;
        let pid = sandbox_pid(info).await?;
        if self.sandbox.mode() == LocalSandbox::Strict {
            // The sandbox waits on the gate's pipe until its user is mapped.
            Sandbox::map_user(pid, owner)?;
            gate.write_all(b"1").await.map_err(|_| exited())?;
        }
        drop(gate);
        let socket = Sandbox::agent_socket(pid);
        let target = Target::Unix(socket.clone());
        let mut ready = None;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = desktop.child.try_wait() {
                return Err(RuntimeError::Failed(format!(
                    "desktop exited during start-up: {status}"
                )));
            }
            // The network is connected as soon as bubblewrap is done (at the latest when the
            // agent's socket shows it), and comes up while the agent starts; a call never finds
            // it down.
            if self.sandbox.mode() == LocalSandbox::Strict
                && desktop.network.is_none()
                && (Sandbox::is_set_up(pid) || socket.exists())
            {
                let (network, up) = self.sandbox.connect_network(pid)?;
                // The desktop's network stack counts against its limits too.
                if let Err(e) = network.pid().map_or(Ok(()), |p| desktop.groups.join(p)) {
                    tracing::warn!(error = %e, desktop = %spec.id, "cannot put slirp4netns in the desktop's cgroups");
                }
                desktop.network = Some(network);
                ready = Some(up);
            }
            if socket.exists() && agent_answers(&target).await {
                if let Some(ready) = ready.as_mut() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::timeout(left, ready.wait())
                        .await
                        .unwrap_or_else(|_| {
                            Err(RuntimeError::Failed(
                                "the desktop's network did not come up in time".into(),
                            ))
                        })?;
                }
                return Ok(target);
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Failed(
                    "desktop did not become ready in time".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops a desktop, removes its cgroups and unmounts its home.
    async fn stop_running(&self, id: &str, running: Running) {
        if let Some(watch) = &running.watch {
            watch.abort();
        }
        stop_child(running.child).await;
        drop(running.network);
        running.groups.remove().await;
        self.homes.unmount(&self.dir(id)).await;
    }
}

/// Logs what a desktop's processes write to their stdout and stderr (the agent's warnings,
/// mostly), a line at a time with the desktop's id, escaped, at most `LOG_LINES` lines a minute
/// of at most `LOG_LINE_BYTES` each: a desktop may neither write into the gateway's log as it
/// likes nor flood it. Ends when the desktop's last process closes the pipe.
async fn forward_output(id: String, output: ChildStderr) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    let (mut window, mut logged, mut dropped) = (Instant::now(), 0, 0u64);
    loop {
        line.clear();
        // A longer line is logged in pieces.
        match (&mut reader)
            .take(LOG_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if window.elapsed() >= Duration::from_secs(60) {
            if dropped > 0 {
                tracing::warn!(desktop = %id, dropped, "a desktop wrote more output than the log takes; lines were dropped");
            }
            (window, logged, dropped) = (Instant::now(), 0, 0);
        }
        if logged < LOG_LINES {
            logged += 1;
            let text = String::from_utf8_lossy(&line);
            tracing::warn!(desktop = %id, output = ?text.trim_end(), "desktop output");
        } else {
            dropped += 1;
        }
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
    async fn start(&self, spec: &DesktopSpec) -> Result<Target, RuntimeError> {
        let dir = self.dir(&spec.id);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Failed(format!("desktop dir: {e}")))?;
        // The previous run is gone entirely, its home unmounted, before the home is mounted again.
        let mut running = self.running.lock().await;
        if let Some(old) = running.remove(&spec.id) {
            self.stop_running(&spec.id, old).await;
        }
        let owner = self.sandbox.owner(&dir)?;
        // Before /tmp and the run dir were tmpfs they were directories here.
        for legacy in ["tmp", "run"] {
            let _ = std::fs::remove_dir_all(dir.join(legacy));
        }
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
        let home = Homes::path(&dir);
        let mut child = match self.command(spec, &home, owner, &groups).spawn() {
            Ok(child) => child,
            Err(e) => {
                groups.remove().await;
                return Err(RuntimeError::Failed(format!("cannot start bubblewrap: {e}")));
            }
        };
        // While the home is mounted the desktop waits at its gate and joins its cgroups: the
        // first move into a cgroup v1 group waits ~10 ms for the kernel (an RCU grace period),
        // as long as a mount, so the two go side by side.
        let joining = child.id().map(|pid| {
            let groups = groups.clone();
            tokio::task::spawn_blocking(move || groups.join(pid))
        });
        let mounted = self.homes.mount(&dir, spec.disk_gb, owner).await;
        let joined = match joining {
            Some(joining) => joining.await.unwrap_or_else(|e| Err(e.to_string())),
            None => Ok(()),
        };
        if let Err(e) = joined {
            tracing::warn!(error = %e, desktop = %spec.id, "cannot put the desktop in its cgroups");
        }
        if let Err(e) = mounted {
            // Still at its gate: nothing inside has started.
            let _ = child.kill().await;
            groups.remove().await;
            self.homes.unmount(&dir).await;
            return Err(e);
        }
        if let Some(output) = child.stderr.take() {
            tokio::spawn(forward_output(spec.id.clone(), output));
        }
        let mut desktop = Running {
            child,
            groups,
            network: None,
            watch: None,
        };
        match self.bring_up(&mut desktop, spec, owner).await {
            Ok(target) => {
                let (id, limit, pid) = (spec.id.clone(), spec.disk_gb, desktop.child.id());
                desktop.watch = self.homes.watch(home, spec.disk_gb, move |used| {
                    tracing::warn!(desktop = %id, used_bytes = used, limit_gb = limit, "a desktop's home grew past its limit: stopped");
                    // bubblewrap's sandbox dies with it, and every process in it.
                    if let Some(pid) = pid {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
                    }
                });
                running.insert(spec.id.clone(), desktop);
                Ok(target)
            }
            Err(e) => {
                self.stop_running(&spec.id, desktop).await;
                Err(e)
            }
        }
    }

    async fn copy_home(&self, from: &str, to: &DesktopSpec) -> Result<(), RuntimeError> {
        self.homes.copy(&self.dir(from), &self.dir(&to.id)).await
    }

    async fn resize(&self, spec: &DesktopSpec) -> Result<(), RuntimeError> {
        if !self.running.lock().await.contains_key(&spec.id) {
            return Err(RuntimeError::Failed(format!(
                "desktop {} is not running here",
                spec.id
            )));
        }
        if let Cgroups::Unavailable(why) = &self.cgroups {
            return Err(RuntimeError::Unsupported(format!(
                "this machine gives desktops no cgroups to resize ({why})"
            )));
        }
        // The home grows at the next start (its image is grown, never shrunk, then).
        // The kernel refuses a memory limit below what the desktop uses now (cgroup v1: EBUSY).
        self.cgroups.limit(&spec.id, spec.ram_gb, spec.cpu).map_err(|e| {
            RuntimeError::Unsupported(format!(
                "the desktop's cgroup refused the new limits (less memory than it uses now?): {e}"
            ))
        })
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let desktop = self.running.lock().await.remove(id);
        if let Some(desktop) = desktop {
            self.stop_running(id, desktop).await;
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.stop(id).await?;
        // A home left mounted by a gateway that ended without stopping its desktops.
        self.homes.unmount(&self.dir(id)).await;
        match std::fs::remove_dir_all(self.dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Failed(format!("cannot delete desktop files: {e}"))),
        }
    }

    /// Local desktops end with the gateway that started them (bubblewrap dies with its parent),
    /// so there is never one to take over.
    async fn found(&self) -> Result<Vec<Found>, RuntimeError> {
        // Desktops are this process's children: none outlives a previous gateway.
        Ok(Vec::new())
    }

    fn outlives_gateway(&self) -> bool {
        false
    }

    async fn ended(&self, id: &str) -> Option<String> {
        let mut running = self.running.lock().await;
        let Some(desktop) = running.get_mut(id) else {
            return Some("it ended with the gateway that ran it".into());
        };
        match desktop.child.try_wait() {
            Ok(Some(status)) => Some(exit_reason(status, desktop.groups.oom_killed())),
            Ok(None) | Err(_) => None,
        }
    }
}

/// Why a desktop whose sandbox exited with `status` ended: out of memory when it was killed
/// (bubblewrap passes its child's SIGKILL on as 137) and its memory group saw an OOM kill.
fn exit_reason(status: std::process::ExitStatus, oom_killed: bool) -> String {
    use std::os::unix::process::ExitStatusExt;
    const SIGKILL: i32 = nix::sys::signal::Signal::SIGKILL as i32;
    let killed = status.signal() == Some(SIGKILL) || status.code() == Some(128 + SIGKILL);
    if killed && oom_killed {
        return super::OOM_KILLED.to_string();
    }
    match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 => format!("its processes were killed (signal {})", code - 128),
        (Some(code), _) => format!("its processes exited with status {code}"),
        (None, Some(signal)) => format!("its processes were killed (signal {signal})"),
        (None, None) => "its processes ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::exit_reason;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn a_kill_is_out_of_memory_only_when_the_memory_group_saw_one() {
        let killed = ExitStatus::from_raw(137 << 8);
        assert_eq!(exit_reason(killed, true), crate::runtime::OOM_KILLED);
        assert_eq!(
            exit_reason(ExitStatus::from_raw(9), true),
            crate::runtime::OOM_KILLED
        );
        assert_eq!(exit_reason(killed, false), "its processes were killed (signal 9)");
        assert_eq!(
            exit_reason(ExitStatus::from_raw(1 << 8), true),
            "its processes exited with status 1"
        );
        assert_eq!(
            exit_reason(ExitStatus::from_raw(15), false),
            "its processes were killed (signal 15)"
        );
    }
}
