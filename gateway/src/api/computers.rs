//! `/api/computers…`: creating, reading and deleting the SDK's computers, and their lifecycle
//! (start, stop, restart). Their actions are `actions`'.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::wire::{self, CreateComputer};
use crate::auth::Caller;
use crate::config::{DEFAULT_CPU, DEFAULT_RAM_GB};
use crate::error::ApiError;
use crate::json::parse_body;
use crate::state::AppState;
use crate::store::{Account, Computer};

type Answer = Result<Json<Value>, ApiError>;

/// RAM in GB: a whole number from 1 to 64, or the default when absent.
pub fn ram(value: Option<f64>, default: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v.fract() == 0.0 && (1.0..=64.0).contains(&v) => Ok(v as u32),
        Some(v) => Err(ApiError::BadRequest(format!(
            "ram must be a whole number of GB from 1 to 64, not {v}"
        ))),
    }
}

/// CPU cores: 0.5 or a whole number from 1 to 64, or the default when absent.
pub fn cpu(value: Option<f64>, default: f64) -> Result<f64, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v == 0.5 || (v.fract() == 0.0 && (1.0..=64.0).contains(&v)) => Ok(v),
        Some(v) => Err(ApiError::BadRequest(format!(
            "cpu must be 0.5 or a whole number from 1 to 64, not {v}"
        ))),
    }
}

fn render(state: &AppState, c: &Computer) -> Value {
    wire::computer_json(
        &state.links,
        c,
        state.config.screen_width,
        state.config.screen_height,
    )
}

pub async fn create(State(state): State<AppState>, Caller(account): Caller, body: Bytes) -> Answer {
    let req: CreateComputer = parse_body(&body)?;
    let computer = create_computer(&state, &account, req).await?;
    Ok(Json(render(&state, &computer)))
}

/// A new computer of `account` as `req` asks (checked as REST's `POST /api/computers` checks
/// it, whichever way it came in), started.
pub async fn create_computer(
    state: &AppState,
    account: &Account,
    req: CreateComputer,
) -> Result<Computer, ApiError> {
    let project_id = req
        .workspace_id
        .or(req.project_id)
        .ok_or_else(|| ApiError::BadRequest("workspace_id (or project_id) is required".into()))?;
    if req.os.as_deref().is_some_and(|os| os != "linux") {
        return Err(ApiError::BadRequest("only linux desktops are available".into()));
    }
    if req.gpu.as_deref().is_some_and(|g| g != "none") {
        return Err(ApiError::BadRequest(
            "GPUs are not available; use gpu \"none\"".into(),
        ));
    }
    if req.image.is_some() {
        return Err(ApiError::BadRequest(
            "custom images are not available on this runtime".into(),
        ));
    }
    if let Some(name) = &req.name {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(ApiError::BadRequest(
                "name must be 1–64 letters, digits, '-' or '_'".into(),
            ));
        }
    }
    let project = state
        .store
        .project(&account.id, &project_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {project_id:?} not found")))?;
    let plan_ram = state.config.plan(&account.plan).map_or(4, |p| p.max_ram_gb);
    let ram = ram(req.ram, DEFAULT_RAM_GB.min(plan_ram))?;
    let cpu = cpu(req.cpu, DEFAULT_CPU)?;
    Ok(state
        .desktops
        .create_computer(account, &project, req.name, ram, cpu)
        .await?)
}

pub async fn get(State(state): State<AppState>, Caller(account): Caller, Path(id): Path<String>) -> Answer {
    Ok(Json(render(
        &state,
        &state.desktops.find(&account.id, &id).await?,
    )))
}

pub async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
) -> Answer {
    let computer = state.desktops.find(&account.id, &id).await?;
    state.desktops.delete(&computer).await?;
    Ok(Json(json!({ "success": true, "id": computer.id })))
}

/// `POST /api/computers/{id}/start`: a stopped desktop runs again with its files.
pub async fn start(State(state): State<AppState>, Caller(account): Caller, Path(id): Path<String>) -> Answer {
    let mut computer = state.desktops.find(&account.id, &id).await?;
    state.desktops.start(&account, &mut computer).await?;
    Ok(Json(render(&state, &computer)))
}

/// `POST /api/computers/{id}/stop`: its processes end; its files stay.
pub async fn stop(State(state): State<AppState>, Caller(account): Caller, Path(id): Path<String>) -> Answer {
    let mut computer = state.desktops.find(&account.id, &id).await?;
    state.desktops.stop(&mut computer).await?;
    Ok(Json(render(&state, &computer)))
}

/// `POST /api/computers/{id}/restart`: stop, then start, in one turn.
pub async fn restart(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
) -> Answer {
    let mut computer = state.desktops.find(&account.id, &id).await?;
    state.desktops.restart(&account, &mut computer).await?;
    Ok(Json(render(&state, &computer)))
}
