//! A gateway driven in-process through its router, each answer checked against openapi.json.

use std::future::IntoFuture;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use orgo_gateway::config::Config;
use orgo_gateway::runtime::Runtime;
use orgo_gateway::state::AppState;

use super::fake::FakeRuntime;

/// The gateway's warnings (each failed request's detail) land in a failing test's output.
fn log_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
}

pub struct Gateway {
    pub state: AppState,
    pub doc: super::ApiDoc,
    pub dir: std::path::PathBuf,
    /// The fake runtime under a gateway made by [`Gateway::fake`], [`Gateway::fake_with`].
    fake: Option<FakeRuntime>,
    /// The router over `state`, made once (making one renders the OpenAPI document).
    router: axum::Router,
}

impl Gateway {
    pub async fn new(tag: &str) -> Gateway {
        Self::with(tag, |_| {}).await
    }

    pub async fn with(tag: &str, adjust: impl FnOnce(&mut Config)) -> Gateway {
        log_warnings();
        let dir = super::scratch(tag);
        // No warm pool unless a test asks: its desktops would come and go under the others.
        let mut config = Config {
            data_dir: dir.clone(),
            agent_bin: Some(super::agent_bin()),
            pool: Vec::new(),
            ..Config::default()
        };
        adjust(&mut config);
        config.validate().unwrap();
        Self::over(dir, orgo_gateway::build_state(config).await.unwrap(), None)
    }

    /// A gateway over a [`FakeRuntime`] (reached with [`Gateway::runtime`]): no Xvfb, sandbox or
    /// agent binary is needed or built, and each desktop is an in-process stub agent.
    pub async fn fake(tag: &str) -> Gateway {
        Self::fake_with(tag, |_| {}).await
    }

    /// [`Gateway::fake`] with the config adjusted first (plans, deadlines, screen size, …).
    pub async fn fake_with(tag: &str, adjust: impl FnOnce(&mut Config)) -> Gateway {
        log_warnings();
        let dir = super::scratch(tag);
        let mut config = Config {
            data_dir: dir.join("data"),
            pool: Vec::new(),
            ..Config::default()
        };
        adjust(&mut config);
        config.validate().unwrap();
        let fake = FakeRuntime::new(&dir.join("agents"));
        let runtime: Arc<dyn Runtime> = Arc::new(fake.clone());
        let state = orgo_gateway::build_state_with(config, runtime).await.unwrap();
        Self::over(dir, state, Some(fake))
    }

    fn over(dir: std::path::PathBuf, state: AppState, fake: Option<FakeRuntime>) -> Gateway {
        Gateway {
            router: orgo_gateway::app(state.clone()),
            state,
            dir,
            doc: super::ApiDoc::load(),
            fake,
        }
    }

    /// The fake runtime of a gateway made by [`Gateway::fake`]: its agents' call log, the
    /// faults to inject.
    pub fn runtime(&self) -> &FakeRuntime {
        self.fake
            .as_ref()
            .expect("a gateway made by Gateway::fake has a fake runtime")
    }

    /// Serves this gateway's router on a loopback port, as `orgo-gateway serve` does (HTTP/1
    /// and HTTP/2, REST and gRPC), until the test's runtime ends: its `http://` address.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, self.router.clone()).into_future());
        address
    }

    pub async fn key(&self, account: &str) -> String {
        orgo_gateway::create_key(self.state.store.as_ref(), &self.state.config, account, None, None)
            .await
            .unwrap()
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let auth = key.map(|k| format!("Bearer {k}"));
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, _, value) = self.send_raw(method, path, auth.as_deref(), body).await;
        (status, value)
    }

    /// A request with any `Authorization` value and body bytes: the status, the headers and
    /// the answer (JSON, checked against the document, or `{"raw": text}`).
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Value) {
        self.send_typed(method, path, authorization, None, body).await
    }

    /// [`Gateway::send_raw`] with a `Content-Type` (a multipart upload's).
    pub async fn send_typed(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(t) = content_type {
            req = req.header(header::CONTENT_TYPE, t);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(
            is_json || status.is_success(),
            "{method} {path}: an error that is not JSON"
        );
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) }));
        if is_json && path.starts_with("/api/") {
            self.doc.check(method, path, status.as_u16(), &value);
        }
        (status, headers, value)
    }

    pub async fn ok(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> Value {
        let (status, v) = self.send(method, path, Some(key), body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {v}");
        v
    }
}

impl Gateway {
    /// `command` through a computer's `/bash` (with `timeout` seconds, or the default); the
    /// answer, which must be a 200.
    pub async fn bash(&self, key: &str, computer: &str, command: &str, timeout: Option<f64>) -> Value {
        let mut body = json!({ "command": command });
        if let Some(t) = timeout {
            body["timeout"] = json!(t);
        }
        self.ok("POST", &format!("{computer}/bash"), key, Some(body))
            .await
    }

    /// Polls a computer whose processes were killed until the gateway answers that it stopped
    /// (409: "stopped unexpectedly", or "stopped while this call ran" when the kill landed
    /// during the screenshot); meanwhile only success or a 5xx is acceptable.
    pub async fn until_noticed_dead(&self, key: &str, computer: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, v) = self
                .send("GET", &format!("{computer}/screenshot"), Some(key), None)
                .await;
            if status == StatusCode::CONFLICT {
                let error = v["error"].as_str().unwrap();
                assert!(
                    error.contains("stopped unexpectedly") || error.contains("stopped while this call ran"),
                    "{v}"
                );
                return;
            }
            assert!(status == StatusCode::OK || status.as_u16() >= 500, "{status} {v}");
            assert!(
                std::time::Instant::now() < deadline,
                "the dead desktop was never noticed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
