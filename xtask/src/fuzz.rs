//! Fuzzing. `cargo xtask fuzz-api`: schemathesis, from PyPI in a venv of its own, against a
//! gateway served on loopback with real local desktops (one to act on, one to stop, one to
//! delete), every check on, configured by `gateway/tests/schemathesis.toml`. Any 5xx, any answer
//! the document does not allow, any request the document allows but the gateway refuses (or the
//! reverse) fails the run. `cargo xtask fuzz-parsers`: the cargo-fuzz targets in `fuzz/`
//! (libFuzzer, nightly toolchain), each for a while, on a corpus kept in `fuzz/corpus`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::new_key;
use crate::system::{ensure_system_packages, root, run};

/// A schemathesis run's size: examples per operation, and concurrent workers (waits, drags and
/// timed execs mostly sleep, so more workers overlap them).
pub struct Size {
    examples: u32,
    workers: u32,
}

/// The short run in `ci`.
pub const SHORT: Size = Size {
    examples: 10,
    workers: 4,
};

/// The long run: over 5,000 requests.
pub const LONG: Size = Size {
    examples: 200,
    workers: 8,
};

/// Seconds per cargo-fuzz target in `ci`.
pub const PARSERS_SHORT: u32 = 20;

/// The cargo-fuzz targets, each with an optional dictionary in `fuzz/dicts/<target>.dict`.
const PARSER_TARGETS: &[&str] = &["key_combo", "type_plan", "request_body", "output_cap"];

const SCHEMATHESIS: &str = "schemathesis>=4.32,<5";

/// A served gateway, stopped (SIGTERM, which stops its desktops) when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A successful curl's output.
fn curl(args: &[&str]) -> Result<String> {
    let out = Command::new("curl")
        .arg("-sf")
        .args(args)
        .output()
        .context("cannot run curl")?;
    if !out.status.success() {
        bail!("curl {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The string value of the first `"field":"…"` in a JSON answer; no JSON library for one field.
fn first_string(answer: &str, field: &str) -> Result<String> {
    answer
        .split(&format!("\"{field}\":\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(String::from)
        .with_context(|| format!("no {field} in {answer}"))
}

/// `POST /api/projects`: the new project's name (its desktop's, too).
fn new_project(base: &str, key: &str) -> Result<String> {
    let auth = format!("Authorization: Bearer {key}");
    let answer = curl(&["-X", "POST", &format!("{base}/projects"), "-H", &auth, "-d", "{}"])?;
    first_string(&answer, "name")
}

/// A screenshot stored for the run (`?response_format=url`): its file name, for the storage
/// route.
fn stored_screenshot(base: &str, key: &str, computer: &str) -> Result<String> {
    let auth = format!("Authorization: Bearer {key}");
    let url = format!("{base}/computers/{computer}/screenshot?response_format=url");
    let answer = curl(&[&url, "-H", &auth])?;
    let image = first_string(&answer, "image")?;
    Ok(image.rsplit('/').next().unwrap_or_default().to_string())
}

pub fn api(size: Size) -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["build", "-p", "orgo-agent", "-p", "orgo-gateway"])?;
    let venv = root().join("target/fuzz-venv");
    let st = venv.join("bin/schemathesis");
    if !st.exists() {
        run("python3", &["-m", "venv", venv.to_str().context("path")?])?;
        let pip = venv.join("bin/pip");
        run(pip.to_str().context("path")?, &["install", "-q", SCHEMATHESIS])?;
    }

    let report = root().join("target/fuzz-report");
    std::fs::create_dir_all(&report)?;
    let data = root().join("target/fuzz-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let gateway = root().join("target/debug/orgo-gateway");
    let key = new_key(&gateway, &data, "fuzz", "pro")?;
    let _served = Served(
        Command::new(&gateway)
            .arg("serve")
            .env("ORGO_DATA_DIR", &data)
            .env("ORGO_LISTEN", format!("127.0.0.1:{port}"))
            .env("ORGO_AGENT_BIN", root().join("target/debug/orgo-agent"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(report.join("gateway.log"))?)
            .spawn()
            .context("cannot start orgo-gateway")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the gateway did not listen");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://127.0.0.1:{port}/api");
    let computer = new_project(&base, &key)?;
    let stored = stored_screenshot(&base, &key, &computer)?;
    let victim = new_project(&base, &key)?;
    let stopped = new_project(&base, &key)?;

    let config = root().join("gateway/tests/schemathesis.toml");
    let status = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{base}/openapi.json"), "--checks", "all"])
        .args([
            "--max-examples",
            &size.examples.to_string(),
            "--workers",
            &size.workers.to_string(),
            // How fast Hypothesis makes data on a busy machine says nothing about the API.
            "--suppress-health-check",
            "too_slow",
            "--no-color",
        ])
        .arg("--report-dir")
        .arg(&report)
        .args(["--report", "junit"])
        .env("ORGO_FUZZ_KEY", &key)
        .env("ORGO_FUZZ_COMPUTER", &computer)
        .env("ORGO_FUZZ_VICTIM", &victim)
        .env("ORGO_FUZZ_STOPPED", &stopped)
        .env("ORGO_FUZZ_FILE", &stored)
        .current_dir(root())
        .status()
        .context("cannot run schemathesis")?;
    // The gateway's own count of what it answered, by status class.
    let metrics = curl(&[&format!("http://127.0.0.1:{port}/metrics")])?;
    let (mut served, mut server_errors) = (0u64, 0u64);
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("orgo_http_requests_total{"))
    {
        let n: u64 = line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        served += n;
        if line.contains("status=\"5") {
            server_errors += n;
        }
    }
    println!("fuzz-api: the gateway answered {served} requests, {server_errors} of them 5xx");
    if !status.success() {
        bail!("schemathesis found failures (report and the gateway's log in target/fuzz-report)");
    }
    if server_errors > 0 {
        bail!("the gateway answered {server_errors} requests with 5xx (log in target/fuzz-report)");
    }
    let _ = std::fs::remove_dir_all(Path::new(&data));
    Ok(())
}

/// Runs every cargo-fuzz target for `seconds`; a crash fails the run, leaving the input in
/// `fuzz/artifacts/<target>`.
pub fn parsers(seconds: u32) -> Result<()> {
    let have_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_fuzz {
        run("cargo", &["install", "cargo-fuzz", "--locked"])?;
    }
    let fuzz = root().join("fuzz");
    for target in PARSER_TARGETS {
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let dict = fuzz.join("dicts").join(format!("{target}.dict"));
        let mut args = vec![
            "+nightly".to_string(),
            "fuzz".into(),
            "run".into(),
            "--sanitizer".into(),
            "none".into(),
            target.to_string(),
            corpus.display().to_string(),
            "--".into(),
            format!("-max_total_time={seconds}"),
            "-print_final_stats=1".into(),
        ];
        if dict.exists() {
            args.push(format!("-dict={}", dict.display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("cargo", &args)?;
    }
    Ok(())
}
