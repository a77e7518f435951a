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

/// Examples per operation: the short run in `ci`, and the long one (over 5,000 requests).
pub const SHORT: u32 = 10;
pub const LONG: u32 = 60;

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

/// `POST /api/projects` with curl: the new project's name (its desktop's, too).
fn new_project(base: &str, key: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sf", "-X", "POST", &format!("{base}/projects")])
        .args(["-H", &format!("Authorization: Bearer {key}"), "-d", "{}"])
        .output()
        .context("cannot run curl")?;
    if !out.status.success() {
        bail!("creating a desktop for the run failed");
    }
    let answer = String::from_utf8_lossy(&out.stdout);
    // The answer's first "name" is the project's; no JSON library for one field.
    let name = answer
        .split("\"name\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no name in the create answer")?;
    Ok(name.to_string())
}

pub fn api(examples: u32) -> Result<()> {
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
    let victim = new_project(&base, &key)?;
    let stopped = new_project(&base, &key)?;

    let config = root().join("gateway/tests/schemathesis.toml");
    let status = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{base}/openapi.json"), "--checks", "all"])
        .args([
            "--max-examples",
            &examples.to_string(),
            "--workers",
            "2",
            "--no-color",
        ])
        .arg("--report-dir")
        .arg(&report)
        .args(["--report", "junit"])
        .env("ORGO_FUZZ_KEY", &key)
        .env("ORGO_FUZZ_COMPUTER", &computer)
        .env("ORGO_FUZZ_VICTIM", &victim)
        .env("ORGO_FUZZ_STOPPED", &stopped)
        .current_dir(root())
        .status()
        .context("cannot run schemathesis")?;
    if !status.success() {
        bail!("schemathesis found failures (report and the gateway's log in target/fuzz-report)");
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
