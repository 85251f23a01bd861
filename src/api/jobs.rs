//! Notification jobs: start a release fan-out, watch its counters, cancel it.

use super::{check_names, json, parse_json, read_json_body, Api, MAX_JSON_BODY};
use crate::edge::body::RequestBody;
use crate::edge::Response;
use crate::error::ApiError;
use crate::fanout::{Job, PushStore};
use crate::releases::Actor;
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job as the API shows it: `state` and `reason` side by side, its pace
/// (sends answered per second since it started, and the time left at that
/// pace while it runs) and, per provider, why sends failed.
#[derive(Serialize)]
pub struct JobView<'a> {
    id: &'a str,
    product: &'a str,
    version: &'a str,
    dry_run: bool,
    state: &'static str,
    reason: Option<&'a str>,
    total: u64,
    sent: u64,
    failed: u64,
    removed: u64,
    retried: u64,
    batches_total: u64,
    batches_done: u64,
    created_at: chrono::DateTime<chrono::Utc>,
    created_by: &'a str,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    per_second: f64,
    eta_seconds: Option<u64>,
    failures: BTreeMap<&'static str, ProviderFailures<'a>>,
}

#[derive(Serialize)]
struct ProviderFailures<'a> {
    by_reason: &'a BTreeMap<String, u64>,
    last_error: Option<&'a str>,
}

impl<'a> JobView<'a> {
    pub fn of(job: &'a Job) -> Self {
        Self::at(job, chrono::Utc::now())
    }

    fn at(job: &'a Job, now: chrono::DateTime<chrono::Utc>) -> Self {
        let c = &job.counters;
        let answered = c.sent + c.failed + c.removed;
        let until = job.finished_at.unwrap_or(now);
        let secs = (until - job.created_at).num_milliseconds().max(1) as f64 / 1000.0;
        let per_second = (answered as f64 / secs * 10.0).round() / 10.0;
        let running = !job.state.is_final() && !job.dry_run;
        let left = c.total.saturating_sub(answered);
        let eta_seconds =
            (running && per_second > 0.0).then(|| (left as f64 / per_second).ceil() as u64);
        let failures = job
            .failures
            .by_code
            .iter()
            .map(|(p, codes)| {
                let view = ProviderFailures {
                    by_reason: codes,
                    last_error: job.failures.last_error.get(p).map(String::as_str),
                };
                (p.as_str(), view)
            })
            .collect();
        JobView {
            id: &job.id,
            product: &job.product,
            version: &job.version,
            dry_run: job.dry_run,
            state: job.state.as_str(),
            reason: job.state.reason(),
            total: c.total,
            sent: c.sent,
            failed: c.failed,
            removed: c.removed,
            retried: c.retried,
            batches_total: job.batches_total,
            batches_done: job.batches_done,
            created_at: job.created_at,
            created_by: &job.created_by,
            finished_at: job.finished_at,
            per_second: if job.dry_run { 0.0 } else { per_second },
            eta_seconds,
            failures,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NotifyRequest {
    #[serde(default)]
    dry_run: bool,
    /// Notify although the rollout is below 100%.
    #[serde(default)]
    force: bool,
}

/// `POST /v1/admin/releases/{product}/{version}/notify`.
pub async fn notify(
    api: &Api,
    actor: &Actor,
    product: &str,
    version: &str,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response, ApiError> {
    let v = check_names(product, version)?;
    let body = read_json_body(&parts.headers, body, MAX_JSON_BODY).await?;
    let req: NotifyRequest = parse_json(&body)?;
    let job = start_notify(api, actor, product, &v, req.dry_run, req.force).await?;
    let body =
        serde_json::json!({"job": job.id, "total": job.counters.total, "dry_run": job.dry_run});
    Ok(json(StatusCode::ACCEPTED, &body))
}

/// Starts a release's notification job (or its dry run, which only
/// counts), as `actor`, audited (the console's "Notify" too).
pub(crate) async fn start_notify(
    api: &Api,
    actor: &Actor,
    product: &str,
    v: &semver::Version,
    dry_run: bool,
    force: bool,
) -> Result<Job, ApiError> {
    let req = NotifyRequest { dry_run, force };
    let (yanked, paused, rollout_bp) = {
        let snap = api.catalog.load();
        let r = snap
            .product(product)
            .and_then(|p| p.release(v))
            .ok_or_else(|| {
                ApiError::not_found("unknown_release", format!("no release {product} {v}"))
            })?;
        (r.stored.yanked, r.stored.paused, r.stored.rollout_bp)
    };
    if yanked {
        return Err(ApiError::conflict(
            "yanked",
            format!("{product} {v} is yanked; nobody should be told about it"),
        ));
    }
    if !req.dry_run && !req.force && (paused || rollout_bp < 10_000) {
        return Err(ApiError::conflict(
            "partial_rollout",
            format!(
                "{product} {v} is {}; recipients outside the rollout would be told of an update their check does not offer. Roll out to 100% first, or send {{\"force\": true}}",
                if paused { "paused".to_owned() } else { format!("at {}% rollout", f64::from(rollout_bp) / 100.0) }
            ),
        ));
    }
    let job =
        crate::fanout::jobs::start(&api.push, product, &v.to_string(), req.dry_run, &actor.name)
            .await?;
    api.releases.audit(
        actor,
        "release.notify",
        format!("{product} {v}"),
        serde_json::json!({"job": job.id, "dry_run": req.dry_run, "force": req.force, "total": job.counters.total}),
    )
    .await?;
    Ok(job)
}

fn check_job_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_job_id",
            "a job id is the 24 hex digits the notify call returned",
        ))
    }
}

/// `GET /v1/admin/jobs/{id}`.
pub async fn get(push: &dyn PushStore, id: &str) -> Result<Response, ApiError> {
    check_job_id(id)?;
    let job = push
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_job", format!("no job {id}")))?;
    Ok(json(StatusCode::OK, &JobView::of(&job)))
}

/// `DELETE /v1/admin/jobs/{id}`: no batch starts after this answer.
pub async fn cancel(api: &Api, actor: &Actor, id: &str) -> Result<Response, ApiError> {
    check_job_id(id)?;
    let job = api.fanout.cancel(id).await?;
    api.releases
        .audit(actor, "job.cancel", id.to_owned(), serde_json::json!({}))
        .await?;
    Ok(json(StatusCode::OK, &JobView::of(&job)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::{JobCounters, JobState, ProviderKind};

    fn job(state: JobState, answered: u64) -> Job {
        let created_at = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .to_utc();
        let mut failures = crate::fanout::Failures::default();
        failures.count(
            ProviderKind::Apns,
            "tls_untrusted",
            "TLS: unknown issuer",
            5,
        );
        Job {
            id: "j".into(),
            product: "P".into(),
            version: "1.0.0".into(),
            dry_run: false,
            state,
            created_at,
            created_by: "bot".into(),
            counters: JobCounters {
                total: 1000,
                sent: answered - 5,
                failed: 5,
                ..JobCounters::default()
            },
            batches_total: 2,
            batches_done: 1,
            finished_at: None,
            failures,
            checked: vec![],
        }
    }

    #[test]
    fn a_running_job_shows_its_pace_eta_and_failures() {
        let j = job(JobState::Running, 250);
        let now = j.created_at + chrono::Duration::seconds(5);
        let v = serde_json::to_value(JobView::at(&j, now)).unwrap();
        assert_eq!(v["per_second"], 50.0);
        assert_eq!(v["eta_seconds"], 15);
        assert_eq!(v["failures"]["apns"]["by_reason"]["tls_untrusted"], 5);
        assert_eq!(v["failures"]["apns"]["last_error"], "TLS: unknown issuer");
        let mut done = job(JobState::Done, 1000);
        done.finished_at = Some(done.created_at + chrono::Duration::seconds(4));
        let v = serde_json::to_value(JobView::at(&done, now + chrono::Duration::hours(1))).unwrap();
        assert_eq!(v["per_second"], 250.0, "measured until it finished");
        assert!(v["eta_seconds"].is_null());
    }
}
