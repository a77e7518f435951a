//! A desktop's files over REST, beyond Orgo's API: list a directory, stat, read (streamed out)
//! and write (streamed in, within the plan's `max_file_mb`) a file, delete. Paths are the
//! agent's to confine to the desktop's home: one leading outside answers 403 with the reason.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use orgo_proto::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::desktops::Upload;
use crate::error::ApiError;
use crate::state::AppState;

/// The query of every route here: `path` (relative to the home, `~/…`, or absolute inside it;
/// the home itself when empty).
#[derive(Debug, Deserialize)]
pub struct At {
    #[serde(default)]
    path: String,
    /// Reads: the first byte (0).
    #[serde(default)]
    offset: u64,
    /// Reads: the most bytes (0: to the end).
    #[serde(default)]
    limit: u64,
    /// Writes: permission bits in octal (`755`), 644 when absent.
    #[serde(default)]
    mode: Option<String>,
    /// Writes: make missing parent directories.
    #[serde(default)]
    make_parents: bool,
    /// Deletes: a directory and everything in it.
    #[serde(default)]
    recursive: bool,
}

fn kind(k: i32) -> &'static str {
    match pb::entry::Kind::try_from(k) {
        Ok(pb::entry::Kind::File) => "file",
        Ok(pb::entry::Kind::Directory) => "directory",
        Ok(pb::entry::Kind::Symlink) => "symlink",
        _ => "other",
    }
}

fn entry(e: &pb::Entry) -> Value {
    json!({
        "name": e.name,
        "kind": kind(e.kind),
        "size": e.size,
        "mode": format!("{:o}", e.mode),
        "modified_ms": e.modified_unix_ms,
    })
}

/// `GET /api/computers/{id}/files?path=`: `{path, entries: [{name, kind, size, mode, modified_ms}]}`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(at): Query<At>,
) -> Result<Json<Value>, ApiError> {
    let computer = caller.computer(&state, &id).await?;
    let entries = state.desktops.list_files(&computer, &at.path).await?;
    Ok(Json(
        json!({ "path": at.path, "entries": entries.iter().map(entry).collect::<Vec<_>>() }),
    ))
}

/// `GET /api/computers/{id}/files/stat?path=`: one entry.
pub async fn stat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(at): Query<At>,
) -> Result<Json<Value>, ApiError> {
    let computer = caller.computer(&state, &id).await?;
    Ok(Json(entry(&state.desktops.stat_file(&computer, &at.path).await?)))
}

/// `GET /api/computers/{id}/files/content?path=&offset=&limit=`: the bytes, streamed as the
/// agent reads them (`application/octet-stream`).
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(at): Query<At>,
) -> Result<Response, ApiError> {
    let computer = caller.computer(&state, &id).await?;
    let chunks = state
        .desktops
        .read_file(&computer, &at.path, at.offset, at.limit)
        .await?;
    // A failure mid-way cuts the answer short (its length was not promised): the client sees
    // the connection end early rather than a complete-looking file.
    let body = Body::from_stream(chunks.map(|c| c.map(|c| axum::body::Bytes::from(c.data))));
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// `PUT /api/computers/{id}/files/content?path=&mode=&make_parents=`: the request body becomes
/// the file, streamed through (at most the plan's `max_file_mb`, else 413 and nothing
/// written); answers `{success, path, size}`.
pub async fn write(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(at): Query<At>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let computer = caller.computer(&state, &id).await?;
    let name = &caller.account.plan;
    let max_mb = state
        .config
        .plan(name)
        .ok_or_else(|| {
            ApiError::PlanLimit(format!("account plan {name:?} is not configured on this gateway"))
        })?
        .max_file_mb;
    // A body that says its length is refused before anything moves; one that does not is
    // counted by the agent, which refuses it at the limit with its own sentence.
    if axum::body::HttpBody::size_hint(&body)
        .exact()
        .is_some_and(|n| n > max_mb << 20)
    {
        return Err(ApiError::TooLarge(format!(
            "a file written into a desktop may be at most {max_mb} MiB on this plan"
        )));
    }
    let mode = match at.mode.as_deref() {
        None => 0,
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o7777 && *m != 0)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "mode must be octal permission bits such as 644, not {m:?}"
                ))
            })?,
    };
    let upload = Upload {
        path: at.path.clone(),
        mode,
        make_parents: at.make_parents,
        max_bytes: max_mb << 20,
    };
    let size = state
        .desktops
        .write_file(&computer, upload, body.into_data_stream())
        .await?;
    Ok(Json(json!({ "success": true, "path": at.path, "size": size })))
}

/// `DELETE /api/computers/{id}/files?path=&recursive=`: a file, a symlink (not its target) or,
/// with `recursive=true`, a directory and what it holds.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(at): Query<At>,
) -> Result<Json<Value>, ApiError> {
    let computer = caller.computer(&state, &id).await?;
    state
        .desktops
        .remove_file(&computer, &at.path, at.recursive)
        .await?;
    Ok(Json(json!({ "success": true, "path": at.path })))
}
