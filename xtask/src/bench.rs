//! Benchmarks, load and soak: each builds what it measures in release mode and runs the
//! matching cargo bench or test with its sizes passed through the environment.

use anyhow::{Context, Result, bail};

use crate::image::image;
use crate::system::{BROWSER_PACKAGES, ensure_packages, ensure_system_packages, run, run_with};

pub fn bench_agent() -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["bench", "-p", "orgo-agent", "--bench", "agent"])
}

/// The REST bench on the runtimes named (comma-separated), side by side.
pub fn bench_gateway(runtimes: &str) -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    run_with(
        "cargo",
        &["bench", "-p", "orgo-gateway", "--bench", "gateway"],
        &[("ORGO_BENCH_RUNTIMES", runtimes)],
    )
}

/// The gRPC bench: the gateway's gRPC beside its REST API and the agent's own socket.
pub fn bench_grpc() -> Result<()> {
    ensure_system_packages()?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    run("cargo", &["bench", "-p", "orgo-gateway", "--bench", "grpc"])
}

pub fn bench_view() -> Result<()> {
    ensure_system_packages()?;
    ensure_packages(BROWSER_PACKAGES)?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    run("cargo", &["bench", "-p", "orgo-gateway", "--bench", "view"])
}

/// `cargo xtask load`: the load bench with the sizes given.
pub fn load(args: &[&str]) -> Result<()> {
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
            other => bail!("unknown load option {other:?}\n\n{}", crate::USAGE),
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
pub fn soak(minutes: &str) -> Result<()> {
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
