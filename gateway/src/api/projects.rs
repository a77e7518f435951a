//! `/api/workspaces…` and its alias `/api/projects…`: the seed's projects (each with one
//! desktop), the SDK's and today's workspaces. One store record, two names: a workspace is a
//! project. The paths differ only where Orgo's clients do: a duplicate name is a 400 under
//! `/workspaces` (today's docs) and a 409 under `/projects` (as it always was here).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::computers::{cpu, ram};
use super::wire::{ComputerView, CreateProject};
use crate::auth::Caller;
use crate::desktops::DesktopError;
use crate::error::ApiError;
use crate::json::parse_body;
use crate::state::AppState;
use crate::store::{Project, StoreError};

type Answer = Result<Json<Value>, ApiError>;

async fn render(state: &AppState, caller: &Caller, project: &Project) -> Result<Value, ApiError> {
    let computers = state
        .store
        .computers_of_project(&caller.account.id, &project.id)
        .await?;
    let view = ComputerView {
        links: &state.links,
        config: &state.config,
        plan: &caller.account.plan,
    };
    Ok(view.project(project, &computers))
}

/// The caller's workspace `id` (or name), in reach of its key.
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Project, ApiError> {
    let project = state
        .store
        .project(&caller.account.id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {id:?} not found")))?;
    caller.reaches(&project.id)?;
    Ok(project)
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "name must be 1–64 letters, digits, spaces, '-', '_' or '.'".into(),
        ))
    }
}

/// A workspace-scoped key makes no workspaces: it reaches its own only.
fn may_create(caller: &Caller) -> Result<(), ApiError> {
    match &caller.workspace {
        Some(own) => Err(ApiError::Forbidden(format!(
            "this API key is limited to workspace {own}; it cannot create workspaces"
        ))),
        None => Ok(()),
    }
}

/// Every workspace of the caller its key reaches, rendered.
async fn list_all(state: &AppState, caller: &Caller) -> Result<Vec<Value>, ApiError> {
    let projects = state.store.projects(&caller.account.id).await?;
    let mut rendered = Vec::with_capacity(projects.len());
    for project in projects.iter().filter(|p| caller.reaches(&p.id).is_ok()) {
        rendered.push(render(state, caller, project).await?);
    }
    Ok(rendered)
}

/// `GET /api/projects`: `{projects: [...]}`.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Answer {
    Ok(Json(json!({ "projects": list_all(&state, &caller).await? })))
}

/// `GET /api/workspaces`: `{workspaces: [...]}`, each with its `desktops`.
pub async fn list_workspaces(State(state): State<AppState>, caller: Caller) -> Answer {
    Ok(Json(json!({ "workspaces": list_all(&state, &caller).await? })))
}

/// `POST /api/projects`: `{name}` makes an empty workspace (the SDK); `{config: {ram, cpu}}`
/// (and an optional name) a project with one running desktop (the seed).
pub async fn create(State(state): State<AppState>, caller: Caller, body: Bytes) -> Answer {
    let req: CreateProject = parse_body(&body)?;
    may_create(&caller)?;
    let account = &caller.account;
    match (req.name, req.config) {
        (Some(name), None) => {
            check_name(&name)?;
            let project = state.desktops.create_project(account, &name).await?;
            Ok(Json(render(&state, &caller, &project).await?))
        }
        (name, config) => {
            let config = config.unwrap_or_default();
            let shape = state
                .desktops
                .default_shape(ram(config.ram, 2)?, cpu(config.cpu, 2.0)?);
            let project = match name {
                Some(name) => {
                    check_name(&name)?;
                    let project = state.desktops.create_project(account, &name).await?;
                    state
                        .desktops
                        .create_computer(account, &project, None, &shape)
                        .await?;
                    project
                }
                None => {
                    state
                        .desktops
                        .create_project_with_desktop(account, &shape)
                        .await?
                        .0
                }
            };
            Ok(Json(render(&state, &caller, &project).await?))
        }
    }
}

/// Other fields are ignored, as unknown fields are everywhere.
#[derive(Debug, Deserialize)]
pub struct CreateWorkspace {
    name: String,
    /// Orgo's: checked, not kept (no icon is shown anywhere here).
    #[serde(default)]
    icon_url: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// The longest `icon_url`.
const MAX_ICON_URL: usize = 2048;

/// `POST /api/workspaces` `{name, icon_url?, status? ("active")}`: an empty workspace; a
/// duplicate name is a 400.
pub async fn create_workspace(State(state): State<AppState>, caller: Caller, body: Bytes) -> Answer {
    let req: CreateWorkspace = parse_body(&body)?;
    may_create(&caller)?;
    check_name(&req.name)?;
    if req.icon_url.as_ref().is_some_and(|u| u.len() > MAX_ICON_URL) {
        return Err(ApiError::BadRequest(format!(
            "icon_url must be at most {MAX_ICON_URL} bytes"
        )));
    }
    if req.status.as_deref().is_some_and(|s| s != "active") {
        return Err(ApiError::BadRequest(
            "status must be \"active\" (inactive workspaces are not available)".into(),
        ));
    }
    let project = match state.desktops.create_project(&caller.account, &req.name).await {
        Err(DesktopError::Store(StoreError::Conflict(m))) => return Err(ApiError::BadRequest(m)),
        other => other?,
    };
    Ok(Json(render(&state, &caller, &project).await?))
}

pub async fn by_name(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Answer {
    let project = state
        .store
        .projects(&caller.account.id)
        .await?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("project {name:?} not found")))?;
    caller.reaches(&project.id)?;
    Ok(Json(render(&state, &caller, &project).await?))
}

/// `GET /api/projects/{id}` and `GET /api/workspaces/{id}`: the workspace with its
/// `desktops` (and `computers`, the older workspace answer's name for them).
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let project = find(&state, &caller, &id).await?;
    let mut answer = render(&state, &caller, &project).await?;
    answer["computers"] = answer["desktops"].clone();
    Ok(Json(answer))
}

/// `DELETE /api/projects/{id}`, `DELETE /api/workspaces/{id}`, `POST /api/projects/{id}/delete`:
/// the workspace and every computer in it.
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let project = find(&state, &caller, &id).await?;
    let account = &caller.account.id;
    for computer in state.store.computers_of_project(account, &project.id).await? {
        match state.desktops.delete(&computer).await {
            // Deleted meanwhile (through another call or replica): nothing left to do.
            Err(DesktopError::NotFound(_)) => {}
            other => other?,
        }
    }
    state.store.delete_project(account, &project.id).await?;
    Ok(Json(json!({ "success": true, "id": project.id })))
}

/// `POST /api/projects/{id}/{start|stop|restart|delete}`: the seed's project lifecycle, on
/// every computer in it.
pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> Answer {
    let project = find(&state, &caller, &id).await?;
    match action.as_str() {
        "delete" => return delete(State(state), caller, Path(id)).await,
        "start" | "stop" | "restart" => {}
        other => return Err(ApiError::NotFound(format!("no project action {other:?}"))),
    }
    let account = &caller.account;
    for mut computer in state.store.computers_of_project(&account.id, &project.id).await? {
        match action.as_str() {
            "start" => state.desktops.start(account, &mut computer).await?,
            "stop" => state.desktops.stop(&mut computer).await?,
            _ => state.desktops.restart(account, &mut computer).await?,
        }
    }
    Ok(Json(render(&state, &caller, &project).await?))
}
