//! The real `orgo` Python SDK (0.0.47 from PyPI, unchanged) against a real `orgo-gateway` process
//! on real desktops: `sdk_check.py` drives every SDK method and checks its effect.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A venv under target/ with exactly the pinned SDK and Pillow (`sdk-requirements.txt`, hashes
/// checked), made by `python-venv.sh` on a Python 3.12 or newer and reused while the file is
/// unchanged.
fn sdk_python() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sdk-venv");
    let made = Command::new("bash")
        .arg(tests.join("python-venv.sh"))
        .arg(tests.join("sdk-requirements.txt"))
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success(), "python-venv.sh could not make the SDK's venv");
    venv.join("bin/python")
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
