//! The store's behaviour, the same on both backends: every check runs against SQLite and
//! against a real PostgreSQL, each through two handles on one database, as two replicas
//! would hold them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::postgres::Cluster;
use orgo_gateway::store::{self, Computer, Kept, Project, Resolution, Status, Store, StoreError, StoredFile};

/// Two handles on one fresh SQLite file, opened together.
async fn sqlite(tag: &str) -> (Arc<dyn Store>, Arc<dyn Store>) {
    let path = common::scratch(&format!("store-{tag}")).join("orgo.db");
    let (a, b) = tokio::join!(store::open(None, &path), store::open(None, &path));
    (a.unwrap(), b.unwrap())
}

/// Two handles on one fresh PostgreSQL database, opened together (their migrations race).
async fn postgres(cluster: &mut Cluster) -> (Arc<dyn Store>, Arc<dyn Store>) {
    let url = cluster.database();
    let unused = std::path::Path::new("/nonexistent");
    let (a, b) = tokio::join!(store::open(Some(&url), unused), store::open(Some(&url), unused));
    (a.unwrap(), b.unwrap())
}

fn computer(id: &str, account: &str, project: &str, name: &str) -> Computer {
    Computer {
        id: id.into(),
        account_id: account.into(),
        project_id: project.into(),
        name: name.into(),
        status: Status::Creating,
        ram_gb: 4,
        cpu: 0.5,
        created_at: 100,
        last_active: 100,
        agent: None,
        generation: 0,
        ended: None,
        disk_gb: Some(10),
        resolution: None,
        auto_stop_minutes: None,
    }
}

/// Accounts, keys, projects and computers: names unique per account, every lookup scoped by
/// account, what one handle writes the other reads.
async fn records(a: &dyn Store, b: &dyn Store) {
    let alice = a.ensure_account("alice", "free", "acct-a").await.unwrap();
    let again = b.ensure_account("alice", "pro", "acct-other").await.unwrap();
    assert_eq!(
        (again.id.as_str(), again.plan.as_str()),
        ("acct-a", "pro"),
        "same account, plan moved"
    );
    let bob = b.ensure_account("bob", "free", "acct-b").await.unwrap();
    a.insert_key("k1", &alice.id, b"hash", None).await.unwrap();
    let live = b.live_key("k1").await.unwrap().unwrap();
    assert_eq!(
        (live.hash, live.account, live.workspace),
        (b"hash".to_vec(), alice.id.clone(), None)
    );
    assert!(b.revoke_key("k1").await.unwrap());
    assert!(!a.revoke_key("k1").await.unwrap(), "revoked once");
    assert!(a.live_key("k1").await.unwrap().is_none());
    let keys = a.list_keys().await.unwrap();
    assert_eq!(
        (keys.len(), keys[0].revoked, keys[0].account.as_str()),
        (1, true, "alice")
    );

    let project = Project {
        id: "p1".into(),
        account_id: alice.id.clone(),
        name: "work".into(),
        created_at: 5,
    };
    a.insert_project(&project).await.unwrap();
    let taken = b
        .insert_project(&Project {
            id: "p2".into(),
            ..project.clone()
        })
        .await;
    assert!(
        matches!(taken, Err(StoreError::Conflict(ref m)) if m.contains("\"work\"")),
        "{taken:?}"
    );
    b.insert_project(&Project {
        id: "p3".into(),
        account_id: bob.id.clone(),
        ..project.clone()
    })
    .await
    .unwrap();
    assert_eq!(b.project(&alice.id, "work").await.unwrap(), Some(project.clone()));
    assert_eq!(b.project(&alice.id, "p1").await.unwrap(), Some(project.clone()));
    assert_eq!(b.project(&bob.id, "p1").await.unwrap(), None, "another account's");
    assert_eq!(
        b.project(&alice.id, "wo\0rk").await.unwrap(),
        None,
        "a NUL finds nothing"
    );
    assert_eq!(b.computer(&alice.id, "\0").await.unwrap(), None);
    assert!(b.live_key("k\0").await.unwrap().is_none());
    assert_eq!(a.projects(&bob.id).await.unwrap().len(), 1);

    let c = computer("c1", &alice.id, "p1", "desk");
    a.insert_computer(&c).await.unwrap();
    let dup = b.insert_computer(&computer("c2", &alice.id, "p1", "desk")).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(b.computer(&alice.id, "desk").await.unwrap(), Some(c.clone()));
    assert_eq!(
        b.computer(&bob.id, "c1").await.unwrap(),
        None,
        "another account's"
    );
    assert_eq!(
        b.computers_of_project(&alice.id, "p1").await.unwrap(),
        vec![c.clone()]
    );
    assert_eq!(b.computers_of_account(&bob.id).await.unwrap(), vec![]);

    // Today's fields: a key limited to a workspace; a computer's screen, home and idle time,
    // set at insert and changed later; a move between workspaces of one account only.
    a.insert_key("k2", &alice.id, b"hash2", Some("p1")).await.unwrap();
    let scoped = b.live_key("k2").await.unwrap().unwrap();
    assert_eq!(scoped.workspace.as_deref(), Some("p1"));
    assert_eq!(
        b.list_keys()
            .await
            .unwrap()
            .iter()
            .find(|k| k.id == "k2")
            .unwrap()
            .workspace
            .as_deref(),
        Some("p1")
    );
    let shaped = Computer {
        resolution: Some(Resolution::parse("1024x768x24").unwrap()),
        auto_stop_minutes: Some(0),
        ..computer("c9", &alice.id, "p1", "shaped")
    };
    a.insert_computer(&shaped).await.unwrap();
    assert_eq!(b.computer(&alice.id, "c9").await.unwrap(), Some(shaped.clone()));
    b.set_auto_stop("c9", Some(15)).await.unwrap();
    b.set_size("c9", 8, 2.0, 20).await.unwrap();
    let changed = a.computer(&alice.id, "c9").await.unwrap().unwrap();
    assert_eq!(
        (
            changed.auto_stop_minutes,
            changed.ram_gb,
            changed.cpu,
            changed.disk_gb
        ),
        (Some(15), 8, 2.0, Some(20))
    );
    a.insert_project(&Project {
        id: "p4".into(),
        name: "other".into(),
        ..project.clone()
    })
    .await
    .unwrap();
    assert!(
        !b.move_computer(&alice.id, "c9", "p3").await.unwrap(),
        "bob's workspace"
    );
    assert!(
        !b.move_computer(&alice.id, "c9", "p\0").await.unwrap(),
        "a NUL finds nothing"
    );
    assert!(
        !b.move_computer(&bob.id, "c9", "p3").await.unwrap(),
        "alice's computer"
    );
    assert!(b.move_computer(&alice.id, "c9", "p4").await.unwrap());
    assert_eq!(
        a.computer(&alice.id, "c9").await.unwrap().unwrap().project_id,
        "p4"
    );
    a.delete_computer("c9").await.unwrap();

    // Workspace files: listed per workspace and desktop, read back byte-exact, scoped by
    // account, gone with their workspace.
    let file = |id: &str, desktop: Option<&str>| StoredFile {
        id: id.into(),
        account_id: alice.id.clone(),
        project_id: "p4".into(),
        desktop_id: desktop.map(String::from),
        filename: "a.bin".into(),
        content_type: "application/octet-stream".into(),
        source: "upload".into(),
        size: 3,
        created_at: 7,
    };
    a.keep_file(&file("f1", None), &[0, 255, 10]).await.unwrap();
    a.keep_file(&file("f2", Some("c9")), b"abc").await.unwrap();
    assert_eq!(b.files(&alice.id, "p4", None).await.unwrap().len(), 2);
    assert_eq!(
        b.files(&alice.id, "p4", Some("c9")).await.unwrap(),
        vec![file("f2", Some("c9"))]
    );
    assert_eq!(b.files(&bob.id, "p4", None).await.unwrap(), vec![]);
    assert_eq!(
        b.file(&alice.id, "f1").await.unwrap(),
        Some((file("f1", None), vec![0, 255, 10]))
    );
    assert_eq!(b.file(&bob.id, "f1").await.unwrap(), None, "another account's");
    assert!(b.delete_file(&alice.id, "f2").await.unwrap());
    assert!(!b.delete_file(&alice.id, "f2").await.unwrap());
    a.delete_project(&alice.id, "p4").await.unwrap();
    assert_eq!(
        b.file(&alice.id, "f1").await.unwrap(),
        None,
        "deleted with its workspace"
    );

    // A run: running with its agent, a stop clears the agent and counts, activity keeps
    // the latest of what replicas write.
    b.set_running("c1", "unix:/run/agent.sock").await.unwrap();
    a.touch("c1", 500).await.unwrap();
    b.touch("c1", 400).await.unwrap();
    let running = a.computer(&alice.id, "c1").await.unwrap().unwrap();
    assert_eq!(
        (running.status, running.agent.as_deref(), running.last_active),
        (Status::Running, Some("unix:/run/agent.sock"), 500)
    );
    assert_eq!(running.generation, 1, "a start is a new generation");
    assert!(
        !a.mark_lost("c1", 0, "unix:/run/agent.sock", "gone")
            .await
            .unwrap(),
        "another run's"
    );
    assert!(
        !a.mark_lost("c1", 1, "tcp:x y", "gone").await.unwrap(),
        "another agent's"
    );
    b.begin_stop("c1").await.unwrap();
    let stopping = a.computer(&alice.id, "c1").await.unwrap().unwrap();
    assert_eq!(
        (stopping.status, stopping.agent, stopping.generation),
        (Status::Stopping, None, 2)
    );
    b.set_running("c1", "tcp:127.0.0.1:9 t").await.unwrap();
    assert!(
        !a.mark_lost("c1", 2, "tcp:127.0.0.1:9 t", "gone").await.unwrap(),
        "the same agent's address, a later run"
    );
    assert!(
        a.mark_lost("c1", 3, "tcp:127.0.0.1:9 t", "OOMKilled: over its memory limit")
            .await
            .unwrap()
    );
    let lost = b.computer(&alice.id, "c1").await.unwrap().unwrap();
    assert_eq!(
        (lost.status, lost.agent, lost.ended.as_deref()),
        (Status::Error, None, Some("OOMKilled: over its memory limit")),
        "why it ended is kept with it"
    );
    // A new start forgets why the last run ended; a failed start records its own why.
    b.set_running("c1", "tcp:127.0.0.1:9 t").await.unwrap();
    assert_eq!(a.computer(&alice.id, "c1").await.unwrap().unwrap().ended, None);
    b.set_failed("c1", "no room").await.unwrap();
    let failed = a.computer(&alice.id, "c1").await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.agent, failed.ended.as_deref()),
        (Status::Error, None, Some("no room"))
    );
    b.set_status("c1", Status::Stopped).await.unwrap();
    assert_eq!(a.computer(&alice.id, "c1").await.unwrap().unwrap().ended, None);
    assert_eq!(a.all_computers().await.unwrap().len(), 1);
    a.delete_computer("c1").await.unwrap();
    b.delete_project(&alice.id, "p1").await.unwrap();
    assert_eq!(a.projects(&alice.id).await.unwrap(), vec![]);
}

/// Leases: one holder at a time, renewed in its epoch, taken over with the next epoch once
/// expired or let go; writes fenced by a lease lost are refused.
async fn leases(a: &dyn Store, b: &dyn Store) {
    let long = Duration::from_secs(30);
    let first = a.take_lease("singletons", "A", long).await.unwrap().unwrap();
    assert_eq!(
        b.take_lease("singletons", "B", long).await.unwrap(),
        None,
        "held by A"
    );
    let renewed = a.take_lease("singletons", "A", long).await.unwrap().unwrap();
    assert_eq!(renewed.epoch, first.epoch, "a renewal keeps the epoch");
    assert!(b.renew_lease(&renewed, long).await.unwrap(), "renewed while held");
    // A lease that expires (A paused, say) passes to B in the next epoch.
    a.take_lease("singletons", "A", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !a.renew_lease(&first, long).await.unwrap(),
        "an expired lease is not taken back by renewing"
    );
    let taken = b.take_lease("singletons", "B", long).await.unwrap().unwrap();
    assert_eq!(taken.epoch, first.epoch + 1);
    assert!(
        !a.renew_lease(&first, long).await.unwrap(),
        "nor once another holds it"
    );

    a.ensure_account("fenced", "free", "acct-f").await.unwrap();
    a.insert_project(&Project {
        id: "pf".into(),
        account_id: "acct-f".into(),
        name: "f".into(),
        created_at: 0,
    })
    .await
    .unwrap();
    a.insert_computer(&computer("cf", "acct-f", "pf", "f"))
        .await
        .unwrap();
    assert!(
        !a.set_status_fenced("cf", Status::Stopped, &first).await.unwrap(),
        "A was deposed"
    );
    assert!(b.set_status_fenced("cf", Status::Stopped, &taken).await.unwrap());
    assert_eq!(
        a.computer("acct-f", "cf").await.unwrap().unwrap().status,
        Status::Stopped
    );

    b.release_lease("singletons", "B").await.unwrap();
    let back = a.take_lease("singletons", "A", long).await.unwrap().unwrap();
    assert_eq!(back.epoch, taken.epoch + 1, "let go, taken by another");
    assert!(!b.set_status_fenced("cf", Status::Running, &taken).await.unwrap());
    a.release_lease("singletons", "B").await.unwrap();
    assert!(
        a.take_lease("singletons", "A", long).await.unwrap().is_some(),
        "B cannot let A's go"
    );

    // Many racing for a free lease: exactly one wins.
    let name = "race";
    let racers = (0..8).map(|i| {
        let store = if i % 2 == 0 { a } else { b };
        let holder = format!("r{i}");
        async move { store.take_lease(name, &holder, long).await.unwrap().is_some() }
    });
    let won = futures::future::join_all(racers).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}

/// A secret is made by whoever asks first and the same for everyone after; screenshots kept
/// through one handle are read through the other, by their account only, until forgotten.
async fn secrets_and_screenshots(a: &dyn Store, b: &dyn Store) {
    let first = a.secret("viewer-token", &[1; 32]).await.unwrap();
    assert_eq!(first, vec![1; 32]);
    assert_eq!(b.secret("viewer-token", &[2; 32]).await.unwrap(), first);
    let kept = Kept {
        format: "png".into(),
        bytes: vec![0x89, b'P', b'N', b'G', 0, 255],
        project_id: Some("ws".into()),
    };
    a.keep_screenshot("acct", "00ff", &kept).await.unwrap();
    assert_eq!(b.screenshot("acct", "00ff").await.unwrap(), Some(kept));
    assert_eq!(b.screenshot("other", "00ff").await.unwrap(), None);
    assert_eq!(b.forget_screenshots(0).await.unwrap(), 0, "kept after 0");
    assert_eq!(b.forget_screenshots(i64::MAX).await.unwrap(), 1);
    assert_eq!(a.screenshot("acct", "00ff").await.unwrap(), None);
}

/// A pooled desktop is claimed once, only while pooled and running, never under a name its
/// new account already has; claimed, it is the account's.
async fn pool_claims(a: &dyn Store, b: &dyn Store) {
    let pool = a.ensure_account("_pool", "_pool", "acct-pool").await.unwrap();
    let carol = a.ensure_account("carol", "free", "acct-c").await.unwrap();
    for (id, account, name) in [("pp", &pool.id, "pool"), ("pc", &carol.id, "mine")] {
        a.insert_project(&Project {
            id: id.into(),
            account_id: account.clone(),
            name: name.into(),
            created_at: 1,
        })
        .await
        .unwrap();
    }
    a.insert_computer(&computer("pooled-1", &pool.id, "pp", "pool-1"))
        .await
        .unwrap();
    a.insert_computer(&computer("taken-name", &carol.id, "pc", "desk"))
        .await
        .unwrap();
    assert!(
        !b.claim_pooled(&pool.id, "pooled-1", &carol.id, "pc", "new", 7)
            .await
            .unwrap(),
        "not running yet"
    );
    a.set_running("pooled-1", "unix:///x").await.unwrap();
    let clash = b
        .claim_pooled(&pool.id, "pooled-1", &carol.id, "pc", "desk", 7)
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert!(
        b.claim_pooled(&pool.id, "pooled-1", &carol.id, "pc", "new", 7)
            .await
            .unwrap()
    );
    assert!(
        !a.claim_pooled(&pool.id, "pooled-1", &carol.id, "pc", "other", 8)
            .await
            .unwrap(),
        "claimed once"
    );
    let claimed = a.computer(&carol.id, "new").await.unwrap().unwrap();
    assert_eq!(
        (
            claimed.id.as_str(),
            claimed.project_id.as_str(),
            claimed.created_at,
            claimed.last_active
        ),
        ("pooled-1", "pc", 7, 7)
    );
    assert_eq!(
        claimed.agent.as_deref(),
        Some("unix:///x"),
        "handed out as it runs"
    );
    assert!(a.computers_of_account(&pool.id).await.unwrap().is_empty());
}

async fn suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    a.ping().await.unwrap();
    records(a.as_ref(), b.as_ref()).await;
    pool_claims(a.as_ref(), b.as_ref()).await;
    leases(a.as_ref(), b.as_ref()).await;
    secrets_and_screenshots(a.as_ref(), b.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store() {
    let (a, b) = sqlite("suite").await;
    assert!(!a.shared());
    suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store() {
    let mut cluster = Cluster::start("suite");
    let (a, b) = postgres(&mut cluster).await;
    assert!(a.shared());
    assert!(a.describe().contains("postgres:***@"), "{}", a.describe());
    suite(a, b).await;
}

/// The database going away answers "unavailable" (never a panic, never a wrong answer), and
/// the pool reconnects by itself once it is back, with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_outlives_a_database_restart() {
    let mut cluster = Cluster::start("restart");
    let (a, _) = postgres(&mut cluster).await;
    a.ensure_account("kept", "free", "acct-k").await.unwrap();
    cluster.pause();
    let down = a.account_by_name("kept").await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    assert!(matches!(a.ping().await, Err(StoreError::Unavailable(_))));
    cluster.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while a.ping().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the pool did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.account_by_name("kept").await.unwrap().unwrap().id, "acct-k");
}

/// A database that cannot be reached at start is an error naming it, password masked.
#[tokio::test]
async fn an_unreachable_database_is_named_at_open() {
    let port = common::free_port();
    let url = format!("postgres://orgo:hunter2@127.0.0.1:{port}/orgo");
    let err = match store::open(Some(&url), std::path::Path::new("/nonexistent")).await {
        Ok(_) => panic!("opened a database that is not there"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&format!("postgres://orgo:***@127.0.0.1:{port}/orgo")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
