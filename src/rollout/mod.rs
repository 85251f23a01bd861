//! Rollout intelligence, with no device id: adoption counts from the day
//! every check echoes, anonymous install reports, health gates that pause a
//! failing release, and ramps that widen a healthy one.
//!
//! - Counting happens in memory ([`counts`]) and is flushed to the stats
//!   store ([`crate::stats`]) every `rollout.flush_interval_secs` and on a
//!   graceful stop: a crash loses at most one interval of counts. A flush
//!   that failed is retried as it was (same id), so nothing counts twice.
//! - Every `rollout.evaluate_interval_secs`, each instance reads the shared
//!   counts of every live release ([`gates`]): a red gate pauses the release
//!   (once, however many instances see it), a due ramp step moves its
//!   rollout on (once per step).
//! - The day moves on at UTC midnight ([`day`]); the catalog is re-signed
//!   then, so cached answers carry the new day.

pub mod alerts;
pub mod counts;
pub mod day;
mod gates;

use crate::config::{HealthSettings, Settings};
use crate::fanout::PushStore;
use crate::releases::Releases;
use crate::stats::{StatsStore, WindowReports};
use arc_swap::ArcSwap;
use counts::{Caps, Counts, OncePerDay};
use day::Today;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub use counts::Report;

/// What the checks' `last_day` may be behind today and still count.
pub const LAST_DAY_HORIZON: u32 = 400;

pub struct Rollout {
    today: Today,
    counts: Counts,
    once: OncePerDay,
    stats: Arc<dyn StatsStore>,
    releases: Arc<Releases>,
    push: Arc<dyn PushStore>,
    alerts: alerts::Alerts,
    health: HealthSettings,
    auto_notify: bool,
    flush_every: Duration,
    evaluate_every: Duration,
    /// A flush the store did not take; sent again, as it is, first.
    pending: tokio::sync::Mutex<Option<crate::stats::Flush>>,
    pub metrics: RolloutMetrics,
}

/// For `/metrics`: kept by the evaluator, read by scrapes.
#[derive(Default)]
pub struct RolloutMetrics {
    pub auto_pauses: AtomicU64,
    pub ramp_steps: AtomicU64,
    pub flush_failures: AtomicU64,
    /// (product, version) -> its current window's reports.
    pub reports: ArcSwap<BTreeMap<(String, String), WindowReports>>,
    /// (product, channel, version) -> today's active installs.
    pub active: ArcSwap<BTreeMap<(String, String, String), u64>>,
}

impl Rollout {
    pub fn new(
        settings: &Settings,
        stats: Arc<dyn StatsStore>,
        releases: Arc<Releases>,
        push: Arc<dyn PushStore>,
    ) -> Self {
        let r = &settings.rollout;
        Rollout {
            today: Today::default(),
            counts: Counts::new(Caps {
                versions: r.max_versions_per_product.max(1),
                codes: r.max_codes_per_release.max(1),
            }),
            once: OncePerDay::new(settings.limits.max_tracked_clients.max(1)),
            stats,
            releases,
            push,
            alerts: alerts::Alerts::from_settings(&settings.alerts),
            health: r.health,
            auto_notify: settings.push.auto_notify,
            flush_every: Duration::from_secs(r.flush_interval_secs.max(1)),
            evaluate_every: Duration::from_secs(r.evaluate_interval_secs.max(1)),
            pending: tokio::sync::Mutex::new(None),
            metrics: RolloutMetrics::default(),
        }
    }

    /// Today's day number (what every check answer carries).
    pub fn today(&self) -> u32 {
        self.today.get()
    }

    /// The stats store, for the stats API.
    pub fn stats(&self) -> &Arc<dyn StatsStore> {
        &self.stats
    }

    /// The gate of every release that sets none.
    pub fn default_gate(&self) -> crate::state::HealthGate {
        crate::state::HealthGate {
            min_reports: self.health.min_reports,
            max_failure_rate: self.health.max_failure_rate,
        }
    }

    /// Counts one answered check of `product` `channel` from `version`
    /// (DESIGN.md: active when `last_day` is absent or before today, new
    /// when absent; a `last_day` of today, in the future or more than
    /// [`LAST_DAY_HORIZON`] days back counts nothing).
    pub fn checked(&self, product: &str, channel: &str, version: &str, last_day: Option<u32>) {
        let today = self.today();
        let counts = match last_day {
            None => true,
            Some(d) => d < today && today - d <= LAST_DAY_HORIZON,
        };
        if counts {
            self.counts
                .check(today, product, channel, version, last_day.is_none());
        }
    }

    /// Counts a validated report from `client`, once per address, release,
    /// outcome and day. True when it counted.
    pub fn reported(&self, client: IpAddr, report: &Report<'_>) -> bool {
        let today = self.today();
        if !self
            .once
            .first(today, client, report.product, report.to, report.outcome)
        {
            return false;
        }
        self.counts.report(today, report);
        true
    }

    /// Sends what was counted to the store: first a flush the store did
    /// not take before (as it was: same id, so it counts once), then what
    /// came since. A flush is held by the service, not by this future, so
    /// a flush cut off mid-way (a stop) is sent again by the next call.
    pub async fn flush(&self) {
        let mut pending = self.pending.lock().await;
        loop {
            if pending.is_none() {
                let flush = self
                    .counts
                    .take(hex::encode(rand::random::<[u8; 12]>()), self.today());
                if flush.is_empty() {
                    return;
                }
                *pending = Some(flush);
            }
            let flush = pending.as_ref().expect("set above");
            match self.stats.add(flush).await {
                Ok(()) => *pending = None,
                Err(e) => {
                    self.metrics.flush_failures.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, "counts not flushed; trying again at the next interval");
                    return;
                }
            }
        }
    }

    /// The background work: flushes, gate and ramp evaluations, the day.
    /// Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        let flushing = {
            let me = self.clone();
            async move {
                let mut tick = tokio::time::interval(me.flush_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    me.flush().await;
                }
            }
        };
        let evaluating = {
            let me = self.clone();
            async move {
                let mut tick = tokio::time::interval(me.evaluate_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut round = 0u64;
                loop {
                    tick.tick().await;
                    gates::evaluate(&me, round).await;
                    round += 1;
                }
            }
        };
        let days = {
            let me = self.clone();
            async move {
                loop {
                    tokio::time::sleep(Today::until_tomorrow()).await;
                    if me.today.refresh() {
                        // New statements, so cached answers carry the new day.
                        me.releases.catalog().resign();
                        let _ = me.stats.prune(me.today()).await;
                    }
                }
            }
        };
        let _ = self.stats.prune(self.today()).await;
        tokio::join!(flushing, evaluating, days);
    }
}
