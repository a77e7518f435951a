//! `orgo-agent` owns one desktop from the inside: it starts and supervises Xvfb and the window
//! manager (or attaches to an existing display), captures the screen with MIT-SHM and encodes it
//! with libjpeg-turbo, injects pointer and keyboard input with XTest (typing any Unicode text by
//! borrowing spare keycodes), runs bash and Python with hard timeouts that kill everything the
//! command started and output capped on character boundaries, reaps orphans, and serves all of
//! it over gRPC — with the desktop user's files, confined to the home, beside it.
//!
//! Layers, outside in: [`server`] (sockets, auth) → [`service`] (prost ↔ domain) → [`desktop`]
//! (async operations) → [`capture`], [`encode`], [`input`], [`exec`] and [`output`] (the work)
//! over [`x11`] connections; [`keys`] and [`keymap`] are pure planning logic. Files have a
//! service of their own: [`server`] → [`files_service`] → [`files`].

pub mod capture;
pub mod cli;
pub mod damage;
pub mod defaults;
pub mod desktop;
pub mod encode;
pub mod error;
pub mod exec;
pub mod files;
pub mod files_service;
pub mod inflight;
pub mod input;
pub mod keyboard;
pub mod keymap;
pub mod keys;
pub mod output;
pub mod reaper;
pub mod server;
pub mod service;
pub mod session;
pub mod warm;
pub mod x11;

use std::sync::Arc;

use tokio::sync::watch;

use crate::cli::Cli;
use crate::desktop::{Desktop, DesktopConfig};
use crate::exec::Runner;
use crate::files::Home;
use crate::input::InputTiming;
use crate::output::Drains;
use crate::reaper::Children;
use crate::session::SessionSpec;
use crate::warm::WarmPython;

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let token = cli.token()?;
    let home = cli
        .home
        .clone()
        .or_else(|| std::env::var_os("HOME").map(Into::into))
        .unwrap_or_else(|| "/".into());
    // Before the desktop starts: a home that cannot be opened is a configuration error.
    let files =
        Home::open(&home).map_err(|e| anyhow::anyhow!("cannot open the home {}: {e}", home.display()))?;
    let children = Children::default();
    let reaper = reaper::start(children.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the reaper's thread: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut supervisor = None;
    let (display, ready) = match &cli.spawn_xvfb {
        Some(screen) => {
            let wm = (cli.wm != "none").then(|| cli.wm.clone());
            let spec = SessionSpec {
                display: cli.display.clone(),
                screen: screen.clone(),
                wm,
            };
            let session = session::start(spec, children.clone(), stop_rx.clone()).await?;
            supervisor = Some(session.supervisor);
            (session.display, session.ready)
        }
        None => {
            let display = cli
                .display
                .clone()
                .or_else(|| std::env::var("DISPLAY").ok())
                .ok_or_else(|| anyhow::anyhow!("no display: pass --spawn-xvfb, --display or set DISPLAY"))?;
            defaults::prepare(&display).await;
            (display, watch::channel(true).1)
        }
    };
    let runner = Runner {
        children,
        reaper,
        drains: Drains::default(),
        display: display.clone(),
        home,
        python: WarmPython::default(),
    };
    if !cli.cold_python {
        runner
            .python
            .supervise(runner.warm_setting(), ready.clone(), stop_rx.clone());
    }
    let config = DesktopConfig {
        timing: InputTiming {
            double_click: cli.double_click(),
        },
        keymap_restore: cli.keymap_restore(),
    };
    let desktop = Arc::new(Desktop::new(display.clone(), ready, config, runner));
    let name = display.as_str();
    tracing::info!(
        display = name,
        version = env!("CARGO_PKG_VERSION"),
        "desktop ready"
    );

    let mut stopping = stop_rx.clone();
    let serve = server::serve(
        cli.listen.clone(),
        token,
        service::AgentService::new(desktop),
        files_service::FilesService::new(files),
        async move {
            let _ = stopping.changed().await;
        },
    );
    tokio::pin!(serve);
    let result = tokio::select! {
        result = &mut serve => result,
        () = termination() => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            // In-flight calls get a moment to finish; open client connections do not hold us.
            tokio::time::timeout(SHUTDOWN_GRACE, serve).await.unwrap_or(Ok(()))
        }
    };
    let _ = stop_tx.send(true);
    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    result
}
