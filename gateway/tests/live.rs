//! The live view in a real browser (headless Chromium over WebDriver) on a real local desktop:
//! the `url` of a create answer shows the desktop, a click on the scaled canvas lands at the
//! matching desktop point, typed text and combos arrive, a view-only token drives nothing, and
//! expired or foreign tokens are refused.

use std::time::Duration;

use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MOUSE_BUTTON_LEFT, MouseActions, PointerAction,
};
use serde_json::{Value, json};

mod common;

use common::browser::Browser;
use common::inproc::Gateway;
use orgo_gateway::token::{Grant, Mode};

/// A gateway served on loopback whose answers' links point at it.
async fn served_gateway(tag: &str) -> (Gateway, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let public = base.clone();
    let gw = Gateway::with(tag, move |c| c.public_url = Some(public)).await;
    tokio::spawn(axum::serve(listener, orgo_gateway::app(gw.state.clone())).into_future());
    (gw, base)
}

/// The desktop pixel at (x, y) as the page's canvas shows it.
async fn canvas_pixel(browser: &Browser, x: u32, y: u32) -> Vec<u8> {
    let v = browser
        .js(&format!(
            "const c = document.getElementById('screen');
             return Array.from(c.getContext('2d').getImageData({x}, {y}, 1, 1).data).slice(0, 3);"
        ))
        .await;
    serde_json::from_value(v).unwrap()
}

fn near(px: &[u8], rgb: [u8; 3]) -> bool {
    px.iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= 24)
}

/// Where on the page (viewport CSS pixels) the canvas shows desktop point (x, y).
async fn page_point(browser: &Browser, x: u32, y: u32) -> (f64, f64) {
    let v = browser
        .js(&format!(
            "const c = document.getElementById('screen'); const r = c.getBoundingClientRect();
             return [r.left + ({x} + 0.5) * r.width / c.width, r.top + ({y} + 0.5) * r.height / c.height, r.width / c.width];"
        ))
        .await;
    let scale = v[2].as_f64().unwrap();
    assert!(
        scale < 0.95,
        "the canvas is scaled down to the window (scale {scale})"
    );
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

async fn click_at(browser: &Browser, x: u32, y: u32) {
    let (px, py) = page_point(browser, x, y).await;
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo {
            duration: None,
            x: px,
            y: py,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser.client.perform_actions(mouse).await.unwrap();
}

/// Presses and releases each key in turn; `CTRL` held around `held`.
async fn keys(browser: &Browser, text: &str) {
    let mut actions = KeyActions::new("keyboard".into());
    for c in text.chars() {
        actions = actions
            .then(KeyAction::Down { value: c })
            .then(KeyAction::Up { value: c });
    }
    browser.client.perform_actions(actions).await.unwrap();
}

const CTRL: char = '\u{E009}';
const ENTER: char = '\u{E007}';

async fn cursor(gw: &Gateway, key: &str, c: &str) -> (i64, i64) {
    let p = gw.ok("GET", &format!("{c}/cursor"), key, None).await;
    (p["x"].as_i64().unwrap(), p["y"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_shows_and_drives_the_desktop_in_a_real_browser() {
    let (gw, base) = served_gateway("live").await;
    let (alice, bob) = (gw.key("alice").await, gw.key("bob").await);
    let p = gw.ok("POST", "/api/projects", &alice, Some(json!({}))).await;
    let c = format!("/api/computers/{}", p["name"].as_str().unwrap());
    let url = p["desktop"]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&base), "{url}");

    // A window in a known colour, and a program that records what is typed into it.
    gw.bash(
        &alice,
        &c,
        "setsid xterm -geometry 60x20+0+0 -bg '#12ab34' -fg '#12ab34' -e 'cat > ~/typed' \
         >/dev/null 2>&1 < /dev/null & sleep 1",
        None,
    )
    .await;

    // The window is smaller than the desktop, so the canvas is scaled.
    let browser = Browser::start(1000, 700).await;
    browser.open_viewer(&url).await;
    let mode = browser.js("return window.orgoViewer.mode").await;
    assert_eq!(mode, "control");
    browser
        .until(
            "const c = document.getElementById('screen');
             const d = c.getContext('2d').getImageData(100, 100, 1, 1).data;
             return Math.abs(d[0] - 0x12) < 25 && Math.abs(d[1] - 0xab) < 25 && Math.abs(d[2] - 0x34) < 25;",
            10,
            "the green window shows in the canvas",
        )
        .await;
    assert!(near(&canvas_pixel(&browser, 100, 100).await, [0x12, 0xab, 0x34]));

    // A click on the canvas lands at the matching desktop point.
    click_at(&browser, 900, 600).await;
    // Input goes over the socket and is carried out in order; wait for it, not a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (x, y) = cursor(&gw, &alice, &c).await;
        if (x - 900).abs() <= 2 && (y - 600).abs() <= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "clicked at (900, 600), landed at ({x}, {y})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Focus the terminal, type, erase the line with ctrl+u, type again, Enter.
    click_at(&browser, 150, 150).await;
    keys(&browser, "wrong").await;
    let combo = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: CTRL })
        .then(KeyAction::Down { value: 'u' })
        .then(KeyAction::Up { value: 'u' })
        .then(KeyAction::Up { value: CTRL });
    browser.client.perform_actions(combo).await.unwrap();
    keys(&browser, &format!("Hello, live view!{ENTER}")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let typed = gw.bash(&alice, &c, "cat ~/typed", None).await;
        if typed["output"] == "Hello, live view!\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "typed text did not arrive: {typed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Several viewers at once: another socket on the same token gets its own frames.
    let second = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const token = new URLSearchParams(location.hash.slice(1)).get('token');
             const ws = new WebSocket(`ws://${location.host}${location.pathname}/stream?token=${encodeURIComponent(token)}`);
             ws.binaryType = 'arraybuffer';
             let hello = null;
             ws.onmessage = (e) => {
               if (typeof e.data === 'string') { hello = JSON.parse(e.data); return; }
               ws.close(); done({hello, frame: e.data.byteLength});
             };
             setTimeout(() => done(null), 10000);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(second["hello"]["mode"], "control", "{second}");
    assert!(second["frame"].as_u64().unwrap() > 1000);

    // Viewing alone, with no API calls and a still screen, counts as activity.
    let computer_id = p["desktop"]["id"].as_str().unwrap().to_string();
    let alice_id = gw.state.store.account_by_name("alice").await.unwrap().unwrap().id;
    let active = async |gw: &Gateway| {
        gw.state
            .store
            .computer(&alice_id, &computer_id)
            .await
            .unwrap()
            .unwrap()
            .last_active
    };
    let before = active(&gw).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        active(&gw).await > before,
        "an open viewer keeps the desktop active"
    );

    // View-only: the page shows the desktop, and input, even sent by hand, moves nothing.
    let view = gw
        .ok(
            "POST",
            &format!("{c}/viewer-token"),
            &alice,
            Some(json!({"mode": "view", "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(view["mode"], "view");
    browser.open_viewer(view["url"].as_str().unwrap()).await;
    assert_eq!(browser.js("return window.orgoViewer.mode").await, "view");
    let still = cursor(&gw, &alice, &c).await;
    click_at(&browser, 400, 500).await;
    let refused = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const token = new URLSearchParams(location.hash.slice(1)).get('token');
             const ws = new WebSocket(`ws://${location.host}${location.pathname}/stream?token=${encodeURIComponent(token)}`);
             ws.onmessage = (e) => {
               if (typeof e.data !== 'string') return;
               const m = JSON.parse(e.data);
               if (m.type === 'hello') ws.send(JSON.stringify({action: 'move', x: 10, y: 10}));
               if (m.type === 'error') { ws.close(); done(m.error); }
             };
             setTimeout(() => done(null), 10000);",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        refused.as_str().is_some_and(|e| e.contains("view-only")),
        "{refused}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cursor(&gw, &alice, &c).await,
        still,
        "a view-only viewer moved the pointer"
    );

    // Refused: an expired token, and a token of another account's desktop.
    let bobs = gw.ok("POST", "/api/projects", &bob, Some(json!({}))).await;
    let bob_url = bobs["desktop"]["url"].as_str().unwrap();
    let bob_token = bob_url.split("#token=").nth(1).unwrap();
    let alice_page = url.split('#').next().unwrap();
    let expired = gw.state.links.issue(&Grant {
        computer: computer_id.clone(),
        account: gw.state.store.account_by_name("alice").await.unwrap().unwrap().id,
        mode: Mode::Control,
        expires_at: orgo_gateway::store::now() - 1,
        workspace: None,
    });
    for (token, why) in [
        (expired.as_str(), "expired"),
        (bob_token, "another desktop"),
        ("orgo_0123456789ab_notaviewertoken", "invalid token"),
    ] {
        browser
            .client
            .goto(&format!("{alice_page}#token={token}"))
            .await
            .unwrap();
        let error = browser
            .until(
                "const v = window.orgoViewer; return v && v.state === 'refused' && v.lastError;",
                10,
                "the page says it was refused",
            )
            .await;
        assert!(error.as_str().unwrap().contains(why), "{why}: {error}");
        // The stream refuses it too, before any upgrade, to anyone.
        let stream = format!("{alice_page}/stream?token={token}");
        let status = http_status(&stream).await;
        assert!(status == 401 || status == 403, "{why}: {status}");
    }
    browser.close().await;
}

async fn http_status(url: &str) -> u16 {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent.get(&url).call().unwrap();
        let body: Value = r.body_mut().read_json().unwrap();
        assert!(body["error"].is_string(), "{body}");
        r.status().as_u16()
    })
    .await
    .unwrap()
}
