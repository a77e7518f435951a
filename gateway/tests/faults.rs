//! Faults on real local desktops: the agent killed mid-exec, Xvfb killed under a desktop, and a
//! thousand timed-out execs that leave children behind. Each ends in a clear answer, and nothing
//! is left behind. (A frozen agent and an output flood have test binaries of their own.)

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

mod common;

use common::inproc::Gateway;

/// A new desktop for `key`: (desktop id, computer path).
async fn desktop(gw: &Gateway, key: &str) -> (String, String) {
    let p = gw.ok("POST", "/api/projects", key, Some(json!({}))).await;
    (
        p["desktop"]["id"].as_str().unwrap().to_string(),
        format!("/api/computers/{}", p["name"].as_str().unwrap()),
    )
}

/// The desktop's agent.
pub fn agent_pid(desktop_id: &str) -> nix::unistd::Pid {
    let pids = common::desktop_pids(desktop_id, "orgo-agent");
    assert_eq!(pids.len(), 1, "one agent for the desktop: {pids:?}");
    nix::unistd::Pid::from_raw(pids[0])
}

fn signal(pid: nix::unistd::Pid, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(pid, sig).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_fails_its_calls_at_once_and_the_desktop_starts_again() {
    let gw = Gateway::new("fault-kill").await;
    let key = gw.key("k").await;
    let (id, c) = desktop(&gw, &key).await;
    let agent = agent_pid(&id);
    let bash = format!("{c}/bash");
    let long = gw.send(
        "POST",
        &bash,
        Some(&key),
        Some(json!({"command": "sleep 30; echo late", "timeout": 60})),
    );
    let kill = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        signal(agent, nix::sys::signal::Signal::SIGKILL);
    };
    let t = Instant::now();
    let ((status, v), ()) = tokio::join!(long, kill);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the call waited for the command instead of failing with its agent"
    );
    assert!(matches!(status.as_u16(), 502 | 503 | 409), "{status}: {v}");
    gw.until_noticed_dead(&key, &c).await;
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    assert_eq!(gw.bash(&key, &c, "echo back", None).await["output"], "back\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_x_server_answers_503_until_it_is_back() {
    let gw = Gateway::new("fault-xvfb").await;
    let key = gw.key("k").await;
    let (id, c) = desktop(&gw, &key).await;
    let xvfb = common::desktop_pids(&id, "Xvfb");
    assert_eq!(xvfb.len(), 1, "{xvfb:?}");
    signal(
        nix::unistd::Pid::from_raw(xvfb[0]),
        nix::sys::signal::Signal::SIGKILL,
    );
    let mut unavailable = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = gw.send("GET", &format!("{c}/screenshot"), Some(&key), None).await;
        if status == StatusCode::OK && common::desktop_pids(&id, "Xvfb").first() != Some(&xvfb[0]) {
            break;
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            unavailable += 1;
            assert!(v["error"].as_str().unwrap().contains("not ready"), "{v}");
        } else {
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        assert!(Instant::now() < deadline, "screenshots never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(unavailable > 0, "the gap was answered 503, never a picture");
    // The agent supervises a new X server: clicks and typing work on it.
    gw.ok(
        "POST",
        &format!("{c}/click"),
        &key,
        Some(json!({"x": 10, "y": 10})),
    )
    .await;
}

/// Processes in the desktop besides its agent, warm Python, X server and window manager: (all,
/// zombies).
async fn leftovers(gw: &Gateway, key: &str, c: &str) -> (usize, usize) {
    let ps = gw
        .bash(
            key,
            c,
            "ps -eo stat=,comm= | grep -v -E ' (orgo-agent|orgo-python|Xvfb|openbox|ps|grep|bash|bwrap|sh)$' || true",
            None,
        )
        .await;
    let lines: Vec<String> = ps["output"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let zombies = lines.iter().filter(|l| l.trim_start().starts_with('Z')).count();
    (lines.len(), zombies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timed_out_execs_leave_no_process_behind() {
    let gw = Gateway::with("fault-leftovers", |c| {
        c.plans.get_mut("free").unwrap().requests_per_second = 1000;
    })
    .await;
    let key = gw.key("k").await;
    let (_, c) = desktop(&gw, &key).await;
    // The desktop's own processes include its warm Python once it is up (it reads `python3`
    // until it has named itself).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let warm = "ps -eo comm= | grep -cx orgo-python || true";
    while gw.bash(&key, &c, warm, None).await["output"] != "1\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the warm Python never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before = leftovers(&gw, &key, &c).await;
    let body = json!({"command": "sleep 60 & sleep 60 & (sleep 60; echo) & sleep 60", "timeout": 0.1});
    let bash = format!("{c}/bash");
    let mut timed_out = 0;
    for _ in 0..100 {
        let batch: Vec<_> = (0..10)
            .map(|_| gw.send("POST", &bash, Some(&key), Some(body.clone())))
            .collect();
        for (status, v) in futures::future::join_all(batch).await {
            assert_eq!(status, StatusCode::OK, "{v}");
            timed_out += usize::from(v["timed_out"] == true);
        }
    }
    assert_eq!(timed_out, 1000);
    assert_eq!(
        leftovers(&gw, &key, &c).await,
        before,
        "survivors or zombies after 1,000 timed-out runs"
    );
}
