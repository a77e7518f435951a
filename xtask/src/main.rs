//! `cargo xtask`: every developer command that is not plain cargo. It depends on nothing that
//! needs a system library, so it builds on a fresh machine and installs what the rest needs.
//!
//! - `cargo xtask up` — install missing system packages, build, run the gateway with a dev key.
//! - `cargo xtask ci` — everything CI runs: system packages, fmt, clippy, the image, all tests,
//!   the short API and parser fuzzing runs.
//! - `cargo xtask image [minimal|desktop]` — a desktop image built offline, imported to Docker.
//! - `cargo xtask bench [agent|gateway|docker]` — the agent, and the REST API (on local, or on
//!   local and Docker desktops), against the reference stack, side by side.
//! - `cargo xtask bench view` — the live view in a real browser.
//! - `cargo xtask load …` and `cargo xtask soak --minutes N` — load and leak checks.
//! - `cargo xtask fuzz-api [--long]` — schemathesis against the served OpenAPI document.
//! - `cargo xtask fuzz-parsers [--seconds N]` — the cargo-fuzz targets in `fuzz/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod fuzz;

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

/// The real browser the live view's tests and benchmark drive.
const BROWSER_PACKAGES: &[&str] = &["chromium", "chromium-driver"];

const USAGE: &str = "usage: cargo xtask <command>

commands:
  up            install missing system packages, build, and run the gateway with a dev key
  ci            install missing system packages, then fmt check, clippy -D warnings, the desktop
                image when missing, all tests, the short API and parser fuzzing runs
  image [minimal|desktop]
                build a desktop image offline from Debian's packages and import it into Docker
  bench agent   benchmark the agent against xdotool + scrot + a spawned python3
  bench gateway benchmark the REST API on local desktops against the same reference stack
  bench docker  the same on Docker desktops, beside local ones, in one run
  bench view    the live view in headless Chromium: fps, latency, bytes/s, agent CPU
  load [--clients N] [--desktops M] [--seconds S] [--docker]
                N clients mixing screenshots, clicks, keys, typing and bash on M desktops:
                p50/p99 per route, answers by status (32, 8, 30 s, local runtime)
  soak --minutes N
                create/act/delete desktops in a loop, checking nothing leaks (also
                ORGO_SOAK_RUNTIME=docker); a 20 s soak is part of the tests
  fuzz-api [--long]
                schemathesis (every check) against a served gateway's OpenAPI document; the
                short run is part of ci, --long generates over 5,000 requests
  fuzz-parsers [--seconds N]
                the cargo-fuzz targets in fuzz/ (key combos, typing plans, request bodies,
                output capping), N seconds each (20, as in ci), nightly toolchain";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["up"] => up(),
        ["ci"] => ci(),
        ["image"] | ["image", "minimal"] => image("minimal"),
        ["image", "desktop"] => image("desktop"),
        ["bench"] => bench_agent().and_then(|()| bench_gateway("local")),
        ["bench", "agent"] => bench_agent(),
        ["bench", "gateway"] => bench_gateway("local"),
        ["bench", "view"] => bench_view(),
        ["load", rest @ ..] => load(rest),
        ["soak", "--minutes", n] => soak(n),
        ["fuzz-api"] => fuzz::api(fuzz::SHORT),
        ["fuzz-api", "--long"] => fuzz::api(fuzz::LONG),
        ["fuzz-parsers"] => fuzz::parsers(fuzz::PARSERS_SHORT),
        ["fuzz-parsers", "--seconds", n] => n
            .parse()
            .map_err(|_| anyhow::anyhow!("--seconds takes a whole number, not {n:?}"))
            .and_then(fuzz::parsers),
        ["bench", "docker"] => image("minimal").and_then(|()| bench_gateway("local,docker")),
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
    run_with(program, args, &[])
}

/// `run` with extra environment variables.
fn run_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
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
    ensure_packages(SYSTEM_PACKAGES)
}

/// Installs those of `packages` that are missing (as root), or says the command to run.
fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !is_installed(p)).collect();
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
    ensure_packages(BROWSER_PACKAGES)?;
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"],
    )?;
    run(
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
    )?;
    // The Docker runtime's tests need the desktop image; a second build is skipped.
    image("minimal")?;
    test_workspace()?;
    fuzz::api(fuzz::SHORT)?;
    fuzz::parsers(fuzz::PARSERS_SHORT)
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

/// Output of a command, failing with its stderr.
fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The package names of a list file (comments and blank lines dropped).
fn package_list(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(root().join(path)).with_context(|| format!("cannot read {path}"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Builds `orgo/desktop-<kind>:<version>`: a Debian bookworm root filesystem made by mmdebstrap
/// from Debian's packages, the Python packages of `images/python-requirements.txt` from PyPI, the
/// release agent, imported through the Docker Engine API with the agent as entrypoint. Skipped
/// when an image of the same inputs (its hash label) is already there.
fn image(kind: &str) -> Result<()> {
    ensure_system_packages()?;
    ensure_packages(&["mmdebstrap", "curl"])?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    let mut packages = package_list("images/desktop-minimal/packages.txt")?;
    if kind == "desktop" {
        packages.extend(package_list("images/desktop/packages.txt")?);
    }
    let wm = if kind == "desktop" {
        "xfce4-session"
    } else {
        "openbox"
    };
    let entrypoint = [
        "/usr/local/bin/orgo-agent",
        "--display",
        ":1",
        "--wm",
        wm,
        "--home",
        "/home/user",
        "--listen",
        "unix:///run/orgo/agent.sock",
    ]
    .map(|a| format!("\"{a}\""))
    .join(",");
    let mut changes = vec![
        "ENV DISPLAY=:1".to_string(),
        "ENV HOME=/home/user".to_string(),
        // glibc's own spelling: `C.UTF-8` costs every process ~10 ms finding it.
        "ENV LANG=C.utf8".to_string(),
        "ENV ORGO_SPAWN_XVFB=1280x800x24".to_string(),
        "USER user".to_string(),
        "WORKDIR /home/user".to_string(),
        format!("ENTRYPOINT [{entrypoint}]"),
    ];
    let inputs = root().join(format!("target/image/{kind}.inputs"));
    std::fs::create_dir_all(inputs.parent().context("no parent")?)?;
    let requirements = root().join("images/python-requirements.txt");
    std::fs::write(
        &inputs,
        [
            packages.join(","),
            std::fs::read_to_string(&requirements)?,
            output("sha256sum", &["target/release/orgo-agent"])?,
            changes.join("\n"),
        ]
        .join("\n"),
    )?;
    let hash = output("sha256sum", &[inputs.to_str().context("path")?])?;
    let hash = hash.split_whitespace().next().unwrap_or_default().to_string();
    let tag = format!("orgo/desktop-{kind}:{}", env!("CARGO_PKG_VERSION"));
    let label = "{{index .Config.Labels \"orgo.image.hash\"}}";
    let existing = Command::new("docker")
        .args(["image", "inspect", "-f", label, &tag])
        .output();
    if existing.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == hash) {
        println!("{tag} is up to date");
        return Ok(());
    }

    let tar = root().join(format!("target/image/{kind}.tar"));
    let agent = root().join("target/release/orgo-agent");
    // PyPI is reached with the host's CA bundle (a proxy may sign its certificates); the
    // variables matter because the host's own point at paths that mean the image's bundle inside.
    let ca = std::env::var("PIP_CERT")
        .or_else(|_| std::env::var("SSL_CERT_FILE"))
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let ca_name = Path::new(&ca)
        .file_name()
        .and_then(|n| n.to_str())
        .context("CA file name")?
        .to_string();
    let mut args: Vec<String> = vec![
        "--variant=apt".into(),
        format!("--include={}", packages.join(",")),
    ];
    for exclude in [
        "/usr/share/doc/*",
        "/usr/share/man/*",
        "/usr/share/locale/*",
        "/usr/share/info/*",
    ] {
        args.push(format!("--dpkgopt=path-exclude={exclude}"));
    }
    for hook in [
        "chroot \"$1\" useradd -m -u 1000 -s /bin/bash user".to_string(),
        format!("copy-in {ca} /tmp"),
        format!("copy-in {} /tmp", requirements.display()),
        format!(
            "chroot \"$1\" env PIP_CERT=/tmp/{ca_name} REQUESTS_CA_BUNDLE=/tmp/{ca_name} \
             SSL_CERT_FILE=/tmp/{ca_name} python3 -m pip install -q --no-cache-dir \
             --break-system-packages -r /tmp/python-requirements.txt"
        ),
        "rm -rf \"$1\"/tmp/* \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*".to_string(),
        format!("copy-in {} /usr/local/bin", agent.display()),
    ] {
        args.push(format!("--customize-hook={hook}"));
    }
    args.extend([
        "bookworm".into(),
        tar.display().to_string(),
        "http://deb.debian.org/debian".into(),
    ]);
    let started = std::time::Instant::now();
    run("mmdebstrap", &args.iter().map(String::as_str).collect::<Vec<_>>())?;

    changes.push(format!("LABEL orgo.image.hash={hash}"));
    let (repo, version) = tag.split_once(':').context("tag")?;
    let mut url = format!("http://localhost/v1.41/images/create?fromSrc=-&repo={repo}&tag={version}");
    for change in &changes {
        url.push_str("&changes=");
        url.push_str(&percent_encode(change));
    }
    // The Engine API's import reads a plain tar only with this content type.
    let data = format!("@{}", tar.display());
    let answer = output(
        "curl",
        &[
            "-sS",
            "--unix-socket",
            "/var/run/docker.sock",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-tar",
            "--data-binary",
            &data,
            &url,
        ],
    )?;
    if answer.contains("\"error") || answer.contains("\"message\"") {
        bail!("docker import failed: {answer}");
    }
    let _ = std::fs::remove_file(&tar);
    println!("built {tag} in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The REST bench on the runtimes named (comma-separated), side by side.
fn bench_gateway(runtimes: &str) -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    run_with(
        "cargo",
        &["bench", "-p", "orgo-gateway", "--bench", "gateway"],
        &[("ORGO_BENCH_RUNTIMES", runtimes)],
    )
}

/// `cargo xtask load`: the load bench with the sizes given.
fn load(args: &[&str]) -> Result<()> {
    let mut env: Vec<(&str, &str)> = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let name = match *flag {
            "--clients" => "ORGO_LOAD_CLIENTS",
            "--desktops" => "ORGO_LOAD_DESKTOPS",
            "--seconds" => "ORGO_LOAD_SECONDS",
            "--docker" => {
                env.push(("ORGO_RUNTIME", "docker"));
                continue;
            }
            other => bail!("unknown load option {other:?}\n\n{USAGE}"),
        };
        let value = rest.next().context("a number after the option")?;
        value
            .parse::<u32>()
            .with_context(|| format!("{flag} takes a number, not {value:?}"))?;
        env.push((name, value));
    }
    ensure_system_packages()?;
    if env.contains(&("ORGO_RUNTIME", "docker")) {
        image("minimal")?;
    }
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    run_with("cargo", &["bench", "-p", "orgo-gateway", "--bench", "load"], &env)
}

/// `cargo xtask soak --minutes N`: the soak test, run for that long, its figures printed.
fn soak(minutes: &str) -> Result<()> {
    let minutes: u64 = minutes
        .parse()
        .with_context(|| format!("--minutes takes a number, not {minutes:?}"))?;
    ensure_system_packages()?;
    let seconds = (minutes * 60).to_string();
    run_with(
        "cargo",
        &[
            "test",
            "-p",
            "orgo-gateway",
            "--test",
            "soak",
            "--",
            "--nocapture",
        ],
        &[("ORGO_SOAK_SECONDS", &seconds)],
    )
}

fn bench_view() -> Result<()> {
    ensure_system_packages()?;
    ensure_packages(BROWSER_PACKAGES)?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    run("cargo", &["bench", "-p", "orgo-gateway", "--bench", "view"])
}

fn bench_agent() -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["bench", "-p", "orgo-agent", "--bench", "agent"])
}

/// A new API key for `account` on `plan`, made with `gateway keys create` on that data dir.
fn new_key(gateway: &Path, data: &Path, account: &str, plan: &str) -> Result<String> {
    let out = Command::new(gateway)
        .args(["keys", "create", "--account", account, "--plan", plan])
        .env("ORGO_DATA_DIR", data)
        .output()
        .context("cannot run orgo-gateway keys create")?;
    if !out.status.success() {
        bail!(
            "orgo-gateway keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout
        .lines()
        .last()
        .context("no key printed")?
        .trim()
        .to_string())
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
            let key = new_key(&gateway, &data, "dev", "free")?;
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
