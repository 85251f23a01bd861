//! One look at every live release: its health gate (a red one pauses the
//! release), then its ramp (a due step moves the rollout on). Both changes
//! are conditional writes on the release, so each happens once however many
//! instances look at the same moment.

use super::Rollout;
use crate::stats::WindowReports;
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

/// Today's adoption is read for `/metrics` every this many evaluations.
const ADOPTION_EVERY: u64 = 10;

pub(super) async fn evaluate(r: &Rollout, round: u64) {
    let snap = r.releases.catalog().load_full();
    let live: Vec<&crate::state::StoredRelease> = snap
        .products
        .values()
        .flat_map(|p| p.releases())
        .map(|release| &release.stored)
        .filter(|s| !s.yanked)
        .collect();
    let keys: Vec<_> = live
        .iter()
        .map(|s| (s.product.clone(), s.version.clone(), s.steering.window))
        .collect();
    let windows = match r.stats.windows(&keys).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read release reports; gates wait");
            return;
        }
    };
    let mut reports = BTreeMap::new();
    for (s, window) in live.into_iter().zip(windows) {
        if s.paused {
            reports.insert((s.product.clone(), s.version.clone()), window);
            continue;
        }
        let gate = s.steering.health.unwrap_or_else(|| r.default_gate());
        if red(&window, gate) {
            let reason = reason(&window, gate);
            match r.releases.auto_pause(s, &reason, &window, gate).await {
                Ok(true) => {
                    r.metrics.auto_pauses.fetch_add(1, Relaxed);
                    tracing::warn!(product = %s.product, version = %s.version, %reason, "release paused by its health gate");
                    r.alerts.send(format!(
                            "firmcast paused {} {}: {reason}. Resume it once the failures are understood.",
                            s.product, s.version
                        ));
                }
                Ok(false) => {} // another instance, or a person, was first
                Err(e) => {
                    tracing::warn!(error = %e.message, "cannot pause a failing release; trying again")
                }
            }
        } else if let Some(ramp) = &s.steering.ramp {
            if ramp.next_at.is_some_and(|at| at <= Utc::now()) {
                match r.releases.advance_ramp(s).await {
                    Ok(Some(updated)) => {
                        r.metrics.ramp_steps.fetch_add(1, Relaxed);
                        if updated.rollout_bp == 10_000 && r.auto_notify {
                            notify(r, &updated).await;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e.message, "cannot move a ramp on; trying again")
                    }
                }
            }
        }
        reports.insert((s.product.clone(), s.version.clone()), window);
    }
    r.metrics.reports.store(std::sync::Arc::new(reports));
    if round.is_multiple_of(ADOPTION_EVERY) {
        let today = r.today();
        let mut active = BTreeMap::new();
        for name in snap.products.keys() {
            for ch in snap.channels.iter() {
                if let Ok(days) = r.stats.adoption(name, Some(ch), today..=today).await {
                    for d in days {
                        for (version, a) in d.versions {
                            active.insert((name.clone(), ch.clone(), version), a.active);
                        }
                    }
                }
            }
        }
        r.metrics.active.store(std::sync::Arc::new(active));
    }
}

/// Red: enough reports, and more of them failures than the gate allows.
pub(crate) fn red(w: &WindowReports, gate: crate::state::HealthGate) -> bool {
    w.total() >= gate.min_reports && w.failure_rate() > gate.max_failure_rate
}

fn reason(w: &WindowReports, gate: crate::state::HealthGate) -> String {
    format!(
        "{} of {} install reports failed ({:.1}%), over the gate's {:.1}% (at least {} reports)",
        w.failed,
        w.total(),
        w.failure_rate() * 100.0,
        gate.max_failure_rate * 100.0,
        gate.min_reports
    )
}

/// A ramp reached 100% with `push.auto_notify`: tell the subscribers.
async fn notify(r: &Rollout, s: &crate::state::StoredRelease) {
    match crate::fanout::jobs::start(&r.push, &s.product, &s.version, false, "ramp").await {
        Ok(job) => {
            tracing::info!(job = %job.id, total = job.counters.total, "ramp reached 100%: auto-notify started")
        }
        Err(e) => {
            tracing::warn!(error = %e, "auto-notify could not start; run `firmcast release notify`")
        }
    }
}
