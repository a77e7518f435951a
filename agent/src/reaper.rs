//! Orphans and process trees. The agent makes itself a child subreaper (and is init when it is
//! PID 1 in a container), so processes that a command left behind are re-parented to it when
//! their parent dies. Tokio waits for the children the agent spawned itself; this module reaps
//! every other zombie child, and never one of tokio's: spawning registers the pid under the same
//! lock the reaper holds while it looks, so a child cannot exit unregistered and be taken by
//! mistake. It also kills a run's whole tree on timeout ([`kill_tree`]). Both happen on a
//! thread of its own, made when the agent starts ([`Reaper`]): when a desktop is out of
//! processes (a fork bomb at its pids limit) no thread can be made for tokio's blocking pool,
//! and a kill that needed one panicked there and left the bomb running.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
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
fn proc_entries() -> Vec<(i32, i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, ppid) = parse_stat(&stat)?;
            Some((pid, ppid, state))
        })
        .collect()
}

/// Scans of /proc while freezing a tree. A stopped process cannot fork, so a tree settles
/// in a few; past this the killing goes on without waiting for it to settle.
const FREEZE_ROUNDS: usize = 64;
/// How long a killed tree gets to be gone (a process in uninterruptible sleep dies when it
/// wakes); past this, what is left is logged and left.
const DEATH_WAIT: Duration = Duration::from_secs(5);

/// The descendants of `root` among `entries` (`(pid, ppid, state)`), zombies excluded.
fn live_descendants(root: i32, entries: &[(i32, i32, char)]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<(i32, char)>> = HashMap::new();
    for &(pid, ppid, state) in entries {
        children.entry(ppid).or_default().push((pid, state));
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(parent) = next.pop() {
        for &(pid, state) in children.get(&parent).into_iter().flatten() {
            // A zombie has no children (they went to the subreaper when it died).
            if !matches!(state, 'Z' | 'X') {
                found.push(pid);
                next.push(pid);
            }
        }
    }
    found
}

/// Kills `root` and every process descended from it. `root` must be a child subreaper that
/// has not exited: then every orphan inside the tree (setsid'ed, double-forked, in another
/// process group) is re-parented to a process of the tree, never out of it, while `root`
/// lives. So: `root` is frozen (SIGSTOP), then its descendants as /proc shows them, scanning
/// again until a scan finds none not yet stopped (a stopped process cannot fork or react);
/// then the descendants are SIGKILLed, scanning and killing until none is alive; `root` goes
/// last. Processes outside the tree (those of earlier runs, now the agent's) are not touched.
/// Blocking, and bounded by `FREEZE_ROUNDS` and `DEATH_WAIT`.
pub fn kill_tree(root: i32) {
    let signal = |pid: i32, sig: Signal| {
        // Gone already, or not ours to signal: nothing more can be done about it.
        let _ = kill(Pid::from_raw(pid), sig);
    };
    signal(root, Signal::SIGSTOP);
    let mut frozen = HashSet::new();
    for _ in 0..FREEZE_ROUNDS {
        let fresh: Vec<i32> = live_descendants(root, &proc_entries())
            .into_iter()
            .filter(|pid| !frozen.contains(pid))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            signal(pid, Signal::SIGSTOP);
            frozen.insert(pid);
        }
    }
    let deadline = Instant::now() + DEATH_WAIT;
    loop {
        let alive = live_descendants(root, &proc_entries());
        if alive.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(?alive, "processes of a timed-out run did not die");
            break;
        }
        for pid in alive {
            signal(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(root, Signal::SIGKILL);
}

/// `(state, ppid)` from a /proc/PID/stat line; the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// What the reaper's thread is asked to do; `done` is told once it is done.
enum Job {
    Reap(Option<tokio::sync::oneshot::Sender<()>>),
    KillTree(i32, tokio::sync::oneshot::Sender<()>),
}

/// The reaper's thread: reaps orphans and kills timed-out runs' trees, one job at a time.
#[derive(Clone)]
pub struct Reaper {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Reaper {
    /// [`kill_tree`] on the reaper's thread; answers once it is done.
    pub async fn kill_tree(&self, root: i32) {
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.jobs.send(Job::KillTree(root, done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// [`Children::reap_orphans`] on the reaper's thread; answers once it is done.
    pub async fn reap_orphans(&self) {
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.jobs.send(Job::Reap(Some(done))).is_ok() {
            let _ = finished.await;
        }
    }
}

/// Makes this process the reaper of its descendants' orphans, starts the reaper's thread, and
/// has it reap on every SIGCHLD until the runtime stops.
pub fn start(children: Children) -> std::io::Result<Reaper> {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans go to init");
    }
    let (jobs, todo) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new().name("reaper".into()).spawn(move || {
        for job in todo {
            match job {
                Job::Reap(done) => {
                    children.reap_orphans();
                    done.map(|d| d.send(()));
                }
                Job::KillTree(root, done) => {
                    kill_tree(root);
                    let _ = done.send(());
                }
            }
        }
    })?;
    let reaper = Reaper { jobs };
    let on_sigchld = reaper.clone();
    tokio::spawn(async move {
        let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) else {
            tracing::warn!("cannot watch SIGCHLD; orphans are not reaped");
            return;
        };
        while sigchld.recv().await.is_some() {
            let _ = on_sigchld.jobs.send(Job::Reap(None));
        }
    });
    Ok(reaper)
}

#[cfg(test)]
mod tests {
    use super::{live_descendants, parse_stat};

    #[test]
    fn stat_lines_with_odd_command_names() {
        assert_eq!(parse_stat("42 (bash) S 1 42 42 0 -1"), Some(('S', 1)));
        assert_eq!(parse_stat("7 (a b) c)) Z 3 9 9 0"), Some(('Z', 3)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_are_the_whole_subtree_without_zombies() {
        let entries = [
            (1, 0, 'S'),
            (10, 1, 'S'), // the root
            (11, 10, 'S'),
            (12, 11, 'T'),
            (13, 10, 'Z'),
            (14, 12, 'R'),
            (20, 1, 'S'), // a sibling of the root: an earlier run's program
            (21, 20, 'S'),
        ];
        let mut found = live_descendants(10, &entries);
        found.sort();
        assert_eq!(found, [11, 12, 14]);
        assert!(live_descendants(14, &entries).is_empty());
    }
}
