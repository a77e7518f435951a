//! Helpers shared by the gateway's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

pub mod browser;
pub mod fake;
pub mod grpc;
pub mod inproc;
pub mod k8s;
pub mod load;
pub mod postgres;
pub mod python;
pub mod sdk;
pub mod terminal;

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
    let mut args = vec!["build", "-q", "-p", "orgo-agent", "--bin", "orgo-agent"];
    if dir.ends_with("release") {
        args.push("--release");
    }
    let status = std::process::Command::new(cargo).args(args).status().unwrap();
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

/// The committed OpenAPI document, used to check that real answers match what it promises.
pub struct ApiDoc {
    doc: serde_json::Value,
}

/// A JSON pointer segment, also fit for a URI fragment.
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

impl ApiDoc {
    pub fn load() -> ApiDoc {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
        ApiDoc {
            doc: serde_json::from_str(&text).unwrap(),
        }
    }

    /// Every operation the document has that takes the API key (not a download link's, whose
    /// token is its credential): method (upper case), path template under `/api`, and whether
    /// it takes a JSON request body (a file's raw content is no JSON to break).
    pub fn operations(&self) -> Vec<(String, String, bool)> {
        let mut ops = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let keyless = op["security"].as_array().is_some_and(Vec::is_empty);
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) && !keyless {
                    ops.push((
                        method.to_uppercase(),
                        path.clone(),
                        op["requestBody"]["content"].get("application/json").is_some(),
                    ));
                }
            }
        }
        ops
    }

    /// The document's path template for a request path under `/api`: the one whose segments
    /// match, preferring literal segments over `{params}`.
    fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap().strip_prefix("/api")?;
        let segs: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|t| {
                let tsegs: Vec<&str> = t.split('/').collect();
                let fits = tsegs.len() == segs.len()
                    && tsegs.iter().zip(&segs).all(|(t, s)| t.starts_with('{') || t == s);
                fits.then(|| (tsegs.iter().filter(|t| !t.starts_with('{')).count(), t.clone()))
            })
            .max()
            .map(|(_, t)| t)
    }

    /// Panics unless the document has this operation and status and `body` fits its schema.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &serde_json::Value) {
        let raw_op = self
            .template(path)
            .map(|t| {
                format!(
                    "/paths/{}/{}",
                    t.replace('~', "~0").replace('/', "~1"),
                    method.to_lowercase()
                )
            })
            .filter(|op| self.doc.pointer(op).is_some());
        let Some(raw_op) = raw_op else {
            // Routes and methods the API does not have answer the common error shape.
            assert!(
                status == 404 || status == 405,
                "{method} {path}: undocumented, yet answered {status}"
            );
            return self.validate("#/components/schemas/Error", method, path, status, body);
        };
        let op = raw_op.replace('{', "%7B").replace('}', "%7D");
        let mut response = format!("{op}/responses/{status}");
        let resolved = self
            .doc
            .pointer(&format!("{raw_op}/responses/{status}"))
            .unwrap_or_else(|| {
                panic!("{method} {raw_op}: status {status} is not documented (answer {body})")
            });
        if let Some(r) = resolved["$ref"].as_str() {
            response = r.trim_start_matches('#').to_string();
        }
        let schema_at = format!(
            "#{response}/content/{}/schema",
            pointer_escape("application/json")
        );
        self.validate(&schema_at, method, path, status, body);
    }

    fn validate(&self, schema_at: &str, method: &str, path: &str, status: u16, body: &serde_json::Value) {
        // Compiled validators by schema pointer, for the whole test binary: compiling one takes
        // milliseconds, and the tests check thousands of answers against a few dozen schemas
        // of the one committed document.
        static VALIDATORS: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
        > = std::sync::OnceLock::new();
        let validator = VALIDATORS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(schema_at.to_string())
            .or_insert_with(|| {
                let mut schema = self.doc.clone();
                schema["$ref"] = serde_json::Value::String(schema_at.to_string());
                std::sync::Arc::new(
                    jsonschema::draft202012::new(&schema).expect("openapi.json schemas compile"),
                )
            })
            .clone();
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "{method} {path} → {status}: answer does not match openapi.json: {problems:?}\n{body}"
        );
    }
}

/// The environment of a gateway process on its own data dir and port.
pub fn gateway_env(dir: &std::path::Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("ORGO_DATA_DIR", dir.to_str().unwrap().to_string()),
        ("ORGO_LISTEN", format!("127.0.0.1:{port}")),
        ("ORGO_AGENT_BIN", agent_bin().to_str().unwrap().to_string()),
        ("RUST_LOG", "warn".to_string()),
        // No warm pool unless a test asks: its desktops would come and go under the others.
        ("ORGO_POOL", "none".to_string()),
    ]
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `orgo-gateway keys ARGS…` on that environment: (succeeded, stdout, stderr).
pub fn keys(env: &[(&'static str, String)], args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orgo-gateway"))
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
}

/// A new key for `account` (made on that plan), from the CLI's last line.
pub fn new_key(env: &[(&'static str, String)], account: &str, plan: &str) -> String {
    let (ok, out, err) = keys(env, &["create", "--account", account, "--plan", plan]);
    assert!(ok, "keys create: {err}");
    out.lines().last().unwrap().trim().to_string()
}

/// A running `orgo-gateway serve`, terminated on drop.
pub struct Served {
    child: Option<std::process::Child>,
    pub base: String,
    pub http: ureq::Agent,
}

impl Served {
    pub fn start(env: &[(&'static str, String)], port: u16) -> Served {
        Served::start_with(env, port, &[])
    }

    /// `serve ARGS…`, listening on `port` (as the environment says).
    pub fn start_with(env: &[(&'static str, String)], port: u16, args: &[&str]) -> Served {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_orgo-gateway"))
            .arg("serve")
            .args(args)
            .envs(env.iter().cloned())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "gateway did not listen");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Served::attach(child, port)
    }

    /// A gateway process started otherwise, already listening on `port`.
    pub fn attach(child: std::process::Child, port: u16) -> Served {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Served {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}/api"),
            http,
        }
    }

    /// One API call: (status, JSON body or null).
    pub fn call(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {key}");
        let result = match (method, body) {
            ("GET", _) => self.http.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.http.delete(&url).header("Authorization", &auth).call(),
            (_, Some(b)) => self.http.post(&url).header("Authorization", &auth).send_json(b),
            (_, None) => self.http.post(&url).header("Authorization", &auth).send_empty(),
        };
        let mut r = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(serde_json::Value::Null),
        )
    }

    /// `GET /healthz` (outside `/api`, no key).
    pub fn health(&self) -> serde_json::Value {
        let url = format!("{}/healthz", self.base.trim_end_matches("/api"));
        let mut r = self
            .http
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET /healthz: {e}"));
        r.body_mut().read_json().unwrap_or(serde_json::Value::Null)
    }

    /// Whether the gateway process is still there.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `GET path` outside `/api` (`/healthz`, `/metrics`, the live view's): (status, body).
    pub fn get_root(&self, path: &str) -> (u16, String) {
        let root = self.base.strip_suffix("/api").unwrap_or(&self.base);
        let mut r = self
            .http
            .get(format!("{root}{path}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Sends the gateway `signal` and answers its exit status.
    pub fn end(mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

/// Pids of a local desktop's processes, from the desktop's cgroup (none once a stop has
/// removed the group).
pub fn desktop_processes(desktop_id: &str) -> Vec<i32> {
    let cgroups = orgo_gateway::runtime::cgroup::Cgroups::detect();
    let procs = cgroups
        .limit_file(desktop_id, "pids")
        .or_else(|| cgroups.limit_file(desktop_id, "memory"))
        .expect("the desktop's cgroup")
        .with_file_name("cgroup.procs");
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|p| p.parse::<i32>().ok())
        .collect()
}

/// Pids of a local desktop's processes named `comm`.
pub fn desktop_pids(desktop_id: &str, comm: &str) -> Vec<i32> {
    desktop_processes(desktop_id)
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect()
}

/// Resident memory of this test process (and so of an in-process gateway), in bytes.
pub fn own_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// Open descriptors of this test process.
pub fn own_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The ids of the warm pool's running desktops, as the store has them.
pub async fn pooled_ids(store: &dyn orgo_gateway::store::Store) -> std::collections::BTreeSet<String> {
    let Some(pool) = store
        .account_by_name(orgo_gateway::desktops::POOL_ACCOUNT)
        .await
        .unwrap()
    else {
        return Default::default();
    };
    store
        .computers_of_account(&pool.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.status.as_str() == "running")
        .map(|c| c.id)
        .collect()
}
