//! gRPC through the gateway with real tonic clients over HTTP/2 on the REST port: every
//! `orgo.agent.v1.Agent` call reaching the desktop through the action path, the lifecycle
//! service, refusals with REST's sentences and gRPC's codes (nothing reaching the desktop),
//! desktop tokens, streams ending with their desktop, health; over the fake runtime for the
//! logic, and on a real local desktop end to end (the Python `grpcio` client is
//! `grpc_python.rs`'s).

mod common;

use std::time::Duration;

use common::fake::Call;
use common::grpc::{agent, call, channel, computers, refused};
use common::inproc::Gateway;
use futures::StreamExt;
use orgo_proto::lifecycle as lc;
use orgo_proto::v1 as pb;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

/// A workspace of `key`'s account, made over REST: its id.
async fn workspace(gw: &Gateway, key: &str) -> String {
    let p = gw
        .ok("POST", "/api/projects", key, Some(json!({"name": "grpc"})))
        .await;
    p["id"].as_str().unwrap().to_string()
}

/// A new computer over gRPC.
async fn create(address: &str, key: &str, workspace: &str) -> lc::Computer {
    let ch = channel(address).await;
    let asked = lc::CreateRequest {
        workspace_id: workspace.into(),
        ram_gb: 1,
        ..Default::default()
    };
    computers(&ch)
        .create(call(asked, key, None))
        .await
        .unwrap()
        .into_inner()
}

/// A request naming a computer (its id or name).
fn named(computer: impl Into<String>) -> lc::ComputerRef {
    lc::ComputerRef {
        computer: computer.into(),
    }
}

/// The status a stream of frames ends with (within 30 s).
async fn stream_end(frames: &mut tonic::Streaming<pb::Frame>) -> tonic::Status {
    tokio::time::timeout(Duration::from_secs(30), frames.message())
        .await
        .expect("the stream ended with its desktop")
        .expect_err("an error status")
}

fn at(x: i32, y: i32) -> Option<pb::Point> {
    Some(pb::Point { x, y })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_call_reaches_the_desktop_through_the_action_path() {
    let gw = Gateway::fake("grpc-calls").await;
    let address = gw.serve().await;
    let key = gw.key("calls").await;
    let c = create(&address, &key, &workspace(&gw, &key).await).await;
    assert_eq!(c.status, "running");
    let mut a = agent(&channel(&address).await);
    let name = Some(c.name.as_str());
    let info = a
        .screen_info(call(pb::ScreenInfoRequest {}, &key, name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.width, info.height), (1280, 800));
    a.health(call(pb::HealthRequest {}, &key, name)).await.unwrap();
    let shot = a
        .screenshot(call(
            pb::ScreenshotRequest {
                format: pb::ImageFormat::Png.into(),
                region: Some(pb::Region {
                    x: 10,
                    y: 20,
                    width: 0,
                    height: 30,
                }),
                ..Default::default()
            },
            &key,
            Some(&c.id),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shot.format, i32::from(pb::ImageFormat::Png));
    assert!(!shot.image.is_empty());
    let clicked = a
        .click(call(
            pb::ClickRequest {
                at: at(5, 6),
                count: 2,
                button: pb::MouseButton::Right.into(),
            },
            &key,
            name,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clicked.position, at(5, 6));
    let path = vec![
        pb::Point { x: 1, y: 1 },
        pb::Point { x: 50, y: 9 },
        pb::Point { x: 99, y: 99 },
    ];
    let drag = pb::DragRequest {
        path: path.clone(),
        button: 0,
        duration_millis: 20,
    };
    a.drag(call(drag, &key, name)).await.unwrap();
    a.scroll(call(pb::ScrollRequest::default(), &key, name))
        .await
        .unwrap();
    let typed = pb::TypeTextRequest {
        text: "héllo".into(),
        delay_millis: 3,
    };
    a.type_text(call(typed, &key, name)).await.unwrap();
    let keys = pb::KeyRequest {
        combo: "ctrl+c".into(),
        repeat: 3,
    };
    a.press_key(call(keys, &key, name)).await.unwrap();
    let run = pb::ExecRequest {
        interpreter: pb::Interpreter::Python.into(),
        source: "print(1)".into(),
        cwd: "/tmp".into(),
        env: [("GREETING".to_string(), "hi".to_string())].into(),
        ..Default::default()
    };
    let ran = a.exec(call(run, &key, name)).await.unwrap().into_inner();
    assert_eq!(ran.exit_code, Some(0));
    let calls = gw.runtime().calls(&c.id);
    assert!(calls.contains(&Call::Click(pb::ClickRequest {
        at: at(5, 6),
        count: 2,
        button: pb::MouseButton::Right.into(),
    })));
    assert!(calls.contains(&Call::Drag(pb::DragRequest {
        path,
        button: pb::MouseButton::Left.into(),
        duration_millis: 20,
    })));
    assert!(calls.contains(&Call::Scroll(pb::ScrollRequest {
        at: None,
        direction: pb::ScrollDirection::Down.into(),
        amount: 3,
    })));
    assert!(calls.contains(&Call::TypeText(pb::TypeTextRequest {
        text: "héllo".into(),
        delay_millis: 3,
    })));
    assert!(calls.contains(&Call::PressKey(pb::KeyRequest {
        combo: "ctrl+c".into(),
        repeat: 3,
    })));
    let exec = calls
        .iter()
        .find_map(|c| match c {
            Call::Exec(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!((exec.cwd.as_str(), exec.timeout_millis), ("/tmp", 10_000));
    assert_eq!(exec.env.get("GREETING").map(String::as_str), Some("hi"));
    // The lifecycle mirrors REST.
    let mut lifecycle = computers(&channel(&address).await);
    let listed = lifecycle
        .list(call(lc::ListRequest::default(), &key, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.computers.len(), 1);
    let stopped = lifecycle
        .stop(call(named(&c.id), &key, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.status, "stopped");
    let rest = gw
        .ok("GET", &format!("/api/computers/{}", c.id), &key, None)
        .await;
    assert_eq!(rest["status"], "stopped");
    let not_running = refused(
        a.cursor_position(call(pb::CursorPositionRequest {}, &key, name))
            .await,
    );
    assert_eq!(not_running.code(), Code::FailedPrecondition, "{not_running:?}");
    assert!(not_running.message().contains("is stopped"), "{not_running:?}");
    let started = lifecycle
        .start(call(named(&c.name), &key, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.status, "running");
    lifecycle.delete(call(named(&c.id), &key, None)).await.unwrap();
    let gone = refused(lifecycle.get(call(named(&c.id), &key, None)).await);
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_rest_sentences_and_reach_no_desktop() {
    let gw = Gateway::fake_with("grpc-refusals", |c| {
        c.plans.get_mut("free").unwrap().max_desktops = 1;
    })
    .await;
    let address = gw.serve().await;
    let (alice, mallory) = (gw.key("alice").await, gw.key("mallory").await);
    let ws = workspace(&gw, &alice).await;
    let c = create(&address, &alice, &ws).await;
    gw.runtime().clear_calls();
    let ch = channel(&address).await;
    let mut a = agent(&ch);
    let click = |x| pb::ClickRequest {
        at: at(x, 10),
        ..Default::default()
    };

    let bad_key = refused(
        a.click(call(click(1), "orgo_000000000000_nope", Some(&c.id)))
            .await,
    );
    assert_eq!(
        (bad_key.code(), bad_key.message()),
        (Code::Unauthenticated, "invalid or revoked API key")
    );
    let mut anonymous = tonic::Request::new(click(1));
    anonymous
        .metadata_mut()
        .insert("x-orgo-computer", c.id.parse().unwrap());
    assert_eq!(refused(a.click(anonymous).await).code(), Code::Unauthenticated);
    let unnamed = refused(a.click(call(click(1), &alice, None)).await);
    assert_eq!(unnamed.code(), Code::InvalidArgument);
    assert!(unnamed.message().contains("x-orgo-computer"), "{unnamed:?}");

    // Another account's desktop reads exactly like a missing one.
    let foreign = refused(a.click(call(click(1), &mallory, Some(&c.id))).await);
    let missing = refused(a.click(call(click(1), &mallory, Some("no-such-desktop"))).await);
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(foreign.message(), format!("computer {:?} not found", c.id));
    assert_eq!(missing.message(), "computer \"no-such-desktop\" not found");
    let run = pb::ExecRequest {
        source: "rm -rf ~".into(),
        ..Default::default()
    };
    assert_eq!(
        refused(a.exec(call(run, &mallory, Some(&c.name))).await).code(),
        Code::NotFound
    );

    let off_screen = refused(a.click(call(click(5000), &alice, Some(&c.id))).await);
    assert_eq!(off_screen.code(), Code::InvalidArgument);
    assert_eq!(off_screen.message(), "at.x=5000 is outside the screen (0–1279)");
    let drag = pb::DragRequest {
        path: vec![pb::Point { x: 1, y: 1 }],
        ..Default::default()
    };
    let short = refused(a.drag(call(drag, &alice, Some(&c.id))).await);
    assert!(short.message().starts_with("path must have 2 to"), "{short:?}");
    let typed = pb::TypeTextRequest {
        text: "a\u{7}".into(),
        delay_millis: 0,
    };
    let bell = refused(a.type_text(call(typed, &alice, Some(&c.id))).await);
    assert!(bell.message().contains("U+0007 at character 2"), "{bell:?}");
    let env = pb::ExecRequest {
        source: "env".into(),
        env: [("1BAD".to_string(), "x".to_string())].into(),
        ..Default::default()
    };
    let named = refused(a.exec(call(env, &alice, Some(&c.id))).await);
    assert!(named.message().starts_with("env \"1BAD\""), "{named:?}");
    assert_eq!(
        gw.runtime().calls(&c.id),
        vec![],
        "refused calls reached the desktop"
    );

    // Plan limits are PERMISSION_DENIED with REST's sentence.
    let over = refused(
        computers(&ch)
            .create(call(
                lc::CreateRequest {
                    workspace_id: ws.clone(),
                    ..Default::default()
                },
                &alice,
                None,
            ))
            .await,
    );
    assert_eq!(over.code(), Code::PermissionDenied, "{over:?}");
    let (status, rest) = gw
        .send(
            "POST",
            "/api/computers",
            Some(&alice),
            Some(json!({"workspace_id": ws})),
        )
        .await;
    assert_eq!(status.as_u16(), 403);
    assert_eq!(rest["error"], over.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_resource_exhausted_with_retry_info() {
    let gw = Gateway::fake_with("grpc-rate", |c| {
        c.plans.get_mut("free").unwrap().requests_per_second = 1;
    })
    .await;
    let address = gw.serve().await;
    let key = gw.key("rate").await;
    let mut a = agent(&channel(&address).await);
    let mut limited = None;
    for _ in 0..20 {
        let result = a
            .cursor_position(call(pb::CursorPositionRequest {}, &key, Some("any")))
            .await;
        if let Err(s) = result
            && s.code() == Code::ResourceExhausted
        {
            limited = Some(s);
            break;
        }
    }
    let limited = limited.expect("the key was rate limited");
    assert!(
        limited.message().starts_with("too many requests with this key"),
        "{limited:?}"
    );
    let retry = limited.get_details_retry_info().expect("retry info");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d > Duration::ZERO && d <= Duration::from_secs(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_token_opens_its_desktop_and_nothing_else() {
    let gw = Gateway::fake("grpc-token").await;
    let address = gw.serve().await;
    let key = gw.key("owner").await;
    let ws = workspace(&gw, &key).await;
    let (mine, other) = (
        create(&address, &key, &ws).await,
        create(&address, &key, &ws).await,
    );
    let ch = channel(&address).await;
    let token = computers(&ch)
        .create_desktop_token(call(
            lc::DesktopTokenRequest {
                computer: mine.name.clone(),
                ttl_seconds: 60,
            },
            &key,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (token.mode.as_str(), token.computer.as_str()),
        ("desktop", mine.id.as_str())
    );
    assert!(!token.token.contains(&key) && !token.token.starts_with("orgo_"));
    let mut a = agent(&ch);
    // No x-orgo-computer needed; naming its own desktop works too.
    a.cursor_position(call(pb::CursorPositionRequest {}, &token.token, None))
        .await
        .unwrap();
    a.cursor_position(call(pb::CursorPositionRequest {}, &token.token, Some(&mine.name)))
        .await
        .unwrap();
    let elsewhere = refused(
        a.cursor_position(call(pb::CursorPositionRequest {}, &token.token, Some(&other.id)))
            .await,
    );
    assert_eq!(elsewhere.code(), Code::PermissionDenied);
    assert!(gw.runtime().calls(&other.id).is_empty());
    // A name the token's computer does not have reads the same, whether it exists or not.
    let nowhere = refused(
        a.cursor_position(call(
            pb::CursorPositionRequest {},
            &token.token,
            Some("no-such-desktop"),
        ))
        .await,
    );
    assert_eq!(
        (nowhere.code(), nowhere.message()),
        (elsewhere.code(), elsewhere.message())
    );
    let lifecycle = refused(
        computers(&ch)
            .list(call(lc::ListRequest::default(), &token.token, None))
            .await,
    );
    assert_eq!(lifecycle.code(), Code::Unauthenticated);
    let tampered = token.token.replacen(&mine.id, &other.id, 1);
    let forged = refused(
        a.cursor_position(call(pb::CursorPositionRequest {}, &tampered, None))
            .await,
    );
    assert_eq!(
        (forged.code(), forged.message()),
        (Code::Unauthenticated, "invalid token")
    );
    // A viewer token opens the live view, not gRPC; a desktop token not the live view.
    let viewer = gw
        .ok(
            "POST",
            &format!("/api/computers/{}/viewer-token", mine.id),
            &key,
            Some(json!({})),
        )
        .await;
    let as_viewer = refused(
        a.cursor_position(call(
            pb::CursorPositionRequest {},
            viewer["token"].as_str().unwrap(),
            None,
        ))
        .await,
    );
    assert_eq!(as_viewer.code(), Code::Unauthenticated);
    let rest = gw
        .ok(
            "POST",
            &format!("/api/computers/{}/desktop-token", mine.id),
            &key,
            Some(json!({"ttl_seconds": 30})),
        )
        .await;
    let session = format!(
        "/desktops/{}/session?token={}",
        mine.name,
        rest["token"].as_str().unwrap()
    );
    let (status, _) = gw.send("GET", &session, None, None).await;
    assert_eq!(status.as_u16(), 401);
    a.cursor_position(call(
        pb::CursorPositionRequest {},
        rest["token"].as_str().unwrap(),
        None,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_and_end_with_their_desktop() {
    let gw = Gateway::fake("grpc-streams").await;
    let address = gw.serve().await;
    let key = gw.key("streams").await;
    let c = create(&address, &key, &workspace(&gw, &key).await).await;
    gw.runtime().answer_exec(pb::ExecResponse {
        stdout: b"out".to_vec(),
        stderr: b"err".to_vec(),
        exit_code: Some(3),
        ..Default::default()
    });
    let ch = channel(&address).await;
    let mut a = agent(&ch);
    let events: Vec<_> = a
        .exec_stream(call(pb::ExecRequest::default(), &key, Some(&c.id)))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    let events: Vec<_> = events.into_iter().map(|e| e.unwrap().event.unwrap()).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(&events[0], pb::exec_event::Event::Stdout(b) if b == b"out"));
    assert!(matches!(&events[2], pb::exec_event::Event::Exit(e) if e.exit_code == Some(3)));

    let mut frames = a
        .watch_screen(call(pb::WatchScreenRequest::default(), &key, Some(&c.id)))
        .await
        .unwrap()
        .into_inner();
    let first = frames.message().await.unwrap().unwrap();
    assert_eq!((first.width, first.height), (1280, 800));
    let bad = refused(
        a.watch_screen(call(
            pb::WatchScreenRequest {
                max_fps: 61,
                ..Default::default()
            },
            &key,
            Some(&c.id),
        ))
        .await,
    );
    assert!(bad.message().starts_with("max_fps must be 0–60"), "{bad:?}");
    // Stopped mid-stream: the stream ends with the status a call would get.
    computers(&ch).stop(call(named(&c.id), &key, None)).await.unwrap();
    let ended = stream_end(&mut frames).await;
    assert_eq!(ended.code(), Code::FailedPrecondition, "{ended:?}");
    assert!(ended.message().contains("while this call ran"), "{ended:?}");

    // Deleted mid-stream: told so, and the desktop is not recorded as dead on its way out.
    let mut lifecycle = computers(&ch);
    lifecycle.start(call(named(&c.id), &key, None)).await.unwrap();
    let mut frames = a
        .watch_screen(call(pb::WatchScreenRequest::default(), &key, Some(&c.id)))
        .await
        .unwrap()
        .into_inner();
    frames.message().await.unwrap().unwrap();
    lifecycle.delete(call(named(&c.id), &key, None)).await.unwrap();
    let ended = stream_end(&mut frames).await;
    assert!(
        matches!(ended.code(), Code::FailedPrecondition | Code::NotFound),
        "{ended:?}"
    );
    assert!(ended.message().contains("deleted"), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_for_the_server_and_each_service() {
    let gw = Gateway::fake("grpc-health").await;
    let address = gw.serve().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&address).await);
    for service in ["", "orgo.agent.v1.Agent", "orgo.v1.Computers"] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status,
            i32::from(tonic_health::pb::health_check_response::ServingStatus::Serving),
            "{service:?}"
        );
    }
    // REST is still served on the same port.
    let (status, _) = gw.send("GET", "/healthz", None, None).await;
    assert!(status.is_success());
}

/// A real desktop end to end: a decoded screenshot of the screen's size, a click, typing, a
/// streamed run, a frame of the screen, and a cancelled stream's run ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_desktop_is_driven_over_grpc() {
    let gw = Gateway::new("grpc-real").await;
    let address = gw.serve().await;
    let key = gw.key("real").await;
    let c = create(&address, &key, &workspace(&gw, &key).await).await;
    let ch = channel(&address).await;
    let mut a = agent(&ch);
    let id = Some(c.id.as_str());
    let info = a
        .screen_info(call(pb::ScreenInfoRequest {}, &key, id))
        .await
        .unwrap()
        .into_inner();
    let shot = a
        .screenshot(call(
            pb::ScreenshotRequest {
                format: pb::ImageFormat::Png.into(),
                ..Default::default()
            },
            &key,
            id,
        ))
        .await
        .unwrap()
        .into_inner();
    let decoded = png::Decoder::new(std::io::Cursor::new(shot.image))
        .read_info()
        .unwrap();
    assert_eq!(
        (decoded.info().width, decoded.info().height),
        (info.width, info.height)
    );
    let moved = a
        .click(call(
            pb::ClickRequest {
                at: at(100, 200),
                ..Default::default()
            },
            &key,
            id,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.position, at(100, 200));
    let typed = pb::TypeTextRequest {
        text: "grpc ωκ".into(),
        delay_millis: 0,
    };
    let sent = a.type_text(call(typed, &key, id)).await.unwrap().into_inner();
    assert!(sent.sent >= 7, "{sent:?}");

    let run = |source: &str| pb::ExecRequest {
        source: source.into(),
        ..Default::default()
    };
    let mut events = a
        .exec_stream(call(run("echo one; sleep 0.2; echo two >&2; exit 3"), &key, id))
        .await
        .unwrap()
        .into_inner();
    let (mut stdout, mut stderr, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(event) = events.message().await.unwrap() {
        match event.event.unwrap() {
            pb::exec_event::Event::Stdout(b) => stdout.extend(b),
            pb::exec_event::Event::Stderr(b) => stderr.extend(b),
            pb::exec_event::Event::Exit(e) => exit = Some(e),
        }
    }
    assert_eq!(
        (stdout.as_slice(), stderr.as_slice()),
        (&b"one\n"[..], &b"two\n"[..])
    );
    assert_eq!(exit.unwrap().exit_code, Some(3));
    // A run's env may set PATH: the interpreter is found on the agent's own.
    let path = pb::ExecRequest {
        env: [("PATH".to_string(), "/nowhere".to_string())].into(),
        ..run("echo $PATH")
    };
    let ran = a.exec(call(path, &key, id)).await.unwrap().into_inner();
    assert_eq!(
        (ran.exit_code, ran.stdout.as_slice()),
        (Some(0), &b"/nowhere\n"[..])
    );

    let mut frames = a
        .watch_screen(call(pb::WatchScreenRequest::default(), &key, id))
        .await
        .unwrap()
        .into_inner();
    let frame = frames.message().await.unwrap().unwrap();
    assert_eq!((frame.width, frame.height), (info.width, info.height));
    assert_eq!(&frame.jpeg[..2], &[0xff, 0xd8], "a JPEG");
    drop(frames);

    // A client that goes away ends the stream, and the agent ends the run (long before its
    // 300 s timeout), as closing a terminal ends what runs in it.
    let long = pb::ExecRequest {
        timeout_millis: 300_000,
        ..run("echo started; exec sleep 77")
    };
    let mut cancelled = a.exec_stream(call(long, &key, id)).await.unwrap().into_inner();
    let started = cancelled.message().await.unwrap().unwrap();
    assert!(matches!(started.event, Some(pb::exec_event::Event::Stdout(_))));
    drop(cancelled);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // The bracket keeps pgrep from finding the shell that runs it.
        let left = a
            .exec(call(run("pgrep -fc 'slee[p] 77' || true"), &key, id))
            .await
            .unwrap()
            .into_inner();
        if String::from_utf8_lossy(&left.stdout).trim() == "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled run outlived its timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    computers(&ch)
        .delete(call(named(&c.id), &key, None))
        .await
        .unwrap();
}
