//! Running bash commands and Python programs, each in its own process group with the
//! desktop's environment, a hard timeout, and capped output ([`crate::output`]), returned whole
//! or streamed as it comes.
//!
//! The interpreter is made a child subreaper, so every process the command starts stays in its
//! tree while it runs, whether it calls setsid, double-forks or changes its process group. A run
//! ends when the interpreter exits. If it does so by itself, what it started in the background
//! keeps running, untouched, with its stdout and stderr still usable (they go to a drain). On
//! timeout the interpreter and every process of its tree are frozen, then killed (SIGKILL; no
//! grace), and the call answers once they are gone; programs left running by earlier calls are
//! no longer in any run's tree and are not touched.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

use crate::error::{AgentError, Result};
pub use crate::output::Stream;
use crate::output::{self, Chunks, Drains};
use crate::reaper::{self, Children};
use crate::warm::{self, Pipes, WarmPython};

pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// Longest source accepted; past this the kernel refuses the argument anyway.
pub const MAX_SOURCE_BYTES: usize = 128 * 1024 - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    Bash,
    Python,
}

/// A validated run request.
#[derive(Debug, Clone)]
pub struct Spec {
    pub interpreter: Interpreter,
    pub source: String,
    pub timeout: Duration,
    pub cwd: Option<PathBuf>,
    pub env: HashMap<String, String>,
    pub max_output: usize,
}

impl Spec {
    pub fn validate(self) -> Result<Self> {
        if self.source.len() > MAX_SOURCE_BYTES {
            return Err(AgentError::InvalidArgument(format!(
                "source is {} bytes; the limit is {MAX_SOURCE_BYTES}",
                self.source.len()
            )));
        }
        if self.source.contains('\0') {
            return Err(AgentError::InvalidArgument(
                "source must not contain NUL bytes".into(),
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return Err(AgentError::InvalidArgument(
                "timeout must be between 1 ms and 1 hour".into(),
            ));
        }
        if let Some(cwd) = self.cwd.as_ref().filter(|c| !c.is_dir()) {
            return Err(AgentError::InvalidArgument(format!(
                "cwd {} is not a directory",
                cwd.display()
            )));
        }
        if self.env.keys().any(|k| k.is_empty() || k.contains(['=', '\0']))
            || self.env.values().any(|v| v.contains('\0'))
        {
            return Err(AgentError::InvalidArgument(
                "env names must be non-empty without '=' or NUL".into(),
            ));
        }
        Ok(self)
    }
}

/// The end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub truncated: bool,
    pub duration: Duration,
}

/// Runs processes for the agent, with the desktop's environment.
#[derive(Clone)]
pub struct Runner {
    pub children: Children,
    /// Kills timed-out runs' trees on a thread that exists already (see [`crate::reaper`]).
    pub reaper: reaper::Reaper,
    /// Where the pipes of ended runs go while background processes still hold them.
    pub drains: Drains,
    pub display: String,
    pub home: PathBuf,
    /// Forks Python runs from a warm interpreter when it can ([`crate::warm`]).
    pub python: WarmPython,
}

/// A run's interpreter: a child of the agent, or a child the warm Python forked.
enum Process {
    /// The registration keeps the reaper off the child until it is waited for.
    Cold {
        child: tokio::process::Child,
        _registered: reaper::Owned,
    },
    Warm(warm::Run),
}

impl Process {
    fn pid(&self) -> Option<i32> {
        match self {
            Process::Cold { child, .. } => child.id().map(|p| p as i32),
            Process::Warm(run) => Some(run.pid),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Process::Cold { child, .. } => child.wait().await,
            Process::Warm(run) => run.wait().await,
        }
    }
}

impl Runner {
    /// The warm Python's settings: what a cold Python run starts with.
    pub fn warm_setting(&self) -> warm::Setting {
        warm::Setting {
            interpreter: on_path("python3"),
            display: self.display.clone(),
            home: self.home.clone(),
            children: self.children.clone(),
        }
    }

    fn cwd<'a>(&'a self, spec: &'a Spec) -> &'a std::path::Path {
        spec.cwd.as_deref().unwrap_or(&self.home)
    }

    fn command(&self, spec: &Spec, stdout: OwnedFd, stderr: OwnedFd) -> tokio::process::Command {
        let (program, flag) = match spec.interpreter {
            Interpreter::Bash => ("bash", "-c"),
            Interpreter::Python => ("python3", "-c"),
        };
        let mut cmd = tokio::process::Command::new(on_path(program));
        cmd.arg(flag)
            .arg(&spec.source)
            .current_dir(self.cwd(spec))
            .env("DISPLAY", &self.display)
            .env("HOME", &self.home)
            .env("PYTHONUNBUFFERED", "1")
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(false);
        subreaper_on_exec(&mut cmd);
        cmd
    }

    /// Runs to the end. With `live`, output chunks go there as they are read (still capped)
    /// and the outcome carries no output of its own; when its receiver goes away (the client
    /// of a streamed run cancelled it), the run is ended as a timed-out one is, as closing a
    /// terminal ends what runs in it.
    ///
    /// The call's output is what the pipes carried until the interpreter exited, plus what
    /// was in them at that moment; see [`crate::output`] for what happens to the rest.
    pub async fn run(&self, spec: Spec, live: Option<Chunks>) -> Result<Outcome> {
        // A task of its own: a caller of a run without `live` that goes away (a cancelled
        // call) leaves the run to end as it would, timeout enforced and pipes read, rather
        // than closing them under it.
        let runner = self.clone();
        tokio::spawn(async move { runner.run_to_end(spec, live).await })
            .await
            .map_err(|e| AgentError::Process(std::io::Error::other(e)))?
    }

    /// Starts the run's interpreter: forked from the warm Python when it can, else spawned.
    async fn start(&self, spec: &Spec) -> Result<(Process, [(pipe::Receiver, Stream); 2])> {
        let pipes = Pipes::new()?;
        let pipes = match spec.interpreter {
            Interpreter::Python if !warm::changes_startup(&spec.env) => match self.python.fork(pipes).await {
                Ok((mut run, readers)) => {
                    if let Err(e) = run.begin(&spec.source, self.cwd(spec), &spec.env).await {
                        self.kill(&mut Process::Warm(run)).await;
                        return Err(e.into());
                    }
                    return Ok((Process::Warm(run), readers));
                }
                Err(pipes) => pipes,
            },
            _ => pipes,
        };
        let mut cmd = self.command(spec, pipes.stdout, pipes.stderr);
        let (child, registered) = self.children.spawn(&mut cmd)?;
        // The command holds the write ends until dropped: the readers' EOF waits for that.
        drop(cmd);
        let process = Process::Cold {
            child,
            _registered: registered,
        };
        Ok((process, pipes.readers))
    }

    async fn run_to_end(self, spec: Spec, live: Option<Chunks>) -> Result<Outcome> {
        let started = Instant::now();
        let (mut child, pipes) = self.start(&spec).await?;

        let (exited_tx, exited_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel(16);
        let mut readers = tokio::task::JoinSet::new();
        for (pipe, stream) in pipes {
            let mut exited = exited_rx.clone();
            readers.spawn(output::read_output(
                pipe,
                stream,
                spec.max_output,
                tx.clone(),
                async move {
                    let _ = exited.wait_for(|e| *e).await;
                },
                self.drains.clone(),
            ));
        }
        drop(tx);

        let mut out = Outcome::default();
        let deadline = tokio::time::Instant::now() + spec.timeout;
        let status = loop {
            tokio::select! {
                status = child.wait() => match status {
                    Ok(status) => break Some(status),
                    // The warm Python ended under the run: what it started must not outlive it.
                    Err(e) => {
                        self.kill(&mut child).await;
                        return Err(e.into());
                    }
                },
                Some(chunk) = rx.recv() => deliver(&mut out, live.as_ref(), chunk).await,
                _ = tokio::time::sleep_until(deadline) => break None,
                () = receiver_gone(live.as_ref()) => break None,
            }
        };
        let status = match status {
            Some(s) => s,
            None => {
                out.timed_out = true;
                self.kill(&mut child).await
            }
        };
        // The readers take what is in the pipes now and hand them off; their end closes `rx`.
        let _ = exited_tx.send(true);
        while let Some(chunk) = rx.recv().await {
            deliver(&mut out, live.as_ref(), chunk).await;
        }
        while let Some(truncated) = readers.join_next().await {
            out.truncated |= truncated.unwrap_or(false);
        }
        out.exit_code = status.code();
        out.signal = status.signal();
        out.duration = started.elapsed();
        Ok(out)
    }

    /// Ends a timed-out run: the interpreter and every process it started
    /// ([`reaper::kill_tree`]), and answers the interpreter's status.
    async fn kill(&self, child: &mut Process) -> ExitStatus {
        if let Some(pid) = child.pid() {
            self.reaper.kill_tree(pid).await;
        }
        let status = child
            .wait()
            .await
            .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        // The tree's zombies went to the agent when the interpreter died.
        self.reaper.reap_orphans().await;
        status
    }
}

/// `program` as found on the agent's own `PATH` (so a run's `env` may set `PATH` without
/// hiding its interpreter); the bare name when it is not found.
fn on_path(program: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| program.into())
}

/// Makes the interpreter a child subreaper (the attribute is kept across execve), so the
/// orphans of the processes it starts are re-parented to it, not to the agent, while it runs.
#[allow(unsafe_code)]
fn subreaper_on_exec(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec; it makes one prctl system
    // call, which is async-signal-safe, and neither allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from));
    }
}

/// Resolves when the live stream's receiver is gone; never without a live stream.
async fn receiver_gone(live: Option<&Chunks>) {
    match live {
        Some(live) => live.closed().await,
        None => std::future::pending().await,
    }
}

/// Hands a chunk to the live stream, or keeps it in the outcome when there is none.
async fn deliver(out: &mut Outcome, live: Option<&Chunks>, chunk: (Stream, Vec<u8>)) {
    match (live, chunk.0) {
        (Some(live), _) => {
            // A reader that went away is seen by `receiver_gone`, which ends the run.
            let _ = live.send(chunk).await;
        }
        (None, Stream::Stdout) => out.stdout.extend_from_slice(&chunk.1),
        (None, Stream::Stderr) => out.stderr.extend_from_slice(&chunk.1),
    }
}
