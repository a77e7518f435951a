//! Orphan reaping. The agent makes itself a child subreaper (and is init when it is PID 1 in a
//! container), so processes that a command left behind are re-parented to it when their parent
//! dies. Tokio waits for the children the agent spawned itself; this module reaps every other
//! zombie child, and never one of tokio's: spawning registers the pid under the same lock the
//! reaper holds while it looks, so a child cannot exit unregistered and be taken by mistake.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// The pids that tokio waits for, shared by everything that spawns.
#[derive(Clone, Default)]
pub struct Children {
    owned: Arc<Mutex<HashSet<i32>>>,
}

impl Children {
    /// Spawns through `spawn` while the reaper cannot run, and registers the child's pid.
    pub fn spawn(
        &self,
        cmd: &mut tokio::process::Command,
    ) -> std::io::Result<(tokio::process::Child, Owned)> {
        let mut owned = self.owned.lock().expect("reaper lock");
        let child = cmd.spawn()?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        owned.insert(pid);
        Ok((
            child,
            Owned {
                pid,
                children: self.clone(),
            },
        ))
    }

    /// Reaps every zombie child of this process that tokio does not own. Answers how many.
    pub fn reap_orphans(&self) -> usize {
        let owned = self.owned.lock().expect("reaper lock");
        let me = std::process::id() as i32;
        let mut reaped = 0;
        for (pid, ppid, state) in proc_entries() {
            let orphan = ppid == me && state == 'Z' && !owned.contains(&pid);
            if orphan && waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok() {
                reaped += 1;
            }
        }
        reaped
    }
}

/// Unregisters its pid when the owner is done waiting for the child.
pub struct Owned {
    pid: i32,
    children: Children,
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.children.owned.lock().expect("reaper lock").remove(&self.pid);
    }
}

/// `(pid, ppid, state)` of every process visible in /proc.
pub fn proc_entries() -> Vec<(i32, i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, ppid, _pgid) = parse_stat(&stat)?;
            Some((pid, ppid, state))
        })
        .collect()
}

/// Pids of the processes in a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|(_, _, g)| g == pgid)
        })
        .collect()
}

/// `(state, ppid, pgid)` from a /proc/PID/stat line; the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, ppid, pgid))
}

/// Makes this process the reaper of its descendants' orphans, and runs the reaping loop on
/// every SIGCHLD until the runtime stops.
pub fn start(children: Children) {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans go to init");
    }
    tokio::spawn(async move {
        let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) else {
            tracing::warn!("cannot watch SIGCHLD; orphans are not reaped");
            return;
        };
        while sigchld.recv().await.is_some() {
            let c = children.clone();
            let _ = tokio::task::spawn_blocking(move || c.reap_orphans()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn stat_lines_with_odd_command_names() {
        assert_eq!(parse_stat("42 (bash) S 1 42 42 0 -1"), Some(('S', 1, 42)));
        assert_eq!(parse_stat("7 (a b) c)) Z 3 9 9 0"), Some(('Z', 3, 9)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
