//! The store of rollout intelligence: adoption counts per day and install
//! outcome reports, added by each instance's flushes of its in-memory
//! counts ([`crate::rollout`]), read by the health gates, the stats API and
//! `/metrics`. Nothing in it names a client: its keys are products,
//! channels, versions, outcomes, stages, codes and day numbers.
//!
//! A flush is added exactly once however often it is retried (its id is
//! recorded in the same atomic step), so counts from every instance add up
//! and a flush retried after a timeout never counts twice. Counts are kept
//! [`RETENTION_DAYS`].

pub mod embedded;
pub mod redis;

use crate::storage::{Backend, StoreError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// How long counts are kept, in days.
pub const RETENTION_DAYS: u32 = 400;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("the stats store ({backend}) is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("the stats store holds data it cannot read ({0})")]
    Corrupt(String),
}

impl From<StoreError> for StatsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { backend, reason } => {
                StatsError::Unavailable { backend, reason }
            }
            StoreError::Corrupt(what) => StatsError::Corrupt(what),
        }
    }
}

/// An install outcome, as apps report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Installed,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Failed => "failed",
        }
    }
}

/// Where an install failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Download,
    Verify,
    Transfer,
    Install,
    Boot,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Download,
        Stage::Verify,
        Stage::Transfer,
        Stage::Install,
        Stage::Boot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Verify => "verify",
            Stage::Transfer => "transfer",
            Stage::Install => "install",
            Stage::Boot => "boot",
        }
    }
}

/// Checks counted for one (day, product, channel, installed version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptionCount {
    pub day: u32,
    pub product: String,
    pub channel: String,
    pub version: String,
    pub active: u64,
    pub new: u64,
}

/// Reports counted for one (day, product, to, from, outcome, stage, code),
/// in the release's report window `window`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportCount {
    pub day: u32,
    pub product: String,
    pub to: String,
    pub from: String,
    pub outcome: Outcome,
    pub stage: Option<Stage>,
    pub code: Option<String>,
    pub window: u32,
    pub count: u64,
}

/// One instance's counts since its last flush.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// Unique per flush: the store adds a flush with a known id only once.
    pub id: String,
    pub adoption: Vec<AdoptionCount>,
    pub reports: Vec<ReportCount>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.adoption.is_empty() && self.reports.is_empty()
    }
}

/// Active and new checks of one version on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Adoption {
    pub active: u64,
    pub new: u64,
}

/// One day of a product's adoption: installed version -> counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayAdoption {
    pub day: u32,
    pub versions: BTreeMap<String, Adoption>,
}

/// A release's reports in one window: what its health gate reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowReports {
    pub installed: u64,
    pub failed: u64,
    /// Failures by stage (`none` when the app named none).
    pub by_stage: BTreeMap<String, u64>,
    /// Failures by code (`none` when the app named none).
    pub codes: BTreeMap<String, u64>,
}

impl WindowReports {
    pub fn total(&self) -> u64 {
        self.installed + self.failed
    }

    /// `failed / (failed + installed)`, 0 with no reports.
    pub fn failure_rate(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.failed as f64 / n as f64,
        }
    }
}

/// A window's field names, as both stores keep them.
pub(crate) fn window_fields(r: &ReportCount) -> Vec<String> {
    let mut fields = vec![r.outcome.as_str().to_owned()];
    if r.outcome == Outcome::Failed {
        fields.push(format!("stage:{}", r.stage.map_or("none", Stage::as_str)));
        fields.push(format!("code:{}", r.code.as_deref().unwrap_or("none")));
    }
    fields
}

/// The window totals from stored `(field, count)` pairs.
pub(crate) fn window_from_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, u64)>,
) -> WindowReports {
    let mut w = WindowReports::default();
    for (field, n) in fields {
        match field {
            "installed" => w.installed += n,
            "failed" => w.failed += n,
            f => {
                if let Some(stage) = f.strip_prefix("stage:") {
                    *w.by_stage.entry(stage.to_owned()).or_default() += n;
                } else if let Some(code) = f.strip_prefix("code:") {
                    *w.codes.entry(code.to_owned()).or_default() += n;
                }
            }
        }
    }
    w
}

/// (product, version, report window).
pub type WindowKey = (String, String, u32);

#[async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Adds a flush, once: a flush whose id was added before adds nothing.
    async fn add(&self, flush: &Flush) -> Result<(), StatsError>;

    /// `product`'s adoption for the days in `days` (only days with counts),
    /// oldest first, over every channel or one.
    async fn adoption(
        &self,
        product: &str,
        channel: Option<&str>,
        days: RangeInclusive<u32>,
    ) -> Result<Vec<DayAdoption>, StatsError>;

    /// The reports of `product` `version` in report window `window`.
    async fn window(
        &self,
        product: &str,
        version: &str,
        window: u32,
    ) -> Result<WindowReports, StatsError> {
        let key = [(product.to_owned(), version.to_owned(), window)];
        Ok(self.windows(&key).await?.pop().unwrap_or_default())
    }

    /// The reports of many (product, version, window)s, in the order asked,
    /// in one read or round trip: the gates look at every live release
    /// every few seconds.
    async fn windows(&self, keys: &[WindowKey]) -> Result<Vec<WindowReports>, StatsError>;

    /// Drops counts older than [`RETENTION_DAYS`] before `today` (the
    /// embedded store; Redis keys expire by themselves).
    async fn prune(&self, today: u32) -> Result<(), StatsError>;
}

/// The stats store of an opened backend.
pub async fn open(backend: &Backend) -> Result<Arc<dyn StatsStore>, StatsError> {
    Ok(match backend {
        Backend::Embedded { state, .. } => {
            let db = state.clone();
            Arc::new(
                state
                    .run(move |_| embedded::EmbeddedStatsStore::new(db))
                    .await?,
            )
        }
        Backend::Redis(link) => Arc::new(redis::RedisStatsStore::new(link.clone())),
    })
}
