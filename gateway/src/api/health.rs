//! `GET /healthz` (liveness, and what this replica sees) and `GET /readyz` (readiness, for
//! load balancers: 503 while the database cannot be reached, so traffic goes to a replica
//! that can serve it).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// Always 200 while the process serves: `status` is `ok`, or `degraded` with why in
/// `database`; `replica` names this gateway and `lease_epoch` is set while it runs the
/// singletons (idle auto-stop, reconciliation); `pool` lists each warm pool (`ram_gb`, `cpu`,
/// `wanted`, `ready`).
pub async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let database = match state.store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let leadership = state.desktops.leadership();
    // Each warm pool's size, how many it keeps and how many are ready; empty without pools.
    let pool = state.desktops.pool_state().await.unwrap_or_default();
    Json(json!({
        "pool": pool,
        "status": if database == "ok" { "ok" } else { "degraded" },
        "database": database,
        "store": state.store.describe(),
        "replica": leadership.replica,
        "lease_epoch": leadership.lease_epoch,
    }))
}

/// 200 `{"ready": true}` when the database answers; else 503 with the reason.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(json!({ "ready": true })))
}
