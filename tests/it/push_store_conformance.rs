//! The push store conformance suite against the embedded (redb) backend and
//! against Redis, plus what only the Redis store must show: its documented
//! key layout, that half-done writes (a crashed instance) never reach a
//! worker and are cleaned up, and that it fails fast when Redis is away.

use crate::push_conformance;
use crate::support;

use std::sync::Arc;

use firmcast::fanout::embedded::EmbeddedPushStore;
use firmcast::fanout::PushStore;
use tempfile::TempDir;

/// A fresh store in its own temp dir; the dir is the guard, removed when the
/// test ends.
async fn fresh_store() -> (Arc<dyn PushStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedPushStore::open(&dir.path().join("push.redb")).unwrap();
    (Arc::new(store), dir)
}

push_conformance!(fresh_store());

/// A store written before the `last_seen` index existed (what `sweep_idle`
/// reads) gets it built on open, so its idle tokens are still swept.
#[tokio::test]
async fn an_older_embedded_store_gets_its_last_seen_index_on_open() {
    use firmcast::fanout::ProviderKind;
    use redb::TableDefinition;
    use support::push_suite::{fcm_token, sub};
    use support::state_suite::instant;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("push.redb");
    let store = EmbeddedPushStore::open(&path).unwrap();
    for i in 0..10 {
        let seen = instant(if i < 6 { i } else { 1_000 + i });
        let s = sub(ProviderKind::Fcm, &fcm_token(i as usize), &["P"], seen);
        store.upsert_subscription(&s).await.unwrap();
    }
    drop(store);

    // What a store of the previous release holds: no index, no flag.
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    let index: TableDefinition<(i64, &str), ()> = TableDefinition::new("last_seen_index");
    assert!(txn.delete_table(index).unwrap());
    let meta: TableDefinition<&str, u64> = TableDefinition::new("meta");
    txn.open_table(meta)
        .unwrap()
        .remove("last_seen_index_built")
        .unwrap()
        .expect("the flag was set");
    txn.commit().unwrap();
    drop(db);

    let store = EmbeddedPushStore::open(&path).unwrap();
    assert_eq!(store.sweep_idle(instant(100)).await.unwrap(), 6);
    assert_eq!(store.count_subscribers("P").await.unwrap(), 4);
    assert_eq!(store.sweep_idle(instant(2_000)).await.unwrap(), 4);
}

/// The same suite against Redis (`REDIS_URL`, default redis://127.0.0.1:6379),
/// each test under its own key prefix, deleted when it ends.
mod on_redis {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use firmcast::fanout::redis::RedisPushStore;
    use firmcast::fanout::store::member_key;
    use firmcast::fanout::PushError;
    use firmcast::fanout::{JobCounters, JobDelta, JobState, ProviderKind, PushStore};
    use redis::Commands;

    use crate::push_conformance;
    use crate::support::push_suite::{apns_token, fcm_token, fresh_redis_push_store, sub};
    use crate::support::state_suite::{instant, redis_url, unique_prefix, RedisKeys};

    push_conformance!(fresh_redis_push_store());

    const P: &str = "WH-1000XM5";
    const Q: &str = "WF-1000XM5";

    fn redis() -> redis::Connection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    #[tokio::test]
    async fn keys_follow_the_documented_layout() {
        let (store, keys) = fresh_redis_push_store().await;
        let p = keys.prefix.clone();
        let s = sub(ProviderKind::Fcm, &fcm_token(1), &[P, Q], instant(0));
        store.upsert_subscription(&s).await.unwrap();
        let mut job = firmcast::fanout::Job {
            id: "j1".into(),
            product: P.into(),
            version: "1.0.0".into(),
            dry_run: false,
            state: JobState::Running,
            created_at: instant(0),
            created_by: "ops".into(),
            counters: JobCounters::default(),
            batches_total: 1,
            batches_done: 0,
            finished_at: None,
            failures: Default::default(),
            checked: vec![],
        };
        store.put_job(&job).await.unwrap();
        let member = member_key(s.provider, &s.token);
        store
            .enqueue(&firmcast::fanout::Batch {
                job_id: job.id.clone(),
                product: P.into(),
                first: member.clone(),
                last: member.clone(),
            })
            .await
            .unwrap();
        let claimed = store
            .claim("w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        // The subscription is spread over its own slot; the queue and the
        // jobs share one hash tag (complete touches both in one script).
        assert_eq!(
            keys.keys(),
            vec![
                format!("{p}:push:product:{Q}"),
                format!("{p}:push:product:{P}"),
                format!("{p}:push:seen"),
                format!("{p}:push:sub:{member}"),
                format!("{p}:{{fanout}}:job:j1"),
                format!("{p}:{{fanout}}:jobs"),
                format!("{p}:{{fanout}}:queue"),
            ]
        );
        let mut r = redis();
        // Only what the app registered: products, locale, last seen.
        let mut fields: Vec<String> = r.hkeys(format!("{p}:push:sub:{member}")).unwrap();
        fields.sort();
        assert_eq!(
            fields,
            [
                format!("i:{Q}"),
                format!("i:{P}"),
                "last_seen".into(),
                "locale".into(),
                format!("p:{Q}"),
                format!("p:{P}"),
            ]
        );
        // Dropping a product settles its index record too.
        let mut fewer = s.clone();
        fewer.products = vec![Q.into()];
        store.upsert_subscription(&fewer).await.unwrap();
        let mut fields: Vec<String> = r.hkeys(format!("{p}:push:sub:{member}")).unwrap();
        fields.sort();
        assert_eq!(
            fields,
            [
                format!("i:{Q}"),
                "last_seen".to_owned(),
                "locale".into(),
                format!("p:{Q}"),
            ]
        );
        let score: i64 = r.zscore(format!("{p}:push:seen"), &member).unwrap();
        assert_eq!(score, instant(0).timestamp_millis());
        let counters: Vec<String> = r
            .hmget(format!("{p}:{{fanout}}:job:j1"), &["batches_done", "sent"])
            .unwrap();
        assert_eq!(counters, ["0", "0"]);
        let mut delta = JobDelta::default();
        delta.counters.sent = 7;
        store.complete(&claimed, &delta).await.unwrap().unwrap();
        let counters: Vec<String> = r
            .hmget(format!("{p}:{{fanout}}:job:j1"), &["batches_done", "sent"])
            .unwrap();
        assert_eq!(counters, ["1", "7"]);
        // A completed batch leaves the stream, not just the pending list.
        let len: u64 = r.xlen(format!("{p}:{{fanout}}:queue")).unwrap();
        assert_eq!(len, 0);
        job.batches_done = 1;
        job.counters.sent = 7;
        assert_eq!(store.get_job("j1").await.unwrap(), Some(job));
    }

    /// The states a crash (or a timeout) can leave an upsert in, written by
    /// hand: none reaches a worker, and a removal or sweep cleans each up.
    #[tokio::test]
    async fn half_done_writes_are_skipped_and_cleaned_up() {
        let (store, keys) = fresh_redis_push_store().await;
        let p = keys.prefix.clone();
        let mut r = redis();
        let live = sub(ProviderKind::Fcm, &fcm_token(1), &[P], instant(0));
        store.upsert_subscription(&live).await.unwrap();

        // (a) A new registration that crashed after its index entry: the
        // hash holds only the record of it.
        let new_token = fcm_token(2);
        let new_member = member_key(ProviderKind::Fcm, &new_token);
        let _: () = r
            .zadd(
                format!("{p}:push:seen"),
                &new_member,
                instant(0).timestamp_millis(),
            )
            .unwrap();
        let _: () = r
            .hset(format!("{p}:push:sub:{new_member}"), format!("i:{P}"), "1")
            .unwrap();
        let _: () = r
            .zadd(format!("{p}:push:product:{P}"), &new_member, 0)
            .unwrap();

        // (b) A re-registration dropping P that crashed before the stale
        // index entry was removed.
        let mut moved = sub(ProviderKind::Apns, &apns_token(3), &[P, Q], instant(0));
        store.upsert_subscription(&moved).await.unwrap();
        let moved_member = member_key(moved.provider, &moved.token);
        let _: () = r
            .hdel(format!("{p}:push:sub:{moved_member}"), format!("p:{P}"))
            .unwrap();
        moved.products = vec![Q.into()];

        // (c) An entry nothing records (e.g. left by a lost race).
        let stray = member_key(ProviderKind::Fcm, &fcm_token(4));
        let _: () = r.zadd(format!("{p}:push:product:{P}"), &stray, 0).unwrap();

        // Workers see only the real subscriber of P.
        assert_eq!(
            store.subscribers_in(P, "", "\u{7f}").await.unwrap(),
            vec![live.clone()]
        );
        assert_eq!(
            store.subscribers_in(Q, "", "\u{7f}").await.unwrap(),
            vec![moved.clone()]
        );
        assert_eq!(
            store
                .get_subscription(ProviderKind::Fcm, &new_token)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .get_subscription(moved.provider, &moved.token)
                .await
                .unwrap(),
            Some(moved.clone())
        );

        // A removal finds every index the half-done write may have touched.
        assert!(!store
            .remove_subscription(ProviderKind::Fcm, &new_token)
            .await
            .unwrap());
        assert!(store
            .remove_subscription(moved.provider, &moved.token)
            .await
            .unwrap());
        let left: Vec<String> = r.zrange(format!("{p}:push:product:{P}"), 0, -1).unwrap();
        assert_eq!(left, vec![member_key(live.provider, &live.token), stray]);
        assert_eq!(store.count_subscribers(Q).await.unwrap(), 0);
        for m in [&new_member, &moved_member] {
            let exists: bool = r.exists(format!("{p}:push:sub:{m}")).unwrap();
            assert!(!exists, "{m}");
            let score: Option<f64> = r.zscore(format!("{p}:push:seen"), m).unwrap();
            assert_eq!(score, None, "{m}");
        }

        // The sweep cleans up a crashed registration too (found via `seen`).
        let _: () = r
            .zadd(
                format!("{p}:push:seen"),
                &new_member,
                instant(0).timestamp_millis(),
            )
            .unwrap();
        let _: () = r
            .hset(format!("{p}:push:sub:{new_member}"), format!("i:{Q}"), "1")
            .unwrap();
        let _: () = r
            .zadd(format!("{p}:push:product:{Q}"), &new_member, 0)
            .unwrap();
        assert_eq!(
            store.sweep_idle(instant(10)).await.unwrap(),
            1,
            "only the live one counts"
        );
        assert_eq!(store.count_subscribers(Q).await.unwrap(), 0);
        let exists: bool = r.exists(format!("{p}:push:sub:{new_member}")).unwrap();
        assert!(!exists);
        let seen: u64 = r.zcard(format!("{p}:push:seen")).unwrap();
        assert_eq!(seen, 0);
    }

    #[track_caller]
    fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, PushError>) {
        match result {
            Err(PushError::Unavailable { backend, .. }) => assert_eq!(backend, "redis"),
            other => panic!("expected Unavailable from redis, got {other:?}"),
        }
    }

    async fn every_operation_is_unavailable_within(store: &RedisPushStore, timeout: Duration) {
        let slack = timeout * 2 + Duration::from_millis(200);
        let s = sub(ProviderKind::Fcm, &fcm_token(1), &[P], instant(0));
        let claimed = firmcast::fanout::Claimed {
            delivery: "1-0".into(),
            batch: firmcast::fanout::Batch {
                job_id: "j".into(),
                product: P.into(),
                first: "a".into(),
                last: "b".into(),
            },
        };
        macro_rules! check {
            ($op:expr) => {{
                // Bounded here too: a lost deadline must fail, not hang.
                let result = tokio::time::timeout(slack, $op)
                    .await
                    .unwrap_or_else(|_| panic!("{} hung past {slack:?}", stringify!($op)));
                assert_unavailable(result);
            }};
        }
        check!(store.upsert_subscription(&s));
        check!(store.remove_subscription(s.provider, &s.token));
        check!(store.get_subscription(s.provider, &s.token));
        check!(store.subscriber_page(P, None, 10));
        check!(store.subscribers_in(P, "a", "b"));
        check!(store.count_subscribers(P));
        check!(store.sweep_idle(instant(0)));
        check!(store.get_job("j"));
        check!(store.set_job_state("j", JobState::Done));
        check!(store.enqueue(&claimed.batch));
        check!(store.claim("w", Duration::from_secs(1)));
        check!(store.complete(&claimed, &JobDelta::default()));
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast() {
        let timeout = Duration::from_millis(300);
        let prefix = unique_prefix();
        let connect = RedisPushStore::connect("redis://127.0.0.1:1", &prefix, timeout);
        assert_unavailable(
            crate::support::within(timeout * 3, "connect", connect)
                .await
                .map(drop),
        );
        let store = RedisPushStore::connect_lazy("redis://127.0.0.1:1", &prefix, timeout).unwrap();
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
        let timeout = Duration::from_millis(300);
        let store =
            RedisPushStore::connect_lazy(&format!("redis://{addr}"), &unique_prefix(), timeout)
                .unwrap();
        every_operation_is_unavailable_within(&store, timeout).await;
        hold.abort();
    }

    #[tokio::test]
    async fn bad_prefix_is_refused() {
        for prefix in ["", "a{b}", "a b"] {
            assert_unavailable(
                RedisPushStore::connect_lazy(&redis_url(), prefix, Duration::from_secs(1))
                    .map(drop),
            );
        }
    }

    /// Registrations and removals of the same tokens racing on several
    /// instances converge: whatever won last, the subscription, every
    /// product index and `seen` agree.
    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn racing_upserts_and_removals_of_one_token_converge() {
        const PRODUCTS: [&str; 3] = ["A", "B", "C"];
        let mut r = redis();
        for _round in 0..8 {
            let (first, keys) = fresh_redis_push_store().await;
            let p = keys.prefix.clone();
            let second: Arc<dyn PushStore> = Arc::new(
                RedisPushStore::connect(&redis_url(), &p, Duration::from_secs(5))
                    .await
                    .unwrap(),
            );
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..8i64 {
                let store = if t % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                tasks.spawn(async move {
                    for i in 0..60 {
                        let dice: u64 = rand::random();
                        let token = fcm_token((dice % 2) as usize);
                        if dice.is_multiple_of(5) {
                            store
                                .remove_subscription(ProviderKind::Fcm, &token)
                                .await
                                .unwrap();
                        } else {
                            let chosen: Vec<&str> = PRODUCTS
                                .iter()
                                .enumerate()
                                .filter(|(k, _)| (dice >> (8 + k)) & 1 == 1)
                                .map(|(_, p)| *p)
                                .collect();
                            let s = sub(ProviderKind::Fcm, &token, &chosen, instant(t * 100 + i));
                            store.upsert_subscription(&s).await.unwrap();
                        }
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
            assert!(
                !keys.keys().iter().any(|k| k.contains(":push:lock:")),
                "every writer lease was released"
            );
            for n in 0..2 {
                let token = fcm_token(n);
                let m = member_key(ProviderKind::Fcm, &token);
                let got = first
                    .get_subscription(ProviderKind::Fcm, &token)
                    .await
                    .unwrap();
                let fields: HashMap<String, String> =
                    r.hgetall(format!("{p}:push:sub:{m}")).unwrap();
                let seen: Option<f64> = r.zscore(format!("{p}:push:seen"), &m).unwrap();
                assert_eq!(got.is_some(), seen.is_some(), "{m}: {fields:?}");
                if got.is_none() {
                    assert!(fields.is_empty(), "{m}: {fields:?}");
                }
                for x in PRODUCTS {
                    let indexed: Option<f64> =
                        r.zscore(format!("{p}:push:product:{x}"), &m).unwrap();
                    let listed = got
                        .as_ref()
                        .is_some_and(|s| s.products.iter().any(|q| q == x));
                    assert_eq!(indexed.is_some(), listed, "{m} in {x}: {fields:?}");
                    assert_eq!(
                        fields.contains_key(&format!("i:{x}")),
                        listed,
                        "{m} records {x}: {fields:?}"
                    );
                }
            }
        }
    }

    /// A writer that died holding a token's lease delays the next writer of
    /// that token (never anyone else's), until the lease expires.
    #[tokio::test]
    async fn a_dead_writers_lease_delays_only_its_token() {
        let prefix = unique_prefix();
        let _keys = RedisKeys::new(&prefix);
        let timeout = Duration::from_millis(400);
        let store = RedisPushStore::connect(&redis_url(), &prefix, timeout)
            .await
            .unwrap();
        let stuck = sub(ProviderKind::Fcm, &fcm_token(1), &[P], instant(0));
        let other = sub(ProviderKind::Fcm, &fcm_token(2), &[P], instant(0));
        let lock = format!(
            "{prefix}:push:lock:{}",
            member_key(stuck.provider, &stuck.token)
        );
        let mut r = redis();
        let _: () = redis::cmd("SET")
            .arg(&lock)
            .arg("dead-writer")
            .arg("PX")
            .arg(10_000)
            .query(&mut r)
            .unwrap();
        crate::support::within(
            timeout * 3,
            "two writes behind a dead writer's lease",
            async {
                assert_unavailable(store.upsert_subscription(&stuck).await);
                assert_unavailable(
                    store
                        .remove_subscription(stuck.provider, &stuck.token)
                        .await,
                );
            },
        )
        .await;
        store.upsert_subscription(&other).await.unwrap();
        // Readers never wait.
        assert_eq!(store.count_subscribers(P).await.unwrap(), 1);

        // The lease runs out: the next writer goes ahead.
        let _: () = r.pexpire(&lock, 100).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        store.upsert_subscription(&stuck).await.unwrap();
        assert_eq!(
            store
                .get_subscription(stuck.provider, &stuck.token)
                .await
                .unwrap(),
            Some(stuck.clone())
        );
        let lease_left: bool = r.exists(&lock).unwrap();
        assert!(!lease_left, "released after use");
    }
}
