//! Fan-out workers: every instance runs a few; each claims a batch from the
//! shared queue, sends to the batch's current subscribers through the
//! providers (paced per provider, in-flight sends bounded), renews its
//! claim while it sends, and completes the batch with its counters and
//! failure reasons in one atomic step. A crashed worker's batch is claimed
//! by another after `push.stale_batch_secs`, so nobody is missed; at most
//! that one batch is sent twice, and the per-product collapse id keeps the
//! phone from showing it twice.

use super::breaker::{Breaker, Verdict};
use super::metrics::{self, FanoutMetrics};
use super::pacing::Pacer;
use super::store::{
    Claimed, Failures, JobDelta, JobState, ProviderKind, PushError, PushStore, Subscription,
};
use crate::catalog::Catalog;
use crate::push::{Next, Notice, Prepared, Provider, RetryPolicy, SendOutcome};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

const IDLE_POLL: Duration = Duration::from_millis(100);

pub struct ProviderSlot {
    pub provider: Arc<dyn Provider>,
    /// Bounds concurrent sends to this provider across all workers.
    pub in_flight: Arc<Semaphore>,
    pub pacer: Pacer,
}

pub struct Fanout {
    pub store: Arc<dyn PushStore>,
    pub providers: HashMap<ProviderKind, ProviderSlot>,
    pub policy: RetryPolicy,
    pub ttl: Duration,
    pub metrics: FanoutMetrics,
    /// Unique per process: the queue's consumer name.
    pub consumer: String,
    /// A batch claimed this long ago and not completed or renewed is
    /// taken over.
    pub stale: Duration,
    /// Sends one batch may have in flight (`push.in_flight`): one batch can
    /// fill a provider's window while the other workers load theirs.
    pub batch_concurrency: usize,
    /// Jobs cancelled through this instance, newest last: its workers stop
    /// sending for them at once; other instances' workers learn it from the
    /// store within [`WATCH_JOB`].
    pub cancelled: RecentCancels,
}

/// The last [`CANCELLED_KEPT`] jobs cancelled through this instance.
#[derive(Default)]
pub struct RecentCancels(std::sync::Mutex<std::collections::VecDeque<String>>);

impl RecentCancels {
    fn add(&self, job: &str) {
        let mut jobs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        jobs.push_back(job.to_owned());
        if jobs.len() > CANCELLED_KEPT {
            jobs.pop_front();
        }
    }

    fn contains(&self, job: &str) -> bool {
        let jobs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        jobs.iter().any(|j| j == job)
    }
}

/// How often a running batch re-reads its job, to stop when it was
/// cancelled or failed elsewhere.
const WATCH_JOB: Duration = Duration::from_millis(250);
/// Cancelled job ids remembered for [`Fanout::cancelled`].
const CANCELLED_KEPT: usize = 256;

/// What one batch did, shared by its concurrent sends.
#[derive(Default)]
struct Tally {
    delta: JobDelta,
    fatal: Option<String>,
}

impl Tally {
    fn failed(&mut self, provider: ProviderKind, outcome: &SendOutcome) {
        self.delta.counters.failed += 1;
        let code = outcome.code().unwrap_or("unknown");
        let words = outcome.reason().unwrap_or_default();
        self.delta.failures.count(provider, code, words, 1);
    }
}

impl Fanout {
    /// Marks `job` cancelled in the store, and stops this instance's
    /// workers sending for it before the call returns: no send starts
    /// after a cancel is acknowledged.
    pub async fn cancel(&self, job: &str) -> Result<super::Job, PushError> {
        self.cancelled.add(job);
        self.store.set_job_state(job, JobState::Cancelled).await
    }

    fn cancelled_here(&self, job: &str) -> bool {
        self.cancelled.contains(job)
    }

    /// The providers `[push.apns]` and `[push.fcm]` enable, over `store`;
    /// paced through `backend` when it is shared (Redis).
    pub fn from_settings(
        settings: &crate::config::Settings,
        store: Arc<dyn PushStore>,
        backend: Option<&crate::storage::Backend>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let p = &settings.push;
        let mut providers = HashMap::new();
        let slot = |provider: Arc<dyn Provider>, max_per_second: u32| ProviderSlot {
            pacer: Pacer::new(provider.name(), max_per_second, backend),
            provider,
            in_flight: Arc::new(Semaphore::new(p.in_flight.max(1))),
        };
        if p.apns.enabled {
            let apns =
                crate::push::apns::ApnsProvider::from_settings(&p.apns).context("[push.apns]")?;
            providers.insert(
                ProviderKind::Apns,
                slot(Arc::new(apns), p.apns.max_per_second),
            );
            tracing::info!(base_url = %p.apns.base_url, max_per_second = p.apns.max_per_second, "push: APNs enabled");
        }
        if p.fcm.enabled {
            let fcm = crate::push::fcm::FcmProvider::from_settings(&p.fcm).context("[push.fcm]")?;
            providers.insert(ProviderKind::Fcm, slot(Arc::new(fcm), p.fcm.max_per_second));
            tracing::info!(base_url = %p.fcm.base_url, max_per_second = p.fcm.max_per_second, "push: FCM enabled");
        }
        Ok(Fanout {
            store,
            providers,
            policy: RetryPolicy::default(),
            ttl: Duration::from_secs(p.ttl_secs),
            metrics: Default::default(),
            stale: Duration::from_secs(p.stale_batch_secs.max(1)),
            batch_concurrency: p.in_flight.max(1),
            cancelled: Default::default(),
            consumer: format!(
                "{}-{}",
                std::process::id(),
                hex::encode(rand::random::<[u8; 4]>())
            ),
        })
    }

    /// Runs `workers` claim loops until the task is aborted.
    pub async fn run(self: Arc<Self>, catalog: Arc<Catalog>, workers: usize) {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let (me, catalog) = (self.clone(), catalog.clone());
            set.spawn(async move { me.work(&catalog).await });
        }
        while set.join_next().await.is_some() {}
    }

    async fn work(&self, catalog: &Catalog) {
        loop {
            match self.store.claim(&self.consumer, self.stale).await {
                Ok(Some(claimed)) => {
                    if let Err(e) = self.process(catalog, &claimed).await {
                        // Not completed: a worker takes it over after `stale`.
                        tracing::warn!(error = %e, job = %claimed.batch.job_id, "batch failed; it will be retried");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Ok(None) => tokio::time::sleep(IDLE_POLL).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim fan-out work; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn process(&self, catalog: &Catalog, claimed: &Claimed) -> Result<(), PushError> {
        let batch = &claimed.batch;
        let job = self.store.get_job(&batch.job_id).await?;
        let Some(job) = job.filter(|j| !j.state.is_final()) else {
            // Cancelled or stopped: the batch just leaves the queue.
            self.store.complete(claimed, &JobDelta::default()).await?;
            return Ok(());
        };
        let release = {
            let snap = catalog.load();
            job.version.parse().ok().and_then(|v| {
                snap.product(&job.product)
                    .and_then(|p| p.release(&v))
                    .cloned()
            })
        };
        let Some(release) = release.filter(|r| !r.stored.yanked) else {
            let failed = JobState::Failed("the release was yanked or removed".into());
            self.store.set_job_state(&job.id, failed).await?;
            self.store.complete(claimed, &JobDelta::default()).await?;
            return Ok(());
        };
        let subs = self
            .store
            .subscribers_in(&batch.product, &batch.first, &batch.last)
            .await?;
        let notices = self.prepare_notices(&release, &subs);
        let mut counts = HashMap::new();
        for sub in &subs {
            *counts.entry(sub.provider).or_insert(0) += 1;
        }
        let breaker = Breaker::new(&counts, &job.checked);
        let tally = Mutex::new(Tally::default());
        // Set when the job stops (cancelled, failed here or elsewhere, the
        // batch taken over): no further send of this batch starts.
        let stop = AtomicBool::new(false);
        let lost = AtomicBool::new(false);
        let sending = futures_util::stream::iter(&subs).for_each_concurrent(
            self.batch_concurrency.max(1),
            |sub| {
                let (notices, tally, stop, breaker) = (&notices, &tally, &stop, &breaker);
                let job_id = job.id.as_str();
                async move {
                    if stop.load(Relaxed) || self.cancelled_here(job_id) {
                        return;
                    }
                    let prepared = notices.get(&(sub.provider, sub.locale.as_str()));
                    self.deliver(sub, prepared, tally, breaker, stop).await;
                }
            },
        );
        // Watches the job and the lease while the batch sends; it never ends
        // by itself, so the batch is done the moment its last send is (not
        // at the watcher's next tick). After a stop, sends in flight finish.
        let watching = async {
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(WATCH_JOB).await;
                if stop.load(Relaxed) {
                    continue;
                }
                if let Ok(Some(now)) = self.store.get_job(&job.id).await {
                    if now.state.is_final() {
                        stop.store(true, Relaxed);
                    }
                }
                if renewed.elapsed() >= self.stale / 3 {
                    renewed = tokio::time::Instant::now();
                    if let Ok(false) = self.store.renew(claimed, &self.consumer).await {
                        lost.store(true, Relaxed);
                        stop.store(true, Relaxed);
                    }
                }
            }
        };
        tokio::select! {
            () = sending => {}
            () = watching => {}
        }
        let Tally { mut delta, fatal } = tally.into_inner().unwrap_or_else(|e| e.into_inner());
        if lost.load(Relaxed) {
            // Its new owner sends the rest and counts the batch.
            tracing::warn!(job = %job.id, "a batch was taken over by another worker while this one sent it (stalled past push.stale_batch_secs); stopped sending it");
            return Ok(());
        }
        delta.checked = breaker.passed();
        if let Some(reason) = fatal {
            self.metrics.fatal.fetch_add(1, Relaxed);
            tracing::error!(job = %job.id, reason = %reason, "fan-out job stopped; tokens kept");
            self.store
                .set_job_state(&job.id, JobState::Failed(reason))
                .await?;
        }
        if let Some(after) = self.store.complete(claimed, &delta).await? {
            if after.batches_done >= after.batches_total && !after.state.is_final() {
                self.store
                    .set_job_state(&after.id, final_state(&after))
                    .await?;
            }
        }
        Ok(())
    }

    /// The batch's notice, in each provider's wire form, once per locale.
    fn prepare_notices<'s>(
        &self,
        release: &crate::catalog::Release,
        subs: &'s [Subscription],
    ) -> HashMap<(ProviderKind, &'s str), Result<Prepared, String>> {
        let m = &release.manifest;
        let version = m.version.to_string();
        let mut notices = HashMap::new();
        for sub in subs {
            let key = (sub.provider, sub.locale.as_str());
            if notices.contains_key(&key) {
                continue;
            }
            let Some(slot) = self.providers.get(&sub.provider) else {
                continue;
            };
            let body = m
                .note_for(&sub.locale)
                .unwrap_or("A firmware update is available.");
            let notice = Notice::update_available(
                &m.product,
                &version,
                m.critical,
                format!("{} {}", m.product, m.version),
                body,
            )
            .with_ttl(self.ttl);
            notices.insert(key, slot.provider.prepare(&notice));
        }
        notices
    }

    /// Sends to one subscriber and counts what came of it in `tally`.
    async fn deliver(
        &self,
        sub: &Subscription,
        prepared: Option<&Result<Prepared, String>>,
        tally: &Mutex<Tally>,
        breaker: &Breaker,
        stop: &AtomicBool,
    ) {
        let kind = sub.provider;
        let Some(slot) = self.providers.get(&kind) else {
            let outcome = SendOutcome::fatal(
                "provider_disabled",
                format!(
                    "{} is not enabled here ([push.{}] enabled = false)",
                    kind.label(),
                    kind.as_str()
                ),
            );
            self.metrics.failed(kind, "provider_disabled");
            lock(tally).failed(kind, &outcome);
            return;
        };
        let prepared = match prepared {
            Some(Ok(prepared)) => prepared,
            other => {
                let reason = match other {
                    Some(Err(reason)) => reason.as_str(),
                    _ => "no notice prepared",
                };
                let outcome = SendOutcome::fatal("payload", format!("{}: {reason}", kind.label()));
                self.metrics.failed(kind, "payload");
                let mut t = lock(tally);
                t.failed(kind, &outcome);
                t.fatal = outcome.reason().map(str::to_owned);
                stop.store(true, Relaxed);
                return;
            }
        };
        let (outcome, attempts) = self.send(slot, prepared, &sub.token).await;
        let retried = u64::from(attempts.saturating_sub(1));
        self.metrics.retried[metrics::slot(kind)].fetch_add(retried, Relaxed);
        lock(tally).delta.counters.retried += retried;

        let provider = &slot.provider;
        let suspect = match &outcome {
            SendOutcome::DeadToken { code, .. } => provider.mixup(code).map(|h| (code.as_str(), h)),
            _ => None,
        };
        match breaker.answer(kind, &sub.token, suspect) {
            Verdict::Deliver => {}
            Verdict::Hold => return, // counted when the window closes
            Verdict::Healthy(held) => {
                for token in &held {
                    self.remove(kind, token, tally).await;
                }
                if held.contains(&sub.token) {
                    return;
                }
            }
            Verdict::Tripped { reason, held } => {
                let mut t = lock(tally);
                for _ in 0..held {
                    self.metrics
                        .failed(kind, outcome.code().unwrap_or("unknown"));
                    t.failed(kind, &outcome);
                }
                t.fatal = Some(reason);
                stop.store(true, Relaxed);
                return;
            }
            Verdict::Kept => {
                self.metrics
                    .failed(kind, outcome.code().unwrap_or("unknown"));
                lock(tally).failed(kind, &outcome);
                return;
            }
        }
        if matches!(outcome, SendOutcome::Fatal { .. }) {
            stop.store(true, Relaxed);
        }
        self.count(sub, &outcome, tally).await;
    }

    /// One send with retries: paced, in-flight bounded, backing off as
    /// the policy says; a provider-wide "wait" pauses every send to it.
    async fn send(
        &self,
        slot: &ProviderSlot,
        prepared: &Prepared,
        token: &str,
    ) -> (SendOutcome, u32) {
        let mut attempts = 0;
        loop {
            slot.pacer.wait().await;
            let outcome = {
                let _permit = slot
                    .in_flight
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                slot.provider.send_prepared(prepared, token).await
            };
            attempts += 1;
            match self
                .policy
                .next(attempts, &outcome, slot.provider.backoff(&outcome))
            {
                Next::Stop => return (outcome, attempts),
                Next::Quiet(quiet) => slot.pacer.pause(quiet).await,
                Next::Retry(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Counts a final outcome: sent, a dead token deleted, or failed.
    async fn count(&self, sub: &Subscription, outcome: &SendOutcome, tally: &Mutex<Tally>) {
        let kind = sub.provider;
        match outcome {
            SendOutcome::Sent { .. } => {
                self.metrics.sent[metrics::slot(kind)].fetch_add(1, Relaxed);
                lock(tally).delta.counters.sent += 1;
            }
            dead @ SendOutcome::DeadToken { .. } if dead.should_delete_token(sub.last_seen) => {
                self.remove(kind, &sub.token, tally).await;
            }
            SendOutcome::Fatal { reason, .. } => {
                self.metrics
                    .failed(kind, outcome.code().unwrap_or("unknown"));
                let mut t = lock(tally);
                t.failed(kind, outcome);
                t.fatal = Some(format!("{}: {reason}", kind.label()));
            }
            _ => {
                self.metrics
                    .failed(kind, outcome.code().unwrap_or("unknown"));
                lock(tally).failed(kind, outcome);
            }
        }
    }

    /// Deletes a dead token's subscription; counted as removed.
    async fn remove(&self, kind: ProviderKind, token: &str, tally: &Mutex<Tally>) {
        match self.store.remove_subscription(kind, token).await {
            Ok(_) => {
                self.metrics.removed[metrics::slot(kind)].fetch_add(1, Relaxed);
                lock(tally).delta.counters.removed += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not delete a dead token; the next job will try again");
                self.metrics.failed(kind, "store");
                let why = format!("deleting a dead token: {e}");
                lock(tally).failed(kind, &SendOutcome::retry("store", why));
            }
        }
    }
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a job whose batches are all done ends: `done`, unless nothing at
/// all could be sent, which is `failed` with why.
fn final_state(job: &super::Job) -> JobState {
    let c = &job.counters;
    if c.sent == 0 && c.removed == 0 && c.failed > 0 {
        return JobState::Failed(format!(
            "nothing could be sent: {}",
            summary_or_count(&job.failures, c.failed)
        ));
    }
    JobState::Done
}

fn summary_or_count(failures: &Failures, failed: u64) -> String {
    match failures.is_empty() {
        true => format!("{failed} sends failed"),
        false => failures.summary(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::JobCounters;

    #[test]
    fn a_job_fails_only_when_nothing_at_all_could_be_sent() {
        let job = |sent, removed, failed| crate::fanout::Job {
            id: "j".into(),
            product: "P".into(),
            version: "1.0.0".into(),
            dry_run: false,
            state: JobState::Running,
            created_at: chrono::Utc::now(),
            created_by: "t".into(),
            counters: JobCounters {
                total: sent + removed + failed,
                sent,
                removed,
                failed,
                ..JobCounters::default()
            },
            batches_total: 1,
            batches_done: 1,
            finished_at: None,
            failures: Default::default(),
            checked: vec![],
        };
        assert_eq!(final_state(&job(0, 0, 0)), JobState::Done, "no subscribers");
        assert_eq!(final_state(&job(3, 0, 2)), JobState::Done, "some sent");
        assert_eq!(
            final_state(&job(0, 3, 2)),
            JobState::Done,
            "some tokens dead"
        );
        match final_state(&job(0, 0, 5)) {
            JobState::Failed(reason) => {
                assert_eq!(reason, "nothing could be sent: 5 sends failed")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_last_cancels_are_remembered_and_the_oldest_forgotten() {
        let recent = RecentCancels::default();
        for i in 0..=CANCELLED_KEPT {
            recent.add(&format!("job{i}"));
        }
        assert!(
            !recent.contains("job0"),
            "one past the cap drops the oldest"
        );
        for i in 1..=CANCELLED_KEPT {
            assert!(recent.contains(&format!("job{i}")), "job{i} forgotten");
        }
    }
}
