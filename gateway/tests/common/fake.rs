//! A fake runtime for tests that need no desktop: each "desktop" is an in-process tonic server
//! implementing the agent service on a Unix socket, which records every call it gets, answers
//! plausible fixed values and can be told to fail or stall a method. With it the whole router
//! (auth, plans, tenancy, parsing, rate limits, error mapping) runs in milliseconds, without
//! Xvfb, bubblewrap or the agent binary.
//!
//! ```ignore
//! let gw = Gateway::fake("tag").await;           // or Gateway::fake_with("tag", |config| …)
//! let fake = gw.runtime();                       // &FakeRuntime
//! fake.fail_next("click", Status::aborted("…")); // the next click answers that
//! … drive the API …
//! assert_eq!(fake.calls(&desktop_id), vec![Call::Click(…)]);
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use orgo_gateway::runtime::RuntimeError;
use orgo_gateway::runtime::{DesktopSpec, Found, Runtime};
use orgo_proto::connect::Target;
use orgo_proto::v1 as pb;
use orgo_proto::v1::agent_server::{Agent, AgentServer};
use orgo_proto::v1::files_server::{Files, FilesServer};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// One call a fake agent received: which method, with the request it got.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Health,
    ScreenInfo,
    Screenshot(pb::ScreenshotRequest),
    WatchScreen(pb::WatchScreenRequest),
    MovePointer(pb::MovePointerRequest),
    Click(pb::ClickRequest),
    PressButton(pb::ButtonRequest),
    ReleaseButton(pb::ButtonRequest),
    Drag(pb::DragRequest),
    Scroll(pb::ScrollRequest),
    CursorPosition,
    TypeText(pb::TypeTextRequest),
    PressKey(pb::KeyRequest),
    KeyDown(pb::KeyRequest),
    KeyUp(pb::KeyRequest),
    Exec(pb::ExecRequest),
    ExecStream(pb::ExecRequest),
    FilesList(pb::ListRequest),
    FilesStat(pb::StatRequest),
    FilesRead(pb::ReadRequest),
    /// A whole write: its start, and the bytes it carried.
    FilesWrite(pb::WriteStart, u64),
    FilesRemove(pb::RemoveRequest),
}

/// Every method name [`Call::method`] answers: the generated clients' method names, those of
/// the `Files` service prefixed `files_`.
pub const METHODS: &[&str] = &[
    "health",
    "screen_info",
    "screenshot",
    "watch_screen",
    "move_pointer",
    "click",
    "press_button",
    "release_button",
    "drag",
    "scroll",
    "cursor_position",
    "type_text",
    "press_key",
    "key_down",
    "key_up",
    "exec",
    "exec_stream",
    "files_list",
    "files_stat",
    "files_read",
    "files_write",
    "files_remove",
];

impl Call {
    /// The method's name as the generated client spells it (`"type_text"`, `"press_key"`, …).
    pub fn method(&self) -> &'static str {
        match self {
            Call::Health => "health",
            Call::ScreenInfo => "screen_info",
            Call::Screenshot(_) => "screenshot",
            Call::WatchScreen(_) => "watch_screen",
            Call::MovePointer(_) => "move_pointer",
            Call::Click(_) => "click",
            Call::PressButton(_) => "press_button",
            Call::ReleaseButton(_) => "release_button",
            Call::Drag(_) => "drag",
            Call::Scroll(_) => "scroll",
            Call::CursorPosition => "cursor_position",
            Call::TypeText(_) => "type_text",
            Call::PressKey(_) => "press_key",
            Call::KeyDown(_) => "key_down",
            Call::KeyUp(_) => "key_up",
            Call::Exec(_) => "exec",
            Call::ExecStream(_) => "exec_stream",
            Call::FilesList(_) => "files_list",
            Call::FilesStat(_) => "files_stat",
            Call::FilesRead(_) => "files_read",
            Call::FilesWrite(..) => "files_write",
            Call::FilesRemove(_) => "files_remove",
        }
    }
}

/// What the gateway asked of the runtime, in order.
#[derive(Debug, Clone)]
pub enum Event {
    Start(DesktopSpec),
    Resize(DesktopSpec),
    CopyHome(String, String),
    Stop(String),
    Remove(String),
}

/// A fake desktop's agent server while it runs.
struct Server {
    /// Set to true to end the server and cut its calls short.
    dead: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    socket: PathBuf,
}

#[derive(Default)]
struct Shared {
    dir: PathBuf,
    servers: Mutex<HashMap<String, Server>>,
    calls: Mutex<Vec<(String, Call)>>,
    events: Mutex<Vec<Event>>,
    failures: Mutex<HashMap<&'static str, VecDeque<Status>>>,
    delays: Mutex<HashMap<&'static str, VecDeque<Duration>>>,
    start_failures: Mutex<VecDeque<RuntimeError>>,
    /// How many of the next starts answer a socket no agent serves.
    unreachable_starts: Mutex<u32>,
    exec: Mutex<Option<pb::ExecResponse>>,
    generation: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The name in [`METHODS`] that equals `method`, or a panic naming the known ones.
fn known(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .unwrap_or_else(|| panic!("no agent method {method:?}; the methods are {METHODS:?}"))
}

/// A runtime whose desktops are in-process fake agents (see the module's documentation).
/// Clones share everything.
#[derive(Clone)]
pub struct FakeRuntime {
    shared: Arc<Shared>,
}

impl FakeRuntime {
    /// A runtime keeping its agents' sockets under `dir` (created if needed).
    pub fn new(dir: &Path) -> FakeRuntime {
        std::fs::create_dir_all(dir).unwrap();
        FakeRuntime {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                ..Shared::default()
            }),
        }
    }

    /// Every agent call so far on the desktop with this id, oldest first.
    pub fn calls(&self, desktop: &str) -> Vec<Call> {
        lock(&self.shared.calls)
            .iter()
            .filter(|(d, _)| d == desktop)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Every agent call so far on any desktop: (desktop id, call), oldest first.
    pub fn all_calls(&self) -> Vec<(String, Call)> {
        lock(&self.shared.calls).clone()
    }

    /// Forgets the calls recorded so far.
    pub fn clear_calls(&self) {
        lock(&self.shared.calls).clear();
    }

    /// What the gateway asked of the runtime so far (starts, stops, removes), oldest first.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.shared.events).clone()
    }

    /// The next call of `method` (a name from [`METHODS`]) on any desktop is recorded, then
    /// answered `status`. Several queue up, one per call.
    pub fn fail_next(&self, method: &str, status: Status) {
        lock(&self.shared.failures)
            .entry(known(method))
            .or_default()
            .push_back(status);
    }

    /// The next call of `method` on any desktop waits `delay` before it answers (or fails,
    /// with [`FakeRuntime::fail_next`]); a stop or kill of its desktop meanwhile ends the wait
    /// at once with that failure, or UNAVAILABLE when none was queued.
    pub fn delay_next(&self, method: &str, delay: Duration) {
        lock(&self.shared.delays)
            .entry(known(method))
            .or_default()
            .push_back(delay);
    }

    /// The next [`Runtime::start`] fails with `error` (recorded as a start all the same).
    pub fn fail_next_start(&self, error: RuntimeError) {
        lock(&self.shared.start_failures).push_back(error);
    }

    /// The next [`Runtime::start`] succeeds but answers a socket no agent listens on, as when
    /// the agent dies right after it first answered.
    pub fn unreachable_next_start(&self) {
        *lock(&self.shared.unreachable_starts) += 1;
    }

    /// What every exec answers from now on; by default exit 0 with no output.
    pub fn answer_exec(&self, response: pb::ExecResponse) {
        *lock(&self.shared.exec) = Some(response);
    }

    /// Whether the desktop's fake agent serves.
    pub fn is_running(&self, desktop: &str) -> bool {
        lock(&self.shared.servers)
            .get(desktop)
            .is_some_and(|s| !s.task.is_finished() && !*s.dead.borrow())
    }

    /// The ids of the desktops whose fake agent serves.
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.shared.servers)
            .iter()
            .filter(|(_, s)| !s.task.is_finished() && !*s.dead.borrow())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Ends the desktop's agent as a crash would: the gateway is not told, and calls under way
    /// fail with UNAVAILABLE. `ended` answers why from now on.
    pub fn kill(&self, desktop: &str) {
        self.shut(desktop);
    }

    fn shut(&self, desktop: &str) {
        let server = lock(&self.shared.servers).remove(desktop);
        if let Some(server) = server {
            // The server stops accepting at once and ends its calls under way (see `record`);
            // it then waits for clients to leave its connections, which need not hold up the
            // caller, but is cut off if they take long.
            let _ = server.dead.send(true);
            let _ = std::fs::remove_file(&server.socket);
            let mut task = server.task;
            tokio::spawn(async move {
                if tokio::time::timeout(Duration::from_secs(5), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            });
        }
    }

    fn take_fault(&self, method: &'static str) -> (Option<Duration>, Option<Status>) {
        let delay = lock(&self.shared.delays)
            .get_mut(method)
            .and_then(VecDeque::pop_front);
        let failure = lock(&self.shared.failures)
            .get_mut(method)
            .and_then(VecDeque::pop_front);
        (delay, failure)
    }
}

#[tonic::async_trait]
impl Runtime for FakeRuntime {
    async fn start(&self, spec: &DesktopSpec) -> Result<Target, RuntimeError> {
        lock(&self.shared.events).push(Event::Start(spec.clone()));
        if let Some(error) = lock(&self.shared.start_failures).pop_front() {
            return Err(error);
        }
        // A start of a running desktop starts it afresh, as a real runtime would.
        self.shut(&spec.id);
        let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed);
        let socket = self.shared.dir.join(format!("{}-{generation}.sock", spec.id));
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long for a Unix socket: {}",
            socket.display()
        );
        {
            let mut unreachable = lock(&self.shared.unreachable_starts);
            if *unreachable > 0 {
                *unreachable -= 1;
                return Ok(Target::Unix(socket));
            }
        }
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(|e| RuntimeError::Failed(format!("fake agent bind {}: {e}", socket.display())))?;
        let (dead, dead_rx) = watch::channel(false);
        let stub = Stub {
            desktop: spec.id.clone(),
            width: spec.width,
            height: spec.height,
            runtime: self.clone(),
            dead: dead_rx.clone(),
            cursor: Arc::new(Mutex::new((spec.width as i32 / 2, spec.height as i32 / 2))),
        };
        let files = FakeFiles(stub.clone());
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let next = listener.accept().await.map(|(stream, _)| stream);
            Some((next, listener))
        });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AgentServer::new(stub))
                .add_service(FilesServer::new(files))
                .serve_with_incoming_shutdown(incoming, until_dead(dead_rx))
                .await;
        });
        lock(&self.shared.servers).insert(
            spec.id.clone(),
            Server {
                dead,
                task,
                socket: socket.clone(),
            },
        );
        Ok(Target::Unix(socket))
    }

    async fn copy_home(&self, from: &str, to: &DesktopSpec) -> Result<(), RuntimeError> {
        lock(&self.shared.events).push(Event::CopyHome(from.to_string(), to.id.clone()));
        Ok(())
    }

    async fn resize(&self, spec: &DesktopSpec) -> Result<(), RuntimeError> {
        lock(&self.shared.events).push(Event::Resize(spec.clone()));
        Ok(())
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        lock(&self.shared.events).push(Event::Stop(id.to_string()));
        self.shut(id);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        lock(&self.shared.events).push(Event::Remove(id.to_string()));
        self.shut(id);
        Ok(())
    }

    async fn ended(&self, id: &str) -> Option<String> {
        (!self.is_running(id)).then(|| "its agent was killed".to_string())
    }

    async fn found(&self) -> Result<Vec<Found>, RuntimeError> {
        Ok(Vec::new())
    }

    fn outlives_gateway(&self) -> bool {
        false
    }
}

/// Resolves once the server's desktop is stopped or killed.
async fn until_dead(mut dead: watch::Receiver<bool>) {
    let _ = dead.wait_for(|d| *d).await;
}

/// An 8×8 grey baseline JPEG (checked to decode with libjpeg-turbo).
pub const TINY_JPEG: &[u8] = &[
    0xff, 0xd8, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0xff, 0xc0, 0x00, 0x0b, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00, 0xff, 0xc4, 0x00,
    0x14, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xff, 0xc4, 0x00, 0x14, 0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01,
    0x00, 0x00, 0x3f, 0x00, 0x3f, 0xff, 0xd9,
];

/// An 8×8 grey PNG.
pub fn tiny_png() -> &'static [u8] {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 8, 8);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[0x80; 64]).unwrap();
        writer.finish().unwrap();
        out
    })
}

/// The agent service of one fake desktop.
#[derive(Clone)]
struct Stub {
    desktop: String,
    width: u32,
    height: u32,
    runtime: FakeRuntime,
    dead: watch::Receiver<bool>,
    /// Where the pointer is: the last point an action named.
    cursor: Arc<Mutex<(i32, i32)>>,
}

type Answer<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Stub {
    /// Records `call`, then applies what the test queued for its method: a delay (cut short if
    /// the desktop stops meanwhile, failing with the queued failure or UNAVAILABLE), then a
    /// failure.
    async fn record(&self, call: Call) -> Result<(), Status> {
        let method = call.method();
        lock(&self.runtime.shared.calls).push((self.desktop.clone(), call));
        let (delay, failure) = self.runtime.take_fault(method);
        if let Some(delay) = delay {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = until_dead(self.dead.clone()) => {
                    return Err(failure.unwrap_or_else(|| {
                        Status::unavailable("the fake desktop stopped during the call")
                    }));
                }
            }
        }
        match failure {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    /// Moves the pointer to `at` if given; answers where it is.
    fn point(&self, at: Option<&pb::Point>) -> Response<pb::PointerResponse> {
        let mut cursor = lock(&self.cursor);
        if let Some(p) = at {
            *cursor = (p.x, p.y);
        }
        Response::new(pb::PointerResponse {
            position: Some(pb::Point {
                x: cursor.0,
                y: cursor.1,
            }),
        })
    }

    fn exec_response(&self) -> pb::ExecResponse {
        lock(&self.runtime.shared.exec)
            .clone()
            .unwrap_or(pb::ExecResponse {
                exit_code: Some(0),
                duration_micros: 1000,
                ..Default::default()
            })
    }
}

/// The keys a combo presses, `repeat` times (0 means once).
fn keys_sent(r: &pb::KeyRequest) -> u32 {
    r.combo.split('+').count() as u32 * r.repeat.max(1)
}

#[tonic::async_trait]
impl Agent for Stub {
    async fn health(&self, _: Request<pb::HealthRequest>) -> Answer<pb::HealthResponse> {
        self.record(Call::Health).await?;
        Ok(Response::new(pb::HealthResponse {
            version: "fake".into(),
            uptime_seconds: 1.0,
            display_ready: true,
            display: ":99".into(),
        }))
    }

    async fn screen_info(&self, _: Request<pb::ScreenInfoRequest>) -> Answer<pb::ScreenInfoResponse> {
        self.record(Call::ScreenInfo).await?;
        Ok(Response::new(pb::ScreenInfoResponse {
            width: self.width,
            height: self.height,
            depth: 24,
            display: ":99".into(),
        }))
    }

    /// The size the real agent would answer (the region, scaled to fit the bounds), with a
    /// fixed 8×8 image of the asked format.
    async fn screenshot(&self, req: Request<pb::ScreenshotRequest>) -> Answer<pb::ScreenshotResponse> {
        let r = req.into_inner();
        self.record(Call::Screenshot(r)).await?;
        let (mut width, mut height) = r
            .region
            .map_or((self.width, self.height), |g| (g.width, g.height));
        let bound = |max: u32, side: u32| {
            if max == 0 {
                1.0
            } else {
                f64::from(max) / f64::from(side)
            }
        };
        let scale = bound(r.max_width, width)
            .min(bound(r.max_height, height))
            .min(1.0);
        if scale < 1.0 {
            width = ((f64::from(width) * scale).round() as u32).max(1);
            height = ((f64::from(height) * scale).round() as u32).max(1);
        }
        let png = r.format == pb::ImageFormat::Png as i32;
        Ok(Response::new(pb::ScreenshotResponse {
            image: if png { tiny_png() } else { TINY_JPEG }.to_vec(),
            format: if png {
                pb::ImageFormat::Png
            } else {
                pb::ImageFormat::Jpeg
            }
            .into(),
            width,
            height,
            capture_micros: 100,
            encode_micros: 100,
        }))
    }

    type WatchScreenStream = BoxStream<pb::Frame>;

    /// One frame, then nothing more until the desktop stops.
    async fn watch_screen(&self, req: Request<pb::WatchScreenRequest>) -> Answer<Self::WatchScreenStream> {
        self.record(Call::WatchScreen(req.into_inner())).await?;
        let frame = pb::Frame {
            jpeg: TINY_JPEG.to_vec(),
            width: self.width,
            height: self.height,
            sequence: 1,
            captured_at_micros: 0,
        };
        let frames = futures::stream::once(async move { Ok(frame) })
            .chain(futures::stream::pending())
            .take_until(until_dead(self.dead.clone()));
        Ok(Response::new(Box::pin(frames)))
    }

    async fn move_pointer(&self, req: Request<pb::MovePointerRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        self.record(Call::MovePointer(r)).await?;
        Ok(self.point(r.to.as_ref()))
    }

    async fn click(&self, req: Request<pb::ClickRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        self.record(Call::Click(r)).await?;
        Ok(self.point(r.at.as_ref()))
    }

    async fn press_button(&self, req: Request<pb::ButtonRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        self.record(Call::PressButton(r)).await?;
        Ok(self.point(r.at.as_ref()))
    }

    async fn release_button(&self, req: Request<pb::ButtonRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        self.record(Call::ReleaseButton(r)).await?;
        Ok(self.point(r.at.as_ref()))
    }

    async fn drag(&self, req: Request<pb::DragRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        self.record(Call::Drag(r.clone())).await?;
        Ok(self.point(r.path.last()))
    }

    async fn scroll(&self, req: Request<pb::ScrollRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        self.record(Call::Scroll(r)).await?;
        Ok(self.point(r.at.as_ref()))
    }

    async fn cursor_position(&self, _: Request<pb::CursorPositionRequest>) -> Answer<pb::PointerResponse> {
        self.record(Call::CursorPosition).await?;
        Ok(self.point(None))
    }

    async fn type_text(&self, req: Request<pb::TypeTextRequest>) -> Answer<pb::KeyboardResponse> {
        let r = req.into_inner();
        let sent = r.text.chars().count() as u32;
        self.record(Call::TypeText(r)).await?;
        Ok(Response::new(pb::KeyboardResponse { sent }))
    }

    async fn press_key(&self, req: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        let r = req.into_inner();
        let sent = keys_sent(&r);
        self.record(Call::PressKey(r)).await?;
        Ok(Response::new(pb::KeyboardResponse { sent }))
    }

    async fn key_down(&self, req: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        let r = req.into_inner();
        let sent = keys_sent(&r);
        self.record(Call::KeyDown(r)).await?;
        Ok(Response::new(pb::KeyboardResponse { sent }))
    }

    async fn key_up(&self, req: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        let r = req.into_inner();
        let sent = keys_sent(&r);
        self.record(Call::KeyUp(r)).await?;
        Ok(Response::new(pb::KeyboardResponse { sent }))
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> Answer<pb::ExecResponse> {
        self.record(Call::Exec(req.into_inner())).await?;
        Ok(Response::new(self.exec_response()))
    }

    type ExecStreamStream = BoxStream<pb::ExecEvent>;

    /// The exec answer as a stream: its stdout, its stderr, then the exit.
    async fn exec_stream(&self, req: Request<pb::ExecRequest>) -> Answer<Self::ExecStreamStream> {
        self.record(Call::ExecStream(req.into_inner())).await?;
        let mut exit = self.exec_response();
        let mut events = Vec::new();
        for (bytes, stdout) in [
            (std::mem::take(&mut exit.stdout), true),
            (std::mem::take(&mut exit.stderr), false),
        ] {
            if !bytes.is_empty() {
                events.push(Ok(pb::ExecEvent {
                    event: Some(if stdout {
                        pb::exec_event::Event::Stdout(bytes)
                    } else {
                        pb::exec_event::Event::Stderr(bytes)
                    }),
                }));
            }
        }
        events.push(Ok(pb::ExecEvent {
            event: Some(pb::exec_event::Event::Exit(exit)),
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }
}

/// The files service of one fake desktop: every path names an 8-byte file `"fake"` holds
/// twice, directories list nothing, writes take what they are sent.
struct FakeFiles(Stub);

const FAKE_FILE: &[u8] = b"fakefake";

fn fake_entry(path: &str) -> pb::Entry {
    pb::Entry {
        name: path.rsplit('/').next().unwrap_or(path).to_string(),
        kind: pb::entry::Kind::File as i32,
        size: FAKE_FILE.len() as u64,
        mode: 0o644,
        modified_unix_ms: 0,
    }
}

#[tonic::async_trait]
impl Files for FakeFiles {
    async fn list(&self, req: Request<pb::ListRequest>) -> Answer<pb::ListResponse> {
        self.0.record(Call::FilesList(req.into_inner())).await?;
        Ok(Response::new(pb::ListResponse::default()))
    }

    async fn stat(&self, req: Request<pb::StatRequest>) -> Answer<pb::Entry> {
        let r = req.into_inner();
        let entry = fake_entry(&r.path);
        self.0.record(Call::FilesStat(r)).await?;
        Ok(Response::new(entry))
    }

    type ReadStream = BoxStream<pb::Chunk>;

    async fn read(&self, req: Request<pb::ReadRequest>) -> Answer<Self::ReadStream> {
        self.0.record(Call::FilesRead(req.into_inner())).await?;
        let chunk = pb::Chunk {
            data: FAKE_FILE.to_vec(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(chunk)]))))
    }

    /// Takes the whole stream first, so a queued failure answers a write the gateway sent.
    async fn write(&self, req: Request<tonic::Streaming<pb::WriteChunk>>) -> Answer<pb::WriteResponse> {
        use pb::write_chunk::Part;
        let mut parts = req.into_inner();
        let (mut start, mut size) = (pb::WriteStart::default(), 0u64);
        while let Some(chunk) = parts.next().await {
            match chunk?.part {
                Some(Part::Start(s)) => start = s,
                Some(Part::Data(data)) => size += data.len() as u64,
                Some(Part::Finish(_)) | None => {}
            }
        }
        self.0.record(Call::FilesWrite(start, size)).await?;
        Ok(Response::new(pb::WriteResponse { size }))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Answer<pb::RemoveResponse> {
        self.0.record(Call::FilesRemove(req.into_inner())).await?;
        Ok(Response::new(pb::RemoveResponse {}))
    }
}
