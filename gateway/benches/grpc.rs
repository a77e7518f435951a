//! `cargo xtask bench grpc`: the gateway's gRPC (`orgo.agent.v1.Agent` on its REST port,
//! HTTP/2 without TLS) against its REST API and against the desktop's agent itself, in one run
//! on one served release gateway with the local runtime.
//!
//! - Latency, one desktop: a click (count 1, each at a spot 50 px from the one before, so no
//!   two make a double click), a key press (`shift`), a screenshot (JPEG, the default quality)
//!   and typing 50 characters, each `BENCH_ITERATIONS` times (200; screenshots a quarter of
//!   that) three ways, interleaved call by call so the machine's noise falls on all alike:
//!   gRPC through the gateway (a tonic client on one HTTP/2 connection to the gateway's port,
//!   `authorization: Bearer <api key>` and `x-orgo-computer: <name>` metadata), REST through
//!   the gateway (blocking HTTP/1.1, as `benches/gateway.rs` times it), and the same proto
//!   client straight on the agent's Unix socket (reached through the sandbox's root in /proc:
//!   the bench runs as root, like the gateway). The click is also timed with a desktop token
//!   (`POST /api/computers/{id}/desktop-token`) in place of the API key. p50 / p90 in ms, and
//!   gRPC-through-the-gateway minus agent: the cost of the gateway's hop.
//! - Throughput: 8 desktops, 8 concurrent call loops (tasks) on each, 64 in all, each desktop's
//!   on one HTTP/2 connection, for 10 s: clicks, key presses and cursor queries in equal
//!   shares with a screenshot every 20th call; actions per second, p50 / p99 (also per kind of
//!   call), errors. The same loops straight on the 8 agents' sockets, for comparison.
//!
//! The account's plan (from a config file given to `serve --config`) allows 16 desktops and a
//! rate no loop reaches, so no limit shapes a figure. Everything made is deleted at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use orgo_proto::v1 as pb;
use orgo_proto::v1::agent_client::AgentClient;

#[path = "../tests/common/mod.rs"]
mod common;

const TYPED: &str = "The quick brown fox jumps over the lazy dog 0123!?";
/// Longest any call may take before the bench calls it hung.
const HUNG: Duration = Duration::from_secs(30);
const DESKTOPS: usize = 8;
const TASKS_PER_DESKTOP: usize = 8;
const WINDOW: Duration = Duration::from_secs(10);

/// The metadata of every call through the gateway: the credential, and the computer unless a
/// desktop token names it.
#[derive(Clone)]
struct Meta {
    authorization: MetadataValue<Ascii>,
    computer: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Meta {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        if let Some(c) = &self.computer {
            metadata.insert(orgo_gateway::grpc::COMPUTER, c.clone());
        }
        Ok(request)
    }
}

/// The one proto client, on the gateway's port or on an agent's own socket.
#[derive(Clone)]
enum Client {
    Gateway(AgentClient<InterceptedService<Channel, Meta>>),
    Socket(orgo_proto::connect::Agent),
}

/// One call timed: what it is, with its own coordinates when it has any.
#[derive(Clone, Copy)]
enum Op {
    Click(i32, i32),
    Key,
    Screenshot,
    Type,
    Cursor,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Click(..) => "click",
            Op::Key => "key",
            Op::Screenshot => "screenshot",
            Op::Type => "type",
            Op::Cursor => "cursor",
        }
    }
}

/// The `k`th click spot: a grid of 23 × 14 spots 50 px apart, walked row by row.
fn spot(k: usize) -> (i32, i32) {
    (60 + (k % 23) as i32 * 50, 60 + ((k / 23) % 14) as i32 * 50)
}

/// A call of `$method` with `$request` on either kind of client, its answer dropped.
macro_rules! on_either {
    ($client:expr, $method:ident, $request:expr) => {
        match $client {
            Client::Gateway(c) => c.$method($request).await.map(drop),
            Client::Socket(c) => c.$method($request).await.map(drop),
        }
    };
}

impl Client {
    async fn run(&mut self, op: Op) -> Result<(), Status> {
        let call = async {
            match op {
                Op::Click(x, y) => on_either!(
                    self,
                    click,
                    pb::ClickRequest {
                        at: Some(pb::Point { x, y }),
                        button: pb::MouseButton::Left as i32,
                        count: 1,
                    }
                ),
                Op::Key => on_either!(
                    self,
                    press_key,
                    pb::KeyRequest {
                        combo: "shift".into(),
                        repeat: 1,
                    }
                ),
                Op::Screenshot => on_either!(self, screenshot, pb::ScreenshotRequest::default()),
                Op::Type => on_either!(
                    self,
                    type_text,
                    pb::TypeTextRequest {
                        text: TYPED.into(),
                        delay_millis: 0,
                    }
                ),
                Op::Cursor => on_either!(self, cursor_position, pb::CursorPositionRequest {}),
            }
        };
        tokio::time::timeout(HUNG, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("no answer in {HUNG:?}"))))
    }
}

/// A gRPC client on the gateway's port with `credential`, naming `computer` when given.
async fn via_gateway(port: u16, credential: &str, computer: Option<&str>) -> Client {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("an HTTP/2 connection to the gateway");
    let meta = Meta {
        authorization: format!("Bearer {credential}").parse().unwrap(),
        computer: computer.map(|c| c.parse().unwrap()),
    };
    Client::Gateway(
        AgentClient::with_interceptor(channel, meta)
            .max_decoding_message_size(orgo_proto::connect::MAX_MESSAGE),
    )
}

/// The same client on the agent's own Unix socket.
async fn via_socket(socket: &Path) -> Client {
    Client::Socket(
        orgo_proto::connect::connect_unix(socket.to_path_buf())
            .await
            .expect("the agent's socket"),
    )
}

/// Where a local desktop's agent listens, seen from the host: its socket in the sandbox's own
/// run dir, through the root of the agent's process.
fn agent_socket(desktop_id: &str) -> PathBuf {
    let pid = *common::desktop_pids(desktop_id, "orgo-agent")
        .first()
        .expect("the desktop's agent process");
    orgo_gateway::runtime::sandbox::Sandbox::agent_socket(pid as u32)
}

/// The `q` quantile of sorted durations, in ms.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

/// p50 and p90 in ms.
type Figures = (f64, f64);

fn p50_p90(mut v: Vec<Duration>) -> Figures {
    v.sort();
    (quantile(&v, 0.5), quantile(&v, 0.9))
}

/// One way of making a call in the latency part.
enum Way<'a> {
    Grpc(&'a mut Client),
    Rest,
}

/// The REST request of `op` on computer `c`.
fn rest_request(op: Op, c: &str) -> (&'static str, String, Option<Value>) {
    match op {
        Op::Click(x, y) => ("POST", format!("{c}/click"), Some(json!({"x": x, "y": y}))),
        Op::Key => ("POST", format!("{c}/key"), Some(json!({"key": "shift"}))),
        Op::Screenshot => ("GET", format!("{c}/screenshot"), None),
        Op::Type => ("POST", format!("{c}/type"), Some(json!({"text": TYPED}))),
        Op::Cursor => ("GET", format!("{c}/cursor"), None),
    }
}

/// The latency part's context: the gateway for REST, and a runtime for the gRPC clients.
struct Latency<'a> {
    served: &'a common::Served,
    key: &'a str,
    computer: String,
    rt: &'a tokio::runtime::Runtime,
}

impl Latency<'_> {
    fn time(&self, way: &mut Way<'_>, op: Op) -> Duration {
        match way {
            Way::Grpc(client) => self.rt.block_on(async {
                let t = Instant::now();
                if let Err(e) = client.run(op).await {
                    panic!("gRPC {}: {e:?}", op.name());
                }
                t.elapsed()
            }),
            Way::Rest => {
                let (method, path, body) = rest_request(op, &self.computer);
                let t = Instant::now();
                let (status, answer) = self.served.call(self.key, method, &path, body);
                let took = t.elapsed();
                assert_eq!(status, 200, "REST {method} {path}: {answer}");
                took
            }
        }
    }

    /// `n` rounds of `op` (after a few unmeasured), each round one call each way, the first
    /// way turning round by round; the latencies of each way.
    fn rounds(&self, ways: &mut [Way<'_>], n: usize, op: impl Fn(usize) -> Op) -> Vec<Figures> {
        let mut taken = vec![Vec::with_capacity(n); ways.len()];
        let mut k = 0;
        for round in 0..n + 5 {
            for w in 0..ways.len() {
                let w = (w + round) % ways.len();
                let took = self.time(&mut ways[w], op(k));
                k += 1;
                if round >= 5 {
                    taken[w].push(took);
                }
            }
        }
        taken.into_iter().map(p50_p90).collect()
    }
}

/// 64 call loops on 8 desktops for the window: each loop its own order of clicks, keys and
/// cursor queries, a screenshot every 20th call; no two clicks in a row on a desktop at one
/// spot. Answers go into the REST load's report (`common::load`) as statuses: an answer as 200,
/// an error as its gRPC code; the first message of each code is kept.
async fn throughput(clients: &[Client]) -> (common::load::Report, BTreeMap<i32, String>) {
    let report = Arc::new(Mutex::new(common::load::Report::default()));
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let started = Instant::now();
    let end = started + WINDOW;
    let mut tasks = Vec::new();
    for client in clients {
        // The desktop's clicks in the order taken, each at the next spot of the grid: the
        // agent spaces two clicks at one spot by the double-click interval, and no loop here
        // should wait for that.
        let clicks = Arc::new(AtomicUsize::new(0));
        for t in 0..TASKS_PER_DESKTOP {
            let (mut client, report, errors) = (client.clone(), report.clone(), errors.clone());
            let clicks = clicks.clone();
            tasks.push(tokio::spawn(async move {
                let mut k = t;
                while Instant::now() < end {
                    let op = match (k % 20, k % 3) {
                        (19, _) => Op::Screenshot,
                        (_, 0) => {
                            let (x, y) = spot(clicks.fetch_add(1, Ordering::Relaxed));
                            Op::Click(x, y)
                        }
                        (_, 1) => Op::Key,
                        _ => Op::Cursor,
                    };
                    let t = Instant::now();
                    let answer = client.run(op).await;
                    let took = t.elapsed();
                    let status = match &answer {
                        Ok(()) => 200,
                        Err(e) => e.code() as u16,
                    };
                    if let Err(e) = answer {
                        errors
                            .lock()
                            .unwrap()
                            .entry(e.code() as i32)
                            .or_insert_with(|| format!("{} {}", op.name(), e.message()));
                    }
                    let mut r = report.lock().unwrap();
                    r.latencies.entry(op.name()).or_default().push(took);
                    *r.statuses.entry(status).or_default() += 1;
                    k += 1;
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut report = std::mem::take(&mut *report.lock().unwrap());
    report.seconds = started.elapsed().as_secs_f64();
    let errors = std::mem::take(&mut *errors.lock().unwrap());
    (report, errors)
}

/// The data dir, removed last (after the gateway, declared after it, has stopped).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let shots = (n / 4).max(1);
    let scratch = Scratch(common::scratch("bench-grpc"));
    let port = common::free_port();
    let mut env = common::gateway_env(&scratch.0, port);
    env.push(("ORGO_RUNTIME", "local".to_string()));
    let config = scratch.0.join("gateway.toml");
    std::fs::write(
        &config,
        "default_plan = \"bench\"\n[plans.bench]\nmax_desktops = 16\nmax_ram_gb = 64\nmax_cpu = 64\n\
         idle_stop_seconds = 0\nrequests_per_second = 1000000\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (ok, out, err) = common::keys(
        &env,
        &[
            "--config",
            config,
            "create",
            "--account",
            "bench",
            "--plan",
            "bench",
        ],
    );
    assert!(ok, "keys create: {err}");
    let key = out.lines().last().unwrap().trim().to_string();
    let served = common::Served::start_with(&env, port, &["--config", config]);
    let ok = |method: &str, path: &str, body: Option<Value>| {
        let (status, answer) = served.call(&key, method, path, body);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer
    };
    let new_desktop = || ok("POST", "/projects", Some(json!({"config": {"ram": 1, "cpu": 1}})));

    let first = new_desktop();
    let name = first["name"].as_str().unwrap().to_string();
    let desktop_id = first["desktop"]["id"].as_str().unwrap().to_string();
    let token = ok(
        "POST",
        &format!("/computers/{desktop_id}/desktop-token"),
        Some(json!({})),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let socket = agent_socket(&desktop_id);

    // The latency part, on a runtime of the calling thread: no hop between threads on the
    // client's side of either gRPC way.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut grpc, mut with_token, mut agent) = rt.block_on(async {
        (
            via_gateway(port, &key, Some(&name)).await,
            via_gateway(port, &token, None).await,
            via_socket(&socket).await,
        )
    });
    let latency = Latency {
        served: &served,
        key: &key,
        computer: format!("/computers/{name}"),
        rt: &rt,
    };
    // Rows: (action, gRPC, gRPC with a desktop token, REST, agent).
    let mut rows: Vec<(&str, Figures, Option<Figures>, Figures)> = Vec::new();
    let click = latency.rounds(
        &mut [
            Way::Grpc(&mut grpc),
            Way::Grpc(&mut with_token),
            Way::Rest,
            Way::Grpc(&mut agent),
        ],
        n,
        |k| Op::Click(spot(k).0, spot(k).1),
    );
    rows.push(("click", click[0], Some(click[2]), click[3]));
    rows.push(("click, desktop token", click[1], None, click[3]));
    for (label, count, op) in [
        ("key shift", n, Op::Key),
        ("screenshot (JPEG)", shots, Op::Screenshot),
        ("type 50 chars", n, Op::Type),
    ] {
        let t = latency.rounds(
            &mut [Way::Grpc(&mut grpc), Way::Rest, Way::Grpc(&mut agent)],
            count,
            |_| op,
        );
        rows.push((label, t[0], Some(t[1]), t[2]));
    }
    drop((grpc, with_token, agent, rt));

    // The throughput part, on a runtime of two threads (the machine's cores).
    let mut names = vec![name];
    let mut ids = vec![desktop_id];
    while names.len() < DESKTOPS {
        let p = new_desktop();
        names.push(p["name"].as_str().unwrap().to_string());
        ids.push(p["desktop"]["id"].as_str().unwrap().to_string());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let loads = rt.block_on(async {
        let mut gateway = Vec::new();
        let mut sockets = Vec::new();
        for (name, id) in names.iter().zip(&ids) {
            gateway.push(via_gateway(port, &key, Some(name)).await);
            sockets.push(via_socket(&agent_socket(id)).await);
        }
        [throughput(&gateway).await, throughput(&sockets).await]
    });
    drop(rt);

    println!(
        "\norgo-gateway gRPC bench: one local desktop, p50 / p90 in ms, {n} calls per way \
         ({shots} screenshots), ways interleaved"
    );
    println!(
        "{:<22} {:>17} {:>17} {:>17} {:>17}",
        "action", "gRPC via gateway", "REST via gateway", "agent socket", "gRPC − agent"
    );
    let cell = |(p50, p90): Figures| format!("{p50:>8.2} /{p90:>7.2}");
    for (label, grpc, rest, agent) in rows {
        println!(
            "{label:<22} {} {} {} {:>+8.2} /{:>+7.2}",
            cell(grpc),
            rest.map_or_else(|| format!("{:>17}", "—"), cell),
            cell(agent),
            grpc.0 - agent.0,
            grpc.1 - agent.1,
        );
    }
    println!(
        "throughput, {DESKTOPS} desktops × {TASKS_PER_DESKTOP} concurrent call loops = {}, \
         {} s, click/key/cursor with a screenshot every 20th call:",
        DESKTOPS * TASKS_PER_DESKTOP,
        WINDOW.as_secs()
    );
    for (label, (report, errors)) in ["gRPC via gateway", "agent sockets"].iter().zip(&loads) {
        println!("  {label:<18} {}", report.summary());
        let kinds: Vec<String> = report
            .latencies
            .iter()
            .map(|(kind, taken)| {
                let mut taken = taken.clone();
                taken.sort();
                format!(
                    "{kind} {:.1} / {:.1}",
                    quantile(&taken, 0.5),
                    quantile(&taken, 0.99)
                )
            })
            .collect();
        println!("  {:<18} p50 / p99 ms: {}", "", kinds.join(", "));
        for (code, first) in errors {
            println!("    {:?}, first: {first}", Code::from(*code));
        }
    }

    // Everything made goes: the desktops, then the gateway, then its data dir.
    let listed = ok("GET", "/projects", None);
    for p in listed["projects"].as_array().unwrap() {
        ok(
            "DELETE",
            &format!("/projects/{}", p["id"].as_str().unwrap()),
            None,
        );
    }
    drop(served);
    drop(scratch);
}
