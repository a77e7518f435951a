//! `cargo xtask`: every developer command that is not plain cargo. It depends on nothing that
//! needs a system library, so it builds on a fresh machine and installs what the rest needs.
//!
//! - `cargo xtask up` — install missing system packages, build, run a desktop's agent.
//! - `cargo xtask ci` — everything CI runs: system packages, fmt, clippy, all tests.
//! - `cargo xtask bench agent` — the agent against the reference stack, side by side.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the build, the tests and the benchmarks need.
const SYSTEM_PACKAGES: &[&str] = &[
    "pkg-config",
    "libturbojpeg0-dev",
    "xvfb",
    "openbox",
    "xterm",
    "x11-utils",
    "x11-xserver-utils",
    "xdotool",
    "scrot",
    "python3",
    "procps",
];

const USAGE: &str = "usage: cargo xtask <command>

commands:
  up            install missing system packages, build, and run a desktop agent
  ci            install missing system packages, then fmt check, clippy -D warnings, all tests
  bench agent   benchmark the agent against xdotool + scrot + a spawned python3";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["up"] => up(),
        ["ci"] => ci(),
        ["bench"] | ["bench", "agent"] => bench_agent(),
        ["help"] | ["--help"] | ["-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with its command line if it fails.
fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing system packages when running as root; otherwise says the one command
/// to run.
fn ensure_system_packages() -> Result<()> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        bail!(
            "missing system packages: {}\nrun as root: {command}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(
        "bash",
        &["-c", &format!("export DEBIAN_FRONTEND=noninteractive; {command}")],
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn ci() -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
    )?;
    test_workspace()
}

/// Runs every test, passing its output through, and ends with one total line: cargo prints a
/// result line per test binary, and the last of those is usually an empty doc-test run.
fn test_workspace() -> Result<()> {
    use std::io::{BufRead, BufReader};
    eprintln!("$ cargo test --workspace");
    let mut child = Command::new("cargo")
        .args(["test", "--workspace"])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().context("no stdout")?).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result_line(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

/// `(passed, failed)` from cargo's `test result: ok. 20 passed; 0 failed; ...` lines.
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';').find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(word)?
                .trim()
                .parse()
                .ok()
        })
    };
    Some((count("passed")?, count("failed")?))
}

fn bench_agent() -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["bench", "-p", "orgo-agent", "--bench", "agent"])
}

fn up() -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    let state = root().join(".orgo");
    let socket = state.join("agent.sock");
    std::fs::create_dir_all(state.join("home"))?;
    println!(
        "\nStarting a desktop: orgo-agent with its own Xvfb (1280x800) and openbox.\n\
         gRPC API (orgo.agent.v1.Agent) on unix://{}\n\
         The REST gateway is not built yet; until then the agent is the service. Ctrl-C stops it.\n",
        socket.display()
    );
    let agent = root().join("target/release/orgo-agent");
    let home = state.join("home");
    run(
        agent.to_str().context("non-UTF-8 path")?,
        &[
            "--spawn-xvfb",
            "1280x800x24",
            "--wm",
            "openbox",
            "--home",
            home.to_str().context("non-UTF-8 path")?,
            "--listen",
            &format!("unix://{}", socket.display()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

    #[test]
    fn result_lines() {
        assert_eq!(
            parse_result_line("test result: ok. 20 passed; 0 failed; 0 ignored; 0 measured"),
            Some((20, 0))
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 5 passed; 2 failed; 0 ignored"),
            Some((5, 2))
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
