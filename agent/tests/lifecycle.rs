//! The agent as a long-lived owner: Xvfb brought back after it dies, every display it serves
//! set never to blank and to give xterm a TrueType face, and TCP serving that demands the bearer
//! token (of the `Files` service too).

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Xvfb, children_named};
use orgo_proto::v1 as pb;
use orgo_proto::v1::agent_client::AgentClient;
use orgo_proto::v1::files_client::FilesClient;

/// What a display says, as `xset q` and `xrdb -query` would: the screen saver's timeout,
/// whether DPMS is on (it is not where the server has no DPMS), and the resource database.
fn display_defaults(display: &str) -> (u16, bool, String) {
    use x11rb::connection::{Connection as _, RequestConnection as _};
    use x11rb::protocol::dpms::{self, ConnectionExt as _};
    use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _};
    let (conn, screen) = x11rb::connect(Some(display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let timeout = conn.get_screen_saver().unwrap().reply().unwrap().timeout;
    let dpms = conn
        .extension_information(dpms::X11_EXTENSION_NAME)
        .unwrap()
        .is_some()
        && conn.dpms_info().unwrap().reply().unwrap().state;
    let resources = conn
        .get_property(
            false,
            root,
            AtomEnum::RESOURCE_MANAGER,
            AtomEnum::STRING,
            0,
            u32::MAX,
        )
        .unwrap()
        .reply()
        .unwrap()
        .value;
    (timeout, dpms, String::from_utf8(resources).unwrap())
}

const OURS: &str = "*VT100.faceName: Monospace\n*VT100.faceSize: 11\n";

#[tokio::test]
async fn a_dead_xvfb_is_restarted_and_screenshots_resume() {
    let mut agent = Agent::start("openbox").await;
    assert_eq!(display_defaults(&agent.display), (0, false, OURS.into()));
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
    assert_eq!(
        display_defaults(&agent.display),
        (0, false, OURS.into()),
        "the new X server got the desktop's defaults too"
    );
    let r = agent.bash("echo ok", 0).await;
    assert_eq!(r.stdout, b"ok\n");
}

/// Attached to someone else's X server (which blanks after 600 s by default), the agent turns
/// blanking off and adds its resources without replacing the display's own.
#[tokio::test]
async fn an_attached_display_stops_blanking_and_keeps_its_own_resources() {
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::{AtomEnum, PropMode};
    use x11rb::wrapper::ConnectionExt as _;
    let xvfb = Xvfb::start();
    let (conn, screen) = x11rb::connect(Some(&xvfb.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    conn.change_property8(
        PropMode::REPLACE,
        root,
        AtomEnum::RESOURCE_MANAGER,
        AtomEnum::STRING,
        b"*VT100.faceSize:\t20\n",
    )
    .unwrap();
    conn.sync().unwrap();
    assert_eq!(
        display_defaults(&xvfb.display),
        (600, false, "*VT100.faceSize:\t20\n".into())
    );

    let _agent = Agent::attach(&xvfb.display).await;
    assert_eq!(
        display_defaults(&xvfb.display),
        (
            0,
            false,
            "*VT100.faceSize:\t20\n*VT100.faceName: Monospace\n".into()
        )
    );
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
        cmd.arg("--home").arg(&dir);
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
    let stat_home = || pb::StatRequest { path: "".into() };
    let mut anonymous_files = FilesClient::new(channel.clone());
    let err = anonymous_files.stat(stat_home()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

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
    let mut files = orgo_proto::connect::connect_files(&orgo_proto::connect::Target::Tcp {
        addr: format!("127.0.0.1:{port}"),
        token: "tok-123".into(),
    })
    .await
    .unwrap();
    let home = files.stat(stat_home()).await.unwrap().into_inner();
    assert_eq!(home.kind(), pb::entry::Kind::Directory);

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
