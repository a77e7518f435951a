//! `cargo xtask`: every developer command that is not plain cargo. It depends on nothing that
//! needs a system library, so it builds on a fresh machine and installs what the rest needs.
//!
//! - `cargo xtask up` — install missing system packages, build, run the gateway with a dev key.
//! - `cargo xtask ci` — everything CI runs: system packages, fmt, clippy, all tests.
//! - `cargo xtask bench [agent|gateway]` — the agent, and the REST API, against the reference
//!   stack, side by side.

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
    "bubblewrap",
];

const USAGE: &str = "usage: cargo xtask <command>

commands:
  up            install missing system packages, build, and run the gateway with a dev key
  ci            install missing system packages, then fmt check, clippy -D warnings, all tests
  bench agent   benchmark the agent against xdotool + scrot + a spawned python3
  bench gateway benchmark the REST API on local desktops against the same reference stack";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["up"] => up(),
        ["ci"] => ci(),
        ["bench"] => bench_agent().and_then(|()| bench_gateway()),
        ["bench", "agent"] => bench_agent(),
        ["bench", "gateway"] => bench_gateway(),
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

fn bench_gateway() -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    run("cargo", &["bench", "-p", "orgo-gateway", "--bench", "gateway"])
}

fn bench_agent() -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["bench", "-p", "orgo-agent", "--bench", "agent"])
}

/// Builds, makes a dev account and key the first time (kept in `.orgo/dev-key`), prints how to
/// create a desktop, and runs the gateway on 127.0.0.1:8080 with the local runtime.
fn up() -> Result<()> {
    ensure_system_packages()?;
    run(
        "cargo",
        &["build", "--release", "-p", "orgo-agent", "-p", "orgo-gateway"],
    )?;
    let data = root().join(".orgo");
    std::fs::create_dir_all(&data)?;
    let gateway = root().join("target/release/orgo-gateway");
    let key_file = data.join("dev-key");
    let key = match std::fs::read_to_string(&key_file) {
        Ok(k) if !k.trim().is_empty() => k.trim().to_string(),
        _ => {
            let out = Command::new(&gateway)
                .args(["keys", "create", "--account", "dev"])
                .env("ORGO_DATA_DIR", &data)
                .output()
                .context("cannot run orgo-gateway keys create")?;
            if !out.status.success() {
                bail!(
                    "orgo-gateway keys create failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let key = stdout
                .lines()
                .last()
                .context("no key printed")?
                .trim()
                .to_string();
            std::fs::write(&key_file, &key)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
            key
        }
    };
    println!(
        "\norgo-gateway on http://127.0.0.1:8080 (local runtime, data in .orgo/)\n\
         API key (account \"dev\", saved in .orgo/dev-key):\n  {key}\n\n\
         Create a desktop:\n  curl -X POST http://127.0.0.1:8080/api/projects \\\n    \
         -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" \\\n    \
         -d '{{\"config\": {{\"ram\": 2, \"cpu\": 2}}}}'\n\nCtrl-C stops the gateway and its desktops.\n"
    );
    let status = Command::new(&gateway)
        .arg("serve")
        .env("ORGO_DATA_DIR", &data)
        .current_dir(root())
        .status()
        .context("cannot run orgo-gateway")?;
    if !status.success() {
        bail!("orgo-gateway exited: {status}");
    }
    Ok(())
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
