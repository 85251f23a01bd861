//! The push store conformance suite, written once for every backend.
//!
//! `push_conformance!(make)` expands to one `#[tokio::test]` per behaviour;
//! `make` is an expression whose `.await` yields a [`Fixture`]: a fresh,
//! empty `Arc<dyn PushStore>`, or `(store, guard)` when something (a temp
//! dir, a Redis key prefix) must live until the test ends. The bodies live
//! here as plain async functions so a failure points at this file, not at
//! the macro.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use firmcast::fanout::store::member_key;
use firmcast::fanout::PushError;
use firmcast::fanout::{
    Batch, Failures, Job, JobCounters, JobDelta, JobState, ProviderKind, PushStore, Subscription,
};

use super::state_suite::{instant, redis_url, unique_prefix, RedisKeys};

#[macro_export]
macro_rules! push_conformance {
    ($make:expr) => {
        $crate::push_conformance!(@tests $make;
            subscription_round_trip,
            reupsert_with_fewer_products_leaves_the_old_indexes,
            remove_clears_every_index_once,
            paging_is_ordered_complete_and_disjoint,
            ranges_skip_members_removed_after_paging,
            count_follows_the_index,
            sweep_removes_only_idle_subscriptions_everywhere,
            jobs_round_trip,
            jobs_are_listed_newest_first,
            set_job_state_never_leaves_a_final_state,
            queue_is_fifo_and_holds_claimed_batches,
            enqueue_all_queues_in_order_after_earlier_batches,
            stale_batch_is_taken_over_and_counted_once,
            failures_add_up_across_batches_and_final_states_are_timed,
            a_claim_is_renewed_by_its_owner_only,
        );
        $crate::push_conformance!(@race_tests $make;
            concurrent_consumers_drain_each_batch_once,
            concurrent_takeovers_count_each_batch_once,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = $make.await;
                let store = $crate::support::push_suite::Fixture::store(&fixture);
                $crate::support::push_suite::$name(store).await;
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
                let store = $crate::support::push_suite::Fixture::store(&fixture);
                $crate::support::push_suite::$name(store).await;
                drop(fixture);
            }
        )+
    };
}

/// What `make` yields: the store, plus anything the test must keep alive.
pub trait Fixture {
    fn store(&self) -> Arc<dyn PushStore>;
}

impl Fixture for Arc<dyn PushStore> {
    fn store(&self) -> Arc<dyn PushStore> {
        Arc::clone(self)
    }
}

impl<Guard> Fixture for (Arc<dyn PushStore>, Guard) {
    fn store(&self) -> Arc<dyn PushStore> {
        Arc::clone(&self.0)
    }
}

/// A fresh Redis push store under its own prefix, with the guard removing
/// its keys when the test ends.
pub async fn fresh_redis_push_store() -> (Arc<dyn PushStore>, RedisKeys) {
    let prefix = unique_prefix();
    let store = firmcast::fanout::redis::RedisPushStore::connect(
        &redis_url(),
        &prefix,
        Duration::from_secs(5),
    )
    .await
    .expect("redis is reachable at REDIS_URL (default redis://127.0.0.1:6379)");
    (Arc::new(store), RedisKeys::new(&prefix))
}

const P: &str = "WH-1000XM5";
const Q: &str = "WF-1000XM5";
/// Above every member key (`apns:` and `fcm:` followed by token characters).
const TOP: &str = "\u{7f}";

/// An FCM-shaped registration token.
pub fn fcm_token(n: usize) -> String {
    format!("dK3x{n:06}:APA91bH-example_token.{n:x}")
}

/// An APNs-shaped device token (64 hex digits).
pub fn apns_token(n: usize) -> String {
    format!("{n:064x}")
}

pub fn sub(
    provider: ProviderKind,
    token: &str,
    products: &[&str],
    last_seen: DateTime<Utc>,
) -> Subscription {
    let mut products: Vec<String> = products.iter().map(|p| (*p).to_owned()).collect();
    products.sort();
    products.dedup();
    Subscription {
        provider,
        token: token.to_owned(),
        products,
        locale: "de-DE".into(),
        last_seen,
    }
}

fn member(s: &Subscription) -> String {
    member_key(s.provider, &s.token)
}

/// The whole index of `product`, paged.
async fn all_members(store: &dyn PushStore, product: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let page = store
            .subscriber_page(product, out.last().map(String::as_str), 7)
            .await
            .unwrap();
        let full = page.len() == 7;
        out.extend(page);
        if !full {
            return out;
        }
    }
}

/// Every subscription in `product`'s index.
async fn all_subscribers(store: &dyn PushStore, product: &str) -> Vec<Subscription> {
    store.subscribers_in(product, "", TOP).await.unwrap()
}

fn members_of(subs: &[Subscription]) -> Vec<String> {
    subs.iter().map(member).collect()
}

fn job(id: &str, batches_total: u64) -> Job {
    Job {
        id: id.to_owned(),
        product: P.into(),
        version: "2.3.0-rc.1+build.5".into(),
        dry_run: false,
        state: JobState::Running,
        created_at: instant(5),
        created_by: "bob \"the builder\" ünïcode".into(),
        counters: JobCounters {
            total: 1234,
            sent: 0,
            failed: 0,
            removed: 0,
            retried: 0,
        },
        batches_total,
        batches_done: 0,
        finished_at: None,
        failures: Default::default(),
        checked: vec![],
    }
}

fn delta(counters: JobCounters) -> JobDelta {
    JobDelta {
        counters,
        ..JobDelta::default()
    }
}

fn batch(job_id: &str, n: usize) -> Batch {
    Batch {
        job_id: job_id.to_owned(),
        product: P.into(),
        first: format!("fcm:first-{n:04}"),
        last: format!("fcm:last-{n:04}"),
    }
}

fn plus(a: JobCounters, b: JobCounters) -> JobCounters {
    JobCounters {
        total: a.total,
        sent: a.sent + b.sent,
        failed: a.failed + b.failed,
        removed: a.removed + b.removed,
        retried: a.retried + b.retried,
    }
}

const LONG: Duration = Duration::from_secs(60);

pub async fn subscription_round_trip(store: Arc<dyn PushStore>) {
    assert_eq!(
        store
            .get_subscription(ProviderKind::Fcm, &fcm_token(1))
            .await
            .unwrap(),
        None
    );
    let a = sub(ProviderKind::Fcm, &fcm_token(1), &[P, Q], instant(0));
    let mut b = sub(ProviderKind::Apns, &apns_token(1), &[P], instant(1));
    b.locale = "ja".into();
    store.upsert_subscription(&a).await.unwrap();
    store.upsert_subscription(&b).await.unwrap();
    assert_eq!(
        store.get_subscription(a.provider, &a.token).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get_subscription(b.provider, &b.token).await.unwrap(),
        Some(b.clone())
    );
    // The provider is part of the identity.
    assert_eq!(
        store
            .get_subscription(ProviderKind::Apns, &a.token)
            .await
            .unwrap(),
        None
    );

    // A re-registration replaces locale and last seen.
    let mut a2 = a.clone();
    a2.locale = "fr-CA".into();
    a2.last_seen = instant(50);
    store.upsert_subscription(&a2).await.unwrap();
    assert_eq!(
        store.get_subscription(a.provider, &a.token).await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(store.count_subscribers(P).await.unwrap(), 2);
    assert_eq!(store.count_subscribers(Q).await.unwrap(), 1);
    assert_eq!(
        all_subscribers(store.as_ref(), P).await,
        vec![b, a2.clone()]
    );
    assert_eq!(all_subscribers(store.as_ref(), Q).await, vec![a2]);
}

pub async fn reupsert_with_fewer_products_leaves_the_old_indexes(store: Arc<dyn PushStore>) {
    let r = "WH-CH720N";
    let mut s = sub(ProviderKind::Fcm, &fcm_token(1), &[P, Q, r], instant(0));
    let other = sub(ProviderKind::Fcm, &fcm_token(2), &[P, r], instant(0));
    store.upsert_subscription(&s).await.unwrap();
    store.upsert_subscription(&other).await.unwrap();

    s.products = vec![Q.to_owned()];
    s.locale = "en-GB".into();
    store.upsert_subscription(&s).await.unwrap();
    assert_eq!(
        store.get_subscription(s.provider, &s.token).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(all_members(store.as_ref(), P).await, vec![member(&other)]);
    assert_eq!(all_members(store.as_ref(), r).await, vec![member(&other)]);
    assert_eq!(all_members(store.as_ref(), Q).await, vec![member(&s)]);
    assert_eq!(store.count_subscribers(P).await.unwrap(), 1);
    assert_eq!(store.count_subscribers(r).await.unwrap(), 1);
    assert_eq!(store.count_subscribers(Q).await.unwrap(), 1);
    assert_eq!(
        all_subscribers(store.as_ref(), P).await,
        vec![other.clone()]
    );

    // And back again: a product can be rejoined.
    s.products = vec![Q.to_owned(), P.to_owned()];
    s.products.sort();
    store.upsert_subscription(&s).await.unwrap();
    assert_eq!(
        all_members(store.as_ref(), P).await,
        vec![member(&s), member(&other)]
    );
    assert_eq!(store.count_subscribers(P).await.unwrap(), 2);
    // No products at all: in no index, still stored.
    s.products.clear();
    store.upsert_subscription(&s).await.unwrap();
    assert_eq!(all_members(store.as_ref(), P).await, vec![member(&other)]);
    assert!(all_members(store.as_ref(), Q).await.is_empty());
    assert_eq!(
        store.get_subscription(s.provider, &s.token).await.unwrap(),
        Some(s)
    );
}

pub async fn remove_clears_every_index_once(store: Arc<dyn PushStore>) {
    let gone = sub(ProviderKind::Apns, &apns_token(7), &[P, Q], instant(0));
    let kept = sub(ProviderKind::Fcm, &fcm_token(7), &[P, Q], instant(0));
    store.upsert_subscription(&gone).await.unwrap();
    store.upsert_subscription(&kept).await.unwrap();

    assert!(store
        .remove_subscription(gone.provider, &gone.token)
        .await
        .unwrap());
    assert_eq!(
        store
            .get_subscription(gone.provider, &gone.token)
            .await
            .unwrap(),
        None
    );
    for product in [P, Q] {
        assert_eq!(
            all_members(store.as_ref(), product).await,
            vec![member(&kept)]
        );
        assert_eq!(store.count_subscribers(product).await.unwrap(), 1);
        assert_eq!(
            all_subscribers(store.as_ref(), product).await,
            vec![kept.clone()]
        );
    }
    assert!(!store
        .remove_subscription(gone.provider, &gone.token)
        .await
        .unwrap());
    assert!(!store
        .remove_subscription(ProviderKind::Fcm, &fcm_token(99))
        .await
        .unwrap());
    // The other provider's token of the same string is someone else.
    assert!(!store
        .remove_subscription(ProviderKind::Apns, &kept.token)
        .await
        .unwrap());
    assert_eq!(store.count_subscribers(P).await.unwrap(), 1);

    // Registering again after a removal works from scratch.
    let back = sub(gone.provider, &gone.token, &[Q], instant(9));
    store.upsert_subscription(&back).await.unwrap();
    assert_eq!(all_members(store.as_ref(), P).await, vec![member(&kept)]);
    assert_eq!(
        all_members(store.as_ref(), Q).await,
        vec![member(&back), member(&kept)]
    );
}

pub async fn paging_is_ordered_complete_and_disjoint(store: Arc<dyn PushStore>) {
    const N: usize = 1234;
    let subs: Vec<Subscription> = (0..N)
        .map(|i| {
            let products: &[&str] = if i % 5 == 0 { &[P, Q] } else { &[P] };
            if i % 3 == 0 {
                sub(ProviderKind::Apns, &apns_token(i), products, instant(0))
            } else {
                sub(ProviderKind::Fcm, &fcm_token(i), products, instant(0))
            }
        })
        // Subscribers of another product only must never show up.
        .chain((0..40).map(|i| sub(ProviderKind::Fcm, &fcm_token(10_000 + i), &[Q], instant(0))))
        .collect();
    upsert_all(&store, &subs).await;
    let expected: Vec<String> = subs[..N]
        .iter()
        .map(member)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(expected.len(), N);

    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        let page = store
            .subscriber_page(P, seen.last().map(String::as_str), 100)
            .await
            .unwrap();
        assert!(page.len() <= 100, "a page of {}", page.len());
        for m in &page {
            if let Some(prev) = seen.last() {
                assert!(prev < m, "{prev} then {m}: unordered or overlapping");
            }
            seen.push(m.clone());
        }
        if page.is_empty() {
            break;
        }
        pages += 1;
        if page.len() < 100 {
            break;
        }
    }
    assert_eq!(pages, 13);
    assert_eq!(seen, expected, "the pages are the index, in order");
    assert!(store
        .subscriber_page(P, Some(&expected[N - 1]), 100)
        .await
        .unwrap()
        .is_empty());
    // `after` need not be a member: the page starts at the next one.
    let between = format!("{}!", expected[500]);
    assert_eq!(
        store.subscriber_page(P, Some(&between), 3).await.unwrap(),
        expected[501..504].to_vec()
    );
    assert_eq!(store.count_subscribers(P).await.unwrap(), N as u64);
    assert_eq!(
        store.count_subscribers(Q).await.unwrap(),
        (N / 5 + 1 + 40) as u64
    );
    // Batch boundaries: every `size` members, the last range shorter.
    for size in [1, 100, 617, N, 5000] {
        let (ranges, total) = store.batch_ranges(P, size).await.unwrap();
        assert_eq!(total, N as u64, "size {size}");
        let want: Vec<(String, String)> = expected
            .chunks(size)
            .map(|c| (c[0].clone(), c[c.len() - 1].clone()))
            .collect();
        assert_eq!(ranges, want, "size {size}");
    }
    assert_eq!(
        store.batch_ranges("nobody", 100).await.unwrap(),
        (vec![], 0)
    );
}

async fn upsert_all(store: &Arc<dyn PushStore>, subs: &[Subscription]) {
    use futures_util::StreamExt;
    futures_util::stream::iter(subs)
        .for_each_concurrent(16, |s| async move {
            store.upsert_subscription(s).await.unwrap();
        })
        .await;
}

pub async fn ranges_skip_members_removed_after_paging(store: Arc<dyn PushStore>) {
    let subs: Vec<Subscription> = (0..10)
        .map(|i| sub(ProviderKind::Fcm, &fcm_token(i), &[P], instant(i as i64)))
        .collect();
    upsert_all(&store, &subs).await;
    let outsider = sub(ProviderKind::Fcm, &fcm_token(3_000), &[Q], instant(0));
    store.upsert_subscription(&outsider).await.unwrap();

    // A job cuts the index into a range...
    let page = store.subscriber_page(P, None, 10).await.unwrap();
    assert_eq!(page, members_of(&subs));
    let (first, last) = (&page[0], &page[9]);
    // ...then people unsubscribe before a worker reads the range: both
    // edges, one in the middle, and one who only left this product.
    for i in [0, 4, 9] {
        assert!(store
            .remove_subscription(ProviderKind::Fcm, &subs[i].token)
            .await
            .unwrap());
    }
    let mut moved = subs[6].clone();
    moved.products = vec![Q.to_owned()];
    store.upsert_subscription(&moved).await.unwrap();

    let expected: Vec<Subscription> = [1, 2, 3, 5, 7, 8]
        .iter()
        .map(|&i| subs[i].clone())
        .collect();
    assert_eq!(
        store.subscribers_in(P, first, last).await.unwrap(),
        expected,
        "a range read after unsubscribes holds exactly the current subscribers"
    );
    // Bounds are inclusive.
    assert_eq!(
        store.subscribers_in(P, &page[1], &page[3]).await.unwrap(),
        vec![subs[1].clone(), subs[2].clone(), subs[3].clone()]
    );
    assert_eq!(
        store.subscribers_in(P, &page[5], &page[5]).await.unwrap(),
        vec![subs[5].clone()]
    );
    assert!(store
        .subscribers_in(P, &page[4], &page[4])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.subscribers_in(Q, "", TOP).await.unwrap(),
        vec![moved, outsider]
    );
}

pub async fn count_follows_the_index(store: Arc<dyn PushStore>) {
    assert_eq!(store.count_subscribers(P).await.unwrap(), 0);
    let subs: Vec<Subscription> = (0..5)
        .map(|i| {
            let products: &[&str] = if i < 2 { &[P, Q] } else { &[P] };
            sub(ProviderKind::Apns, &apns_token(i), products, instant(0))
        })
        .collect();
    upsert_all(&store, &subs).await;
    assert_eq!(store.count_subscribers(P).await.unwrap(), 5);
    assert_eq!(store.count_subscribers(Q).await.unwrap(), 2);
    // Re-registering the same products counts once.
    store.upsert_subscription(&subs[0]).await.unwrap();
    assert_eq!(store.count_subscribers(P).await.unwrap(), 5);

    store
        .remove_subscription(ProviderKind::Apns, &subs[0].token)
        .await
        .unwrap();
    assert_eq!(store.count_subscribers(P).await.unwrap(), 4);
    assert_eq!(store.count_subscribers(Q).await.unwrap(), 1);

    let mut moved = subs[4].clone();
    moved.products = vec![Q.to_owned()];
    store.upsert_subscription(&moved).await.unwrap();
    assert_eq!(store.count_subscribers(P).await.unwrap(), 3);
    assert_eq!(store.count_subscribers(Q).await.unwrap(), 2);
    assert_eq!(store.count_subscribers("WH-CH720N").await.unwrap(), 0);
    // Product names are exact, not prefixes.
    assert_eq!(store.count_subscribers("WH-1000XM").await.unwrap(), 0);
}

pub async fn sweep_removes_only_idle_subscriptions_everywhere(store: Arc<dyn PushStore>) {
    let before = instant(100_000);
    let ns = chrono::Duration::nanoseconds(1);
    // More idle ones than one round of a chunked sweep.
    let mut idle: Vec<Subscription> = (0..300)
        .map(|i| {
            let products: &[&str] = if i % 2 == 0 { &[P, Q] } else { &[P] };
            sub(
                ProviderKind::Fcm,
                &fcm_token(i),
                products,
                instant(i as i64),
            )
        })
        .collect();
    // Idle by a nanosecond, in the same millisecond as `before`.
    idle.push(sub(ProviderKind::Apns, &apns_token(1), &[P], before - ns));
    let fresh = vec![
        // Not idle: "before" is exclusive (same millisecond too).
        sub(ProviderKind::Apns, &apns_token(2), &[P, Q], before),
        sub(ProviderKind::Apns, &apns_token(3), &[P], before + ns),
        sub(ProviderKind::Apns, &apns_token(4), &[Q], instant(200_000)),
    ];
    upsert_all(&store, &idle).await;
    upsert_all(&store, &fresh).await;
    // A refreshed registration is judged by its new last seen.
    let mut refreshed = sub(ProviderKind::Fcm, &fcm_token(5_000), &[P], instant(1));
    store.upsert_subscription(&refreshed).await.unwrap();
    refreshed.last_seen = instant(150_000);
    store.upsert_subscription(&refreshed).await.unwrap();

    assert_eq!(store.sweep_idle(before).await.unwrap(), idle.len() as u64);
    for s in &idle {
        assert_eq!(
            store.get_subscription(s.provider, &s.token).await.unwrap(),
            None,
            "{} was idle",
            member(s)
        );
    }
    for s in fresh.iter().chain([&refreshed]) {
        assert_eq!(
            store.get_subscription(s.provider, &s.token).await.unwrap(),
            Some(s.clone()),
            "{} was not idle",
            member(s)
        );
    }
    let in_p = vec![fresh[0].clone(), fresh[1].clone(), refreshed.clone()];
    let in_q = vec![fresh[0].clone(), fresh[2].clone()];
    assert_eq!(all_subscribers(store.as_ref(), P).await, in_p);
    assert_eq!(all_subscribers(store.as_ref(), Q).await, in_q);
    assert_eq!(all_members(store.as_ref(), P).await, members_of(&in_p));
    assert_eq!(all_members(store.as_ref(), Q).await, members_of(&in_q));
    assert_eq!(store.count_subscribers(P).await.unwrap(), 3);
    assert_eq!(store.count_subscribers(Q).await.unwrap(), 2);

    assert_eq!(store.sweep_idle(before).await.unwrap(), 0);
    assert_eq!(store.sweep_idle(instant(300_000)).await.unwrap(), 4);
    assert_eq!(store.count_subscribers(P).await.unwrap(), 0);
    assert_eq!(store.count_subscribers(Q).await.unwrap(), 0);
    assert!(all_members(store.as_ref(), P).await.is_empty());
}

pub async fn jobs_round_trip(store: Arc<dyn PushStore>) {
    assert_eq!(store.get_job("nope").await.unwrap(), None);
    let a = job("a1b2c3", 3);
    let mut b = job("d4e5f6", 0);
    b.dry_run = true;
    b.state = JobState::Failed("APNs: \"BadCertificate\" ünïcode".into());
    b.counters = JobCounters {
        total: u64::from(u32::MAX) * 4,
        sent: 1,
        failed: 2,
        removed: 3,
        retried: 4,
    };
    b.batches_done = 7;
    b.finished_at = Some(instant(9));
    b.failures
        .count(ProviderKind::Apns, "BadDeviceToken", "", 3);
    b.failures.count(
        ProviderKind::Fcm,
        "tls_untrusted",
        "TLS with fcm: \"unknown\" ünïcode",
        2,
    );
    b.checked = vec![ProviderKind::Fcm, ProviderKind::Apns];
    b.checked.sort();
    store.put_job(&a).await.unwrap();
    store.put_job(&b).await.unwrap();
    assert_eq!(store.get_job(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_job(&b.id).await.unwrap(), Some(b.clone()));

    // A put replaces the whole job.
    let mut a2 = a.clone();
    a2.state = JobState::Planning;
    a2.batches_total = 9;
    a2.counters.total = 4500;
    store.put_job(&a2).await.unwrap();
    assert_eq!(store.get_job(&a.id).await.unwrap(), Some(a2));
    let mut b2 = b.clone();
    b2.state = JobState::Done;
    store.put_job(&b2).await.unwrap();
    assert_eq!(store.get_job(&b.id).await.unwrap(), Some(b2));
}

pub async fn jobs_are_listed_newest_first(store: Arc<dyn PushStore>) {
    assert_eq!(store.list_jobs(10).await.unwrap(), vec![]);
    let mut jobs = Vec::new();
    for (i, id) in ["old", "mid", "new"].into_iter().enumerate() {
        let mut j = job(id, 1);
        j.created_at = instant(i as i64 * 60);
        store.put_job(&j).await.unwrap();
        jobs.push(j);
    }
    // A replaced job is listed once, as it is now.
    let mut mid = jobs[1].clone();
    mid.state = JobState::Done;
    mid.counters.sent = 1234;
    store.put_job(&mid).await.unwrap();
    // As stored after the change (a final state also stamps `finished_at`).
    let old = store
        .set_job_state("old", JobState::Cancelled)
        .await
        .unwrap();
    assert_eq!((old.id.as_str(), &old.state), ("old", &JobState::Cancelled));
    let listed = store.list_jobs(10).await.unwrap();
    assert_eq!(listed, vec![jobs[2].clone(), mid.clone(), old]);
    assert_eq!(
        store.list_jobs(2).await.unwrap(),
        vec![jobs[2].clone(), mid]
    );
    assert_eq!(store.list_jobs(0).await.unwrap(), vec![]);
}

pub async fn set_job_state_never_leaves_a_final_state(store: Arc<dyn PushStore>) {
    let mut j = job("cancel-me", 2);
    j.state = JobState::Planning;
    store.put_job(&j).await.unwrap();
    let running = store.set_job_state(&j.id, JobState::Running).await.unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!(
        running,
        Job {
            state: JobState::Running,
            ..j.clone()
        },
        "only the state changes"
    );
    let cancelled = store
        .set_job_state(&j.id, JobState::Cancelled)
        .await
        .unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    // A late "done" (or anything else) does not undo the cancel.
    for late in [
        JobState::Done,
        JobState::Running,
        JobState::Planning,
        JobState::Failed("late".into()),
    ] {
        let after = store.set_job_state(&j.id, late).await.unwrap();
        assert_eq!(after.state, JobState::Cancelled);
    }
    assert_eq!(
        store.get_job(&j.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    let f = job("fail-me", 2);
    store.put_job(&f).await.unwrap();
    let failed = store
        .set_job_state(&f.id, JobState::Failed("FCM: invalid credentials".into()))
        .await
        .unwrap();
    assert_eq!(
        failed.state,
        JobState::Failed("FCM: invalid credentials".into())
    );
    for late in [
        JobState::Done,
        JobState::Cancelled,
        JobState::Failed("another reason".into()),
    ] {
        assert_eq!(
            store.set_job_state(&f.id, late).await.unwrap().state,
            JobState::Failed("FCM: invalid credentials".into())
        );
    }

    let d = job("done", 1);
    store.put_job(&d).await.unwrap();
    store.set_job_state(&d.id, JobState::Done).await.unwrap();
    assert_eq!(
        store
            .set_job_state(&d.id, JobState::Cancelled)
            .await
            .unwrap()
            .state,
        JobState::Done
    );
    assert_eq!(
        store.get_job(&d.id).await.unwrap().unwrap().state,
        JobState::Done
    );

    match store
        .set_job_state("no-such-job", JobState::Cancelled)
        .await
    {
        Err(PushError::UnknownJob { id }) => assert_eq!(id, "no-such-job"),
        other => panic!("expected UnknownJob, got {other:?}"),
    }
    assert_eq!(store.get_job("no-such-job").await.unwrap(), None);
}

pub async fn enqueue_all_queues_in_order_after_earlier_batches(store: Arc<dyn PushStore>) {
    let j = job("all", 4);
    store.put_job(&j).await.unwrap();
    let batches: Vec<Batch> = (0..4).map(|i| batch(&j.id, i)).collect();
    store.enqueue(&batches[0]).await.unwrap();
    store.enqueue_all(&[]).await.unwrap();
    store.enqueue_all(&batches[1..]).await.unwrap();
    for b in &batches {
        let c = store
            .claim("w1", LONG)
            .await
            .unwrap()
            .expect("a queued batch");
        assert_eq!(&c.batch, b);
    }
    assert_eq!(store.claim("w1", LONG).await.unwrap(), None);
}

pub async fn queue_is_fifo_and_holds_claimed_batches(store: Arc<dyn PushStore>) {
    assert_eq!(store.claim("w1", LONG).await.unwrap(), None);
    let j = job("fifo", 5);
    store.put_job(&j).await.unwrap();
    let batches: Vec<Batch> = (0..5).map(|i| batch(&j.id, i)).collect();
    for b in &batches {
        store.enqueue(b).await.unwrap();
    }
    let mut claimed = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let c = store
            .claim(if i % 2 == 0 { "w1" } else { "w2" }, LONG)
            .await
            .unwrap()
            .expect("a queued batch");
        assert_eq!(&c.batch, b, "batches come out in the order they went in");
        claimed.push(c);
    }
    let deliveries: BTreeSet<&str> = claimed.iter().map(|c| c.delivery.as_str()).collect();
    assert_eq!(deliveries.len(), 5, "each claim has its own delivery id");
    // Everything is held by a live consumer: nothing to hand out.
    assert_eq!(store.claim("w1", LONG).await.unwrap(), None);
    assert_eq!(store.claim("w3", LONG).await.unwrap(), None);

    for (n, c) in claimed.iter().enumerate() {
        let after = store
            .complete(c, &JobDelta::default())
            .await
            .unwrap()
            .expect("the first completion counts");
        assert_eq!(after.batches_done, n as u64 + 1);
    }
    assert_eq!(store.claim("w1", Duration::ZERO).await.unwrap(), None);
    // Enqueued after a drain: still delivered.
    store.enqueue(&batches[0]).await.unwrap();
    assert_eq!(
        store.claim("w3", LONG).await.unwrap().map(|c| c.batch),
        Some(batches[0].clone())
    );
}

pub async fn stale_batch_is_taken_over_and_counted_once(store: Arc<dyn PushStore>) {
    const STALE: Duration = Duration::from_millis(200);
    let first = JobCounters {
        total: 0,
        sent: 3,
        failed: 1,
        removed: 2,
        retried: 5,
    };
    let second = JobCounters {
        total: 0,
        sent: 40,
        failed: 0,
        removed: 0,
        retried: 0,
    };
    // The crashed-looking consumer finishes second, then first.
    for slow_finishes_last in [true, false] {
        let id = format!("takeover-{slow_finishes_last}");
        let j = job(&id, 1);
        store.put_job(&j).await.unwrap();
        let b = batch(&id, 0);
        store.enqueue(&b).await.unwrap();

        let slow = store
            .claim("slow", STALE)
            .await
            .unwrap()
            .expect("the batch");
        assert_eq!(slow.batch, b);
        // Held, and not yet stale: nobody else gets it.
        assert_eq!(store.claim("quick", STALE).await.unwrap(), None);
        tokio::time::sleep(STALE + Duration::from_millis(100)).await;
        let quick = store
            .claim("quick", STALE)
            .await
            .unwrap()
            .expect("a stale batch is taken over");
        assert_eq!(quick.batch, b);
        // The takeover is a fresh claim: not stale again at once.
        assert_eq!(store.claim("third", STALE).await.unwrap(), None);

        let (winner, loser) = if slow_finishes_last {
            (&quick, &slow)
        } else {
            (&slow, &quick)
        };
        let counted = store
            .complete(winner, &delta(first))
            .await
            .unwrap()
            .expect("the first completion counts");
        assert_eq!(counted.counters, plus(j.counters, first));
        assert_eq!(counted.batches_done, 1);
        assert_eq!(
            store.complete(loser, &delta(second)).await.unwrap(),
            None,
            "a batch already completed is not counted again"
        );
        let stored = store.get_job(&id).await.unwrap().unwrap();
        assert_eq!(stored.counters, plus(j.counters, first));
        assert_eq!(stored.batches_done, 1);
        assert_eq!(stored, counted);

        // It left the queue for good: not even stale claims find it.
        tokio::time::sleep(STALE + Duration::from_millis(50)).await;
        assert_eq!(store.claim("third", STALE).await.unwrap(), None);
    }
}

/// Enqueues `n` batches of a fresh job.
async fn queue_job(store: &Arc<dyn PushStore>, id: &str, n: usize) -> Job {
    let j = job(id, n as u64);
    store.put_job(&j).await.unwrap();
    for i in 0..n {
        store.enqueue(&batch(id, i)).await.unwrap();
    }
    j
}

/// Consumers that claim until the queue is empty, completing each batch
/// with `sent: 1`. Answers the batches claimed and those whose completion
/// counted, across all consumers.
async fn drain(
    store: &Arc<dyn PushStore>,
    consumers: usize,
    stale: Duration,
    hold: Duration,
) -> (Vec<String>, Vec<String>) {
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let counted = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..consumers {
        let (store, claimed, counted) = (store.clone(), claimed.clone(), counted.clone());
        tasks.spawn(async move {
            let name = format!("worker-{k}");
            while let Some(c) = store.claim(&name, stale).await.unwrap() {
                claimed.lock().unwrap().push(c.batch.first.clone());
                if !hold.is_zero() {
                    tokio::time::sleep(hold * (k as u32 % 3)).await;
                }
                let sent = delta(JobCounters {
                    sent: 1,
                    ..JobCounters::default()
                });
                if store.complete(&c, &sent).await.unwrap().is_some() {
                    counted.lock().unwrap().push(c.batch.first.clone());
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let claimed = std::mem::take(&mut *claimed.lock().unwrap());
    let counted = std::mem::take(&mut *counted.lock().unwrap());
    (claimed, counted)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub async fn concurrent_consumers_drain_each_batch_once(store: Arc<dyn PushStore>) {
    const N: usize = 200;
    let j = queue_job(&store, "drain", N).await;
    let (claimed, counted) = drain(&store, 8, LONG, Duration::ZERO).await;
    let all: Vec<String> = (0..N).map(|i| batch(&j.id, i).first).collect();
    assert_eq!(sorted(claimed), all, "every batch claimed exactly once");
    assert_eq!(sorted(counted), all, "every batch counted exactly once");
    let after = store.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!(after.counters.sent, N as u64);
    assert_eq!(after.batches_done, N as u64);
    assert_eq!(store.claim("late", Duration::ZERO).await.unwrap(), None);
}

pub async fn concurrent_takeovers_count_each_batch_once(store: Arc<dyn PushStore>) {
    const N: usize = 40;
    let j = queue_job(&store, "steal", N).await;
    // Everything in flight is stale at once: consumers keep taking batches
    // from each other, and several finish the same batch.
    let (claimed, counted) = drain(&store, 6, Duration::ZERO, Duration::from_millis(2)).await;
    let all: Vec<String> = (0..N).map(|i| batch(&j.id, i).first).collect();
    assert!(claimed.len() >= N);
    assert_eq!(sorted(counted), all, "every batch counted exactly once");
    let after = store.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!(after.counters.sent, N as u64);
    assert_eq!(after.batches_done, N as u64);
}

pub async fn failures_add_up_across_batches_and_final_states_are_timed(store: Arc<dyn PushStore>) {
    let j = queue_job(&store, "failing", 2).await;
    let mut one = delta(JobCounters {
        failed: 3,
        sent: 1,
        ..JobCounters::default()
    });
    one.failures
        .count(ProviderKind::Apns, "tls_untrusted", "TLS: first", 2);
    one.failures
        .count(ProviderKind::Fcm, "QUOTA_EXCEEDED", "quota", 1);
    let mut two = delta(JobCounters {
        failed: 2,
        ..JobCounters::default()
    });
    two.failures
        .count(ProviderKind::Apns, "tls_untrusted", "TLS: second", 1);
    two.failures
        .count(ProviderKind::Apns, "connect_refused", "", 1);
    two.checked = vec![ProviderKind::Apns];
    for d in [&one, &two] {
        let c = store.claim("w", LONG).await.unwrap().unwrap();
        store.complete(&c, d).await.unwrap().unwrap();
    }
    let stored = store.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!(stored.counters.failed, 5);
    let mut want = Failures::default();
    want.count(ProviderKind::Apns, "tls_untrusted", "", 3);
    want.count(ProviderKind::Apns, "connect_refused", "TLS: second", 1);
    want.count(ProviderKind::Fcm, "QUOTA_EXCEEDED", "quota", 1);
    assert_eq!(stored.failures, want);
    assert_eq!(stored.checked, vec![ProviderKind::Apns]);
    assert_eq!(stored.finished_at, None);

    let before = Utc::now() - chrono::Duration::seconds(1);
    let done = store.set_job_state(&j.id, JobState::Done).await.unwrap();
    let at = done.finished_at.expect("a final state is timed");
    assert!(at >= before && at <= Utc::now(), "{at}");
    let late = store
        .set_job_state(&j.id, JobState::Cancelled)
        .await
        .unwrap();
    assert_eq!(late.finished_at, Some(at), "set once");
    assert_eq!(store.get_job(&j.id).await.unwrap().unwrap(), done);
}

pub async fn a_claim_is_renewed_by_its_owner_only(store: Arc<dyn PushStore>) {
    const STALE: Duration = Duration::from_millis(300);
    queue_job(&store, "renewed", 1).await;
    let held = store.claim("slow", STALE).await.unwrap().unwrap();
    // Renewed by its owner, it is never stale.
    for _ in 0..4 {
        tokio::time::sleep(STALE / 2).await;
        assert!(store.renew(&held, "slow").await.unwrap());
        assert_eq!(store.claim("other", STALE).await.unwrap(), None);
    }
    // Another consumer cannot renew it for itself.
    assert!(!store.renew(&held, "other").await.unwrap());
    // Left alone, it is taken over, and the old owner learns it.
    tokio::time::sleep(STALE + Duration::from_millis(100)).await;
    let taken = store.claim("other", STALE).await.unwrap().unwrap();
    assert_eq!(taken.batch, held.batch);
    assert!(!store.renew(&held, "slow").await.unwrap());
    assert!(store.renew(&taken, "other").await.unwrap());
    store
        .complete(&taken, &JobDelta::default())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !store.renew(&taken, "other").await.unwrap(),
        "a completed batch is gone"
    );
}
