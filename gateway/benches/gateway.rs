//! `cargo xtask bench gateway` (and `bench docker`, `bench kubernetes`): the REST API over real
//! HTTP on real desktops of each runtime named in `ORGO_BENCH_RUNTIMES` (`local`, `local,docker`,
//! `local-unsandboxed,local` for what the local sandbox costs, or `kubernetes`: the test cluster of `cargo xtask k8s up`, desktops of half a core and 1 GB
//! since its two nodes share two cores; 2 cores and 2 GB elsewhere), next to the
//! reference stack (xdotool, `scrot -q 100` + base64, a spawned `/usr/bin/python3 -c`) on an Xvfb of its own
//! in the same run; desktop create → ready and stop → start; idle memory of a desktop; and
//! actions per second with 8 desktops and 32 concurrent clients.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
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

/// Idle memory of a desktop in MB: the resident memory of its processes for the local runtime,
/// the engine's figure (without reclaimable cache) for a container.
fn idle_mb(runtime: &str, id: &str) -> Option<f64> {
    if runtime == "local" {
        return desktop_rss_mb(id);
    }
    let out = Command::new("docker")
        .args([
            "stats",
            "--no-stream",
            "--format",
            "{{.MemUsage}}",
            &format!("orgo-{id}"),
        ])
        .output()
        .ok()?;
    let used = String::from_utf8_lossy(&out.stdout);
    let used = used.split('/').next()?.trim();
    let (number, unit) = used.split_at(used.find(|c: char| c.is_ascii_alphabetic())?);
    let scale = match unit {
        "KiB" => 1.0 / 1024.0,
        "MiB" => 1.0,
        "GiB" => 1024.0,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// The desktops a runtime's bench boots (the test cluster's nodes share two cores): a size
/// no warm pool keeps, so each create boots.
fn desktop_size(runtime: &str) -> Value {
    if runtime == "kubernetes" {
        json!({"ram": 1, "cpu": 0.5})
    } else {
        json!({"ram": 2, "cpu": 1})
    }
}

/// The size the bench's warm pool keeps (`ORGO_POOL=1`: the SDK's).
const POOLED: (u32, u32) = (2, 2);

/// Waits until the warm pool has its desktop ready.
fn wait_for_pool(api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while api.served.health()["pool"][0]["ready"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "the warm pool never refilled");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates of the pooled size, each once the pool has one ready again (then deleted).
fn pooled_creates(api: &Api, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            wait_for_pool(api);
            let t = Instant::now();
            let p = api.ok(
                "POST",
                "/projects",
                Some(json!({ "config": { "ram": POOLED.0, "cpu": POOLED.1 } })),
            );
            let took = t.elapsed();
            api.ok(
                "DELETE",
                &format!("/projects/{}", p["id"].as_str().unwrap()),
                None,
            );
            took
        })
        .collect()
}

/// One runtime's figures.
struct Measured {
    runtime: String,
    create: (f64, f64),
    /// Creates handed a desktop from the warm pool, where the runtime has one.
    pooled: Option<(f64, f64)>,
    restart: (f64, f64),
    idle_mb: Option<f64>,
    actions: Vec<(f64, f64)>,
    throughput: String,
}

type Action<'a> = Box<dyn Fn(&Api, &str, usize) -> Duration + 'a>;

/// The actions timed on every runtime, by name.
fn actions<'a>() -> Vec<(&'static str, Action<'a>)> {
    vec![
        (
            "screenshot",
            Box::new(|api, c, _| api.timed("GET", &format!("{c}/screenshot"), None)),
        ),
        (
            "click",
            Box::new(|api, c, i| {
                api.timed(
                    "POST",
                    &format!("{c}/click"),
                    Some(json!({"x": 300 + (i % 2) * 400, "y": 600})),
                )
            }),
        ),
        (
            "key ctrl+shift+i",
            Box::new(|api, c, _| {
                api.timed("POST", &format!("{c}/key"), Some(json!({"key": "ctrl+shift+i"})))
            }),
        ),
        (
            "type 50 chars",
            Box::new(|api, c, _| api.timed("POST", &format!("{c}/type"), Some(json!({"text": TYPED})))),
        ),
        (
            "bash echo",
            Box::new(|api, c, _| {
                api.timed("POST", &format!("{c}/bash"), Some(json!({"command": "echo hi"})))
            }),
        ),
        (
            "python print",
            Box::new(|api, c, _| {
                api.timed("POST", &format!("{c}/exec"), Some(json!({"code": "print('hi')"})))
            }),
        ),
    ]
}

const TYPED: &str = "The quick brown fox jumps over the lazy dog 0123!?";

/// The reference stack's command for each action of `actions()`, in the same order.
fn reference_commands(shot: &std::path::Path) -> Vec<Box<dyn Fn(usize) -> String>> {
    let scrot = format!(
        "scrot -o -q 100 {f} && base64 -w0 {f} > /dev/null",
        f = shot.display()
    );
    vec![
        Box::new(move |_| scrot.clone()),
        Box::new(|i| format!("xdotool mousemove {} 600 click 1", 300 + (i % 2) * 400)),
        Box::new(|_| "xdotool key ctrl+shift+i".into()),
        Box::new(|_| format!("xdotool type -- '{TYPED}'")),
        Box::new(|_| "bash -c 'echo hi'".into()),
        Box::new(|_| "/usr/bin/python3 -c \"print('hi')\"".into()),
    ]
}

/// Lifecycle, actions and throughput on one gateway serving desktops of `column`: a runtime,
/// or `local-unsandboxed` (the local runtime with `local_sandbox = "none"`, to show what the
/// sandbox costs in the same run).
fn measure(column: &str, n: usize) -> Measured {
    let (runtime, sandbox) = match column {
        "local-unsandboxed" => ("local", "none"),
        other => (other, "strict"),
    };
    let dir: PathBuf = common::scratch(&format!("bench-{column}"));
    let port = common::free_port();
    let mut env = common::gateway_env(&dir, port);
    env.push(("ORGO_RUNTIME", runtime.to_string()));
    env.push(("ORGO_LOCAL_SANDBOX", sandbox.to_string()));
    // One desktop of the SDK's size kept warm (the test cluster has no room for one).
    let pooling = runtime != "kubernetes";
    if pooling {
        env.push(("ORGO_POOL", "1".to_string()));
    }
    // The test cluster's namespace of a Kubernetes run, deleted at the end.
    let mut cluster = None;
    let mut config = None;
    let api = Arc::new(if runtime == "kubernetes" {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(common::k8s::client());
        let ns = rt.block_on(common::k8s::scratch_namespace(&client, "bench"));
        let written = common::k8s::write_config(&dir, &ns, "");
        cluster = Some((rt, client, ns));
        let served = common::Served::start_with(&env, port, &["--config", written.to_str().unwrap()]);
        config = Some(written);
        Api {
            key: common::k8s::new_key_with(&env, config.as_ref().unwrap(), "pro"),
            served,
        }
    } else {
        Api {
            key: common::new_key(&env, "bench", "pro"),
            served: common::Served::start(&env, port),
        }
    });
    // Keys of the bench's account, on the store the gateway serves.
    let new_key = || match &config {
        Some(config) => common::k8s::new_key_with(&env, config, "pro"),
        None => common::new_key(&env, "bench", "pro"),
    };
    let size = desktop_size(runtime);
    let pooled = pooling.then(|| median_p90(pooled_creates(&api, 5)));
    // The pool boots its next desktop after the last pooled create: not beside the booted ones.
    if pooling {
        wait_for_pool(&api);
    }

    let (mut create, mut restart) = (vec![], vec![]);
    let mut projects = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        let p = api.ok("POST", "/projects", Some(json!({ "config": size })));
        create.push(t.elapsed());
        let id = p["id"].as_str().unwrap().to_string();
        api.ok("POST", &format!("/projects/{id}/stop"), None);
        let t = Instant::now();
        api.ok("POST", &format!("/projects/{id}/start"), None);
        restart.push(t.elapsed());
        projects.push(p);
    }
    for p in &projects[1..] {
        api.ok(
            "DELETE",
            &format!("/projects/{}", p["id"].as_str().unwrap()),
            None,
        );
    }
    let desktop_id = projects[0]["desktop"]["id"].as_str().unwrap().to_string();
    let name = projects[0]["name"].as_str().unwrap().to_string();
    let c = format!("/computers/{name}");
    std::thread::sleep(Duration::from_secs(2));
    let idle_mb = idle_mb(runtime, &desktop_id);

    let actions = actions()
        .iter()
        .map(|(_, action)| median_p90((0..n).map(|i| action(&api, &c, i)).collect()))
        .collect();
    let keys: Vec<String> = (0..32).map(|_| new_key()).collect();
    let throughput = throughput(&api, &keys, name, &size);
    // Docker desktops outlive their gateway: remove them all first.
    let listed = api.ok("GET", "/projects", None);
    for p in listed["projects"].as_array().unwrap() {
        api.ok(
            "DELETE",
            &format!("/projects/{}", p["id"].as_str().unwrap()),
            None,
        );
    }
    drop(api);
    if let Some((rt, client, ns)) = cluster {
        rt.block_on(common::k8s::delete_namespace(&client, &ns));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Measured {
        runtime: column.to_string(),
        create: median_p90(create),
        pooled,
        restart: median_p90(restart),
        idle_mb,
        actions,
        throughput,
    }
}

/// 8 desktops, 32 clients (each with a key of its own: a key's request rate is limited), mixed
/// actions for a fixed time: a line of figures.
fn throughput(api: &Arc<Api>, keys: &[String], first: String, size: &Value) -> String {
    let mut names = vec![first];
    while names.len() < 8 {
        let p = api.ok("POST", "/projects", Some(json!({ "config": size })));
        names.push(p["name"].as_str().unwrap().to_string());
    }
    common::load::run(&api.served, keys, &names, 32, Duration::from_secs(10)).summary()
}

fn main() {
    let n: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let runtimes = std::env::var("ORGO_BENCH_RUNTIMES").unwrap_or_else(|_| "local".into());
    let dir: PathBuf = common::scratch("bench-reference");
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
    let reference: Vec<(f64, f64)> = reference_commands(&dir.join("ref.jpg"))
        .iter()
        .map(|cmd| median_p90((0..n).map(|i| timed_cmd(&cmd(i), ref_display)).collect()))
        .collect();
    drop(children);

    let measured: Vec<Measured> = runtimes.split(',').map(|r| measure(r.trim(), n)).collect();

    println!("\norgo-gateway bench: REST over HTTP, {n} iterations per action, p50 / p90 in ms");
    print!("{:<18}", "action");
    for m in &measured {
        print!(" {:>17}", m.runtime);
    }
    println!(" {:>17} {:>8}", "reference", "ratio");
    for (i, (name, _)) in actions().iter().enumerate() {
        print!("{name:<18}");
        for m in &measured {
            let (p50, p90) = m.actions[i];
            print!(" {p50:>8.2} /{p90:>7.2}");
        }
        let (r50, r90) = reference[i];
        println!(" {r50:>8.2} /{r90:>7.2} {:>7.1}x", r50 / measured[0].actions[i].0);
    }
    for m in &measured {
        let ((c50, c90), (s50, s90)) = (m.create, m.restart);
        println!("{}:", m.runtime);
        println!("  create → ready     p50 {c50:.0} ms, p90 {c90:.0} ms (booted)");
        if let Some((p50, p90)) = m.pooled {
            println!("  create → ready     p50 {p50:.1} ms, p90 {p90:.1} ms (from the warm pool)");
        }
        println!("  stop → start       p50 {s50:.0} ms, p90 {s90:.0} ms");
        match m.idle_mb {
            Some(mb) => println!("  idle desktop       {mb:.0} MB (agent, Xvfb, openbox)"),
            None => println!("  idle desktop       unknown"),
        }
        println!(
            "  8 desktops × 32 clients (screenshot/click/key/bash mix): {}",
            m.throughput
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
