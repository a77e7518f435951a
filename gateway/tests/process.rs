//! `orgo-gateway` as a process: keys from the CLI, a clean SIGTERM that stops its desktops and
//! records them as stopped, and a second gateway on the same data that starts them again with
//! their files.

mod common;

use std::process::Command;

use common::{Served, free_port, gateway_env, keys};
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
    let status = gw.terminate();
    assert!(status.success(), "{status:?}");
    let left = Command::new("pgrep")
        .args(["-f", &format!("desktops/{id}/run")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "no process of the desktop is left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(
        !dir.join(format!("desktops/{id}/tmp/.X1-lock")).exists(),
        "Xvfb stopped cleanly"
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

    let (ok, list, _) = keys(&["list"]);
    let key_id = key.split('_').nth(1).unwrap();
    assert!(ok && list.contains(key_id) && list.contains("live"), "{list}");
    assert!(keys(&["revoke", key_id]).0);
    let (status, v) = gw.call(&key, "GET", "/projects", None);
    assert_eq!(status, 401, "a revoked key is refused: {v}");
    assert!(gw.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}
