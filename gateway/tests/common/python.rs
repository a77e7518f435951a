//! Python programs the tests run against a served gateway (`sdk_check.py`, `grpc_check.py`),
//! each in a venv of its own under target/ holding exactly its hash-pinned requirements.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The python of the venv `target/<name>` with exactly the packages of the hash-pinned
/// `tests/<requirements>` (hashes checked), made by `python-venv.sh` on a Python 3.12 or newer
/// and reused while the file is unchanged.
pub fn venv(requirements: &str, name: &str) -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(name);
    let made = Command::new("bash")
        .arg(tests.join("python-venv.sh"))
        .arg(tests.join(requirements))
        .arg(&venv)
        .status()
        .unwrap();
    assert!(
        made.success(),
        "python-venv.sh could not make {name} from {requirements}"
    );
    venv.join("bin/python")
}

/// Runs `tests/<script>` with `python` and `env`, prints its output and answers it; panics
/// with the output unless it exited 0 and printed `done` (its closing line's words).
pub fn run(python: &Path, script: &str, env: &[(&str, &str)], done: &str) -> String {
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(done), "{script} did not finish (no {done:?})");
    stdout
}
