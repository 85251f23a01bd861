//! The embedded push store: subscriptions, jobs and the batch queue in one
//! crash-safe redb file beside the state store. Single instance only; with
//! several instances the Redis store's consumer group shares the queue.

use super::store::{
    member_key, Batch, Claimed, Job, JobDelta, JobState, ProviderKind, PushError, PushStore,
    Subscription,
};
use crate::storage::embedded::{encode, DbResult, EmbeddedDb};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// redb's page cache (1 GiB by default). A fan-out walks the index once;
/// caching all of it would grow RSS with the token count.
const CACHE_BYTES: usize = 64 << 20;

/// member key (`provider:token`) -> Subscription JSON.
const SUBS: TableDefinition<&str, &str> = TableDefinition::new("subscriptions");
/// (product, member key) -> (): the per-product subscriber index.
const INDEX: TableDefinition<(&str, &str), ()> = TableDefinition::new("subscriber_index");
/// job id -> Job JSON.
const JOBS: TableDefinition<&str, &str> = TableDefinition::new("jobs");
/// queue seq -> Batch JSON, not yet claimed.
const PENDING: TableDefinition<u64, &str> = TableDefinition::new("queue_pending");
/// queue seq -> InFlight JSON, claimed and not completed.
const INFLIGHT: TableDefinition<u64, &str> = TableDefinition::new("queue_inflight");
/// (last seen in ns since the epoch, member key) -> (): what `sweep_idle`
/// reads, so it touches only the idle subscriptions, not all of them.
const SEEN: TableDefinition<(i64, &str), ()> = TableDefinition::new("last_seen_index");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `META` key: set once `SEEN` covers every subscription (stores written
/// before it existed get it built on open).
const SEEN_BUILT: &str = "last_seen_index_built";
/// Idle subscriptions removed per write transaction by `sweep_idle`, so
/// registrations are not held up behind a long sweep (as in Redis).
const SWEEP_CHUNK: usize = 256;

#[derive(Serialize, Deserialize)]
struct InFlight {
    batch: Batch,
    consumer: String,
    claimed_at_ms: i64,
}

pub struct EmbeddedPushStore {
    db: EmbeddedDb,
}

fn decode<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, PushError> {
    Ok(crate::storage::embedded::decode(s, || {
        "push store record".to_owned()
    })?)
}

impl EmbeddedPushStore {
    /// The store on an opened file, its tables created when missing (and
    /// the last-seen index of an older file built). Blocking.
    pub fn new(db: EmbeddedDb) -> Result<Self, PushError> {
        let txn = db.database().begin_write().db()?;
        txn.open_table(SUBS).db()?;
        txn.open_table(INDEX).db()?;
        txn.open_table(JOBS).db()?;
        txn.open_table(PENDING).db()?;
        txn.open_table(INFLIGHT).db()?;
        txn.open_table(META).db()?;
        build_seen_index(&txn)?;
        txn.commit().db()?;
        Ok(EmbeddedPushStore { db })
    }

    /// Opens the file at `path` on its own (tools and tests).
    pub fn open(path: &Path) -> Result<Self, PushError> {
        Self::new(EmbeddedDb::open(path, CACHE_BYTES)?)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, PushError> + Send + 'static,
    ) -> Result<T, PushError> {
        self.db.run(f).await
    }
}

/// A `last_seen` as the `SEEN` key orders it (nanoseconds fit until 2262).
fn seen_key(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Fills `SEEN` from the subscriptions of a store written before it
/// existed; once (a flag in `META`), on open.
fn build_seen_index(txn: &redb::WriteTransaction) -> Result<(), PushError> {
    let mut meta = txn.open_table(META).db()?;
    if meta.get(SEEN_BUILT).db()?.is_some() {
        return Ok(());
    }
    let subs = txn.open_table(SUBS).db()?;
    let mut seen = txn.open_table(SEEN).db()?;
    let mut indexed = 0u64;
    for entry in subs.iter().db()? {
        let (member, v) = entry.db()?;
        let sub: Subscription = decode(v.value())?;
        seen.insert((seen_key(sub.last_seen), member.value()), ())
            .db()?;
        indexed += 1;
    }
    meta.insert(SEEN_BUILT, 1).db()?;
    if indexed > 0 {
        tracing::info!(
            subscriptions = indexed,
            "push store: last-seen index built (once, for the idle-token sweep)"
        );
    }
    Ok(())
}

fn remove_sub(txn: &redb::WriteTransaction, member: &str) -> Result<bool, PushError> {
    let mut subs = txn.open_table(SUBS).db()?;
    let Some(old) = subs.remove(member).db()? else {
        return Ok(false);
    };
    let old: Subscription = decode(old.value())?;
    let mut index = txn.open_table(INDEX).db()?;
    for p in &old.products {
        index.remove((p.as_str(), member)).db()?;
    }
    txn.open_table(SEEN)
        .db()?
        .remove((seen_key(old.last_seen), member))
        .db()?;
    Ok(true)
}

fn load_job(txn: &redb::WriteTransaction, id: &str) -> Result<Job, PushError> {
    let jobs = txn.open_table(JOBS).db()?;
    let raw = jobs
        .get(id)
        .db()?
        .ok_or_else(|| PushError::UnknownJob { id: id.into() })?;
    decode(raw.value())
}

fn save_job(txn: &redb::WriteTransaction, job: &Job) -> Result<(), PushError> {
    let mut jobs = txn.open_table(JOBS).db()?;
    jobs.insert(job.id.as_str(), encode(job).as_str()).db()?;
    Ok(())
}

#[async_trait]
impl PushStore for EmbeddedPushStore {
    async fn upsert_subscription(&self, sub: &Subscription) -> Result<(), PushError> {
        let sub = sub.clone();
        self.run(move |db| {
            let member = member_key(sub.provider, &sub.token);
            let mut txn = db.begin_write().db()?;
            // Apps re-register at every start, so a registration lost to a
            // crash comes back by itself; an fsync per registration would cap
            // a launch-day flood at the disk's sync rate.
            txn.set_durability(redb::Durability::Eventual);
            remove_sub(&txn, &member)?;
            {
                let mut subs = txn.open_table(SUBS).db()?;
                subs.insert(member.as_str(), encode(&sub).as_str()).db()?;
                let mut index = txn.open_table(INDEX).db()?;
                for p in &sub.products {
                    index.insert((p.as_str(), member.as_str()), ()).db()?;
                }
                txn.open_table(SEEN)
                    .db()?
                    .insert((seen_key(sub.last_seen), member.as_str()), ())
                    .db()?;
            }
            Ok(txn.commit().db()?)
        })
        .await
    }

    async fn remove_subscription(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<bool, PushError> {
        let member = member_key(provider, token);
        self.run(move |db| {
            let txn = db.begin_write().db()?;
            let existed = remove_sub(&txn, &member)?;
            txn.commit().db()?;
            Ok(existed)
        })
        .await
    }

    async fn get_subscription(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<Option<Subscription>, PushError> {
        let member = member_key(provider, token);
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let subs = txn.open_table(SUBS).db()?;
            match subs.get(member.as_str()).db()? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn subscriber_page(
        &self,
        product: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, PushError> {
        let (product, after) = (product.to_owned(), after.map(str::to_owned));
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let index = txn.open_table(INDEX).db()?;
            let start = after.as_deref().unwrap_or("");
            let mut out = Vec::with_capacity(limit.min(4096));
            for entry in index.range((product.as_str(), start)..).db()? {
                let (key, _) = entry.db()?;
                let (p, member) = key.value();
                if p != product {
                    break;
                }
                if after.as_deref() == Some(member) {
                    continue;
                }
                out.push(member.to_owned());
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// One read transaction over the index, keeping every `size`th key:
    /// paging through `subscriber_page` copied every member key of a job
    /// (1M strings, ~1 s) just to learn the batch boundaries.
    async fn batch_ranges(
        &self,
        product: &str,
        size: usize,
    ) -> Result<(Vec<(String, String)>, u64), PushError> {
        let product = product.to_owned();
        let size = size.max(1) as u64;
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let index = txn.open_table(INDEX).db()?;
            let mut ranges = Vec::new();
            let mut total = 0u64;
            let (mut first, mut last) = (String::new(), String::new());
            for entry in index.range((product.as_str(), "")..).db()? {
                let (key, _) = entry.db()?;
                let (p, member) = key.value();
                if p != product {
                    break;
                }
                if total.is_multiple_of(size) {
                    first = member.to_owned();
                }
                total += 1;
                if total.is_multiple_of(size) {
                    ranges.push((std::mem::take(&mut first), member.to_owned()));
                } else {
                    last.clear();
                    last.push_str(member);
                }
            }
            if !total.is_multiple_of(size) {
                ranges.push((first, last));
            }
            Ok((ranges, total))
        })
        .await
    }

    async fn subscribers_in(
        &self,
        product: &str,
        first: &str,
        last: &str,
    ) -> Result<Vec<Subscription>, PushError> {
        let (product, first, last) = (product.to_owned(), first.to_owned(), last.to_owned());
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let index = txn.open_table(INDEX).db()?;
            let subs = txn.open_table(SUBS).db()?;
            let mut out = Vec::new();
            for entry in index
                .range((product.as_str(), first.as_str())..=(product.as_str(), last.as_str()))
                .db()?
            {
                let (key, _) = entry.db()?;
                if let Some(v) = subs.get(key.value().1).db()? {
                    out.push(decode(v.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn count_subscribers(&self, product: &str) -> Result<u64, PushError> {
        let product = product.to_owned();
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let index = txn.open_table(INDEX).db()?;
            let mut n = 0u64;
            for entry in index.range((product.as_str(), "")..).db()? {
                if entry.db()?.0.value().0 != product {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn sweep_idle(&self, before: DateTime<Utc>) -> Result<u64, PushError> {
        let mut removed = 0;
        loop {
            let round = self
                .run(move |db| {
                    let mut txn = db.begin_write().db()?;
                    // A round lost to a crash is redone by the next sweep.
                    txn.set_durability(redb::Durability::Eventual);
                    // Every key below (before, "") was last seen before `before`.
                    let idle: Vec<(i64, String)> = {
                        let seen = txn.open_table(SEEN).db()?;
                        let mut idle = Vec::new();
                        for entry in seen.range(..(seen_key(before), "")).db()? {
                            let (key, _) = entry.db()?;
                            let (at, member) = key.value();
                            idle.push((at, member.to_owned()));
                            if idle.len() == SWEEP_CHUNK {
                                break;
                            }
                        }
                        idle
                    };
                    let mut gone = 0;
                    for (at, member) in &idle {
                        if remove_sub(&txn, member)? {
                            gone += 1;
                        } else {
                            // No subscription behind it: drop the entry
                            // anyway, so every round makes progress.
                            txn.open_table(SEEN)
                                .db()?
                                .remove((*at, member.as_str()))
                                .db()?;
                        }
                    }
                    txn.commit().db()?;
                    Ok((gone, idle.len()))
                })
                .await?;
            removed += round.0;
            if round.1 < SWEEP_CHUNK {
                return Ok(removed);
            }
        }
    }

    async fn put_job(&self, job: &Job) -> Result<(), PushError> {
        let job = job.clone();
        self.run(move |db| {
            let txn = db.begin_write().db()?;
            save_job(&txn, &job)?;
            Ok(txn.commit().db()?)
        })
        .await
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, PushError> {
        let id = id.to_owned();
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let jobs = txn.open_table(JOBS).db()?;
            match jobs.get(id.as_str()).db()? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// A scan of every job, sorted: jobs are one per notification (a few a
    /// day), so even years of them are read in milliseconds; an index by
    /// time would cost every `put_job` for no gain at that size.
    async fn list_jobs(&self, limit: usize) -> Result<Vec<Job>, PushError> {
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let jobs = txn.open_table(JOBS).db()?;
            let mut all = Vec::new();
            for entry in jobs.iter().db()? {
                let (_, v) = entry.db()?;
                all.push(decode::<Job>(v.value())?);
            }
            all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            all.truncate(limit);
            Ok(all)
        })
        .await
    }

    async fn set_job_state(&self, id: &str, state: JobState) -> Result<Job, PushError> {
        let id = id.to_owned();
        self.run(move |db| {
            let txn = db.begin_write().db()?;
            let mut job = load_job(&txn, &id)?;
            if !job.state.is_final() {
                if state.is_final() {
                    job.finished_at = Some(Utc::now());
                }
                job.state = state;
                save_job(&txn, &job)?;
            }
            txn.commit().db()?;
            Ok(job)
        })
        .await
    }

    async fn enqueue_all(&self, batches: &[Batch]) -> Result<(), PushError> {
        if batches.is_empty() {
            return Ok(());
        }
        let batches = batches.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().db()?;
            {
                let mut meta = txn.open_table(META).db()?;
                let mut seq = meta.get("queue_seq").db()?.map(|v| v.value()).unwrap_or(0);
                let mut pending = txn.open_table(PENDING).db()?;
                for batch in &batches {
                    seq += 1;
                    pending.insert(seq, encode(batch).as_str()).db()?;
                }
                meta.insert("queue_seq", seq).db()?;
            }
            Ok(txn.commit().db()?)
        })
        .await
    }

    async fn claim(&self, consumer: &str, stale: Duration) -> Result<Option<Claimed>, PushError> {
        let consumer = consumer.to_owned();
        self.run(move |db| {
            let now = Utc::now().timestamp_millis();
            let mut txn = db.begin_write().db()?;
            // A claim lost to a crash puts the batch back in the queue, the
            // same as a worker that died holding it: sent again (collapse id
            // hides it), never missed. Not worth an fsync per batch; the
            // batch's `complete` is durable and makes this claim durable too.
            txn.set_durability(redb::Durability::Eventual);
            let claimed = {
                let mut inflight = txn.open_table(INFLIGHT).db()?;
                // A batch whose worker went quiet for `stale` is taken over first.
                let mut taken: Option<(u64, InFlight)> = None;
                for entry in inflight.iter().db()? {
                    let (k, v) = entry.db()?;
                    let f: InFlight = decode(v.value())?;
                    if now - f.claimed_at_ms >= stale.as_millis() as i64 {
                        taken = Some((k.value(), f));
                        break;
                    }
                }
                let next = match taken {
                    Some((seq, f)) => Some((seq, f.batch)),
                    None => {
                        let mut pending = txn.open_table(PENDING).db()?;
                        let popped = pending.pop_first().db()?;
                        match popped {
                            Some((k, v)) => Some((k.value(), decode::<Batch>(v.value())?)),
                            None => None,
                        }
                    }
                };
                match next {
                    Some((seq, batch)) => {
                        let f = InFlight {
                            batch: batch.clone(),
                            consumer: consumer.clone(),
                            claimed_at_ms: now,
                        };
                        inflight.insert(seq, encode(&f).as_str()).db()?;
                        Some(Claimed {
                            delivery: seq.to_string(),
                            batch,
                        })
                    }
                    None => None,
                }
            };
            if claimed.is_some() {
                txn.commit().db()?;
            } else {
                // Nothing to do (the idle poll): no commit, so no fsync.
                txn.abort().db()?;
            }
            Ok(claimed)
        })
        .await
    }

    async fn complete(
        &self,
        claimed: &Claimed,
        delta: &JobDelta,
    ) -> Result<Option<Job>, PushError> {
        let (claimed, delta) = (claimed.clone(), delta.clone());
        self.run(move |db| {
            let seq: u64 = claimed
                .delivery
                .parse()
                .map_err(|_| PushError::Corrupt(format!("bad delivery id {}", claimed.delivery)))?;
            let txn = db.begin_write().db()?;
            let removed = txn.open_table(INFLIGHT).db()?.remove(seq).db()?.is_some();
            if !removed {
                return Ok(None);
            }
            let mut job = match load_job(&txn, &claimed.batch.job_id) {
                Ok(job) => job,
                // The job is gone: the batch just leaves the queue.
                Err(PushError::UnknownJob { .. }) => {
                    txn.commit().db()?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let (c, d) = (&mut job.counters, &delta.counters);
            c.sent += d.sent;
            c.failed += d.failed;
            c.removed += d.removed;
            c.retried += d.retried;
            job.batches_done += 1;
            job.failures.merge(&delta.failures);
            for p in &delta.checked {
                if !job.checked.contains(p) {
                    job.checked.push(*p);
                }
            }
            job.checked.sort();
            save_job(&txn, &job)?;
            txn.commit().db()?;
            Ok(Some(job))
        })
        .await
    }

    async fn renew(&self, claimed: &Claimed, consumer: &str) -> Result<bool, PushError> {
        let (claimed, consumer) = (claimed.clone(), consumer.to_owned());
        self.run(move |db| {
            let seq: u64 = claimed
                .delivery
                .parse()
                .map_err(|_| PushError::Corrupt(format!("bad delivery id {}", claimed.delivery)))?;
            let mut txn = db.begin_write().db()?;
            // Lost to a crash, a renewal does not matter: the batch is sent again.
            txn.set_durability(redb::Durability::Eventual);
            let owned = {
                let mut inflight = txn.open_table(INFLIGHT).db()?;
                let held = match inflight.get(seq).db()? {
                    Some(v) => Some(decode::<InFlight>(v.value())?),
                    None => None,
                };
                match held {
                    Some(mut f) if f.consumer == consumer => {
                        f.claimed_at_ms = Utc::now().timestamp_millis();
                        inflight.insert(seq, encode(&f).as_str()).db()?;
                        true
                    }
                    _ => false,
                }
            };
            txn.commit().db()?;
            Ok(owned)
        })
        .await
    }
}
