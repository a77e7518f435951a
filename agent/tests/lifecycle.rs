//! The agent as a long-lived owner: Xvfb brought back after it dies, and TCP serving that
//! demands the bearer token.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, children_named};
use orgo_proto::v1 as pb;
use orgo_proto::v1::agent_client::AgentClient;

#[tokio::test]
async fn a_dead_xvfb_is_restarted_and_screenshots_resume() {
    let mut agent = Agent::start("openbox").await;
    agent
        .client
        .screenshot(pb::ScreenshotRequest::default())
        .await
        .unwrap();
    let xvfb = children_named(agent.pid(), "Xvfb");
    assert_eq!(xvfb.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(xvfb[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let gap = agent.client.screenshot(pb::ScreenshotRequest::default()).await;
    if let Err(status) = &gap {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("display"), "{}", status.message());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match agent.client.screenshot(pb::ScreenshotRequest::default()).await {
            Ok(shot) => {
                assert_eq!(shot.into_inner().width, 1280);
                break;
            }
            Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
        }
        assert!(Instant::now() < deadline, "screenshots never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = children_named(agent.pid(), "Xvfb");
    assert_eq!(new.len(), 1);
    assert_ne!(new, xvfb);
    let r = agent.bash("echo ok", 0).await;
    assert_eq!(r.stdout, b"ok\n");
}

#[tokio::test]
async fn tcp_needs_the_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("orgo-agent-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "tok-123\n").unwrap();

    let listen = format!("tcp://127.0.0.1:{port}");
    let agent_on_tcp = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orgo-agent"));
        cmd.args(["--spawn-xvfb", "640x480", "--wm", "none", "--listen", &listen]);
        cmd
    };
    let refused = agent_on_tcp().env_remove("ORGO_AGENT_TOKEN").output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs a token"));

    let mut child = agent_on_tcp()
        .arg("--token-file")
        .arg(&token_file)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(c) = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
        {
            break c;
        }
        assert!(Instant::now() < deadline, "agent did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut anonymous = AgentClient::new(channel.clone());
    let err = anonymous.health(pb::HealthRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let mut wrong = AgentClient::with_interceptor(channel.clone(), |mut r: tonic::Request<()>| {
        r.metadata_mut()
            .insert("authorization", "Bearer tok-12".parse().unwrap());
        Ok(r)
    });
    assert_eq!(
        wrong.health(pb::HealthRequest {}).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    // The shared connector, as the gateway reaches agents over TCP.
    let mut right = orgo_proto::connect::connect(&orgo_proto::connect::Target::Tcp {
        addr: format!("127.0.0.1:{port}"),
        token: "tok-123".into(),
    })
    .await
    .unwrap();
    let info = right
        .screen_info(pb::ScreenInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.width, info.height), (640, 480));

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
