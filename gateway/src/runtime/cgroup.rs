//! Resource limits for local desktops through cgroups, v2 (unified) or v1 (one hierarchy per
//! controller), whichever the machine has: memory, CPU quota and a pids cap per desktop, in a
//! group `orgo/<desktop id>`, and where the machine has the cpuset controller, the CPUs it runs
//! on (so `nproc` inside says its vcpus). Where neither can be written the runtime says so once
//! and runs desktops without limits.

use std::path::{Path, PathBuf};

use super::cpus;

/// Most processes one desktop may have: enough for a browser, not for a fork bomb.
pub const PIDS_MAX: u32 = 1024;
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
pub enum Cgroups {
    V2(PathBuf),
    V1(PathBuf),
    Unavailable(String),
}

/// The groups one desktop's processes are put in.
#[derive(Debug, Default, Clone)]
pub struct Groups {
    pub dirs: Vec<PathBuf>,
    /// Where the desktop sees each of `dirs`, read-only, as a container sees its own group:
    /// `/sys/fs/cgroup` (v2) or `/sys/fs/cgroup/<controller>` (v1). So a resize shows inside.
    pub seen_at: Vec<PathBuf>,
}

/// The v1 hierarchies a desktop always has a group in; `cpuset` is added where it exists.
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Cgroups {
    /// Finds the machine's cgroups and checks that groups can be made under them.
    pub fn detect() -> Cgroups {
        let root = Path::new("/sys/fs/cgroup");
        let found = if root.join("cgroup.controllers").exists() {
            let parent = root.join("orgo");
            // Controllers must be enabled for the children of each level.
            let enabled = mkdir(&parent)
                .and_then(|()| write(&root.join("cgroup.subtree_control"), "+memory +cpu +pids"))
                .and_then(|()| write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids"));
            // Optional, and alone so its absence fails nothing else.
            let _ = write(&root.join("cgroup.subtree_control"), "+cpuset")
                .and_then(|()| write(&parent.join("cgroup.subtree_control"), "+cpuset"));
            enabled.map(|()| Cgroups::V2(parent))
        } else if V1_CONTROLLERS.iter().all(|c| root.join(c).is_dir()) {
            let _ = prepare_v1_cpuset(root);
            V1_CONTROLLERS
                .iter()
                .try_for_each(|c| mkdir(&root.join(c).join("orgo")))
                .map(|()| Cgroups::V1(root.to_path_buf()))
        } else {
            Err("no cgroup v1 or v2 hierarchy under /sys/fs/cgroup".into())
        };
        found.unwrap_or_else(Cgroups::Unavailable)
    }

    /// Removes the groups of `ids` left empty by desktops that ended without being stopped (a
    /// crash, a killed gateway). Only a gateway's own desktops: another gateway on the machine
    /// may have just made a group it has not put its desktop into yet. Groups with processes in
    /// them cannot be removed and stay.
    pub fn sweep<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        for dir in ids.into_iter().flat_map(|id| self.dirs(id)) {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// A desktop's group directories with where the desktop sees each: one on v2; memory,
    /// cpu, pids (and cpuset) on v1.
    fn dirs_seen_at(&self, id: &str) -> Vec<(PathBuf, PathBuf)> {
        let inside = Path::new("/sys/fs/cgroup");
        match self {
            Cgroups::V2(parent) => vec![(parent.join(id), inside.to_path_buf())],
            Cgroups::V1(root) => V1_CONTROLLERS
                .iter()
                .copied()
                .chain(self.cpuset_cpus().map(|_| "cpuset"))
                .map(|c| (root.join(c).join("orgo").join(id), inside.join(c)))
                .collect(),
            Cgroups::Unavailable(_) => Vec::new(),
        }
    }

    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        self.dirs_seen_at(id).into_iter().map(|(dir, _)| dir).collect()
    }

    /// The CPUs desktops may be given, where the cpuset controller is there for their groups:
    /// the `orgo` group's (v2: effective) list.
    fn cpuset_cpus(&self) -> Option<Vec<u32>> {
        let list = match self {
            Cgroups::V2(parent) => {
                let control = std::fs::read_to_string(parent.join("cgroup.subtree_control")).ok()?;
                if !control.split_whitespace().any(|c| c == "cpuset") {
                    return None;
                }
                parent.join("cpuset.cpus.effective")
            }
            Cgroups::V1(root) => root.join("cpuset/orgo/cpuset.cpus"),
            Cgroups::Unavailable(_) => return None,
        };
        let cpus = cpus::parse_list(&std::fs::read_to_string(list).ok()?);
        (!cpus.is_empty()).then_some(cpus)
    }

    /// Where one limit of a desktop is written, for tests and operators to read back.
    pub fn limit_file(&self, id: &str, what: &str) -> Option<PathBuf> {
        let file = match (self, what) {
            (Cgroups::V2(p), "memory") => p.join(id).join("memory.max"),
            (Cgroups::V2(p), "cpu") => p.join(id).join("cpu.max"),
            (Cgroups::V2(p), "pids") => p.join(id).join("pids.max"),
            (Cgroups::V1(r), "memory") => r.join("memory/orgo").join(id).join("memory.limit_in_bytes"),
            (Cgroups::V1(r), "cpu") => r.join("cpu/orgo").join(id).join("cpu.cfs_quota_us"),
            (Cgroups::V1(r), "pids") => r.join("pids/orgo").join(id).join("pids.max"),
            (Cgroups::V2(p), "cpuset") => p.join(id).join("cpuset.cpus"),
            (Cgroups::V1(r), "cpuset") => r.join("cpuset/orgo").join(id).join("cpuset.cpus"),
            _ => return None,
        };
        Some(file)
    }

    /// Makes a desktop's groups with its limits.
    pub fn create(&self, id: &str, ram_gb: u32, cpu: f64) -> Result<Groups, String> {
        if let Cgroups::Unavailable(why) = self {
            return Err(why.clone());
        }
        let (dirs, seen_at): (Vec<_>, Vec<_>) = self.dirs_seen_at(id).into_iter().unzip();
        dirs.iter().try_for_each(|d| mkdir(d))?;
        if let Cgroups::V1(root) = self {
            write(&dirs[1].join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            // A v1 cpuset group starts with no memory nodes and takes no process until given some.
            if let Some(cpuset) = dirs.get(V1_CONTROLLERS.len()) {
                copy(&root.join("cpuset/orgo"), cpuset, "cpuset.mems")?;
            }
        }
        self.limit(id, ram_gb, cpu)?;
        write(&self.file(id, "pids")?, &PIDS_MAX.to_string())?;
        Ok(Groups { dirs, seen_at })
    }

    /// Sets the memory and CPU limits (and CPUs, where the machine has cpuset) of a desktop's
    /// existing groups: at create, and live on a resize, when the kernel applies them to the
    /// processes already inside (a cpuset change resets each one's affinity mask).
    pub fn limit(&self, id: &str, ram_gb: u32, cpu: f64) -> Result<(), String> {
        let memory = (u64::from(ram_gb) << 30).to_string();
        let quota = ((cpu * CPU_PERIOD_US as f64) as u64).max(1000);
        let cpu_value = match self {
            Cgroups::V2(_) => format!("{quota} {CPU_PERIOD_US}"),
            Cgroups::V1(_) => quota.to_string(),
            Cgroups::Unavailable(why) => return Err(why.clone()),
        };
        write(&self.file(id, "memory")?, &memory)?;
        write(&self.file(id, "cpu")?, &cpu_value)?;
        let chosen = self
            .cpuset_cpus()
            .and_then(|all| cpus::pick(id, cpu, &all, &self.placement(id)));
        match chosen {
            Some(list) => write(&self.file(id, "cpuset")?, &list),
            None => Ok(()),
        }
    }

    /// A desktop's CPUs now and, for every other desktop on the machine that has processes
    /// (whichever gateway made it), the CPUs it has: read from the groups beside its own.
    fn placement(&self, id: &str) -> cpus::Placement {
        let Some(own) = self.limit_file(id, "cpuset") else {
            return cpus::Placement::default();
        };
        let read = |file: &Path| cpus::parse_list(&std::fs::read_to_string(file).unwrap_or_default());
        let mut taken = std::collections::HashMap::new();
        let siblings = own.parent().and_then(Path::parent).map(std::fs::read_dir);
        for dir in siblings
            .into_iter()
            .flatten()
            .flatten()
            .flatten()
            .map(|e| e.path())
        {
            let busy = std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty());
            if busy && !dir.ends_with(id) {
                for cpu in read(&dir.join("cpuset.cpus")) {
                    *taken.entry(cpu).or_insert(0) += 1;
                }
            }
        }
        cpus::Placement {
            current: read(&own),
            taken,
        }
    }

    fn file(&self, id: &str, what: &str) -> Result<PathBuf, String> {
        self.limit_file(id, what)
            .ok_or_else(|| format!("no {what} limit on this machine"))
    }
}

/// Gives the v1 `orgo` cpuset group the machine's CPUs and memory nodes (it starts with none,
/// and its children can have only what it has).
fn prepare_v1_cpuset(root: &Path) -> Result<(), String> {
    let (machine, parent) = (root.join("cpuset"), root.join("cpuset/orgo"));
    mkdir(&parent)?;
    ["cpuset.cpus", "cpuset.mems"]
        .iter()
        .try_for_each(|file| copy(&machine, &parent, file))
}

/// Copies one of a group's settings to another group.
fn copy(from: &Path, to: &Path, file: &str) -> Result<(), String> {
    let value = std::fs::read_to_string(from.join(file))
        .map_err(|e| format!("{}: {e}", from.join(file).display()))?;
    write(&to.join(file), value.trim())
}

impl Groups {
    /// Each group directory with where the desktop sees it.
    pub fn views(&self) -> impl Iterator<Item = (&Path, &Path)> {
        self.dirs
            .iter()
            .map(PathBuf::as_path)
            .zip(self.seen_at.iter().map(PathBuf::as_path))
    }

    /// Moves a process (and so everything it starts afterwards) into the groups.
    pub fn join(&self, pid: u32) -> Result<(), String> {
        self.dirs
            .iter()
            .try_for_each(|d| write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// Whether the kernel's OOM killer has killed a process in the memory group (v2
    /// `memory.events`, v1 `memory.oom_control`: their `oom_kill` count).
    pub fn oom_killed(&self) -> bool {
        let Some(memory) = self.dirs.first() else {
            return false;
        };
        ["memory.events", "memory.oom_control"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(memory.join(f)).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("oom_kill "))
                    .map(|n| n.trim().parse::<u64>().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
            .any(|n| n > 0)
    }

    /// Kills whatever is still in the groups (a process that outlived its sandbox's exit would
    /// otherwise race the desktop's next start for its files) and removes them once empty.
    pub async fn remove(&self) {
        for dir in &self.dirs {
            for _ in 0..100 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|p| p.parse().ok()).collect();
                if pids.is_empty() && (std::fs::remove_dir(dir).is_ok() || !dir.exists()) {
                    break;
                }
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway starting beside another sweeps its own leftovers only: a group the other has
    /// just made, still empty because its desktop is not in it yet, stays.
    #[test]
    fn sweeping_leaves_other_gateways_groups() {
        let cgroups = Cgroups::detect();
        if let Cgroups::Unavailable(why) = &cgroups {
            eprintln!("skipped: {why}");
            return;
        }
        let (mine, theirs) = ("sweep-test-mine", "sweep-test-theirs");
        cgroups.create(mine, 1, 1.0).unwrap();
        cgroups.create(theirs, 1, 1.0).unwrap();
        cgroups.sweep([mine]);
        assert!(
            cgroups.dirs(mine).iter().all(|d| !d.exists()),
            "own leftover removed"
        );
        assert!(
            cgroups.dirs(theirs).iter().all(|d| d.exists()),
            "another's group kept"
        );
        cgroups.sweep([theirs]);
        assert!(cgroups.dirs(theirs).iter().all(|d| !d.exists()));
    }

    /// With the cpuset controller, a one-vcpu desktop goes to a CPU the fewest busy desktops
    /// have (a desktop with a process counts, on every CPU it has), and a process inside sees
    /// one CPU; a resize gives it more.
    #[tokio::test]
    async fn desktops_get_cpus_of_their_own_as_far_as_there_are() {
        let cgroups = Cgroups::detect();
        let Some(all) = cgroups.cpuset_cpus().filter(|all| all.len() >= 2) else {
            eprintln!("skipped: no cpuset controller with two CPUs here");
            return;
        };
        let (first, second) = ("cpuset-test-first", "cpuset-test-second");
        let held = cgroups.create(first, 1, 1.0).unwrap();
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        held.join(sleeper.id()).unwrap();
        let read = |id| {
            let list = cgroups.limit_file(id, "cpuset").unwrap();
            cpus::parse_list(&std::fs::read_to_string(list).unwrap())
        };
        let before = cgroups.placement(second);
        let taken = |cpu: &u32| before.taken.get(cpu).copied().unwrap_or(0);
        assert!(read(first).iter().all(|cpu| taken(cpu) >= 1), "{before:?}");
        let other = cgroups.create(second, 1, 1.0).unwrap();
        let least = all.iter().map(taken).min();
        assert_eq!(read(second).iter().map(taken).max(), least, "{before:?}");
        let nproc = |groups: &Groups| {
            let mut child = std::process::Command::new("sh")
                .args(["-c", "read go; nproc"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            groups.join(child.id()).unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"\n").unwrap();
            String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
        };
        assert_eq!(nproc(&other).trim(), "1");
        cgroups.limit(second, 1, all.len() as f64).unwrap();
        assert_eq!(nproc(&other).trim(), all.len().to_string());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        held.remove().await;
        other.remove().await;
    }
}
