//! What fan-out keeps: push subscriptions (token, products, locale, last
//! seen; never an address), fan-out jobs with their counters, and the durable
//! queue of batches that workers on every instance share.
//!
//! A batch names a *range* of a product's subscriber index, not a list of
//! tokens: workers read the range when they send, so a token unsubscribed
//! after the job started is simply no longer there. That is how "every trace
//! of the token gone, including pending batches" holds without rewriting
//! queued work.

use crate::storage::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the push store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no fan-out job {id}; use the id the notify call returned")]
    UnknownJob { id: String },
    #[error("the push store ({backend}) is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("the push store holds data it cannot read ({0}); restore from a backup")]
    Corrupt(String),
}

impl From<StoreError> for PushError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { backend, reason } => {
                PushError::Unavailable { backend, reason }
            }
            StoreError::Corrupt(what) => PushError::Corrupt(what),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Fcm,
    Apns,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Fcm => "fcm",
            ProviderKind::Apns => "apns",
        }
    }

    /// As people write it: `FCM`, `APNs`.
    pub fn label(self) -> &'static str {
        match self {
            ProviderKind::Fcm => "FCM",
            ProviderKind::Apns => "APNs",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fcm" => Some(ProviderKind::Fcm),
            "apns" => Some(ProviderKind::Apns),
            _ => None,
        }
    }
}

/// The index key of a subscription: `provider:token`. Ordered, so a product's
/// subscribers can be paged and cut into ranges.
pub fn member_key(provider: ProviderKind, token: &str) -> String {
    format!("{}:{token}", provider.as_str())
}

pub fn parse_member(member: &str) -> Option<(ProviderKind, &str)> {
    let (p, token) = member.split_once(':')?;
    Some((ProviderKind::parse(p)?, token))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub provider: ProviderKind,
    pub token: String,
    /// Sorted, deduplicated product names.
    pub products: Vec<String>,
    pub locale: String,
    pub last_seen: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounters {
    pub total: u64,
    pub sent: u64,
    pub failed: u64,
    pub removed: u64,
    pub retried: u64,
}

/// Distinct failure codes kept per provider and job; further ones count
/// under `other` (codes come from providers and proxies, and a job must
/// stay small).
pub const MAX_CODES: usize = 32;

/// Why a job's sends failed: per provider, failures by code, and the last
/// error in words.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    /// provider -> code -> failed sends.
    #[serde(default)]
    pub by_code: BTreeMap<ProviderKind, BTreeMap<String, u64>>,
    /// provider -> the last failure, in words.
    #[serde(default)]
    pub last_error: BTreeMap<ProviderKind, String>,
}

impl Failures {
    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty() && self.last_error.is_empty()
    }

    /// One more failure of `provider` with `code`.
    pub fn count(&mut self, provider: ProviderKind, code: &str, words: &str, n: u64) {
        let codes = self.by_code.entry(provider).or_default();
        let code = match codes.contains_key(code) || codes.len() < MAX_CODES - 1 {
            true => code,
            false => "other",
        };
        *codes.entry(code.to_owned()).or_default() += n;
        if !words.is_empty() {
            self.last_error.insert(provider, words.to_owned());
        }
    }

    /// `other` added in: counts summed, its last errors win.
    pub fn merge(&mut self, other: &Failures) {
        for (provider, codes) in &other.by_code {
            for (code, n) in codes {
                self.count(*provider, code, "", *n);
            }
        }
        for (provider, words) in &other.last_error {
            self.last_error.insert(*provider, words.clone());
        }
    }

    /// "APNs: tls_untrusted 5 (last: TLS with ...)", every provider that failed.
    pub fn summary(&self) -> String {
        let mut parts = vec![];
        for (provider, codes) in &self.by_code {
            let mut codes: Vec<_> = codes.iter().collect();
            codes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let counts: Vec<String> = codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let mut part = format!("{}: {}", provider.label(), counts.join(", "));
            if let Some(words) = self.last_error.get(provider) {
                part.push_str(&format!(" (last: {words})"));
            }
            parts.push(part);
        }
        parts.join("; ")
    }
}

/// What a batch adds to its job when it completes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobDelta {
    pub counters: JobCounters,
    pub failures: Failures,
    /// Providers whose first answers in this job passed the mix-up check
    /// (see `fanout::breaker`): later batches delete dead tokens at once.
    pub checked: Vec<ProviderKind>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum JobState {
    /// Batches are being queued.
    Planning,
    Running,
    Done,
    Cancelled,
    /// Stopped by a payload or credential error; tokens are kept.
    Failed(String),
}

impl JobState {
    /// Every state's name, as stored and shown: `planning`, `running`,
    /// `done`, `cancelled`, `failed` (its reason apart).
    pub const NAMES: [&'static str; 5] = ["planning", "running", "done", "cancelled", "failed"];

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Cancelled | JobState::Failed(_)
        )
    }

    /// The state's name (the serde tag).
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Planning => "planning",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
            JobState::Failed(_) => "failed",
        }
    }

    /// Why the job failed, if it did.
    pub fn reason(&self) -> Option<&str> {
        match self {
            JobState::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// The state named `name` (a failure with `reason`); `None` for a name
    /// that is not a state.
    pub fn from_parts(name: &str, reason: Option<String>) -> Option<JobState> {
        Some(match name {
            "planning" => JobState::Planning,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "cancelled" => JobState::Cancelled,
            "failed" => JobState::Failed(reason.unwrap_or_default()),
            _ => return None,
        })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobState::Failed(reason) => write!(f, "failed: {reason}"),
            state => f.write_str(state.as_str()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub product: String,
    pub version: String,
    pub dry_run: bool,
    pub state: JobState,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub counters: JobCounters,
    pub batches_total: u64,
    pub batches_done: u64,
    /// When the job reached a final state.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub failures: Failures,
    /// See [`JobDelta::checked`].
    #[serde(default)]
    pub checked: Vec<ProviderKind>,
}

/// One unit of queued work: the subscribers of `product` whose member keys
/// lie in `first..=last`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub job_id: String,
    pub product: String,
    pub first: String,
    pub last: String,
}

/// A claimed batch; `delivery` identifies the claim for `ack`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub delivery: String,
    pub batch: Batch,
}

#[async_trait]
pub trait PushStore: Send + Sync + 'static {
    /// Inserts or replaces the subscription (and its product index entries;
    /// products dropped since the last upsert leave their indexes).
    async fn upsert_subscription(&self, sub: &Subscription) -> Result<(), PushError>;

    /// Removes the subscription from every key and index. True if it existed.
    async fn remove_subscription(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<bool, PushError>;

    async fn get_subscription(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<Option<Subscription>, PushError>;

    /// Up to `limit` member keys of `product`'s index after `after`, ascending.
    async fn subscriber_page(
        &self,
        product: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, PushError>;

    /// `product`'s index cut into ranges of `size` members (the last may be
    /// shorter), as (first, last) member keys, and the member count.
    async fn batch_ranges(
        &self,
        product: &str,
        size: usize,
    ) -> Result<(Vec<(String, String)>, u64), PushError> {
        let mut ranges = Vec::new();
        let mut total = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .subscriber_page(product, after.as_deref(), size)
                .await?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                break;
            };
            total += page.len() as u64;
            ranges.push((first.clone(), last.clone()));
            after = Some(last.clone());
            if page.len() < size {
                break;
            }
        }
        Ok((ranges, total))
    }

    /// The subscriptions of `product` whose member keys lie in `first..=last`.
    async fn subscribers_in(
        &self,
        product: &str,
        first: &str,
        last: &str,
    ) -> Result<Vec<Subscription>, PushError>;

    async fn count_subscribers(&self, product: &str) -> Result<u64, PushError>;

    /// Removes every subscription last seen before `before`; returns how many.
    async fn sweep_idle(&self, before: DateTime<Utc>) -> Result<u64, PushError>;

    async fn put_job(&self, job: &Job) -> Result<(), PushError>;

    async fn get_job(&self, id: &str) -> Result<Option<Job>, PushError>;

    /// The `limit` most recently created jobs, newest first (the console's
    /// jobs page). A job listed here may have been replaced since; its
    /// counters are as of the read.
    async fn list_jobs(&self, limit: usize) -> Result<Vec<Job>, PushError>;

    /// Sets the state unless the job is already final (a cancel wins over a
    /// late "done"). Returns the job as stored afterwards.
    async fn set_job_state(&self, id: &str, state: JobState) -> Result<Job, PushError>;

    async fn enqueue(&self, batch: &Batch) -> Result<(), PushError> {
        self.enqueue_all(std::slice::from_ref(batch)).await
    }

    /// Queues a job's batches at once, in order: all or none, and one
    /// durable write rather than one per batch.
    async fn enqueue_all(&self, batches: &[Batch]) -> Result<(), PushError>;

    /// The next batch for `consumer`: a new one, or one claimed by another
    /// consumer more than `stale` ago and never acknowledged (it crashed).
    async fn claim(&self, consumer: &str, stale: Duration) -> Result<Option<Claimed>, PushError>;

    /// Done with a claimed batch, atomically: it leaves the queue, `delta` is
    /// added to its job's counters and failures, `batches_done` goes up by
    /// one. If the
    /// batch already left the queue (another consumer took it over and
    /// finished it), nothing is counted again. Returns the job afterwards.
    async fn complete(&self, claimed: &Claimed, delta: &JobDelta)
        -> Result<Option<Job>, PushError>;

    /// Extends the claim on a batch still being sent, so it is not taken
    /// over as crashed after `stale`. False when it is no longer this
    /// consumer's (taken over, or completed): stop sending it.
    async fn renew(&self, claimed: &Claimed, consumer: &str) -> Result<bool, PushError>;
}
