//! Test harness: a real `orgo-agent` with its own Xvfb on a free display, reached over a Unix
//! socket, plus X11 test windows that record exactly what the X server delivers to them.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orgo_proto::connect::Agent as AgentClient;
use orgo_proto::connect::connect_unix;
use orgo_proto::v1 as pb;
use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::*;
use x11rb::rust_connection::RustConnection;

/// A running agent that owns a fresh Xvfb; killed (with its desktop) on drop.
pub struct Agent {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub display: String,
    pub client: AgentClient,
}

fn scratch_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("orgo-agent-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Agent {
    /// Starts an agent with its own Xvfb and the given window manager (`none` for tests that
    /// place their own windows).
    pub async fn start(wm: &str) -> Agent {
        Self::start_with(wm, &[]).await
    }

    pub async fn start_with(wm: &str, extra: &[&str]) -> Agent {
        let mut args = vec!["--spawn-xvfb", "1280x800x24", "--wm", wm];
        args.extend_from_slice(extra);
        Self::launch(&args).await
    }

    /// An agent attached to a display it did not start (`--display`).
    pub async fn attach(display: &str) -> Agent {
        Self::launch(&["--display", display]).await
    }

    async fn launch(args: &[&str]) -> Agent {
        let dir = scratch_dir("agent");
        let socket = dir.join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_orgo-agent"))
            .args(args)
            .arg("--home")
            .arg(&dir)
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("start orgo-agent");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = loop {
            if let (true, Ok(c)) = (socket.exists(), connect_unix(socket.clone()).await) {
                break c;
            }
            assert!(Instant::now() < deadline, "agent did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let health = client.health(pb::HealthRequest {}).await.unwrap().into_inner();
        Agent {
            child,
            dir,
            socket,
            display: health.display,
            client,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for a clean exit; answers the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    pub async fn bash(&mut self, command: &str, timeout_ms: u32) -> pb::ExecResponse {
        self.client
            .exec(pb::ExecRequest {
                interpreter: pb::Interpreter::Bash.into(),
                source: command.into(),
                timeout_millis: timeout_ms,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn python(&mut self, code: &str, timeout_ms: u32) -> pb::ExecResponse {
        self.client
            .exec(pb::ExecRequest {
                interpreter: pb::Interpreter::Python.into(),
                source: code.into(),
                timeout_millis: timeout_ms,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain Xvfb on a free display, standing for an X server someone else runs; killed on drop.
pub struct Xvfb {
    child: Child,
    pub display: String,
}

impl Xvfb {
    pub fn start() -> Xvfb {
        // `-noreset`: the server would otherwise forget what a test set once its client left.
        let mut child = Command::new("Xvfb")
            .args(["-screen", "0", "640x480x24", "-noreset", "-nolisten", "tcp"])
            .args(["-displayfd", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        Xvfb {
            display: format!(":{}", line.trim()),
            child,
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of `parent`'s children whose command is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let name = stat.split(['(', ')']).nth(1).unwrap_or("");
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1));
            name == comm && ppid == Some(&parent.to_string())
        })
        .collect()
}

/// Something a test window received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// A key press: its keycode, the keysym it means under the mapping in force when it was
    /// read (Shift level applied), and the modifier state.
    Key {
        keycode: u8,
        keysym: u32,
        state: u16,
    },
    KeyUp {
        keycode: u8,
    },
    Press {
        button: u8,
        x: i16,
        y: i16,
    },
    Release {
        button: u8,
        x: i16,
        y: i16,
    },
    Motion {
        x: i16,
        y: i16,
    },
}

/// An override-redirect window at a fixed place, painted in two colours (left half `left`,
/// right half `right`), focused, recording its events on a thread of its own.
pub struct TestWindow {
    pub conn: Arc<RustConnection>,
    pub window: Window,
    pub events: Arc<Mutex<Vec<Got>>>,
    /// X server time (ms) of every button press, in order.
    pub press_times: Arc<Mutex<Vec<u32>>>,
}

fn keysym_at(map: &GetKeyboardMappingReply, min: u8, keycode: u8, state: u16) -> u32 {
    let per = map.keysyms_per_keycode as usize;
    let row = &map.keysyms[(keycode - min) as usize * per..][..per];
    let shift = state & u16::from(KeyButMask::SHIFT) != 0;
    let first = row[0];
    if !shift {
        return first;
    }
    if row.len() > 1 && row[1] != 0 {
        return row[1];
    }
    match char::from_u32(first) {
        Some(c) if first < 0x100 && c.is_lowercase() => c.to_uppercase().next().unwrap() as u32,
        _ => first,
    }
}

impl TestWindow {
    pub fn open(display: &str, x: i16, y: i16, w: u16, h: u16, left: u32, right: u32) -> TestWindow {
        let (conn, screen_num) = x11rb::connect(Some(display)).expect("connect to test display");
        let screen = conn.setup().roots[screen_num].clone();
        let window = conn.generate_id().unwrap();
        let mask = EventMask::KEY_PRESS
            | EventMask::KEY_RELEASE
            | EventMask::BUTTON_PRESS
            | EventMask::BUTTON_RELEASE
            | EventMask::POINTER_MOTION
            | EventMask::STRUCTURE_NOTIFY;
        conn.create_window(
            screen.root_depth,
            window,
            screen.root,
            x,
            y,
            w,
            h,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new()
                .background_pixel(left)
                .override_redirect(1)
                .event_mask(mask),
        )
        .unwrap();
        let half = conn.generate_id().unwrap();
        conn.create_window(
            screen.root_depth,
            half,
            window,
            (w / 2) as i16,
            0,
            w - w / 2,
            h,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            // Events in the right half propagate to the parent, so one window records them all.
            &CreateWindowAux::new().background_pixel(right),
        )
        .unwrap();
        conn.map_window(half).unwrap();
        conn.map_window(window).unwrap();
        conn.flush().unwrap();
        loop {
            if matches!(conn.wait_for_event().unwrap(), Event::MapNotify(e) if e.window == window) {
                break;
            }
        }
        conn.set_input_focus(InputFocus::PARENT, window, x11rb::CURRENT_TIME)
            .unwrap();
        conn.get_input_focus().unwrap().reply().unwrap();
        let conn = Arc::new(conn);
        let events = Arc::new(Mutex::new(Vec::new()));
        let press_times = Arc::new(Mutex::new(Vec::new()));
        let (c, ev, times) = (conn.clone(), events.clone(), press_times.clone());
        std::thread::spawn(move || {
            let min = c.setup().min_keycode;
            let max = c.setup().max_keycode;
            let fetch = |c: &RustConnection| {
                c.get_keyboard_mapping(min, max - min + 1)
                    .unwrap()
                    .reply()
                    .unwrap()
            };
            let mut map = fetch(&c);
            // Like Xlib: a mapping change is picked up when the client reads the notice.
            while let Ok(event) = c.wait_for_event() {
                let got = match event {
                    Event::MappingNotify(_) => {
                        match c.get_keyboard_mapping(min, max - min + 1).map(|r| r.reply()) {
                            Ok(Ok(m)) => map = m,
                            _ => return,
                        }
                        continue;
                    }
                    Event::KeyPress(e) => Got::Key {
                        keycode: e.detail,
                        keysym: keysym_at(&map, min, e.detail, e.state.into()),
                        state: e.state.into(),
                    },
                    Event::KeyRelease(e) => Got::KeyUp { keycode: e.detail },
                    Event::ButtonPress(e) => {
                        times.lock().unwrap().push(e.time);
                        Got::Press {
                            button: e.detail,
                            x: e.event_x,
                            y: e.event_y,
                        }
                    }
                    Event::ButtonRelease(e) => Got::Release {
                        button: e.detail,
                        x: e.event_x,
                        y: e.event_y,
                    },
                    Event::MotionNotify(e) => Got::Motion {
                        x: e.event_x,
                        y: e.event_y,
                    },
                    _ => continue,
                };
                ev.lock().unwrap().push(got);
            }
        });
        TestWindow {
            conn,
            window,
            events,
            press_times,
        }
    }

    /// Takes what was recorded once `done` holds for it, or after a generous wait.
    pub fn take_when(&self, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let mut ev = self.events.lock().unwrap();
                if done(&ev) || Instant::now() > deadline {
                    return std::mem::take(&mut *ev);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The text the recorded key presses spell.
    pub fn text(events: &[Got]) -> String {
        events
            .iter()
            .filter_map(|g| match g {
                Got::Key { keysym, .. } => match *keysym {
                    0xff0d => Some('\n'),
                    0xff09 => Some('\t'),
                    0xffe1..=0xffee => None,
                    s => xkeysym::Keysym::new(s).key_char(),
                },
                _ => None,
            })
            .collect()
    }
}

/// Every class of character a user types, on one line and over several.
pub const CORPUS: &[&str] = &[
    "Hello, world! 0123456789 ~`!@#$%^&*()_+-=[]{}|;':\",./<>?\\",
    "Crème brûlée, naïve façade, Ångström, Øresund, ß, ¿Qué?",
    "Ελληνικά: αβγδε ΑΒΓΔΕ — Кириллица: привет МИР",
    "中文输入测试，日本語のテキスト、한국어 텍스트",
    "emoji 😀🚀👍🏽 and symbols ∑∫√∞≠≤≥ €£¥ ™©® →←↑↓",
    "two\nlines\tand a tab",
];

/// A real client that writes what the keyboard types into a file, line by line: an xterm in a
/// UTF-8 locale running `cat`, or a Tk text widget (`tk_typist.py`). Killed on drop.
pub struct Typist {
    child: Child,
    pub file: PathBuf,
}

impl Typist {
    fn spawn(command: &mut Command, file: PathBuf) -> Typist {
        std::fs::write(&file, "").unwrap();
        let child = command
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the typing client");
        Typist { child, file }
    }

    /// An xterm running `cat >> file`, echo on as a terminal has it.
    pub fn xterm(display: &str, dir: &std::path::Path) -> Typist {
        let file = dir.join("xterm-typed.txt");
        let mut command = Command::new("xterm");
        command
            .args(["-geometry", "100x10+0+0", "-e", "sh", "-c"])
            .arg(format!("exec cat >> '{}'", file.display()))
            .env("DISPLAY", display);
        Self::spawn(&mut command, file)
    }

    /// A Tk text widget whose every Return appends its text to the file.
    pub fn tk(display: &str, dir: &std::path::Path) -> Typist {
        let file = dir.join("tk-typed.txt");
        let mut command = Command::new("python3");
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tk_typist.py"))
            .arg(&file)
            .env("DISPLAY", display);
        Self::spawn(&mut command, file)
    }

    pub fn clear(&self) {
        std::fs::write(&self.file, "").unwrap();
    }

    /// The file once it holds `n` complete lines (or whatever it holds after a generous wait).
    pub fn lines(&self, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.file).unwrap_or_default();
            if text.matches('\n').count() >= n || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The first complete line, waiting a while for it.
    pub fn line(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&self.file).unwrap_or_default();
            if let Some((line, _)) = text.split_once('\n') {
                return Some(line.to_string());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Types a probe line until it arrives (the window is mapped and focused), then empties the
    /// file.
    pub async fn wait_ready(&self, client: &mut AgentClient) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.clear();
            client
                .type_text(pb::TypeTextRequest {
                    text: "ready\n".into(),
                    delay_millis: 0,
                })
                .await
                .unwrap();
            if self.line().as_deref() == Some("ready") {
                self.clear();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the typing client never took keyboard input"
            );
        }
    }
}

impl Drop for Typist {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
