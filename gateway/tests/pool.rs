//! The warm pool on the local runtime, with real desktops: creates of a pooled size get a
//! desktop that was already running and held nothing of anyone's, within the plan's limits;
//! the pool fills again with new desktops; a handed-out desktop is never pooled again, even
//! once deleted; other sizes boot their own; pooled desktops belong to no account's lists.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::inproc::Gateway;
use orgo_gateway::config::PoolSize;
use serde_json::{Value, json};

/// The ids of the pool's running desktops, once there are `want` of them.
async fn pooled(gw: &Gateway, want: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let health = gw.send("GET", "/healthz", None, None).await.1;
        let ready = health["pool"][0]["ready"].as_u64().unwrap_or(0) as usize;
        if ready == want {
            let ids = common::pooled_ids(gw.state.store.as_ref()).await;
            if ids.len() == want {
                return ids;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pool never had {want} ready: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The seed's create (the SDK's `Computer()`): 2 GB, 2 CPUs unless `config` says otherwise.
async fn create(gw: &Gateway, key: &str, config: Value) -> (String, String) {
    let p = gw
        .ok("POST", "/api/projects", key, Some(json!({ "config": config })))
        .await;
    assert_eq!(p["desktop"]["status"], "running", "{p}");
    (
        p["desktop"]["id"].as_str().unwrap().to_string(),
        format!("/api/computers/{}", p["name"].as_str().unwrap()),
    )
}

/// What a fresh desktop's home holds, names only.
async fn home(gw: &Gateway, key: &str, computer: &str) -> String {
    gw.bash(key, computer, "ls -A ~ | sort", None).await["output"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_of_a_pooled_size_get_a_running_desktop_and_the_pool_fills_again() {
    let gw = Gateway::with("pool", |c| {
        c.pool = vec![PoolSize {
            ram_gb: 2,
            cpu: 2.0,
            count: 2,
        }];
    })
    .await;
    let key = gw.key("alice").await;
    let first = pooled(&gw, 2).await;

    let (id, computer) = create(&gw, &key, json!({})).await;
    assert!(first.contains(&id), "{id} was not one of the pool's {first:?}");
    // Handed out: it works, and holds what any fresh desktop holds (nothing of anyone's).
    assert_eq!(
        gw.bash(&key, &computer, "echo hi from $(whoami)", None).await["output"],
        "hi from user\n"
    );
    let (cold_id, cold) = create(&gw, &key, json!({ "ram": 1, "cpu": 1 })).await;
    assert!(!first.contains(&cold_id), "a size no pool keeps boots its own");
    assert_eq!(home(&gw, &key, &computer).await, home(&gw, &key, &cold).await);

    // The pool fills again with new desktops; the handed-out one is the account's alone.
    let second = pooled(&gw, 2).await;
    assert!(!second.contains(&id), "{id} is pooled again");
    let listed = gw.ok("GET", "/api/projects", &key, None).await.to_string();
    assert!(
        second.iter().all(|p| !listed.contains(p.as_str())),
        "pooled desktops listed: {listed}"
    );

    // The plan still counts: the free plan's two desktops are running.
    let (status, v) = gw
        .send("POST", "/api/projects", Some(&key), Some(json!({ "config": {} })))
        .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(pooled(&gw, 2).await, second, "a refused create claims nothing");

    // Deleted, it is gone for good: never pooled again.
    gw.ok("DELETE", &computer, &key, None).await;
    gw.ok("DELETE", &cold, &key, None).await;
    let (id2, computer2) = create(&gw, &key, json!({ "ram": 2, "cpu": 2 })).await;
    assert!(second.contains(&id2));
    let third = pooled(&gw, 2).await;
    assert!(!third.contains(&id) && !third.contains(&id2));
    assert_eq!(
        gw.bash(&key, &computer2, "echo still", None).await["output"],
        "still\n"
    );
}
