//! The public REST surface under `/api`: one routing table (the actions' routes made from
//! `action::ACTIONS`), request input parsed into checked actions before anything reaches a
//! desktop, and every answer through `edge` (request ids, JSON errors).

mod actions;
mod body;
pub(crate) mod computers;
mod edge;
mod files;
mod health;
mod projects;
pub(crate) mod viewers;
pub(crate) mod wire;
mod workspace_files;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};

use crate::error::ApiError;
use crate::state::AppState;

/// Every request body the API parses, by route: the creating routes, the settings and files
/// routes and every action that takes a body (the names are this table's, not paths). The property tests and the cargo-fuzz target (`fuzz/`) feed each of them
/// bytes.
#[cfg(any(test, fuzzing))]
pub fn body_routes() -> Vec<&'static str> {
    let actions = crate::action::ACTIONS
        .iter()
        .filter(|f| f.method == crate::action::Method::Post)
        .map(|f| f.name);
    [
        "projects",
        "workspaces",
        "computers",
        "viewer-token",
        "desktop-token",
        "auto-stop",
        "resize",
        "computer-move",
        "clone",
        "files-export",
    ]
    .into_iter()
    .chain(actions)
    .collect()
}

/// Parses a body as route `route` (one of [`body_routes`]) does before any desktop is touched:
/// a checked action, or the error the client gets.
#[cfg(any(test, fuzzing))]
pub fn check_body(route: &str, body: &[u8]) -> Result<(), ApiError> {
    use crate::json::parse_body;
    match route {
        "projects" => parse_body::<wire::CreateProject>(body).map(drop)?,
        "computers" => parse_body::<wire::CreateComputer>(body).map(drop)?,
        "viewer-token" => parse_body::<viewers::TokenRequest>(body).map(drop)?,
        "desktop-token" => parse_body::<viewers::DesktopTokenRequest>(body).map(drop)?,
        "workspaces" => parse_body::<projects::CreateWorkspace>(body).map(drop)?,
        "auto-stop" => parse_body::<computers::AutoStop>(body).map(drop)?,
        "resize" => parse_body::<computers::ResizeRequest>(body).map(drop)?,
        "computer-move" => parse_body::<computers::MoveRequest>(body).map(drop)?,
        "clone" => parse_body::<computers::CloneRequest>(body).map(drop)?,
        "files-export" => parse_body::<workspace_files::Export>(body).map(drop)?,
        action => {
            let form = crate::action::form(action).expect("a route of body_routes()");
            let input = crate::action::Input { body, query: "" };
            (form.parse)(input, &crate::action::Screen::new(1280, 800)).map(drop)?
        }
    }
    Ok(())
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

/// `GET /metrics`: the Prometheus exposition.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    // A scrape while the database is away still answers, without the desktops' states.
    let computers = state.store.all_computers().await.ok();
    let (content_type, text) = state.metrics.render(computers.as_deref());
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let document = openapi_document(state.config.screen_width, state.config.screen_height);
    let api = Router::new()
        .route("/projects", get(projects::list).post(projects::create))
        .route("/projects/by-name/{name}", get(projects::by_name))
        .route("/projects/{id}", get(projects::get).delete(projects::delete))
        .route("/projects/{id}/{action}", post(projects::action))
        .route(
            "/workspaces",
            get(projects::list_workspaces).post(projects::create_workspace),
        )
        .route("/workspaces/{id}", get(projects::get).delete(projects::delete))
        .route("/computers", post(computers::create))
        .route("/computers/{id}", get(computers::get).delete(computers::delete))
        .route("/computers/{id}/start", post(computers::start))
        .route("/computers/{id}/stop", post(computers::stop))
        .route("/computers/{id}/restart", post(computers::restart))
        .route("/computers/{id}/ensure-running", post(computers::ensure_running))
        .route(
            "/computers/{id}/auto-stop",
            get(computers::get_auto_stop).patch(computers::set_auto_stop),
        )
        .route("/computers/{id}/vnc-password", get(computers::vnc_password))
        .route("/computers/{id}/move", patch(computers::move_to))
        .route("/computers/{id}/resize", patch(computers::resize))
        .route("/computers/{id}/clone", post(computers::clone))
        .route("/computers/{id}/viewer-token", post(viewers::issue))
        .route("/computers/{id}/desktop-token", post(viewers::issue_desktop))
        .route("/computers/{id}/files", get(files::list).delete(files::remove))
        .route("/computers/{id}/files/stat", get(files::stat))
        .route("/files", get(workspace_files::list))
        .route("/files/export", post(workspace_files::export))
        .route("/files/download", get(workspace_files::download))
        .route("/files/{id}", axum::routing::delete(workspace_files::delete))
        .route("/files/{id}/content", get(workspace_files::content))
        .merge(actions::routes())
        .route("/storage/screenshots/{file}", get(actions::stored_screenshot))
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
        )
        .fallback(|| async { ApiError::NotFound("no such API route".into()) });
    // Bodies streamed through to a desktop, not read whole first: outside the body limit.
    let streamed = Router::new()
        .route(
            "/api/computers/{id}/files/content",
            get(files::read).put(files::write),
        )
        .merge(
            // Multipart uploads: read part by part, the file counted while read.
            Router::new()
                .route("/api/files/upload", post(workspace_files::upload))
                .route(
                    "/api/computers/{id}/files/upload",
                    post(workspace_files::upload_to_computer),
                )
                .layer(axum::extract::DefaultBodyLimit::max(
                    workspace_files::MAX_FILE + (64 << 10),
                )),
        );
    Router::new()
        .nest("/api", api)
        .merge(crate::live::routes(crate::live::Live {
            desktops: state.desktops.clone(),
            links: state.links.clone(),
        }))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            body::refuse_oversized,
        ))
        .merge(streamed)
        .layer(axum::middleware::from_fn(edge::edge))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(body: &[u8]) -> Vec<Result<(), ApiError>> {
        body_routes().iter().map(|r| check_body(r, body)).collect()
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
            let body = serde_json::json!({ "text": value }).to_string();
            let routed = check_body("type", body.as_bytes());
            assert_eq!(
                routed.is_ok(),
                validator.is_valid(&serde_json::json!(value)),
                "U+{cp:04X}: route and document disagree"
            );
            if let Err(ApiError::BadRequest(m)) = routed {
                assert!(m.contains(&format!("U+{cp:04X} at character 3;")), "{m}");
            }
        }
        assert!(check_body("type", br#"{"text": "a\r\nb\tc\bd"}"#).is_ok());
    }

    /// The actions' table and the document agree both ways: every action is documented
    /// under its name with its method, and every documented computer route is an action or
    /// one of the routes of its own (lifecycle, settings, credentials; `move` also takes
    /// PATCH, the workspace move). `tests/routes.rs` walks the document against the served
    /// router.
    #[test]
    fn the_actions_table_and_the_document_agree() {
        use crate::action::{ACTIONS, Method};
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for form in ACTIONS {
            let path = format!("/computers/{{id}}/{}", form.name);
            let methods = paths
                .get(&path)
                .unwrap_or_else(|| panic!("{path} is not documented"));
            let method = match form.method {
                Method::Get => "get",
                Method::Post => "post",
            };
            assert!(
                methods.get(method).is_some(),
                "{path} is not documented for {method}"
            );
            let others: Vec<_> = methods
                .as_object()
                .unwrap()
                .keys()
                .filter(|m| *m != method)
                .collect();
            let allowed: &[&str] = if form.name == "move" { &["patch"] } else { &[] };
            assert!(
                others.iter().all(|m| allowed.contains(&m.as_str())),
                "{path}: also {others:?}"
            );
        }
        let own = [
            "start",
            "stop",
            "restart",
            "ensure-running",
            "auto-stop",
            "vnc-password",
            "resize",
            "viewer-token",
            "desktop-token",
            "files",
            "files/stat",
            "files/content",
            "files/upload",
            "clone",
        ];
        for path in paths.keys() {
            if let Some(name) = path.strip_prefix("/computers/{id}/") {
                assert!(
                    own.contains(&name) || ACTIONS.iter().any(|f| f.name == name),
                    "{path} is documented but is no action"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_a_400(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            for r in parse_all(&bytes) {
                prop_assert!(r.is_ok() || matches!(r, Err(ApiError::BadRequest(_))));
            }
        }

        #[test]
        fn any_json_parses_or_is_a_400_naming_the_problem(v in json_value()) {
            for r in parse_all(v.to_string().as_bytes()) {
                match r {
                    Ok(()) => prop_assert!(v.is_object(), "only objects are bodies: {v}"),
                    Err(ApiError::BadRequest(m)) => prop_assert!(!m.is_empty()),
                    Err(other) => prop_assert!(false, "{other:?} for {v}"),
                }
            }
        }
    }
}
