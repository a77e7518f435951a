//! `cargo xtask load`: a gateway process serving M desktops of a runtime under N concurrent
//! clients mixing screenshots, clicks, keys, typing and bash for S seconds; p50/p99 per route
//! and answers by status. Sizes from `ORGO_LOAD_CLIENTS` (32), `ORGO_LOAD_DESKTOPS` (8),
//! `ORGO_LOAD_SECONDS` (30), runtime from `ORGO_RUNTIME` (local).

use std::time::Duration;

use serde_json::json;

#[path = "../tests/common/mod.rs"]
mod common;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let clients = setting("ORGO_LOAD_CLIENTS", 32);
    let desktops = setting("ORGO_LOAD_DESKTOPS", 8);
    let seconds = setting("ORGO_LOAD_SECONDS", 30);
    let runtime = std::env::var("ORGO_RUNTIME").unwrap_or_else(|_| "local".into());
    let dir = common::scratch("load");
    let port = common::free_port();
    let mut env = common::gateway_env(&dir, port);
    env.push(("ORGO_RUNTIME", runtime.clone()));
    // A key per client, so the per-key rate limit (the pro plan's 500/s) shapes no figure.
    let keys: Vec<String> = (0..clients)
        .map(|_| common::new_key(&env, "load", "pro"))
        .collect();
    let served = common::Served::start(&env, port);
    let names: Vec<String> = (0..desktops)
        .map(|_| {
            let (status, p) = served.call(
                &keys[0],
                "POST",
                "/projects",
                Some(json!({"config": {"ram": 1, "cpu": 1}})),
            );
            assert_eq!(status, 200, "{p}");
            p["name"].as_str().unwrap().to_string()
        })
        .collect();
    let report = common::load::run(
        &served,
        &keys,
        &names,
        clients,
        Duration::from_secs(seconds as u64),
    );
    println!("\nload: {clients} clients × {desktops} {runtime} desktops, {seconds} s");
    print!("{}", report.table());
    println!("{}", report.summary());
    let (_, listed) = served.call(&keys[0], "GET", "/projects", None);
    for p in listed["projects"].as_array().into_iter().flatten() {
        served.call(
            &keys[0],
            "DELETE",
            &format!("/projects/{}", p["id"].as_str().unwrap()),
            None,
        );
    }
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
}
