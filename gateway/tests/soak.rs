//! A soak: desktops created, used and deleted in a loop for `ORGO_SOAK_SECONDS` (20 in `cargo
//! test`; `cargo xtask soak --minutes N` runs it longer) on `ORGO_SOAK_RUNTIME` (local or
//! docker). Every deleted desktop must leave no process, cgroup, container or file behind, and
//! the gateway's descriptors and memory must not drift.

use std::time::{Duration, Instant};

use serde_json::json;

mod common;

use common::inproc::Gateway;
use orgo_gateway::config::RuntimeKind;

/// Whether Docker still has a container for the desktop.
fn container_exists(id: &str) -> bool {
    std::process::Command::new("docker")
        .args(["inspect", &format!("orgo-{id}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_act_delete_in_a_loop_leaves_nothing_behind() {
    let seconds: u64 = std::env::var("ORGO_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let docker = std::env::var("ORGO_SOAK_RUNTIME").is_ok_and(|r| r == "docker");
    let gw = Gateway::with("soak", |c| {
        if docker {
            c.runtime = RuntimeKind::Docker;
        }
        c.plans.get_mut("free").unwrap().requests_per_second = 1000;
    })
    .await;
    let key = gw.key("soak").await;
    let cgroups = orgo_gateway::runtime::cgroup::Cgroups::detect();
    let (mut fds, mut rss) = (vec![], vec![]);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut cycles = 0;
    while cycles < 2 || Instant::now() < deadline {
        let p = gw.ok("POST", "/api/projects", &key, Some(json!({}))).await;
        let id = p["desktop"]["id"].as_str().unwrap().to_string();
        let c = format!("/api/computers/{}", p["name"].as_str().unwrap());
        gw.ok("GET", &format!("{c}/screenshot"), &key, None).await;
        gw.ok("POST", &format!("{c}/click"), &key, Some(json!({"x": 5, "y": 5})))
            .await;
        gw.ok(
            "POST",
            &format!("{c}/type"),
            &key,
            Some(json!({"text": "soak ✓"})),
        )
        .await;
        let out = gw.bash(&key, &c, "sleep 30 & echo ok", None).await;
        assert_eq!(out["output"], "ok\n");
        gw.ok(
            "DELETE",
            &format!("/api/projects/{}", p["id"].as_str().unwrap()),
            &key,
            None,
        )
        .await;

        assert!(
            !gw.dir.join("desktops").join(&id).exists(),
            "the desktop's files are gone"
        );
        let gone = |what| cgroups.limit_file(&id, what).is_none_or(|f| !f.exists());
        assert!(
            gone("pids") && gone("memory") && gone("cpu"),
            "the desktop's cgroups are gone (and so its processes)"
        );
        if docker {
            assert!(!container_exists(&id), "the desktop's container is gone");
        }
        cycles += 1;
        fds.push(common::own_fds());
        rss.push(common::own_rss() as f64 / 1048576.0);
    }
    // The first cycles warm up pools and caches; drift is measured from the second.
    let (fd0, fd1) = (fds[1], *fds.last().unwrap());
    let (rss0, rss1) = (rss[1], *rss.last().unwrap());
    println!(
        "soak: {cycles} create/act/delete cycles in {seconds} s; gateway descriptors {fd0} → {fd1}, resident {rss0:.0} → {rss1:.0} MB"
    );
    assert!(fd1 <= fd0 + 4, "descriptors drifted: {fds:?}");
    assert!(rss1 - rss0 < 64.0, "memory drifted: {rss:?}");
}
