//! The warm Python: per desktop, a fork server (`fork_server.py`) started once the display is
//! up, which has already imported what agents' programs use (PyAutoGUI, Pillow, python-xlib)
//! and forks one child per Python run — a few ms where a cold `python3 -c` takes tens, and an
//! `import pyautogui` hundreds.
//!
//! A run through it keeps a cold run's semantics: the desktop's user; a process group of its
//! own; a child subreaper, so [`reaper::kill_tree`](crate::reaper::kill_tree) ends its whole
//! tree on timeout; stdin `/dev/null`; the pipes [`crate::output`] reads; the run's cwd and
//! environment over the agent's; a fresh `__main__`, `sys.argv == ["-c"]`, and tracebacks, exit
//! codes and `SystemExit` as `python3 -c` gives them. The server never runs a run's code
//! itself, so each child forks from the same pristine state and nothing one run does (a
//! variable, a monkeypatch, an import) is seen by the next. What is shared is what fork shares:
//! the modules already imported and the interpreter's string-hash seed. Modules whose import
//! opened an X connection get a fresh one in each child, on first use, with the run's
//! `DISPLAY`. A run whose environment changes how an interpreter starts (`PYTHON*`, `LANG`,
//! `LC_*`, `HOME`: its user site-packages) runs cold, as does every run while the server is
//! starting or after it failed; a server that ends is started again (after a backoff that
//! grows while it keeps failing). A server that failed to fork is taken out of use at once and
//! ended once the runs it forked are over, so a single failure ends no run under way.
//!
//! Protocol (one Unix socket pair, the server's fd 3): per run, the agent sends one byte with
//! three descriptors — the run's own socket and its stdout and stderr pipes. On the run's
//! socket the server answers the child's pid, later its raw wait status, one decimal line each,
//! and reaps the child only once the agent closes that socket (so the pid cannot be reused
//! while the agent may still signal it). The agent writes the request (length-prefixed JSON)
//! only after it has the pid: a run the agent gave up on before that reads an empty request
//! and ends without running anything, so a run never happens twice.

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::output::Stream;
use crate::reaper::Children;

const FORK_SERVER: &str = include_str!("fork_server.py");
/// How long the server may take to import what it preloads and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fork may take before the run goes cold and the server is started again.
const FORK_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LONGEST_BACKOFF: Duration = Duration::from_secs(30);

/// What the server is started with, as a cold run is.
#[derive(Clone)]
pub struct Setting {
    pub interpreter: PathBuf,
    pub display: String,
    pub home: PathBuf,
    pub children: Children,
}

/// The desktop's warm Python, shared by every run; see the module docs.
#[derive(Clone, Default)]
pub struct WarmPython {
    ready: Arc<Mutex<Option<Arc<Server>>>>,
}

struct Server {
    control: UnixStream,
    /// The server's process, killed (it and its process group) when the last user of the
    /// server lets it go, unless it already ended (and was reaped: its pid may be another's).
    pid: i32,
    exited: AtomicBool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.load(Ordering::Relaxed) {
            return;
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A run the server forked: its pid, and where its status comes. It keeps the server alive.
pub struct Run {
    pub pid: i32,
    socket: BufReader<UnixStream>,
    _server: Arc<Server>,
}

impl WarmPython {
    /// Keeps a server running while `display_ready` says the display is up, starting it again
    /// whenever it ends; until `stop`.
    pub fn supervise(
        &self,
        setting: Setting,
        mut display_ready: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let ready = self.ready.clone();
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                if *stop.borrow() {
                    break;
                }
                // PyAutoGUI connects at import: preload once the display answers.
                if display_ready.wait_for(|up| *up).await.is_err() {
                    break;
                }
                let started = tokio::time::Instant::now();
                match start(&setting).await {
                    Ok((server, mut child, owned)) => {
                        // Only `ready` and the runs hold the server: when a failed fork takes
                        // it out of use, the last of them ends it, and this wait ends.
                        let server = Arc::new(server);
                        let watched = Arc::downgrade(&server);
                        *ready.lock().expect("warm lock") = Some(server);
                        tokio::select! {
                            status = child.wait() => {
                                if let Some(server) = watched.upgrade() {
                                    server.exited.store(true, Ordering::Relaxed);
                                }
                                tracing::warn!(?status, "the warm Python ended; runs are cold until it is back");
                            }
                            _ = stop.wait_for(|s| *s) => {}
                        }
                        *ready.lock().expect("warm lock") = None;
                        drop(owned);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot start the warm Python; runs are cold"),
                }
                // A server that lived a while was fine: start again soon. One that keeps
                // failing is tried less and less often.
                if started.elapsed() > LONGEST_BACKOFF {
                    backoff = FIRST_BACKOFF;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                backoff = (backoff * 2).min(LONGEST_BACKOFF);
            }
        });
    }

    /// Forks a run with these pipes, or answers `None` (with the pipes back) when the server
    /// is not ready or fails to fork: the caller runs it cold. A server that fails is ended,
    /// and the supervisor starts another.
    pub async fn fork(&self, pipes: Pipes) -> Result<(Run, [(pipe::Receiver, Stream); 2]), Pipes> {
        let Some(server) = self.ready.lock().expect("warm lock").clone() else {
            return Err(pipes);
        };
        match fork_on(&server, &pipes).await {
            Ok(run) => Ok((run, pipes.readers)),
            Err(e) => {
                tracing::warn!(error = %e, "the warm Python failed to fork; this run is cold");
                // Out of use now; ended (which ends the supervisor's wait, and it starts
                // another) once the runs it forked let it go.
                let mut ready = self.ready.lock().expect("warm lock");
                if ready.as_ref().is_some_and(|s| Arc::ptr_eq(s, &server)) {
                    *ready = None;
                }
                Err(pipes)
            }
        }
    }
}

/// A run's output pipes: the write ends (blocking) for the child, the read ends for the
/// agent's readers.
pub struct Pipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub readers: [(pipe::Receiver, Stream); 2],
}

impl Pipes {
    pub fn new() -> std::io::Result<Pipes> {
        let (out_w, out_r) = pipe::pipe()?;
        let (err_w, err_r) = pipe::pipe()?;
        Ok(Pipes {
            stdout: out_w.into_blocking_fd()?,
            stderr: err_w.into_blocking_fd()?,
            readers: [(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
        })
    }
}

async fn fork_on(server: &Arc<Server>, pipes: &Pipes) -> std::io::Result<Run> {
    let (ours, theirs) = StdUnixStream::pair()?;
    let fds = [
        theirs.as_raw_fd(),
        pipes.stdout.as_raw_fd(),
        pipes.stderr.as_raw_fd(),
    ];
    // Non-blocking: a server that stopped reading fails the fork, never blocks the agent.
    sendmsg::<()>(
        server.control.as_raw_fd(),
        &[IoSlice::new(b"r")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    let mut socket = BufReader::new(UnixStream::from_std(ours)?);
    let mut line = String::new();
    match tokio::time::timeout(FORK_TIMEOUT, socket.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(std::io::Error::other("no pid within the fork timeout")),
    }
    let pid = line
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("the fork server answered {line:?}, not a pid")))?;
    Ok(Run {
        pid,
        socket,
        _server: server.clone(),
    })
}

impl Run {
    /// Sends the run what to do: it starts only now.
    pub async fn begin(
        &mut self,
        source: &str,
        cwd: &Path,
        env: &HashMap<String, String>,
    ) -> std::io::Result<()> {
        let request = serde_json::json!({ "source": source, "cwd": cwd, "env": env }).to_string();
        let mut framed = (request.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(request.as_bytes());
        self.socket.get_mut().write_all(&framed).await
    }

    /// Waits for the child's end; an error when the server ended first (the status is lost).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let mut line = String::new();
        self.socket.read_line(&mut line).await?;
        line.trim()
            .parse()
            .map(ExitStatus::from_raw)
            .map_err(|_| std::io::Error::other("the warm Python ended during the run"))
    }
}

/// Starts a server and waits until it has preloaded.
async fn start(setting: &Setting) -> std::io::Result<(Server, tokio::process::Child, crate::reaper::Owned)> {
    let (ours, theirs) = StdUnixStream::pair()?;
    let mut cmd = tokio::process::Command::new(&setting.interpreter);
    cmd.arg("-c")
        .arg(FORK_SERVER)
        .current_dir(&setting.home)
        .env("DISPLAY", &setting.display)
        .env("HOME", &setting.home)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    control_on_fd3(&mut cmd, theirs.as_raw_fd());
    let (child, owned) = setting.children.spawn(&mut cmd)?;
    drop(theirs);
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    ours.set_nonblocking(true)?;
    let mut server = Server {
        control: UnixStream::from_std(ours)?,
        pid,
        exited: AtomicBool::new(false),
    };
    let mut ready = [0u8];
    let said = tokio::time::timeout(READY_TIMEOUT, server.control.read_exact(&mut ready)).await;
    match said {
        Ok(Ok(_)) if ready == *b"r" => Ok((server, child, owned)),
        _ => Err(std::io::Error::other("the fork server did not say it was ready")),
    }
}

/// Gives the child `fd` as its fd 3, the control socket the server reads.
#[allow(unsafe_code)]
fn control_on_fd3(cmd: &mut tokio::process::Command, fd: i32) {
    // SAFETY: the closure runs in the forked child before exec and makes only dup2 or fcntl
    // calls, which are async-signal-safe; it neither allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            let done = if fd == 3 {
                // Already there: only the close-on-exec flag must go.
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Whether a run's environment changes how an interpreter starts, which a forked one cannot
/// follow: such runs are cold.
pub fn changes_startup(env: &HashMap<String, String>) -> bool {
    env.keys()
        .any(|k| k.starts_with("PYTHON") || k.starts_with("LC_") || k == "LANG" || k == "HOME")
}
