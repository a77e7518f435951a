//! Running bash commands and Python programs. Each run gets its own process group, a hard
//! timeout that kills the whole group (SIGTERM, a short grace, then SIGKILL to every member),
//! and stdout/stderr capped while they are read: the head is kept, the rest drained and counted
//! as truncated, so a flood costs neither memory nor a stuck pipe. Output can also be streamed
//! as it comes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::error::{AgentError, Result};
use crate::reaper::{self, Children};

pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// Longest source accepted; past this the kernel refuses the argument anyway.
pub const MAX_SOURCE_BYTES: usize = 128 * 1024 - 1;
const TERM_GRACE: Duration = Duration::from_millis(500);
/// How long output is still read after the command exits while background processes it
/// started keep the pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(150);

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

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
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
    pub display: String,
    pub home: PathBuf,
}

impl Runner {
    fn command(&self, spec: &Spec) -> tokio::process::Command {
        let (program, flag) = match spec.interpreter {
            Interpreter::Bash => ("bash", "-c"),
            Interpreter::Python => ("python3", "-c"),
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg(flag)
            .arg(&spec.source)
            .current_dir(spec.cwd.as_ref().unwrap_or(&self.home))
            .env("DISPLAY", &self.display)
            .env("HOME", &self.home)
            .env("PYTHONUNBUFFERED", "1")
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        cmd
    }

    /// Runs to the end. With `live`, output chunks go there as they are read (still capped)
    /// and the outcome carries no output of its own.
    pub async fn run(&self, spec: Spec, live: Option<mpsc::Sender<(Stream, Vec<u8>)>>) -> Result<Outcome> {
        let started = Instant::now();
        let mut cmd = self.command(&spec);
        let (mut child, _owned) = self.children.spawn(&mut cmd)?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(16);
        let mut readers = tokio::task::JoinSet::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let truncated = Arc::new(AtomicBool::new(false));
        readers.spawn(read_capped(
            stdout,
            Stream::Stdout,
            spec.max_output,
            tx.clone(),
            truncated.clone(),
        ));
        readers.spawn(read_capped(
            stderr,
            Stream::Stderr,
            spec.max_output,
            tx,
            truncated.clone(),
        ));

        let mut out = Outcome::default();
        let deadline = tokio::time::Instant::now() + spec.timeout;
        let status = loop {
            tokio::select! {
                status = child.wait() => break Some(status?),
                Some(chunk) = rx.recv() => deliver(&mut out, live.as_ref(), chunk).await,
                _ = tokio::time::sleep_until(deadline) => break None,
            }
        };
        let status = match status {
            Some(s) => s,
            None => {
                out.timed_out = true;
                kill_group(pgid, &mut child, &self.children).await
            }
        };
        // Output still in the pipes, unless something left running keeps them open.
        let drain_until = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(chunk) => deliver(&mut out, live.as_ref(), chunk).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(drain_until) => break,
            }
        }
        readers.abort_all();
        out.truncated = truncated.load(Ordering::Relaxed);
        use std::os::unix::process::ExitStatusExt;
        out.exit_code = status.code();
        out.signal = status.signal();
        out.duration = started.elapsed();
        Ok(out)
    }
}

/// Hands a chunk to the live stream, or keeps it in the outcome when there is none.
async fn deliver(
    out: &mut Outcome,
    live: Option<&mpsc::Sender<(Stream, Vec<u8>)>>,
    chunk: (Stream, Vec<u8>),
) {
    match (live, chunk.0) {
        (Some(live), _) => {
            // A reader that went away only stops the stream; the run still ends normally.
            let _ = live.send(chunk).await;
        }
        (None, Stream::Stdout) => out.stdout.extend_from_slice(&chunk.1),
        (None, Stream::Stderr) => out.stderr.extend_from_slice(&chunk.1),
    }
}

/// Reads a pipe to its end, passing on at most `cap` bytes and flagging any it drops.
pub async fn read_capped(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    stream: Stream,
    cap: usize,
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
    truncated: Arc<AtomicBool>,
) {
    let mut kept = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let take = n.min(cap.saturating_sub(kept));
        if take < n {
            truncated.store(true, Ordering::Relaxed);
        }
        if take > 0 {
            kept += take;
            if tx.send((stream, buf[..take].to_vec())).await.is_err() {
                return;
            }
        }
    }
}

/// Ends a timed-out run: SIGTERM to the group, a grace period, then SIGKILL to whatever of the
/// group is left, and waits (bounded) until no member remains.
async fn kill_group(
    pgid: i32,
    child: &mut tokio::process::Child,
    children: &Children,
) -> std::process::ExitStatus {
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    let status = tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .ok()
        .and_then(|r| r.ok());
    let _ = killpg(group, Signal::SIGKILL);
    let status = match status {
        Some(s) => s,
        None => child
            .wait()
            .await
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(9)),
    };
    for _ in 0..100 {
        let reaper = children.clone();
        let left = tokio::task::spawn_blocking(move || {
            reaper.reap_orphans();
            reaper::group_members(pgid)
        })
        .await
        .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        let _ = killpg(group, Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the output and the cap: exactly the first `cap` bytes pass, in order, and
        /// the flag says whether anything was dropped.
        #[test]
        fn output_is_cut_at_the_cap_and_flagged(
            len in 0usize..300_000,
            cap in 0usize..200_000,
            seed in any::<u8>(),
        ) {
            let input: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (out, truncated) = rt.block_on(async {
                let (tx, mut rx) = mpsc::channel(4);
                let flag = Arc::new(AtomicBool::new(false));
                let reader = read_capped(&input[..], Stream::Stdout, cap, tx, flag.clone());
                let collect = async {
                    let mut out = Vec::new();
                    while let Some((_, chunk)) = rx.recv().await {
                        out.extend_from_slice(&chunk);
                    }
                    out
                };
                let ((), out) = tokio::join!(reader, collect);
                (out, flag.load(Ordering::Relaxed))
            });
            prop_assert_eq!(&out[..], &input[..len.min(cap)]);
            prop_assert_eq!(truncated, len > cap);
        }
    }
}
