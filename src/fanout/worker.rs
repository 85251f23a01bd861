//! Fan-out workers: every instance runs a few; each claims a batch from the
//! shared queue, sends to the batch's current subscribers through the
//! providers (in-flight sends bounded per provider), and completes the batch
//! with its counters in one atomic step. A crashed worker's batch is claimed
//! by another after `push.stale_batch_secs`, so nobody is missed; at most that one batch is
//! sent twice, and the per-product collapse id keeps the phone from showing
//! it twice.

use super::store::{
    Claimed, JobCounters, JobState, ProviderKind, PushError, PushStore, Subscription,
};
use crate::catalog::Catalog;
use crate::push::{send_prepared_with_retry, Notice, Prepared, Provider, RetryPolicy, SendOutcome};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

const IDLE_POLL: Duration = Duration::from_millis(100);

pub struct ProviderSlot {
    pub provider: Arc<dyn Provider>,
    /// Bounds concurrent sends to this provider across all workers.
    pub in_flight: Arc<Semaphore>,
}

/// Per provider and outcome, for /metrics.
#[derive(Default)]
pub struct FanoutMetrics {
    pub sent: [AtomicU64; 2],
    pub failed: [AtomicU64; 2],
    pub removed: [AtomicU64; 2],
    pub retried: [AtomicU64; 2],
    /// Jobs stopped by payload or credential errors: page someone.
    pub fatal: AtomicU64,
}

fn slot(kind: ProviderKind) -> usize {
    match kind {
        ProviderKind::Fcm => 0,
        ProviderKind::Apns => 1,
    }
}

impl FanoutMetrics {
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP firmcast_push_total Push sends, by provider and outcome.\n# TYPE firmcast_push_total counter");
        for (name, counters) in [
            ("sent", &self.sent),
            ("failed", &self.failed),
            ("removed", &self.removed),
            ("retried", &self.retried),
        ] {
            for (kind, i) in [("fcm", 0), ("apns", 1)] {
                let _ = writeln!(
                    out,
                    "firmcast_push_total{{provider=\"{kind}\",outcome=\"{name}\"}} {}",
                    counters[i].load(Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP firmcast_push_jobs_fatal_total Fan-out jobs stopped by payload or credential errors (alert on any).\n# TYPE firmcast_push_jobs_fatal_total counter");
        let _ = writeln!(
            out,
            "firmcast_push_jobs_fatal_total {}",
            self.fatal.load(Relaxed)
        );
    }
}

pub struct Fanout {
    pub store: Arc<dyn PushStore>,
    pub providers: HashMap<ProviderKind, ProviderSlot>,
    pub policy: RetryPolicy,
    pub ttl: Duration,
    pub metrics: FanoutMetrics,
    /// Unique per process: the queue's consumer name.
    pub consumer: String,
    /// A batch claimed this long ago and not completed is taken over.
    pub stale: Duration,
    /// Sends one batch may have in flight (`push.in_flight`): one batch can
    /// fill a provider's window while the other workers load theirs.
    pub batch_concurrency: usize,
    /// Jobs cancelled through this instance, newest last: its workers stop
    /// sending for them at once; other instances' workers learn it from the
    /// store within [`WATCH_JOB`].
    pub cancelled: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// How often a running batch re-reads its job, to stop when it was
/// cancelled or failed elsewhere.
const WATCH_JOB: Duration = Duration::from_millis(250);
/// Cancelled job ids remembered for [`Fanout::cancelled`].
const CANCELLED_KEPT: usize = 256;

impl Fanout {
    /// Marks `job` cancelled in the store, and stops this instance's
    /// workers sending for it before the call returns: no send starts
    /// after a cancel is acknowledged.
    pub async fn cancel(&self, job: &str) -> Result<super::Job, PushError> {
        {
            let mut cancelled = self.cancelled.lock().unwrap_or_else(|e| e.into_inner());
            cancelled.push_back(job.to_owned());
            if cancelled.len() > CANCELLED_KEPT {
                cancelled.pop_front();
            }
        }
        self.store.set_job_state(job, JobState::Cancelled).await
    }

    fn cancelled_here(&self, job: &str) -> bool {
        let cancelled = self.cancelled.lock().unwrap_or_else(|e| e.into_inner());
        cancelled.iter().any(|j| j == job)
    }

    /// The providers `[push.apns]` and `[push.fcm]` enable, over `store`.
    pub fn from_settings(
        settings: &crate::config::Settings,
        store: Arc<dyn PushStore>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let p = &settings.push;
        let mut providers = HashMap::new();
        let slot = |provider: Arc<dyn Provider>| ProviderSlot {
            provider,
            in_flight: Arc::new(Semaphore::new(p.in_flight.max(1))),
        };
        if p.apns.enabled {
            let apns =
                crate::push::apns::ApnsProvider::from_settings(&p.apns).context("[push.apns]")?;
            providers.insert(ProviderKind::Apns, slot(Arc::new(apns)));
            tracing::info!(base_url = %p.apns.base_url, "push: APNs enabled");
        }
        if p.fcm.enabled {
            let fcm = crate::push::fcm::FcmProvider::from_settings(&p.fcm).context("[push.fcm]")?;
            providers.insert(ProviderKind::Fcm, slot(Arc::new(fcm)));
            tracing::info!(base_url = %p.fcm.base_url, "push: FCM enabled");
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
            self.store
                .complete(claimed, &JobCounters::default())
                .await?;
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
            self.store
                .set_job_state(
                    &job.id,
                    JobState::Failed("the release was yanked or removed".into()),
                )
                .await?;
            self.store
                .complete(claimed, &JobCounters::default())
                .await?;
            return Ok(());
        };
        let subs = self
            .store
            .subscribers_in(&batch.product, &batch.first, &batch.last)
            .await?;
        let notices = self.prepare_notices(&release, &subs);
        let fatal = std::sync::Mutex::new(None::<String>);
        let delta = std::sync::Mutex::new(JobCounters::default());
        // Set when the job stops (cancelled, failed here or elsewhere): no
        // further send of this batch starts.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let finished = std::sync::atomic::AtomicBool::new(false);
        let sending = futures_util::stream::iter(&subs).for_each_concurrent(
            self.batch_concurrency.max(1),
            |sub| {
                let (notices, fatal, delta, stop) = (&notices, &fatal, &delta, &stop);
                let job_id = job.id.as_str();
                async move {
                    if stop.load(Relaxed) || self.cancelled_here(job_id) {
                        return;
                    }
                    let prepared = notices.get(&(sub.provider, sub.locale.as_str()));
                    let result = self.deliver(sub, prepared).await;
                    let mut d = delta.lock().expect("no panics under this lock");
                    d.retried += result.retried;
                    match result.outcome {
                        Outcome::Sent => d.sent += 1,
                        Outcome::Removed => d.removed += 1,
                        Outcome::Failed => d.failed += 1,
                        Outcome::Fatal(reason) => {
                            d.failed += 1;
                            stop.store(true, Relaxed);
                            *fatal.lock().expect("no panics under this lock") = Some(reason);
                        }
                    }
                }
            },
        );
        let sending = async {
            sending.await;
            finished.store(true, Relaxed);
        };
        let watching = async {
            while !finished.load(Relaxed) && !stop.load(Relaxed) {
                tokio::time::sleep(WATCH_JOB).await;
                if let Ok(Some(now)) = self.store.get_job(&job.id).await {
                    if now.state.is_final() {
                        stop.store(true, Relaxed);
                    }
                }
            }
        };
        tokio::join!(sending, watching);
        let delta = delta.into_inner().expect("no panics under this lock");
        if let Some(reason) = fatal.into_inner().expect("no panics under this lock") {
            self.metrics.fatal.fetch_add(1, Relaxed);
            tracing::error!(job = %job.id, reason = %reason, "fan-out job stopped by a payload or credential error; tokens kept");
            self.store
                .set_job_state(&job.id, JobState::Failed(reason))
                .await?;
        }
        if let Some(after) = self.store.complete(claimed, &delta).await? {
            if after.batches_done >= after.batches_total && !after.state.is_final() {
                self.store.set_job_state(&after.id, JobState::Done).await?;
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

    async fn deliver(
        &self,
        sub: &Subscription,
        prepared: Option<&Result<Prepared, String>>,
    ) -> Delivered {
        let i = slot(sub.provider);
        let (Some(slot), Some(prepared)) = (self.providers.get(&sub.provider), prepared) else {
            self.metrics.failed[i].fetch_add(1, Relaxed);
            return Delivered {
                outcome: Outcome::Failed,
                retried: 0,
            };
        };
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(reason) => {
                self.metrics.failed[i].fetch_add(1, Relaxed);
                return Delivered {
                    outcome: Outcome::Fatal(format!("{}: {reason}", slot.provider.name())),
                    retried: 0,
                };
            }
        };
        let delivery = {
            let _permit = slot
                .in_flight
                .acquire()
                .await
                .expect("the semaphore is never closed");
            send_prepared_with_retry(slot.provider.as_ref(), prepared, &sub.token, &self.policy)
                .await
        };
        let retried = u64::from(delivery.attempts.saturating_sub(1));
        self.metrics.retried[i].fetch_add(retried, Relaxed);
        let outcome = match &delivery.outcome {
            SendOutcome::Sent { .. } => {
                self.metrics.sent[i].fetch_add(1, Relaxed);
                Outcome::Sent
            }
            dead @ SendOutcome::DeadToken { .. } if dead.should_delete_token(sub.last_seen) => {
                match self
                    .store
                    .remove_subscription(sub.provider, &sub.token)
                    .await
                {
                    Ok(_) => {
                        self.metrics.removed[i].fetch_add(1, Relaxed);
                        Outcome::Removed
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delete a dead token; the next job will try again");
                        self.metrics.failed[i].fetch_add(1, Relaxed);
                        Outcome::Failed
                    }
                }
            }
            SendOutcome::Fatal { reason } => {
                self.metrics.failed[i].fetch_add(1, Relaxed);
                Outcome::Fatal(format!("{}: {reason}", slot.provider.name()))
            }
            _ => {
                self.metrics.failed[i].fetch_add(1, Relaxed);
                Outcome::Failed
            }
        };
        Delivered { outcome, retried }
    }
}

enum Outcome {
    Sent,
    Removed,
    Failed,
    Fatal(String),
}

struct Delivered {
    outcome: Outcome,
    retried: u64,
}
