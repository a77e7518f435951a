//! `cargo xtask bench view`: the live view in a real headless Chromium on a local desktop served
//! by a real gateway process. On a screen that changes all the time (a terminal printing without
//! pause), at 1280×800: frames per second drawn, capture-to-canvas latency (capture time stamped
//! by the agent, drawn time read in the page; one machine, one clock), and bytes per second; and
//! the agent's CPU with no viewer, with a viewer on a still screen, and while streaming.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "../tests/common/mod.rs"]
mod common;

use common::browser::Browser;

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64
}

/// The agent's share of one core over `window`.
async fn agent_cpu(pid: u32, window: Duration) -> f64 {
    let before = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    (cpu_seconds(pid) - before) / window.as_secs_f64() * 100.0
}

/// The pid of the desktop's agent.
fn agent_pid(desktop_id: &str) -> u32 {
    let pids = common::desktop_pids(desktop_id, "orgo-agent");
    *pids.first().expect("the agent among the desktop's processes") as u32
}

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Streams for `window` and reports fps, latency and bytes/s as the page measured them.
async fn stream_figures(browser: &Browser, window: Duration) -> String {
    let read = "const v = window.orgoViewer; return [v.frames, v.bytes, v.latencies.length];";
    let start: Vec<f64> = serde_json::from_value(browser.js(read).await).unwrap();
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t.elapsed().as_secs_f64();
    let end: Vec<f64> = serde_json::from_value(browser.js(read).await).unwrap();
    let frames = end[0] - start[0];
    let latencies: Vec<f64> = serde_json::from_value(
        browser
            .js(&format!(
                "return window.orgoViewer.latencies.slice(-{});",
                frames.min(end[2]) as usize
            ))
            .await,
    )
    .unwrap();
    format!(
        "{:.1} fps, latency p50 {:.1} ms p90 {:.1} ms, {:.2} MB/s",
        frames / secs,
        percentile(latencies.clone(), 0.5),
        percentile(latencies, 0.9),
        (end[1] - start[1]) / secs / 1e6
    )
}

#[tokio::main]
async fn main() {
    let dir = common::scratch("bench-view");
    let port = common::free_port();
    let mut env = common::gateway_env(&dir, port);
    env.push(("ORGO_PUBLIC_URL", format!("http://127.0.0.1:{port}")));
    let key = common::new_key(&env, "bench", "pro");
    let served = common::Served::start(&env, port);
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let (status, v) = served.call(&key, method, &path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    };
    let p = call("POST", "/projects".into(), Some(json!({})));
    let c = format!("/computers/{}", p["name"].as_str().unwrap());
    let pid = agent_pid(p["desktop"]["id"].as_str().unwrap());
    let window = Duration::from_secs(10);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = agent_cpu(pid, window).await;

    let browser = Browser::start(1400, 1000).await;
    let mut results = vec![];
    for fps in [30, 60] {
        let url = format!("{}&fps={fps}", p["desktop"]["url"].as_str().unwrap());
        browser.open_viewer(&url).await;
        if fps == 30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            results.push((
                "agent CPU, a viewer on a still screen".to_string(),
                format!("{:.1} %", agent_cpu(pid, window).await),
            ));
            call(
                "POST",
                format!("{c}/bash"),
                Some(
                    json!({"command": "setsid xterm -geometry 200x60+0+0 -e 'while :; do echo $RANDOM$RANDOM$RANDOM$RANDOM; done' >/dev/null 2>&1 < /dev/null & sleep 1"}),
                ),
            );
        }
        let cpu_before = cpu_seconds(pid);
        let t = Instant::now();
        let figures = stream_figures(&browser, window).await;
        let cpu = (cpu_seconds(pid) - cpu_before) / t.elapsed().as_secs_f64() * 100.0;
        results.push((
            format!("changing screen, {fps} fps asked"),
            format!("{figures}, agent CPU {cpu:.0} %"),
        ));
    }
    browser.close().await;

    println!("\nlive view bench: 1280×800, JPEG quality 70, headless Chromium on this machine");
    println!("{:<40} {:.1} %", "agent CPU, no viewer", idle);
    for (what, figures) in results {
        println!("{what:<40} {figures}");
    }
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
}
