//! Every operation in the OpenAPI document, walked from the document itself so a new route is
//! covered the day it is added: strangers get 404 and reach no desktop, bad credentials get
//! 401, and on every route that takes a body, oversized (10 MB), non-UTF-8, truncated,
//! non-object, NaN, huge, negative, wrongly typed and deeply nested bodies get their documented
//! 4xx with a JSON error; methods a path lacks get 405.

use axum::http::{StatusCode, header};
use serde_json::{Value, json};

mod common;

use common::inproc::Gateway;

/// A body each action would carry out, aimed at spots the owner's own state can be told from.
fn acting_body(path: &str) -> Value {
    let action = path.rsplit('/').next().unwrap();
    match action {
        "click" | "move" | "mouse-down" | "mouse-up" => json!({"x": 7, "y": 7}),
        "drag" => json!({"start_x": 7, "start_y": 7, "end_x": 9, "end_y": 9, "duration": 0}),
        "scroll" => json!({"x": 7, "y": 7, "direction": "down"}),
        "type" => json!({"text": "stranger"}),
        "key" | "key-down" | "key-up" => json!({"key": "ctrl"}),
        "bash" => json!({"command": "touch /tmp/stranger-bash"}),
        "exec" => json!({"code": "open('/tmp/stranger-py', 'w').write('x')"}),
        "wait" => json!({"duration": 0}),
        "viewer-token" => json!({"mode": "control"}),
        _ => json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_refuses_strangers_bad_credentials_and_bad_bodies() {
    // Hundreds of requests on one key in a few seconds: the rate limit has its own test.
    let gw = Gateway::with("routes", |c| {
        c.plans.get_mut("free").unwrap().requests_per_second = 100_000;
    })
    .await;
    let owner = gw.key("owner").await;
    let stranger = gw.key("stranger").await;
    let ws = gw
        .ok("POST", "/api/projects", &owner, Some(json!({"name": "mine"})))
        .await;
    let ws_id = ws["id"].as_str().unwrap().to_string();
    let computer = gw
        .ok(
            "POST",
            "/api/computers",
            &owner,
            Some(json!({"workspace_id": ws_id, "name": "desk"})),
        )
        .await;
    let id = computer["id"].as_str().unwrap().to_string();
    let c = format!("/api/computers/{id}");
    let shot = gw
        .ok(
            "GET",
            &format!("{c}/screenshot?response_format=url"),
            &owner,
            None,
        )
        .await;
    let file = shot["image"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    gw.ok(
        "POST",
        &format!("{c}/move"),
        &owner,
        Some(json!({"x": 300, "y": 300})),
    )
    .await;
    let agents = common::desktop_pids(&id, "orgo-agent");
    assert_eq!(agents.len(), 1, "one agent runs the owner's desktop");

    let concrete = |template: &str| {
        let id_for = if template.starts_with("/projects") || template.starts_with("/workspaces") {
            &ws_id
        } else {
            &id
        };
        format!(
            "/api{}",
            template
                .replace("{id}", id_for)
                .replace("{name}", "mine")
                .replace("{file}", &file)
        )
    };
    let operations = gw.doc.operations();
    assert!(operations.len() >= 30, "the document lists the API");

    // Strangers: every route naming the owner's things answers 404, as for a missing one,
    // and nothing reaches the desktop (checked below by its pointer, files, agent and clock).
    let before = gw
        .state
        .store
        .computer(&account_id(&gw, "owner").await, &id)
        .await
        .unwrap()
        .unwrap()
        .last_active;
    while now() <= before {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (method, template, _) in &operations {
        if !template.contains('{') {
            continue;
        }
        let path = concrete(template);
        let (status, v) = gw
            .send(method, &path, Some(&stranger), Some(acting_body(template)))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        // Refused as the owner's thing, not as a route the router lacks.
        let error = v["error"].as_str().unwrap_or_default();
        assert!(
            !error.contains("no computer action") && !error.contains("no such API route"),
            "{method} {path} is documented but not served: {v}"
        );
    }
    let (status, v) = gw
        .send(
            "POST",
            "/api/computers",
            Some(&stranger),
            Some(json!({"workspace_id": ws_id})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a computer in another's workspace: {v}"
    );
    let after = gw
        .state
        .store
        .computer(&account_id(&gw, "owner").await, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.last_active, before,
        "no stranger's call counted as the owner's activity"
    );
    assert_eq!(after.status, orgo_gateway::store::Status::Running);
    assert_eq!(common::desktop_pids(&id, "orgo-agent"), agents, "not restarted");
    let cursor = gw.ok("GET", &format!("{c}/cursor"), &owner, None).await;
    assert_eq!(
        (cursor["x"].as_i64(), cursor["y"].as_i64()),
        (Some(300), Some(300))
    );
    let files = gw
        .bash(
            &owner,
            &c,
            "ls /tmp/stranger-bash /tmp/stranger-py 2>&1 | wc -l; ls /tmp/stranger-* 2>/dev/null | wc -l",
            None,
        )
        .await;
    assert_eq!(
        files["output"].as_str().unwrap().split_whitespace().nth(1),
        Some("0"),
        "no stranger's command ran: {files}"
    );
    let (_, listed) = gw.send("GET", "/api/projects", Some(&stranger), None).await;
    assert_eq!(listed["projects"], json!([]));

    // Credentials: every route, each bad form of the header → 401 with a JSON error.
    let revoked = gw.key("owner").await;
    let (key_id, _) = revoked.trim_start_matches("orgo_").split_once('_').unwrap();
    assert!(gw.state.store.revoke_key(key_id).await.unwrap());
    let long = format!("Bearer orgo_{}", "a".repeat(16 << 10));
    let bad: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Basic {owner}")),
        Some(format!("bearer{owner}")),
        Some(format!("Bearer {owner}x")),
        Some(format!("Bearer {revoked}")),
        Some(long),
    ];
    for (method, template, _) in &operations {
        let path = concrete(template);
        for auth in &bad {
            let body = acting_body(template).to_string().into_bytes();
            let (status, headers, v) = gw.send_raw(method, &path, auth.as_deref(), body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}: {v}");
            assert!(v["error"].is_string(), "{v}");
            assert!(headers.contains_key(header::WWW_AUTHENTICATE), "{method} {path}");
        }
    }

    // Bodies: on every route that takes one, broken bodies are refused before the desktop.
    let limit = gw.state.config.max_body_bytes;
    let huge = format!("{{\"text\": \"{}\"}}", "x".repeat(10 << 20)).into_bytes();
    assert!(huge.len() > limit);
    let deep = format!("{}{}", "[".repeat(4096), "]".repeat(4096));
    let broken: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("10 MB", huge, StatusCode::PAYLOAD_TOO_LARGE),
        (
            "invalid UTF-8",
            b"{\"text\": \"\xff\xfe\", \"x\": 1}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("truncated", b"{\"x\": 1, ".to_vec(), StatusCode::BAD_REQUEST),
        ("an array", b"[1, 2]".to_vec(), StatusCode::BAD_REQUEST),
        ("a string", b"\"click\"".to_vec(), StatusCode::BAD_REQUEST),
        ("NaN", numbers("NaN"), StatusCode::BAD_REQUEST),
        ("a huge number", numbers("1e400"), StatusCode::BAD_REQUEST),
        ("a negative number", numbers("-1"), StatusCode::BAD_REQUEST),
        ("numbers as strings", numbers("\"7\""), StatusCode::BAD_REQUEST),
        ("numbers as booleans", numbers("true"), StatusCode::BAD_REQUEST),
        ("numbers as objects", numbers("{}"), StatusCode::BAD_REQUEST),
        ("nested 4,096 deep", numbers(&deep), StatusCode::BAD_REQUEST),
    ];
    let owner_auth = format!("Bearer {owner}");
    for (method, template, has_body) in &operations {
        if !has_body {
            continue;
        }
        let path = concrete(template);
        for (what, body, want) in &broken {
            let (status, _, v) = gw.send_raw(method, &path, Some(&owner_auth), body.clone()).await;
            assert_eq!(status, *want, "{method} {path} with {what}: {v}");
            assert!(
                !v["error"].as_str().unwrap_or_default().is_empty(),
                "{method} {path} with {what}: {v}"
            );
        }
    }

    // Methods: a method a path lacks is a 405 naming the ones it takes.
    let mut paths: Vec<&String> = operations.iter().map(|(_, t, _)| t).collect();
    paths.dedup();
    for template in paths {
        let path = concrete(template);
        let documented = |m: &str| {
            operations
                .iter()
                .any(|(om, t, _)| t == template && om.eq_ignore_ascii_case(m))
        };
        for method in ["PATCH", "PUT", "TRACE"].into_iter().filter(|m| !documented(m)) {
            let (status, headers, v) = gw.send_raw(method, &path, Some(&owner_auth), Vec::new()).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {v}");
            assert!(v["error"].is_string(), "{v}");
            assert!(headers.contains_key(header::ALLOW), "{method} {path}");
        }
    }

    // After all of it the owner's desktop still works.
    let done = gw.bash(&owner, &c, "echo still-here", None).await;
    assert_eq!(done["output"], "still-here\n");
}

/// A body giving `value` to every numeric field any route has, so each route meets it in a
/// field it reads (routes ignore fields they do not have).
fn numbers(value: &str) -> Vec<u8> {
    let fields = [
        "x",
        "y",
        "start_x",
        "start_y",
        "end_x",
        "end_y",
        "amount",
        "count",
        "duration",
        "timeout",
        "ram",
        "cpu",
        "ttl_seconds",
    ];
    let mut body: Vec<String> = fields.iter().map(|f| format!("\"{f}\": {value}")).collect();
    body.push(format!("\"config\": {{\"ram\": {value}, \"cpu\": {value}}}"));
    format!("{{{}}}", body.join(", ")).into_bytes()
}

async fn account_id(gw: &Gateway, name: &str) -> String {
    gw.state.store.account_by_name(name).await.unwrap().unwrap().id
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
