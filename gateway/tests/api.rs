//! The REST API end to end on real desktops of the local runtime (bubblewrap, Xvfb, openbox,
//! orgo-agent), driven in-process through the router.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

use common::inproc::Gateway;
use common::terminal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_and_lifecycle_on_a_real_desktop() {
    let gw = Gateway::new("seed").await;
    let key = gw.key("alice").await;

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
    assert_eq!(p["status"], "active");
    assert_eq!(p["desktop"]["status"], "running");
    let url = p["desktop"]["url"].as_str().unwrap();
    assert!(
        url.contains(&format!(
            "/desktops/{name}#token={}.",
            p["desktop"]["id"].as_str().unwrap()
        )),
        "the live view, opened with a viewer token: {url}"
    );
    let project_id = p["id"].as_str().unwrap().to_string();

    // The desktop's processes live in cgroups with its limits, where the machine has cgroups.
    let cgroups = orgo_gateway::runtime::cgroup::Cgroups::detect();
    let desktop_id = p["desktop"]["id"].as_str().unwrap();
    if let Some(memory) = cgroups.limit_file(desktop_id, "memory") {
        assert_eq!(
            std::fs::read_to_string(memory).unwrap().trim(),
            (2u64 << 30).to_string()
        );
        let pids = std::fs::read_to_string(cgroups.limit_file(desktop_id, "pids").unwrap()).unwrap();
        assert_eq!(pids.trim(), "1024");
        let cpu = std::fs::read_to_string(cgroups.limit_file(desktop_id, "cpu").unwrap()).unwrap();
        assert!(cpu.trim().starts_with("200000"), "2 cores: {cpu}");
        let procs = cgroups
            .limit_file(desktop_id, "memory")
            .unwrap()
            .with_file_name("cgroup.procs");
        let inside = std::fs::read_to_string(procs).unwrap();
        assert!(
            inside.lines().count() >= 3,
            "bwrap, the agent, Xvfb and openbox are inside: {inside}"
        );
    }

    let list = gw.ok("GET", "/api/projects", &key, None).await;
    assert_eq!(list["projects"].as_array().unwrap().len(), 1);
    let by_name = gw
        .ok("GET", &format!("/api/projects/by-name/{name}"), &key, None)
        .await;
    assert_eq!(by_name["id"], project_id.as_str());

    let c = format!("/api/computers/{name}");
    let shot = gw.ok("GET", &format!("{c}/screenshot"), &key, None).await;
    assert_eq!(
        (shot["success"].clone(), shot["mime_type"].clone()),
        (json!(true), json!("image/jpeg"))
    );
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(shot["image"].as_str().unwrap())
        .unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
    assert_eq!(
        (shot["width"].as_u64(), shot["height"].as_u64()),
        (Some(1280), Some(800))
    );
    assert_eq!(shot["metadata"]["size"].as_u64(), Some(jpeg.len() as u64));
    let stored = gw
        .ok(
            "GET",
            &format!("{c}/screenshot?response_format=url&format=png"),
            &key,
            None,
        )
        .await;
    let url = stored["image"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("/api/storage/screenshots/") && stored.get("mime_type").is_none(),
        "{stored}"
    );
    let other = gw.key("mallory").await;
    let (status, _) = gw.send("GET", &url, Some(&other), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another account cannot read it");
    let resp = orgo_gateway::app(gw.state.clone())
        .oneshot(
            Request::get(&url)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "image/png");
    let png = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&png[1..4], b"PNG");

    for (action, body) in [
        ("click", json!({"x": 100, "y": 200})),
        ("click", json!({"x": 100, "y": 200, "button": "right"})),
        ("click", json!({"x": 300, "y": 200, "double": true})),
        ("type", json!({"text": "Hello world"})),
        ("key", json!({"key": "Enter"})),
        ("key", json!({"key": "ctrl+shift+i"})),
        ("scroll", json!({"x": 500, "y": 300, "direction": "down"})),
        (
            "scroll",
            json!({"x": 500, "y": 300, "direction": "up", "amount": 5}),
        ),
        ("wait", json!({"duration": 0.1})),
    ] {
        let v = gw
            .ok("POST", &format!("{c}/{action}"), &key, Some(body.clone()))
            .await;
        assert_eq!(v["success"], true, "{action} {body}");
    }
    let cursor = gw.ok("GET", &format!("{c}/cursor"), &key, None).await;
    assert_eq!(
        (cursor["x"].as_i64(), cursor["y"].as_i64()),
        (Some(500), Some(300)),
        "scroll moved the pointer"
    );

    let bash = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "cd /home/user && echo kept > note.txt && pwd"})),
        )
        .await;
    assert_eq!(bash["output"], "/home/user\n");
    let py = gw
        .ok(
            "POST",
            &format!("{c}/exec"),
            &key,
            Some(json!({"code": "print('Hello from Python')\nfor i in range(5):\n    print(i)"})),
        )
        .await;
    assert_eq!(py["output"], "Hello from Python\n0\n1\n2\n3\n4\n");
    assert_eq!(py["success"], true);
    let slow = gw
        .ok(
            "POST",
            &format!("{c}/exec"),
            &key,
            Some(json!({"code": "while True: pass", "timeout": 1})),
        )
        .await;
    assert_eq!(
        (slow["success"].clone(), slow["timed_out"].clone()),
        (json!(false), json!(true))
    );

    // Bad input is a 400 that names the problem, and never reaches the desktop.
    for (action, body, needle) in [
        ("click", json!({"x": 5000, "y": 1}), "x=5000"),
        ("click", json!({"x": -1, "y": 1}), "x=-1"),
        ("click", json!({"x": "a", "y": 1}), "\"x\""),
        ("click", json!({"y": 1}), "x"),
        ("click", json!({"x": 1, "y": 1, "button": "side"}), "button"),
        ("key", json!({"key": "ctrl+hyperdrive"}), "hyperdrive"),
        ("scroll", json!({"direction": "sideways"}), "direction"),
        ("scroll", json!({"direction": "up", "amount": 0}), "amount"),
        ("exec", json!({"code": "print(1)", "timeout": 0}), "timeout"),
        ("wait", json!({"duration": 1000}), "duration"),
        ("type", json!({"text": ""}), "text"),
    ] {
        let (status, v) = gw
            .send("POST", &format!("{c}/{action}"), Some(&key), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action} {body}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{action} {body}: {v}"
        );
    }
    let (status, _) = gw
        .send("POST", &format!("{c}/teleport"), Some(&key), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Files survive stop/start; a stopped desktop answers 409.
    let stopped = gw
        .ok("POST", &format!("/api/projects/{project_id}/stop"), &key, None)
        .await;
    assert_eq!(stopped["desktop"]["status"], "stopped");
    let (status, v) = gw.send("GET", &format!("{c}/screenshot"), Some(&key), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("start"));
    gw.ok("POST", &format!("/api/projects/{project_id}/start"), &key, None)
        .await;
    let cat = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "cat /home/user/note.txt"})),
        )
        .await;
    assert_eq!(cat["output"], "kept\n");
    let restarted = gw
        .ok("POST", &format!("/api/projects/{project_id}/restart"), &key, None)
        .await;
    assert_eq!(restarted["desktop"]["status"], "running");
    gw.ok("GET", &format!("{c}/screenshot"), &key, None).await;

    gw.ok("POST", &format!("/api/projects/{project_id}/delete"), &key, None)
        .await;
    let (status, _) = gw
        .send("GET", &format!("/api/projects/{project_id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw.send("GET", &c, Some(&key), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_plans_and_tenants() {
    let gw = Gateway::new("plans").await;
    let alice = gw.key("alice").await;
    let bob = gw.key("bob").await;

    // Every route and every bad form of the header: gateway/tests/routes.rs.
    let (status, v) = gw.send("GET", "/api/projects", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");

    // The SDK's way: a named workspace, then computers in it.
    let ws = gw
        .ok("POST", "/api/projects", &alice, Some(json!({"name": "agents"})))
        .await;
    assert_eq!(ws["desktops"], json!([]));
    let ws_id = ws["id"].as_str().unwrap();
    let a = gw.ok("POST", "/api/computers", &alice, Some(json!({"workspace_id": ws_id, "name": "one", "os": "linux", "ram": 2, "cpu": 2, "gpu": "none"}))).await;
    assert_eq!(
        (a["name"].clone(), a["status"].clone()),
        (json!("one"), json!("running"))
    );
    let (status, v) = gw
        .send(
            "POST",
            "/api/computers",
            Some(&alice),
            Some(json!({"workspace_id": ws_id, "ram": 4, "cpu": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("4 GB"), "{v}");
    gw.ok(
        "POST",
        "/api/computers",
        &alice,
        Some(json!({"workspace_id": ws_id, "name": "two", "ram": 2, "cpu": 2})),
    )
    .await;
    let (status, v) = gw
        .send(
            "POST",
            "/api/projects",
            Some(&alice),
            Some(json!({"config": {"ram": 2, "cpu": 2}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "third desktop: {v}");
    assert!(v["error"].as_str().unwrap().contains("2 running desktops"), "{v}");

    // Bob sees none of it: every lookup is a 404, exactly like a missing one.
    let a_id = a["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/api/computers/{a_id}")),
        ("GET", "/api/computers/one".to_string()),
        ("GET", format!("/api/computers/{a_id}/screenshot")),
        ("POST", format!("/api/computers/{a_id}/click")),
        ("DELETE", format!("/api/computers/{a_id}")),
        ("GET", format!("/api/projects/{ws_id}")),
        ("POST", format!("/api/projects/{ws_id}/stop")),
    ] {
        let (status, v) = gw
            .send(method, &path, Some(&bob), Some(json!({"x": 1, "y": 1})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    let (status, missing) = gw.send("GET", "/api/computers/no-such", Some(&bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        gw.ok("GET", "/api/projects", &bob, None).await["projects"],
        json!([])
    );
    assert!(missing["error"].is_string());

    // Stopping frees the plan; deleting the workspace removes its computers.
    gw.ok("POST", &format!("/api/computers/{a_id}/stop"), &alice, None)
        .await;
    gw.ok(
        "POST",
        "/api/projects",
        &alice,
        Some(json!({"config": {"ram": 2, "cpu": 2}})),
    )
    .await;
    gw.ok("DELETE", &format!("/api/projects/{ws_id}"), &alice, None)
        .await;
    let (status, _) = gw
        .send("GET", &format!("/api/computers/{a_id}"), Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_desktops_stop_by_themselves_and_start_again() {
    let gw = Gateway::with("idle", |c| c.plans.get_mut("free").unwrap().idle_stop_seconds = 2).await;
    let key = gw.key("idle").await;
    let p = gw
        .ok(
            "POST",
            "/api/projects",
            &key,
            Some(json!({"config": {"ram": 2, "cpu": 0.5}})),
        )
        .await;
    assert_eq!(p["desktop"]["cpu"], 0.5);
    let c = format!("/api/computers/{}", p["name"].as_str().unwrap());
    gw.ok(
        "POST",
        &format!("{c}/bash"),
        &key,
        Some(json!({"command": "echo still > /home/user/f"})),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gw.ok("GET", &c, &key, None).await["status"] != "stopped" {
        assert!(
            std::time::Instant::now() < deadline,
            "an idle desktop never stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
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
    let out = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "cat /home/user/f"})),
        )
        .await;
    assert_eq!(out["output"], "still\n");
}

/// Every route's checks, in-process and without a desktop: the computer exists but is stopped,
/// so a request that passes validation answers 409, and one that fails answers 400 (or its
/// documented 4xx) before any desktop could be involved.
#[tokio::test]
async fn every_route_validates_before_touching_a_desktop() {
    let gw = Gateway::fake("table").await;
    let key = gw.key("tab").await;
    let ws = gw
        .ok("POST", "/api/projects", &key, Some(json!({"name": "ws"})))
        .await;
    let account = gw.state.store.account_by_name("tab").await.unwrap().unwrap();
    gw.state
        .store
        .insert_computer(&orgo_gateway::store::Computer {
            id: "c0ffee".into(),
            account_id: account.id,
            project_id: ws["id"].as_str().unwrap().into(),
            name: "idle-one".into(),
            status: orgo_gateway::store::Status::Stopped,
            ram_gb: 2,
            cpu: 2.0,
            created_at: 0,
            last_active: 0,
            agent: None,
            generation: 0,
            ended: None,
            disk_gb: None,
            resolution: None,
            auto_stop_minutes: None,
        })
        .await
        .unwrap();
    let c = "/api/computers/idle-one";
    let table: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        // (method, path, body, status, text the error must contain)
        (
            "POST",
            format!("{c}/click"),
            Some(json!({"x": 1, "y": 2})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/click"),
            Some(json!({"x": 1280, "y": 2})),
            400,
            "x=1280",
        ),
        (
            "POST",
            format!("{c}/click"),
            Some(json!({"x": 1, "y": 2, "unknown": true})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/move"),
            Some(json!({"x": 5, "y": 5})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/mouse-up"),
            Some(json!({"button": "middle"})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/drag"),
            Some(json!({"start_x": 0, "start_y": 0, "end_x": 9, "end_y": 9})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/scroll"),
            Some(json!({"direction": "down"})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/type"),
            Some(json!({"text": "hi"})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/type"),
            Some(json!({"text": 5})),
            400,
            "\"text\"",
        ),
        (
            "POST",
            format!("{c}/key"),
            Some(json!({"key": "ctrl+c"})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/key-down"),
            Some(json!({"key": "shift"})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/bash"),
            Some(json!({"command": "ls"})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/exec"),
            Some(json!({"code": "print(1)", "timeout": 10})),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/exec"),
            Some(json!({"code": "x" })),
            409,
            "start it",
        ),
        (
            "POST",
            format!("{c}/wait"),
            Some(json!({"duration": 0.5})),
            409,
            "start it",
        ),
        ("POST", format!("{c}/teleport"), Some(json!({})), 404, "teleport"),
        ("GET", format!("{c}/screenshot"), None, 409, "start it"),
        ("GET", format!("{c}/screenshot?quality=abc"), None, 400, "quality"),
        ("GET", format!("{c}/cursor"), None, 409, "start it"),
        ("PUT", format!("{c}/click"), Some(json!({})), 405, "method"),
        ("GET", "/api/computers/nope/screenshot".into(), None, 404, "nope"),
        (
            "POST",
            "/api/computers".into(),
            Some(json!({"name": "x"})),
            400,
            "workspace_id",
        ),
        (
            "POST",
            "/api/computers".into(),
            Some(json!({"workspace_id": "nope"})),
            404,
            "nope",
        ),
        (
            "POST",
            "/api/computers".into(),
            Some(json!({"workspace_id": ws["id"], "os": "windows"})),
            400,
            "linux",
        ),
        (
            "POST",
            "/api/computers".into(),
            Some(json!({"workspace_id": ws["id"], "ram": 3.5})),
            400,
            "ram",
        ),
        (
            "POST",
            "/api/computers".into(),
            Some(json!({"workspace_id": ws["id"], "cpu": 0.25})),
            400,
            "cpu",
        ),
        (
            "POST",
            "/api/computers".into(),
            Some(json!({"workspace_id": ws["id"], "gpu": "a100-40gb"})),
            400,
            "GPU",
        ),
        (
            "POST",
            "/api/computers".into(),
            Some(json!({"workspace_id": ws["id"], "name": "bad name!"})),
            400,
            "name",
        ),
        (
            "POST",
            "/api/projects".into(),
            Some(json!({"config": {"ram": "lots"}})),
            400,
            "config\": ram",
        ),
        (
            "POST",
            "/api/projects".into(),
            Some(json!({"name": "ws"})),
            409,
            "already exists",
        ),
        (
            "POST",
            "/api/projects".into(),
            Some(json!({"name": ""})),
            400,
            "name",
        ),
        ("GET", "/api/projects/nope".into(), None, 404, "nope"),
        ("GET", "/api/projects/by-name/nope".into(), None, 404, "nope"),
        (
            "POST",
            format!("/api/projects/{}/explode", ws["id"].as_str().unwrap()),
            None,
            404,
            "explode",
        ),
        ("GET", "/api/nothing-here".into(), None, 404, "route"),
    ];
    for (method, path, body, want, needle) in table {
        let (status, v) = gw.send(method, &path, Some(&key), body.clone()).await;
        assert_eq!(status.as_u16(), want, "{method} {path} {body:?}: {v}");
        let error = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no JSON error: {v}"));
        assert!(
            error.contains(needle),
            "{method} {path} {body:?}: {error:?} lacks {needle:?}"
        );
    }

    // Metrics count by route template (ids never become labels) and desktops by state.
    let resp = orgo_gateway::app(gw.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for line in [
        "orgo_http_requests_total{route=\"/api/computers/{id}/click\",method=\"POST\",status=\"409\"}",
        "orgo_http_requests_total{route=\"/api/computers/{id}/exec\",method=\"POST\",status=\"409\"}",
        "orgo_http_requests_total{route=\"/api/computers/{id}/{action}\",method=\"POST\",status=\"404\"}",
        "orgo_action_duration_seconds_count{action=\"click\",outcome=\"not_running\"}",
        "orgo_http_request_duration_seconds_count{route=\"/api/computers/{id}/screenshot\"}",
        "orgo_desktops{state=\"stopped\"} 1",
        "orgo_desktops{state=\"running\"} 0",
    ] {
        assert!(text.contains(line), "metrics lack {line}:\n{text}");
    }
    assert!(!text.contains("idle-one"), "no ids in labels");
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one_and_checks_answers() {
    let gw = Gateway::new("openapi").await;
    let resp = orgo_gateway::app(gw.state.clone())
        .oneshot(Request::get("/api/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let served = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let committed: Value =
        serde_json::from_slice(&std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap())
            .unwrap();
    let doc: Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(
        doc, committed,
        "the default screen's document is the committed one"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    // Another screen size bounds coordinates by itself.
    let wide: Value = serde_json::from_str(&orgo_gateway::api::openapi_document(1920, 1080)).unwrap();
    let click = &wide["paths"]["/computers/{id}/click"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["properties"];
    assert_eq!(
        (click["x"]["maximum"].clone(), click["y"]["maximum"].clone()),
        (json!(1919), json!(1079))
    );

    // The check used on every answer in these tests does catch a wrong one.
    for (method, path, status, body) in [
        ("GET", "/api/computers/x", 200, json!({"id": 5})),
        (
            "POST",
            "/api/computers/x/click",
            200,
            json!({"success": true, "x": "1", "y": 2}),
        ),
        ("POST", "/api/computers/x/click", 418, json!({"error": "teapot"})),
        ("GET", "/api/projects", 400, json!({"message": "no error field"})),
    ] {
        let caught = std::panic::catch_unwind(|| gw.doc.check(method, path, status, &body));
        assert!(
            caught.is_err(),
            "{method} {path} {status} {body} passed the check"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_that_dies_is_marked_and_starts_again() {
    let gw = Gateway::new("dies").await;
    let key = gw.key("dies").await;
    let p = gw
        .ok(
            "POST",
            "/api/projects",
            &key,
            Some(json!({"config": {"ram": 2, "cpu": 2}})),
        )
        .await;
    let c = format!("/api/computers/{}", p["name"].as_str().unwrap());
    gw.ok(
        "POST",
        &format!("{c}/bash"),
        &key,
        Some(json!({"command": "echo ok > /home/user/kept"})),
    )
    .await;
    // Kill the desktop's whole sandbox from outside, as a crash or an OOM kill would.
    let id = p["desktop"]["id"].as_str().unwrap();
    let sandboxes = common::desktop_pids(id, "bwrap");
    assert!(!sandboxes.is_empty(), "the desktop's bubblewrap was found");
    for pid in sandboxes {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    gw.until_noticed_dead(&key, &c).await;
    let dead = gw.ok("GET", &c, &key, None).await;
    assert_eq!(dead["status"], "error");
    assert_eq!(
        dead["status_reason"], "its processes were killed (signal 9)",
        "{dead}"
    );
    let started = gw.ok("POST", &format!("{c}/start"), &key, None).await;
    assert_eq!(started["status_reason"], serde_json::Value::Null, "{started}");
    let out = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "cat /home/user/kept"})),
        )
        .await;
    assert_eq!(out["output"], "ok\n");
}

/// Each key has its plan's request rate: a burst of twice the rate passes, then 429 with
/// `Retry-After`, other keys unaffected, and the key works again after the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let gw = Gateway::with("rate", |c| {
        c.plans.get_mut("free").unwrap().requests_per_second = 1;
    })
    .await;
    let (alice, bob) = (gw.key("alice").await, gw.key("bob").await);
    // A full bucket holds two; then the key is over its rate (give a slow machine some tries).
    gw.ok("GET", "/api/projects", &alice, None).await;
    gw.ok("GET", "/api/projects", &alice, None).await;
    let mut refused = None;
    for _ in 0..50 {
        let resp = orgo_gateway::app(gw.state.clone())
            .oneshot(
                Request::get("/api/projects")
                    .header(header::AUTHORIZATION, format!("Bearer {alice}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = refused.expect("the key's rate was never enforced");
    let wait: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1, "{wait}");
    let (status, v) = gw.send("GET", "/api/projects", Some(&alice), None).await;
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert!(v["error"].as_str().unwrap().contains("retry after"), "{v}");
    }
    gw.ok("GET", "/api/projects", &bob, None).await;
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    gw.ok("GET", "/api/projects", &alice, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lifecycle_calls_on_one_desktop_take_turns() {
    let gw = Gateway::with("turns", |c| {
        c.plans.get_mut("free").unwrap().requests_per_second = 100_000;
    });
    let gw = std::sync::Arc::new(gw.await);
    let key = gw.key("turns").await;
    let p = gw
        .ok(
            "POST",
            "/api/projects",
            &key,
            Some(json!({"config": {"ram": 1, "cpu": 1}})),
        )
        .await;
    let id = p["desktop"]["id"].as_str().unwrap().to_string();
    let c = format!("/api/computers/{id}");
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..4 {
        for action in ["restart", "stop", "start"] {
            let (gw, key, path) = (gw.clone(), key.clone(), format!("{c}/{action}"));
            calls.spawn(async move {
                let (status, v) = gw.send("POST", &path, Some(&key), None).await;
                (round, action, status, v)
            });
        }
    }
    // Actions meanwhile either run or are told the desktop is (or went) down: never a 5xx.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut actions = tokio::task::JoinSet::new();
    for (method, action, body) in [
        ("GET", "screenshot", None),
        ("POST", "click", Some(json!({"x": 5, "y": 5}))),
        ("GET", "cursor", None),
        ("POST", "bash", Some(json!({"command": "sleep 0.1; echo hi"}))),
    ] {
        let (gw, key, path, done) = (gw.clone(), key.clone(), format!("{c}/{action}"), done.clone());
        actions.spawn(async move {
            let mut ran = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, v) = gw.send(method, &path, Some(&key), body.clone()).await;
                assert!(
                    status == StatusCode::OK || status == StatusCode::CONFLICT,
                    "{method} {path} during lifecycle calls: {status} {v}"
                );
                ran += usize::from(status == StatusCode::OK);
                // A refusal can complete without ever waiting; let the lifecycle calls run.
                tokio::task::yield_now().await;
            }
            ran
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
    // Whatever order they ran in, the record and the processes agree, and one start serves.
    let status = gw.ok("GET", &c, &key, None).await["status"].clone();
    let agents = common::desktop_pids(&id, "orgo-agent").len();
    assert_eq!(
        agents,
        usize::from(status == "running"),
        "{status} with {agents} agents"
    );
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    assert_eq!(common::desktop_pids(&id, "orgo-agent").len(), 1);
    let out = gw.bash(&key, &c, "echo fine", None).await;
    assert_eq!(out["output"], "fine\n");
}

/// A local desktop's terminal, from the host's xterm and fonts: every script typed into it
/// arrives intact and CJK text shows on screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_takes_every_script_and_shows_cjk() {
    let gw = Gateway::new("terminal").await;
    let key = gw.key("term").await;
    let p = gw.ok("POST", "/api/projects", &key, Some(json!({}))).await;
    let c = format!("/api/computers/{}", p["name"].as_str().unwrap());
    terminal::the_corpus_typed_into_a_terminal_arrives_intact(&gw, &key, &c).await;
    terminal::cjk_in_a_terminal_puts_ink_on_screen(&gw, &key, &c).await;
}
