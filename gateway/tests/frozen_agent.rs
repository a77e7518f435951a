//! A frozen agent (SIGSTOP): calls answer 504 at the deadline and leave nothing open. Alone in
//! its test binary, so the descriptors it counts are its own.

use axum::http::StatusCode;

mod common;

use common::inproc::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_times_out_at_the_deadline_without_piling_up() {
    let gw = Gateway::with("fault-stop", |c| c.agent_deadline_seconds = 2).await;
    let key = gw.key("k").await;
    let p = gw
        .ok("POST", "/api/projects", &key, Some(serde_json::json!({})))
        .await;
    let id = p["desktop"]["id"].as_str().unwrap().to_string();
    let c = format!("/api/computers/{}", p["name"].as_str().unwrap());
    gw.ok("GET", &format!("{c}/screenshot"), &key, None).await;
    let fds = common::own_fds();
    let agent = nix::unistd::Pid::from_raw(common::desktop_pids(&id, "orgo-agent")[0]);
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let path = if i % 2 == 0 {
                format!("{c}/screenshot")
            } else {
                format!("{c}/cursor")
            };
            let (gw, key) = (&gw, &key);
            async move { gw.send("GET", &path, Some(key), None).await }
        })
        .collect();
    for (status, v) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("did not answer in time"),
            "{v}"
        );
    }
    assert!(
        common::own_fds() <= fds + 2,
        "calls to a frozen agent left descriptors open: {} then {}",
        fds,
        common::own_fds()
    );
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGCONT).unwrap();
    gw.ok("GET", &format!("{c}/screenshot"), &key, None).await;
    assert!(common::own_fds() <= fds, "one channel per desktop, as before");
}
