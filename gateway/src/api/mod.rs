//! The public REST surface under `/api`: one routing table, request bodies parsed into typed,
//! validated commands before anything reaches a desktop.

mod body;
pub(crate) mod computers;
mod projects;
mod wire;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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
    // JSON is UTF-8, and serde_json checks only the strings it keeps: a bad byte in an
    // ignored field would otherwise pass.
    if std::str::from_utf8(text).is_err() {
        return Err(ApiError::BadRequest("request body is not valid UTF-8".into()));
    }
    // serde would also read a struct from an array of its fields; the API takes objects only.
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest("request body must be a JSON object".into()));
    }
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

/// Every request body the API parses, by route: the computer actions and the three creating
/// routes. The property tests and the cargo-fuzz target (`fuzz/`) feed each of them bytes.
#[cfg(any(test, fuzzing))]
pub const BODY_ROUTES: &[&str] = &[
    "projects",
    "computers",
    "viewer-token",
    "wait",
    "click",
    "move",
    "mouse-down",
    "mouse-up",
    "drag",
    "scroll",
    "type",
    "key",
    "key-down",
    "key-up",
    "bash",
    "exec",
];

/// Parses a body as route `route` (one of [`BODY_ROUTES`]) does before any desktop is touched:
/// a checked command, or the error the client gets.
#[cfg(any(test, fuzzing))]
pub fn check_body(route: &str, body: &Bytes) -> Result<(), ApiError> {
    match route {
        "projects" => parse_body::<wire::CreateProject>(body).map(drop),
        "computers" => parse_body::<wire::CreateComputer>(body).map(drop),
        "viewer-token" => parse_body::<crate::live::TokenRequest>(body).map(drop),
        "wait" => parse_body::<wire::Wait>(body).map(drop),
        action => computers::check_action(action, body),
    }
}

/// Turns the framework's own error answers (405, 413, path rejections, …), which are plain
/// text or empty, into the API's `{"error": "..."}` shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method".to_string(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("request failed").to_string(),
        _ => text,
    };
    let mut out = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n == header::ALLOW || *n == header::WWW_AUTHENTICATE)
    {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}

/// The committed OpenAPI 3.1 document of this API (`gateway/openapi.json`), written for the
/// default 1280×800 screen.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The document this gateway serves: the committed one with every screen coordinate's bounds
/// (the fields marked `x-screen-axis`) set to the configured screen.
pub fn openapi_document(width: u32, height: u32) -> String {
    fn fit(v: &mut serde_json::Value, width: u32, height: u32) {
        match v {
            serde_json::Value::Object(map) => {
                let max = match map.get("x-screen-axis").and_then(|a| a.as_str()) {
                    Some("x") => Some(width - 1),
                    Some("y") => Some(height - 1),
                    Some("width") => Some(width),
                    Some("height") => Some(height),
                    _ => None,
                };
                if let Some(max) = max {
                    map.insert("maximum".into(), max.into());
                }
                map.values_mut().for_each(|v| fit(v, width, height));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| fit(v, width, height)),
            _ => {}
        }
    }
    let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    fit(&mut doc, width, height);
    doc.to_string()
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let document = openapi_document(state.config.screen_width, state.config.screen_height);
    let api = Router::new()
        .route("/projects", get(projects::list).post(projects::create))
        .route("/projects/by-name/{name}", get(projects::by_name))
        .route("/projects/{id}", get(projects::get).delete(projects::delete))
        .route("/projects/{id}/{action}", post(projects::action))
        .route("/computers", post(computers::create))
        .route("/computers/{id}", get(computers::get).delete(computers::delete))
        .route("/computers/{id}/screenshot", get(computers::screenshot))
        .route("/computers/{id}/cursor", get(computers::cursor))
        .route("/computers/{id}/viewer-token", post(crate::live::issue))
        .route("/computers/{id}/{action}", post(computers::action))
        .route("/storage/screenshots/{file}", get(computers::stored_screenshot))
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
        )
        .fallback(|| async { ApiError::NotFound("no such API route".into()) });
    Router::new()
        .nest("/api", api)
        .merge(crate::live::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::serve))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            body::refuse_oversized,
        ))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(body: &Bytes) -> Vec<Result<(), ApiError>> {
        BODY_ROUTES.iter().map(|r| check_body(r, body)).collect()
    }

    /// JSON values of any shape, with the field names the routes use.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            let key = prop::sample::select(vec![
                "x",
                "y",
                "text",
                "key",
                "command",
                "code",
                "timeout",
                "config",
                "ram",
                "cpu",
                "name",
                "duration",
                "button",
                "double",
                "count",
                "amount",
                "direction",
                "mode",
                "zz",
            ]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(key.prop_map(String::from), inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every character up to U+00A0 in typed text: the route accepts exactly what the
    /// document's pattern allows, and a refusal names the character and its position as the
    /// agent does.
    #[test]
    fn typed_control_characters_follow_the_document() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let text = &doc["paths"]["/computers/{id}/type"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["properties"]["text"];
        let validator = jsonschema::draft202012::new(text).unwrap();
        for cp in 0..=0xa0u32 {
            let c = char::from_u32(cp).unwrap();
            let value = format!("ab{c}");
            let body = Bytes::from(serde_json::json!({ "text": value }).to_string());
            let routed = check_body("type", &body);
            assert_eq!(
                routed.is_ok(),
                validator.is_valid(&serde_json::json!(value)),
                "U+{cp:04X}: route and document disagree"
            );
            if let Err(ApiError::BadRequest(m)) = routed {
                assert!(m.contains(&format!("U+{cp:04X} at character 3;")), "{m}");
            }
        }
        let crlf = Bytes::from(r#"{"text": "a\r\nb\tc\bd"}"#);
        assert!(check_body("type", &crlf).is_ok());
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_a_400(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            for r in parse_all(&Bytes::from(bytes)) {
                prop_assert!(r.is_ok() || matches!(r, Err(ApiError::BadRequest(_))));
            }
        }

        #[test]
        fn any_json_parses_or_is_a_400_naming_the_problem(v in json_value()) {
            let body = Bytes::from(v.to_string());
            for r in parse_all(&body) {
                match r {
                    Ok(()) => prop_assert!(v.is_object(), "only objects are bodies: {v}"),
                    Err(ApiError::BadRequest(m)) => prop_assert!(!m.is_empty()),
                    Err(other) => prop_assert!(false, "{other:?} for {v}"),
                }
            }
        }
    }
}
