//! `GET /v1/admin/stats/{product}?days=30&channel=`: adoption per day and
//! installed version, and per release its rollout, ramp, gate and the
//! reports its gate reads.

use super::{json, query, Api};
use crate::edge::Response;
use crate::error::ApiError;
use crate::releases::RampView;
use crate::rollout::day;
use crate::stats::{StatsStore, WindowReports};
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Codes past this many (most frequent first) fold into `other`.
pub const TOP_CODES: usize = 50;
pub const MAX_DAYS: u32 = crate::stats::RETENTION_DAYS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    days: Option<u32>,
    channel: Option<String>,
}

#[derive(Serialize)]
pub struct StatsView {
    pub product: String,
    /// Today's date (UTC) and day number.
    pub today: String,
    pub today_number: u32,
    /// Oldest first; only days with counts.
    pub days: Vec<DayView>,
    /// Newest version first.
    pub releases: Vec<ReleaseStats>,
}

#[derive(Serialize)]
pub struct DayView {
    pub day: String,
    pub versions: BTreeMap<String, crate::stats::Adoption>,
}

#[derive(Serialize)]
pub struct ReleaseStats {
    pub version: String,
    pub channel: String,
    pub rollout: f64,
    pub paused: bool,
    pub paused_by: Option<String>,
    pub pause_reason: Option<String>,
    pub yanked: bool,
    pub ramp: Option<RampView>,
    pub health: GateView,
    pub reports: ReportsView,
}

#[derive(Serialize)]
pub struct GateView {
    pub min_reports: u64,
    pub max_failure_rate: f64,
    /// True when the release uses the deployment's default gate.
    pub default: bool,
    /// True when the reports so far exceed it (with enough of them).
    pub red: bool,
}

#[derive(Serialize)]
pub struct ReportsView {
    pub installed: u64,
    pub failed: u64,
    pub failure_rate: f64,
    pub by_stage: BTreeMap<String, u64>,
    /// The most frequent failure codes, then `other` for the rest.
    pub top_codes: Vec<CodeCount>,
    /// The report window these count (a resume starts a new one).
    pub window: u32,
}

#[derive(Serialize)]
pub struct CodeCount {
    pub code: String,
    pub count: u64,
}

impl ReportsView {
    pub fn of(w: &WindowReports, window: u32) -> Self {
        let mut codes: Vec<(&String, &u64)> = w.codes.iter().collect();
        codes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut top_codes: Vec<CodeCount> = codes
            .iter()
            .take(TOP_CODES)
            .map(|(c, n)| CodeCount {
                code: (*c).clone(),
                count: **n,
            })
            .collect();
        let rest: u64 = codes.iter().skip(TOP_CODES).map(|(_, n)| **n).sum();
        if rest > 0 {
            top_codes.push(CodeCount {
                code: "other".into(),
                count: rest,
            });
        }
        ReportsView {
            installed: w.installed,
            failed: w.failed,
            failure_rate: w.failure_rate(),
            by_stage: w.by_stage.clone(),
            top_codes,
            window,
        }
    }
}

pub async fn stats(api: &Api, product: &str, parts: &Parts) -> Result<Response, ApiError> {
    firmcast_signing::names::validate_product(product)
        .map_err(|e| ApiError::bad_request("bad_product", e.to_string()))?;
    let q: StatsQuery = query(parts)?;
    let days = q.days.unwrap_or(30);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(
            "bad_days",
            format!("days {days} must be from 1 to {MAX_DAYS} (counts are kept {MAX_DAYS} days)"),
        ));
    }
    if let Some(c) = &q.channel {
        firmcast_signing::names::validate_channel(c)
            .map_err(|e| ApiError::bad_request("bad_channel", e.to_string()))?;
    }
    Ok(json(
        StatusCode::OK,
        &view(api, product, days, q.channel.as_deref()).await?,
    ))
}

/// The stats of `product` over the last `days` days (the console's too).
pub async fn view(
    api: &Api,
    product: &str,
    days: u32,
    channel: Option<&str>,
) -> Result<StatsView, ApiError> {
    let releases: Vec<crate::state::StoredRelease> = {
        let snap = api.catalog.load();
        let p = snap.product(product).ok_or_else(|| {
            ApiError::not_found(
                "unknown_product",
                format!("no releases for product {product:?}; check the product name"),
            )
        })?;
        p.releases().iter().map(|r| r.stored.clone()).collect()
    };
    let today = api.rollout.today();
    let days = adoption(api, product, days, channel).await?;
    let mut out = Vec::new();
    for s in releases {
        out.push(release_stats(api, s).await?);
    }
    Ok(StatsView {
        product: product.to_owned(),
        today: day::date(today),
        today_number: today,
        days,
        releases: out,
    })
}

/// `product`'s adoption per day over the last `days` days (the console's
/// chart reads this alone: no report windows needed).
pub async fn adoption(
    api: &Api,
    product: &str,
    days: u32,
    channel: Option<&str>,
) -> Result<Vec<DayView>, ApiError> {
    let today = api.rollout.today();
    let first = today.saturating_sub(days.max(1) - 1);
    let adoption = api
        .rollout
        .stats()
        .adoption(product, channel, first..=today)
        .await
        .map_err(stats_error)?;
    Ok(adoption
        .into_iter()
        .map(|d| DayView {
            day: day::date(d.day),
            versions: d.versions,
        })
        .collect())
}

/// One release's rollout, ramp, gate and the reports its gate reads (the
/// console's release page reads this for its one release).
pub async fn release_stats(
    api: &Api,
    s: crate::state::StoredRelease,
) -> Result<ReleaseStats, ApiError> {
    let stats: &dyn StatsStore = &**api.rollout.stats();
    let window = stats
        .window(&s.product, &s.version, s.steering.window)
        .await
        .map_err(stats_error)?;
    let gate = s.steering.health.unwrap_or(api.rollout.default_gate());
    Ok(ReleaseStats {
        rollout: f64::from(s.rollout_bp) / 100.0,
        paused: s.paused,
        paused_by: s.steering.paused_by.clone(),
        pause_reason: s.steering.pause_reason.clone(),
        yanked: s.yanked,
        ramp: s.steering.ramp.as_ref().map(RampView::of),
        health: GateView {
            min_reports: gate.min_reports,
            max_failure_rate: gate.max_failure_rate,
            default: s.steering.health.is_none(),
            red: window.total() >= gate.min_reports
                && window.failure_rate() > gate.max_failure_rate,
        },
        reports: ReportsView::of(&window, s.steering.window),
        version: s.version,
        channel: s.channel,
    })
}

fn stats_error(e: crate::stats::StatsError) -> ApiError {
    match e {
        crate::stats::StatsError::Unavailable { .. } => {
            ApiError::unavailable(format!("{e}; retry shortly"))
        }
        crate::stats::StatsError::Corrupt(_) => {
            tracing::error!(error = %e, "stats store corrupt");
            ApiError::internal(
                "the stats store holds unreadable data; the operator has been alerted",
            )
        }
    }
}
