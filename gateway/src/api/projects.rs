//! `/api/projects…`: the seed's projects (each with one desktop) and the SDK's workspaces.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::computers::{cpu, ram};
use super::wire::{self, CreateProject};
use crate::auth::Caller;
use crate::desktops::DesktopError;
use crate::error::ApiError;
use crate::json::parse_body;
use crate::state::AppState;
use crate::store::{Account, Project};

type Answer = Result<Json<Value>, ApiError>;

async fn render(state: &AppState, account: &Account, project: &Project) -> Result<Value, ApiError> {
    let computers = state.store.computers_of_project(&account.id, &project.id).await?;
    let (w, h) = (state.config.screen_width, state.config.screen_height);
    Ok(wire::project_json(&state.links, project, &computers, w, h))
}

async fn find(state: &AppState, account: &Account, id: &str) -> Result<Project, ApiError> {
    state
        .store
        .project(&account.id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project {id:?} not found")))
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

pub async fn list(State(state): State<AppState>, Caller(account): Caller) -> Answer {
    let projects = state.store.projects(&account.id).await?;
    let mut rendered = Vec::with_capacity(projects.len());
    for project in &projects {
        rendered.push(render(&state, &account, project).await?);
    }
    Ok(Json(json!({ "projects": rendered })))
}

pub async fn create(State(state): State<AppState>, Caller(account): Caller, body: Bytes) -> Answer {
    let req: CreateProject = parse_body(&body)?;
    match (req.name, req.config) {
        (Some(name), None) => {
            check_name(&name)?;
            let project = state.desktops.create_project(&account, &name).await?;
            Ok(Json(render(&state, &account, &project).await?))
        }
        (name, config) => {
            let config = config.unwrap_or_default();
            let (ram, cpu) = (ram(config.ram, 2)?, cpu(config.cpu, 2.0)?);
            let (project, _) = match name {
                Some(name) => {
                    check_name(&name)?;
                    let project = state.desktops.create_project(&account, &name).await?;
                    let c = state
                        .desktops
                        .create_computer(&account, &project, None, ram, cpu)
                        .await?;
                    (project, c)
                }
                None => {
                    state
                        .desktops
                        .create_project_with_desktop(&account, ram, cpu)
                        .await?
                }
            };
            Ok(Json(render(&state, &account, &project).await?))
        }
    }
}

pub async fn by_name(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(name): Path<String>,
) -> Answer {
    let project = state
        .store
        .projects(&account.id)
        .await?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("project {name:?} not found")))?;
    Ok(Json(render(&state, &account, &project).await?))
}

pub async fn get(State(state): State<AppState>, Caller(account): Caller, Path(id): Path<String>) -> Answer {
    let project = find(&state, &account, &id).await?;
    Ok(Json(render(&state, &account, &project).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
) -> Answer {
    let project = find(&state, &account, &id).await?;
    for computer in state.store.computers_of_project(&account.id, &project.id).await? {
        match state.desktops.delete(&computer).await {
            // Deleted meanwhile (through another call or replica): nothing left to do.
            Err(DesktopError::NotFound(_)) => {}
            other => other?,
        }
    }
    state.store.delete_project(&account.id, &project.id).await?;
    Ok(Json(json!({ "success": true, "id": project.id })))
}

pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> Answer {
    let account = &caller.0;
    let project = find(&state, account, &id).await?;
    match action.as_str() {
        "delete" => return delete(State(state), caller, Path(id)).await,
        "start" | "stop" | "restart" => {}
        other => return Err(ApiError::NotFound(format!("no project action {other:?}"))),
    }
    for mut computer in state.store.computers_of_project(&account.id, &project.id).await? {
        match action.as_str() {
            "start" => state.desktops.start(account, &mut computer).await?,
            "stop" => state.desktops.stop(&mut computer).await?,
            _ => state.desktops.restart(account, &mut computer).await?,
        }
    }
    Ok(Json(render(&state, account, &project).await?))
}
