//! The desktop session the agent owns with `--spawn-xvfb`: Xvfb (`-noreset -nolisten tcp`, no
//! screen saver) given the desktop's [`defaults`](crate::defaults), then a window manager,
//! started in order, supervised, and started again when either dies. Readiness comes from Xvfb
//! itself (`-displayfd`), not from polling. Everyone else learns whether the display is up from
//! a watch channel.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use crate::error::{AgentError, Result};
use crate::reaper::Children;

/// What to start.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// `:N`, or `None` to let Xvfb pick a free display.
    pub display: Option<String>,
    /// `WIDTHxHEIGHTxDEPTH`.
    pub screen: String,
    /// Window manager program, or `None`.
    pub wm: Option<String>,
}

const BACKOFF: Duration = Duration::from_millis(250);
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts Xvfb and waits until it accepts clients; answers its display name.
async fn start_xvfb(
    spec: &SessionSpec,
    children: &Children,
) -> Result<(String, tokio::process::Child, crate::reaper::Owned)> {
    let mut cmd = tokio::process::Command::new("Xvfb");
    if let Some(d) = &spec.display {
        // Abstract sockets are per network namespace, not per /tmp: sandboxed desktops that
        // share the host's network would all collide on their display :1. A named display is
        // found through its socket file (and guarded by its lock file) alone. Picking a free
        // display, on the other hand, relies on the abstract socket to detect one in use.
        cmd.args([d.as_str(), "-nolisten", "local"]);
    }
    cmd.args([
        "-screen",
        "0",
        &spec.screen,
        // No screen saver as the server's own default too, which `xset s default` returns to.
        "-s",
        "0",
        "-noreset",
        "-nolisten",
        "tcp",
        "-displayfd",
        "1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    let (mut child, owned) = children
        .spawn(&mut cmd)
        .map_err(|e| AgentError::DisplayUnavailable(format!("cannot start Xvfb: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    let read = tokio::time::timeout(
        READY_TIMEOUT,
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await;
    match read {
        Ok(Ok(n)) if n > 0 && line.trim().parse::<u32>().is_ok() => {
            let display = format!(":{}", line.trim());
            crate::defaults::prepare(&display).await;
            Ok((display, child, owned))
        }
        _ => {
            let _ = child.kill().await;
            Err(AgentError::DisplayUnavailable(format!(
                "Xvfb did not become ready (screen {}, display {})",
                spec.screen,
                spec.display.as_deref().unwrap_or("auto")
            )))
        }
    }
}

fn start_wm(
    wm: &str,
    display: &str,
    children: &Children,
) -> Option<(tokio::process::Child, crate::reaper::Owned)> {
    let mut cmd = tokio::process::Command::new(wm);
    // Xlib parses the locale's whole Compose table (~6,000 lines) when a program opens its
    // input method; a window manager types no text, and without it openbox takes WM_S0 in
    // ~34 ms instead of ~52 ms. Programs started from its menu inherit this (no Compose key
    // sequences there); those the agent runs do not.
    cmd.env("DISPLAY", display)
        .env("XCOMPOSEFILE", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    match children.spawn(&mut cmd) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(wm, error = %e, "cannot start the window manager");
            None
        }
    }
}

/// How long a window manager that took `WM_S0` has to finish its start-up (`MANAGED_MARK`).
const MANAGING_TIMEOUT: Duration = Duration::from_secs(5);

/// The root window property a window manager sets once it manages new windows: openbox takes
/// `WM_S0` (and redirects map requests) long before; a window mapped in between was left
/// unmapped for good (seen on half-core Kubernetes Pods, reproduced with openbox under a 20 %
/// CPU quota). EWMH window managers set it; one that does not costs `MANAGING_TIMEOUT` once.
const MANAGED_MARK: &[u8] = b"_NET_DESKTOP_NAMES";

/// Waits until a window manager owns the `WM_S0` selection (ICCCM) and has finished starting
/// (`MANAGED_MARK`), so the desktop is only reported ready once windows get managed and focus
/// no longer jumps at start-up.
async fn wait_for_wm(display: String) {
    let waited = tokio::task::spawn_blocking(move || -> Result<(bool, bool)> {
        use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _};
        let x = crate::x11::XConn::open(&display)?;
        let atom = x.conn.intern_atom(false, b"WM_S0")?.reply()?.atom;
        let mark = x.conn.intern_atom(false, MANAGED_MARK)?.reply()?.atom;
        // A round trip costs ~0.1 ms: polled every 2 ms.
        let poll = |timeout: Duration, done: &dyn Fn() -> Result<bool>| -> Result<bool> {
            let deadline = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < deadline {
                if done()? {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(false)
        };
        let owned = poll(READY_TIMEOUT, &|| {
            Ok(x.conn.get_selection_owner(atom)?.reply()?.owner != x11rb::NONE)
        })?;
        let managing = owned
            && poll(MANAGING_TIMEOUT, &|| {
                let reply = x
                    .conn
                    .get_property(false, x.root, mark, AtomEnum::ANY, 0, 0)?
                    .reply()?;
                Ok(reply.type_ != x11rb::NONE)
            })?;
        Ok((owned, managing))
    })
    .await;
    match waited {
        Ok(Ok((true, true))) => {}
        Ok(Ok((true, false))) => tracing::warn!(
            "the window manager took WM_S0 but did not set _NET_DESKTOP_NAMES; going on without waiting"
        ),
        _ => tracing::warn!("the window manager did not take WM_S0; going on without waiting"),
    }
}

/// Terminates a child politely, then forcibly if it lingers.
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// A running session.
pub struct Session {
    pub display: String,
    /// Whether the X server is up right now.
    pub ready: watch::Receiver<bool>,
    /// Ends after `shutdown` fired and Xvfb and the window manager have stopped.
    pub supervisor: tokio::task::JoinHandle<()>,
}

/// Starts the session and supervises it in the background until `shutdown` fires; answers
/// once Xvfb is first ready (and the window manager has taken over, if there is one).
pub async fn start(
    mut spec: SessionSpec,
    children: Children,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Session> {
    let (display, mut xvfb, mut xvfb_owned) = start_xvfb(&spec, &children).await?;
    // Later restarts reuse the display that clients were told about.
    spec.display = Some(display.clone());
    let (ready_tx, ready_rx) = watch::channel(true);
    let name = display.as_str();
    tracing::info!(display = name, screen = spec.screen.as_str(), "Xvfb ready");
    let fixed = display.clone();
    let first_wm = spec.wm.as_deref().and_then(|w| start_wm(w, &display, &children));
    if first_wm.is_some() {
        wait_for_wm(display.clone()).await;
    }
    let supervisor = tokio::spawn(async move {
        let spawn_wm = || spec.wm.as_deref().and_then(|w| start_wm(w, &fixed, &children));
        let mut wm = first_wm;
        loop {
            let wm_exit = async {
                match wm.as_mut() {
                    Some((child, _)) => child.wait().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                status = xvfb.wait() => {
                    tracing::warn!(?status, "Xvfb exited; starting it again");
                    let _ = ready_tx.send(false);
                    if let Some((mut child, _)) = wm.take() {
                        let _ = child.kill().await;
                    }
                    loop {
                        tokio::time::sleep(BACKOFF).await;
                        if *shutdown.borrow() {
                            return;
                        }
                        match start_xvfb(&spec, &children).await {
                            Ok((_, child, owned)) => {
                                (xvfb, xvfb_owned) = (child, owned);
                                break;
                            }
                            Err(e) => tracing::error!(error = %e, "Xvfb restart failed"),
                        }
                    }
                    let _ = ready_tx.send(true);
                    wm = spawn_wm();
                }
                status = wm_exit => {
                    tracing::warn!(?status, "window manager exited; starting it again");
                    tokio::time::sleep(BACKOFF).await;
                    wm = spawn_wm();
                }
            }
        }
        let _ = ready_tx.send(false);
        if let Some((mut child, _)) = wm.take() {
            stop(&mut child).await;
        }
        // SIGTERM lets Xvfb remove its socket and lock file; SIGKILL would leave them behind.
        stop(&mut xvfb).await;
        drop(xvfb_owned);
    });
    Ok(Session {
        display,
        ready: ready_rx,
        supervisor,
    })
}
