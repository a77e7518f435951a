//! The real `orgo` Python SDK (0.0.47 from PyPI, unchanged) against a real `orgo-gateway` process
//! on real desktops: `sdk_check.py` drives every SDK method and checks its effect.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SDK: &str = "orgo==0.0.47";

/// A Python the SDK runs on. orgo 0.0.47 says `Requires-Python >=3.7` but uses 3.12 syntax
/// (a backslash inside an f-string expression), so look for 3.12 or newer.
fn base_python() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let mut candidates: Vec<PathBuf> = ["python3.14", "python3.13", "python3.12", "python3"]
        .map(PathBuf::from)
        .to_vec();
    if let Ok(dir) = std::fs::read_dir(Path::new(&home).join(".pyenv/versions")) {
        let mut found: Vec<PathBuf> = dir
            .filter_map(|e| Some(e.ok()?.path().join("bin/python3")))
            .collect();
        found.sort();
        candidates.splice(0..0, found.into_iter().rev());
    }
    let new_enough = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import sys; assert sys.version_info >= (3, 12)"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    candidates
        .into_iter()
        .find(new_enough)
        .expect("the orgo SDK needs Python 3.12 or newer (python3.12+ on PATH or under ~/.pyenv/versions)")
}

/// A venv under target/ with the SDK and Pillow, made on first use.
fn sdk_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sdk-venv");
    let python = venv.join("bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args([
                "-c",
                "import importlib.metadata as m, PIL, orgo; assert m.version('orgo') == '0.0.47'",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let _ = std::fs::remove_dir_all(&venv);
        let made = Command::new(base_python())
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap();
        assert!(
            made.success(),
            "python3 -m venv failed (Debian needs python3-venv)"
        );
        let pip = Command::new(&python)
            .args(["-m", "pip", "install", "-q", SDK, "pillow"])
            .status()
            .unwrap();
        assert!(pip.success(), "pip install {SDK} pillow failed");
    }
    python
}

#[test]
fn the_orgo_sdk_works_unchanged() {
    let python = sdk_python();
    let dir = common::scratch("sdk");
    let port = common::free_port();
    let env = common::gateway_env(&dir, port);
    let key = common::new_key(&env, "sdk", "free");
    let _served = common::Served::start(&env, port);

    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_check.py"))
        .env("ORGO_API_KEY", &key)
        .env("ORGO_BASE_URL", format!("http://127.0.0.1:{port}/api"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sdk: "), "the script did not finish");
    let _ = std::fs::remove_dir_all(&dir);
}
