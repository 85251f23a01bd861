//! The state store conformance suite against the embedded (redb) backend,
//! plus what only a file-backed store can promise: data survives a reopen.

use crate::state_conformance;
use crate::support;

use std::sync::Arc;

use firmcast::state::embedded::EmbeddedStateStore;
use firmcast::state::{ReleasePatch, StateStore};
use support::state_suite::{instant, release};
use tempfile::TempDir;

/// A fresh store in its own temp dir; the dir is returned as the guard so it
/// outlives the store and is removed when the test ends.
async fn fresh_store() -> (Arc<dyn StateStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStateStore::open(&dir.path().join("state.redb")).unwrap();
    (Arc::new(store), dir)
}

state_conformance!(fresh_store());

#[tokio::test]
async fn backend_is_embedded() {
    assert_eq!(fresh_store().await.0.backend(), "embedded");
}

#[tokio::test]
async fn data_survives_reopen() {
    // Parent directories are created on open.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/state.redb");
    let a = release("P", "1.0.0", 1);
    let b = release("P", "1.1.0", 2);
    let (patched, audit_id) = {
        let store = EmbeddedStateStore::open(&path).unwrap();
        store.insert_release(&a).await.unwrap();
        store.insert_release(&b).await.unwrap();
        let patched = store
            .update_release(
                "P",
                "1.1.0",
                &ReleasePatch {
                    yanked: Some(true),
                    ..Default::default()
                },
                instant(60),
            )
            .await
            .unwrap();
        let entry = firmcast::state::AuditEntry {
            id: 0,
            at: instant(61),
            actor: "ops".into(),
            action: "release.patch".into(),
            target: "P 1.1.0".into(),
            detail: serde_json::json!({ "yanked": true }),
        };
        let audit_id = store.append_audit(&entry).await.unwrap();
        (patched, audit_id)
        // The store is dropped here, releasing the file lock.
    };

    let store = EmbeddedStateStore::open(&path).unwrap();
    assert_eq!(
        store.list_releases(None).await.unwrap(),
        vec![a, patched.clone()]
    );
    assert_eq!(
        store.get_release("P", "1.1.0").await.unwrap(),
        Some(patched)
    );
    let audit = store.list_audit(None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].id, audit_id);
    assert_eq!(audit[0].actor, "ops");

    // The publish rules still hold against what was reloaded.
    assert!(matches!(
        store.insert_release(&release("P", "1.1.0", 3)).await,
        Err(firmcast::state::StateError::DuplicateVersion { .. })
    ));
    assert!(matches!(
        store.insert_release(&release("P", "1.2.0", 2)).await,
        Err(firmcast::state::StateError::StaleSeq { max: 2, .. })
    ));
    assert!(store.append_audit(&audit[0]).await.unwrap() > audit_id);
}

/// The same suite against Redis (`REDIS_URL`, default redis://127.0.0.1:6379),
/// each test under its own key prefix, deleted when it ends; plus what only
/// a shared, networked store must do.
mod on_redis {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use firmcast::state::redis::RedisStateStore;
    use firmcast::state::{AuditEntry, ReleasePatch, StateError, StateStore};
    use tokio::sync::mpsc::Receiver;

    use crate::state_conformance;
    use crate::support::redis_proc::RedisProcess;
    use crate::support::state_suite::{
        fresh_redis_store, instant, redis_url, release, unique_prefix, RedisKeys,
    };

    state_conformance!(fresh_redis_store());

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// The next value of a change feed, failing the test after `within`.
    async fn next(feed: &mut Receiver<u64>, within: Duration) -> u64 {
        tokio::time::timeout(within, feed.recv())
            .await
            .expect("no catalog change announced in time")
            .expect("the change feed ended")
    }

    /// Values of a change feed until one is at least `version`.
    async fn until(feed: &mut Receiver<u64>, version: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = next(feed, left).await;
            if v >= version {
                return v;
            }
        }
    }

    #[track_caller]
    fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, StateError>) {
        match result {
            Err(StateError::Unavailable { backend, .. }) => assert_eq!(backend, "redis"),
            other => panic!("expected Unavailable from redis, got {other:?}"),
        }
    }

    fn audit(n: i64) -> AuditEntry {
        AuditEntry {
            id: 0,
            at: instant(n),
            actor: "ops".into(),
            action: "release.patch".into(),
            target: format!("P {n}"),
            detail: serde_json::json!({ "n": n }),
        }
    }

    #[tokio::test]
    async fn backend_is_redis() {
        assert_eq!(fresh_redis_store().await.0.backend(), "redis");
    }

    #[tokio::test]
    async fn keys_follow_the_documented_layout() {
        let (store, keys) = fresh_redis_store().await;
        store
            .insert_release(&release("P", "1.0.0", 1))
            .await
            .unwrap();
        store.append_audit(&audit(1)).await.unwrap();
        let p = &keys.prefix;
        // One hash tag per atomic group: the layout works on Redis Cluster.
        assert_eq!(
            keys.keys(),
            vec![
                format!("{p}:{{audit}}:log"),
                format!("{p}:{{audit}}:next-id"),
                format!("{p}:{{catalog}}:max-seq"),
                format!("{p}:{{catalog}}:order"),
                format!("{p}:{{catalog}}:releases"),
                format!("{p}:{{catalog}}:version"),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_share_state_and_announce_changes() {
        let prefix = unique_prefix();
        let _keys = RedisKeys::new(&prefix);
        let a = RedisStateStore::connect(&redis_url(), &prefix, TIMEOUT)
            .await
            .unwrap();
        let b = RedisStateStore::connect(&redis_url(), &prefix, TIMEOUT)
            .await
            .unwrap();
        let mut feed = b.watch_catalog().await.expect("redis has a change feed");
        // The feed starts with the version current when it subscribed.
        assert_eq!(next(&mut feed, Duration::from_secs(2)).await, 0);

        let r = release("P", "1.0.0", 1);
        a.insert_release(&r).await.unwrap();
        assert_eq!(next(&mut feed, Duration::from_secs(1)).await, 1);
        assert_eq!(b.catalog_version().await.unwrap(), 1);
        assert_eq!(b.get_release("P", "1.0.0").await.unwrap(), Some(r.clone()));
        assert_eq!(b.list_releases(None).await.unwrap(), vec![r]);

        // b's change reaches a, and b's own feed announces it too.
        let patched = b
            .update_release(
                "P",
                "1.0.0",
                &ReleasePatch {
                    rollout_bp: Some(10_000),
                    ..Default::default()
                },
                instant(60),
            )
            .await
            .unwrap();
        assert_eq!(next(&mut feed, Duration::from_secs(1)).await, 2);
        assert_eq!(a.get_release("P", "1.0.0").await.unwrap(), Some(patched));

        // The publish rules hold across instances.
        assert!(matches!(
            b.insert_release(&release("P", "1.0.0", 5)).await,
            Err(StateError::DuplicateVersion { .. })
        ));
        assert!(matches!(
            b.insert_release(&release("P", "1.1.0", 1)).await,
            Err(StateError::StaleSeq { max: 1, .. })
        ));
        let id_a = a.append_audit(&audit(1)).await.unwrap();
        let id_b = b.append_audit(&audit(2)).await.unwrap();
        assert!(id_b > id_a);
        assert_eq!(a.list_audit(None, 10).await.unwrap().len(), 2);

        // Refusals announce nothing; a feed on another prefix hears nothing.
        let other = fresh_redis_store().await;
        let mut other_feed = other.0.watch_catalog().await.unwrap();
        assert_eq!(next(&mut other_feed, Duration::from_secs(2)).await, 0);
        a.insert_release(&release("Q", "1.0.0", 1)).await.unwrap();
        assert_eq!(next(&mut feed, Duration::from_secs(1)).await, 3);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), other_feed.recv())
                .await
                .is_err(),
            "a change under one prefix was announced under another"
        );
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast_at_connect_and_per_operation() {
        let timeout = Duration::from_millis(500);
        let prefix = unique_prefix();
        let connect = RedisStateStore::connect("redis://127.0.0.1:1", &prefix, timeout);
        match crate::support::within(timeout * 3, "connect", connect).await {
            Err(StateError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "redis");
                assert!(reason.contains("127.0.0.1:1"), "{reason}");
            }
            Ok(_) => panic!("connected to nothing"),
            Err(e) => panic!("expected Unavailable, got {e:?}"),
        }

        let store = RedisStateStore::connect_lazy("redis://127.0.0.1:1", &prefix, timeout).unwrap();
        every_operation_is_unavailable_within(&store, timeout).await;
    }

    #[tokio::test]
    async fn silent_server_times_out_instead_of_hanging() {
        // Accepts connections and never answers: a hung or half-open Redis.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let url = format!("redis://{addr}");
        let timeout = Duration::from_millis(300);
        let prefix = unique_prefix();
        let connect = RedisStateStore::connect(&url, &prefix, timeout);
        assert_unavailable(
            crate::support::within(timeout * 3, "connect", connect)
                .await
                .map(drop),
        );

        let store = RedisStateStore::connect_lazy(&url, &unique_prefix(), timeout).unwrap();
        every_operation_is_unavailable_within(&store, timeout).await;
        // The change feed keeps trying quietly; nothing arrives, nothing panics.
        let mut feed = store.watch_catalog().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(500), feed.recv())
                .await
                .is_err()
        );
        hold.abort();
    }

    async fn every_operation_is_unavailable_within(store: &RedisStateStore, timeout: Duration) {
        let slack = timeout * 2 + Duration::from_millis(200);
        macro_rules! check {
            ($op:expr) => {{
                // Bounded here too: a lost deadline must fail, not hang.
                let result = tokio::time::timeout(slack, $op)
                    .await
                    .unwrap_or_else(|_| panic!("{} hung past {slack:?}", stringify!($op)));
                assert_unavailable(result);
            }};
        }
        check!(store.ping());
        check!(store.catalog_version());
        check!(store.insert_release(&release("P", "1.0.0", 1)));
        check!(store.update_release("P", "1.0.0", &ReleasePatch::default(), instant(1)));
        check!(store.get_release("P", "1.0.0"));
        check!(store.list_releases(None));
        check!(store.append_audit(&audit(1)));
        check!(store.list_audit(None, 10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovers_when_redis_comes_back() {
        // A private server: the shared one must never be killed under other tests.
        let mut server = RedisProcess::start();
        let timeout = Duration::from_millis(500);
        let writer = RedisStateStore::connect(&server.url(), "firmcast-test", timeout)
            .await
            .unwrap();
        let watcher = RedisStateStore::connect(&server.url(), "firmcast-test", timeout)
            .await
            .unwrap();
        let mut feed = watcher.watch_catalog().await.unwrap();
        assert_eq!(next(&mut feed, Duration::from_secs(2)).await, 0);
        writer
            .insert_release(&release("P", "1.0.0", 1))
            .await
            .unwrap();
        assert_eq!(next(&mut feed, Duration::from_secs(1)).await, 1);

        server.kill();
        crate::support::within(timeout * 4, "two operations on a dead Redis", async {
            assert_unavailable(writer.insert_release(&release("P", "1.1.0", 2)).await);
            assert_unavailable(watcher.list_releases(None).await);
        })
        .await;

        server.restart();
        // Same handles, no restart of ours: the next operations just work.
        let deadline = Instant::now() + Duration::from_secs(10);
        while writer.ping().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "no reconnect after redis came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        writer
            .insert_release(&release("P", "1.1.0", 2))
            .await
            .unwrap();
        assert_eq!(
            watcher.list_releases(Some("P")).await.unwrap().len(),
            2,
            "data survived the restart and is readable again"
        );
        // The feed resubscribed: the change made after the restart arrives
        // (as a message, or as the catch-up read when it reconnects later).
        assert_eq!(until(&mut feed, 2, Duration::from_secs(10)).await, 2);
    }
}
