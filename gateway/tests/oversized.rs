//! Bodies over the limit, sent over real sockets by real clients to a served gateway on each
//! runtime: every client reads the 413 and its sentence — Python's urllib (which sends the
//! whole body before reading, and saw `BrokenPipeError` when the gateway answered and closed
//! early), curl with its `Expect: 100-continue` (answered before it sends the body) and curl
//! without it — and the gateway goes on serving.

mod common;

use std::path::Path;
use std::process::Command;

/// Over the default 2 MiB limit, as in the report from the field.
const BODY_BYTES: usize = 12_000_000;
/// Each client sends several times: a reset connection showed up in some runs only.
const TRIES: usize = 5;

const URLLIB: &str = r#"
import json, sys, urllib.error, urllib.request
url, key, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
request = urllib.request.Request(url, data=b"x" * size, method="POST", headers={
    "Authorization": "Bearer " + key, "Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=60)
    print("no error status")
except urllib.error.HTTPError as answer:
    print(answer.code, json.loads(answer.read())["error"])
"#;

fn urllib(url: &str, key: &str, body: &Path) -> String {
    let size = std::fs::metadata(body).unwrap().len().to_string();
    let out = Command::new("python3")
        .args(["-c", URLLIB, url, key, &size])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// curl's status line and body; `expect` false takes `Expect: 100-continue` away, so curl
/// sends the body straight away.
fn curl(url: &str, key: &str, body: &Path, expect: bool) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", "POST", url, "-w", "\n%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()));
    if !expect {
        cmd.args(["-H", "Expect:"]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (answer, code) = stdout.trim().rsplit_once('\n').unwrap_or(("", stdout.trim()));
    let error = serde_json::from_str::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| format!("{answer:?} {}", String::from_utf8_lossy(&out.stderr)));
    format!("{code} {error}")
}

fn oversized_bodies_get_a_readable_413(runtime: &str) {
    // One runtime at a time: a Docker container started while a local desktop is being set up
    // beside it has failed now and then with "stat /sbin/docker-init: permission denied" from
    // runc (about 1 run in 4 of this pair, never with Docker alone). Not yet understood; see
    // RELIABILITY.md, "Not yet done".
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch(&format!("oversized-{runtime}"));
    let port = common::free_port();
    let mut env = common::gateway_env(&dir, port);
    env.push(("ORGO_RUNTIME", runtime.to_string()));
    let key = common::new_key(&env, "big", "free");
    let served = common::Served::start(&env, port);
    let (status, project) = served.call(&key, "POST", "/projects", Some(serde_json::json!({})));
    assert_eq!(status, 200, "{project}");
    let name = project["name"].as_str().unwrap().to_string();
    let url = format!("{}/computers/{name}/type", served.base);
    let body = dir.join("body");
    std::fs::write(&body, vec![b'x'; BODY_BYTES]).unwrap();

    for _ in 0..TRIES {
        for (client, answer) in [
            ("urllib", urllib(&url, &key, &body)),
            ("curl", curl(&url, &key, &body, true)),
            ("curl without Expect", curl(&url, &key, &body, false)),
        ] {
            assert!(
                answer.starts_with("413 request body is too large"),
                "{runtime}, {client}: {answer}"
            );
        }
    }
    let (status, typed) = served.call(
        &key,
        "POST",
        &format!("/computers/{name}/type"),
        Some(serde_json::json!({"text": "still here"})),
    );
    assert_eq!(status, 200, "the gateway serves on after the refusals: {typed}");
    let id = project["id"].as_str().unwrap();
    let (status, _) = served.call(&key, "DELETE", &format!("/projects/{id}"), None);
    assert_eq!(
        status, 200,
        "a Docker desktop outlives its gateway unless deleted"
    );
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn oversized_bodies_get_a_readable_413_on_the_local_runtime() {
    oversized_bodies_get_a_readable_413("local");
}

/// Needs the desktop image (`cargo xtask image`, run by `cargo xtask ci` first).
#[test]
fn oversized_bodies_get_a_readable_413_on_the_docker_runtime() {
    oversized_bodies_get_a_readable_413("docker");
}
