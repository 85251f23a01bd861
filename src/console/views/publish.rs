//! Publish from the browser: the page picks the signed release file and
//! the firmware file; its script streams the firmware to
//! `PUT /console/upload/{product}/{version}` (the admin upload itself: any
//! size, never buffered, sha256 computed on the way) with a progress bar,
//! then posts the release to `POST /console/publish` (the admin publish
//! itself), and shows the server's verdict on the signature and the digest
//! in words.

use super::super::{csrf, json, render, Ctx, Response};
use crate::console::navbar::Nav;
use crate::edge::body::RequestBody;
use crate::error::ApiError;
use crate::state::StoredRelease;
use askama::Template;
use firmcast_signing::Envelope;
use hyper::header::HeaderMap;
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde_json::{json as j, Value};

#[derive(Template)]
#[template(path = "publish.html")]
struct Publish {
    nav: Nav,
    can_act: bool,
    csrf: String,
    max_bytes: String,
}

/// `GET /console/publish`.
pub fn page(ctx: &Ctx<'_>) -> Response {
    render(
        StatusCode::OK,
        &Publish {
            nav: ctx.nav("publish"),
            can_act: ctx.can_act(),
            csrf: ctx.session.csrf.clone(),
            max_bytes: super::super::format::size(ctx.api.limits.max_artifact_bytes),
        },
    )
}

/// A publisher, and the session's token in `X-CSRF-Token`; why not
/// otherwise.
fn may_act(ctx: &Ctx<'_>, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers.get(csrf::HEADER).and_then(|v| v.to_str().ok());
    let e = if !csrf::matches(&ctx.session.csrf, token) {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "the request's CSRF token is missing or stale; reload the page and try again",
        )
    } else if !ctx.can_act() {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} has the viewer role; sign in with a publisher's token to publish",
                ctx.session.actor
            ),
        )
    } else {
        return Ok(());
    };
    Err(e)
}

fn error_json(e: &ApiError) -> Response {
    let mut resp = json(e.status, &j!({"error": e.code, "message": e.message}));
    if let Some(s) = e.retry_after {
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, s.into());
    }
    resp
}

/// `PUT /console/upload/{product}/{version}`: exactly the admin upload.
pub async fn upload(
    ctx: &Ctx<'_>,
    product: &str,
    version: &str,
    parts: &Parts,
    body: &mut RequestBody,
) -> Response {
    if let Err(e) = may_act(ctx, &parts.headers) {
        return error_json(&e);
    }
    match crate::api::admin::upload(ctx.api, &ctx.actor(), product, version, parts, body).await {
        Ok(mut resp) => {
            super::super::security_headers(resp.headers_mut());
            resp
        }
        Err(e) => error_json(&e),
    }
}

/// `POST /console/publish`: the admin publish, and its verdict in words.
pub async fn publish(ctx: &Ctx<'_>, parts: &Parts, body: &mut RequestBody) -> Response {
    if let Err(e) = may_act(ctx, &parts.headers) {
        return error_json(&e);
    }
    let body =
        match crate::api::read_json_body(&parts.headers, body, crate::api::MAX_JSON_BODY).await {
            Ok(b) => b,
            Err(e) => return error_json(&e),
        };
    let result = crate::api::admin::publish_json(ctx.api, &ctx.actor(), &body).await;
    let (status, verdict) = verdict(ctx, &body, &result);
    json(status, &verdict)
}

/// What the server decided, line by line: the signature, the digest, the
/// release.
fn verdict(
    ctx: &Ctx<'_>,
    body: &[u8],
    result: &Result<StoredRelease, ApiError>,
) -> (StatusCode, Value) {
    let line = |what: &str, ok: Option<bool>, text: String| {
        let verdict = match ok {
            Some(true) => "ok",
            Some(false) => "refused",
            None => "not checked",
        };
        j!({"what": what, "verdict": verdict, "text": text})
    };
    let role = &ctx.api.catalog.keyset().keyset.release;
    let envelope = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| Envelope::from_value(v.get("release")?.clone()).ok());
    let signers = || {
        let ids: Vec<&str> = envelope
            .iter()
            .flat_map(|e| e.signatures.iter())
            .map(|s| s.keyid.as_str())
            .filter(|id| role.keys.iter().any(|k| k.keyid() == *id))
            .collect();
        format!(
            "valid: signed by {} of the keyset's {} release key{} (threshold {}): {}",
            ids.len(),
            role.keys.len(),
            if role.keys.len() == 1 { "" } else { "s" },
            role.threshold,
            ids.iter()
                .map(|id| &id[..id.len().min(16)])
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    match result {
        Ok(stored) => {
            let m = envelope
                .as_ref()
                .and_then(|e| firmcast_signing::ReleaseManifest::parse(&e.payload).ok());
            let digest = m.map_or_else(
                || "matches the uploaded firmware".to_owned(),
                |m| {
                    format!(
                        "matches: the uploaded firmware is {} with sha256 {}, as signed",
                        super::super::format::size(m.artifact.size),
                        m.artifact.sha256
                    )
                },
            );
            let href = super::products::release_href(&stored.product, &stored.version);
            (
                StatusCode::CREATED,
                j!({
                    "ok": true,
                    "href": href,
                    "lines": [
                        line("Signature", Some(true), signers()),
                        line("Digest", Some(true), digest),
                        line("Release", Some(true), format!(
                            "published: {} {} (seq {}) on {} at {} rollout{}",
                            stored.product, stored.version, stored.seq, stored.channel,
                            super::super::format::pct(stored.rollout_bp),
                            if stored.paused { ", paused" } else { "" })),
                    ],
                }),
            )
        }
        Err(e) => {
            let refused = format!("refused: {}", e.message);
            let lines = match e.code {
                "artifact_missing" | "artifact_mismatch" => vec![
                    line("Signature", Some(true), signers()),
                    line("Digest", Some(false), refused),
                    line("Release", None, "not published".into()),
                ],
                "duplicate_version" | "stale_seq" => vec![
                    line("Signature", Some(true), signers()),
                    line("Digest", Some(true), "matches the uploaded firmware".into()),
                    line("Release", Some(false), refused),
                ],
                "bad_signature" | "invalid_release" => vec![
                    line("Signature", Some(false), refused),
                    line(
                        "Digest",
                        None,
                        "not checked: the signature comes first".into(),
                    ),
                    line("Release", None, "not published".into()),
                ],
                _ => vec![line("Release", Some(false), refused)],
            };
            if e.status.is_server_error() {
                tracing::warn!(code = e.code, "console publish failed: {}", e.message);
            }
            (e.status, j!({"ok": false, "error": e.code, "lines": lines}))
        }
    }
}
