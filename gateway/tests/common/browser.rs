//! A real headless Chromium driven over WebDriver (Debian's chromium and chromedriver), and a
//! gateway served on loopback for it to open.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose window is `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = super::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; `cargo xtask ci` installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser { client, driver }
    }

    /// Runs `script` (a function body) in the page and answers its return value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Polls `script` until it returns something truthy, or panics after `secs` with `what`.
    pub async fn until(&self, script: &str, secs: u64, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false)) {
                return v;
            }
            if Instant::now() > deadline {
                let stats = self.js("return window.orgoViewer || null").await;
                panic!("{what}: timed out; viewer state {stats}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens a viewer link in a fresh page and waits until it shows frames.
    pub async fn open_viewer(&self, url: &str) {
        // Through a blank page: a change of fragment alone would keep the old page a moment.
        self.client.goto("about:blank").await.unwrap();
        self.client.goto(url).await.unwrap();
        self.until(
            "const v = window.orgoViewer; return v && v.state === 'live' && v.frames > 0;",
            20,
            "the viewer goes live",
        )
        .await;
    }

    pub async fn close(self) {
        let Browser { client, mut driver } = self;
        let _ = client.close().await;
        let _ = driver.kill();
        let _ = driver.wait();
    }
}
