//! Notification jobs: start a release fan-out, watch its counters, cancel it.

use super::admin::{audit, bearer, check_names, require, Actor};
use super::{json_body, json_response, parse_json, with_state, Shared, MAX_JSON_BODY};
use crate::config::Role;
use crate::error::ApiError;
use crate::fanout::{Job, JobState};
use bytes::Bytes;
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let auth = bearer(state.clone());
    let notify = warp::path!("v1" / "admin" / "releases" / String / String / "notify")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(MAX_JSON_BODY))
        .and(with_state(state.clone()))
        .then(|p, v, actor, body, state| async move {
            super::respond(notify(p, v, actor, body, state).await)
        });
    let get = warp::path!("v1" / "admin" / "jobs" / String)
        .and(warp::get())
        .and(auth.clone())
        .and(with_state(state.clone()))
        .then(|id, actor, state| async move { super::respond(get_job(id, actor, state).await) });
    let cancel = warp::path!("v1" / "admin" / "jobs" / String)
        .and(warp::delete())
        .and(auth)
        .and(with_state(state))
        .then(|id, actor, state| async move { super::respond(cancel_job(id, actor, state).await) });
    notify.or(get).unify().or(cancel).unify().boxed()
}

pub fn job_view(job: &Job) -> serde_json::Value {
    let (state, reason) = match &job.state {
        JobState::Planning => ("planning", None),
        JobState::Running => ("running", None),
        JobState::Done => ("done", None),
        JobState::Cancelled => ("cancelled", None),
        JobState::Failed(r) => ("failed", Some(r.as_str())),
    };
    let c = &job.counters;
    serde_json::json!({
        "id": job.id, "product": job.product, "version": job.version, "dry_run": job.dry_run,
        "state": state, "reason": reason,
        "total": c.total, "sent": c.sent, "failed": c.failed, "removed": c.removed, "retried": c.retried,
        "batches_total": job.batches_total, "batches_done": job.batches_done,
        "created_at": job.created_at, "created_by": job.created_by,
    })
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

async fn notify(
    product: String,
    version: String,
    actor: Result<Actor, ApiError>,
    body: Result<Bytes, ApiError>,
    state: Shared,
) -> Result<Response, ApiError> {
    let actor = require(actor, Role::Publisher)?;
    let v = check_names(&product, &version)?;
    let req: NotifyRequest = parse_json(&body?)?;
    let (yanked, paused, rollout_bp) = {
        let snap = state.catalog.load();
        let r = snap
            .product(&product)
            .and_then(|p| p.release(&v))
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
    let job = crate::fanout::jobs::start(
        &state.push,
        &product,
        &v.to_string(),
        req.dry_run,
        &actor.name,
    )
    .await?;
    audit(
        &state,
        &actor,
        "release.notify",
        format!("{product} {v}"),
        serde_json::json!({"job": job.id, "dry_run": req.dry_run, "force": req.force, "total": job.counters.total}),
    )
    .await?;
    let body =
        serde_json::json!({"job": job.id, "total": job.counters.total, "dry_run": job.dry_run});
    Ok(json_response(
        StatusCode::ACCEPTED,
        serde_json::to_vec(&body).expect("serializes"),
    ))
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

async fn get_job(
    id: String,
    actor: Result<Actor, ApiError>,
    state: Shared,
) -> Result<Response, ApiError> {
    require(actor, Role::Publisher)?;
    check_job_id(&id)?;
    let job = state
        .push
        .get_job(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_job", format!("no job {id}")))?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&job_view(&job)).expect("serializes"),
    ))
}

async fn cancel_job(
    id: String,
    actor: Result<Actor, ApiError>,
    state: Shared,
) -> Result<Response, ApiError> {
    let actor = require(actor, Role::Publisher)?;
    check_job_id(&id)?;
    if state.push.get_job(&id).await?.is_none() {
        return Err(ApiError::not_found("unknown_job", format!("no job {id}")));
    }
    let job = state.push.set_job_state(&id, JobState::Cancelled).await?;
    audit(
        &state,
        &actor,
        "job.cancel",
        id.clone(),
        serde_json::json!({}),
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&job_view(&job)).expect("serializes"),
    ))
}
