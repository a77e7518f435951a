//! The real `orgo` Python SDK (0.0.47 from PyPI, unchanged) against a real `orgo-gateway` process
//! on real desktops: `sdk_check.py` drives every SDK method and checks its effect.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

#[test]
fn the_orgo_sdk_works_unchanged() {
    let python = sdk_python();
    let dir = common::scratch("sdk");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = env!("CARGO_BIN_EXE_orgo-gateway");
    let env = [
        ("ORGO_DATA_DIR", dir.to_str().unwrap().to_string()),
        ("ORGO_LISTEN", format!("127.0.0.1:{port}")),
        (
            "ORGO_AGENT_BIN",
            common::agent_bin().to_str().unwrap().to_string(),
        ),
    ];
    let created = Command::new(gateway)
        .args(["keys", "create", "--account", "sdk"])
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = String::from_utf8(created.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();

    let _served = Served(
        Command::new(gateway)
            .arg("serve")
            .envs(env)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }

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
