//! The Kubernetes test cluster as the tests use it: the one `cargo xtask k8s up` runs on this
//! machine (a real API server, scheduler, controller manager and two kubelet nodes; `cargo
//! xtask ci` starts it before the tests), a scratch namespace per test, and gateway processes
//! on the Kubernetes runtime serving desktops there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};

use super::{Served, free_port, gateway_env};

/// Where `cargo xtask k8s up` writes the cluster's admin kubeconfig.
pub const KUBECONFIG: &str = "/var/lib/orgo-k8s/cluster/kubeconfig";

/// The admin kubeconfig; panics, saying what to run, when the cluster was never started.
pub fn kubeconfig() -> PathBuf {
    let path = PathBuf::from(KUBECONFIG);
    assert!(
        path.exists(),
        "no test cluster ({KUBECONFIG} is missing): run `cargo xtask k8s up` first (`cargo xtask ci` does)"
    );
    path
}

/// An admin client of the test cluster.
pub async fn client() -> kube::Client {
    let file = kube::config::Kubeconfig::read_from(kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A new, empty namespace for one test (named after it and this process).
pub async fn scratch_namespace(client: &kube::Client, tag: &str) -> String {
    let name = format!("orgo-test-{tag}-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    delete_namespace(client, &name).await;
    let ns: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    name
}

/// Deletes a namespace and waits (bounded) until it is gone, so its claims let their volumes go.
pub async fn delete_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::default()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while namespaces.get_opt(name).await.ok().flatten().is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The config file of a gateway on the Kubernetes runtime in `namespace`: `free` and `pro`
/// plans as the defaults', and a `big` one whose limits are beyond any node; `top` holds more top-level
/// settings (`image = …`).
pub fn write_config(dir: &Path, namespace: &str, top: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    let text = format!(
        "runtime = \"kubernetes\"\n\
         disk_size_gb = 1\n\
         {top}\n\
         [plans.free]\nmax_desktops = 4\nmax_ram_gb = 8\nmax_cpu = 4\n\
         [plans.pro]\nmax_desktops = 10\nmax_ram_gb = 64\nmax_cpu = 32\nrequests_per_second = 500\n\
         [plans.big]\nmax_desktops = 4\nmax_ram_gb = 512\nmax_cpu = 64\n\
         [kubernetes]\nkubeconfig = \"{}\"\nnamespace = \"{namespace}\"\nstorage_class = \"local\"\n",
        kubeconfig().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A served gateway on the Kubernetes runtime in `namespace`, and a key of `plan`.
pub struct Gateway {
    pub served: Served,
    pub key: String,
    pub env: Vec<(&'static str, String)>,
    pub config: PathBuf,
}

impl Gateway {
    /// Serves a gateway with `top` settings added to its config (see [`write_config`]).
    pub fn start(tag: &str, namespace: &str, plan: &str, top: &str) -> Gateway {
        let dir = super::scratch(tag);
        let port = free_port();
        let config = write_config(&dir, namespace, top);
        let env = gateway_env(&dir, port);
        let key = new_key_with(&env, &config, plan);
        let served = Served::start_with(&env, port, &["--config", config.to_str().unwrap()]);
        Gateway {
            served,
            key,
            env,
            config,
        }
    }

    /// One call with this gateway's key: (status, body).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.served.call(&self.key, method, path, body)
    }

    /// One call that must answer 200.
    pub fn ok(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let (status, v) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    /// A new desktop of half a core and 1 GB (two nodes on a two-core machine hold few whole
    /// cores): its computer path.
    pub fn desktop(&self, workspace: &str, name: &str) -> String {
        let ws = match self.call(
            "POST",
            "/projects",
            Some(serde_json::json!({ "name": workspace })),
        ) {
            (200, v) => v,
            (_, _) => self.ok("GET", &format!("/projects/{workspace}"), None),
        };
        let c = self.ok(
            "POST",
            "/computers",
            Some(serde_json::json!({
                "workspace_id": ws["id"], "name": name, "ram": 1, "cpu": 0.5,
            })),
        );
        assert_eq!(c["status"], "running", "{c}");
        format!("/computers/{}", c["id"].as_str().unwrap())
    }

    /// `command` in the desktop's bash: its output.
    pub fn bash(&self, computer: &str, command: &str) -> String {
        let v = self.ok(
            "POST",
            &format!("{computer}/bash"),
            Some(serde_json::json!({ "command": command })),
        );
        v["output"].as_str().unwrap_or_default().to_string()
    }
}

/// `orgo-gateway keys create` with this config: the new key.
pub fn new_key_with(env: &[(&'static str, String)], config: &Path, plan: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orgo-gateway"))
        .args(["keys", "--config", config.to_str().unwrap()])
        .args(["create", "--account", &format!("acct-{plan}"), "--plan", plan])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

/// One test at a time: the two nodes share this machine's two cores, and a fault test upsets
/// the whole cluster.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the cluster for one test (see [`ONE_AT_A_TIME`]).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A runtime for the tests' kube-rs calls (the gateway is reached over blocking HTTP).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
