//! The Docker runtime on the real engine: hardening, files across stop/start, adoption, and what
//! one desktop can and cannot do to its host and its neighbours. The image comes from
//! `cargo xtask image`, which `cargo xtask ci` runs first.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

use common::inproc::Gateway;
use common::terminal;

fn docker_inspect(name: &str) -> Option<Value> {
    let out = std::process::Command::new("docker")
        .args(["inspect", name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone())
}

async fn docker_gateway(tag: &str) -> Gateway {
    Gateway::with(tag, |c| c.runtime = orgo_gateway::config::RuntimeKind::Docker).await
}

/// A new desktop for `key`: (project id, desktop id, computer path).
async fn desktop(gw: &Gateway, key: &str, ram: u32) -> (String, String, String) {
    let p = gw
        .ok(
            "POST",
            "/api/projects",
            key,
            Some(json!({"config": {"ram": ram, "cpu": 1}})),
        )
        .await;
    (
        p["id"].as_str().unwrap().to_string(),
        p["desktop"]["id"].as_str().unwrap().to_string(),
        format!("/api/computers/{}", p["name"].as_str().unwrap()),
    )
}

/// A computer of 1 GB and 1 CPU with the fields of `body`, made as today's clients do (in a
/// new workspace): (its id, its path).
async fn computer(gw: &Gateway, key: &str, mut body: Value) -> (String, String) {
    let ws = gw
        .ok("POST", "/api/workspaces", key, Some(json!({"name": "w"})))
        .await;
    body["workspace_id"] = ws["id"].clone();
    body["ram"] = json!(1);
    body["cpu"] = json!(1);
    let made = gw.ok("POST", "/api/computers", key, Some(body)).await;
    let id = made["id"].as_str().unwrap().to_string();
    let path = format!("/api/computers/{id}");
    (id, path)
}

/// A second gateway on the same data dir (its start adopts what runs): `cat ~/f` on a computer
/// through it, as (status, output).
async fn through_a_second_gateway(gw: &Gateway, key: &str, computer: &str) -> (StatusCode, Value) {
    let again = orgo_gateway::build_state((*gw.state.config).clone())
        .await
        .unwrap();
    let resp = orgo_gateway::app(again)
        .oneshot(
            Request::post(format!("{computer}/bash"))
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::from(json!({"command": "cat ~/f"}).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The desktop's address on its Docker network and that network's gateway (the host's side).
fn addresses(desktop_id: &str) -> (String, String) {
    let info = docker_inspect(&format!("orgo-{desktop_id}")).unwrap();
    let nets = info["NetworkSettings"]["Networks"].as_object().unwrap();
    let net = nets.values().next().unwrap();
    (
        net["IPAddress"].as_str().unwrap().to_string(),
        net["Gateway"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_desktops_are_hardened_keep_files_and_outlive_the_gateway() {
    let gw = docker_gateway("docker").await;
    let key = gw.key("dock").await;
    let p = gw
        .ok(
            "POST",
            "/api/projects",
            &key,
            Some(json!({"config": {"ram": 2, "cpu": 2}})),
        )
        .await;
    let id = p["desktop"]["id"].as_str().unwrap().to_string();
    let c = format!("/api/computers/{}", p["name"].as_str().unwrap());

    let who = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "whoami; echo $DISPLAY; echo kept > ~/f"})),
        )
        .await;
    assert_eq!(who["output"], "user\n:1\n");
    let shot = gw.ok("GET", &format!("{c}/screenshot"), &key, None).await;
    assert_eq!(shot["width"], 1280);
    let py = gw
        .ok(
            "POST",
            &format!("{c}/exec"),
            &key,
            Some(json!({"code": "import pyautogui; print(pyautogui.size())"})),
        )
        .await;
    assert_eq!(py["output"], "Size(width=1280, height=800)\n", "{py}");

    let info = docker_inspect(&format!("orgo-{id}")).expect("the desktop's container");
    let host = &info["HostConfig"];
    assert_eq!(host["Memory"], 2i64 << 30);
    assert_eq!(host["NanoCpus"], 2_000_000_000i64);
    assert_eq!(host["PidsLimit"], 1024);
    assert_eq!(host["Init"], true);
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert!(
        host["SecurityOpt"]
            .as_array()
            .unwrap()
            .contains(&json!("no-new-privileges"))
    );
    assert!(host["Tmpfs"]["/tmp"].is_string());
    assert!(
        host["PortBindings"].as_object().is_none_or(|m| m.is_empty()),
        "no published ports"
    );
    let binds = host["Binds"].to_string();
    assert!(
        !binds.contains("docker.sock") && binds.contains("/run/orgo"),
        "{binds}"
    );
    assert_eq!(info["Config"]["Labels"]["orgo.desktop"], id.as_str());
    let env = info["Config"]["Env"].to_string();
    assert!(!env.contains("orgo_"), "no API key inside: {env}");
    let inside = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "test -e /var/run/docker.sock && echo SOCKET; ls /run/orgo"})),
        )
        .await;
    assert_eq!(
        inside["output"], "agent.sock\n",
        "no Docker socket inside, only the agent's"
    );

    // Stop keeps the container and its files.
    gw.ok("POST", &format!("{c}/stop"), &key, None).await;
    assert_eq!(
        docker_inspect(&format!("orgo-{id}")).unwrap()["State"]["Running"],
        false
    );
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    let kept = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "cat ~/f"})),
        )
        .await;
    assert_eq!(kept["output"], "kept\n");

    // A second gateway on the same data adopts the running container and removes orphans: one
    // of its own no desktop owns, one whose gateway's data dir is gone; another live gateway's
    // container stays.
    let data_dir = std::fs::canonicalize(&gw.dir).unwrap();
    let labelled = |owner: &str| {
        let out = std::process::Command::new("docker")
            .args(["create", "--label", "orgo.desktop=nobody", "--label"])
            .arg(format!("orgo.gateway={owner}"))
            .arg(&gw.state.config.image)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let orphan_id = labelled(data_dir.to_str().unwrap());
    let abandoned_id = labelled("/nonexistent/orgo-gateway-gone");
    let neighbour_id = labelled(std::env::temp_dir().to_str().unwrap());
    let (status, adopted) = through_a_second_gateway(&gw, &key, &c).await;
    assert!(
        docker_inspect(&orphan_id).is_none() && docker_inspect(&abandoned_id).is_none(),
        "the orphan containers were removed"
    );
    assert!(
        docker_inspect(&neighbour_id).is_some(),
        "another gateway's container is left alone"
    );
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &neighbour_id])
        .output();
    assert_eq!(
        (status, &adopted["output"]),
        (StatusCode::OK, &json!("kept\n")),
        "the adopted desktop answers without a restart"
    );

    // A container killed under it is noticed and the desktop starts again with its files.
    assert!(
        std::process::Command::new("docker")
            .args(["kill", &format!("orgo-{id}")])
            .status()
            .unwrap()
            .success()
    );
    gw.until_noticed_dead(&key, &c).await;
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    let kept = gw
        .ok(
            "POST",
            &format!("{c}/bash"),
            &key,
            Some(json!({"command": "cat ~/f"})),
        )
        .await;
    assert_eq!(kept["output"], "kept\n");

    gw.ok(
        "DELETE",
        &format!("/api/projects/{}", p["id"].as_str().unwrap()),
        &key,
        None,
    )
    .await;
    assert!(
        docker_inspect(&format!("orgo-{id}")).is_none(),
        "delete removes the container"
    );
}

/// The image works for what it ships: a terminal opened with `bash` maps and takes every script
/// intact, CJK text shows on screen, and the screen never blanks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_desktops_terminal_takes_every_script_and_shows_cjk_and_it_never_blanks() {
    let gw = docker_gateway("docker-terminal").await;
    let key = gw.key("term").await;
    let (project, _, c) = desktop(&gw, &key, 1).await;
    terminal::the_corpus_typed_into_a_terminal_arrives_intact(&gw, &key, &c).await;
    terminal::cjk_in_a_terminal_puts_ink_on_screen(&gw, &key, &c).await;
    // What `xset q` would say (the image has python-xlib rather than xset): no screen-saver
    // timeout, and DPMS off (Xvfb has no DPMS at all).
    let saver = gw
        .bash(
            &key,
            &c,
            "python3 -c \"from Xlib import display; d = display.Display(); \
             print(d.get_screen_saver().timeout, d.has_extension('DPMS') and d.dpms_info().state)\"",
            None,
        )
        .await;
    assert_eq!(saver["output"], "0 False\n", "{saver}");
    gw.ok("DELETE", &format!("/api/projects/{project}"), &key, None)
        .await;
}

/// From inside a desktop: no other desktop's agent socket, no Docker socket, no way to the
/// gateway's port, and no way to a service another desktop listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_desktop_reaches_neither_its_neighbours_nor_the_gateway_nor_the_engine() {
    let gw = docker_gateway("docker-isolation").await;
    // The gateway also served on loopback, as `orgo-gateway serve` does by default.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(axum::serve(listener, orgo_gateway::app(gw.state.clone())).into_future());
    let (alice, bob) = (gw.key("alice").await, gw.key("bob").await);
    let (_, a_id, a) = desktop(&gw, &alice, 1).await;
    let (_, b_id, b) = desktop(&gw, &bob, 1).await;
    let (b_ip, host_ip) = addresses(&b_id);

    // Bob serves something on his desktop's network; he reaches it himself.
    gw.bash(
        &bob,
        &b,
        "setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &",
        None,
    )
    .await;
    let probe = |host: &str, port: u16| {
        format!(
            "python3 -c \"import socket; s = socket.socket(); s.settimeout(3); print('open' if s.connect_ex(('{host}', {port})) == 0 else 'closed')\""
        )
    };
    // The server takes a moment to start on a busy machine: wait until it answers its owner.
    let own = gw
        .bash(
            &bob,
            &b,
            &format!(
                "for i in $(seq 100); do r=$({}); [ \"$r\" = open ] && break; sleep 0.2; done; echo $r",
                probe(&b_ip, 8000)
            ),
            None,
        )
        .await;
    assert_eq!(own["output"], "open\n", "bob's server listens: {own}");

    for (host, port, what) in [
        (b_ip.as_str(), 8000, "a service on the neighbouring desktop"),
        (
            host_ip.as_str(),
            port,
            "the gateway's port through the host's side of the network",
        ),
        ("127.0.0.1", port, "the gateway's port on loopback"),
        (host_ip.as_str(), 2375, "the Docker engine over TCP"),
    ] {
        let out = gw.bash(&alice, &a, &probe(host, port), None).await;
        assert_eq!(out["output"], "closed\n", "alice reached {what} ({host}:{port})");
    }

    // Only her own agent socket, and no Docker socket, anywhere in her filesystem.
    let sockets = gw
        .bash(
            &alice,
            &a,
            "{ find / \\( -path /proc -o -path /sys \\) -prune -o \\( -name agent.sock -o -name docker.sock \\) -print; \
             find /run /tmp -type s; } 2>/dev/null | grep -v '^/tmp/.X11-unix/' | sort -u",
            None,
        )
        .await;
    assert_eq!(
        sockets["output"], "/run/orgo/agent.sock\n",
        "alice sees only her own agent's socket: {sockets}"
    );
    let mounts = gw.bash(&alice, &a, "cat /proc/mounts", None).await;
    let data_dir = std::fs::canonicalize(&gw.dir).unwrap();
    assert!(
        !mounts["output"]
            .as_str()
            .unwrap()
            .contains(&format!("desktops/{b_id}")),
        "bob's run directory is not mounted in alice's desktop"
    );
    assert!(
        !gw.bash(&alice, &a, &format!("ls {}", data_dir.display()), None)
            .await["success"]
            .as_bool()
            .unwrap(),
        "the gateway's data directory is not visible inside"
    );
    assert_ne!(a_id, b_id);
}

/// A fork bomb meets the pids limit and a memory bomb the memory limit of its own container; the
/// neighbouring desktop answers throughout and the bombed desktop recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_stay_inside_their_docker_desktop() {
    let gw = docker_gateway("docker-bombs").await;
    let (alice, bob) = (gw.key("alice").await, gw.key("bob").await);
    let (_, _, a) = desktop(&gw, &alice, 1).await;
    let (_, _, b) = desktop(&gw, &bob, 1).await;

    let bomb = gw.bash(
        &alice,
        &a,
        "bomb() { bomb | bomb & }; bomb; exec sleep 60",
        Some(8.0),
    );
    let neighbour = async {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let alive = gw.bash(&bob, &b, "echo alive", None).await;
        let shot = gw.ok("GET", &format!("{b}/screenshot"), &bob, None).await;
        (alive, shot)
    };
    let (bombed, (alive, shot)) = tokio::join!(bomb, neighbour);
    assert_eq!(bombed["timed_out"], true, "{bombed}");
    assert_eq!(
        alive["output"], "alive\n",
        "the neighbour answers during the fork bomb"
    );
    assert!(shot["image"].as_str().is_some_and(|i| !i.is_empty()));
    let pids = gw
        .bash(
            &alice,
            &a,
            "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; \
             grep -h max /sys/fs/cgroup/pids/pids.events /sys/fs/cgroup/pids.events 2>/dev/null",
            None,
        )
        .await;
    let out = pids["output"].as_str().unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1024"), "{out}");
    let refused: u64 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pids.events: {out}"));
    assert!(refused > 0, "the bomb met the pids limit: {out}");

    // 3 GB in a 1 GB desktop without swap: the kernel kills the allocator, inside its container.
    let oom = gw
        .ok(
            "POST",
            &format!("{a}/exec"),
            &alice,
            Some(json!({"code": "x = bytearray(3 << 30)\nprint('survived')", "timeout": 30})),
        )
        .await;
    assert_eq!(oom["success"], false, "{oom}");
    assert_ne!(oom["output"], "survived\n");
    let kills = gw
        .bash(
            &alice,
            &a,
            "grep -h oom_kill /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events 2>/dev/null | grep -v disable",
            None,
        )
        .await;
    let killed: u64 = kills["output"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no oom_kill count: {kills}"));
    assert!(killed > 0, "the kill happened in alice's container: {kills}");
    let after = gw.bash(&alice, &a, "echo recovered", None).await;
    assert_eq!(after["output"], "recovered\n");
    let neighbour = gw.bash(&bob, &b, "echo fine", None).await;
    assert_eq!(neighbour["output"], "fine\n");
}

/// A desktop with more CPUs than the engine has (which the engine would refuse) gets a 503
/// saying so, and nothing is left of it running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_bigger_than_the_machine_is_refused_with_a_reason() {
    let gw = Gateway::with("docker-too-big", |c| {
        c.runtime = orgo_gateway::config::RuntimeKind::Docker;
        c.plans.get_mut("free").unwrap().max_cpu = 256;
    })
    .await;
    let key = gw.key("big").await;
    let cpus = std::thread::available_parallelism().unwrap().get();
    let (status, v) = gw
        .send(
            "POST",
            "/api/projects",
            Some(&key),
            Some(json!({"config": {"ram": 1, "cpu": cpus + 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains(&format!("has {cpus} CPUs")), "{error}");
    let (status, v) = gw
        .send(
            "POST",
            "/api/projects",
            Some(&key),
            Some(json!({"config": {"ram": 1, "cpu": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the refused one holds no capacity: {v}");
    gw.ok(
        "DELETE",
        &format!("/api/projects/{}", v["id"].as_str().unwrap()),
        &key,
        None,
    )
    .await;
}

/// Engines that cannot share the host's filesystem: the agent on TCP, published on loopback
/// only, behind a per-desktop token that is in no environment; everything else as over a socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_desktops_over_tcp_with_a_token() {
    let gw = Gateway::with("docker-tcp", |c| {
        c.runtime = orgo_gateway::config::RuntimeKind::Docker;
        c.docker_transport = orgo_gateway::config::DockerTransport::Tcp;
    })
    .await;
    let key = gw.key("tcp").await;
    let (project, id, c) = desktop(&gw, &key, 1).await;
    let out = gw
        .bash(
            &key,
            &c,
            "whoami; stat -c '%U %a' /run/orgo/token; echo kept > ~/f",
            None,
        )
        .await;
    assert_eq!(out["output"], "user\nuser 400\n", "{out}");

    let info = docker_inspect(&format!("orgo-{id}")).unwrap();
    let host = &info["HostConfig"];
    assert!(
        host["Binds"].is_null(),
        "no host directory inside: {}",
        host["Binds"]
    );
    let bindings = host["PortBindings"]["7000/tcp"].as_array().unwrap();
    assert!(
        bindings.iter().all(|b| b["HostIp"] == "127.0.0.1"),
        "published on loopback only: {bindings:?}"
    );
    let token = std::fs::read_to_string(gw.dir.join(format!("desktops/{id}/agent.token"))).unwrap();
    assert!(
        !info["Config"].to_string().contains(&token),
        "the token is in no environment or argument"
    );
    let port = info["NetworkSettings"]["Ports"]["7000/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = orgo_proto::connect::connect(&orgo_proto::connect::Target::Tcp {
        addr: format!("127.0.0.1:{port}"),
        token: "not-the-token".into(),
    })
    .await
    .unwrap()
    .health(orgo_proto::v1::HealthRequest {})
    .await
    .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);

    gw.ok("POST", &format!("{c}/stop"), &key, None).await;
    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    assert_eq!(gw.bash(&key, &c, "cat ~/f", None).await["output"], "kept\n");

    // A second gateway adopts it over TCP.
    let (status, adopted) = through_a_second_gateway(&gw, &key, &c).await;
    assert_eq!((status, &adopted["output"]), (StatusCode::OK, &json!("kept\n")));
    gw.ok("DELETE", &format!("/api/projects/{project}"), &key, None)
        .await;
    assert!(docker_inspect(&format!("orgo-{id}")).is_none());
}

/// The pool's running desktops (ids), once there are `want`.
async fn pooled_on(
    desktops: &orgo_gateway::desktops::Desktops,
    store: &dyn orgo_gateway::store::Store,
    want: usize,
) -> std::collections::BTreeSet<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let ids = common::pooled_ids(store).await;
        let ready = desktops
            .pool_state()
            .await
            .unwrap()
            .first()
            .map_or(0, |p| p.ready);
        if ids.len() == want && ready as usize == want {
            return ids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never had {want} ready: {ids:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A Docker pool's desktops are running containers that outlive their gateway: a second
/// gateway on the same data finds them ready and hands one out as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_pool_outlives_its_gateway_and_hands_out_running_containers() {
    let gw = Gateway::with("docker-pool", |c| {
        c.runtime = orgo_gateway::config::RuntimeKind::Docker;
        c.pool = vec![orgo_gateway::config::PoolSize {
            ram_gb: 2,
            cpu: 2.0,
            count: 1,
        }];
    })
    .await;
    let first = pooled_on(&gw.state.desktops, gw.state.store.as_ref(), 1).await;
    let pooled = first.first().unwrap().clone();
    let container = format!("orgo-{pooled}");
    let started = docker_inspect(&container).unwrap()["State"]["StartedAt"].clone();
    gw.state.desktops.resign().await;

    let again = orgo_gateway::build_state((*gw.state.config).clone())
        .await
        .unwrap();
    assert_eq!(
        pooled_on(&again.desktops, again.store.as_ref(), 1).await,
        first,
        "adopted, not made again"
    );
    let key = orgo_gateway::create_key(again.store.as_ref(), &again.config, "docker-pool", None, None)
        .await
        .unwrap();
    let resp = orgo_gateway::app(again.clone())
        .oneshot(
            Request::post("/api/projects")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::from(json!({"config": {"ram": 2, "cpu": 2}}).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let project: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(project["desktop"]["id"], pooled.as_str(), "{project}");
    assert_eq!(
        docker_inspect(&container).unwrap()["State"]["StartedAt"],
        started,
        "handed out as it ran, not restarted"
    );

    // The pool fills again; then every desktop of the test goes.
    let refilled = pooled_on(&again.desktops, again.store.as_ref(), 1).await;
    assert_ne!(refilled, first);
    again.desktops.resign().await;
    let owner = again.store.account_by_name("docker-pool").await.unwrap().unwrap();
    let pool = again
        .store
        .account_by_name(orgo_gateway::desktops::POOL_ACCOUNT)
        .await
        .unwrap()
        .unwrap();
    for account in [owner.id, pool.id] {
        for computer in again.store.computers_of_account(&account).await.unwrap() {
            again.desktops.delete(&computer).await.unwrap();
        }
    }
    assert!(docker_inspect(&container).is_none());
}

/// Today's Orgo lifecycle on Docker: a live resize reaches the container (`docker inspect`)
/// and is seen inside (its cgroup's memory and CPU limits, `nproc`), a clone carries the home's files
/// (owners kept) into a new container, a desktop's own screen size is the X server's, and a
/// file streams in and out through the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_desktops_resize_live_clone_with_their_files_and_keep_their_screen() {
    let gw = Gateway::with("docker-today", |c| {
        c.runtime = orgo_gateway::config::RuntimeKind::Docker;
        c.default_plan = "pro".into();
    })
    .await;
    let key = gw.key("today").await;
    let (id, c) = computer(&gw, &key, json!({"name": "box", "resolution": "1024x768x24"})).await;
    let screen = gw.bash(&key, &c, "xdpyinfo | grep dimensions", None).await;
    assert!(
        screen["output"].as_str().unwrap().contains("1024x768 pixels"),
        "{screen}"
    );

    gw.ok(
        "PATCH",
        &format!("{c}/resize"),
        &key,
        Some(json!({"mem_gb": 2, "vcpus": 2})),
    )
    .await;
    let host = docker_inspect(&format!("orgo-{id}")).unwrap()["HostConfig"].clone();
    assert_eq!(
        (host["Memory"].as_i64(), host["NanoCpus"].as_i64()),
        (Some(2 << 30), Some(2_000_000_000))
    );
    // Seen inside, through the container's own cgroup (v2's files, or v1's).
    let limits = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                  cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us";
    let inside = gw.bash(&key, &c, limits, None).await;
    let words: Vec<_> = inside["output"].as_str().unwrap().split_whitespace().collect();
    assert_eq!(words[..2], ["2147483648", "200000"], "{inside}");
    // Its CPUs are its vcpus (as many as the machine has): `nproc` inside follows the resize.
    let cpus = std::thread::available_parallelism().unwrap().get().min(2);
    assert_eq!(
        host["CpusetCpus"].as_str().unwrap().split(',').count(),
        cpus,
        "{host}"
    );
    let nproc = gw.bash(&key, &c, "nproc", None).await;
    assert_eq!(
        nproc["output"].as_str().unwrap().trim(),
        cpus.to_string(),
        "{nproc}"
    );

    gw.bash(
        &key,
        &c,
        "mkdir -p keep && echo carried > keep/f && chmod 640 keep/f",
        None,
    )
    .await;
    let clone = gw.ok("POST", &format!("{c}/clone"), &key, None).await;
    assert_eq!(clone["name"], "box (clone)");
    let cc = format!("/api/computers/{}", clone["id"].as_str().unwrap());
    let read = gw
        .bash(&key, &cc, "cat keep/f; stat -c '%U %a' keep/f", None)
        .await;
    assert_eq!(read["output"], "carried\nuser 640\n");
    let shot = gw
        .ok(
            "GET",
            &format!("{cc}/screenshot?response_format=base64"),
            &key,
            None,
        )
        .await;
    assert_eq!(
        (shot["width"].clone(), shot["height"].clone()),
        (json!(1024), json!(768))
    );

    let (status, _, v) = gw
        .send_raw(
            "PUT",
            &format!("{cc}/files/content?path=up.bin"),
            Some(&format!("Bearer {key}")),
            vec![0, 1, 255],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let od = gw.bash(&key, &cc, "od -An -tu1 up.bin", None).await;
    assert_eq!(
        od["output"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "1", "255"]
    );
    for computer in [&cc, &c] {
        gw.ok("DELETE", computer, &key, None).await;
    }
}

/// Docker's checked disk limit: a desktop that writes past its `disk_size_gb` is stopped with
/// the reason in its next answer, starts again with its files, and once under its limit keeps
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_desktop_over_its_disk_limit_is_stopped_with_the_reason() {
    let gw = Gateway::with("docker-disk", |c| {
        c.runtime = orgo_gateway::config::RuntimeKind::Docker;
        // Three checks' grace after a start: 6 s to delete what put it over.
        c.disk_check_seconds = 2;
    })
    .await;
    let key = gw.key("disk").await;
    let (_, c) = computer(&gw, &key, json!({"name": "full", "disk_size_gb": 1})).await;
    let wrote = gw
        .bash(&key, &c, "head -c 1200M /dev/zero > big && echo written", None)
        .await;
    assert_eq!(wrote["output"], "written\n", "{wrote}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let refused = loop {
        let (status, _, v) = gw
            .send_raw(
                "POST",
                &format!("{c}/bash"),
                Some(&format!("Bearer {key}")),
                json!({"command": "true"}).to_string().into_bytes(),
            )
            .await;
        if status == StatusCode::CONFLICT {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running over its limit: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let said = refused["error"].as_str().unwrap();
    assert!(said.contains("over its disk limit of 1 GB"), "{refused}");
    let got = gw.ok("GET", &c, &key, None).await;
    assert_eq!(got["status"], "error", "{got}");

    gw.ok("POST", &format!("{c}/start"), &key, None).await;
    let freed = gw
        .bash(&key, &c, "ls -s --block-size=M big && rm big && echo freed", None)
        .await;
    assert!(freed["output"].as_str().unwrap().ends_with("freed\n"), "{freed}");
    // Several checks later it still runs.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let alive = gw.bash(&key, &c, "echo alive", None).await;
    assert_eq!(alive["output"], "alive\n", "{alive}");
    gw.ok("DELETE", &c, &key, None).await;
}
