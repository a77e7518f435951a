//! bash and Python through the agent: output, exit codes, environment, hard timeouts that leave
//! no process the command started behind (and no other process harmed), capped floods cut on
//! character boundaries, streaming, background processes that outlive their call unharmed, and
//! orphans reaped.

mod common;

use std::time::{Duration, Instant};

use common::Agent;
use orgo_proto::v1 as pb;

/// Live processes whose command line holds `marker` (a zombie's command line is empty).
fn alive_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(marker).then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

/// Waits, with a generous bound, until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `file` holds a whole line, and answers it.
async fn line_in(file: &std::path::Path) -> String {
    until(&format!("{} written", file.display()), || {
        std::fs::read_to_string(file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    std::fs::read_to_string(file).unwrap()
}

/// The process is there and not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat[stat.rfind(')').unwrap() + 2..].chars().next(),
            Some('Z' | 'X')
        )
    })
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
async fn a_timeout_kills_everything_the_command_started() {
    let mut agent = Agent::start("none").await;
    // The field case: a setsid child outlived the timeout.
    assert!(alive_with("sleep 313").is_empty(), "a sleep 313 from elsewhere");
    let r = agent.bash("setsid sleep 313 & sleep 314", 2000).await;
    assert!(r.timed_out, "{r:?}");
    assert_eq!(alive_with("sleep 313"), Vec::<String>::new());

    // Every way out of a process group or session: setsid, a double fork, nohup, a new
    // process group, a SIGTERM-proof subshell, and a grandchild.
    let script = "setsid sleep 300.11 & ( (sleep 300.12 &) & ); nohup sleep 300.13 >/dev/null 2>&1 & \
        python3 -c 'import os, time; os.setpgid(0, 0); open(\"regrouped\", \"w\"); time.sleep(300)' \
        regroup-300.14 & (trap '' TERM; sleep 300.15; sleep 300.15) & bash -c 'sleep 300.16' & \
        until [ -e regrouped ]; do sleep 0.02; done; echo ready; wait";
    let r = agent.bash(script, 3000).await;
    assert!(r.timed_out, "{r:?}");
    assert_eq!(stdout(&r), "ready\n");
    assert_eq!(r.exit_code, None);
    assert_eq!(r.signal, Some(9));
    assert_eq!(alive_with("300.1"), Vec::<String>::new());

    // Python as the interpreter: it does not reap what it adopts, which must not matter.
    let program = "import os, subprocess, time\n\
        subprocess.Popen(['setsid', 'sleep', '300.21'])\n\
        if os.fork() == 0:\n    if os.fork() == 0:\n        os.execvp('sleep', ['sleep', '300.22'])\n    os._exit(0)\n\
        time.sleep(100)";
    let r = agent.python(program, 1500).await;
    assert!(r.timed_out, "{r:?}");
    assert_eq!(alive_with("300.2"), Vec::<String>::new());

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
async fn a_timeout_leaves_the_programs_of_earlier_calls_alone() {
    let mut agent = Agent::start("none").await;
    let r = agent.bash("sleep 600.31 & echo $!", 0).await;
    let earlier: i32 = stdout(&r).trim().parse().unwrap();
    let r = agent.bash("sleep 600.32 & sleep 600.33", 500).await;
    assert!(r.timed_out);
    assert!(running(earlier), "the earlier call's program was touched");
    assert_eq!(alive_with("600.32"), Vec::<String>::new());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(earlier),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test]
async fn python_reaps_nothing_it_adopts_and_the_agent_does() {
    let mut agent = Agent::start("none").await;
    // A grandchild orphaned inside the run goes to the interpreter (a subreaper), which leaves
    // it a zombie; once the interpreter exits, the agent reaps it.
    let program = "import os, time\n\
        r, w = os.pipe()\n\
        child = os.fork()\n\
        if child == 0:\n    g = os.fork()\n    if g == 0:\n        os._exit(0)\n    os.write(w, str(g).encode())\n    os._exit(0)\n\
        os.waitpid(child, 0)\n\
        g = int(os.read(r, 32))\n\
        print(g)\n\
        def state():\n    s = open(f'/proc/{g}/stat').read()\n    return s[s.rfind(')') + 2:].split()[:2]\n\
        while state() != ['Z', str(os.getpid())]:\n    time.sleep(0.01)\n\
        print('adopted')";
    let r = agent.python(program, 30_000).await;
    let out = stdout(&r);
    let mut lines = out.lines();
    let grandchild: i32 = lines.next().unwrap().parse().unwrap();
    assert_eq!(lines.next(), Some("adopted"), "{r:?}");
    until("the adopted zombie is reaped", || {
        !std::path::Path::new(&format!("/proc/{grandchild}")).exists()
    })
    .await;
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
async fn caps_cut_on_a_character_boundary() {
    let mut agent = Agent::start("none").await;
    // The field case: 1 MiB - 1 of 'a', then 'é' (2 bytes) across the cap.
    let field = "head -c 1048575 /dev/zero | tr '\\0' a; printf '\\303\\251'";
    for (command, on_stderr) in [(field.to_string(), false), (format!("{{ {field}; }} >&2"), true)] {
        let r = agent.bash(&command, 60_000).await;
        let out = if on_stderr { &r.stderr } else { &r.stdout };
        assert_eq!(out.len(), (1 << 20) - 1, "cut before the 'é'");
        assert!(out.iter().all(|&b| b == b'a'));
        assert!(r.truncated);
    }
}

#[tokio::test]
async fn streamed_chunks_never_split_a_character() {
    let mut agent = Agent::start("none").await;
    // Writes whose ends fall inside characters, as a program writing a buffer at a time does.
    let program = "import os\n\
        b = 'é€😀'.encode() * 20000\n\
        for i in range(0, len(b), 4093):\n    os.write(1, b[i:i + 4093])";
    let mut stream = agent
        .client
        .exec_stream(pb::ExecRequest {
            interpreter: pb::Interpreter::Python.into(),
            source: program.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = String::new();
    while let Some(event) = stream.message().await.unwrap() {
        if let Some(pb::exec_event::Event::Stdout(b)) = event.event {
            out.push_str(std::str::from_utf8(&b).expect("a chunk splits a character"));
        }
    }
    assert_eq!(out, "é€😀".repeat(20000));
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
async fn background_writers_keep_their_pipes_after_the_call() {
    let mut agent = Agent::start("none").await;
    // The field case: the background writer died of SIGPIPE (exit=141).
    let r = agent
        .bash(
            "( (sleep 1; echo late); echo exit=$? > field-exit ) & echo started",
            0,
        )
        .await;
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(line_in(&agent.dir.join("field-exit")).await, "exit=0\n");

    // Lines written after the shell exited are not the call's; a flood after it neither
    // blocks nor breaks the writer.
    let r = agent
        .bash(
            "( (until [ -e go ]; do sleep 0.02; done; echo late; head -c 100000000 /dev/zero \
             && echo also late >&2); echo exit=$? > bg-exit ) & echo started",
            0,
        )
        .await;
    assert_eq!(
        (stdout(&r).as_str(), r.stderr.as_slice()),
        ("started\n", &b""[..])
    );
    assert!(!r.truncated);
    std::fs::write(agent.dir.join("go"), "").unwrap();
    assert_eq!(line_in(&agent.dir.join("bg-exit")).await, "exit=0\n");
}

#[tokio::test]
async fn background_writers_outlive_a_streamed_call() {
    let mut agent = Agent::start("none").await;
    let mut stream = agent
        .client
        .exec_stream(pb::ExecRequest {
            source: "( (until [ -e go ]; do sleep 0.02; done; echo late; echo late >&2); \
                     echo exit=$? > bg-exit ) & echo started"
                .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    let mut exit = None;
    while let Some(event) = stream.message().await.unwrap() {
        match event.event.unwrap() {
            pb::exec_event::Event::Stdout(b) | pb::exec_event::Event::Stderr(b) => out.extend(b),
            pb::exec_event::Event::Exit(e) => exit = Some(e),
        }
    }
    assert_eq!(out, b"started\n");
    assert_eq!(exit.expect("a final exit event").exit_code, Some(0));
    std::fs::write(agent.dir.join("go"), "").unwrap();
    assert_eq!(line_in(&agent.dir.join("bg-exit")).await, "exit=0\n");
}

#[tokio::test]
async fn sigterm_stops_the_agent_and_its_desktop() {
    let agent = Agent::start("openbox").await;
    let socket = agent.socket.clone();
    // Its own processes, not its display's socket: a parallel test may take the number next.
    let desktop: Vec<i32> = ["Xvfb", "openbox"]
        .iter()
        .flat_map(|comm| common::children_named(agent.pid(), comm))
        .collect();
    assert_eq!(desktop.len(), 2, "Xvfb and openbox run");
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket removed");
    let left: Vec<_> = desktop.into_iter().filter(|&pid| running(pid)).collect();
    assert!(left.is_empty(), "Xvfb or openbox left running: {left:?}");
}

/// The parent of a Python run's interpreter: the warm Python's server, or the agent itself.
async fn python_parent(agent: &mut Agent) -> u32 {
    let r = agent.python("import os; print(os.getppid())", 0).await;
    stdout(&r).trim().parse().unwrap()
}

/// Waits until Python runs fork from the warm interpreter; answers its pid.
async fn warm_python(agent: &mut Agent) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let parent = python_parent(agent).await;
        if parent != agent.pid() {
            return parent;
        }
        assert!(Instant::now() < deadline, "the warm Python never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `python3 -c` gives, the same whether the run is forked warm or started cold: exit codes,
/// tracebacks naming only the program, `SystemExit`, `__main__`, argv, stdin, its own process
/// group, cwd and env; a timeout ending everything the run started.
async fn python_runs_as_python3_c(agent: &mut Agent) {
    let r = agent.python("1/0", 0).await;
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    assert_eq!(r.exit_code, Some(1));
    assert_eq!(
        stderr,
        "Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\nZeroDivisionError: division by zero\n"
    );
    let r = agent.python("def", 0).await;
    assert_eq!(r.exit_code, Some(1));
    assert!(
        String::from_utf8_lossy(&r.stderr).ends_with("SyntaxError: invalid syntax\n"),
        "{r:?}"
    );
    assert_eq!(
        agent.python("import sys; sys.exit(3)", 0).await.exit_code,
        Some(3)
    );
    // The end waits for non-daemon threads and runs atexit callbacks, in that order.
    let program = "import atexit, threading, time\natexit.register(print, 'atexit')\n\
        threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\nprint('main')";
    let r = agent.python(program, 0).await;
    assert_eq!(
        (stdout(&r), r.exit_code),
        ("main\nthread\natexit\n".into(), Some(0))
    );
    // A file left open is flushed and closed at the end, as the interpreter's shutdown does.
    let r = agent
        .python("f = open('left-open', 'w')\nf.write('kept')", 0)
        .await;
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(
        stdout(&agent.python("print(open('left-open').read())", 0).await),
        "kept\n"
    );
    let r = agent.python("raise SystemExit('bad thing')", 0).await;
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stderr).into_owned()),
        (Some(1), "bad thing\n".into())
    );
    let program = "import os, sys\nprint(__name__, sys.argv, repr(sys.stdin.read()), os.getpgid(0) == os.getpid(), \
        sys.path[0] == '', os.getcwd(), os.environ['ORGO_RUN'], os.environ['DISPLAY'] == DISPLAY, \
        open('/proc/self/comm').read().strip(), __import__('time').strftime('%z'))";
    let r = agent
        .client
        .exec(pb::ExecRequest {
            interpreter: pb::Interpreter::Python.into(),
            source: program.replace("== DISPLAY", &format!("== {:?}", agent.display)),
            cwd: "/tmp".into(),
            env: [("ORGO_RUN", "yes"), ("TZ", "XYZ-3")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stdout(&r),
        "__main__ ['-c'] '' True True /tmp yes True python3 +0300\n",
        "{r:?}"
    );
    let program = "import subprocess, time\nsubprocess.Popen(['setsid', 'sleep', '300.31'])\ntime.sleep(100)";
    let r = agent.python(program, 1500).await;
    assert!(r.timed_out, "{r:?}");
    assert_eq!(alive_with("300.31"), Vec::<String>::new());
}

#[tokio::test]
async fn python_runs_as_python3_c_warm_and_cold() {
    let mut warm = Agent::start("none").await;
    warm_python(&mut warm).await;
    python_runs_as_python3_c(&mut warm).await;
    let mut cold = Agent::start_with("none", &["--cold-python"]).await;
    assert_eq!(
        python_parent(&mut cold).await,
        cold.pid(),
        "--cold-python forks nothing"
    );
    python_runs_as_python3_c(&mut cold).await;
}

/// Each run forks from the same pristine interpreter: a variable, a monkeypatch, a module or an
/// environment variable one run makes is absent from the next, and random numbers differ.
#[tokio::test]
async fn warm_python_runs_carry_nothing_from_one_to_the_next() {
    let mut agent = Agent::start("none").await;
    warm_python(&mut agent).await;
    let dirty = "import json, os, sys, builtins\nx = 41\njson.dumps = lambda *a, **k: 'patched'\n\
        sys.modules['mine'] = sys\nos.environ['LEAK'] = '1'\nbuiltins.print = None";
    assert_eq!(agent.python(dirty, 0).await.exit_code, Some(0));
    let check = "import json, os, sys, random\nprint(json.dumps(1), 'x' in globals(), 'mine' in sys.modules, \
        os.environ.get('LEAK'), random.random())";
    let first = stdout(&agent.python(check, 0).await);
    let second = stdout(&agent.python(check, 0).await);
    assert!(first.starts_with("1 False False None 0."), "{first}");
    assert_ne!(first, second, "random numbers repeat across runs");
}

/// A fork server that dies is started again; meanwhile runs are cold, and none fails or runs
/// twice.
#[tokio::test]
async fn a_dead_warm_python_is_started_again_and_runs_go_on_meanwhile() {
    let mut agent = Agent::start("none").await;
    let server = warm_python(&mut agent).await;
    let comm = std::fs::read_to_string(format!("/proc/{server}/comm")).unwrap();
    assert_eq!(comm, "orgo-python\n", "the server is told apart from runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for i in 0..5 {
        let r = agent.python(&format!("print({i})"), 0).await;
        assert_eq!(stdout(&r), format!("{i}\n"), "{r:?}");
    }
    let again = warm_python(&mut agent).await;
    assert_ne!(again, server);
}
