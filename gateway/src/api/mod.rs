//! The public REST surface under `/api`: one routing table, request bodies parsed into typed,
//! validated commands before anything reaches a desktop.

mod computers;
mod projects;
mod wire;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Parses a JSON body (an empty one counts as `{}`), naming the field that is wrong.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::BadRequest(format!("request body is not valid JSON for this route: {inner}"))
        } else {
            ApiError::BadRequest(format!("field {path:?}: {inner}"))
        }
    })
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let api = Router::new()
        .route("/projects", get(projects::list).post(projects::create))
        .route("/projects/by-name/{name}", get(projects::by_name))
        .route("/projects/{id}", get(projects::get).delete(projects::delete))
        .route("/projects/{id}/{action}", post(projects::action))
        .route("/computers", post(computers::create))
        .route("/computers/{id}", get(computers::get).delete(computers::delete))
        .route("/computers/{id}/screenshot", get(computers::screenshot))
        .route("/computers/{id}/cursor", get(computers::cursor))
        .route("/computers/{id}/{action}", post(computers::action))
        .route("/storage/screenshots/{file}", get(computers::stored_screenshot))
        .fallback(|| async { ApiError::NotFound("no such API route".into()) });
    Router::new()
        .nest("/api", api)
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}
