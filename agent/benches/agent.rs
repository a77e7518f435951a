//! `cargo xtask bench agent`: our agent over gRPC (Unix socket) against the reference stack the
//! public API documents (xdotool for input, `scrot -q 100` + base64 for screenshots, a spawned
//! `/usr/bin/python3 -c` for code: the system interpreter desktops run, not a version manager's
//! shim), in one run on one Xvfb with openbox. Typing integrity is checked in a real client: an
//! xterm in a UTF-8 locale running `cat`, whose output file must hold exactly the typed line.
//! Prints medians, p90 and the ratio per action, plus bytes and window-manager CPU.

use std::process::Command;

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Agent, Typist, children_named};

use orgo_proto::connect::Agent as AgentClient;
use orgo_proto::v1 as pb;

const ASCII_50: &str = "The quick brown fox jumps over the lazy dog 0123!?";
const UNICODE_LINE: &str = "Crème brûlée Ελληνικά привет 中文 日本語 😀🚀 ∑√ €";

struct Stats {
    median: Duration,
    p90: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Row {
    action: &'static str,
    ours: Stats,
    reference: Stats,
    note: String,
}

fn print_rows(rows: &[Row]) {
    println!(
        "\n{:<22} {:>11} {:>11} {:>11} {:>11} {:>9}  note",
        "action", "ours p50", "ours p90", "ref p50", "ref p90", "ratio"
    );
    for r in rows {
        println!(
            "{:<22} {:>8.3} ms {:>8.3} ms {:>8.3} ms {:>8.3} ms {:>8.1}x  {}",
            r.action,
            ms(r.ours.median),
            ms(r.ours.p90),
            ms(r.reference.median),
            ms(r.reference.p90),
            r.reference.median.as_secs_f64() / r.ours.median.as_secs_f64(),
            r.note
        );
    }
}

fn run(cmd: &str, display: &str) -> std::process::Output {
    Command::new("bash")
        .args(["-c", cmd])
        .env("DISPLAY", display)
        .output()
        .expect("run reference command")
}

fn timed(cmd: &str, display: &str) -> Duration {
    let t = Instant::now();
    let out = run(cmd, display);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

async fn type_ours(client: &mut AgentClient, text: &str) -> Duration {
    let t = Instant::now();
    client
        .type_text(pb::TypeTextRequest {
            text: text.into(),
            delay_millis: 0,
        })
        .await
        .unwrap();
    t.elapsed()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[tokio::main]
async fn main() {
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let agent = Agent::start("openbox").await;
    let (dir, display, mut client) = (agent.dir.clone(), agent.display.clone(), agent.client.clone());
    let wm = *children_named(agent.pid(), "openbox")
        .first()
        .expect("openbox runs");
    println!("orgo-agent bench: display {display}, 1280x800, {iterations} iterations per action");
    let mut rows = Vec::new();

    // Screenshots.
    let (mut ours, mut reference, mut our_bytes, mut ref_bytes) = (vec![], vec![], 0, 0);
    let shot_file = dir.join("shot.jpg");
    let scrot = format!(
        "scrot -o -q 100 {f} && base64 -w0 {f} > /dev/null",
        f = shot_file.display()
    );
    for _ in 0..iterations {
        let t = Instant::now();
        let shot = client
            .screenshot(pb::ScreenshotRequest::default())
            .await
            .unwrap()
            .into_inner();
        ours.push(t.elapsed());
        our_bytes = shot.image.len();
        reference.push(timed(&scrot, &display));
        ref_bytes = std::fs::metadata(&shot_file)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
    }
    rows.push(Row {
        action: "screenshot, still screen",
        ours: stats(ours),
        reference: stats(reference),
        note: format!("JPEG q75 {our_bytes} B vs scrot q100 {ref_bytes} B (+base64)"),
    });

    // Clicks, at two spots far apart so none is spaced out as a would-be double click.
    let (mut ours, mut reference) = (vec![], vec![]);
    for i in 0..iterations {
        let x = if i % 2 == 0 { 700 } else { 1000 };
        let t = Instant::now();
        client
            .click(pb::ClickRequest {
                at: Some(pb::Point { x, y: 600 }),
                ..Default::default()
            })
            .await
            .unwrap();
        ours.push(t.elapsed());
        reference.push(timed(&format!("xdotool mousemove {x} 650 click 1"), &display));
    }
    rows.push(Row {
        action: "click",
        ours: stats(ours),
        reference: stats(reference),
        note: String::new(),
    });

    let (mut ours, mut reference) = (vec![], vec![]);
    for _ in 0..iterations {
        let t = Instant::now();
        client
            .press_key(pb::KeyRequest {
                combo: "ctrl+shift+i".into(),
                repeat: 1,
            })
            .await
            .unwrap();
        ours.push(t.elapsed());
        reference.push(timed("xdotool key ctrl+shift+i", &display));
    }
    rows.push(Row {
        action: "key ctrl+shift+i",
        ours: stats(ours),
        reference: stats(reference),
        note: String::new(),
    });

    // Typing into a real client, with integrity counted.
    let typist = Typist::xterm(&display, &dir);
    typist.wait_ready(&mut client).await;

    // Screenshots of a screen that changed since the last: a line typed into the terminal
    // (and read back, so it is drawn) before each.
    let (mut ours, mut reference) = (vec![], vec![]);
    for i in 0..iterations {
        typist.clear();
        type_ours(&mut client, &format!("{i}\n")).await;
        typist.line();
        let t = Instant::now();
        client.screenshot(pb::ScreenshotRequest::default()).await.unwrap();
        ours.push(t.elapsed());
        type_ours(&mut client, &format!("{i}\n")).await;
        typist.line();
        reference.push(timed(&scrot, &display));
    }
    rows.push(Row {
        action: "screenshot, changing",
        ours: stats(ours),
        reference: stats(reference),
        note: "a line typed into xterm before each".into(),
    });
    for (action, text) in [
        ("type 50 ASCII chars", ASCII_50),
        ("type a Unicode line", UNICODE_LINE),
    ] {
        let line = format!("{text}\n");
        let (mut ours, mut reference, mut ours_ok, mut ref_ok) = (vec![], vec![], 0, 0);
        let (mut ours_wm, mut ref_wm) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..iterations {
            typist.clear();
            let cpu = cpu_time(wm);
            ours.push(type_ours(&mut client, &line).await);
            ours_ok += usize::from(typist.line().as_deref() == Some(text));
            ours_wm += cpu_time(wm) - cpu;
            typist.clear();
            let cpu = cpu_time(wm);
            reference.push(timed(&format!("xdotool type -- {}", quote(&line)), &display));
            ref_ok += usize::from(typist.line().as_deref() == Some(text));
            ref_wm += cpu_time(wm) - cpu;
            // Lines that never completed leave a partial line behind; end it before the next try.
            if std::fs::read_to_string(&typist.file)
                .map(|t| !t.ends_with('\n') && !t.is_empty())
                .unwrap_or(false)
            {
                type_ours(&mut client, "\n").await;
            }
        }
        let n = iterations as u32;
        rows.push(Row {
            action,
            ours: stats(ours),
            reference: stats(reference),
            note: format!(
                "intact {ours_ok}/{iterations} vs {ref_ok}/{iterations}; openbox CPU {:.0} vs {:.0} ms/call",
                ms(ours_wm / n),
                ms(ref_wm / n)
            ),
        });
    }
    drop(typist);

    // The warm interpreter is up (it starts once the display is): runs fork from it.
    let python = |source: &str| pb::ExecRequest {
        interpreter: pb::Interpreter::Python.into(),
        source: source.into(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .exec(python("import os; print(os.getppid())"))
        .await
        .unwrap()
        .into_inner()
        .stdout
        == format!("{}\n", agent.pid()).into_bytes()
    {
        assert!(Instant::now() < deadline, "the warm Python never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ours, mut reference) = (vec![], vec![]);
    for _ in 0..iterations {
        let t = Instant::now();
        let r = client.exec(python("print('hello')")).await.unwrap().into_inner();
        ours.push(t.elapsed());
        assert_eq!(r.stdout, b"hello\n");
        reference.push(timed("/usr/bin/python3 -c \"print('hello')\"", &display));
    }
    rows.push(Row {
        action: "python print",
        ours: stats(ours),
        reference: stats(reference),
        note: "ours forks the warm interpreter; the reference starts python3".into(),
    });

    print_rows(&rows);
    drop(agent);
}
