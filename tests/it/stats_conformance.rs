//! The stats store conformance suite, against the embedded store and Redis:
//! adds add up, a flush retried with its id counts once, reads filter by
//! product, channel and day, windows keep their reports apart, and what is
//! stored names no client.

use crate::support::state_suite::{redis_url, unique_prefix};
use firmcast::stats::embedded::EmbeddedStatsStore;
use firmcast::stats::redis::RedisStatsStore;
use firmcast::stats::{
    AdoptionCount, Flush, Outcome, ReportCount, Stage, StatsStore, WindowReports,
};
use firmcast::storage::{EmbeddedDb, RedisLink};
use std::sync::Arc;
use std::time::Duration;

fn adoption(
    day: u32,
    product: &str,
    channel: &str,
    version: &str,
    active: u64,
    new: u64,
) -> AdoptionCount {
    AdoptionCount {
        day,
        product: product.into(),
        channel: channel.into(),
        version: version.into(),
        active,
        new,
    }
}

fn report(
    outcome: Outcome,
    stage: Option<Stage>,
    code: Option<&str>,
    window: u32,
    count: u64,
) -> ReportCount {
    ReportCount {
        day: 100,
        product: "P".into(),
        to: "2.0.0".into(),
        from: "1.0.0".into(),
        outcome,
        stage,
        code: code.map(Into::into),
        window,
        count,
    }
}

async fn adds_add_up_and_a_retried_flush_counts_once(store: Arc<dyn StatsStore>) {
    let first = Flush {
        id: "a".into(),
        adoption: vec![
            adoption(100, "P", "stable", "1.0.0", 3, 1),
            adoption(100, "P", "beta", "1.0.0", 2, 2),
            adoption(101, "P", "stable", "1.1.0", 5, 0),
            adoption(100, "Q", "stable", "1.0.0", 7, 7),
        ],
        reports: vec![
            report(Outcome::Installed, None, None, 0, 8),
            report(Outcome::Failed, Some(Stage::Install), Some("E42"), 0, 2),
            report(Outcome::Failed, None, None, 0, 1),
            report(Outcome::Failed, Some(Stage::Boot), Some("E42"), 1, 4),
        ],
    };
    store.add(&first).await.unwrap();
    store.add(&first).await.unwrap(); // retried after a timeout: no double
    let second = Flush {
        id: "b".into(),
        adoption: vec![adoption(100, "P", "stable", "1.0.0", 1, 0)],
        reports: vec![report(Outcome::Installed, None, None, 0, 1)],
    };
    store.add(&second).await.unwrap();

    let all = store.adoption("P", None, 99..=101).await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.day).collect::<Vec<_>>(),
        vec![100, 101]
    );
    let v = &all[0].versions["1.0.0"];
    assert_eq!((v.active, v.new), (6, 3), "stable 3+1 and beta 2 active");
    assert_eq!(all[1].versions["1.1.0"].active, 5);
    let stable = store
        .adoption("P", Some("stable"), 100..=100)
        .await
        .unwrap();
    let v = &stable[0].versions["1.0.0"];
    assert_eq!((v.active, v.new), (4, 1));
    assert!(store
        .adoption("P", None, 102..=110)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.adoption("Q", None, 100..=100).await.unwrap()[0].versions["1.0.0"].new,
        7
    );

    let w0 = store.window("P", "2.0.0", 0).await.unwrap();
    assert_eq!((w0.installed, w0.failed), (9, 3));
    assert_eq!(w0.by_stage["install"], 2);
    assert_eq!(w0.by_stage["none"], 1);
    assert_eq!(w0.codes["E42"], 2);
    assert_eq!(w0.codes["none"], 1);
    let w1 = store.window("P", "2.0.0", 1).await.unwrap();
    assert_eq!((w1.installed, w1.failed, w1.by_stage["boot"]), (0, 4, 4));
    assert_eq!(store.window("P", "9.9.9", 0).await.unwrap().total(), 0);
    // Many at once, in the order asked, the unknown ones empty.
    let key = |v: &str, w| ("P".to_owned(), v.to_owned(), w);
    let many = store
        .windows(&[key("2.0.0", 1), key("9.9.9", 0), key("2.0.0", 0)])
        .await
        .unwrap();
    assert_eq!(many, vec![w1, WindowReports::default(), w0]);
    assert!(store.windows(&[]).await.unwrap().is_empty());
}

async fn a_large_flush_goes_in_parts_each_counted_once(store: Arc<dyn StatsStore>) {
    let many: Vec<AdoptionCount> = (0..5_000)
        .map(|i| adoption(100, "P", "stable", &format!("1.0.{i}"), 1, 1))
        .collect();
    let flush = Flush {
        id: "big".into(),
        adoption: many,
        reports: Vec::new(),
    };
    store.add(&flush).await.unwrap();
    store.add(&flush).await.unwrap();
    let days = store.adoption("P", None, 100..=100).await.unwrap();
    assert_eq!(days[0].versions.len(), 5_000);
    assert!(days[0]
        .versions
        .values()
        .all(|a| a.active == 1 && a.new == 1));
}

macro_rules! stats_suite {
    ($make:expr) => {
        #[tokio::test]
        async fn adds_add_up_and_a_retried_flush_counts_once() {
            let (store, _guard) = $make.await;
            super::adds_add_up_and_a_retried_flush_counts_once(store).await;
        }
        #[tokio::test]
        async fn a_large_flush_goes_in_parts_each_counted_once() {
            let (store, _guard) = $make.await;
            super::a_large_flush_goes_in_parts_each_counted_once(store).await;
        }
    };
}

mod embedded {
    use super::*;

    async fn fresh() -> (Arc<dyn StatsStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(&dir.path().join("state.redb"), 1 << 20).unwrap();
        (Arc::new(EmbeddedStatsStore::new(db).unwrap()), dir)
    }

    stats_suite!(fresh());

    #[tokio::test]
    async fn prune_drops_days_past_retention() {
        let (store, _dir) = fresh().await;
        let flush = Flush {
            id: "old".into(),
            adoption: vec![
                adoption(100, "P", "stable", "1.0.0", 1, 0),
                adoption(600, "P", "stable", "1.0.0", 1, 0),
            ],
            reports: Vec::new(),
        };
        store.add(&flush).await.unwrap();
        store.prune(600).await.unwrap();
        let left = store.adoption("P", None, 0..=1000).await.unwrap();
        assert_eq!(left.iter().map(|d| d.day).collect::<Vec<_>>(), vec![600]);
    }
}

mod on_redis {
    use super::*;

    async fn fresh() -> (Arc<dyn StatsStore>, String) {
        let prefix = unique_prefix();
        let link = RedisLink::connect(&redis_url(), &prefix, Duration::from_secs(2))
            .await
            .unwrap();
        (Arc::new(RedisStatsStore::new(link)), prefix)
    }

    stats_suite!(fresh());

    #[tokio::test]
    async fn every_key_is_under_the_stats_tag_and_expires() {
        let (store, prefix) = fresh().await;
        store
            .add(&Flush {
                id: "x".into(),
                adoption: vec![adoption(100, "P", "stable", "1.0.0", 1, 0)],
                reports: vec![report(
                    Outcome::Failed,
                    Some(Stage::Verify),
                    Some("E1"),
                    0,
                    1,
                )],
            })
            .await
            .unwrap();
        let client = redis::Client::open(redis_url()).unwrap();
        let mut c = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut c)
            .unwrap();
        assert!(keys.len() >= 4, "{keys:?}");
        for key in keys {
            assert!(key.starts_with(&format!("{prefix}:{{stats}}:")), "{key}");
            let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut c).unwrap();
            assert!(ttl > 0, "{key} never expires");
        }
    }
}
