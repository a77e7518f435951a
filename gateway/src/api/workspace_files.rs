//! Orgo's workspace files: uploaded (multipart, at most [`MAX_FILE`]) into a workspace and
//! optionally a desktop's `~/Desktop`, exported from a desktop's home, listed, deleted, and
//! read through expiring signed links the gateway serves (`GET /api/files/{id}/content?token=`,
//! no API key needed). The bytes are kept in the store, so every replica serves them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::desktops::{Upload, new_id};
use crate::error::ApiError;
use crate::json::parse_body;
use crate::state::AppState;
use crate::store::{Computer, StoredFile, now};
use crate::token::{Grant, Mode};

/// The largest workspace file: Orgo's 10 MB.
pub const MAX_FILE: usize = 10 << 20;

/// How long a download link opens its file: Orgo's hour.
const LINK_SECONDS: i64 = 3600;

/// Where an upload to a desktop lands in its home.
const DESKTOP_DIR: &str = "Desktop";

fn file_json(f: &StoredFile) -> Value {
    json!({
        "id": f.id,
        "filename": f.filename,
        "size_bytes": f.size,
        "content_type": f.content_type,
        "source": f.source,
        "project_id": f.project_id,
        "workspace_id": f.project_id,
        "desktop_id": f.desktop_id,
        "created_at": f.created_at,
    })
}

/// A file name as kept and as written on a desktop: one path component of 1–255 bytes.
fn filename(name: Option<&str>) -> Result<String, ApiError> {
    let name = name.unwrap_or("").trim();
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    if !ok {
        return Err(ApiError::BadRequest(
            "a file name is 1–255 bytes without '/' or control characters".into(),
        ));
    }
    Ok(name.to_string())
}

/// What a multipart upload carried.
#[derive(Default)]
struct Parts {
    file: Option<(String, String, Vec<u8>)>,
    project: Option<String>,
    desktop: Option<String>,
}

/// Reads a multipart upload: the `file` part (counted while read, at most [`MAX_FILE`]) and
/// the `projectId`/`desktopId` fields (also spelled `workspace_id`, `project_id`,
/// `desktop_id`).
async fn read_parts(mut multipart: Multipart) -> Result<Parts, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::BadRequest(format!("the multipart body could not be read: {e}"))
    };
    let mut parts = Parts::default();
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "file" => {
                let name = filename(field.file_name())?;
                let content_type = field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_string();
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if bytes.len() + chunk.len() > MAX_FILE {
                        return Err(ApiError::TooLarge(format!(
                            "a workspace file may be at most {} MB",
                            MAX_FILE >> 20
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                parts.file = Some((name, content_type, bytes));
            }
            "projectId" | "project_id" | "workspace_id" | "workspaceId" => {
                parts.project = Some(field.text().await.map_err(bad)?)
            }
            "desktopId" | "desktop_id" => parts.desktop = Some(field.text().await.map_err(bad)?),
            // Other fields are not Orgo's; ignored as unknown JSON fields are.
            _ => {}
        }
    }
    Ok(parts)
}

/// Keeps `bytes` as a file of the caller's `project` (and writes it into `desktop`'s
/// `~/Desktop` first, when given: a desktop that is not running is a 409).
async fn keep(
    state: &AppState,
    caller: &Caller,
    project: &str,
    desktop: Option<&Computer>,
    (name, content_type, bytes): (String, String, Vec<u8>),
) -> Result<StoredFile, ApiError> {
    let project = state
        .store
        .project(&caller.account.id, project)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {project:?} not found")))?;
    caller.reaches(&project.id)?;
    if let Some(desktop) = desktop {
        let upload = Upload {
            path: format!("{DESKTOP_DIR}/{name}"),
            mode: 0,
            make_parents: true,
            max_bytes: MAX_FILE as u64,
        };
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes.clone()))]);
        state.desktops.write_file(desktop, upload, body).await?;
    }
    let file = StoredFile {
        id: new_id(),
        account_id: caller.account.id.clone(),
        project_id: project.id,
        desktop_id: desktop.map(|d| d.id.clone()),
        filename: name,
        content_type,
        source: "upload".into(),
        size: bytes.len() as u64,
        created_at: now(),
    };
    state.store.keep_file(&file, &bytes).await?;
    Ok(file)
}

/// `POST /api/files/upload` (multipart: `file`, `projectId`, `desktopId`?): `{file}`.
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<Json<Value>, ApiError> {
    let parts = read_parts(multipart).await?;
    let file = parts
        .file
        .ok_or_else(|| ApiError::BadRequest("the multipart body needs a file part".into()))?;
    let desktop = match parts.desktop.as_deref().filter(|d| !d.is_empty()) {
        Some(id) => Some(caller.computer(&state, id).await?),
        None => None,
    };
    let project = parts
        .project
        .or_else(|| desktop.as_ref().map(|d| d.project_id.clone()))
        .ok_or_else(|| ApiError::BadRequest("projectId (the workspace) is required".into()))?;
    let kept = keep(&state, &caller, &project, desktop.as_ref(), file).await?;
    Ok(Json(json!({ "success": true, "file": file_json(&kept) })))
}

/// `POST /api/computers/{id}/files/upload` (multipart: `file`): into its `~/Desktop` and its
/// workspace's files.
pub async fn upload_to_computer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    // Found first: another account's computer is a 404 whatever the body.
    let computer = caller.computer(&state, &id).await?;
    let multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let file = read_parts(multipart)
        .await?
        .file
        .ok_or_else(|| ApiError::BadRequest("the multipart body needs a file part".into()))?;
    let kept = keep(&state, &caller, &computer.project_id, Some(&computer), file).await?;
    Ok(Json(json!({ "success": true, "file": file_json(&kept) })))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "projectId", alias = "project_id", alias = "workspace_id")]
    project: Option<String>,
    #[serde(rename = "desktopId", alias = "desktop_id")]
    desktop: Option<String>,
}

/// `GET /api/files?projectId=&desktopId=`: `{files}`, oldest first (by the second).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let project = q
        .project
        .ok_or_else(|| ApiError::BadRequest("projectId (the workspace) is required".into()))?;
    let project = state
        .store
        .project(&caller.account.id, &project)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {project:?} not found")))?;
    caller.reaches(&project.id)?;
    let desktop = match q.desktop.as_deref().filter(|d| !d.is_empty()) {
        Some(id) => Some(caller.computer(&state, id).await?.id),
        None => None,
    };
    let files = state
        .store
        .files(&caller.account.id, &project.id, desktop.as_deref())
        .await?;
    Ok(Json(
        json!({ "files": files.iter().map(file_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    #[serde(rename = "desktopId", alias = "desktop_id")]
    desktop: String,
    path: String,
}

/// `POST /api/files/export {desktopId, path}`: a file of the desktop's home (at most
/// [`MAX_FILE`]; outside the home a 403) kept as a workspace file: `{success, file, url}` with
/// a download link good for an hour.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: Export = parse_body(&body)?;
    let computer = caller.computer(&state, &req.desktop).await?;
    let entry = state.desktops.stat_file(&computer, &req.path).await?;
    if entry.size > MAX_FILE as u64 {
        return Err(ApiError::TooLarge(format!(
            "an exported file may be at most {} MB; read larger ones with GET /api/computers/{{id}}/files/content",
            MAX_FILE >> 20
        )));
    }
    let mut chunks = state
        .desktops
        .read_file(&computer, &req.path, 0, MAX_FILE as u64 + 1)
        .await?;
    let mut bytes = Vec::with_capacity(entry.size as usize);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(crate::desktops::AgentError::from)?;
        bytes.extend_from_slice(&chunk.data);
        if bytes.len() > MAX_FILE {
            return Err(ApiError::TooLarge(format!(
                "an exported file may be at most {} MB",
                MAX_FILE >> 20
            )));
        }
    }
    let name = req.path.rsplit('/').next().unwrap_or_default();
    let file = StoredFile {
        id: new_id(),
        account_id: caller.account.id.clone(),
        project_id: computer.project_id.clone(),
        desktop_id: Some(computer.id.clone()),
        filename: filename(Some(name))?,
        content_type: "application/octet-stream".into(),
        source: "export".into(),
        size: bytes.len() as u64,
        created_at: now(),
    };
    state.store.keep_file(&file, &bytes).await?;
    let (url, expires_at) = link(&state, &file);
    Ok(Json(
        json!({ "success": true, "file": file_json(&file), "url": url, "expires_at": expires_at }),
    ))
}

/// A download link of `file` and when it expires.
fn link(state: &AppState, file: &StoredFile) -> (String, i64) {
    let grant = Grant {
        computer: file.id.clone(),
        account: file.account_id.clone(),
        mode: Mode::Download,
        expires_at: now() + LINK_SECONDS,
        workspace: None,
    };
    let token = state.links.issue(&grant);
    let url = format!(
        "{}/api/files/{}/content?token={token}",
        state.config.public_url(),
        file.id
    );
    (url, grant.expires_at)
}

/// The caller's file `id`, in reach of its key.
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<(StoredFile, Vec<u8>), ApiError> {
    let (file, bytes) = state
        .store
        .file(&caller.account.id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("file {id:?} not found")))?;
    caller.reaches(&file.project_id)?;
    Ok((file, bytes))
}

#[derive(Debug, Deserialize)]
pub struct IdQuery {
    id: String,
}

/// `GET /api/files/download?id=`: `{url, expires_at}`, a link that opens the file for an hour
/// without the API key.
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<IdQuery>,
) -> Result<Json<Value>, ApiError> {
    let (file, _) = find(&state, &caller, &q.id).await?;
    let (url, expires_at) = link(&state, &file);
    Ok(Json(json!({ "url": url, "expires_at": expires_at })))
}

/// `DELETE /api/files/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (file, _) = find(&state, &caller, &id).await?;
    state.store.delete_file(&caller.account.id, &file.id).await?;
    Ok(Json(json!({ "success": true, "id": file.id })))
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /api/files/{id}/content?token=`: the file a download link names (no API key; the
/// signed token is the credential).
pub async fn content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let token = q.token.ok_or_else(|| {
        ApiError::Unauthorized("a download link's token is needed (GET /api/files/download?id=)".into())
    })?;
    let grant = state.links.verify(&token)?;
    if grant.mode != Mode::Download || grant.computer != id {
        return Err(ApiError::Unauthorized("this token opens no such file".into()));
    }
    let (file, bytes) = state
        .store
        .file(&grant.account, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("this file was deleted".into()))?;
    // The name in ASCII for old clients, and whole in RFC 5987's UTF-8 form.
    let ascii: String = file
        .filename
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let utf8 = percent_encoding::utf8_percent_encode(&file.filename, percent_encoding::NON_ALPHANUMERIC);
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{utf8}");
    Ok((
        [
            (header::CONTENT_TYPE, file.content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}
