//! `orgo-gateway` as a process: keys from the CLI, a clean SIGTERM that stops its desktops and
//! records them as stopped, and a second gateway on the same data that starts them again with
//! their files.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Gateway {
    child: Child,
    base: String,
}

fn start(env: &[(&str, String)], port: u16) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_orgo-gateway"))
        .arg("serve")
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Gateway {
        child,
        base: format!("http://127.0.0.1:{port}/api"),
    }
}

impl Gateway {
    fn call(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {key}");
        let mut r = match body {
            Some(b) => agent.post(&url).header("Authorization", &auth).send_json(b),
            None if method == "POST" => agent.post(&url).header("Authorization", &auth).send_empty(),
            None => agent.get(&url).header("Authorization", &auth).call(),
        }
        .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(Value::Null),
        )
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

#[test]
fn sigterm_stops_desktops_cleanly_and_a_new_gateway_starts_them_again() {
    let dir = common::scratch("process");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [
        ("ORGO_DATA_DIR", dir.to_str().unwrap().to_string()),
        ("ORGO_LISTEN", format!("127.0.0.1:{port}")),
        (
            "ORGO_AGENT_BIN",
            common::agent_bin().to_str().unwrap().to_string(),
        ),
    ];
    let keys = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_orgo-gateway"))
            .arg("keys")
            .args(args)
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, out, _) = keys(&["create", "--account", "ops"]);
    assert!(ok);
    let key = out.lines().last().unwrap().trim().to_string();
    assert!(
        key.starts_with("orgo_"),
        "the key alone on the last line: {out:?}"
    );
    let (ok, _, err) = keys(&["create", "--account", "ops", "--plan", "gold"]);
    assert!(!ok && err.contains("gold"), "an unknown plan is refused: {err}");

    let gw = start(&env, port);
    let (status, p) = gw.call(
        &key,
        "POST",
        "/projects",
        Some(json!({"config": {"ram": 2, "cpu": 2}})),
    );
    assert_eq!(status, 200, "{p}");
    let c = format!("/computers/{}", p["name"].as_str().unwrap());
    gw.call(
        &key,
        "POST",
        &format!("{c}/bash"),
        Some(json!({"command": "echo kept > /home/user/f"})),
    );
    let id = p["desktop"]["id"].as_str().unwrap().to_string();
    let status = gw.terminate();
    assert!(status.success(), "{status:?}");
    let left = Command::new("pgrep")
        .args(["-f", &format!("desktops/{id}/run")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "no process of the desktop is left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(
        !dir.join(format!("desktops/{id}/tmp/.X1-lock")).exists(),
        "Xvfb stopped cleanly"
    );

    let gw = start(&env, port);
    let (_, computer) = gw.call(&key, "GET", &c, None);
    assert_eq!(computer["status"], "stopped", "{computer}");
    let (status, _) = gw.call(&key, "POST", &format!("{c}/start"), None);
    assert_eq!(status, 200);
    let (_, out) = gw.call(
        &key,
        "POST",
        &format!("{c}/bash"),
        Some(json!({"command": "cat /home/user/f"})),
    );
    assert_eq!(out["output"], "kept\n");

    let (ok, list, _) = keys(&["list"]);
    let key_id = key.split('_').nth(1).unwrap();
    assert!(ok && list.contains(key_id) && list.contains("live"), "{list}");
    assert!(keys(&["revoke", key_id]).0);
    let (status, v) = gw.call(&key, "GET", "/projects", None);
    assert_eq!(status, 401, "a revoked key is refused: {v}");
    assert!(gw.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}
