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
use crate::state::ReleasePatch;
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
    #[serde(default = "full_rollout")]
    rollout: f64,
    #[serde(default)]
    paused: bool,
}

fn full_rollout() -> f64 {
    100.0
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
    let result = publish_inner(api, actor, &body).await;
    api.metrics.publish(if result.is_ok() {
        "published"
    } else {
        "refused"
    });
    result
}

async fn publish_inner(api: &Api, actor: &Actor, body: &[u8]) -> Result<Response, ApiError> {
    let req: PublishRequest = parse_json(body)?;
    let publish = Publish {
        rollout_bp: rollout_bp(req.rollout)?,
        paused: req.paused,
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
    Ok(json(StatusCode::CREATED, &ReleaseView::of(&stored)?))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRequest {
    rollout: Option<f64>,
    paused: Option<bool>,
    yanked: Option<bool>,
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
    let patch = ReleasePatch {
        rollout_bp: req.rollout.map(rollout_bp).transpose()?,
        paused: req.paused,
        yanked: req.yanked,
    };
    if patch == ReleasePatch::default() {
        return Err(ApiError::bad_request(
            "empty_patch",
            "send at least one of rollout, paused, yanked",
        ));
    }
    let updated = releases.patch(actor, product, &version, patch).await?;
    Ok(json(StatusCode::OK, &ReleaseView::of(&updated)?))
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
