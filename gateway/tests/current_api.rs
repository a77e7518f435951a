//! Today's Orgo API (`../shared/reference/orgo-api-2026.md`) on a real local desktop, each
//! feature read back from its effect: workspaces and their alias, a computer made at
//! 1024x768x24 (the screenshot's size and `xdpyinfo` inside), its idle time, a live resize (its
//! cgroup), a move between workspaces, a workspace-scoped key refused with its code, the action
//! answers of today's docs (`action`, `details`, `exit_code`, `error_type`, `timeout`,
//! `{"seconds"}`), request ids on errors, and the live view's credential.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

mod common;

use common::inproc::Gateway;
use orgo_gateway::runtime::cgroup::Cgroups;
use orgo_gateway::token::Mode;

/// The answer to a request that must fail with `want`: its JSON error, which carries the
/// request's id (the same as its `X-Request-Id` header).
async fn refused(
    gw: &Gateway,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
    want: StatusCode,
) -> Value {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, headers, v) = gw
        .send_raw(method, path, Some(&format!("Bearer {key}")), body)
        .await;
    assert_eq!(status, want, "{method} {path}: {v}");
    let id = v["request_id"].as_str().unwrap_or_default();
    assert!(id.starts_with("req_"), "{method} {path}: {v}");
    assert_eq!(headers["x-request-id"].to_str().unwrap(), id);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_clients_make_change_move_and_scope_computers() {
    let gw = Gateway::new("current-api").await;
    let key = gw.key("today").await;

    // Workspaces: made, listed with their desktops, a duplicate name refused with a 400.
    let team = gw
        .ok(
            "POST",
            "/api/workspaces",
            &key,
            Some(json!({"name": "team", "icon_url": "x"})),
        )
        .await;
    let team_id = team["id"].as_str().unwrap().to_string();
    assert_eq!(
        (team["desktops"].clone(), team["computer_count"].clone()),
        (json!([]), json!(0))
    );
    let dup = refused(
        &gw,
        "POST",
        "/api/workspaces",
        &key,
        Some(json!({"name": "team"})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(dup["error"].as_str().unwrap().contains("\"team\""), "{dup}");

    // A computer as today's clients make one: its own screen, home and idle time.
    let made = gw
        .ok(
            "POST",
            "/api/computers",
            &key,
            Some(
                json!({"workspace_id": team_id, "name": "desk", "ram": 2, "cpu": 1,
                        "resolution": "1024x768x24", "disk_size_gb": 12, "auto_stop_minutes": 0}),
            ),
        )
        .await;
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            made["resolution"].clone(),
            made["instance_details"]["resolution"].clone(),
            made["disk_size_gb"].clone()
        ),
        (json!("1024x768x24"), json!("1024x768x24"), json!(12))
    );
    assert_eq!(made["auto_stop_minutes"], Value::Null, "0: never stops by itself");
    assert_eq!(made["instance_id"], made["id"]);
    assert!(
        made["connection_url"]
            .as_str()
            .unwrap()
            .ends_with("/desktops/desk"),
        "{made}"
    );
    let c = format!("/api/computers/{id}");
    let shot = gw
        .ok(
            "GET",
            &format!("{c}/screenshot?response_format=base64"),
            &key,
            None,
        )
        .await;
    assert_eq!(
        (shot["width"].clone(), shot["height"].clone()),
        (json!(1024), json!(768))
    );
    let screen = gw.bash(&key, &c, "xdpyinfo | grep dimensions", None).await;
    assert!(
        screen["output"].as_str().unwrap().contains("1024x768 pixels"),
        "{screen}"
    );
    let outside = refused(
        &gw,
        "POST",
        &format!("{c}/click"),
        &key,
        Some(json!({"x": 1100, "y": 10})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(outside["error"].as_str().unwrap().contains("1100"), "{outside}");
    for bad in ["1024x768x16", "100x100x24", "big"] {
        refused(
            &gw,
            "POST",
            "/api/computers",
            &key,
            Some(json!({"workspace_id": team_id, "resolution": bad})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    refused(
        &gw,
        "POST",
        "/api/computers",
        &key,
        Some(json!({"workspace_id": team_id, "disk_size_gb": 500})),
        StatusCode::FORBIDDEN,
    )
    .await;

    // Its idle time: never, then 30 minutes, and the plan's in the answer.
    let auto = gw.ok("GET", &format!("{c}/auto-stop"), &key, None).await;
    assert_eq!(
        (auto["auto_stop_minutes"].clone(), auto["configurable"].clone()),
        (json!(0), json!(true))
    );
    assert_eq!(auto["plan_default_minutes"], json!(30), "the free plan's 1800 s");
    gw.ok(
        "PATCH",
        &format!("{c}/auto-stop"),
        &key,
        Some(json!({"auto_stop_minutes": 45})),
    )
    .await;
    assert_eq!(gw.ok("GET", &c, &key, None).await["auto_stop_minutes"], json!(45));
    refused(
        &gw,
        "PATCH",
        &format!("{c}/auto-stop"),
        &key,
        Some(json!({"auto_stop_minutes": -1})),
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Where the machine has the cpuset controller, the desktop's CPUs are its vcpus: `nproc`
    // inside says 1, not the host's count.
    let cgroups = Cgroups::detect();
    let host_cpus = std::thread::available_parallelism().unwrap().get();
    let cpuset = cgroups.limit_file(&id, "cpuset").filter(|f| f.exists());
    let nproc = async || {
        let out = gw.bash(&key, &c, "nproc", None).await;
        out["output"].as_str().unwrap().trim().parse::<usize>().unwrap()
    };
    if cpuset.is_some() {
        assert_eq!(nproc().await, 1);
    }

    // A live resize: Orgo's names only, within the plan, the home only grows; the memory
    // limit of the running desktop's cgroup changes at once.
    let wrong = refused(
        &gw,
        "PATCH",
        &format!("{c}/resize"),
        &key,
        Some(json!({"cpu": 2, "ram": 4})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        wrong["error"]
            .as_str()
            .unwrap()
            .contains("vcpus, mem_gb and disk_size_gb"),
        "{wrong}"
    );
    refused(
        &gw,
        "PATCH",
        &format!("{c}/resize"),
        &key,
        Some(json!({"mem_gb": 8})),
        StatusCode::FORBIDDEN,
    )
    .await;
    refused(
        &gw,
        "PATCH",
        &format!("{c}/resize"),
        &key,
        Some(json!({"disk_size_gb": 5})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let resized = gw
        .ok(
            "PATCH",
            &format!("{c}/resize"),
            &key,
            Some(json!({"mem_gb": 3, "vcpus": 2, "disk_size_gb": 14})),
        )
        .await;
    assert_eq!(
        (
            resized["mem_gb"].clone(),
            resized["vcpus"].clone(),
            resized["disk_size_gb"].clone()
        ),
        (json!(3), json!(2), json!(14))
    );
    if cpuset.is_some() {
        assert_eq!(
            nproc().await,
            host_cpus.min(2),
            "the new vcpus, seen by a new process"
        );
    }
    if let Some(limit) = cgroups.limit_file(&id, "memory").filter(|f| f.exists()) {
        let bytes = std::fs::read_to_string(&limit).unwrap();
        assert_eq!(bytes.trim(), (3u64 << 30).to_string(), "{}", limit.display());
        // And inside, where a container sees its own group (v2's files, or v1's).
        let limits = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                      cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us";
        let inside = gw.bash(&key, &c, limits, None).await;
        let words: Vec<_> = inside["output"].as_str().unwrap().split_whitespace().collect();
        assert_eq!(words[..2], ["3221225472", "200000"], "{inside}");
    }
    let now = gw.ok("GET", &c, &key, None).await;
    assert_eq!(
        (
            now["ram"].clone(),
            now["cpu"].clone(),
            now["disk_size_gb"].clone()
        ),
        (json!(3), json!(2), json!(14))
    );

    // Today's action answers.
    let started = Instant::now();
    let waited = gw
        .ok("POST", &format!("{c}/wait"), &key, Some(json!({"seconds": 1})))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1), "{waited}");
    assert_eq!(
        (waited["action"].clone(), waited["details"]["seconds"].clone()),
        (json!("wait"), json!(1.0))
    );
    let bash = gw.bash(&key, &c, "echo out; exit 3", None).await;
    assert_eq!(
        (
            bash["action"].clone(),
            bash["command"].clone(),
            bash["exit_code"].clone(),
            bash["success"].clone()
        ),
        (json!("bash"), json!("echo out; exit 3"), json!(3), json!(false))
    );
    let raised = gw
        .ok(
            "POST",
            &format!("{c}/exec"),
            &key,
            Some(json!({"code": "print('before')\n1/0"})),
        )
        .await;
    assert_eq!(
        (
            raised["success"].clone(),
            raised["error_type"].clone(),
            raised["error"].clone(),
            raised["output"].clone()
        ),
        (
            json!(false),
            json!("ZeroDivisionError"),
            json!("division by zero"),
            json!("before\n")
        )
    );
    let late = gw
        .ok(
            "POST",
            &format!("{c}/exec"),
            &key,
            Some(json!({"code": "import time; time.sleep(30)", "timeout": 1})),
        )
        .await;
    assert_eq!(
        (late["success"].clone(), late["timeout"].clone()),
        (json!(false), json!(true))
    );
    let typed = gw
        .ok(
            "POST",
            &format!("{c}/type"),
            &key,
            Some(json!({"text": "héllo", "delay_ms": 5})),
        )
        .await;
    assert_eq!(
        (typed["action"].clone(), typed["details"]["text_length"].clone()),
        (json!("type"), json!(5))
    );
    let key_press = gw
        .ok("POST", &format!("{c}/key"), &key, Some(json!({"key": "ctrl+a"})))
        .await;
    assert_eq!(key_press["action"], "key_press");
    let scrolled = gw
        .ok(
            "POST",
            &format!("{c}/scroll"),
            &key,
            Some(json!({"direction": "down", "amount": 1})),
        )
        .await;
    assert_eq!(
        scrolled["details"]["direction"], "down",
        "scrolled where the pointer is"
    );

    // The live view's credential: a control token for this computer, never the API key.
    let vnc = gw.ok("GET", &format!("{c}/vnc-password"), &key, None).await;
    let password = vnc["password"].as_str().unwrap();
    assert_ne!(password, key);
    let grant = gw.state.links.verify(password).unwrap();
    assert_eq!(
        (grant.computer.as_str(), grant.mode),
        (id.as_str(), Mode::Control)
    );
    assert_eq!(
        gw.state
            .links
            .verify(vnc["desktop_api_token"].as_str().unwrap())
            .unwrap()
            .mode,
        Mode::Desktop
    );

    // Lifecycle answers carry success; a stopped computer cannot be resized; ensure-running
    // starts it again.
    let stopped = gw.ok("POST", &format!("{c}/stop"), &key, None).await;
    assert_eq!(
        (stopped["success"].clone(), stopped["status"].clone()),
        (json!(true), json!("stopped"))
    );
    refused(
        &gw,
        "PATCH",
        &format!("{c}/resize"),
        &key,
        Some(json!({"mem_gb": 2})),
        StatusCode::CONFLICT,
    )
    .await;
    let ensured = gw.ok("POST", &format!("{c}/ensure-running"), &key, None).await;
    assert_eq!(ensured["status"], "running");
    assert_eq!(
        ensured["instance_details"]["resolution"], "1024x768x24",
        "the screen kept across a stop"
    );
    let shot = gw
        .ok(
            "GET",
            &format!("{c}/screenshot?response_format=base64"),
            &key,
            None,
        )
        .await;
    assert_eq!(shot["width"], json!(1024));

    // A move into another workspace of the same account; not into its own, not into a
    // workspace that does not exist.
    let lab = gw
        .ok("POST", "/api/workspaces", &key, Some(json!({"name": "lab"})))
        .await;
    let lab_id = lab["id"].as_str().unwrap().to_string();
    let viewer = |token: &str| format!("/desktops/{id}/session?token={token}");
    let before = gw.ok("POST", &format!("{c}/viewer-token"), &key, None).await;
    let before = before["token"].as_str().unwrap().to_string();
    assert_eq!(
        gw.send("GET", &viewer(&before), None, None).await.0,
        StatusCode::OK
    );
    let moved = gw
        .ok(
            "PATCH",
            &format!("{c}/move"),
            &key,
            Some(json!({"project_id": lab_id})),
        )
        .await;
    assert_eq!(moved["project_id"], json!(lab_id));
    // A token made before the move does not follow the computer into its new workspace.
    let (status, said) = gw.send("GET", &viewer(&before), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{said}");
    assert!(said["error"].as_str().unwrap().contains("moved"), "{said}");
    let after = gw.ok("POST", &format!("{c}/viewer-token"), &key, None).await;
    let after = after["token"].as_str().unwrap().to_string();
    assert_eq!(
        gw.send("GET", &viewer(&after), None, None).await.0,
        StatusCode::OK
    );
    refused(
        &gw,
        "PATCH",
        &format!("{c}/move"),
        &key,
        Some(json!({"project_id": lab_id})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    refused(
        &gw,
        "PATCH",
        &format!("{c}/move"),
        &key,
        Some(json!({"project_id": "nowhere"})),
        StatusCode::NOT_FOUND,
    )
    .await;
    let listed = gw
        .ok("GET", &format!("/api/workspaces/{lab_id}"), &key, None)
        .await;
    assert_eq!(listed["desktops"][0]["id"], json!(id));
    assert_eq!(listed["computers"], listed["desktops"]);

    // A key limited to the team workspace: the computer now in lab is refused with the code
    // naming both workspaces; it lists only its workspace and makes none.
    let scoped = orgo_gateway::create_key(
        gw.state.store.as_ref(),
        &gw.state.config,
        "today",
        None,
        Some(&team_id),
    )
    .await
    .unwrap();
    let mismatch = refused(&gw, "GET", &c, &scoped, None, StatusCode::FORBIDDEN).await;
    assert_eq!(
        (
            mismatch["code"].clone(),
            mismatch["key_workspace_id"].clone(),
            mismatch["target_workspace_id"].clone()
        ),
        (json!("workspace_scope_mismatch"), json!(team_id), json!(lab_id))
    );
    refused(
        &gw,
        "POST",
        &format!("{c}/bash"),
        &scoped,
        Some(json!({"command": "true"})),
        StatusCode::FORBIDDEN,
    )
    .await;
    let seen = gw.ok("GET", "/api/workspaces", &scoped, None).await;
    let names: Vec<_> = seen["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("team")]);
    refused(
        &gw,
        "POST",
        "/api/workspaces",
        &scoped,
        Some(json!({"name": "more"})),
        StatusCode::FORBIDDEN,
    )
    .await;
    refused(
        &gw,
        "POST",
        "/api/computers",
        &scoped,
        Some(json!({"workspace_id": lab_id})),
        StatusCode::FORBIDDEN,
    )
    .await;
    gw.ok(
        "PATCH",
        &format!("{c}/move"),
        &key,
        Some(json!({"workspace_id": team_id})),
    )
    .await;
    gw.bash(&scoped, &c, "true", None).await;

    // Deleting: a workspace takes its computers with it; the alias's both forms work.
    gw.ok("DELETE", &format!("/api/workspaces/{team_id}"), &key, None)
        .await;
    refused(&gw, "GET", &c, &key, None, StatusCode::NOT_FOUND).await;
    assert!(
        common::desktop_pids(&id, "orgo-agent").is_empty(),
        "its desktop is gone"
    );
    gw.ok("POST", &format!("/api/projects/{lab_id}/delete"), &key, None)
        .await;
    let spare = gw
        .ok("POST", "/api/workspaces", &key, Some(json!({"name": "spare"})))
        .await;
    gw.ok(
        "DELETE",
        &format!("/api/projects/{}", spare["id"].as_str().unwrap()),
        &key,
        None,
    )
    .await;
    assert_eq!(
        gw.ok("GET", "/api/workspaces", &key, None).await["workspaces"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_has_its_sources_files_size_and_screen_and_counts_against_the_plan() {
    let gw = Gateway::new("current-clone").await;
    let key = gw.key("cloner").await;
    let ws = gw
        .ok("POST", "/api/workspaces", &key, Some(json!({"name": "w"})))
        .await;
    let ws_id = ws["id"].as_str().unwrap().to_string();
    let made = gw
        .ok(
            "POST",
            "/api/computers",
            &key,
            Some(
                json!({"workspace_id": ws_id, "name": "desk", "ram": 1, "cpu": 1, "resolution": "1024x768"}),
            ),
        )
        .await;
    let c = format!("/api/computers/{}", made["id"].as_str().unwrap());
    gw.bash(
        &key,
        &c,
        "mkdir -p work && printf 'kept\\n' > work/notes.txt",
        None,
    )
    .await;

    // Cloned while it runs: the file is there, the size and screen too; the name says so.
    let clone = gw.ok("POST", &format!("{c}/clone"), &key, None).await;
    assert_eq!(
        (clone["name"].clone(), clone["status"].clone()),
        (json!("desk (clone)"), json!("running"))
    );
    assert_ne!(clone["id"], made["id"]);
    assert_eq!(
        (clone["ram"].clone(), clone["resolution"].clone()),
        (json!(1), json!("1024x768x24"))
    );
    assert!(
        clone["connection_url"]
            .as_str()
            .unwrap()
            .ends_with("/desktops/desk%20%28clone%29"),
        "{clone}"
    );
    let cc = format!("/api/computers/{}", clone["id"].as_str().unwrap());
    let read = gw.bash(&key, &cc, "cat work/notes.txt", None).await;
    assert_eq!(read["output"], "kept\n");
    // The two homes are apart from then on.
    let wrote = gw.bash(&key, &cc, "echo clone-only > work/notes.txt", None).await;
    assert_eq!(wrote["exit_code"], 0, "the clone's user owns its copy: {wrote}");
    assert_eq!(
        gw.bash(&key, &c, "cat work/notes.txt", None).await["output"],
        "kept\n"
    );

    // The free plan's two desktops are running: a third is refused and nothing is made.
    let (status, v) = gw.send("POST", &format!("{c}/clone"), Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let listed = gw
        .ok("GET", &format!("/api/workspaces/{ws_id}"), &key, None)
        .await;
    assert_eq!(listed["desktops"].as_array().unwrap().len(), 2);

    // A stopped source clones too, under the name asked for, into another workspace.
    gw.ok("POST", &format!("{cc}/stop"), &key, None).await;
    let other = gw
        .ok("POST", "/api/workspaces", &key, Some(json!({"name": "other"})))
        .await;
    let again = gw
        .ok(
            "POST",
            &format!("{cc}/clone"),
            &key,
            Some(json!({"name": "copy2", "targetProjectId": other["id"]})),
        )
        .await;
    assert_eq!(
        (again["name"].clone(), again["workspace_id"].clone()),
        (json!("copy2"), other["id"].clone())
    );
    let read = gw
        .bash(
            &key,
            &format!("/api/computers/{}", again["id"].as_str().unwrap()),
            "cat work/notes.txt",
            None,
        )
        .await;
    assert_eq!(read["output"], "clone-only\n");
    let (status, v) = gw
        .send(
            "POST",
            &format!("{c}/clone"),
            Some(&key),
            Some(json!({"name": "bad name"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}
