//! Helpers shared by the gateway's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

/// The orgo-agent binary of this build, built first if needed.
pub fn agent_bin() -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let bin = dir.join("orgo-agent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "orgo-agent", "--bin", "orgo-agent"])
        .status()
        .unwrap();
    assert!(status.success() && bin.exists(), "orgo-agent must build");
    bin
}

/// A fresh scratch directory for one test.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orgo-gw-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
