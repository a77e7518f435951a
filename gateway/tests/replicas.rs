//! Several gateways, one fleet: two `orgo-gateway serve` processes on one PostgreSQL database
//! and one Docker engine (sharing a data dir, as replicas on the engine's host do) behave as
//! one service — whichever replica a call reaches.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::Served;
use common::postgres::Cluster;
use serde_json::{Value, json};

/// The plan the replicas' tests use: room for a few desktops, and (where asked) a short idle
/// time.
fn config_file(dir: &std::path::Path, idle_seconds: u64) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    let toml = format!(
        "runtime = \"docker\"\ndefault_plan = \"team\"\n\
         [plans.team]\nmax_desktops = 4\nmax_ram_gb = 8\nmax_cpu = 8\n\
         idle_stop_seconds = {idle_seconds}\nrequests_per_second = 1000\n"
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// A database, a shared data dir, and replicas serving on it.
struct Fleet {
    cluster: Cluster,
    env: Vec<(&'static str, String)>,
    config: std::path::PathBuf,
    key: String,
}

impl Fleet {
    fn new(tag: &str, idle_seconds: u64) -> Fleet {
        let mut cluster = Cluster::start(tag);
        let url = cluster.database();
        let dir = common::scratch(&format!("replicas-{tag}"));
        let mut env = common::gateway_env(&dir, 0);
        env.retain(|(k, _)| *k != "ORGO_LISTEN");
        env.push(("ORGO_DATABASE_URL", url));
        let config = config_file(&dir, idle_seconds);
        let (ok, out, err) = common::keys(
            &env,
            &[
                "create",
                "--account",
                "team",
                "--config",
                config.to_str().unwrap(),
            ],
        );
        assert!(ok, "keys create: {err}");
        let key = out.lines().last().unwrap().trim().to_string();
        Fleet {
            cluster,
            env,
            config,
            key,
        }
    }

    /// One more replica, serving on a port of its own.
    fn replica(&self) -> Served {
        let port = common::free_port();
        let mut env = self.env.clone();
        env.push(("ORGO_LISTEN", format!("127.0.0.1:{port}")));
        Served::start_with(&env, port, &["--config", self.config.to_str().unwrap()])
    }

    fn call(&self, gw: &Served, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        gw.call(&self.key, method, path, body)
    }

    fn ok(&self, gw: &Served, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(gw, method, path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    /// A new running desktop, made through `gw`: its path under /api.
    fn desktop(&self, gw: &Served) -> String {
        let p = self.ok(
            gw,
            "POST",
            "/projects",
            Some(json!({"config": {"ram": 1, "cpu": 1}})),
        );
        format!("/computers/{}", p["desktop"]["id"].as_str().unwrap())
    }
}

/// `/healthz` of a replica.
fn health(gw: &Served) -> Value {
    let (status, body) = gw.get_root("/healthz");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A counter of a replica's `/metrics`.
fn metric(gw: &Served, name: &str) -> f64 {
    let (_, text) = gw.get_root("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_desktop_made_through_one_replica_is_used_through_the_other() {
    let fleet = Fleet::new("use", 0);
    let (a, b) = (fleet.replica(), fleet.replica());
    let c = fleet.desktop(&a);
    let listed = fleet.ok(&b, "GET", "/projects", None);
    assert_eq!(listed["projects"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(fleet.ok(&b, "GET", &c, None)["status"], "running");
    let shot = fleet.ok(&b, "GET", &format!("{c}/screenshot"), None);
    assert!(shot["image"].as_str().unwrap().len() > 1000, "{shot}");
    fleet.ok(
        &b,
        "POST",
        &format!("{c}/type"),
        Some(json!({"text": "through B"})),
    );
    let out = fleet.ok(
        &b,
        "POST",
        &format!("{c}/bash"),
        Some(json!({"command": "echo made by A > ~/f; cat ~/f"})),
    );
    assert_eq!(out["output"], "made by A\n");
    // A screenshot kept through B opens through A.
    let kept = fleet.ok(&b, "GET", &format!("{c}/screenshot?response_format=url"), None);
    let link = kept["image"].as_str().unwrap();
    let (status, _) = fleet.call(&a, "GET", link.strip_prefix("/api").unwrap(), None);
    assert_eq!(status, 200, "{link} through A");
    // A viewer link made by A opens through B.
    let token = fleet.ok(
        &a,
        "POST",
        &format!("{c}/viewer-token"),
        Some(json!({"mode": "view"})),
    );
    let id = c.rsplit('/').next().unwrap();
    let token = token["token"].as_str().unwrap();
    let (status, session) = b.get_root(&format!("/desktops/{id}/session?token={token}"));
    assert_eq!(status, 200, "{session}");
    // Stopped through B, started through A, files kept.
    assert_eq!(
        fleet.ok(&b, "POST", &format!("{c}/stop"), None)["status"],
        "stopped"
    );
    let (status, _) = fleet.call(&a, "GET", &format!("{c}/screenshot"), None);
    assert_eq!(status, 409, "stopped, as A sees it");
    fleet.ok(&a, "POST", &format!("{c}/start"), None);
    let out = fleet.ok(
        &b,
        "POST",
        &format!("{c}/bash"),
        Some(json!({"command": "cat ~/f"})),
    );
    assert_eq!(out["output"], "made by A\n");
    fleet.ok(&b, "DELETE", &c, None);
    let (status, _) = fleet.call(&a, "GET", &c, None);
    assert_eq!(status, 404);
}

/// Starts, stops and restarts of one desktop sent to both replicas at once take turns: none
/// fails, and afterwards the record and the engine agree.
#[test]
fn lifecycle_calls_on_two_replicas_take_turns() {
    let fleet = Fleet::new("turns", 0);
    let (a, b) = (fleet.replica(), fleet.replica());
    let c = fleet.desktop(&a);
    thread::scope(|s| {
        for (i, gw) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
            let (fleet, c) = (&fleet, &c);
            s.spawn(move || {
                let action = ["restart", "stop", "start"][i % 3];
                let (status, v) = fleet.call(gw, "POST", &format!("{c}/{action}"), None);
                assert_eq!(status, 200, "{action} #{i}: {v}");
            });
        }
    });
    let status = fleet.ok(&b, "GET", &c, None)["status"].clone();
    let id = c.rsplit('/').next().unwrap();
    let running = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", &format!("orgo-{id}")])
        .output()
        .unwrap();
    let running = String::from_utf8_lossy(&running.stdout).trim() == "true";
    assert_eq!(running, status == "running", "the record says {status}");
    fleet.ok(&a, "POST", &format!("{c}/start"), None);
    fleet.ok(&b, "POST", &format!("{c}/bash"), Some(json!({"command": "true"})));
    fleet.ok(&a, "DELETE", &c, None);
}

/// Idle auto-stop runs on one replica: an idle desktop is stopped exactly once.
#[test]
fn an_idle_desktop_is_stopped_once_by_one_replica() {
    let fleet = Fleet::new("idle", 3);
    let (a, b) = (fleet.replica(), fleet.replica());
    let c = fleet.desktop(&b);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = fleet.call(&a, "GET", &c, None);
        assert_eq!(status, 200, "{v}");
        if v["status"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "still {} after 30 s idle", v["status"]);
        thread::sleep(Duration::from_millis(250));
    }
    // Time for a second stop, were there a second stopper.
    thread::sleep(Duration::from_secs(4));
    let stops = metric(&a, "orgo_idle_stops_total") + metric(&b, "orgo_idle_stops_total");
    assert_eq!(stops, 1.0, "idle stops across the replicas");
    fleet.ok(&a, "DELETE", &c, None);
}

/// The singletons' leader killed: the other replica takes the lease, in the next epoch, within
/// the lease time; a replica that starts later does not depose it.
#[test]
fn a_killed_leader_hands_the_lease_on() {
    let fleet = Fleet::new("lease", 0);
    let (a, b) = (fleet.replica(), fleet.replica());
    let leaders: Vec<Value> = [&a, &b].iter().map(|gw| health(gw)).collect();
    let leading: Vec<&Value> = leaders.iter().filter(|h| !h["lease_epoch"].is_null()).collect();
    assert_eq!(leading.len(), 1, "one leader: {leaders:?}");
    let epoch = leading[0]["lease_epoch"].as_i64().unwrap();
    let (leader, follower) = if leaders[0]["lease_epoch"].is_null() {
        (b, a)
    } else {
        (a, b)
    };
    leader.end(nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(25);
    let next = loop {
        if let Some(e) = health(&follower)["lease_epoch"].as_i64() {
            break e;
        }
        assert!(Instant::now() < deadline, "the lease did not move within 25 s");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(next, epoch + 1);
    eprintln!(
        "the lease moved {:?} after the leader was killed",
        killed.elapsed()
    );
    let late = fleet.replica();
    thread::sleep(Duration::from_secs(2));
    assert!(health(&late)["lease_epoch"].is_null(), "a new replica follows");
    assert_eq!(health(&follower)["lease_epoch"].as_i64(), Some(next));
}

/// The database restarted while clients call: calls that need it answer 503 with a sentence
/// (never 500), readiness says not ready, and once it is back everything answers again with
/// nothing lost.
#[test]
fn a_database_restart_under_load_costs_503s_and_nothing_else() {
    let mut fleet = Fleet::new("dbrestart", 0);
    let a = fleet.replica();
    let c = fleet.desktop(&a);
    let key = fleet.key.clone();
    let statuses = std::sync::Mutex::new(BTreeMap::<u16, u32>::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let click = Some(json!({"x": 5, "y": 5}));
                    let (status, v) = a.call(&key, "POST", &format!("{c}/click"), click);
                    assert!(status == 200 || status == 503, "{status} {v}");
                    if status == 503 {
                        assert!(v["error"].as_str().unwrap().contains("database"), "{v}");
                    }
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                }
            });
        }
        thread::sleep(Duration::from_secs(1));
        fleet.cluster.pause();
        let (status, body) = a.get_root("/readyz");
        assert_eq!(status, 503, "{body}");
        assert_eq!(health(&a)["status"], "degraded");
        thread::sleep(Duration::from_secs(2));
        fleet.cluster.resume();
        let deadline = Instant::now() + Duration::from_secs(20);
        while a.get_root("/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "not ready again 20 s after the database came back"
            );
            thread::sleep(Duration::from_millis(100));
        }
        thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let statuses = statuses.into_inner().unwrap();
    assert!(statuses.get(&503).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
    assert_eq!(fleet.ok(&a, "GET", &c, None)["status"], "running", "nothing lost");
    fleet.ok(&a, "DELETE", &c, None);
}
