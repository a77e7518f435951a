//! The Kubernetes runtime as users reach it, on the real test cluster (`cargo xtask k8s up`):
//! README's quick start with curl, the live view page, the unchanged `orgo` SDK, two gateway
//! replicas on one PostgreSQL serving the same desktops, and a gateway refused the rights it
//! needs stopping at start naming them — and starting under exactly `deploy/kubernetes/rbac.yaml`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::k8s::{self, Gateway};
use common::{Served, free_port, gateway_env};
use serde_json::{Value, json};

/// `curl ARGS…` as README writes it: the answer's body as JSON.
fn curl(args: &[&str]) -> Value {
    let out = Command::new("curl").arg("-sS").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("curl {args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The tests here one at a time: the two-node test cluster shares this machine's two cores, and
/// beside the replicas test the quick start's desktop had its window manager leave a new window
/// unmapped for over 20 s (its map state read back as IsUnMapped; alone it maps at once).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn the_quick_start_the_live_view_and_the_sdk_work_on_kubernetes() {
    let _alone = one_at_a_time();
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "users"));
    let gw = Gateway::start("k8s-users", &ns, "free", "");
    let (base, auth) = (
        gw.served.base.clone(),
        format!("Authorization: Bearer {}", gw.key),
    );

    // README's quick start, as written there.
    let project = curl(&[
        "-X",
        "POST",
        &format!("{base}/projects"),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"config": {"ram": 2, "cpu": 2}}"#,
    ]);
    assert_eq!(project["status"], "active", "{project}");
    assert_eq!(project["desktop"]["status"], "running", "{project}");
    let name = project["name"].as_str().unwrap();
    let shot = curl(&[&format!("{base}/computers/{name}/screenshot"), "-H", &auth]);
    assert!(
        shot["image"].as_str().is_some_and(|i| i.len() > 1000),
        "a screenshot"
    );
    let typed = curl(&[
        "-X",
        "POST",
        &format!("{base}/computers/{name}/type"),
        "-H",
        &auth,
        "-d",
        r#"{"text": "Hello world"}"#,
    ]);
    assert_eq!(typed["success"], true, "{typed}");

    // The live view's page, from the answer's link.
    let url = project["desktop"]["url"].as_str().unwrap();
    let path = &url[url.find("/desktops/").unwrap()..];
    let (status, page) = gw.served.get_root(path.split('#').next().unwrap());
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));
    gw.ok(
        "DELETE",
        &format!("/projects/{}", project["id"].as_str().unwrap()),
        None,
    );

    // The unchanged SDK, every method.
    common::sdk::check(&base, &gw.key);
    drop(gw);
    rt.block_on(k8s::delete_namespace(&client, &ns));
}

#[test]
fn two_replicas_on_one_postgresql_serve_the_same_kubernetes_desktops() {
    let _alone = one_at_a_time();
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "replicas"));
    let mut db = common::postgres::Cluster::start("k8s-replicas");
    let url = db.database();
    let replica = |tag: &str| {
        let dir = common::scratch(tag);
        let port = free_port();
        let config = k8s::write_config(&dir, &ns, "");
        let mut env = gateway_env(&dir, port);
        env.push(("ORGO_DATABASE_URL", url.clone()));
        (
            env.clone(),
            config.clone(),
            Served::start_with(&env, port, &["--config", config.to_str().unwrap()]),
        )
    };
    let (env, config, a) = replica("k8s-replica-a");
    let (_, _, b) = replica("k8s-replica-b");
    let key = k8s::new_key_with(&env, &config, "free");

    let (status, ws) = a.call(&key, "POST", "/projects", Some(json!({"name": "shared"})));
    assert_eq!(status, 200, "{ws}");
    let (status, made) = a.call(
        &key,
        "POST",
        "/computers",
        Some(json!({"workspace_id": ws["id"], "name": "both", "ram": 1, "cpu": 0.5})),
    );
    assert_eq!((status, &made["status"]), (200, &json!("running")), "{made}");
    let (status, v) = b.call(
        &key,
        "POST",
        "/computers/both/bash",
        Some(json!({"command": "echo kept > ~/kept"})),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = b.call(&key, "POST", "/computers/both/stop", None);
    assert_eq!((status, &v["status"]), (200, &json!("stopped")), "{v}");
    let (_, seen) = a.call(&key, "GET", "/computers/both", None);
    assert_eq!(seen["status"], "stopped", "{seen}");
    let (status, v) = a.call(&key, "POST", "/computers/both/start", None);
    assert_eq!((status, &v["status"]), (200, &json!("running")), "{v}");
    let (status, v) = b.call(
        &key,
        "POST",
        "/computers/both/bash",
        Some(json!({"command": "cat ~/kept"})),
    );
    assert_eq!((status, &v["output"]), (200, &json!("kept\n")), "{v}");
    let (status, v) = b.call(&key, "DELETE", "/computers/both", None);
    assert_eq!(status, 200, "{v}");
    drop((a, b));
    rt.block_on(k8s::delete_namespace(&client, &ns));
}

/// The kubectl `cargo xtask k8s up` built.
fn kubectl() -> PathBuf {
    std::fs::read_dir("/var/cache/orgo-k8s")
        .expect("the test cluster's build (cargo xtask k8s up)")
        .filter_map(|e| Some(e.ok()?.path().join("bin/kubectl")))
        .find(|p| p.exists())
        .expect("kubectl in /var/cache/orgo-k8s/*/bin")
}

/// `kubectl ARGS…` as the cluster's admin, with `stdin`: its output.
fn kubectl_admin(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(k8s::kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kubeconfig for the ServiceAccount `name` of `namespace`, by its token.
fn service_account_kubeconfig(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let secret = loop {
        let s = kubectl_admin(
            &[
                "-n",
                namespace,
                "get",
                "serviceaccount",
                name,
                "-o",
                "jsonpath={.secrets[0].name}",
            ],
            "",
        );
        if !s.is_empty() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no token Secret for {name}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let token = kubectl_admin(
        &[
            "-n",
            namespace,
            "get",
            "secret",
            &secret,
            "-o",
            "jsonpath={.data.token}",
        ],
        "",
    );
    let token =
        String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token).unwrap())
            .unwrap();
    let admin = kube::config::Kubeconfig::read_from(k8s::kubeconfig()).unwrap();
    let admin = serde_json::to_value(&admin).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": cluster }],
        "users": [{ "name": name, "user": { "token": token } }],
        "contexts": [{ "name": "test", "context": { "cluster": "test", "user": name, "namespace": namespace } }],
        "current-context": "test",
    });
    let path = dir.join(format!("{name}.kubeconfig"));
    // JSON is YAML: kubeconfig readers take it as it is.
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[test]
fn a_gateway_refused_a_right_says_which_and_deploys_rbac_is_enough() {
    let _alone = one_at_a_time();
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "rbac"));
    let dir = common::scratch("k8s-rbac");
    // deploy/kubernetes/rbac.yaml as it is, in this test's namespace.
    let rbac =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/rbac.yaml"))
            .unwrap()
            .replace("namespace: orgo\n", &format!("namespace: {ns}\n"));
    kubectl_admin(&["apply", "-f", "-"], &rbac);
    let sa_config = service_account_kubeconfig(&dir, &ns, "orgo-gateway");
    let serve = |tag: &str| {
        let port = free_port();
        let config = k8s::write_config(&common::scratch(tag), &ns, "")
            .to_str()
            .unwrap()
            .to_string();
        let text = std::fs::read_to_string(&config).unwrap().replace(
            &k8s::kubeconfig().display().to_string(),
            &sa_config.display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        (gateway_env(&dir, port), config, port)
    };

    // Under exactly deploy's Role the gateway starts and serves a desktop.
    let (env, config, port) = serve("k8s-rbac-full");
    let key = k8s::new_key_with(&env, Path::new(&config), "free");
    let served = Served::start_with(&env, port, &["--config", &config]);
    let (status, ws) = served.call(&key, "POST", "/projects", Some(json!({"name": "w"})));
    assert_eq!(status, 200, "{ws}");
    let (status, v) = served.call(
        &key,
        "POST",
        "/computers",
        Some(json!({"workspace_id": ws["id"], "name": "sa", "ram": 1, "cpu": 0.5})),
    );
    assert_eq!((status, &v["status"]), (200, &json!("running")), "{v}");
    let (status, v) = served.call(&key, "DELETE", "/computers/sa", None);
    assert_eq!(status, 200, "{v}");
    drop(served);

    // Without `delete` on Pods it refuses to start, naming the verb and the resource.
    let narrower = rbac.replace(
        r#"verbs: ["get", "list", "watch", "create", "patch", "delete"]"#,
        r#"verbs: ["get", "list", "watch", "create", "patch"]"#,
    );
    assert_ne!(narrower, rbac, "rbac.yaml's Pod rule changed: update this test");
    kubectl_admin(&["apply", "-f", "-"], &narrower);
    let (env, config, port) = serve("k8s-rbac-narrow");
    // The Role's change reaches the API server's authorizer within moments.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut child = Command::new(env!("CARGO_BIN_EXE_orgo-gateway"))
        .args(["serve", "--config", &config])
        .envs(env.iter().cloned())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started without delete on pods");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("may not delete pods"), "{stderr}");
    rt.block_on(k8s::delete_namespace(&client, &ns));
}
