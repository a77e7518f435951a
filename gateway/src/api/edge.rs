//! What every HTTP answer passes through on its way out: a request id (`X-Request-Id`, in
//! every error body as `request_id`, and on every log line written while the request ran),
//! one log line per failed request, and the framework's own error answers (405, 413, path
//! rejections, …), which are plain text or empty, made the API's `{"error": "..."}` shape.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::Instrument;

/// The header that carries a request's id both ways.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The largest error body rewritten; larger ones are passed on as they are.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A new request id: `req_` and 24 hex digits.
fn new_request_id() -> String {
    format!("req_{}", crate::desktops::new_id())
}

/// Middleware around every route: runs the request inside a span that carries its id,
/// answers the id in `X-Request-Id`, makes every error answer a JSON object carrying
/// `error` and `request_id`, and logs each failed request once with its id.
pub async fn edge(request: Request, next: Next) -> Response {
    let id = new_request_id();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = tracing::info_span!("request", request_id = %id);
    let response = next.run(request).instrument(span).await;
    let status = response.status();
    let mut response = if status.is_client_error() || status.is_server_error() {
        let response = with_request_id(response, &id).await;
        if status.is_server_error() {
            tracing::warn!(request_id = %id, %method, %path, status = status.as_u16(), "request failed");
        } else {
            tracing::info!(request_id = %id, %method, %path, status = status.as_u16(), "request refused");
        }
        response
    } else {
        response
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

/// An error answer as a JSON object with `error` (the framework's own sentence where the
/// answer was not JSON) and `request_id`.
async fn with_request_id(response: Response, id: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        // Larger than any error of ours: not ours to reshape.
        return (parts.status, "").into_response();
    };
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let mut object = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) if is_json => map,
        _ => {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            let message = match parts.status {
                StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_string(),
                StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method".to_string(),
                status if text.is_empty() => {
                    status.canonical_reason().unwrap_or("request failed").to_string()
                }
                _ => text,
            };
            let mut map = serde_json::Map::new();
            map.insert("error".into(), json!(message));
            map
        }
    };
    object.insert("request_id".into(), json!(id));
    let body = Value::Object(object).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, axum::body::Body::from(body))
}
