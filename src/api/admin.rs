//! The admin API's release calls: streamed artifact upload, publish, list,
//! rollout changes, audit log. The caller is already authenticated with the
//! role the route table names ([`crate::api::Api::answer`]); the work is
//! [`crate::releases::Releases`]'s.

use super::{
    check_names, json, json_response, parse_json, query, read_json_body, Api, MAX_JSON_BODY,
};
use crate::edge::body::RequestBody;
use crate::edge::Response;
use crate::error::ApiError;
use crate::releases::{Actor, Publish, ReleaseView, Releases};
use crate::state::{HealthGate, Ramp, ReleasePatch};
use chrono::Utc;
use firmcast_signing::Envelope;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde::Deserialize;

/// `PUT /v1/admin/artifacts/{product}/{version}`: the firmware bytes,
/// streamed into the blob store with their sha256 computed on the way.
pub async fn upload(
    api: &Api,
    actor: &Actor,
    product: &str,
    version: &str,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response, ApiError> {
    let version = check_names(product, version)?;
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    let essence = ct.map(|c| c.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii());
    if !essence.is_some_and(|e| e.eq_ignore_ascii_case(b"application/octet-stream")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the firmware bytes with Content-Type: application/octet-stream",
        ));
    }
    let max = api.limits.max_artifact_bytes;
    if super::content_length(&parts.headers)?.is_some_and(|l| l > max) {
        return Err(crate::blob::BlobError::TooLarge { limit: max }.into());
    }
    let info = api.blobs.put(body.stream(), max).await?;
    api.releases
        .audit(
            actor,
            "artifact.upload",
            format!("{product} {version}"),
            serde_json::json!({"sha256": info.sha256, "size": info.size}),
        )
        .await?;
    Ok(json(StatusCode::CREATED, &info))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    release: serde_json::Value,
    /// 100 when absent; a ramp's first step when there is a ramp.
    #[serde(default)]
    rollout: Option<f64>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    health: Option<HealthRequest>,
    #[serde(default)]
    ramp: Option<RampRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthRequest {
    pub min_reports: u64,
    pub max_failure_rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RampRequest {
    pub steps: RampSteps,
    /// humantime, e.g. `24h`; `phased` steps default to 24h.
    #[serde(default)]
    pub every: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RampSteps {
    Percents(Vec<f64>),
    Named(String),
}

/// The steps `"phased"` stands for: seven steps, a day apart.
pub const PHASED: [f64; 7] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0];
const DAY_SECS: u64 = 86_400;

fn health_gate(h: HealthRequest) -> Result<HealthGate, ApiError> {
    if !h.max_failure_rate.is_finite() || !(0.0..=1.0).contains(&h.max_failure_rate) {
        return Err(ApiError::bad_request(
            "bad_health",
            format!(
                "max_failure_rate {} must be a fraction from 0 to 1 (0.05 means 5%)",
                h.max_failure_rate
            ),
        ));
    }
    if h.min_reports == 0 {
        return Err(ApiError::bad_request(
            "bad_health",
            "min_reports must be at least 1: a gate with no reports would pause on the first failure",
        ));
    }
    Ok(HealthGate {
        min_reports: h.min_reports,
        max_failure_rate: h.max_failure_rate,
    })
}

/// The ramp's steps in basis points and its interval in seconds.
fn ramp_plan(r: RampRequest) -> Result<(Vec<u16>, u64), ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_ramp", m);
    let (percents, default_every) = match r.steps {
        RampSteps::Named(name) if name == "phased" => (PHASED.to_vec(), Some(DAY_SECS)),
        RampSteps::Named(name) => {
            return Err(bad(format!(
                "steps {:?} is neither a list of percents nor \"phased\"",
                name.chars().take(40).collect::<String>()
            )))
        }
        RampSteps::Percents(p) => (p, None),
    };
    if percents.is_empty() || percents.len() > 100 {
        return Err(bad(
            "steps must list 1 to 100 percents, e.g. [1, 5, 20, 100]".into(),
        ));
    }
    let mut steps = Vec::with_capacity(percents.len());
    for p in &percents {
        let bp = rollout_bp(*p).map_err(|_| {
            bad(format!(
                "step {p} must be a percentage above 0, at most 100"
            ))
        })?;
        if bp == 0 {
            return Err(bad(format!("step {p} must be above 0")));
        }
        if steps.last().is_some_and(|last| *last >= bp) {
            return Err(bad(format!(
                "steps must go strictly up; {p} comes after {}",
                f64::from(*steps.last().unwrap_or(&0)) / 100.0
            )));
        }
        steps.push(bp);
    }
    if steps.last() != Some(&10_000) {
        return Err(bad(
            "the last step must be 100: a ramp ends with everyone".into()
        ));
    }
    let every = match (r.every, default_every) {
        (Some(text), _) => humantime::parse_duration(&text)
            .map_err(|e| {
                bad(format!(
                    "every {text:?} is not a duration such as 24h or 30m ({e})"
                ))
            })?
            .as_secs(),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(bad(
                "give every, e.g. \"24h\": the time between steps".into()
            ))
        }
    };
    if !(1..=366 * DAY_SECS).contains(&every) {
        return Err(bad(format!("every must be from 1s to 366d, not {every}s")));
    }
    Ok((steps, every))
}
pub(crate) fn rollout_bp(percent: f64) -> Result<u16, ApiError> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(ApiError::bad_request(
            "bad_rollout",
            format!("rollout {percent} must be a percentage from 0 to 100"),
        ));
    }
    Ok((percent * 100.0).round() as u16)
}

/// `POST /v1/admin/releases`.
pub async fn publish(
    api: &Api,
    actor: &Actor,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response, ApiError> {
    let body = read_json_body(&parts.headers, body, MAX_JSON_BODY).await?;
    let stored = publish_json(api, actor, &body).await?;
    Ok(json(StatusCode::CREATED, &ReleaseView::of(&stored)?))
}

/// A publish request's JSON body, published (the console's publish too).
pub(crate) async fn publish_json(
    api: &Api,
    actor: &Actor,
    body: &[u8],
) -> Result<crate::state::StoredRelease, ApiError> {
    let result = publish_inner(api, actor, body).await;
    api.metrics.publish(if result.is_ok() {
        "published"
    } else {
        "refused"
    });
    result
}

async fn publish_inner(
    api: &Api,
    actor: &Actor,
    body: &[u8],
) -> Result<crate::state::StoredRelease, ApiError> {
    let req: PublishRequest = parse_json(body)?;
    let ramp = req.ramp.map(ramp_plan).transpose()?;
    let rollout_bp = match (&ramp, req.rollout) {
        (Some((steps, _)), Some(r)) if rollout_bp(r)? != steps[0] => {
            return Err(ApiError::bad_request(
                "bad_rollout",
                format!(
                    "a ramp starts at its first step ({}%); leave rollout out or give that",
                    f64::from(steps[0]) / 100.0
                ),
            ))
        }
        (Some((steps, _)), _) => steps[0],
        (None, r) => rollout_bp(r.unwrap_or(100.0))?,
    };
    let publish = Publish {
        rollout_bp,
        paused: req.paused,
        health: req.health.map(health_gate).transpose()?,
        ramp: ramp.map(|(steps, every)| Ramp::start(steps, every, Utc::now())),
        envelope: Envelope::from_value(req.release)?,
    };
    let (bp, paused) = (publish.rollout_bp, publish.paused);
    let stored = api.releases.publish(actor, publish).await?;
    if api.limits.auto_notify && bp == 10_000 && !paused {
        // The release is live for everyone: tell its subscribers. A failure
        // here does not undo the publish; `release notify` can start it later.
        match crate::fanout::jobs::start(
            &api.push,
            &stored.product,
            &stored.version,
            false,
            &actor.name,
        )
        .await
        {
            Ok(job) => {
                tracing::info!(job = %job.id, total = job.counters.total, "auto-notify started")
            }
            Err(e) => {
                tracing::warn!(error = %e, "auto-notify could not start; run `firmcast release notify`")
            }
        }
    }
    Ok(stored)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    product: Option<String>,
}

/// `GET /v1/admin/releases?product=`.
pub async fn list(releases: &Releases, parts: &Parts) -> Result<Response, ApiError> {
    let q: ListQuery = query(parts)?;
    if let Some(p) = &q.product {
        firmcast_signing::names::validate_product(p)
            .map_err(|e| ApiError::bad_request("bad_product", e.to_string()))?;
    }
    let releases = releases.list(q.product.as_deref()).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "releases": releases }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchRequest {
    pub rollout: Option<f64>,
    pub paused: Option<bool>,
    pub yanked: Option<bool>,
    /// Present and `null`: back to the default gate.
    #[serde(default, deserialize_with = "present")]
    pub health: Option<Option<HealthRequest>>,
    /// Present and `null`: no more ramp.
    #[serde(default, deserialize_with = "present")]
    pub ramp: Option<Option<RampRequest>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /v1/admin/releases/{product}/{version}`.
pub async fn patch(
    releases: &Releases,
    actor: &Actor,
    product: &str,
    version: &str,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response, ApiError> {
    let version = check_names(product, version)?.to_string();
    let body = read_json_body(&parts.headers, body, MAX_JSON_BODY).await?;
    let req: PatchRequest = parse_json(&body)?;
    let updated = apply_patch(releases, actor, product, &version, req).await?;
    Ok(json(StatusCode::OK, &ReleaseView::of(&updated)?))
}

/// A patch request applied as `actor` (the console's rollout, pause,
/// resume, yank, ramp and gate forms too); `version` is canonical.
pub(crate) async fn apply_patch(
    releases: &Releases,
    actor: &Actor,
    product: &str,
    version: &str,
    req: PatchRequest,
) -> Result<crate::state::StoredRelease, ApiError> {
    let version = version.to_owned();
    let mut patch = ReleasePatch {
        rollout_bp: req.rollout.map(rollout_bp).transpose()?,
        paused: req.paused,
        pause: Some((actor.name.clone(), None)),
        yanked: req.yanked,
        health: req
            .health
            .map(|h| h.map(health_gate).transpose())
            .transpose()?,
        ..ReleasePatch::default()
    };
    if let Some(ramp) = req.ramp {
        if req.rollout.is_some() && ramp.is_some() {
            return Err(ApiError::bad_request(
                "bad_rollout",
                "a ramp sets the rollout itself; send either rollout or ramp",
            ));
        }
        patch.ramp = Some(match ramp.map(ramp_plan).transpose()? {
            None => None,
            Some((steps, every)) => {
                // The ramp goes on from where the rollout is: at the highest
                // step not above it (or its first step).
                let current = releases
                    .store()
                    .get_release(product, &version)
                    .await?
                    .map_or(0, |r| r.rollout_bp);
                let mut ramp = Ramp::start(steps, every, Utc::now());
                ramp.step = ramp
                    .steps_bp
                    .iter()
                    .rposition(|bp| *bp <= current)
                    .unwrap_or(0);
                ramp.schedule(Utc::now());
                patch.rollout_bp = Some(ramp.current_bp());
                Some(ramp)
            }
        });
    }
    if patch.is_empty() {
        return Err(ApiError::bad_request(
            "empty_patch",
            "send at least one of rollout, paused, yanked, health, ramp",
        ));
    }
    releases.patch(actor, product, &version, patch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/admin/audit?before=&limit=`: newest first.
pub async fn audit(releases: &Releases, parts: &Parts) -> Result<Response, ApiError> {
    let q: AuditQuery = query(parts)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = releases.store().list_audit(q.before, limit).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&serde_json::json!({"entries": entries})).expect("serializes"),
    ))
}
