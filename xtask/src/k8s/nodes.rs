//! The test cluster's two nodes: each a network namespace joined to the host by a bridge, with
//! its own Docker engine and a kubelet (dockershim) in it, its own cgroup root, and the pause and
//! desktop images loaded. Also the host side: the bridge, the routes to each node's Pod subnet,
//! and the kernel settings the kubelets change.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::build::{Binaries, path};
use super::daemon::Daemon;
use super::{CLUSTER, HOST_IP, RUN, pki, quiet};
use crate::system::{output, run};

/// The host's end of the node network, and the host side of each node's veth pair, on it.
const BRIDGE: &str = "orgo-k8s0";
/// The sandbox image name kubelet 1.20 asks for by default; it is imported, never pulled.
const PAUSE: &str = "k8s.gcr.io/pause:3.2";
/// The settings kubelet 1.20 sets on the host when it starts (it cannot be told not to, only to
/// fail instead), saved before the first kubelet starts and put back by `down`.
const KERNEL_TUNABLES: &[&str] = &[
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/kernel/panic",
    "/proc/sys/kernel/panic_on_oops",
];

pub struct Node {
    pub name: &'static str,
    index: u8,
}

pub const NODES: [Node; 2] = [
    Node {
        name: "node1",
        index: 1,
    },
    Node {
        name: "node2",
        index: 2,
    },
];

impl Node {
    fn netns(&self) -> String {
        format!("orgo-k8s-{}", self.name)
    }

    pub fn ip(&self) -> String {
        format!("10.250.0.{}", 10 + self.index)
    }

    /// The node's Pod subnet: its engine's docker0, routed from the host through the node.
    fn subnet(&self) -> String {
        format!("10.251.{}.0/24", self.index)
    }

    fn dir(&self) -> PathBuf {
        Path::new(CLUSTER).join(self.name)
    }

    fn run_dir(&self) -> PathBuf {
        Path::new(RUN).join(self.name)
    }

    fn socket(&self) -> String {
        format!("unix://{}/docker.sock", self.run_dir().display())
    }

    /// The cgroup (in every hierarchy) the node's Pods and containers live under.
    fn cgroup(&self) -> String {
        format!("orgo-k8s-{}", self.name)
    }

    pub fn dockerd(&self) -> Daemon {
        Daemon::new(format!("{}-dockerd", self.name), "dockerd")
    }

    pub fn kubelet(&self) -> Daemon {
        Daemon::new(format!("{}-kubelet", self.name), "kubelet")
    }

    /// Whether the node's engine answers on its socket.
    pub fn engine_answers(&self) -> bool {
        self.docker(&["version", "--format", "{{.Server.Version}}"])
            .is_ok()
    }

    fn docker(&self, args: &[&str]) -> Result<String> {
        let socket = self.socket();
        let mut all = vec!["-H", socket.as_str()];
        all.extend(args);
        output("docker", &all)
    }

    /// (Re)starts the node: the engine only when it does not answer (killing what its
    /// predecessor left in the node's cgroup), the images it lacks, and the kubelet.
    pub fn start(&self, binaries: &Binaries) -> Result<()> {
        self.kubelet().stop()?;
        if !(self.dockerd().pid().is_some() && self.engine_answers()) {
            self.dockerd().stop()?;
            remove_cgroup(&self.cgroup())?;
            self.start_engine()?;
        }
        self.prepare_engine(binaries)?;
        self.start_kubelet(binaries)
    }

    fn start_engine(&self) -> Result<()> {
        let run_dir = self.run_dir();
        std::fs::create_dir_all(&run_dir)?;
        // A killed engine leaves its pid file, and a new one refuses to start beside it.
        let _ = std::fs::remove_file(run_dir.join("docker.pid"));
        create_cgroup(&self.cgroup())?;
        let config = self.dir().join("docker.json");
        let wrapper = Path::new(CLUSTER).join("runc-orgo");
        std::fs::write(&wrapper, RUNC_WRAPPER)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
        // Its own config file, not flags: the machine's /etc/docker/daemon.json would otherwise
        // be read too and collide with them. overlay2 works in the namespace (the host engine's
        // fuse-overlayfs is that engine's own choice); vfs would copy the image per container.
        // "icc": false so that at least Pods on one node cannot reach each other (nothing here
        // enforces NetworkPolicy).
        std::fs::write(
            &config,
            format!(
                r#"{{
  "data-root": "{dir}/docker",
  "exec-root": "{run}/exec",
  "pidfile": "{run}/docker.pid",
  "hosts": ["{socket}"],
  "bip": "10.251.{index}.1/24",
  "icc": false,
  "cgroup-parent": "/{cgroup}",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "storage-driver": "overlay2",
  "oom-score-adjust": 0,
  "log-driver": "json-file",
  "log-opts": {{"max-size": "10m", "max-file": "3"}},
  "default-runtime": "orgo-runc",
  "runtimes": {{"orgo-runc": {{"path": "{wrapper}"}}}}
}}
"#,
                dir = self.dir().display(),
                run = run_dir.display(),
                socket = self.socket(),
                index = self.index,
                cgroup = self.cgroup(),
                wrapper = wrapper.display(),
            ),
        )?;
        self.dockerd().start(
            Some(&self.netns()),
            Path::new("dockerd"),
            &["--config-file".into(), config.display().to_string()],
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.engine_answers() {
            if self.dockerd().pid().is_none() || Instant::now() > deadline {
                bail!(
                    "{}'s Docker engine did not start: see {}",
                    self.name,
                    self.dockerd().log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let driver = self.docker(&["info", "--format", "{{.Driver}}"])?;
        eprintln!(
            "xtask: {}: Docker engine up (storage driver {})",
            self.name,
            driver.trim()
        );
        Ok(())
    }

    /// What the engine needs before the kubelet uses it: the rule letting the host reach the
    /// Pods (Docker's FORWARD chain drops traffic into docker0 from outside), the pause image
    /// and the desktop image.
    fn prepare_engine(&self, binaries: &Binaries) -> Result<()> {
        let netns = format!("--net=/run/netns/{}", self.netns());
        let rule = ["DOCKER-USER", "-i", "eth0", "-o", "docker0", "-j", "ACCEPT"];
        let check = [&[netns.as_str(), "iptables", "-C"][..], &rule].concat();
        if !quiet("nsenter", &check) {
            run(
                "nsenter",
                &[&[netns.as_str(), "iptables", "-I"][..], &rule].concat(),
            )?;
        }
        if self.docker(&["image", "inspect", PAUSE]).is_err() {
            let tar = self.dir().join("pause.tar");
            let bin = binaries.bin("pause");
            run(
                "tar",
                &[
                    "-cf",
                    path(&tar)?,
                    "-C",
                    path(bin.parent().context("no bin dir")?)?,
                    "pause",
                ],
            )?;
            let socket = self.socket();
            run(
                "docker",
                &[
                    "-H",
                    &socket,
                    "import",
                    "--change",
                    "ENTRYPOINT [\"/pause\"]",
                    path(&tar)?,
                    PAUSE,
                ],
            )?;
            std::fs::remove_file(&tar)?;
        }
        self.load_desktop_image()
    }

    /// Copies the host engine's desktop image into the node's unless it has the same image.
    pub fn load_desktop_image(&self) -> Result<()> {
        let tag = super::desktop_image();
        let id = |answer: Result<String>| answer.map(|s| s.trim().to_string()).ok();
        let host = id(output("docker", &["image", "inspect", "-f", "{{.Id}}", &tag]))
            .context("the host engine has no desktop image")?;
        if id(self.docker(&["image", "inspect", "-f", "{{.Id}}", &tag])) == Some(host) {
            return Ok(());
        }
        eprintln!("xtask: {}: loading {tag}", self.name);
        let started = Instant::now();
        let mut save = Command::new("docker")
            .args(["save", &tag])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run docker save")?;
        let load = Command::new("docker")
            .args(["-H", &self.socket(), "load", "-q"])
            .stdin(save.stdout.take().context("no stdout")?)
            .stdout(Stdio::null())
            .status()
            .context("cannot run docker load")?;
        let saved = save.wait()?;
        if !saved.success() || !load.success() {
            bail!("docker save | docker load into {} failed", self.name);
        }
        // The image the tag named before, unless a container still uses it.
        self.docker(&["image", "prune", "-f"])?;
        eprintln!(
            "xtask: {}: loaded {tag} in {:.0} s",
            self.name,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn start_kubelet(&self, binaries: &Binaries) -> Result<()> {
        save_kernel_tunables()?;
        let dir = self.dir();
        let run_dir = self.run_dir();
        let dir_flag = |flag: &str, sub: &str| format!("--{flag}={}", dir.join(sub).display());
        let args = vec![
            format!("--kubeconfig={}", dir.join("kubeconfig").display()),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={}", self.ip()),
            "--container-runtime=docker".into(),
            format!("--docker-endpoint={}", self.socket()),
            // Not the default /var/run/dockershim.sock, which the two kubelets would share.
            format!(
                "--container-runtime-endpoint=unix://{}/dockershim.sock",
                run_dir.display()
            ),
            format!("--pod-infra-container-image={PAUSE}"),
            dir_flag("root-dir", "kubelet"),
            dir_flag("cert-dir", "kubelet-pki"),
            dir_flag("experimental-dockershim-root-directory", "dockershim"),
            format!("--cgroup-root=/{}", self.cgroup()),
            "--cgroup-driver=cgroupfs".into(),
            // Without these there is no Pod cgroup and so no pids limit.
            "--cgroups-per-qos=true".into(),
            "--enforce-node-allocatable=pods".into(),
            "--pod-max-pids=1024".into(),
            "--make-iptables-util-chains=false".into(),
            "--fail-swap-on=false".into(),
            // Images cannot be pulled back here: never collect them.
            "--image-gc-high-threshold=100".into(),
            // No disk thresholds at all (a threshold left out of the flag is none, not its
            // default): the machine's disk is shared, its free space is set from outside and has
            // dipped under even 1 % of its size (2.5 GB) for a while, and a node that saw that
            // keeps its disk-pressure taint for minutes and refuses every Pod. A disk truly full
            // fails the tests anyway, with the error that says so.
            "--eviction-hard=memory.available<100Mi".into(),
            format!("--client-ca-file={}", pki::file("ca.crt")),
            "--anonymous-auth=false".into(),
            "--authorization-mode=AlwaysAllow".into(),
            "--read-only-port=0".into(),
        ];
        self.kubelet()
            .start(Some(&self.netns()), &binaries.bin("kubelet"), &args)
    }

    /// Stops the kubelet, every container and the engine, and removes the node's cgroup and
    /// the kubelet's state; the engine's images stay for the next `up`.
    pub fn stop(&self) -> Result<()> {
        self.kubelet().stop()?;
        if self.engine_answers() {
            let ids = self.docker(&["ps", "-aq"])?;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                self.docker(&[&["rm", "-f"][..], &ids].concat())?;
            }
        }
        self.dockerd().stop()?;
        remove_cgroup(&self.cgroup())?;
        Ok(())
    }

    /// The kubelet's and dockershim's state, once nothing is mounted under it any more.
    pub fn remove_state(&self) -> Result<()> {
        for sub in ["kubelet", "kubelet-pki", "dockershim"] {
            let dir = self.dir().join(sub);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
        if self.run_dir().exists() {
            std::fs::remove_dir_all(self.run_dir())?;
        }
        Ok(())
    }
}

/// Runs as the node engines' default runtime. Root here lacks CAP_SYS_RESOURCE, so runc cannot
/// set the negative oom_score_adj the kubelet gives pause containers (-998) and Guaranteed Pods
/// and fails ("can't get final child's PID from pipe: EOF"); clamping it to 0 in the bundle's
/// config.json changes only which processes the OOM killer prefers. Test harness only.
const RUNC_WRAPPER: &str = r#"#!/bin/sh
bundle=
previous=
for arg in "$@"; do
  case "$previous" in --bundle|-b) bundle=$arg ;; esac
  case "$arg" in --bundle=*) bundle=${arg#--bundle=} ;; esac
  previous=$arg
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  sed -i -E 's/"oomScoreAdj":[[:space:]]*-[0-9]+/"oomScoreAdj":0/g' "$bundle/config.json"
fi
exec runc "$@"
"#;

/// The bridge, each node's namespace and veth pair, and the host's routes to the Pod subnets;
/// what already exists is kept.
pub fn network_up() -> Result<()> {
    if !quiet("ip", &["link", "show", BRIDGE]) {
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    }
    run(
        "ip",
        &["addr", "replace", &format!("{HOST_IP}/24"), "dev", BRIDGE],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    for node in &NODES {
        let netns = node.netns();
        let veth = format!("ok8s-{}", node.name);
        if !Path::new("/run/netns").join(&netns).exists() {
            run("ip", &["netns", "add", &netns])?;
        }
        if !quiet("ip", &["link", "show", &veth]) {
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
                ],
            )?;
        }
        run("ip", &["link", "set", &veth, "master", BRIDGE, "up"])?;
        let address = format!("{}/24", node.ip());
        run("ip", &["-n", &netns, "addr", "replace", &address, "dev", "eth0"])?;
        run("ip", &["-n", &netns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", &netns, "route", "replace", "default", "via", HOST_IP],
        )?;
        run("ip", &["route", "replace", &node.subnet(), "via", &node.ip()])?;
    }
    Ok(())
}

/// Removes the routes, namespaces (and with them the veth pairs) and the bridge.
pub fn network_down() {
    for node in &NODES {
        quiet("ip", &["route", "del", &node.subnet()]);
        quiet("ip", &["netns", "del", &node.netns()]);
    }
    quiet("ip", &["link", "del", BRIDGE]);
}

/// The node's cgroup in every hierarchy (kubelet refuses a `--cgroup-root` that is missing).
fn create_cgroup(name: &str) -> Result<()> {
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")? {
        let hierarchy = hierarchy?.path();
        let dir = hierarchy.join(name);
        if !hierarchy.is_dir() || dir.exists() {
            continue;
        }
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // A new cpuset cgroup has no CPUs and no memory nodes until given its parent's.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(hierarchy.join(file)) {
                std::fs::write(dir.join(file), value.trim())?;
            }
        }
    }
    Ok(())
}

/// Kills what is left in the node's cgroups (containers of an engine that was killed) and
/// removes them, deepest first.
fn remove_cgroup(name: &str) -> Result<()> {
    let mut dirs = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")? {
        collect_dirs(&hierarchy?.path().join(name), &mut dirs);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pids: Vec<String> = dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| s.split_whitespace().map(String::from).collect::<Vec<_>>())
            .collect();
        pids.sort();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} in cgroup {name} would not die");
        }
        let mut args = vec!["-s".to_string(), "KILL".into(), "--".into()];
        args.extend(pids);
        quiet("kill", &args.iter().map(String::as_str).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(100));
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        std::fs::remove_dir(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}

fn collect_dirs(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    into.push(dir.to_path_buf());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), into);
        }
    }
}

fn tunables_file() -> PathBuf {
    Path::new(CLUSTER).join("kernel-tunables")
}

fn save_kernel_tunables() -> Result<()> {
    if tunables_file().exists() {
        return Ok(());
    }
    let mut saved = String::new();
    for file in KERNEL_TUNABLES {
        let value = std::fs::read_to_string(file)?;
        saved.push_str(&format!("{file} {}\n", value.trim()));
    }
    std::fs::write(tunables_file(), saved)?;
    Ok(())
}

/// Puts back the settings the kubelets changed, once they are stopped.
pub fn restore_kernel_tunables() -> Result<()> {
    let Ok(saved) = std::fs::read_to_string(tunables_file()) else {
        return Ok(());
    };
    for line in saved.lines() {
        if let Some((file, value)) = line.split_once(' ') {
            std::fs::write(file, value).with_context(|| format!("cannot restore {file}"))?;
        }
    }
    std::fs::remove_file(tunables_file())?;
    Ok(())
}
