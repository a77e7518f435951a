//! `cargo xtask k8s up|down|status`: a real two-node Kubernetes 1.20 cluster on this machine for
//! the gateway's Kubernetes runtime, built offline from Debian's packages (see `build`) and run as
//! plain processes: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on the host,
//! and two nodes, each a network namespace with its own Docker engine and kubelet (`nodes`).
//! State is under `/var/lib/orgo-k8s/cluster/` (pki/, logs/, kubeconfig, a directory per node,
//! volumes/); pid files under `/run/orgo-k8s/`. Every process outlives xtask.
//! Storage is `local` PersistentVolumes, recycled by `cargo xtask k8s recycle` (`storage`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::image::image;
use crate::system::{is_root, output};
use build::{Binaries, path};
use daemon::Daemon;
use nodes::{NODES, Node};

mod build;
mod daemon;
mod nodes;
mod pki;
mod storage;

pub const CLUSTER: &str = "/var/lib/orgo-k8s/cluster";
pub const KUBECONFIG: &str = "/var/lib/orgo-k8s/cluster/kubeconfig";
/// Pid files and the node engines' sockets and runtime state: gone after a reboot, as the
/// processes are.
pub const RUN: &str = "/run/orgo-k8s";
/// The host's address on the node network, where kubelets and Pods reach the API server.
pub const HOST_IP: &str = "10.250.0.1";

pub fn command(args: &[&str]) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask k8s runs as root (network namespaces, cgroups, Docker engines)");
    }
    match args {
        ["up"] => up(),
        ["down"] => down(),
        ["status"] => status(),
        ["recycle"] => storage::recycle(),
        other => bail!("unknown k8s command {other:?}: up, down, status or recycle"),
    }
}

pub fn desktop_image() -> String {
    format!("orgo/desktop-minimal:{}", env!("CARGO_PKG_VERSION"))
}

/// Starts what is not running. A healthy control plane with healthy nodes is only verified; a
/// healthy control plane has just its broken nodes restarted; anything else is stopped and
/// started afresh (the binaries, the credentials and the node engines' images are kept).
fn up() -> Result<()> {
    let started = Instant::now();
    let binaries = build::binaries()?;
    if !quiet("docker", &["image", "inspect", &desktop_image()]) {
        image("minimal")?;
    }
    for dir in [Path::new(CLUSTER).join("logs"), PathBuf::from(RUN)] {
        std::fs::create_dir_all(dir)?;
    }
    pki::ensure(&NODES.map(|n| n.name))?;
    let fresh = !control_plane_healthy(&binaries);
    if fresh {
        eprintln!("xtask: starting the cluster afresh");
        down()?;
        start_control_plane(&binaries)?;
    }
    let ready = ready_nodes(&binaries, "")?;
    let broken: Vec<&Node> = NODES
        .iter()
        .filter(|n| {
            !(ready.iter().any(|r| r == n.name)
                && n.kubelet().pid().is_some()
                && n.dockerd().pid().is_some()
                && n.engine_answers())
        })
        .collect();
    if broken.is_empty() {
        eprintln!("xtask: the control plane and both nodes are up");
    } else {
        let names: Vec<&str> = broken.iter().map(|n| n.name).collect();
        eprintln!("xtask: starting {}", names.join(", "));
        nodes::network_up()?;
    }
    // A node's kubelet is Ready again only once it has reported after its start.
    let since = output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])?;
    let nodes_started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = NODES
            .iter()
            .map(|node| {
                let (binaries, restart) = (&binaries, broken.iter().any(|b| b.name == node.name));
                scope.spawn(move || {
                    if restart {
                        node.start(binaries)
                    } else {
                        node.load_desktop_image()
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("node thread panicked"))?)
    })?;
    if !broken.is_empty() {
        wait_for("every node to be Ready", Duration::from_secs(120), || {
            ready_nodes(&binaries, since.trim())
                .is_ok_and(|r| broken.iter().all(|b| r.iter().any(|n| n == b.name)))
        })?;
        eprintln!(
            "xtask: nodes Ready in {:.1} s",
            nodes_started.elapsed().as_secs_f64()
        );
    }
    if fresh {
        wait_for("the default ServiceAccount", Duration::from_secs(60), || {
            kubectl(&binaries, &["get", "serviceaccount", "default", "-n", "default"]).is_ok()
        })?;
        storage::apply(&binaries)?;
    }
    let recycler = recycler();
    if recycler.pid().is_none() {
        let exe = std::env::current_exe().context("no path to xtask")?;
        recycler.start(None, &exe, &["k8s".into(), "recycle".into()])?;
    }
    eprintln!(
        "xtask: cluster up in {:.1} s; kubectl: {} --kubeconfig {KUBECONFIG}",
        started.elapsed().as_secs_f64(),
        binaries.bin("kubectl").display()
    );
    println!("{KUBECONFIG}");
    Ok(())
}

/// Stops everything and removes what a run leaves behind (mounts, cgroups, namespaces, routes,
/// containers, etcd's data, the volumes), keeping the binaries, the credentials and the node
/// engines' images.
fn down() -> Result<()> {
    recycler().stop()?;
    for node in &NODES {
        node.stop()?;
    }
    for daemon in control_plane().iter().rev() {
        daemon.stop()?;
    }
    unmount_under(&[CLUSTER, RUN])?;
    for node in &NODES {
        node.remove_state()?;
    }
    nodes::network_down();
    nodes::restore_kernel_tunables()?;
    for dir in [Path::new(CLUSTER).join("etcd"), storage::volumes()] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    // Kubelet 1.20 keeps these at fixed paths whatever its root directory.
    let _ = std::fs::remove_dir_all("/var/lib/kubelet/device-plugins");
    let _ = std::fs::remove_dir("/var/lib/kubelet");
    for dir in ["/var/log/pods", "/var/log/containers"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
    eprintln!("xtask: the cluster is down");
    Ok(())
}

/// One line per process and node; fails when any is not running or not ready.
fn status() -> Result<()> {
    let binaries = build::cached();
    let mut healthy = true;
    let mut line = |name: &str, up: bool, detail: String| {
        healthy &= up;
        println!("{name:<24} {detail}");
    };
    let pid = |d: &Daemon| match d.pid() {
        Some(pid) => format!("running (pid {pid})"),
        None => "not running".to_string(),
    };
    let etcd = etcd();
    let etcd_ok = etcd_healthy();
    line(
        &etcd.name,
        etcd_ok,
        format!(
            "{}, {}",
            pid(&etcd),
            if etcd_ok { "healthy" } else { "not healthy" }
        ),
    );
    let apiserver_ok = binaries.as_ref().is_some_and(api_ready);
    for daemon in control_plane().iter().skip(1).chain([&recycler()]) {
        let mut detail = pid(daemon);
        if daemon.name == "kube-apiserver" {
            detail.push_str(if apiserver_ok { ", ready" } else { ", not ready" });
        }
        line(&daemon.name, daemon.pid().is_some(), detail);
    }
    let ready = match &binaries {
        Some(b) if apiserver_ok => ready_nodes(b, "").unwrap_or_default(),
        _ => Vec::new(),
    };
    for node in &NODES {
        let (dockerd, kubelet) = (node.dockerd(), node.kubelet());
        let answers = node.engine_answers();
        let detail = format!(
            "{}, {}",
            pid(&dockerd),
            if answers { "answering" } else { "not answering" }
        );
        line(&dockerd.name, answers, detail);
        line(&kubelet.name, kubelet.pid().is_some(), pid(&kubelet));
        let is_ready = ready.iter().any(|r| r == node.name);
        let detail = format!("{} {}", if is_ready { "Ready" } else { "not Ready" }, node.ip());
        line(node.name, is_ready, detail);
    }
    if !healthy {
        bail!("the cluster is not (entirely) up");
    }
    Ok(())
}

fn etcd() -> Daemon {
    Daemon::new("etcd", "etcd")
}

/// The control plane's processes, in start order.
fn control_plane() -> [Daemon; 4] {
    [
        etcd(),
        Daemon::new("kube-apiserver", "kube-apiserver"),
        Daemon::new("kube-controller-manager", "kube-controller-manager"),
        Daemon::new("kube-scheduler", "kube-scheduler"),
    ]
}

fn recycler() -> Daemon {
    Daemon::new("recycler", "xtask")
}

fn control_plane_healthy(binaries: &Binaries) -> bool {
    control_plane().iter().all(|d| d.pid().is_some()) && etcd_healthy() && api_ready(binaries)
}

fn etcd_healthy() -> bool {
    output("curl", &["-sS", "-m", "2", "http://127.0.0.1:2379/health"])
        .is_ok_and(|s| s.contains("\"health\":\"true\""))
}

fn api_ready(binaries: &Binaries) -> bool {
    kubectl(binaries, &["get", "--raw", "/readyz"]).is_ok_and(|s| s.trim() == "ok")
}

fn start_control_plane(binaries: &Binaries) -> Result<()> {
    let started = Instant::now();
    let [etcd, apiserver, controller_manager, scheduler] = control_plane();
    let data = Path::new(CLUSTER).join("etcd");
    etcd.start(
        None,
        &binaries.bin("etcd"),
        &strings(&[
            "--name=orgo-k8s",
            &format!("--data-dir={}", data.display()),
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=orgo-k8s=http://127.0.0.1:2380",
        ]),
    )?;
    wait_for("etcd", Duration::from_secs(30), etcd_healthy)?;
    let pki = pki::file;
    apiserver.start(
        None,
        &binaries.bin("kube-apiserver"),
        &strings(&[
            "--etcd-servers=http://127.0.0.1:2379",
            "--secure-port=6443",
            "--insecure-port=0",
            // All addresses, so that kubelets and Pods in the node namespaces reach it too.
            "--bind-address=0.0.0.0",
            &format!("--advertise-address={HOST_IP}"),
            &format!("--tls-cert-file={}", pki("apiserver.crt")),
            &format!("--tls-private-key-file={}", pki("apiserver.key")),
            &format!("--client-ca-file={}", pki("ca.crt")),
            &format!("--token-auth-file={}", pki("tokens.csv")),
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc",
            &format!("--service-account-key-file={}", pki("sa.pub")),
            &format!("--service-account-signing-key-file={}", pki("sa.key")),
            &format!("--kubelet-client-certificate={}", pki("kubelet-client.crt")),
            &format!("--kubelet-client-key={}", pki("kubelet-client.key")),
            // Node names do not resolve; their InternalIP (--node-ip) is reachable.
            "--kubelet-preferred-address-types=InternalIP",
        ]),
    )?;
    wait_for("kube-apiserver's /readyz", Duration::from_secs(90), || {
        api_ready(binaries)
    })?;
    // Secure ports on loopback only, insecure ones off; one instance each, so no election.
    let common = [
        format!("--kubeconfig={KUBECONFIG}"),
        format!("--authentication-kubeconfig={KUBECONFIG}"),
        format!("--authorization-kubeconfig={KUBECONFIG}"),
        "--bind-address=127.0.0.1".into(),
        "--port=0".into(),
        "--leader-elect=false".into(),
    ];
    let mut args = common.to_vec();
    args.extend(strings(&[
        &format!("--service-account-private-key-file={}", pki("sa.key")),
        &format!("--root-ca-file={}", pki("ca.crt")),
        "--use-service-account-credentials=true",
        "--controllers=*",
    ]));
    controller_manager.start(None, &binaries.bin("kube-controller-manager"), &args)?;
    scheduler.start(None, &binaries.bin("kube-scheduler"), &common)?;
    eprintln!(
        "xtask: control plane ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The names of the Ready nodes; with `since` (RFC 3339, UTC) only those whose Ready condition
/// was reported at or after it.
fn ready_nodes(binaries: &Binaries, since: &str) -> Result<Vec<String>> {
    let out = kubectl(
        binaries,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} \
             {.status.conditions[?(@.type==\"Ready\")].status} \
             {.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime}{\"\\n\"}{end}",
        ],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (name, status, heartbeat) = (fields.next()?, fields.next()?, fields.next()?);
            (status == "True" && heartbeat >= since).then(|| name.to_string())
        })
        .collect())
}

pub fn kubectl(binaries: &Binaries, args: &[&str]) -> Result<String> {
    let kubectl = binaries.bin("kubectl");
    let mut all = vec!["--kubeconfig", KUBECONFIG, "--request-timeout=10s"];
    all.extend(args);
    output(path(&kubectl)?, &all)
}

/// Polls `ready` every 200 ms until it holds, or fails naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (logs in {CLUSTER}/logs)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Whether a command succeeds, its output dropped: for probes and clean-up that may fail.
pub fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Unmounts everything mounted under `roots` (the kubelets' volumes and secrets, the engines'
/// layers and network namespaces), deepest first.
fn unmount_under(roots: &[&str]) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| roots.iter().any(|r| Path::new(p).starts_with(r)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in points {
        if !quiet("umount", &[point]) && !quiet("umount", &["-l", point]) {
            bail!("cannot unmount {point}");
        }
    }
    Ok(())
}
