//! gRPC from another language's stack: `grpc_check.py` (grpcio, stubs generated from `proto/`
//! at run time) against a real `orgo-gateway` process on local desktops — lifecycle, every kind
//! of Agent call (unary, server streaming, cancelled), desktop tokens, error codes and
//! sentences, reflection and health.

mod common;

use serde_json::json;

#[test]
fn python_grpc_clients_drive_a_desktop() {
    let dir = common::scratch("grpc-python");
    let port = common::free_port();
    let env = common::gateway_env(&dir, port);
    let key = common::new_key(&env, "grpc", "free");
    let other = common::new_key(&env, "grpc-other", "free");
    let served = common::Served::start(&env, port);
    let (status, workspace) = served.call(&key, "POST", "/projects", Some(json!({"name": "grpc"})));
    assert_eq!(status, 200, "POST /projects: {workspace}");
    let workspace = workspace["id"].as_str().expect("the workspace's id");

    let python = common::python::venv("grpc-requirements.txt", "grpc-venv");
    common::python::run(
        &python,
        "grpc_check.py",
        &[
            ("ORGO_GRPC_TARGET", &format!("127.0.0.1:{port}")),
            ("ORGO_API_KEY", &key),
            ("ORGO_OTHER_KEY", &other),
            ("ORGO_WORKSPACE_ID", workspace),
        ],
        "grpc: ok",
    );
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
}
