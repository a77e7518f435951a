//! `orgo-gateway`: the public Orgo REST API, and gRPC beside it on the same port. It authenticates API keys, keeps accounts, projects
//! and computers in a store (SQLite, or PostgreSQL shared by replicas), enforces plans, starts desktops through a runtime (bubblewrap
//! processes by default) and forwards every desktop action to that desktop's `orgo-agent` over
//! gRPC. It owns no X11 or process code of the desktops themselves.

pub mod action;
pub mod api;
pub mod auth;
pub mod config;
pub mod desktops;
pub mod error;
pub mod grpc;
pub mod json;
pub mod live;
pub mod metrics;
pub mod ratelimit;
pub mod runtime;
pub mod state;
pub mod storage;
pub mod store;
pub mod token;

use std::sync::Arc;

use crate::config::Config;
use crate::config::RuntimeKind;
use crate::desktops::Desktops;
use crate::runtime::Runtime;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::kubernetes::{self, KubernetesRuntime};
use crate::runtime::local::LocalRuntime;
use crate::state::AppState;
use crate::store::Store;

/// The router over a state: REST and, beside it on the same port, gRPC (told apart by
/// content type); what `serve` runs and what tests drive in-process.
pub fn app(state: AppState) -> axum::Router {
    grpc::beside(api::router(state.clone()), grpc::router(state))
}

/// Builds the state from a validated config: the database, the runtime the config names, the
/// desktops.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)?;
    let runtime: Arc<dyn Runtime> = match config.runtime {
        RuntimeKind::Local => Arc::new(LocalRuntime::new(
            &config.data_dir,
            config.agent_bin(),
            config.local_sandbox,
        )?),
        RuntimeKind::Docker => Arc::new(
            DockerRuntime::connect(
                &config.data_dir,
                &config.image,
                config.docker_transport,
                std::time::Duration::from_secs(config.disk_check_seconds),
            )
            .await?,
        ),
        RuntimeKind::Kubernetes => {
            let k = &config.kubernetes;
            Arc::new(
                KubernetesRuntime::connect(kubernetes::Settings {
                    kubeconfig: k.kubeconfig.clone(),
                    namespace: k.namespace.clone(),
                    image: config.image.clone(),
                    installation: k.installation.clone(),
                    storage_class: k.storage_class.clone(),
                    gateway_cidrs: k.gateway_cidrs.clone(),
                })
                .await?,
            )
        }
    };
    build_state_with(config, runtime).await
}

/// Builds the state from a validated config over a given runtime (`config.runtime` is not
/// read): what `build_state` does once it has made the configured one, and what tests use to
/// run the whole API over a runtime of their own.
pub async fn build_state_with(config: Config, runtime: Arc<dyn Runtime>) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)?;
    let config = Arc::new(config);
    let store = store::open(config.database_url.as_deref(), &config.db_path()).await?;
    if !store.shared() {
        // This gateway is the store's only user: nothing a previous run held is still held.
        store.forget_leases().await?;
    }
    let signer = token::Signer::open(store.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", store.describe()))?;
    let links = Arc::new(live::Links::new(signer, &config));
    let metrics = Arc::new(metrics::Metrics::default());
    let desktops = Arc::new(Desktops::new(
        store.clone(),
        config.clone(),
        runtime,
        metrics.clone(),
    ));
    desktops.start_singletons().await?;
    Ok(AppState {
        config,
        store,
        desktops,
        links,
        metrics,
        limiter: Default::default(),
        health: grpc::health().await,
    })
}

/// Creates an account (or moves it to `plan`) and a new key, limited to the account's
/// workspace `workspace` (an id or name, which must exist) if given; answers the key.
pub async fn create_key(
    store: &dyn Store,
    config: &Config,
    account: &str,
    plan: Option<&str>,
    workspace: Option<&str>,
) -> anyhow::Result<String> {
    let plan = plan.unwrap_or(&config.default_plan);
    if account.starts_with('_') {
        anyhow::bail!(
            "account names starting with '_' are the gateway's own ({} owns the warm pool)",
            desktops::POOL_ACCOUNT
        );
    }
    if config.plan(plan).is_none() {
        anyhow::bail!(
            "unknown plan {plan:?}; configured plans: {:?}",
            config.plans.keys().collect::<Vec<_>>()
        );
    }
    let account = store.ensure_account(account, plan, &desktops::new_id()).await?;
    let workspace = match workspace {
        None => None,
        Some(w) => Some(
            store
                .project(&account.id, w)
                .await?
                .ok_or_else(|| anyhow::anyhow!("account {:?} has no workspace {w:?}", account.name))?
                .id,
        ),
    };
    let (id, key, hash) = auth::generate();
    store
        .insert_key(&id, &account.id, &hash, workspace.as_deref())
        .await?;
    Ok(key)
}
