//! bash and Python through the agent: output, exit codes, environment, hard timeouts that leave
//! no process of the group behind, capped floods, streaming, and orphans reaped.

mod common;

use std::time::{Duration, Instant};

use common::Agent;
use orgo_proto::v1 as pb;

/// Processes whose process group is `pgid`, zombies included.
fn group_alive(pgid: i32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter(|stat| {
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            rest.split_whitespace().nth(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
        })
        .collect()
}

fn stdout(r: &pb::ExecResponse) -> String {
    String::from_utf8_lossy(&r.stdout).into_owned()
}

#[tokio::test]
async fn bash_and_python_run_with_the_desktop_environment() {
    let mut agent = Agent::start("none").await;
    let r = agent.bash("echo hello; echo oops >&2; exit 3", 0).await;
    assert_eq!(
        (stdout(&r).as_str(), r.stderr.as_slice(), r.exit_code),
        ("hello\n", &b"oops\n"[..], Some(3))
    );
    assert!(!r.timed_out && !r.truncated);

    let r = agent.bash("echo $DISPLAY; pwd; cd /tmp && pwd", 0).await;
    let display = agent.display.clone();
    let home = agent.dir.display().to_string();
    assert_eq!(stdout(&r), format!("{display}\n{home}\n/tmp\n"));

    let r = agent
        .python("print('Hello from Python')\nfor i in range(5):\n    print(i)", 0)
        .await;
    assert_eq!(stdout(&r), "Hello from Python\n0\n1\n2\n3\n4\n");
    assert_eq!(r.exit_code, Some(0));

    let r = agent
        .python(
            "import os; print(os.environ['DISPLAY'], os.environ['GREETING'])",
            0,
        )
        .await;
    assert_eq!(r.exit_code, Some(1), "no GREETING yet");
    let r = agent
        .client
        .exec(pb::ExecRequest {
            interpreter: pb::Interpreter::Python.into(),
            source: "import os; print(os.environ['GREETING'], os.getcwd())".into(),
            cwd: "/tmp".into(),
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stdout(&r), "hi /tmp\n");

    let r = agent.python("raise SystemExit('bad thing')", 0).await;
    assert_eq!(r.exit_code, Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("bad thing"));

    let bad = agent
        .client
        .exec(pb::ExecRequest {
            source: "true".into(),
            cwd: "/nonexistent".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("/nonexistent"));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let mut agent = Agent::start("none").await;
    // Children in the background, one that ignores SIGTERM, and a grandchild.
    let script = "echo $$; sleep 1000 & (trap '' TERM; sleep 1000; sleep 1000) & bash -c 'sleep 1000' & wait";
    let r = agent.bash(script, 700).await;
    assert!(r.timed_out, "{r:?}");
    assert_eq!(r.exit_code, None);
    assert!(r.signal.is_some());
    let pgid: i32 = stdout(&r).trim().parse().unwrap();
    let survivors = group_alive(pgid);
    assert!(survivors.is_empty(), "left alive: {survivors:?}");

    let r = agent.python("while True: pass", 1000).await;
    assert!(r.timed_out);
    let r = agent.python("print('still here')", 0).await;
    assert_eq!(stdout(&r), "still here\n", "the next call works");

    let r = agent
        .python("import time\nprint('before', flush=True)\ntime.sleep(100)", 800)
        .await;
    assert!(r.timed_out);
    assert_eq!(stdout(&r), "before\n", "output up to the timeout is kept");
}

#[tokio::test]
async fn floods_are_capped_while_read() {
    let mut agent = Agent::start("none").await;
    let r = agent
        .bash("head -c 200000000 /dev/zero; echo done >&2", 60_000)
        .await;
    assert_eq!(r.stdout.len(), 1 << 20, "default cap is 1 MiB");
    assert!(r.truncated);
    assert_eq!(r.stderr, b"done\n", "the other stream is still read");
    assert_eq!(r.exit_code, Some(0));

    let r = agent
        .client
        .exec(pb::ExecRequest {
            source: "seq 1 100000".into(),
            max_output_bytes: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stdout(&r), "1\n2\n3\n4\n5\n", "the head is kept");
    assert!(r.truncated);

    let r = agent
        .python(
            "import sys\nfor _ in range(10**6): sys.stderr.write('x' * 100)",
            60_000,
        )
        .await;
    assert_eq!(r.stderr.len(), 1 << 20);
    assert!(r.truncated);
}

#[tokio::test]
async fn output_streams_as_it_comes() {
    let mut agent = Agent::start("none").await;
    let mut stream = agent
        .client
        .exec_stream(pb::ExecRequest {
            source: "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo err >&2; exit 7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = String::new();
    let mut chunks = 0;
    let mut exit = None;
    while let Some(event) = stream.message().await.unwrap() {
        match event.event.unwrap() {
            pb::exec_event::Event::Stdout(b) => {
                chunks += 1;
                out.push_str(&String::from_utf8_lossy(&b));
            }
            pb::exec_event::Event::Stderr(b) => assert_eq!(b, b"err\n"),
            pb::exec_event::Event::Exit(e) => exit = Some(e),
        }
    }
    assert_eq!(out, "line1\nline2\nline3\n");
    assert_eq!(chunks, 3, "each line arrives on its own");
    let exit = exit.expect("a final exit event");
    assert_eq!(exit.exit_code, Some(7));
    assert!(exit.stdout.is_empty());
}

#[tokio::test]
async fn background_processes_do_not_hold_the_call_and_orphans_are_reaped() {
    let mut agent = Agent::start("none").await;
    let r = agent.bash("sleep 30 & echo $!", 0).await;
    let pid: i32 = stdout(&r).trim().parse().unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "answered while the background job runs"
    );
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);

    // A double fork: the grandchild is orphaned and re-parented to the agent (a subreaper).
    let r = agent.bash("(sleep 0.2 & echo $!)", 0).await;
    let orphan: i32 = stdout(&r).trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{orphan}")).exists() {
        assert!(Instant::now() < deadline, "orphan {orphan} never reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_stops_the_agent_and_its_desktop() {
    let agent = Agent::start("openbox").await;
    let display = agent.display.clone();
    let socket = agent.socket.clone();
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket removed");
    let n = display.trim_start_matches(':');
    assert!(
        !std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists(),
        "Xvfb stopped"
    );
}
