//! The REST API through the real router over a fake runtime (`common::fake`): each desktop is an
//! in-process stub agent that records every call. Authentication, plans, tenancy, parsing, rate
//! limits, lifecycle and the mapping of agent errors to HTTP are checked here in milliseconds,
//! with no Xvfb, sandbox or agent binary; what needs a real desktop stays in `api.rs` and the
//! other integration tests.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use orgo_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::{Code, Status};
use tower::ServiceExt;

mod common;

use common::fake::{Call, Event, TINY_JPEG, tiny_png};
use common::inproc::Gateway;

/// A gateway over the fake runtime whose keys have (practically) no rate limit.
async fn unlimited(tag: &str) -> Gateway {
    Gateway::fake_with(tag, |c| {
        for plan in c.plans.values_mut() {
            plan.requests_per_second = 100_000;
        }
    })
    .await
}

/// A new workspace named `ws` with one computer named `name`: (workspace id, computer id,
/// computer path).
async fn computer(gw: &Gateway, key: &str, ws: &str, name: &str) -> (String, String, String) {
    let w = gw
        .ok("POST", "/api/projects", key, Some(json!({"name": ws})))
        .await;
    let ws_id = w["id"].as_str().unwrap().to_string();
    let c = gw
        .ok(
            "POST",
            "/api/computers",
            key,
            Some(json!({"workspace_id": ws_id, "name": name, "ram": 1, "cpu": 1})),
        )
        .await;
    assert_eq!(c["status"], "running", "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let path = format!("/api/computers/{id}");
    (ws_id, id, path)
}

fn at(x: i32, y: i32) -> Option<pb::Point> {
    Some(pb::Point { x, y })
}

fn starts(gw: &Gateway) -> Vec<orgo_gateway::runtime::DesktopSpec> {
    gw.runtime()
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Start(spec) => Some(spec),
            _ => None,
        })
        .collect()
}

/// The key id inside a key (`orgo_<id>_<secret>`).
fn key_id(key: &str) -> &str {
    key.trim_start_matches("orgo_").split_once('_').unwrap().0
}

/// A body each route would carry out.
fn acting_body(template: &str) -> Value {
    match template.rsplit('/').next().unwrap() {
        "click" | "move" | "mouse-down" | "mouse-up" => json!({"x": 7, "y": 7}),
        "drag" => json!({"start_x": 7, "start_y": 7, "end_x": 9, "end_y": 9, "duration": 0}),
        "scroll" => json!({"x": 7, "y": 7, "direction": "down"}),
        "type" => json!({"text": "stranger"}),
        "key" | "key-down" | "key-up" => json!({"key": "ctrl"}),
        "bash" => json!({"command": "touch /tmp/stranger-bash"}),
        "exec" => json!({"code": "open('/tmp/stranger-py', 'w').write('x')"}),
        "wait" => json!({"duration": 0}),
        "viewer-token" => json!({"mode": "control"}),
        "projects" => json!({"name": "theirs"}),
        _ => json!({}),
    }
}

/// Missing, malformed and revoked keys get 401 with `WWW-Authenticate` and a JSON error on
/// every documented route, and none of it reaches a desktop.
#[tokio::test]
async fn every_route_refuses_missing_bad_and_revoked_keys() {
    let gw = unlimited("fake-auth").await;
    let owner = gw.key("owner").await;
    let (ws_id, id, _) = computer(&gw, &owner, "mine", "desk").await;
    let revoked = gw.key("owner").await;
    gw.ok("GET", "/api/projects", &revoked, None).await;
    assert!(gw.state.store.revoke_key(key_id(&revoked)).await.unwrap());

    let long = format!("Bearer orgo_{}", "a".repeat(16 << 10));
    let bad: Vec<(Option<String>, &str)> = vec![
        (None, "missing Authorization"),
        (Some(String::new()), "Bearer <api key>"),
        (Some("Bearer".into()), "Bearer <api key>"),
        (Some("Bearer ".into()), "Bearer <api key>"),
        (Some(format!("Basic {owner}")), "Bearer <api key>"),
        (Some(format!("bearer{owner}")), "Bearer <api key>"),
        (Some(format!("Bearer {owner}x")), "invalid or revoked"),
        (Some(format!("Bearer {revoked}")), "invalid or revoked"),
        (
            Some("Bearer orgo_000000000000_secret".into()),
            "invalid or revoked",
        ),
        (Some(long), "invalid or revoked"),
    ];
    let operations = gw.doc.operations();
    assert!(operations.len() >= 30, "the document lists the API");
    let mut checked = 0;
    for (method, template, _) in &operations {
        let path = format!(
            "/api{}",
            template
                .replace(
                    "{id}",
                    if template.starts_with("/projects") || template.starts_with("/workspaces") {
                        &ws_id
                    } else {
                        &id
                    }
                )
                .replace("{name}", "mine")
                .replace("{file}", "0123abcd.jpg")
        );
        for (auth, needle) in &bad {
            let body = acting_body(template).to_string().into_bytes();
            let (status, headers, v) = gw.send_raw(method, &path, auth.as_deref(), body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}: {v}");
            assert!(
                v["error"].as_str().unwrap().contains(needle),
                "{method} {path} {auth:?}: {v} lacks {needle:?}"
            );
            assert_eq!(
                headers[header::WWW_AUTHENTICATE],
                "Bearer realm=\"orgo\"",
                "{method} {path}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 300);
    assert_eq!(
        gw.runtime().calls(&id),
        vec![],
        "no unauthenticated call reached the agent"
    );
    assert_eq!(
        gw.runtime().events().len(),
        1,
        "the one start; nothing stopped or removed"
    );
    // The owner's good key still works.
    gw.ok("GET", &format!("/api/computers/{id}/cursor"), &owner, None)
        .await;
}

/// The free plan (2 desktops, 4 GB, 4 cores, counting running desktops only) refuses with 403
/// naming the plan before anything starts; stopping frees capacity and starting again is
/// admitted anew; another plan has its own limits.
#[tokio::test]
async fn plans_cap_running_desktops_ram_and_cpu() {
    let gw = unlimited("fake-plans").await;
    let alice = gw.key("alice").await;
    let ws = gw
        .ok("POST", "/api/projects", &alice, Some(json!({"name": "agents"})))
        .await;
    assert_eq!(ws["desktops"], json!([]));
    let ws_id = ws["id"].as_str().unwrap();
    let create = |name: &str, ram: u32, cpu: f64| json!({"workspace_id": ws_id, "name": name, "os": "linux", "ram": ram, "cpu": cpu, "gpu": "none"});
    let one = gw
        .ok("POST", "/api/computers", &alice, Some(create("one", 2, 2.0)))
        .await;
    assert_eq!(
        (
            one["name"].clone(),
            one["status"].clone(),
            one["ram"].clone(),
            one["cpu"].clone()
        ),
        (json!("one"), json!("running"), json!(2), json!(2))
    );
    let one_id = one["id"].as_str().unwrap().to_string();
    let spec = &starts(&gw)[0];
    assert_eq!(
        (spec.id.as_str(), spec.ram_gb, spec.cpu, spec.width, spec.height),
        (one_id.as_str(), 2, 2.0, 1280, 800),
        "the runtime was asked for the desktop as created"
    );

    let refused = [
        (create("big", 4, 1.0), "4 GB"),
        (create("busy", 1, 3.0), "CPU cores"),
    ];
    for (body, needle) in refused {
        let (status, v) = gw.send("POST", "/api/computers", Some(&alice), Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains("plan \"free\"") && error.contains(needle), "{v}");
    }
    gw.ok("POST", "/api/computers", &alice, Some(create("two", 2, 2.0)))
        .await;
    let (status, v) = gw
        .send(
            "POST",
            "/api/projects",
            Some(&alice),
            Some(json!({"config": {"ram": 1, "cpu": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a third desktop: {v}");
    assert!(v["error"].as_str().unwrap().contains("2 running desktops"), "{v}");
    assert_eq!(starts(&gw).len(), 2, "refused desktops were never started");

    // Stopping frees the plan; starting the stopped one again is admitted anew.
    let stopped = gw
        .ok("POST", &format!("/api/computers/{one_id}/stop"), &alice, None)
        .await;
    assert_eq!(stopped["status"], "stopped");
    let three = gw
        .ok("POST", "/api/computers", &alice, Some(create("three", 2, 2.0)))
        .await;
    let (status, v) = gw
        .send(
            "POST",
            &format!("/api/computers/{one_id}/start"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("2 running desktops"), "{v}");
    assert_eq!(
        gw.ok("GET", &format!("/api/computers/{one_id}"), &alice, None)
            .await["status"],
        "stopped",
        "a refused start leaves it stopped"
    );
    assert!(!gw.runtime().is_running(&one_id));
    gw.ok(
        "POST",
        &format!("/api/computers/{}/stop", three["id"].as_str().unwrap()),
        &alice,
        None,
    )
    .await;
    let started = gw
        .ok("POST", &format!("/api/computers/{one_id}/start"), &alice, None)
        .await;
    assert_eq!(started["status"], "running");
    gw.ok(
        "POST",
        &format!("/api/computers/{one_id}/click"),
        &alice,
        Some(json!({"x": 1, "y": 1})),
    )
    .await;
    assert_eq!(
        gw.runtime().calls(&one_id).len(),
        1,
        "the restarted agent answers"
    );

    // Another plan, other limits: pro takes three desktops of 4 GB.
    let carol = orgo_gateway::create_key(
        gw.state.store.as_ref(),
        &gw.state.config,
        "carol",
        Some("pro"),
        None,
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let p = gw
            .ok(
                "POST",
                "/api/projects",
                &carol,
                Some(json!({"config": {"ram": 4, "cpu": 2}})),
            )
            .await;
        assert_eq!(p["desktop"]["status"], "running");
    }
    assert_eq!(gw.runtime().running().len(), 2 + 3);
}

/// A workspace-scoped key reads the stored screenshots of its workspace's desktops only:
/// another workspace's is a 403 naming both, as every other route of that workspace is.
#[tokio::test]
async fn a_scoped_key_reads_its_workspaces_stored_screenshots_only() {
    let gw = unlimited("fake-scoped-shots").await;
    let key = gw.key("scoped").await;
    let (team, _, team_c) = computer(&gw, &key, "team", "t").await;
    let (lab, _, lab_c) = computer(&gw, &key, "lab", "l").await;
    let stored = |c: String| {
        let gw = &gw;
        let key = &key;
        async move {
            let shot = gw
                .ok("GET", &format!("{c}/screenshot?response_format=url"), key, None)
                .await;
            shot["image"].as_str().unwrap().to_string()
        }
    };
    let (team_shot, lab_shot) = (stored(team_c).await, stored(lab_c).await);
    let scoped = orgo_gateway::create_key(
        gw.state.store.as_ref(),
        &gw.state.config,
        "scoped",
        None,
        Some(&team),
    )
    .await
    .unwrap();
    let (status, _) = gw.send("GET", &team_shot, Some(&scoped), None).await;
    assert_eq!(status, StatusCode::OK, "its own workspace's");
    let (status, v) = gw.send("GET", &lab_shot, Some(&scoped), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        (&v["code"], &v["key_workspace_id"], &v["target_workspace_id"]),
        (&json!("workspace_scope_mismatch"), &json!(team), &json!(lab))
    );
    let (status, _) = gw.send("GET", &lab_shot, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "the account's unscoped key reads both");
}

/// Another account's computers, workspaces and stored screenshots answer 404 exactly as missing
/// ones do, on every documented route, and none of those requests reaches the owner's agent or
/// changes the owner's desktop.
#[tokio::test]
async fn another_accounts_things_are_404_like_missing_ones_and_reach_no_agent() {
    let gw = unlimited("fake-tenants").await;
    let owner = gw.key("owner").await;
    let stranger = gw.key("stranger").await;
    let (ws_id, id, c) = computer(&gw, &owner, "mine", "desk").await;
    let shot = gw
        .ok(
            "GET",
            &format!("{c}/screenshot?response_format=url"),
            &owner,
            None,
        )
        .await;
    // The stored file's name without its extension.
    let file = shot["image"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".jpg")
        .to_string();
    gw.ok(
        "POST",
        &format!("{c}/move"),
        &owner,
        Some(json!({"x": 300, "y": 300})),
    )
    .await;
    let calls_before = gw.runtime().calls(&id);
    let events_before = gw.runtime().events().len();

    // The same shapes of id, belonging to no one.
    let (no_ws, no_id, no_file) = ("a".repeat(ws_id.len()), "b".repeat(id.len()), "c".repeat(24));
    let concrete = |template: &str, ws: &str, id: &str, name: &str, file: &str| {
        format!(
            "/api{}",
            template
                .replace(
                    "{id}",
                    if template.starts_with("/projects") || template.starts_with("/workspaces") {
                        ws
                    } else {
                        id
                    }
                )
                .replace("{name}", name)
                .replace("{file}", &format!("{file}.jpg"))
        )
    };
    let mut checked = 0;
    for (method, template, _) in &gw.doc.operations() {
        if !template.contains('{') {
            continue;
        }
        let theirs = concrete(template, &ws_id, &id, "mine", &file);
        let missing = concrete(template, &no_ws, &no_id, "nothing", &no_file);
        let body = Some(acting_body(template));
        let (status, mut v) = gw.send(method, &theirs, Some(&stranger), body.clone()).await;
        let (missing_status, mut m) = gw.send(method, &missing, Some(&stranger), body).await;
        // Each answer has its own request id; the rest must be the same.
        for answer in [&mut v, &mut m] {
            let id = answer.as_object_mut().and_then(|o| o.remove("request_id"));
            assert!(
                id.is_some_and(|id| id.is_string()),
                "{method} {template}: no request_id"
            );
        }
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {theirs}: {v}");
        assert_eq!(missing_status, StatusCode::NOT_FOUND, "{method} {missing}: {m}");
        let as_theirs = m
            .to_string()
            .replace(&no_ws, &ws_id)
            .replace(&no_id, &id)
            .replace("nothing", "mine")
            .replace(&no_file, &file);
        assert_eq!(
            v.to_string(),
            as_theirs,
            "{method} {theirs}: unlike a missing one"
        );
        checked += 1;
    }
    assert!(checked >= 25, "{checked} routes");
    for (path, body) in [
        ("/api/computers/desk", None),
        ("/api/computers/desk/screenshot", None),
        ("/api/projects/by-name/mine", None),
    ] {
        let (status, v) = gw.send("GET", path, Some(&stranger), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {v}");
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
    let (_, listed) = gw.send("GET", "/api/projects", Some(&stranger), None).await;
    assert_eq!(listed["projects"], json!([]));

    assert_eq!(
        gw.runtime().calls(&id),
        calls_before,
        "no stranger's call reached the agent"
    );
    assert_eq!(
        gw.runtime().events().len(),
        events_before,
        "nothing was started, stopped or removed"
    );
    assert_eq!(gw.runtime().running(), vec![id.clone()]);
    let cursor = gw.ok("GET", &format!("{c}/cursor"), &owner, None).await;
    assert_eq!(
        (cursor["x"].as_i64(), cursor["y"].as_i64()),
        (Some(300), Some(300))
    );
    assert_eq!(gw.ok("GET", &c, &owner, None).await["status"], "running");
}

/// Every action reaches the agent as the request the API promises, in order, and the agent's
/// answer comes back in the API's shape.
#[tokio::test]
async fn actions_reach_the_agent_as_the_requests_they_promise() {
    let gw = unlimited("fake-actions").await;
    let key = gw.key("acts").await;
    let (_, id, c) = computer(&gw, &key, "ws", "desk").await;
    use pb::MouseButton::{Left, Middle, Right};
    let (bash, python) = (pb::Interpreter::Bash as i32, pb::Interpreter::Python as i32);
    let exec = |interpreter: i32, source: &str, timeout_millis: u32| {
        Call::Exec(pb::ExecRequest {
            interpreter,
            source: source.into(),
            timeout_millis,
            ..Default::default()
        })
    };
    let click = |x, y, button: pb::MouseButton, count| {
        Call::Click(pb::ClickRequest {
            at: at(x, y),
            button: button as i32,
            count,
        })
    };
    let scroll = |at: Option<pb::Point>, direction: pb::ScrollDirection, amount| {
        Call::Scroll(pb::ScrollRequest {
            at,
            direction: direction as i32,
            amount,
        })
    };
    let key_req = |combo: &str| pb::KeyRequest {
        combo: combo.into(),
        repeat: 1,
    };
    // (action, body, the call the agent gets, fields of the answer)
    let table: Vec<(&str, Value, Call, Value)> = vec![
        (
            "click",
            json!({"x": 100, "y": 200}),
            click(100, 200, Left, 1),
            json!({"success": true, "x": 100, "y": 200}),
        ),
        (
            "click",
            json!({"x": 100, "y": 200, "button": "right"}),
            click(100, 200, Right, 1),
            json!({"x": 100}),
        ),
        (
            "click",
            json!({"x": 300, "y": 200, "double": true}),
            click(300, 200, Left, 2),
            json!({"x": 300}),
        ),
        (
            "click",
            json!({"x": 5.0, "y": 6, "button": "MIDDLE", "count": 3}),
            click(5, 6, Middle, 3),
            json!({"x": 5, "y": 6}),
        ),
        (
            "move",
            json!({"x": 1279, "y": 799}),
            Call::MovePointer(pb::MovePointerRequest { to: at(1279, 799) }),
            json!({"x": 1279, "y": 799}),
        ),
        (
            "mouse-down",
            json!({}),
            Call::PressButton(pb::ButtonRequest {
                at: None,
                button: Left as i32,
            }),
            json!({"x": 1279, "y": 799}),
        ),
        (
            "mouse-up",
            json!({"x": 10, "y": 20, "button": "right"}),
            Call::ReleaseButton(pb::ButtonRequest {
                at: at(10, 20),
                button: Right as i32,
            }),
            json!({"x": 10, "y": 20}),
        ),
        (
            "drag",
            json!({"start_x": 1, "start_y": 2, "end_x": 30, "end_y": 40}),
            Call::Drag(pb::DragRequest {
                path: vec![pb::Point { x: 1, y: 2 }, pb::Point { x: 30, y: 40 }],
                button: Left as i32,
                duration_millis: 500,
            }),
            json!({"x": 30, "y": 40}),
        ),
        (
            "drag",
            json!({"start_x": 3, "start_y": 4, "end_x": 5, "end_y": 6, "button": "middle", "duration": 0}),
            Call::Drag(pb::DragRequest {
                path: vec![pb::Point { x: 3, y: 4 }, pb::Point { x: 5, y: 6 }],
                button: Middle as i32,
                duration_millis: 0,
            }),
            json!({"x": 5}),
        ),
        (
            "scroll",
            json!({"x": 500, "y": 300, "direction": "down"}),
            scroll(at(500, 300), pb::ScrollDirection::Down, 3),
            json!({"x": 500, "y": 300}),
        ),
        (
            "scroll",
            json!({"direction": "up", "amount": 5}),
            scroll(None, pb::ScrollDirection::Up, 5),
            json!({"x": 500, "y": 300}),
        ),
        (
            "scroll",
            json!({"x": 7, "direction": "left"}),
            scroll(at(7, 0), pb::ScrollDirection::Left, 3),
            json!({"x": 7, "y": 0}),
        ),
        (
            "type",
            json!({"text": "Hello wörld\n\t日本"}),
            Call::TypeText(pb::TypeTextRequest {
                text: "Hello wörld\n\t日本".into(),
                delay_millis: 0,
            }),
            json!({"success": true, "sent": 15}),
        ),
        (
            "key",
            json!({"key": "ctrl+shift+i"}),
            Call::PressKey(key_req("ctrl+shift+i")),
            json!({"success": true, "sent": 3}),
        ),
        (
            "key",
            json!({"key": "Enter"}),
            Call::PressKey(key_req("Enter")),
            json!({"sent": 1}),
        ),
        (
            "key-down",
            json!({"key": "shift"}),
            Call::KeyDown(key_req("shift")),
            json!({"sent": 1}),
        ),
        (
            "key-up",
            json!({"key": "shift"}),
            Call::KeyUp(key_req("shift")),
            json!({"sent": 1}),
        ),
        (
            "bash",
            json!({"command": "echo hi"}),
            exec(bash, "echo hi", 200_000),
            json!({"success": true, "exit_code": 0, "error": null, "action": "bash", "command": "echo hi"}),
        ),
        (
            "bash",
            json!({"command": "ls", "timeout": 2.5}),
            exec(bash, "ls", 2_500),
            json!({"success": true}),
        ),
        (
            "exec",
            json!({"code": "print(1)"}),
            exec(python, "print(1)", 10_000),
            json!({"success": true}),
        ),
        (
            "exec",
            json!({"code": "x = 1", "timeout": 300}),
            exec(python, "x = 1", 300_000),
            json!({"success": true}),
        ),
    ];
    let mut expected = Vec::new();
    for (action, body, call, answer) in table {
        let v = gw
            .ok("POST", &format!("{c}/{action}"), &key, Some(body.clone()))
            .await;
        for (field, want) in answer.as_object().unwrap() {
            assert_eq!(&v[field], want, "{action} {body}: {field} of {v}");
        }
        expected.push(call);
    }
    // Waiting needs a running desktop but no agent call.
    let waited = gw
        .ok("POST", &format!("{c}/wait"), &key, Some(json!({"duration": 0})))
        .await;
    assert_eq!(
        waited,
        json!({"success": true, "duration": 0.0, "action": "wait", "details": {"seconds": 0.0}})
    );

    let cursor = gw.ok("GET", &format!("{c}/cursor"), &key, None).await;
    assert_eq!(cursor, json!({"success": true, "x": 7, "y": 0}));
    expected.push(Call::CursorPosition);

    // Screenshots: the default, and every parameter.
    let shot = gw.ok("GET", &format!("{c}/screenshot"), &key, None).await;
    expected.push(Call::Screenshot(pb::ScreenshotRequest {
        format: pb::ImageFormat::Jpeg as i32,
        ..Default::default()
    }));
    let image = base64::engine::general_purpose::STANDARD
        .decode(shot["image"].as_str().unwrap())
        .unwrap();
    assert_eq!(image, TINY_JPEG);
    assert_eq!(
        (
            shot["mime_type"].clone(),
            shot["width"].clone(),
            shot["height"].clone()
        ),
        (json!("image/jpeg"), json!(1280), json!(800))
    );
    assert_eq!(shot["metadata"]["size"], json!(TINY_JPEG.len()));
    let shot = gw
        .ok(
            "GET",
            &format!("{c}/screenshot?format=png&quality=50&x=10&y=20&width=100&height=50&max_width=50"),
            &key,
            None,
        )
        .await;
    expected.push(Call::Screenshot(pb::ScreenshotRequest {
        format: pb::ImageFormat::Png as i32,
        quality: 50,
        max_width: 50,
        max_height: 0,
        region: Some(pb::Region {
            x: 10,
            y: 20,
            width: 100,
            height: 50,
        }),
    }));
    assert_eq!(
        (
            shot["mime_type"].clone(),
            shot["width"].clone(),
            shot["height"].clone()
        ),
        (json!("image/png"), json!(50), json!(25))
    );
    gw.ok(
        "GET",
        &format!("{c}/screenshot?x=1200&max_height=400"),
        &key,
        None,
    )
    .await;
    expected.push(Call::Screenshot(pb::ScreenshotRequest {
        format: pb::ImageFormat::Jpeg as i32,
        max_height: 400,
        region: Some(pb::Region {
            x: 1200,
            y: 0,
            width: 80,
            height: 800,
        }),
        ..Default::default()
    }));
    // Stored screenshots are served to their owner as the agent's bytes.
    let stored = gw
        .ok(
            "GET",
            &format!("{c}/screenshot?response_format=url&format=png"),
            &key,
            None,
        )
        .await;
    expected.push(Call::Screenshot(pb::ScreenshotRequest {
        format: pb::ImageFormat::Png as i32,
        ..Default::default()
    }));
    let url = stored["image"].as_str().unwrap();
    let resp = orgo_gateway::app(gw.state.clone())
        .oneshot(
            Request::get(url)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "image/png");
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&bytes[..], tiny_png());

    assert_eq!(gw.runtime().calls(&id), expected);
}

/// The agent's exec answer becomes the API's fields: bash's output is stdout then stderr,
/// Python's is stdout; a failure or timeout is `success: false` with the error.
#[tokio::test]
async fn exec_answers_become_the_api_fields() {
    let gw = unlimited("fake-exec").await;
    let key = gw.key("exec").await;
    let (_, _, c) = computer(&gw, &key, "ws", "desk").await;
    gw.runtime().answer_exec(pb::ExecResponse {
        stdout: b"out\n".to_vec(),
        stderr: b"err\n".to_vec(),
        exit_code: Some(3),
        truncated: true,
        duration_micros: 12_345,
        ..Default::default()
    });
    let v = gw
        .ok("POST", &format!("{c}/bash"), &key, Some(json!({"command": "x"})))
        .await;
    assert_eq!(
        v,
        json!({
            "success": false, "output": "out\nerr\n", "error": "err\n", "error_type": null, "stdout": "out\n",
            "stderr": "err\n", "exit_code": 3, "timeout": false, "timed_out": false, "truncated": true,
            "duration_ms": 12, "action": "bash", "command": "x", "details": {},
        })
    );
    let v = gw
        .ok("POST", &format!("{c}/exec"), &key, Some(json!({"code": "x"})))
        .await;
    assert_eq!(
        (v["output"].clone(), v["error"].clone()),
        (json!("out\n"), json!("err\n"))
    );

    gw.runtime().answer_exec(pb::ExecResponse {
        stdout: b"partial".to_vec(),
        exit_code: None,
        signal: Some(9),
        timed_out: true,
        ..Default::default()
    });
    let v = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "sleep 9"})),
        )
        .await;
    assert_eq!(
        (
            v["success"].clone(),
            v["error"].clone(),
            v["exit_code"].clone(),
            v["timed_out"].clone()
        ),
        (
            json!(false),
            json!("execution timed out"),
            Value::Null,
            json!(true)
        )
    );
    assert_eq!(v["output"], "partial");

    gw.runtime().answer_exec(pb::ExecResponse {
        stdout: "ünïcode ok\n".as_bytes().to_vec(),
        stderr: vec![0xff, b'!'],
        exit_code: Some(0),
        ..Default::default()
    });
    let v = gw
        .ok("POST", &format!("{c}/exec"), &key, Some(json!({"code": "x"})))
        .await;
    assert_eq!(
        (
            v["success"].clone(),
            v["output"].clone(),
            v["error"].clone(),
            v["stderr"].clone()
        ),
        (
            json!(true),
            json!("ünïcode ok\n"),
            Value::Null,
            json!("\u{fffd}!")
        )
    );
}

/// Bad input is a 400 (or its documented 4xx) naming the problem, on every route that takes a
/// body, and never reaches the agent.
#[tokio::test]
async fn bad_input_is_refused_before_the_agent() {
    let gw = unlimited("fake-parse").await;
    let key = gw.key("parse").await;
    let (_, id, c) = computer(&gw, &key, "ws", "desk").await;
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        ("POST", "click", json!({"x": 5000, "y": 1}), 400, "x=5000"),
        ("POST", "click", json!({"x": 1280, "y": 1}), 400, "x=1280"),
        ("POST", "click", json!({"x": 1, "y": 800}), 400, "y=800"),
        ("POST", "click", json!({"x": -1, "y": 1}), 400, "x=-1"),
        ("POST", "click", json!({"x": "a", "y": 1}), 400, "\"x\""),
        ("POST", "click", json!({"x": 1.5, "y": 1}), 400, "\"x\""),
        ("POST", "click", json!({"y": 1}), 400, "x"),
        (
            "POST",
            "click",
            json!({"x": 1, "y": 1, "button": "side"}),
            400,
            "button",
        ),
        ("POST", "click", json!({"x": 1, "y": 1, "count": 4}), 400, "count"),
        ("POST", "move", json!({"x": 1}), 400, "y"),
        ("POST", "mouse-down", json!({"x": 1}), 400, "both x and y"),
        (
            "POST",
            "drag",
            json!({"start_x": 1, "start_y": 1, "end_x": 1}),
            400,
            "end_y",
        ),
        (
            "POST",
            "drag",
            json!({"start_x": 1, "start_y": 1, "end_x": 2, "end_y": 2, "duration": 11}),
            400,
            "duration",
        ),
        (
            "POST",
            "scroll",
            json!({"direction": "sideways"}),
            400,
            "direction",
        ),
        (
            "POST",
            "scroll",
            json!({"direction": "up", "amount": 0}),
            400,
            "amount",
        ),
        ("POST", "scroll", json!({"amount": 101}), 400, "amount"),
        ("POST", "type", json!({"text": ""}), 400, "text"),
        (
            "POST",
            "type",
            json!({"text": "a\u{1}b"}),
            400,
            "U+0001 at character 2",
        ),
        ("POST", "type", json!({}), 400, "text"),
        ("POST", "key", json!({"key": " "}), 400, "key"),
        ("POST", "key", json!({"key": "a".repeat(201)}), 400, "key"),
        ("POST", "key-down", json!({"key": 5}), 400, "\"key\""),
        (
            "POST",
            "bash",
            json!({"command": "ls", "timeout": 301}),
            400,
            "timeout",
        ),
        (
            "POST",
            "bash",
            json!({"command": "x".repeat(100_001)}),
            400,
            "100000",
        ),
        ("POST", "bash", json!({}), 400, "command"),
        (
            "POST",
            "exec",
            json!({"code": "print(1)", "timeout": 0}),
            400,
            "timeout",
        ),
        (
            "POST",
            "exec",
            json!({"code": "print(1)", "timeout": -1}),
            400,
            "timeout",
        ),
        ("POST", "wait", json!({"duration": 1000}), 400, "duration"),
        ("POST", "teleport", json!({}), 404, "teleport"),
        ("GET", "screenshot?format=gif", Value::Null, 400, "format"),
        ("GET", "screenshot?quality=0", Value::Null, 400, "quality"),
        ("GET", "screenshot?x=1280", Value::Null, 400, "outside the screen"),
        ("GET", "screenshot?width=0", Value::Null, 400, "width and height"),
        ("GET", "screenshot?max_width=70000", Value::Null, 400, "max_width"),
    ];
    for (method, action, body, want, needle) in cases {
        let path = format!("{c}/{action}");
        let body = (!body.is_null()).then_some(body);
        let (status, v) = gw.send(method, &path, Some(&key), body.clone()).await;
        assert_eq!(status.as_u16(), want, "{method} {path} {body:?}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "{method} {path}: {error:?} lacks {needle:?}"
        );
    }

    // Broken bodies on every documented route that takes one.
    let limit = gw.state.config.max_body_bytes;
    let huge = format!("{{\"text\": \"{}\"}}", "x".repeat(limit)).into_bytes();
    let broken: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("over the limit", huge, StatusCode::PAYLOAD_TOO_LARGE),
        (
            "invalid UTF-8",
            b"{\"text\": \"\xff\xfe\", \"x\": 1}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("truncated", b"{\"x\": 1, ".to_vec(), StatusCode::BAD_REQUEST),
        ("an array", b"[1, 2]".to_vec(), StatusCode::BAD_REQUEST),
        ("a string", b"\"click\"".to_vec(), StatusCode::BAD_REQUEST),
        (
            "nested deep",
            format!("{}{}", "[".repeat(4096), "]".repeat(4096)).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    let auth = format!("Bearer {key}");
    let mut checked = 0;
    for (method, template, has_body) in gw.doc.operations() {
        if !has_body || !template.starts_with("/computers/{id}") {
            continue;
        }
        let path = format!("/api{}", template.replace("{id}", &id));
        for (what, body, want) in &broken {
            let (status, _, v) = gw.send_raw(&method, &path, Some(&auth), body.clone()).await;
            assert_eq!(status, *want, "{method} {path} with {what}: {v}");
            assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
            checked += 1;
        }
    }
    assert!(checked >= 6 * 14, "{checked}");
    assert_eq!(gw.runtime().calls(&id), vec![], "nothing reached the agent");
}

/// The agent's gRPC codes become HTTP statuses through the whole router; 4xx answers pass the
/// agent's message on, 5xx answers carry a generic sentence and never the detail.
#[tokio::test]
async fn agent_errors_map_to_http_statuses() {
    let gw = unlimited("fake-errors").await;
    let key = gw.key("errors").await;
    let (_, id, c) = computer(&gw, &key, "ws", "desk").await;
    const NOT_READY: &str = "the desktop is not ready; try again in a moment";
    const TIMEOUT: &str = "the desktop did not answer in time";
    const FAILED: &str = "the desktop failed to carry out the request";
    // (code, status, the answer's error: None = the agent's message)
    let table: Vec<(Code, u16, Option<&str>)> = vec![
        (Code::InvalidArgument, 400, None),
        (Code::FailedPrecondition, 400, None),
        (Code::OutOfRange, 400, None),
        (Code::NotFound, 404, None),
        (Code::Aborted, 409, None),
        (Code::Unavailable, 503, Some(NOT_READY)),
        (Code::DeadlineExceeded, 504, Some(TIMEOUT)),
        (Code::Cancelled, 504, Some(TIMEOUT)),
        (Code::Internal, 502, Some(FAILED)),
        (Code::Unknown, 502, Some(FAILED)),
        (Code::Unauthenticated, 502, Some(FAILED)),
        (Code::PermissionDenied, 403, None),
        (Code::ResourceExhausted, 413, None),
        (Code::Unimplemented, 502, Some(FAILED)),
        (Code::DataLoss, 502, Some(FAILED)),
        (Code::AlreadyExists, 502, Some(FAILED)),
    ];
    let click = format!("{c}/click");
    for (code, want, error) in &table {
        let detail = format!("secret detail of {code:?} at /home/user");
        gw.runtime()
            .fail_next("click", Status::new(*code, detail.clone()));
        let (status, v) = gw
            .send("POST", &click, Some(&key), Some(json!({"x": 1, "y": 2})))
            .await;
        assert_eq!(status.as_u16(), *want, "{code:?}: {v}");
        assert_eq!(v["error"], error.unwrap_or(&detail), "{code:?}");
    }
    assert_eq!(
        gw.runtime().calls(&id).len(),
        table.len(),
        "each call reached the agent"
    );

    // Every agent-backed route maps the same way.
    let routes: Vec<(&str, &str, &str, Option<Value>)> = vec![
        ("GET", "screenshot", "screenshot", None),
        ("GET", "cursor", "cursor_position", None),
        ("POST", "move", "move_pointer", Some(json!({"x": 1, "y": 1}))),
        ("POST", "mouse-down", "press_button", Some(json!({}))),
        ("POST", "mouse-up", "release_button", Some(json!({}))),
        (
            "POST",
            "drag",
            "drag",
            Some(json!({"start_x": 1, "start_y": 1, "end_x": 2, "end_y": 2})),
        ),
        ("POST", "scroll", "scroll", Some(json!({}))),
        ("POST", "type", "type_text", Some(json!({"text": "a"}))),
        ("POST", "key", "press_key", Some(json!({"key": "a"}))),
        ("POST", "key-down", "key_down", Some(json!({"key": "a"}))),
        ("POST", "key-up", "key_up", Some(json!({"key": "a"}))),
        ("POST", "bash", "exec", Some(json!({"command": "a"}))),
        ("POST", "exec", "exec", Some(json!({"code": "a"}))),
        ("GET", "files?path=.", "files_list", None),
        ("GET", "files/stat?path=a", "files_stat", None),
        ("GET", "files/content?path=a", "files_read", None),
        ("PUT", "files/content?path=a", "files_write", Some(json!("bytes"))),
        ("DELETE", "files?path=a", "files_remove", None),
    ];
    for (method, action, rpc, body) in routes {
        let path = format!("{c}/{action}");
        for (code, want, error) in [
            (Code::Unavailable, 503, NOT_READY),
            (Code::DeadlineExceeded, 504, TIMEOUT),
            (Code::Internal, 502, FAILED),
        ] {
            gw.runtime().fail_next(rpc, Status::new(code, "secret detail"));
            let (status, v) = gw.send(method, &path, Some(&key), body.clone()).await;
            assert_eq!(
                (status.as_u16(), v["error"].as_str()),
                (want, Some(error)),
                "{path}"
            );
        }
        if method == "POST" && action != "bash" && action != "exec" {
            gw.runtime()
                .fail_next(rpc, Status::aborted("the keyboard mapping changed"));
            let (status, v) = gw.send(method, &path, Some(&key), body.clone()).await;
            assert_eq!(status, StatusCode::CONFLICT, "{path}: {v}");
            assert_eq!(v["error"], "the keyboard mapping changed");
        }
    }

    // A failed call leaves the desktop running and usable.
    assert_eq!(gw.ok("GET", &c, &key, None).await["status"], "running");
    gw.ok("POST", &click, &key, Some(json!({"x": 1, "y": 2}))).await;

    // A write reaches the Files service with its path, the plan's limit and every byte.
    gw.runtime().clear_calls();
    let path = format!("{c}/files/content?path=notes/a.txt");
    let (status, v) = gw.send("PUT", &path, Some(&key), Some(json!("12345"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    match &gw.runtime().calls(&id)[..] {
        [Call::FilesWrite(start, size)] => {
            assert_eq!((start.path.as_str(), *size), ("notes/a.txt", 7));
            assert!(start.max_bytes > 0, "{start:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// An agent that does not answer within the deadline is a 504 once the deadline passes, and the
/// desktop works again after.
#[tokio::test]
async fn a_stalled_agent_is_a_504_after_the_deadline() {
    let gw = Gateway::fake_with("fake-stall", |c| c.agent_deadline_seconds = 1).await;
    let key = gw.key("stall").await;
    let (_, _, c) = computer(&gw, &key, "ws", "desk").await;
    gw.runtime()
        .delay_next("cursor_position", Duration::from_secs(30));
    let t = Instant::now();
    let (status, v) = gw.send("GET", &format!("{c}/cursor"), Some(&key), None).await;
    let took = t.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["error"], "the desktop did not answer in time");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    gw.ok("GET", &format!("{c}/cursor"), &key, None).await;
}

/// A call under way when its desktop is stopped answers 409 (call again once it runs), not a 5xx.
#[tokio::test]
async fn a_call_cut_short_by_a_stop_is_a_409() {
    let gw = unlimited("fake-cut").await;
    let key = gw.key("cut").await;
    let (_, id, c) = computer(&gw, &key, "ws", "desk").await;
    gw.runtime().delay_next("screenshot", Duration::from_secs(30));
    let path = format!("{c}/screenshot");
    let shot = gw.send("GET", &path, Some(&key), None);
    let stop = async {
        while gw.runtime().calls(&id).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gw.ok("POST", &format!("{c}/stop"), &key, None).await
    };
    let t = Instant::now();
    let ((status, v), stopped) = tokio::join!(shot, stop);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the call waited out its delay"
    );
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("stopped, restarted or deleted"),
        "{v}"
    );
}

/// Stop, start, restart and delete of computers and projects: a stopped desktop answers 409
/// "start it" without reaching any agent, starting brings a new agent, and a deleted one is 404.
#[tokio::test]
async fn lifecycle_stop_start_restart_delete() {
    let gw = unlimited("fake-life").await;
    let key = gw.key("life").await;
    let p = gw
        .ok(
            "POST",
            "/api/projects",
            &key,
            Some(json!({"config": {"ram": 2, "cpu": 2}})),
        )
        .await;
    let name = p["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("computer-") && name.len() == 15, "{name}");
    assert_eq!(
        (p["status"].clone(), p["desktop"]["status"].clone()),
        (json!("active"), json!("running"))
    );
    let id = p["desktop"]["id"].as_str().unwrap().to_string();
    let project = format!("/api/projects/{}", p["id"].as_str().unwrap());
    let c = format!("/api/computers/{name}");
    assert!(gw.runtime().is_running(&id));

    let stopped = gw.ok("POST", &format!("{c}/stop"), &key, None).await;
    assert_eq!(stopped["status"], "stopped");
    assert!(!gw.runtime().is_running(&id));
    assert!(matches!(gw.runtime().events().last(), Some(Event::Stop(s)) if *s == id));
    for (method, action, body) in [
        ("POST", "click", Some(json!({"x": 1, "y": 1}))),
        ("POST", "bash", Some(json!({"command": "ls"}))),
        ("POST", "wait", Some(json!({"duration": 0}))),
        ("GET", "screenshot", None),
        ("GET", "cursor", None),
    ] {
        let (status, v) = gw.send(method, &format!("{c}/{action}"), Some(&key), body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains("is stopped; start it"), "{action}: {error}");
    }
    // Stopping a stopped desktop is harmless.
    gw.ok("POST", &format!("{c}/stop"), &key, None).await;

    let started = gw.ok("POST", &format!("{c}/start"), &key, None).await;
    assert_eq!(started["status"], "running");
    assert!(gw.runtime().is_running(&id));
    gw.ok("POST", &format!("{c}/click"), &key, Some(json!({"x": 1, "y": 1})))
        .await;
    // Starting a running desktop changes nothing.
    let before = gw.runtime().events().len();
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    assert_eq!(gw.runtime().events().len(), before);

    let restarted = gw.ok("POST", &format!("{c}/restart"), &key, None).await;
    assert_eq!(restarted["status"], "running");
    let events = gw.runtime().events();
    assert!(
        matches!(&events[events.len() - 2..], [Event::Stop(a), Event::Start(b)] if *a == id && b.id == id),
        "{events:?}"
    );
    gw.ok("POST", &format!("{c}/key"), &key, Some(json!({"key": "a"})))
        .await;

    // The project routes act on its computers.
    let stopped = gw.ok("POST", &format!("{project}/stop"), &key, None).await;
    assert_eq!(stopped["desktop"]["status"], "stopped");
    assert!(!gw.runtime().is_running(&id));
    let started = gw.ok("POST", &format!("{project}/start"), &key, None).await;
    assert_eq!(started["desktop"]["status"], "running");
    let restarted = gw.ok("POST", &format!("{project}/restart"), &key, None).await;
    assert_eq!(restarted["desktop"]["status"], "running");
    assert!(gw.runtime().is_running(&id));

    // Deleting a computer removes it; then it is 404 everywhere.
    let ws = gw
        .ok("POST", "/api/projects", &key, Some(json!({"name": "ws"})))
        .await;
    let other = gw
        .ok(
            "POST",
            "/api/computers",
            &key,
            Some(json!({"workspace_id": ws["id"], "name": "other", "ram": 1, "cpu": 1})),
        )
        .await;
    let other_id = other["id"].as_str().unwrap().to_string();
    let deleted = gw
        .ok("DELETE", &format!("/api/computers/{other_id}"), &key, None)
        .await;
    assert_eq!(deleted, json!({"success": true, "id": other_id}));
    assert!(matches!(gw.runtime().events().last(), Some(Event::Remove(r)) if *r == other_id));
    assert!(!gw.runtime().is_running(&other_id));
    for (method, path, body) in [
        ("GET", format!("/api/computers/{other_id}"), None),
        ("GET", "/api/computers/other".to_string(), None),
        (
            "POST",
            format!("/api/computers/{other_id}/click"),
            Some(json!({"x": 1, "y": 1})),
        ),
        ("GET", format!("/api/computers/{other_id}/screenshot"), None),
        ("POST", format!("/api/computers/{other_id}/start"), None),
        ("DELETE", format!("/api/computers/{other_id}"), None),
    ] {
        let (status, v) = gw.send(method, &path, Some(&key), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    assert_eq!(
        gw.ok(
            "GET",
            &format!("/api/projects/{}", ws["id"].as_str().unwrap()),
            &key,
            None
        )
        .await["desktops"],
        json!([])
    );

    // Deleting a project removes its computers.
    gw.ok("POST", &format!("{project}/delete"), &key, None).await;
    assert!(!gw.runtime().is_running(&id));
    assert!(gw.runtime().running().is_empty());
    for path in [project.clone(), c.clone()] {
        let (status, _) = gw.send("GET", &path, Some(&key), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let listed = gw.ok("GET", "/api/projects", &key, None).await;
    assert_eq!(
        listed["projects"].as_array().unwrap().len(),
        1,
        "the empty workspace stays"
    );
}

/// A desktop whose agent dies is noticed (409, status "error"), does not count against the
/// plan, and starts again.
#[tokio::test]
async fn a_desktop_that_dies_is_marked_and_starts_again() {
    let gw = unlimited("fake-dies").await;
    let key = gw.key("dies").await;
    let (_, id, c) = computer(&gw, &key, "ws", "desk").await;
    gw.runtime().kill(&id);
    gw.until_noticed_dead(&key, &c).await;
    let dead = gw.ok("GET", &c, &key, None).await;
    assert_eq!(
        (&dead["status"], &dead["status_reason"]),
        (&json!("error"), &json!("its agent was killed")),
        "{dead}"
    );
    let (status, v) = gw
        .send(
            "POST",
            &format!("{c}/click"),
            Some(&key),
            Some(json!({"x": 1, "y": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("(its agent was killed)"),
        "{v}"
    );
    assert_eq!(gw.runtime().calls(&id), vec![]);
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    let v = gw
        .ok("POST", &format!("{c}/click"), &key, Some(json!({"x": 1, "y": 1})))
        .await;
    assert_eq!(v["success"], true);
}

/// A runtime that cannot start a desktop: the API answers a generic 503, the computer is
/// recorded in error, holds no plan capacity, and starts once the runtime can.
#[tokio::test]
async fn a_failed_start_is_a_503_and_the_computer_can_start_later() {
    let gw = unlimited("fake-nostart").await;
    let key = gw.key("nostart").await;
    let ws = gw
        .ok("POST", "/api/projects", &key, Some(json!({"name": "ws"})))
        .await;
    gw.runtime()
        .fail_next_start(orgo_gateway::runtime::RuntimeError::Busy(
            "secret: Xvfb exited with 1".into(),
        ));
    let (status, v) = gw
        .send(
            "POST",
            "/api/computers",
            Some(&key),
            Some(json!({"workspace_id": ws["id"], "name": "flaky", "ram": 4})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "the desktop is not ready; try again in a moment");
    let flaky = gw.ok("GET", "/api/computers/flaky", &key, None).await;
    assert_eq!(flaky["status"], "error");
    assert_eq!(
        flaky["status_reason"], "it was not ready in time; start it again",
        "the internals stay hidden: {flaky}"
    );
    // It holds none of the plan's 4 GB.
    let (_, _, _) = computer(&gw, &key, "ws2", "other").await;
    gw.ok("POST", "/api/computers/other/stop", &key, None).await;
    let started = gw.ok("POST", "/api/computers/flaky/start", &key, None).await;
    assert_eq!(started["status"], "running");
    gw.ok("GET", "/api/computers/flaky/cursor", &key, None).await;
}

/// A desktop the runtime started but whose agent cannot be reached ends in error, holds no
/// plan capacity, as one the runtime failed to start, and is not left running.
#[tokio::test]
async fn an_unreachable_agent_after_start_leaves_no_computer_creating() {
    let gw = unlimited("fake-unreach").await;
    let key = gw.key("unreach").await;
    let ws = gw
        .ok("POST", "/api/projects", &key, Some(json!({"name": "ws"})))
        .await;
    gw.runtime().unreachable_next_start();
    let (status, v) = gw
        .send(
            "POST",
            "/api/computers",
            Some(&key),
            Some(json!({"workspace_id": ws["id"], "name": "lost", "ram": 4})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let lost = gw.ok("GET", "/api/computers/lost", &key, None).await;
    assert_eq!(lost["status"], "error", "{lost}");
    // It holds none of the plan's 4 GB.
    computer(&gw, &key, "ws2", "other").await;
}

/// Each key has its plan's request rate: a burst of twice the rate passes, then 429 with
/// `Retry-After` that never reaches the agent; other keys, even of the same account, are
/// unaffected, and the key works again after the wait.
#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let gw = Gateway::fake_with("fake-rate", |c| {
        c.plans.get_mut("free").unwrap().requests_per_second = 1;
    })
    .await;
    let setup = gw.key("alice").await;
    let (_, id, c) = computer(&gw, &setup, "ws", "desk").await;
    let (alice, bob, also_alice) = (gw.key("alice").await, gw.key("bob").await, gw.key("alice").await);
    let click = format!("{c}/click");
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..50 {
        let resp = orgo_gateway::app(gw.state.clone())
            .oneshot(
                Request::post(&click)
                    .header(header::AUTHORIZATION, format!("Bearer {alice}"))
                    .body(Body::from(json!({"x": 1, "y": 1}).to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        accepted += 1;
    }
    let resp = refused.expect("the key's rate was never enforced");
    assert!(accepted >= 2, "a full bucket holds two: {accepted}");
    let wait: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1, "{wait}");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("retry after"), "{v}");
    gw.doc.check("POST", &click, 429, &v);
    assert_eq!(
        gw.runtime().calls(&id).len(),
        accepted,
        "the refused click reached no agent"
    );

    gw.ok("GET", "/api/projects", &bob, None).await;
    gw.ok("GET", "/api/projects", &also_alice, None).await;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    gw.ok("POST", &click, &alice, Some(json!({"x": 1, "y": 1}))).await;
}

/// A plan's idle time stops its desktops by themselves; they start again on request.
#[tokio::test]
async fn idle_desktops_stop_by_themselves_and_start_again() {
    let gw = Gateway::fake_with("fake-idle", |c| {
        c.plans.get_mut("free").unwrap().idle_stop_seconds = 1;
    })
    .await;
    let key = gw.key("idle").await;
    let (_, id, c) = computer(&gw, &key, "ws", "desk").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.ok("GET", &c, &key, None).await["status"] != "stopped" {
        assert!(Instant::now() < deadline, "an idle desktop never stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!gw.runtime().is_running(&id));
    let (status, _) = gw
        .send(
            "POST",
            &format!("{c}/click"),
            Some(&key),
            Some(json!({"x": 1, "y": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    gw.ok("POST", &format!("{c}/click"), &key, Some(json!({"x": 1, "y": 1})))
        .await;
}

/// Concurrent starts, stops and restarts of one desktop take turns; actions meanwhile either run
/// or are told the desktop is (or went) down; afterwards the record and the runtime agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lifecycle_calls_on_one_desktop_take_turns() {
    let gw = std::sync::Arc::new(unlimited("fake-turns").await);
    let key = gw.key("turns").await;
    let (_, id, c) = computer(&gw, &key, "ws", "desk").await;
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..10 {
        for action in ["restart", "stop", "start"] {
            let (gw, key, path) = (gw.clone(), key.clone(), format!("{c}/{action}"));
            calls.spawn(async move {
                let (status, v) = gw.send("POST", &path, Some(&key), None).await;
                (round, action, status, v)
            });
        }
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut actions = tokio::task::JoinSet::new();
    for (method, action, body) in [
        ("GET", "screenshot", None),
        ("POST", "click", Some(json!({"x": 5, "y": 5}))),
        ("GET", "cursor", None),
        ("POST", "bash", Some(json!({"command": "echo hi"}))),
    ] {
        let (gw, key, path, done) = (gw.clone(), key.clone(), format!("{c}/{action}"), done.clone());
        actions.spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, v) = gw.send(method, &path, Some(&key), body.clone()).await;
                assert!(
                    [StatusCode::OK, StatusCode::CONFLICT].contains(&status),
                    "{method} {path} during lifecycle calls: {status} {v}"
                );
                tokio::task::yield_now().await;
            }
        });
    }
    while let Some(finished) = calls.join_next().await {
        let (round, action, status, v) = finished.unwrap();
        assert_eq!(status, StatusCode::OK, "{action} (round {round}): {v}");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(finished) = actions.join_next().await {
        finished.unwrap();
    }
    let status = gw.ok("GET", &c, &key, None).await["status"].clone();
    assert_eq!(
        gw.runtime().is_running(&id),
        status == "running",
        "the record says {status}"
    );
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    assert_eq!(gw.runtime().running(), vec![id.clone()]);
    gw.ok("GET", &format!("{c}/cursor"), &key, None).await;
}

/// A call cut short by a stop answers 409 ("was stopped, restarted or deleted while this call ran")
/// whatever gRPC error the cut produces. When the agent shuts down (as on a stop's SIGTERM) a
/// request still queued on its connection fails in the client with hyper's "operation was
/// canceled", which tonic reports as CANCELLED (it once answered 504). Here the stub ends its
/// call with CANCELLED when the stop comes, which makes the race deterministic.
#[tokio::test]
async fn a_call_cancelled_by_a_stop_is_a_409_not_a_504() {
    let gw = unlimited("fake-cancel").await;
    let key = gw.key("cancel").await;
    let (_, id, c) = computer(&gw, &key, "ws", "desk").await;
    gw.runtime()
        .delay_next("cursor_position", Duration::from_secs(30));
    gw.runtime()
        .fail_next("cursor_position", Status::cancelled("operation was canceled"));
    let path = format!("{c}/cursor");
    let cursor = gw.send("GET", &path, Some(&key), None);
    let stop = async {
        while gw.runtime().calls(&id).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gw.ok("POST", &format!("{c}/stop"), &key, None).await
    };
    let ((status, v), _) = tokio::join!(cursor, stop);
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("stopped, restarted or deleted"),
        "{v}"
    );
}
