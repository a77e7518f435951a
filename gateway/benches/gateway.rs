//! `cargo xtask bench gateway`: the REST API over real HTTP on real local desktops, next to the
//! reference stack (xdotool, `scrot -q 100` + base64, a spawned `python3 -c`) on an Xvfb of its own
//! in the same run; desktop create → ready and stop → start; idle memory of a desktop; and
//! actions per second with 8 desktops and 32 concurrent clients.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "../tests/common/mod.rs"]
mod common;

fn median_p90(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.9))
}

/// The served gateway and a key, with timing helpers.
struct Api {
    served: common::Served,
    key: String,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.served.call(&self.key, method, path, body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    fn timed(&self, method: &str, path: &str, body: Option<Value>) -> Duration {
        let t = Instant::now();
        self.ok(method, path, body);
        t.elapsed()
    }
}

fn timed_cmd(cmd: &str, display: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new("bash")
        .args(["-c", cmd])
        .env("DISPLAY", display)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// Resident memory of the processes in a desktop's memory cgroup, in MB.
fn desktop_rss_mb(id: &str) -> Option<f64> {
    let cgroups = orgo_gateway::runtime::cgroup::Cgroups::detect();
    let procs = cgroups.limit_file(id, "memory")?.with_file_name("cgroup.procs");
    let pids = std::fs::read_to_string(procs).ok()?;
    let kb: u64 = pids
        .lines()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .sum();
    Some(kb as f64 / 1024.0)
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir: PathBuf = common::scratch("bench");
    let port = common::free_port();
    let env = common::gateway_env(&dir, port);
    let key = common::new_key(&env, "bench", "pro");
    let api = Arc::new(Api {
        served: common::Served::start(&env, port),
        key,
    });
    let mut children = Killed(Vec::new());

    // The reference stack on an Xvfb + openbox of its own.
    let ref_display = ":77";
    children.0.push(
        Command::new("Xvfb")
            .args([ref_display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    children.0.push(
        Command::new("openbox")
            .env("DISPLAY", ref_display)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));

    // Lifecycle.
    let (mut create, mut restart) = (vec![], vec![]);
    let mut first = None;
    for _ in 0..5 {
        let t = Instant::now();
        let p = api.ok("POST", "/projects", Some(json!({"config": {"ram": 2, "cpu": 2}})));
        create.push(t.elapsed());
        let id = p["id"].as_str().unwrap().to_string();
        api.ok("POST", &format!("/projects/{id}/stop"), None);
        let t = Instant::now();
        api.ok("POST", &format!("/projects/{id}/start"), None);
        restart.push(t.elapsed());
        match &first {
            None => {
                first = Some((
                    id,
                    p["desktop"]["id"].as_str().unwrap().to_string(),
                    p["name"].as_str().unwrap().to_string(),
                ))
            }
            Some(_) => {
                api.ok("DELETE", &format!("/projects/{id}"), None);
            }
        }
    }
    let (_, desktop_id, name) = first.unwrap();
    let c = format!("/computers/{name}");
    std::thread::sleep(Duration::from_secs(2));
    let idle_mb = desktop_rss_mb(&desktop_id);

    // Actions, ours over HTTP next to the reference commands.
    let shot = dir.join("ref.jpg");
    let scrot = format!(
        "scrot -o -q 100 {f} && base64 -w0 {f} > /dev/null",
        f = shot.display()
    );
    type Case<'a> = (
        &'a str,
        Box<dyn Fn(usize) -> Duration + 'a>,
        Box<dyn Fn(usize) -> Duration + 'a>,
    );
    let cases: Vec<Case> = vec![
        (
            "screenshot",
            Box::new(|_| api.timed("GET", &format!("{c}/screenshot"), None)),
            Box::new(|_| timed_cmd(&scrot, ref_display)),
        ),
        (
            "click",
            Box::new(|i| {
                api.timed(
                    "POST",
                    &format!("{c}/click"),
                    Some(json!({"x": 300 + (i % 2) * 400, "y": 600})),
                )
            }),
            Box::new(|i| {
                timed_cmd(
                    &format!("xdotool mousemove {} 600 click 1", 300 + (i % 2) * 400),
                    ref_display,
                )
            }),
        ),
        (
            "key ctrl+shift+i",
            Box::new(|_| api.timed("POST", &format!("{c}/key"), Some(json!({"key": "ctrl+shift+i"})))),
            Box::new(|_| timed_cmd("xdotool key ctrl+shift+i", ref_display)),
        ),
        (
            "type 50 chars",
            Box::new(|_| {
                api.timed(
                    "POST",
                    &format!("{c}/type"),
                    Some(json!({"text": "The quick brown fox jumps over the lazy dog 0123!?"})),
                )
            }),
            Box::new(|_| {
                timed_cmd(
                    "xdotool type -- 'The quick brown fox jumps over the lazy dog 0123!?'",
                    ref_display,
                )
            }),
        ),
        (
            "bash echo",
            Box::new(|_| api.timed("POST", &format!("{c}/bash"), Some(json!({"command": "echo hi"})))),
            Box::new(|_| timed_cmd("bash -c 'echo hi'", ref_display)),
        ),
        (
            "python print",
            Box::new(|_| api.timed("POST", &format!("{c}/exec"), Some(json!({"code": "print('hi')"})))),
            Box::new(|_| timed_cmd("python3 -c \"print('hi')\"", ref_display)),
        ),
    ];
    println!("\norgo-gateway bench: REST over HTTP on local desktops, {n} iterations per action (ms)");
    println!(
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "action", "ours p50", "ours p90", "ref p50", "ref p90", "ratio"
    );
    for (name, ours, reference) in &cases {
        let (mut o, mut r) = (vec![], vec![]);
        for i in 0..n {
            o.push(ours(i));
            r.push(reference(i));
        }
        let ((o50, o90), (r50, r90)) = (median_p90(o), median_p90(r));
        println!(
            "{name:<18} {o50:>9.3} {o90:>9.3} {r50:>9.3} {r90:>9.3} {:>7.1}x",
            r50 / o50
        );
    }
    let ((c50, c90), (s50, s90)) = (median_p90(create), median_p90(restart));
    println!("create → ready     p50 {c50:.0} ms, p90 {c90:.0} ms");
    println!("stop → start       p50 {s50:.0} ms, p90 {s90:.0} ms");
    match idle_mb {
        Some(mb) => println!("idle desktop       {mb:.0} MB resident (agent, Xvfb, openbox)"),
        None => println!("idle desktop       unknown (no memory cgroup)"),
    }

    // Throughput: 8 desktops, 32 clients, mixed actions for a fixed time.
    let mut names = vec![name.clone()];
    while names.len() < 8 {
        let p = api.ok("POST", "/projects", Some(json!({"config": {"ram": 2, "cpu": 2}})));
        names.push(p["name"].as_str().unwrap().to_string());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new((0u64, 0u64, Vec::<Duration>::new())));
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let (api, stop, results, target) =
                (api.clone(), stop.clone(), results.clone(), names[i % 8].clone());
            std::thread::spawn(move || {
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let c = format!("/computers/{target}");
                    let t = Instant::now();
                    let (status, _) = match k % 4 {
                        0 => api.call("GET", &format!("{c}/screenshot"), None),
                        1 => api.call(
                            "POST",
                            &format!("{c}/click"),
                            Some(json!({"x": 100 + (k % 7) * 100, "y": 700})),
                        ),
                        2 => api.call("POST", &format!("{c}/key"), Some(json!({"key": "shift"}))),
                        _ => api.call("POST", &format!("{c}/bash"), Some(json!({"command": "true"}))),
                    };
                    let took = t.elapsed();
                    let mut r = results.lock().unwrap();
                    if status == 200 {
                        r.0 += 1
                    } else {
                        r.1 += 1
                    }
                    r.2.push(took);
                    k += 1;
                }
            })
        })
        .collect();
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (okay, failed, lat) = std::mem::take(&mut *results.lock().unwrap());
    let (l50, _) = median_p90(lat.clone());
    let mut lat = lat;
    lat.sort();
    let p99 = lat[(lat.len() - 1) * 99 / 100].as_secs_f64() * 1000.0;
    println!(
        "8 desktops, 32 clients: {:.0} actions/s (screenshot/click/key/bash mix), p50 {l50:.1} ms, p99 {p99:.1} ms, {failed} errors of {}",
        okay as f64 / window.as_secs_f64(),
        okay + failed
    );
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
}
