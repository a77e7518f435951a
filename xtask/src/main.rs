//! `cargo xtask`: every developer command that is not plain cargo. It depends on nothing that
//! needs a system library, so it builds on a fresh machine and installs what the rest needs.
//!
//! - `cargo xtask up` — install missing system packages, build, run the gateway with a dev key.
//! - `cargo xtask ci` — everything CI runs: system packages, fmt, clippy, the image, all tests,
//!   the short API and parser fuzzing runs.
//! - `cargo xtask image [minimal|desktop]` — a desktop image built offline, imported to Docker.
//! - `cargo xtask image gateway` — the gateway's image, for Kubernetes (`deploy/kubernetes/`).
//! - `cargo xtask bench [agent|gateway|sandbox|docker|kubernetes]` — the agent, and the REST
//!   API (on local desktops, unsandboxed and sandboxed ones, local and Docker desktops, or the
//!   test cluster's Pods), against the reference stack, side by side.
//! - `cargo xtask bench grpc` — the gateway's gRPC beside its REST API and the agent's socket.
//! - `cargo xtask bench view` — the live view in a real browser.
//! - `cargo xtask load …` and `cargo xtask soak --minutes N` — load and leak checks.
//! - `cargo xtask fuzz-api [--long] [--postgres]` — schemathesis against the served OpenAPI
//!   document, on SQLite and local desktops or on PostgreSQL and Docker desktops.
//! - `cargo xtask fuzz-parsers [--seconds N]` — the cargo-fuzz targets in `fuzz/`.
//! - `cargo xtask k8s up|down|status` — a real two-node Kubernetes cluster on this machine for
//!   the Kubernetes runtime, built offline from Debian's packages (as root).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
mod fuzz;
mod image;
mod k8s;
mod system;
#[cfg(test)]
mod tidy;

use bench::{bench_agent, bench_gateway, bench_grpc, bench_view, load, soak};
use image::image;
use system::{BROWSER_PACKAGES, ensure_packages, ensure_system_packages, output, root, run};

pub const USAGE: &str = "usage: cargo xtask <command>

commands:
  up            install missing system packages, build, and run the gateway with a dev key
  ci            install missing system packages, then fmt check, clippy -D warnings, the desktop
                image when missing, all tests, the short API and parser fuzzing runs
  image [minimal|desktop]
                build a desktop image offline from Debian's packages and import it into Docker
  image gateway the gateway's image (orgo/gateway:<version>, the release binary, uid 10001) the
                same way, for deploy/kubernetes/
  bench agent   benchmark the agent against xdotool + scrot + a spawned python3
  bench gateway benchmark the REST API on local desktops against the same reference stack
  bench sandbox the same on local desktops with local_sandbox = \"none\" beside sandboxed ones,
                in one run: what the sandbox costs
  bench docker  the same on Docker desktops, beside local ones, in one run
  bench kubernetes  the same on Pods of the test cluster (cargo xtask k8s up)
  bench grpc    the gateway's gRPC against its REST API and the agent's own socket on a local
                desktop (p50/p90, the gateway's added ms), and 64 gRPC streams on 8 desktops
  bench view    the live view in headless Chromium: fps, latency, bytes/s, agent CPU
  load [--clients N] [--desktops M] [--seconds S] [--docker]
                N clients mixing screenshots, clicks, keys, typing and bash on M desktops:
                p50/p99 per route, answers by status (32, 8, 30 s, local runtime)
  soak --minutes N
                create/act/delete desktops in a loop, checking nothing leaks (also
                ORGO_SOAK_RUNTIME=docker); a 20 s soak is part of the tests
  fuzz-api [--long] [--postgres]
                schemathesis (every check) against a served gateway's OpenAPI document; the
                short run is part of ci (once as is, once with --postgres), --long generates
                over 5,000 requests; --postgres serves the gateway on a throw-away PostgreSQL
                (Debian's pg_virtualenv) with Docker desktops
  fuzz-parsers [--seconds N]
                the cargo-fuzz targets in fuzz/ (key combos, typing plans, request bodies,
                output capping), N seconds each (20, as in ci), nightly toolchain
  k8s up        a two-node Kubernetes 1.20 cluster (etcd, control plane, kubelets on their own
                Docker engines in network namespaces, `local` volumes), built once from Debian's
                sources into /var/cache/orgo-k8s; verifies or restarts only what is down; prints
                the kubeconfig path last (root)
  k8s down      stop it and clean up after it (keeps the build, credentials and node images)
  k8s status    one line per process and node, failing unless all are up";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["up"] => up(),
        ["ci"] => ci(),
        ["image"] | ["image", "minimal"] => image("minimal"),
        ["image", "desktop"] => image("desktop"),
        ["image", "gateway"] => image::gateway_image(),
        ["bench"] => bench_agent().and_then(|()| bench_gateway("local")),
        ["bench", "agent"] => bench_agent(),
        ["bench", "gateway"] => bench_gateway("local"),
        ["bench", "grpc"] => bench_grpc(),
        ["bench", "view"] => bench_view(),
        ["load", rest @ ..] => load(rest),
        ["soak", "--minutes", n] => soak(n),
        ["k8s", rest @ ..] => k8s::command(rest),
        ["fuzz-api", flags @ ..] => fuzz::api_command(flags),
        ["fuzz-parsers"] => fuzz::parsers(fuzz::PARSERS_SHORT),
        ["fuzz-parsers", "--seconds", n] => n
            .parse()
            .map_err(|_| anyhow::anyhow!("--seconds takes a whole number, not {n:?}"))
            .and_then(fuzz::parsers),
        ["bench", "sandbox"] => bench_gateway("local-unsandboxed,local"),
        ["bench", "docker"] => image("minimal").and_then(|()| bench_gateway("local,docker")),
        ["bench", "kubernetes"] => k8s::command(&["up"]).and_then(|()| bench_gateway("kubernetes")),
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

fn ci() -> Result<()> {
    ensure_system_packages()?;
    ensure_packages(BROWSER_PACKAGES)?;
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"],
    )?;
    // The fuzz workspace is built last; a lock file the gateway's new dependencies made stale
    // should fail now, not after the rest has run.
    output(
        "cargo",
        &[
            "metadata",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--locked",
            "--format-version",
            "1",
        ],
    )
    .context(
        "fuzz/Cargo.lock is stale: run `cargo metadata --manifest-path fuzz/Cargo.toml` and commit it",
    )?;
    run(
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
    )?;
    // The Docker runtime's tests need the desktop image; a second build is skipped.
    image("minimal")?;
    // The Kubernetes runtime's tests run on the real cluster of this machine (built once),
    // started afresh: what an earlier run left on a cluster still up (a test that failed before
    // deleting its desktop) holds the nodes' CPUs and volumes, and the next run's desktops
    // found no room.
    k8s::command(&["down"])?;
    k8s::command(&["up"])?;
    // The disk is shared and its free space set from outside: a failure for want of it should
    // show how much there was.
    run("df", &["-h", "."])?;
    test_workspace()?;
    fuzz::api(fuzz::SHORT, fuzz::Backing::Sqlite)?;
    fuzz::api(fuzz::SHORT, fuzz::Backing::Postgres)?;
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

/// A new API key for `account` on `plan`, made with `gateway keys create` on that data dir.
/// A new key for `account` on `plan`, made by the gateway's CLI on that data dir with `env`
/// (a database URL, say) beside it.
pub fn new_key(
    gateway: &Path,
    data: &Path,
    env: &[(&str, String)],
    account: &str,
    plan: &str,
) -> Result<String> {
    let out = Command::new(gateway)
        .args(["keys", "create", "--account", account, "--plan", plan])
        .env("ORGO_DATA_DIR", data)
        .envs(env.iter().map(|(k, v)| (k, v)))
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
            let key = new_key(&gateway, &data, &[], "dev", "free")?;
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
