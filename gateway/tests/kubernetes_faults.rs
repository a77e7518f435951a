//! The Kubernetes runtime when the cluster misbehaves, on the real test cluster (`cargo xtask
//! k8s up`): the API server stops answering (SIGSTOP, as a hung or partitioned API server) —
//! running desktops go on, what needs the API server answers 503 saying so within the request
//! budget, and the gateway recovers by itself once it answers again; a node stops (its kubelet,
//! its engine and every process of its Pods killed, as a machine that dies) — its desktop reads
//! `error` with why once the cluster evicts its Pod, a start answers 503 saying why while the
//! node is away, and starts it again, with its files, once the node is back. One at a time.

mod common;

use std::time::{Duration, Instant};

use common::k8s::{self, Gateway};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

/// The pid of a process of the test cluster, from the pid file `cargo xtask k8s up` keeps.
fn cluster_pid(name: &str) -> Pid {
    let text = std::fs::read_to_string(format!("/run/orgo-k8s/{name}.pid"))
        .unwrap_or_else(|e| panic!("{name}'s pid file: {e}; is the test cluster up?"));
    Pid::from_raw(text.trim().parse().unwrap())
}

/// Stops a process with SIGSTOP; SIGCONT when dropped, whatever the test did meanwhile.
struct Paused(Pid);

impl Paused {
    fn new(pid: Pid) -> Paused {
        kill(pid, Signal::SIGSTOP).unwrap();
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[test]
fn desktops_go_on_while_the_api_server_is_away_and_the_gateway_recovers_by_itself() {
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "apiserver"));
    let gw = Gateway::start("k8s-apiserver", &ns, "free", "");
    let c = gw.desktop("ws", "steady");
    let ws = gw.ok("GET", "/projects/ws", None);

    let paused = Paused::new(cluster_pid("kube-apiserver"));
    // Actions reach the agent over the pod network: the API server is not on their way.
    for x in [10, 20, 30] {
        let clicked = gw.ok("POST", &format!("{c}/click"), Some(json!({"x": x, "y": 10})));
        assert_eq!(clicked["success"], true);
    }
    assert_eq!(gw.ok("GET", &c, None)["status"], "running");
    // A create needs the API server: a 503 saying so, not a hang and not a 500.
    let (status, v) = gw.call(
        "POST",
        "/computers",
        Some(json!({"workspace_id": ws["id"], "name": "during", "ram": 1, "cpu": 0.5})),
    );
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("API server cannot be reached"),
        "{v}"
    );
    drop(paused);

    // Back by itself: the desktop refused meanwhile starts, and new ones are made.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, v) = gw.call("POST", "/computers/during/start", None);
        if status == 200 {
            assert_eq!(v["status"], "running", "{v}");
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(Instant::now() < deadline, "no recovery: {v}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let after = gw.desktop("ws", "after");
    assert_eq!(gw.bash(&after, "echo fine"), "fine\n");
    assert_eq!(gw.bash(&c, "echo steady"), "steady\n");
    drop(gw);
    rt.block_on(k8s::delete_namespace(&client, &ns));
}

/// Kills a test node as a machine that dies would end: its kubelet's and its engine's process
/// groups, then every process left in its cgroup (its Pods' containers).
fn stop_node(node: &str) {
    for daemon in ["kubelet", "dockerd"] {
        let _ = nix::sys::signal::killpg(cluster_pid(&format!("{node}-{daemon}")), Signal::SIGKILL);
    }
    let root = std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/orgo-k8s-{node}"));
    let root = if root.exists() {
        root
    } else {
        std::path::PathBuf::from(format!("/sys/fs/cgroup/orgo-k8s-{node}"))
    };
    // Twice: a process may fork while the first pass kills.
    for _ in 0..2 {
        for entry in walk(&root) {
            let procs = std::fs::read_to_string(entry.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.parse().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A directory and every directory under it.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(walk(&entry.path()));
        }
    }
    found
}

/// `cargo xtask k8s up`, which restarts only the nodes that are down.
fn restart_nodes() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["run", "-q", "-p", "xtask", "--", "k8s", "up"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cargo xtask k8s up could not bring the node back"
    );
}

/// Waits until every node is Ready and has renewed its lease (a kubelet does every 10 s) at
/// least 10 s after the wait began. A Ready condition alone is up to 40 s stale: right after
/// the API server's test the kubelets may still be failing to reach the restarted, still slow,
/// API server, and a node that then misses its heartbeat beside the stopped one sends the
/// controller into full-disruption mode, where it lifts the eviction taints and evicts nothing.
async fn every_node_ready(client: &kube::Client) {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), "kube-node-lease");
    let since = jiff::Timestamp::now() + Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list = nodes.list(&Default::default()).await.unwrap();
        let mut settled = !list.items.is_empty();
        for node in &list.items {
            let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
            let ready =
                conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let lease = leases.get_opt(name).await.ok().flatten();
            let renewed = lease
                .and_then(|l| l.spec?.renew_time)
                .is_some_and(|t| t.0 >= since);
            settled &= ready && renewed;
        }
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster's nodes are not all Ready and renewing their leases"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What the cluster says when a lost node goes unnoticed: each node's Ready condition and
/// taints, the desktop's Pod, and what the controller manager logged about nodes.
async fn cluster_report(client: &kube::Client, ns: &str, pod: &str) -> String {
    let mut report = String::new();
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    for n in nodes
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let status = n.status.as_ref().and_then(|s| s.conditions.as_ref());
        let ready = status.and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let taints = n.spec.as_ref().and_then(|s| s.taints.as_ref());
        report += &format!(
            "node {:?}: Ready {:?}, taints {:?}\n",
            n.metadata.name,
            ready.map(|r| (&r.status, &r.reason, &r.last_heartbeat_time)),
            taints.map(|t| t.iter().map(|t| &t.key).collect::<Vec<_>>())
        );
    }
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
    match pods.get_opt(pod).await {
        Ok(Some(p)) => {
            report += &format!(
                "pod {pod}: deletion {:?}, status {}\n",
                p.metadata.deletion_timestamp,
                serde_json::to_string(&p.status).unwrap_or_default()
            )
        }
        other => report += &format!("pod {pod}: {other:?}\n"),
    }
    let log = std::fs::read_to_string("/var/lib/orgo-k8s/cluster/logs/kube-controller-manager.log")
        .unwrap_or_default();
    let about_nodes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("node_lifecycle") || l.contains("taint") || l.contains("isruption"))
        .collect();
    report += &about_nodes[about_nodes.len().saturating_sub(40)..].join("\n");
    report
}

/// Brings the node back when dropped, whatever the test did meanwhile.
struct NodeDown;

impl Drop for NodeDown {
    fn drop(&mut self) {
        restart_nodes();
    }
}

#[test]
fn a_desktop_whose_node_stops_reads_error_with_why_and_starts_again_once_the_node_is_back() {
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "node"));
    let gw = Gateway::start("k8s-node", &ns, "free", "");
    let c = gw.desktop("ws", "orphan");
    assert_eq!(gw.bash(&c, "echo kept > ~/kept && cat ~/kept"), "kept\n");
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &ns);
    let id = c.rsplit('/').next().unwrap();
    let pod = rt.block_on(pods.get(&format!("orgo-{id}"))).unwrap();
    let node = pod.spec.unwrap().node_name.expect("a scheduled Pod");

    // The controller evicts from a lost node only while another node is Ready (with every
    // node NotReady it suspects its own network and evicts nothing): start from a whole cluster.
    rt.block_on(every_node_ready(&client));

    let down = NodeDown;
    stop_node(&node);
    // The cluster notices (40 s without the node's heartbeat), evicts the Pod (30 s of
    // tolerance): the desktop reads error, with why; meanwhile calls fail without a 500.
    let deadline = Instant::now() + Duration::from_secs(360);
    loop {
        let (status, v) = gw.call("GET", &format!("{c}/cursor"), None);
        assert!(
            status == 200 || status == 409 || status == 503 || status == 504,
            "{status} {v}"
        );
        if status == 409 {
            break;
        }
        if Instant::now() > deadline {
            let report = rt.block_on(cluster_report(&client, &ns, &format!("orgo-{id}")));
            panic!("the lost node was never noticed: {v}\n{report}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let lost = gw.ok("GET", &c, None);
    assert_eq!(lost["status"], "error", "{lost}");
    assert!(
        lost["status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("node lost"),
        "{lost}"
    );
    // While the node is away its Pod cannot go: a start says why, and changes nothing.
    let (status, v) = gw.call("POST", &format!("{c}/start"), None);
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("node may have stopped answering"),
        "{v}"
    );

    drop(down);
    // The node's kubelet, back, confirms the old Pod's end, then the new Pod starts: minutes
    // on a loaded 2-core machine (a start itself may wait for a Pod's readiness that long).
    let deadline = Instant::now() + Duration::from_secs(480);
    loop {
        let (status, v) = gw.call("POST", &format!("{c}/start"), None);
        if status == 200 {
            assert_eq!(v["status"], "running", "{v}");
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(Instant::now() < deadline, "never started again: {v}");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(gw.bash(&c, "cat ~/kept"), "kept\n");
    gw.ok("DELETE", &c, None);
    drop(gw);
    rt.block_on(k8s::delete_namespace(&client, &ns));
}
