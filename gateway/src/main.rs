//! `orgo-gateway` binary: `serve` and `keys`. A thin shell over the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use orgo_gateway::config::Config;

#[derive(Parser)]
#[command(
    name = "orgo-gateway",
    version,
    about = "The Orgo REST API for self-hosted Linux desktops"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the REST API. Environment overrides of the config: ORGO_LISTEN, ORGO_DATA_DIR,
    /// ORGO_RUNTIME, ORGO_PUBLIC_URL, ORGO_AGENT_BIN, ORGO_IMAGE, ORGO_DOCKER_TRANSPORT,
    /// ORGO_LOCAL_SANDBOX, ORGO_DISK_SIZE_GB, ORGO_DISK_CHECK_SECONDS, ORGO_DATABASE_URL, ORGO_POOL.
    Serve {
        /// TOML config file; embedded defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCmd,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key (and the account if new); the key is printed alone on the last line.
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        plan: Option<String>,
        /// Limit the key to one workspace of the account (its id or name): other workspaces'
        /// resources answer 403 `workspace_scope_mismatch`.
        #[arg(long)]
        workspace: Option<String>,
    },
    /// List keys: id, account, created, revoked, workspace (`-`: the whole account).
    List,
    /// Revoke a key by id (the part after `orgo_`, before the second `_`).
    Revoke { id: String },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(cli.command, Cmd::Serve { log_json: true, .. });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json_logs {
        logs.json().init()
    } else {
        logs.init()
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orgo-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve { config, .. } => {
            let config = Config::load(config.as_deref())?;
            tokio::runtime::Runtime::new()?.block_on(serve(config))
        }
        Cmd::Keys { command, config } => {
            let config = Config::load(config.as_deref())?;
            tokio::runtime::Runtime::new()?.block_on(keys(command, config))
        }
    }
}

async fn keys(command: KeysCmd, config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = orgo_gateway::store::open(config.database_url.as_deref(), &config.db_path()).await?;
    match command {
        KeysCmd::Create {
            account,
            plan,
            workspace,
        } => {
            let key = orgo_gateway::create_key(
                store.as_ref(),
                &config,
                &account,
                plan.as_deref(),
                workspace.as_deref(),
            )
            .await?;
            println!("created a key for account {account:?}; it is shown only once:");
            println!("{key}");
        }
        KeysCmd::List => {
            for k in store.list_keys().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.account,
                    k.created_at,
                    if k.revoked { "revoked" } else { "live" },
                    k.workspace.as_deref().unwrap_or("-")
                );
            }
        }
        KeysCmd::Revoke { id } => {
            if !store.revoke_key(&id).await? {
                anyhow::bail!("no live key with id {id:?}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let state = orgo_gateway::build_state(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    // Without TCP_NODELAY a large answer's last segment waits for the client's delayed ACK:
    // 40 ms on every gRPC screenshot (HTTP/2 writes it as several frames).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    tracing::info!(%listen, "orgo-gateway serving");
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let serving =
        axum::serve(listener, orgo_gateway::app(state.clone())).with_graceful_shutdown(async move {
            shutdown().await;
            let _ = stopping.send(true);
        });
    // Calls under way get a grace period; streams (a watched screen) and long runs would
    // otherwise hold the shutdown, and the desktops' stop, for good.
    let grace = async move {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serving => served?,
        () = grace => tracing::warn!(grace = ?SHUTDOWN_GRACE, "calls still under way at shutdown were cut off"),
    }
    state.desktops.resign().await;
    if let Err(e) = state.desktops.drain_pool().await {
        tracing::warn!(error = %e, "cannot delete the warm pool's desktops");
    }
    tracing::info!("stopping desktops");
    state
        .desktops
        .stop_all()
        .await
        .map_err(|e| anyhow::anyhow!("stopping desktops: {e}"))?;
    Ok(())
}

/// How long calls under way may go on once the gateway was told to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn shutdown() {
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
