//! `/api/computers…`: creating, reading and deleting computers, their lifecycle (start, stop,
//! restart, ensure-running), their settings (auto-stop, resize, move) and the credential of
//! their live view. Their actions are `actions`'.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::viewers::issue_token;
use super::wire::{ComputerView, CreateComputer};
use crate::auth::Caller;
use crate::config::{DEFAULT_CPU, DEFAULT_RAM_GB, Plan};
use crate::desktops::Shape;
use crate::error::ApiError;
use crate::json::parse_body;
use crate::state::AppState;
use crate::store::{Computer, Resolution, Status};
use crate::token::Mode;

type Answer = Result<Json<Value>, ApiError>;

/// The longest `auto_stop_minutes`: a week.
const MAX_AUTO_STOP_MINUTES: f64 = 10_080.0;

/// RAM in GB: a whole number from 1 to 64, or the default when absent.
pub fn ram(value: Option<f64>, default: u32) -> Result<u32, ApiError> {
    whole("ram", value, default, 1, 64, "GB")
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

/// A whole number of `unit` from `min` to `max` named `field`, or `default` when absent.
fn whole(
    field: &str,
    value: Option<f64>,
    default: u32,
    min: u32,
    max: u32,
    unit: &str,
) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v.fract() == 0.0 && (f64::from(min)..=f64::from(max)).contains(&v) => Ok(v as u32),
        Some(v) => Err(ApiError::BadRequest(format!(
            "{field} must be a whole number of {unit} from {min} to {max}, not {v}"
        ))),
    }
}

/// A computer name as asked for: 1–64 letters, digits, '-' or '_' (clones' generated names
/// add ` (clone)`).
fn check_name(name: &str) -> Result<(), ApiError> {
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
    Ok(())
}

/// `auto_stop_minutes`: a whole number of minutes, 0 (never) to a week.
fn auto_stop_minutes(value: f64) -> Result<u32, ApiError> {
    if value.fract() != 0.0 || !(0.0..=MAX_AUTO_STOP_MINUTES).contains(&value) {
        return Err(ApiError::BadRequest(format!(
            "auto_stop_minutes must be a whole number of minutes from 0 (never) to {MAX_AUTO_STOP_MINUTES}, not {value}"
        )));
    }
    Ok(value as u32)
}

fn plan<'a>(state: &'a AppState, caller: &Caller) -> Result<&'a Plan, ApiError> {
    let name = &caller.account.plan;
    state.config.plan(name).ok_or_else(|| {
        ApiError::PlanLimit(format!("account plan {name:?} is not configured on this gateway"))
    })
}

fn view<'a>(state: &'a AppState, caller: &'a Caller) -> ComputerView<'a> {
    ComputerView {
        links: &state.links,
        config: &state.config,
        plan: &caller.account.plan,
    }
}

/// A computer as every answer shows it.
pub fn render(state: &AppState, caller: &Caller, c: &Computer) -> Value {
    view(state, caller).computer(c)
}

/// A lifecycle answer: the computer, plus Orgo's `{success, status}`.
fn lifecycle_answer(state: &AppState, caller: &Caller, c: &Computer) -> Value {
    let mut answer = render(state, caller, c);
    answer["success"] = json!(true);
    answer
}

pub async fn create(State(state): State<AppState>, caller: Caller, body: Bytes) -> Answer {
    let req: CreateComputer = parse_body(&body)?;
    let computer = create_computer(&state, &caller, req).await?;
    Ok(Json(render(&state, &caller, &computer)))
}

/// A new computer of the caller as `req` asks (checked as REST's `POST /api/computers` checks
/// it, whichever way it came in), started.
pub async fn create_computer(
    state: &AppState,
    caller: &Caller,
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
    check_image(state, req.image.as_deref())?;
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    let account = &caller.account;
    let plan = plan(state, caller)?;
    let resolution = match &req.resolution {
        Some(text) => Resolution::parse(text).map_err(ApiError::BadRequest)?,
        None => state.config.screen(),
    };
    let shape = Shape {
        ram_gb: ram(req.ram, DEFAULT_RAM_GB.min(plan.max_ram_gb))?,
        cpu: cpu(req.cpu, DEFAULT_CPU)?,
        disk_gb: disk(state, plan, req.disk_size_gb)?,
        resolution,
        auto_stop_minutes: req.auto_stop_minutes.map(auto_stop_minutes).transpose()?,
    };
    let project = state
        .store
        .project(&account.id, &project_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {project_id:?} not found")))?;
    caller.reaches(&project.id)?;
    Ok(state
        .desktops
        .create_computer(account, &project, req.name, &shape)
        .await?)
}

/// `disk_size_gb`: 1 GiB to the plan's `max_disk_gb`; the configured size when absent.
fn disk(state: &AppState, plan: &Plan, asked: Option<f64>) -> Result<u32, ApiError> {
    let size = whole("disk_size_gb", asked, state.config.disk_size_gb, 1, 1024, "GB")?;
    if size > plan.max_disk_gb {
        return Err(ApiError::PlanLimit(format!(
            "disk_size_gb {size} is above the plan's {} GB per computer",
            plan.max_disk_gb
        )));
    }
    Ok(size)
}

/// `image`: only the desktop image this gateway's runtime runs (the allow-list of one).
fn check_image(state: &AppState, image: Option<&str>) -> Result<(), ApiError> {
    let allowed = match state.config.runtime {
        crate::config::RuntimeKind::Local => None,
        _ => Some(state.config.image.as_str()),
    };
    match (image, allowed) {
        (None, _) => Ok(()),
        (Some(asked), Some(allowed)) if asked == allowed => Ok(()),
        (Some(asked), Some(allowed)) => Err(ApiError::BadRequest(format!(
            "image {asked:?} is not available here; the images allowed are [{allowed:?}]"
        ))),
        (Some(asked), None) => Err(ApiError::BadRequest(format!(
            "image {asked:?} is not available: the local runtime runs this machine's own desktop"
        ))),
    }
}

pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    Ok(Json(render(
        &state,
        &caller,
        &caller.computer(&state, &id).await?,
    )))
}

pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let computer = caller.computer(&state, &id).await?;
    state.desktops.delete(&computer).await?;
    Ok(Json(json!({ "success": true, "id": computer.id })))
}

/// `POST /api/computers/{id}/start`: a stopped desktop runs again with its files.
pub async fn start(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let mut computer = caller.computer(&state, &id).await?;
    state.desktops.start(&caller.account, &mut computer).await?;
    Ok(Json(lifecycle_answer(&state, &caller, &computer)))
}

/// `POST /api/computers/{id}/ensure-running`: started if it is not running; answers it with
/// where it is reached (`instance_details`).
pub async fn ensure_running(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    start(State(state), caller, Path(id)).await
}

/// `POST /api/computers/{id}/stop`: its processes end; its files stay.
pub async fn stop(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let mut computer = caller.computer(&state, &id).await?;
    state.desktops.stop(&mut computer).await?;
    Ok(Json(lifecycle_answer(&state, &caller, &computer)))
}

/// `POST /api/computers/{id}/restart`: stop, then start, in one turn.
pub async fn restart(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let mut computer = caller.computer(&state, &id).await?;
    state.desktops.restart(&caller.account, &mut computer).await?;
    Ok(Json(lifecycle_answer(&state, &caller, &computer)))
}

/// `GET /api/computers/{id}/auto-stop`: `{auto_stop_minutes (0 never), configurable,
/// plan_default_minutes}`.
pub async fn get_auto_stop(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let computer = caller.computer(&state, &id).await?;
    let minutes = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_secs() / 60);
    Ok(Json(json!({
        "auto_stop_minutes": minutes(state.config.auto_stop(&computer, &caller.account.plan)),
        "configurable": true,
        "plan_default_minutes": minutes(state.config.idle_stop(&caller.account.plan)),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoStop {
    auto_stop_minutes: f64,
}

/// `PATCH /api/computers/{id}/auto-stop` `{auto_stop_minutes}`: its own idle time from now on.
pub async fn set_auto_stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    // Found first: another account's computer is a 404 whatever the body.
    let computer = caller.computer(&state, &id).await?;
    let req: AutoStop = parse_body(&body)?;
    let minutes = auto_stop_minutes(req.auto_stop_minutes)?;
    state.store.set_auto_stop(&computer.id, Some(minutes)).await?;
    Ok(Json(json!({ "success": true, "auto_stop_minutes": minutes })))
}

/// `GET /api/computers/{id}/vnc-password`: the credential of this computer's live view (a
/// control token, valid for as long as a computer's `url` link), never the API key; and
/// `desktop_api_token` for its gRPC calls through the gateway.
pub async fn vnc_password(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let ttl = state.config.viewer_link_seconds;
    let (computer, grant, password) = issue_token(&state, &caller, &id, Mode::Control, ttl).await?;
    let (_, _, desktop) = issue_token(&state, &caller, &computer.id, Mode::Desktop, ttl).await?;
    Ok(Json(json!({
        "password": password,
        "desktop_api_token": desktop,
        "expires_at": grant.expires_at,
    })))
}

/// `POST /api/computers/{id}/clone`'s body (Orgo's MCP server sends `targetProjectId`).
#[derive(Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CloneRequest {
    name: Option<String>,
    #[serde(rename = "targetProjectId", alias = "project_id", alias = "workspace_id")]
    target: Option<String>,
}

/// `POST /api/computers/{id}/clone` `{name?, targetProjectId?}`: a new running computer with a
/// copy of this one's home (files, installed software, browser profiles), size and screen, in
/// its workspace or another of the account's; counted against the plan (403 at its limit).
/// Answers the new computer (`{id, name, status, …}`).
pub async fn clone(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let source = caller.computer(&state, &id).await?;
    let req: CloneRequest = parse_body(&body)?;
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    let target = req.target.unwrap_or_else(|| source.project_id.clone());
    let project = state
        .store
        .project(&caller.account.id, &target)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {target:?} not found")))?;
    caller.reaches(&project.id)?;
    let computer = state
        .desktops
        .clone_computer(&caller.account, &source, &project, req.name)
        .await?;
    Ok(Json(lifecycle_answer(&state, &caller, &computer)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    workspace_id: Option<String>,
}

/// `PATCH /api/computers/{id}/move` `{project_id}` (or `workspace_id`): into another workspace
/// of the same account; its id, state and files stay.
pub async fn move_to(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let computer = caller.computer(&state, &id).await?;
    let req: MoveRequest = parse_body(&body)?;
    let target = req
        .project_id
        .or(req.workspace_id)
        .ok_or_else(|| ApiError::BadRequest("project_id (the destination workspace) is required".into()))?;
    let account = &caller.account.id;
    let project = state
        .store
        .project(account, &target)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {target:?} not found")))?;
    caller.reaches(&project.id)?;
    if project.id == computer.project_id {
        return Err(ApiError::BadRequest(format!(
            "computer {:?} is already in workspace {:?}",
            computer.name, project.name
        )));
    }
    if !state
        .store
        .move_computer(account, &computer.id, &project.id)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "computer {:?} or workspace {:?} was deleted meanwhile",
            computer.name, project.name
        )));
    }
    Ok(Json(
        json!({ "success": true, "project_id": project.id, "workspace_id": project.id }),
    ))
}

/// `PATCH /api/computers/{id}/resize`'s body: Orgo's names. `cpu`/`ram` (the create's names)
/// are refused naming these, rather than ignored.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ResizeRequest {
    vcpus: Option<f64>,
    mem_gb: Option<f64>,
    disk_size_gb: Option<f64>,
    bandwidth_limit_mbps: Option<f64>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

/// `PATCH /api/computers/{id}/resize` `{vcpus?, mem_gb?, disk_size_gb? (grow only)}`: applied
/// to the running desktop at once (its cgroups, `docker update`); answers the sizes now in
/// force. 409 when it is not running, 403 above the plan.
pub async fn resize(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let mut computer = caller.computer(&state, &id).await?;
    let req: ResizeRequest = parse_body(&body)?;
    if let Some(field) = req.other.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "resize takes vcpus, mem_gb and disk_size_gb (and bandwidth_limit_mbps), not {field:?}"
        )));
    }
    if req.bandwidth_limit_mbps.is_some() {
        return Err(ApiError::BadRequest(
            "bandwidth_limit_mbps is not available on this gateway".into(),
        ));
    }
    let plan = plan(&state, &caller)?;
    let ram_gb = whole("mem_gb", req.mem_gb, computer.ram_gb, 1, 64, "GB")?;
    let cpu = match req.vcpus {
        None => computer.cpu,
        Some(v) => cpu(Some(v), computer.cpu).map_err(|_| {
            ApiError::BadRequest(format!(
                "vcpus must be 0.5 or a whole number from 1 to 64, not {v}"
            ))
        })?,
    };
    let current_disk = state.config.disk_gb_of(&computer);
    let disk_gb = disk(&state, plan, req.disk_size_gb.or(Some(f64::from(current_disk))))?;
    if disk_gb < current_disk {
        return Err(ApiError::BadRequest(format!(
            "disk_size_gb only grows: it is {current_disk} GB, not {disk_gb}"
        )));
    }
    if computer.status != Status::Running {
        return Err(ApiError::NotRunning(format!(
            "computer {:?} is {}; start it to resize it",
            computer.name,
            computer.status.as_str()
        )));
    }
    state
        .desktops
        .resize(&caller.account, &mut computer, ram_gb, cpu, disk_gb)
        .await?;
    Ok(Json(json!({
        "success": true,
        "vcpus": render(&state, &caller, &computer)["cpu"],
        "mem_gb": computer.ram_gb,
        "disk_size_gb": state.config.disk_gb_of(&computer),
        "bandwidth_limit_mbps": null,
    })))
}
