//! The admin API: bearer tokens (configured as sha256 hashes with a role),
//! streamed artifact upload, release publish and rollout changes, audit log.

use super::{json_body, json_response, parse_json, with_state, Shared, MAX_JSON_BODY};
use crate::blob::ByteStream;
use crate::config::Role;
use crate::error::ApiError;
use crate::state::{AuditEntry, ReleasePatch, StoredRelease};
use bytes::{Buf, Bytes};
use chrono::Utc;
use firmcast_signing::{Envelope, ReleaseManifest};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// Who is calling: the token's configured name and role.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let auth = bearer(state.clone());

    let upload = warp::path!("v1" / "admin" / "artifacts" / String / String)
        .and(warp::put())
        .and(auth.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and(with_state(state.clone()))
        .then(|p, v, actor, ct, len, body, state| async move {
            respond(upload_artifact(p, v, actor, ct, len, body, state).await)
        });
    let publish = warp::path!("v1" / "admin" / "releases")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(MAX_JSON_BODY))
        .and(with_state(state.clone()))
        .then(|actor, body, state| async move { respond(publish(actor, body, state).await) });
    let list = warp::path!("v1" / "admin" / "releases")
        .and(warp::get())
        .and(auth.clone())
        .and(super::query::<ListQuery>())
        .and(with_state(state.clone()))
        .then(|actor, q, state| async move { respond(list_releases(actor, q, state).await) });
    let patch = warp::path!("v1" / "admin" / "releases" / String / String)
        .and(warp::patch())
        .and(auth.clone())
        .and(json_body(MAX_JSON_BODY))
        .and(with_state(state.clone()))
        .then(|p, v, actor, body, state| async move {
            respond(patch_release(p, v, actor, body, state).await)
        });
    let audit = warp::path!("v1" / "admin" / "audit")
        .and(warp::get())
        .and(auth)
        .and(super::query::<AuditQuery>())
        .and(with_state(state))
        .then(|actor, q, state| async move { respond(list_audit(actor, q, state).await) });
    upload
        .or(publish)
        .unify()
        .or(list)
        .unify()
        .or(patch)
        .unify()
        .or(audit)
        .unify()
        .boxed()
}

fn respond(r: Result<Response, ApiError>) -> Response {
    super::respond(r)
}

/// The caller behind `Authorization: Bearer`, or why there is none; every
/// admin route takes this and checks the role it needs.
pub(super) fn bearer(state: Shared) -> BoxedFilter<(Result<Actor, ApiError>,)> {
    warp::header::optional::<String>("authorization")
        .and(with_state(state))
        .map(|h: Option<String>, state: Shared| authenticate(&state, h.as_deref()))
        .boxed()
}

/// Hashes the presented token and compares it with every configured hash in
/// constant time, so neither timing nor logs reveal a token.
fn authenticate(state: &Shared, header: Option<&str>) -> Result<Actor, ApiError> {
    let token = header
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <token>; make a token with `firmcast admin token`",
            )
        })?;
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for (name, role, hash) in &state.tokens {
        if bool::from(presented.ct_eq(hash)) {
            found = Some(Actor {
                name: name.clone(),
                role: *role,
            });
        }
    }
    found.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not configured on this server; check FIRMCAST_TOKEN",
        )
    })
}

pub(super) fn require(actor: Result<Actor, ApiError>, role: Role) -> Result<Actor, ApiError> {
    let actor = actor?;
    if actor.role < role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} has role {:?}; this needs {:?}",
                actor.name, actor.role, role
            ),
        ));
    }
    Ok(actor)
}

pub(super) fn check_names(product: &str, version: &str) -> Result<semver::Version, ApiError> {
    firmcast_signing::names::validate_product(product)
        .map_err(|e| ApiError::bad_request("bad_product", e.to_string()))?;
    firmcast_signing::names::parse_version(version)
        .map_err(|e| ApiError::bad_request("bad_version", e.to_string()))
}

pub(super) async fn audit(
    state: &Shared,
    actor: &Actor,
    action: &str,
    target: String,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        id: 0,
        at: Utc::now(),
        actor: actor.name.clone(),
        action: action.to_owned(),
        target,
        detail,
    };
    state.state.append_audit(&entry).await?;
    tracing::info!(actor = %actor.name, action, target = %entry.target, "admin action");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn upload_artifact(
    product: String,
    version: String,
    actor: Result<Actor, ApiError>,
    content_type: Option<String>,
    content_length: Option<u64>,
    body: impl futures_util::Stream<Item = Result<impl Buf, warp::Error>> + Send + 'static,
    state: Shared,
) -> Result<Response, ApiError> {
    let actor = require(actor, Role::Publisher)?;
    let version = check_names(&product, &version)?;
    if content_type
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or("").trim())
        != Some("application/octet-stream")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the firmware bytes with Content-Type: application/octet-stream",
        ));
    }
    let max = state.settings.server.max_artifact_bytes;
    if content_length.is_some_and(|l| l > max) {
        return Err(crate::blob::BlobError::TooLarge { limit: max }.into());
    }
    let stream: ByteStream = Box::pin(body.map(|r| {
        r.map(|mut b| b.copy_to_bytes(b.remaining()))
            .map_err(|e| std::io::Error::other(e.to_string()))
    }));
    let (stream, rest) = super::drain::split(stream);
    let info = match state.blobs.put(stream, max).await {
        Ok(info) => info,
        Err(e) => {
            rest.drain().await;
            return Err(e.into());
        }
    };
    audit(
        &state,
        &actor,
        "artifact.upload",
        format!("{product} {version}"),
        serde_json::json!({"sha256": info.sha256, "size": info.size}),
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        serde_json::to_vec(&info).expect("serializes"),
    ))
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

fn rollout_bp(percent: f64) -> Result<u16, ApiError> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(ApiError::bad_request(
            "bad_rollout",
            format!("rollout {percent} must be a percentage from 0 to 100"),
        ));
    }
    Ok((percent * 100.0).round() as u16)
}

/// The admin view of a release.
#[derive(Serialize)]
pub struct ReleaseView {
    product: String,
    version: String,
    channel: String,
    seq: u64,
    sha256: String,
    size: u64,
    rollout: f64,
    paused: bool,
    yanked: bool,
    critical: bool,
    published_at: chrono::DateTime<Utc>,
    published_by: String,
    updated_at: chrono::DateTime<Utc>,
}

fn view(s: &StoredRelease) -> Result<ReleaseView, ApiError> {
    let manifest = Envelope::parse(s.envelope.as_bytes())
        .and_then(|e| ReleaseManifest::parse(&e.payload))
        .map_err(|e| {
            ApiError::internal(format!(
                "stored release {} {} is unreadable: {e}",
                s.product, s.version
            ))
        })?;
    Ok(ReleaseView {
        product: s.product.clone(),
        version: s.version.clone(),
        channel: s.channel.clone(),
        seq: s.seq,
        sha256: manifest.artifact.sha256,
        size: manifest.artifact.size,
        rollout: f64::from(s.rollout_bp) / 100.0,
        paused: s.paused,
        yanked: s.yanked,
        critical: manifest.critical,
        published_at: s.published_at,
        published_by: s.published_by.clone(),
        updated_at: s.updated_at,
    })
}

/// Rebuilds the changed product's part of the snapshot from the store.
/// Serialized, so a slower refresh never installs a list read before a
/// faster one's write.
async fn refresh_catalog(state: &Shared, product: &str) -> Result<(), ApiError> {
    let _one_at_a_time = state.catalog.refreshing.lock().await;
    let releases = state.state.list_releases(Some(product)).await?;
    state.catalog.replace_product(product, releases);
    Ok(())
}

async fn publish(
    actor: Result<Actor, ApiError>,
    body: Result<Bytes, ApiError>,
    state: Shared,
) -> Result<Response, ApiError> {
    let actor = require(actor, Role::Publisher)?;
    let result = publish_inner(&actor, body?, &state).await;
    state.metrics.publish(if result.is_ok() {
        "published"
    } else {
        "refused"
    });
    result
}

async fn publish_inner(actor: &Actor, body: Bytes, state: &Shared) -> Result<Response, ApiError> {
    let req: PublishRequest = parse_json(&body)?;
    let bp = rollout_bp(req.rollout)?;
    let env = Envelope::from_value(req.release)?;
    let manifest = state.catalog.keyset().verify_release(&env)?;
    match state.blobs.stat(&manifest.artifact.sha256).await? {
        None => {
            return Err(ApiError::conflict(
                "artifact_missing",
                format!(
                    "no uploaded artifact has sha256 {}; upload the firmware first (PUT /v1/admin/artifacts/{}/{}, or `firmcast release publish`)",
                    manifest.artifact.sha256, manifest.product, manifest.version
                ),
            ))
        }
        Some(size) if size != manifest.artifact.size => {
            return Err(ApiError::conflict(
                "artifact_mismatch",
                format!("the stored artifact has {size} bytes, the release signed {}; re-sign the release", manifest.artifact.size),
            ))
        }
        Some(_) => {}
    }
    let now = Utc::now();
    let stored = StoredRelease {
        product: manifest.product.clone(),
        version: manifest.version.to_string(),
        channel: manifest.channel.clone(),
        seq: manifest.seq,
        envelope: String::from_utf8(env.to_json_bytes()).expect("JSON is UTF-8"),
        rollout_bp: bp,
        paused: req.paused,
        yanked: false,
        seed: rand::random(),
        published_at: now,
        published_by: actor.name.clone(),
        updated_at: now,
    };
    state.state.insert_release(&stored).await?;
    audit(
        state,
        actor,
        "release.publish",
        format!("{} {}", stored.product, stored.version),
        serde_json::json!({"seq": stored.seq, "channel": stored.channel, "sha256": manifest.artifact.sha256, "rollout": req.rollout, "paused": req.paused}),
    )
    .await?;
    refresh_catalog(state, &stored.product).await?;
    if state.settings.push.auto_notify && bp == 10_000 && !req.paused {
        // The release is live for everyone: tell its subscribers. A failure
        // here does not undo the publish; `release notify` can start it later.
        match crate::fanout::jobs::start(
            &state.push,
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
    Ok(json_response(
        StatusCode::CREATED,
        serde_json::to_vec(&view(&stored)?).expect("serializes"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    product: Option<String>,
}

async fn list_releases(
    actor: Result<Actor, ApiError>,
    q: Result<ListQuery, ApiError>,
    state: Shared,
) -> Result<Response, ApiError> {
    require(actor, Role::Publisher)?;
    let q = q?;
    if let Some(p) = &q.product {
        firmcast_signing::names::validate_product(p)
            .map_err(|e| ApiError::bad_request("bad_product", e.to_string()))?;
    }
    let releases = state
        .state
        .list_releases(q.product.as_deref())
        .await?
        .iter()
        .map(view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&serde_json::json!({"releases": releases})).expect("serializes"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRequest {
    rollout: Option<f64>,
    paused: Option<bool>,
    yanked: Option<bool>,
}

async fn patch_release(
    product: String,
    version: String,
    actor: Result<Actor, ApiError>,
    body: Result<Bytes, ApiError>,
    state: Shared,
) -> Result<Response, ApiError> {
    let actor = require(actor, Role::Publisher)?;
    let version = check_names(&product, &version)?.to_string();
    let req: PatchRequest = parse_json(&body?)?;
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
    let current = state
        .state
        .get_release(&product, &version)
        .await?
        .ok_or_else(|| {
            ApiError::not_found("unknown_release", format!("no release {product} {version}"))
        })?;
    if current.yanked && req.yanked == Some(false) {
        return Err(ApiError::conflict(
            "yanked",
            "a yanked release stays yanked; publish a new version with a higher seq instead",
        ));
    }
    let updated = state
        .state
        .update_release(&product, &version, &patch, Utc::now())
        .await?;
    audit(
        &state,
        &actor,
        "release.patch",
        format!("{product} {version}"),
        serde_json::json!({"rollout": req.rollout, "paused": req.paused, "yanked": req.yanked}),
    )
    .await?;
    refresh_catalog(&state, &product).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&view(&updated)?).expect("serializes"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

async fn list_audit(
    actor: Result<Actor, ApiError>,
    q: Result<AuditQuery, ApiError>,
    state: Shared,
) -> Result<Response, ApiError> {
    require(actor, Role::Admin)?;
    let q = q?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state.state.list_audit(q.before, limit).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&serde_json::json!({"entries": entries})).expect("serializes"),
    ))
}
