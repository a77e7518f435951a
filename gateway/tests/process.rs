//! `orgo-gateway` as a process: keys from the CLI, a clean SIGTERM that stops its desktops and
//! records them as stopped, a SIGKILL that takes its local desktops down with it (nothing
//! orphaned, no stale state), a second gateway on the same data that starts them again with
//! their files, and a clean stop that deletes the warm pool's Docker desktops.

mod common;

use std::process::Command;

use common::{Served, free_port, gateway_env, keys};
use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
use serde_json::json;

#[test]
fn sigterm_stops_desktops_cleanly_and_a_new_gateway_starts_them_again() {
    let dir = common::scratch("process");
    let port = free_port();
    let env = gateway_env(&dir, port);
    let keys = |args: &[&str]| keys(&env, args);
    let (ok, out, _) = keys(&["create", "--account", "ops"]);
    assert!(ok);
    let key = out.lines().last().unwrap().trim().to_string();
    assert!(
        key.starts_with("orgo_"),
        "the key alone on the last line: {out:?}"
    );
    let (ok, _, err) = keys(&["create", "--account", "ops", "--plan", "gold"]);
    assert!(!ok && err.contains("gold"), "an unknown plan is refused: {err}");

    let gw = Served::start(&env, port);
    let (status, p) = gw.call(
        &key,
        "POST",
        "/projects",
        Some(json!({"config": {"ram": 2, "cpu": 2}})),
    );
    assert_eq!(status, 200, "{p}");
    let c = format!("/computers/{}", p["name"].as_str().unwrap());
    gw.call(
        &key,
        "POST",
        &format!("{c}/bash"),
        Some(json!({"command": "echo kept > /home/user/f"})),
    );
    let id = p["desktop"]["id"].as_str().unwrap().to_string();
    let status = gw.end(SIGTERM);
    assert!(status.success(), "{status:?}");
    assert!(
        common::desktop_processes(&id).is_empty(),
        "a clean stop leaves nothing"
    );

    let gw = Served::start(&env, port);
    let (_, computer) = gw.call(&key, "GET", &c, None);
    assert_eq!(computer["status"], "stopped", "{computer}");
    let (status, _) = gw.call(&key, "POST", &format!("{c}/start"), None);
    assert_eq!(status, 200);
    let (_, out) = gw.call(
        &key,
        "POST",
        &format!("{c}/bash"),
        Some(json!({"command": "cat /home/user/f"})),
    );
    assert_eq!(out["output"], "kept\n");

    let (ok, _, err) = keys(&["create", "--account", "scoped", "--workspace", "nowhere"]);
    assert!(!ok && err.contains("has no workspace \"nowhere\""), "{err}");
    let (ok, list, _) = keys(&["list"]);
    let key_id = key.split('_').nth(1).unwrap();
    assert!(ok && list.contains(key_id) && list.contains("live"), "{list}");
    assert!(keys(&["revoke", key_id]).0);
    let (status, v) = gw.call(&key, "GET", "/projects", None);
    assert_eq!(status, 401, "a revoked key is refused: {v}");
    assert!(gw.end(SIGTERM).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Processes whose command line mentions `pattern`.
fn pgrep(pattern: &str) -> String {
    let out = Command::new("pgrep").args(["-af", pattern]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls until `left` (processes described) is empty, failing with what is left after a
/// generous bound (the kernel tears down a dead parent's sandboxes asynchronously).
fn until_gone(left: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = left();
        if left.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "still running: {left}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_killed_gateway_orphans_no_desktop_and_a_new_one_starts_them_again() {
    let dir = common::scratch("killed");
    let port = free_port();
    let env = gateway_env(&dir, port);
    let key = common::new_key(&env, "ops", "pro");
    let gw = Served::start(&env, port);
    let mut desktops = Vec::new();
    for n in 0..2 {
        let (status, p) = gw.call(
            &key,
            "POST",
            "/projects",
            Some(json!({"config": {"ram": 1, "cpu": 1}})),
        );
        assert_eq!(status, 200, "{p}");
        let id = p["desktop"]["id"].as_str().unwrap().to_string();
        let c = format!("/computers/{id}");
        // Children that try to outlive their desktop: detached, in a session of their own.
        let (status, out) = gw.call(
            &key,
            "POST",
            &format!("{c}/bash"),
            Some(json!({"command": format!("echo {n} > /home/user/f; setsid nohup sleep 4{n}4242 >/dev/null 2>&1 & disown; echo ok")})),
        );
        assert_eq!((status, out["output"].as_str()), (200, Some("ok\n")), "{out}");
        desktops.push((id, c));
    }
    for (id, _) in &desktops {
        assert!(!common::desktop_processes(id).is_empty(), "{id} runs");
    }

    assert_eq!(
        pgrep("sleep 4[01]4242").lines().count(),
        2,
        "the detached children run"
    );
    let status = gw.end(SIGKILL);
    assert!(!status.success());
    for (id, _) in &desktops {
        until_gone(|| {
            common::desktop_processes(id)
                .iter()
                .map(|p| format!("{p} "))
                .collect()
        });
    }
    until_gone(|| pgrep("sleep 4[01]4242"));

    let gw = Served::start(&env, port);
    for (n, (id, c)) in desktops.iter().enumerate() {
        let (_, computer) = gw.call(&key, "GET", c, None);
        assert_eq!(
            computer["status"], "stopped",
            "the record follows the kill: {computer}"
        );
        let (status, v) = gw.call(&key, "POST", &format!("{c}/start"), None);
        assert_eq!(status, 200, "{v}");
        let (_, out) = gw.call(
            &key,
            "POST",
            &format!("{c}/bash"),
            Some(json!({"command": "cat /home/user/f"})),
        );
        assert_eq!(out["output"], format!("{n}\n"), "{id} kept its files");
    }
    assert!(gw.end(SIGTERM).success());
    for (id, _) in &desktops {
        until_gone(|| {
            common::desktop_processes(id)
                .iter()
                .map(|p| format!("{p} "))
                .collect()
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A clean stop of a gateway with its store to itself deletes its warm pool's desktops: Docker
/// ones would otherwise outlive it unowned. The next start makes the pool again.
#[test]
fn a_clean_stop_deletes_the_warm_pool_and_the_next_start_makes_it_again() {
    let dir = common::scratch("process-pool");
    let port = free_port();
    let mut env = gateway_env(&dir, port);
    env.push(("ORGO_RUNTIME", "docker".into()));
    env.push(("ORGO_POOL", "1".into()));
    let owned = || {
        let data = std::fs::canonicalize(&dir).unwrap();
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=orgo.gateway={}", data.display()))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().split_whitespace().count()
    };
    let ready = |gw: &Served| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while gw.health()["pool"][0]["ready"] != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool never filled: {}",
                gw.health()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let gw = Served::start(&env, port);
    ready(&gw);
    assert_eq!(owned(), 1, "the pooled container");
    assert!(gw.end(SIGTERM).success());
    assert_eq!(owned(), 0, "a clean stop leaves no container behind");
    let gw = Served::start(&env, port);
    ready(&gw);
    assert!(gw.end(SIGTERM).success());
    assert_eq!(owned(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
