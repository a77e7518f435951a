//! A gigabyte of output: cut and flagged, and the in-process gateway's memory stays flat. Alone
//! in its test binary, so the memory it measures is its own.

use serde_json::{Value, json};

mod common;

use common::inproc::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_of_output_is_cut_and_flagged_without_growing_the_gateway() {
    let gw = Gateway::new("fault-flood").await;
    let key = gw.key("k").await;
    let p = gw.ok("POST", "/api/projects", &key, Some(json!({}))).await;
    let c = format!("/api/computers/{}", p["name"].as_str().unwrap());
    let before = common::own_rss();
    let flood: Value = gw
        .bash(
            &key,
            &c,
            "head -c 1G /dev/zero | tr '\\0' x; echo done >&2",
            Some(120.0),
        )
        .await;
    assert_eq!(flood["truncated"], true);
    assert_eq!(
        flood["exit_code"], 0,
        "the writer ran to its end: {}",
        flood["stderr"]
    );
    let kept = flood["stdout"].as_str().unwrap().len();
    assert!(kept <= 1 << 20 && kept > 0, "{kept} bytes kept");
    let grown = common::own_rss().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "the gateway grew by {} MB reading 1 GB of output",
        grown >> 20
    );
}
