//! The cluster's long-running processes: each started in a session of its own so that it
//! outlives xtask, found again by its pid file, and stopped with what it left behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{CLUSTER, RUN, quiet, wait_for};

/// A process of the cluster: started in a session of its own (`setsid`) so that it outlives
/// xtask and its children can be signalled as a group; its pid in `/run/orgo-k8s/NAME.pid`, its
/// output appended to `logs/NAME.log`.
pub struct Daemon {
    pub name: String,
    /// The executable's file name, checked against the pid's command line so that a reused pid
    /// is not taken for the daemon.
    program: &'static str,
}

impl Daemon {
    pub fn new(name: impl Into<String>, program: &'static str) -> Daemon {
        Daemon {
            name: name.into(),
            program,
        }
    }

    fn pid_file(&self) -> PathBuf {
        Path::new(RUN).join(format!("{}.pid", self.name))
    }

    pub fn log(&self) -> PathBuf {
        Path::new(CLUSTER).join("logs").join(format!("{}.log", self.name))
    }

    /// The pid, if the daemon runs.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        self.is(pid).then_some(pid)
    }

    fn is(&self, pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The state follows the parenthesised command name; a zombie has exited.
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        !zombie && Path::new(&*String::from_utf8_lossy(argv0)).file_name() == Some(self.program.as_ref())
    }

    /// Starts `program` with `args`, in the network namespace `netns` if given, and waits until
    /// it has replaced `setsid` (and `nsenter`) or failed.
    pub fn start(&self, netns: Option<&str>, program: &Path, args: &[String]) -> Result<()> {
        std::fs::create_dir_all(RUN)?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .with_context(|| format!("cannot open {}", self.log().display()))?;
        writeln!(log, "xtask: starting {} {}", program.display(), args.join(" "))?;
        let mut command = Command::new("setsid");
        if let Some(netns) = netns {
            // Not `ip netns exec`, which remounts /sys and hides the cgroup hierarchies.
            command.args(["nsenter", &format!("--net=/run/netns/{netns}")]);
        }
        let mut child = command
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        std::fs::write(self.pid_file(), format!("{}\n", child.id()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.is(child.id()) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited at once ({status}): see {}",
                    self.name,
                    self.log().display()
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not start: see {}", self.name, self.log().display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("xtask: started {} (pid {})", self.name, child.id());
        Ok(())
    }

    /// SIGTERM, up to 30 s for it to exit, then SIGKILL to its whole process group, for any
    /// children it left behind.
    pub fn stop(&self) -> Result<()> {
        let Some(pid) = self.pid() else {
            let _ = std::fs::remove_file(self.pid_file());
            return Ok(());
        };
        quiet("kill", &["-s", "TERM", &pid.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        quiet("kill", &["-s", "KILL", "--", &format!("-{pid}")]);
        wait_for(&format!("{} to exit", self.name), Duration::from_secs(10), || {
            self.pid().is_none()
        })?;
        std::fs::remove_file(self.pid_file())?;
        eprintln!("xtask: stopped {}", self.name);
        Ok(())
    }
}
