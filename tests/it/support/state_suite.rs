//! The state store conformance suite, written once for every backend.
//!
//! `state_conformance!(make)` expands to one `#[tokio::test]` per behaviour;
//! `make` is an expression whose `.await` yields a [`Fixture`]: a fresh,
//! empty `Arc<dyn StateStore>`, or `(store, guard)` when something (a temp
//! dir, a container) must live until the test ends. The bodies live here as
//! plain async functions so a failure points at this file, not at the macro.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use firmcast::state::{AuditEntry, ReleasePatch, StateError, StateStore, StoredRelease};
use redis::Commands;
use serde_json::json;

#[macro_export]
macro_rules! state_conformance {
    ($make:expr) => {
        $crate::state_conformance!(@tests $make;
            empty_store_reads_nothing,
            insert_then_get_and_list_round_trip,
            duplicate_version_refused_state_unchanged,
            duplicate_version_refused_when_yanked,
            stale_seq_refused_with_max,
            stale_seq_counts_yanked_releases,
            seq_is_per_product,
            update_patches_only_given_fields,
            update_unknown_release_not_found,
            conditional_patches_hold_or_change_nothing,
            list_filters_by_product_ordered_by_seq,
            audit_ids_increase_and_page_newest_first,
            catalog_version_counts_changes_only,
            huge_seqs_compare_exactly,
        );
        $crate::state_conformance!(@race_tests $make;
            concurrent_same_seq_has_one_winner,
            concurrent_racing_seqs_keep_only_non_conflicting,
            concurrent_changes_each_bump_catalog_version,
            racing_ramp_steps_advance_once,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = $make.await;
                let store = $crate::support::state_suite::Fixture::store(&fixture);
                $crate::support::state_suite::$name(store).await;
                drop(fixture);
            }
        )+
    };
    // Races need real parallelism, not one thread interleaving at awaits.
    (@race_tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let fixture = $make.await;
                let store = $crate::support::state_suite::Fixture::store(&fixture);
                $crate::support::state_suite::$name(store).await;
                drop(fixture);
            }
        )+
    };
}

/// What `make` yields: the store, plus anything the test must keep alive.
pub trait Fixture {
    fn store(&self) -> Arc<dyn StateStore>;
}

impl Fixture for Arc<dyn StateStore> {
    fn store(&self) -> Arc<dyn StateStore> {
        Arc::clone(self)
    }
}

impl<Guard> Fixture for (Arc<dyn StateStore>, Guard) {
    fn store(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.0)
    }
}

/// A fixed instant with sub-second precision, so a backend that truncates
/// timestamps fails the round trip.
pub fn instant(secs_after: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs_after, 123_456_789).unwrap()
}

/// A release with every field set to something distinctive.
pub fn release(product: &str, version: &str, seq: u64) -> StoredRelease {
    StoredRelease {
        product: product.into(),
        version: version.into(),
        channel: "beta".into(),
        seq,
        envelope: format!(
            r#"{{"payloadType":"application/vnd.firmcast.release+json","payload":"{product}/{version}","signatures":[]}}"#
        ),
        rollout_bp: 2500,
        paused: true,
        yanked: false,
        seed: 0xdead_beef_0000_0000 ^ seq,
        published_at: instant(0),
        published_by: "alice".into(),
        updated_at: instant(1),
        steering: firmcast::state::Steering {
            paused_by: Some("alice".into()),
            pause_reason: Some("looking at crash reports".into()),
            health: Some(firmcast::state::HealthGate {
                min_reports: 50,
                max_failure_rate: 0.02,
            }),
            ramp: Some(firmcast::state::Ramp {
                steps_bp: vec![100, 1000, 10_000],
                every_secs: 3600,
                step: 1,
                next_at: Some(instant(7200)),
            }),
            window: 3,
        },
    }
}

fn audit(n: u64) -> AuditEntry {
    AuditEntry {
        // Must be ignored by the store.
        id: 424_242,
        at: instant(n as i64),
        actor: format!("ops-{n}"),
        action: "release.patch".into(),
        target: format!("WH-1000XM5 2.{n}.0"),
        detail: json!({ "rollout": n, "paused": n > 2, "note": "ünïcode" }),
    }
}

async fn versions(store: &dyn StateStore, product: Option<&str>) -> Vec<(String, String, u64)> {
    store
        .list_releases(product)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.product, r.version, r.seq))
        .collect()
}

#[track_caller]
fn assert_duplicate(result: Result<(), StateError>, product: &str, version: &str) {
    match result {
        Err(StateError::DuplicateVersion {
            product: p,
            version: v,
        }) => assert_eq!((p.as_str(), v.as_str()), (product, version)),
        other => panic!("expected DuplicateVersion {product} {version}, got {other:?}"),
    }
}

#[track_caller]
fn assert_stale(result: Result<(), StateError>, product: &str, seq: u64, max: u64) {
    match result {
        Err(StateError::StaleSeq {
            product: p,
            seq: s,
            max: m,
        }) => assert_eq!((p.as_str(), s, m), (product, seq, max)),
        other => panic!("expected StaleSeq {product} seq {seq} max {max}, got {other:?}"),
    }
}

pub async fn empty_store_reads_nothing(store: Arc<dyn StateStore>) {
    store.ping().await.unwrap();
    assert!(!store.backend().is_empty());
    assert_eq!(store.get_release("P", "1.0.0").await.unwrap(), None);
    assert!(store.list_releases(None).await.unwrap().is_empty());
    assert!(store.list_releases(Some("P")).await.unwrap().is_empty());
    assert!(store.list_audit(None, 10).await.unwrap().is_empty());
}

pub async fn insert_then_get_and_list_round_trip(store: Arc<dyn StateStore>) {
    let a = release("WH-1000XM5", "2.2.0", 7);
    let mut b = release("WH-1000XM5", "2.3.0-rc.1+build.5", 8);
    b.channel = "stable".into();
    b.rollout_bp = 10_000;
    b.paused = false;
    b.yanked = true;
    b.seed = u64::MAX;
    b.published_by = "bob \"the builder\"".into();
    store.insert_release(&a).await.unwrap();
    store.insert_release(&b).await.unwrap();

    assert_eq!(
        store.get_release(&a.product, &a.version).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get_release(&b.product, &b.version).await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.list_releases(None).await.unwrap(), vec![a.clone(), b]);
    // Lookups are exact: no prefix or cross-product matches.
    assert_eq!(store.get_release(&a.product, "2.2").await.unwrap(), None);
    assert_eq!(
        store.get_release("WH-1000XM", &a.version).await.unwrap(),
        None
    );
}

pub async fn duplicate_version_refused_state_unchanged(store: Arc<dyn StateStore>) {
    let first = release("P", "1.0.0", 1);
    store.insert_release(&first).await.unwrap();

    // A higher seq makes the version the only thing wrong.
    let mut again = release("P", "1.0.0", 2);
    again.envelope = "{\"other\":true}".into();
    again.rollout_bp = 0;
    assert_duplicate(store.insert_release(&again).await, "P", "1.0.0");

    assert_eq!(
        store.get_release("P", "1.0.0").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.list_releases(None).await.unwrap(), vec![first]);
    // The refused insert left no trace of its seq either: 2 is still free.
    store
        .insert_release(&release("P", "1.1.0", 2))
        .await
        .unwrap();
}

pub async fn duplicate_version_refused_when_yanked(store: Arc<dyn StateStore>) {
    store
        .insert_release(&release("P", "1.0.0", 1))
        .await
        .unwrap();
    let yanked = store
        .update_release(
            "P",
            "1.0.0",
            &ReleasePatch {
                yanked: Some(true),
                ..Default::default()
            },
            instant(60),
        )
        .await
        .unwrap();
    assert!(yanked.yanked);

    assert_duplicate(
        store.insert_release(&release("P", "1.0.0", 5)).await,
        "P",
        "1.0.0",
    );
    assert_eq!(store.get_release("P", "1.0.0").await.unwrap(), Some(yanked));
    assert_eq!(
        versions(&*store, None).await,
        vec![("P".into(), "1.0.0".into(), 1)]
    );
}

pub async fn stale_seq_refused_with_max(store: Arc<dyn StateStore>) {
    store
        .insert_release(&release("P", "1.0.0", 3))
        .await
        .unwrap();
    store
        .insert_release(&release("P", "1.1.0", 10))
        .await
        .unwrap();

    assert_stale(
        store.insert_release(&release("P", "2.0.0", 10)).await,
        "P",
        10,
        10,
    );
    assert_stale(
        store.insert_release(&release("P", "2.0.0", 4)).await,
        "P",
        4,
        10,
    );
    assert_stale(
        store.insert_release(&release("P", "2.0.0", 0)).await,
        "P",
        0,
        10,
    );
    assert_eq!(store.get_release("P", "2.0.0").await.unwrap(), None);
    assert_eq!(
        versions(&*store, Some("P")).await,
        vec![
            ("P".into(), "1.0.0".into(), 3),
            ("P".into(), "1.1.0".into(), 10)
        ]
    );

    // Gaps are fine: only "above the max" matters.
    store
        .insert_release(&release("P", "2.0.0", 11))
        .await
        .unwrap();
    store
        .insert_release(&release("P", "3.0.0", 1_000))
        .await
        .unwrap();
    assert_stale(
        store.insert_release(&release("P", "3.1.0", 999)).await,
        "P",
        999,
        1_000,
    );
}

pub async fn stale_seq_counts_yanked_releases(store: Arc<dyn StateStore>) {
    store
        .insert_release(&release("P", "1.0.0", 1))
        .await
        .unwrap();
    store
        .insert_release(&release("P", "1.1.0", 2))
        .await
        .unwrap();
    store
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

    // Yanking the newest must not hand its seq back out (that would let an
    // old signed release be replayed).
    assert_stale(
        store.insert_release(&release("P", "1.2.0", 2)).await,
        "P",
        2,
        2,
    );
    store
        .insert_release(&release("P", "1.2.0", 3))
        .await
        .unwrap();
}

pub async fn seq_is_per_product(store: Arc<dyn StateStore>) {
    store
        .insert_release(&release("A", "1.0.0", 5))
        .await
        .unwrap();
    store
        .insert_release(&release("B", "1.0.0", 1))
        .await
        .unwrap();
    store
        .insert_release(&release("AB", "1.0.0", 1))
        .await
        .unwrap();
    // The same version string under another product is not a duplicate.
    assert_eq!(store.list_releases(None).await.unwrap().len(), 3);

    assert_stale(
        store.insert_release(&release("B", "1.1.0", 1)).await,
        "B",
        1,
        1,
    );
    assert_stale(
        store.insert_release(&release("A", "1.1.0", 4)).await,
        "A",
        4,
        5,
    );
    store
        .insert_release(&release("B", "1.1.0", 2))
        .await
        .unwrap();
    store
        .insert_release(&release("A", "1.1.0", 6))
        .await
        .unwrap();
}

pub async fn update_patches_only_given_fields(store: Arc<dyn StateStore>) {
    let original = release("P", "1.0.0", 1);
    let other = release("P", "1.1.0", 2);
    store.insert_release(&original).await.unwrap();
    store.insert_release(&other).await.unwrap();

    let at = instant(3_600);
    let patched = store
        .update_release(
            "P",
            "1.0.0",
            &ReleasePatch {
                rollout_bp: Some(7_500),
                ..Default::default()
            },
            at,
        )
        .await
        .unwrap();
    let mut expected = original.clone();
    expected.rollout_bp = 7_500;
    expected.updated_at = at;
    assert_eq!(patched, expected);
    assert_eq!(
        store.get_release("P", "1.0.0").await.unwrap(),
        Some(expected.clone())
    );

    let at = instant(7_200);
    let patched = store
        .update_release(
            "P",
            "1.0.0",
            &ReleasePatch {
                paused: Some(false),
                yanked: Some(true),
                ..Default::default()
            },
            at,
        )
        .await
        .unwrap();
    // Resuming clears who paused it and why, starts a new report window and
    // restarts the ramp's interval from now.
    expected.paused = false;
    expected.yanked = true;
    expected.updated_at = at;
    expected.steering.paused_by = None;
    expected.steering.pause_reason = None;
    expected.steering.window += 1;
    let ramp = expected.steering.ramp.as_mut().unwrap();
    ramp.next_at = Some(at + chrono::Duration::seconds(ramp.every_secs as i64));
    assert_eq!(patched, expected);

    // An empty patch still records when it was applied.
    let at = instant(9_000);
    let patched = store
        .update_release("P", "1.0.0", &ReleasePatch::default(), at)
        .await
        .unwrap();
    expected.updated_at = at;
    assert_eq!(patched, expected);
    assert_eq!(
        store.get_release("P", "1.0.0").await.unwrap(),
        Some(expected)
    );

    assert_eq!(store.get_release("P", "1.1.0").await.unwrap(), Some(other));
}

/// The service's own changes (an auto-pause, a ramp step) apply only while
/// their condition holds, and otherwise change nothing.
pub async fn conditional_patches_hold_or_change_nothing(store: Arc<dyn StateStore>) {
    use firmcast::state::Condition;
    let mut r = release("P", "1.0.0", 1);
    r.paused = false;
    store.insert_release(&r).await.unwrap();
    let pause = ReleasePatch {
        paused: Some(true),
        pause: Some(("health".into(), Some("2 of 3 failed".into()))),
        only_if: Some(Condition::Live),
        ..Default::default()
    };
    let paused = store
        .update_release("P", "1.0.0", &pause, instant(10))
        .await
        .unwrap();
    assert!(paused.paused);
    assert_eq!(paused.steering.paused_by.as_deref(), Some("health"));
    assert_eq!(
        paused.steering.pause_reason.as_deref(),
        Some("2 of 3 failed")
    );
    let version = store.catalog_version().await.unwrap();
    // Paused already: a second auto-pause (another instance) changes nothing.
    let again = store
        .update_release("P", "1.0.0", &pause, instant(11))
        .await;
    assert!(
        matches!(again, Err(StateError::Precondition { .. })),
        "{again:?}"
    );
    assert_eq!(store.catalog_version().await.unwrap(), version);
    assert_eq!(
        store
            .get_release("P", "1.0.0")
            .await
            .unwrap()
            .unwrap()
            .updated_at,
        instant(10)
    );
    // A ramp step for a step the release is not at changes nothing either.
    let step = ReleasePatch {
        rollout_bp: Some(10_000),
        only_if: Some(Condition::LiveAtRampStep(0)),
        ..Default::default()
    };
    let resumed = ReleasePatch {
        paused: Some(false),
        ..Default::default()
    };
    store
        .update_release("P", "1.0.0", &resumed, instant(12))
        .await
        .unwrap();
    let wrong = store.update_release("P", "1.0.0", &step, instant(13)).await;
    assert!(
        matches!(wrong, Err(StateError::Precondition { .. })),
        "{wrong:?}"
    );
    let at_step = ReleasePatch {
        only_if: Some(Condition::LiveAtRampStep(1)),
        rollout_bp: Some(10_000),
        ..Default::default()
    };
    let moved = store
        .update_release("P", "1.0.0", &at_step, instant(14))
        .await
        .unwrap();
    assert_eq!(moved.rollout_bp, 10_000, "the fixture's ramp is at step 1");
}

/// Instances racing to take the same ramp step: exactly one moves it.
pub async fn racing_ramp_steps_advance_once(store: Arc<dyn StateStore>) {
    use firmcast::state::Condition;
    let mut r = release("P", "1.0.0", 1);
    r.paused = false;
    store.insert_release(&r).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut ramp = release("P", "1.0.0", 1).steering.ramp.unwrap();
            ramp.step += 1;
            let patch = ReleasePatch {
                rollout_bp: Some(ramp.current_bp()),
                ramp: Some(Some(ramp)),
                only_if: Some(Condition::LiveAtRampStep(1)),
                ..Default::default()
            };
            store
                .update_release("P", "1.0.0", &patch, instant(100 + i))
                .await
        }));
    }
    let mut won = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(r) => {
                won += 1;
                assert_eq!(r.steering.ramp.unwrap().step, 2);
            }
            Err(StateError::Precondition { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won, 1);
    let stored = store.get_release("P", "1.0.0").await.unwrap().unwrap();
    assert_eq!(
        (stored.rollout_bp, stored.steering.ramp.unwrap().step),
        (10_000, 2)
    );
}

pub async fn update_unknown_release_not_found(store: Arc<dyn StateStore>) {
    store
        .insert_release(&release("P", "1.0.0", 1))
        .await
        .unwrap();
    let patch = ReleasePatch {
        paused: Some(true),
        ..Default::default()
    };
    for (product, version) in [("P", "9.9.9"), ("Q", "1.0.0")] {
        match store
            .update_release(product, version, &patch, instant(5))
            .await
        {
            Err(StateError::NotFound {
                product: p,
                version: v,
            }) => assert_eq!((p.as_str(), v.as_str()), (product, version)),
            other => panic!("expected NotFound {product} {version}, got {other:?}"),
        }
    }
    assert_eq!(store.get_release("Q", "1.0.0").await.unwrap(), None);
    assert_eq!(
        store.list_releases(None).await.unwrap(),
        vec![release("P", "1.0.0", 1)]
    );
}

pub async fn list_filters_by_product_ordered_by_seq(store: Arc<dyn StateStore>) {
    // Inserted products out of name order; versions whose string order
    // differs from their seq order.
    for (product, version, seq) in [
        ("zeta", "10.0.0", 1),
        ("alpha", "10.0.0", 3),
        ("zeta", "9.0.0", 2),
        ("alpha", "9.0.0", 20),
        ("mid", "1.0.0", 1),
        ("zeta", "2.0.0", 100),
        ("alpha", "2.0.0", 21),
    ] {
        store
            .insert_release(&release(product, version, seq))
            .await
            .unwrap();
    }
    let row = |p: &str, v: &str, s: u64| (p.to_owned(), v.to_owned(), s);

    assert_eq!(
        versions(&*store, None).await,
        vec![
            row("alpha", "10.0.0", 3),
            row("alpha", "9.0.0", 20),
            row("alpha", "2.0.0", 21),
            row("mid", "1.0.0", 1),
            row("zeta", "10.0.0", 1),
            row("zeta", "9.0.0", 2),
            row("zeta", "2.0.0", 100),
        ]
    );
    assert_eq!(
        versions(&*store, Some("zeta")).await,
        vec![
            row("zeta", "10.0.0", 1),
            row("zeta", "9.0.0", 2),
            row("zeta", "2.0.0", 100)
        ]
    );
    assert_eq!(
        versions(&*store, Some("mid")).await,
        vec![row("mid", "1.0.0", 1)]
    );
    // Exact product match: not a prefix, not case-insensitive.
    assert!(store.list_releases(Some("alp")).await.unwrap().is_empty());
    assert!(store.list_releases(Some("ALPHA")).await.unwrap().is_empty());
    assert!(store.list_releases(Some("nope")).await.unwrap().is_empty());
}

pub async fn audit_ids_increase_and_page_newest_first(store: Arc<dyn StateStore>) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(store.append_audit(&audit(n)).await.unwrap());
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );

    let stored = |i: usize| AuditEntry {
        id: ids[i],
        ..audit(i as u64)
    };
    let id_list = |entries: Vec<AuditEntry>| entries.into_iter().map(|e| e.id).collect::<Vec<_>>();

    assert_eq!(
        store.list_audit(None, 100).await.unwrap(),
        (0..5).rev().map(stored).collect::<Vec<_>>()
    );
    assert_eq!(
        id_list(store.list_audit(None, 2).await.unwrap()),
        vec![ids[4], ids[3]]
    );
    assert_eq!(
        id_list(store.list_audit(Some(ids[3]), 2).await.unwrap()),
        vec![ids[2], ids[1]]
    );
    assert_eq!(
        id_list(store.list_audit(Some(ids[1]), 100).await.unwrap()),
        vec![ids[0]]
    );
    assert!(store
        .list_audit(Some(ids[0]), 100)
        .await
        .unwrap()
        .is_empty());
    assert!(store.list_audit(None, 0).await.unwrap().is_empty());
    // `before` above every id means "from the newest".
    assert_eq!(
        id_list(store.list_audit(Some(ids[4] + 1_000), 1).await.unwrap()),
        vec![ids[4]]
    );

    // Appending after reads keeps increasing.
    let next = store.append_audit(&audit(5)).await.unwrap();
    assert!(next > ids[4]);
    assert_eq!(
        store.list_audit(None, 1).await.unwrap(),
        vec![AuditEntry {
            id: next,
            ..audit(5)
        }]
    );
}

/// Starts `n` inserts at once, released together by a barrier.
async fn race(
    store: &Arc<dyn StateStore>,
    releases: Vec<StoredRelease>,
) -> Vec<(StoredRelease, Result<(), StateError>)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(releases.len()));
    let tasks: Vec<_> = releases
        .into_iter()
        .map(|r| {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let result = store.insert_release(&r).await;
                (r, result)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

pub async fn concurrent_same_seq_has_one_winner(store: Arc<dyn StateStore>) {
    let contenders = (0..20)
        .map(|i| release("P", &format!("1.0.{i}"), 1))
        .collect();
    let results = race(&store, contenders).await;

    let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (r, result) in &results {
        if result.is_err() {
            assert!(
                matches!(result, Err(StateError::StaleSeq { seq: 1, max: 1, .. })),
                "{} {result:?}",
                r.version
            );
        }
    }
    assert_eq!(
        store.list_releases(None).await.unwrap(),
        vec![winners[0].0.clone()]
    );
}

pub async fn concurrent_racing_seqs_keep_only_non_conflicting(store: Arc<dyn StateStore>) {
    store
        .insert_release(&release("P", "0.1.0", 1))
        .await
        .unwrap();
    // 20 distinct versions, seqs 2..=11 each claimed twice, plus a replay of
    // the already stored seq 1.
    let mut contenders: Vec<_> = (0..20)
        .map(|i| release("P", &format!("1.0.{i}"), 2 + i % 10))
        .collect();
    contenders.push(release("P", "0.2.0", 1));
    let results = race(&store, contenders).await;

    let stored = store.list_releases(Some("P")).await.unwrap();
    let stored_seqs: Vec<u64> = stored.iter().map(|r| r.seq).collect();
    assert!(
        stored_seqs.windows(2).all(|w| w[0] < w[1]),
        "seq stored twice or out of order: {stored_seqs:?}"
    );
    let max = *stored_seqs.last().unwrap();

    let stored_versions: BTreeSet<&str> = stored.iter().map(|r| r.version.as_str()).collect();
    let mut won: BTreeSet<&str> = BTreeSet::from(["0.1.0"]);
    for (r, result) in &results {
        match result {
            Ok(()) => {
                won.insert(r.version.as_str());
            }
            Err(StateError::StaleSeq { seq, max: then, .. }) => {
                assert!(seq == &r.seq && then >= seq, "{} {result:?}", r.version);
                assert!(r.seq <= max);
            }
            Err(e) => panic!("{}: unexpected {e:?}", r.version),
        }
    }
    // Exactly the accepted inserts are stored, each as sent.
    assert_eq!(stored_versions, won);
    for r in &stored {
        let sent = results
            .iter()
            .find(|(s, _)| s.version == r.version)
            .map(|(s, _)| s);
        if let Some(sent) = sent {
            assert_eq!(r, sent);
        }
    }
    assert!(
        won.len() >= 2,
        "the first contender to commit always wins: {results:?}"
    );
    assert!(!won.contains("0.2.0"), "seq 1 replayed");
}

pub async fn catalog_version_counts_changes_only(store: Arc<dyn StateStore>) {
    let version = || async { store.catalog_version().await.unwrap() };
    assert_eq!(version().await, 0, "an empty store is at version 0");

    store
        .insert_release(&release("P", "1.0.0", 1))
        .await
        .unwrap();
    assert_eq!(version().await, 1);
    store
        .insert_release(&release("Q", "1.0.0", 1))
        .await
        .unwrap();
    assert_eq!(version().await, 2);

    // Refusals change nothing, so they announce nothing.
    assert_duplicate(
        store.insert_release(&release("P", "1.0.0", 9)).await,
        "P",
        "1.0.0",
    );
    assert_stale(
        store.insert_release(&release("P", "2.0.0", 1)).await,
        "P",
        1,
        1,
    );
    assert!(matches!(
        store
            .update_release("P", "9.9.9", &ReleasePatch::default(), instant(5))
            .await,
        Err(StateError::NotFound { .. })
    ));
    assert_eq!(version().await, 2);

    // Every successful patch counts, even one that changes only updated_at.
    store
        .update_release(
            "P",
            "1.0.0",
            &ReleasePatch {
                rollout_bp: Some(10_000),
                ..Default::default()
            },
            instant(10),
        )
        .await
        .unwrap();
    assert_eq!(version().await, 3);
    store
        .update_release("P", "1.0.0", &ReleasePatch::default(), instant(11))
        .await
        .unwrap();
    assert_eq!(version().await, 4);

    // Reads and the audit log are not catalog changes.
    store.get_release("P", "1.0.0").await.unwrap();
    store.list_releases(None).await.unwrap();
    store.append_audit(&audit(1)).await.unwrap();
    store.list_audit(None, 10).await.unwrap();
    assert_eq!(version().await, 4);
}

pub async fn concurrent_changes_each_bump_catalog_version(store: Arc<dyn StateStore>) {
    store
        .insert_release(&release("P", "1.0.0", 1))
        .await
        .unwrap();
    let before = store.catalog_version().await.unwrap();
    // 10 patches of one release (each must see the others' writes) and 10
    // publishes of distinct products, all at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20u16)
        .map(|i| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                if i % 2 == 0 {
                    store
                        .update_release(
                            "P",
                            "1.0.0",
                            &ReleasePatch {
                                rollout_bp: Some(i * 100),
                                ..Default::default()
                            },
                            instant(i64::from(i)),
                        )
                        .await
                        .map(drop)
                } else {
                    store
                        .insert_release(&release(&format!("Q{i}"), "1.0.0", 1))
                        .await
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        store.catalog_version().await.unwrap(),
        before + 20,
        "a bump was lost or doubled"
    );
    assert_eq!(store.list_releases(None).await.unwrap().len(), 11);
}

pub async fn huge_seqs_compare_exactly(store: Arc<dyn StateStore>) {
    // Beyond 2^53 a double cannot tell n from n + 1; the store must.
    let big = 1u64 << 60;
    store
        .insert_release(&release("P", "1.0.0", big))
        .await
        .unwrap();
    store
        .insert_release(&release("P", "1.0.1", big + 1))
        .await
        .unwrap();
    assert_stale(
        store.insert_release(&release("P", "1.0.2", big + 1)).await,
        "P",
        big + 1,
        big + 1,
    );
    store
        .insert_release(&release("P", "2.0.0", u64::MAX))
        .await
        .unwrap();
    assert_stale(
        store
            .insert_release(&release("P", "2.0.1", u64::MAX - 1))
            .await,
        "P",
        u64::MAX - 1,
        u64::MAX,
    );
    assert_eq!(
        versions(&*store, Some("P")).await,
        vec![
            ("P".into(), "1.0.0".into(), big),
            ("P".into(), "1.0.1".into(), big + 1),
            ("P".into(), "2.0.0".into(), u64::MAX),
        ]
    );
}

// ---- Redis fixtures (shared by the Redis conformance and migration tests) ----

/// `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other run uses.
pub fn unique_prefix() -> String {
    format!("firmcast-test-{:016x}", rand::random::<u64>())
}

/// Deletes every key under its prefix when dropped, so test runs leave the
/// shared Redis as they found it.
pub struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            url: redis_url(),
            prefix: prefix.to_owned(),
        }
    }

    /// Every key under the prefix, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.try_keys().expect("redis answers SCAN")
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url.as_str())?
            .get_connection_with_timeout(std::time::Duration::from_secs(5))
    }

    fn try_keys(&self) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.connection()?;
        let mut keys = conn
            .scan_match::<_, String>(format!("{}:*", self.prefix))?
            .collect::<redis::RedisResult<Vec<String>>>()?;
        keys.sort();
        Ok(keys)
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        // Best effort, and never a panic while a failed test unwinds.
        let Ok(keys) = self.try_keys() else { return };
        if keys.is_empty() {
            return;
        }
        if let Ok(mut conn) = self.connection() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}

/// A fresh Redis store under its own prefix, with the guard removing its keys.
pub async fn fresh_redis_store() -> (Arc<dyn StateStore>, RedisKeys) {
    let prefix = unique_prefix();
    let store = firmcast::state::redis::RedisStateStore::connect(
        &redis_url(),
        &prefix,
        std::time::Duration::from_secs(5),
    )
    .await
    .expect("redis is reachable at REDIS_URL (default redis://127.0.0.1:6379)");
    (Arc::new(store), RedisKeys::new(&prefix))
}
