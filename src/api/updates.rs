//! The update check, the hot path: answered from the catalog snapshot with
//! pre-serialized offers and freshness statements; nothing is stored.

use super::{client_ip, json_body, json_response, with_state, AppState, Shared, MAX_JSON_BODY};
use crate::catalog::Snapshot;
use crate::error::ApiError;
use bytes::Bytes;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::OnceLock;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

pub const MAX_BATCH: usize = 32;

/// The channel of a check that names none.
pub(super) const DEFAULT_CHANNEL: &str = "stable";

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let single = warp::path!("v1" / "updates" / String / String)
        .and(warp::get())
        .and(warp::query::<CheckQuery>())
        .and(warp::header::optional::<String>("if-none-match"))
        .and(client_ip())
        .and(with_state(state.clone()))
        .map(
            |product: String,
             version: String,
             q: CheckQuery,
             inm: Option<String>,
             ip,
             state: Shared| {
                let channel = q.channel.as_deref();
                check_update(&product, &version, channel, inm.as_deref(), ip, &state)
            },
        );
    let batch = warp::path!("v1" / "updates")
        .and(warp::post())
        .and(json_body(MAX_JSON_BODY))
        .and(client_ip())
        .and(with_state(state.clone()))
        .map(super::batch::check_batch);
    let keys = warp::path!("v1" / "keys")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: Shared| keyset_reply(state.catalog.load().keyset_json.clone()));
    let keys_at = warp::path!("v1" / "keys" / u64)
        .and(warp::get())
        .and(with_state(state))
        .map(|version: u64, state: Shared| match state.catalog.keyset_at(version) {
            Ok(json) => keyset_reply(json),
            Err(held) => ApiError::not_found(
                "unknown_keyset_version",
                format!(
                    "keyset version {version} is not kept by this server, which holds versions {} to {}; \
                     a client older than that must be updated with the current root public key",
                    held.start(),
                    held.end()
                ),
            )
            .into_response(),
        });
    single
        .or(batch)
        .unify()
        .or(keys)
        .unify()
        .or(keys_at)
        .unify()
        .boxed()
}

/// Keysets change only on rotation; a client re-reads them on every check.
fn keyset_reply(json: Bytes) -> Response {
    let mut resp = json_response(StatusCode::OK, json);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// What one check resolved to, before it is written out.
#[derive(Clone, Copy)]
pub(super) struct Answer<'a> {
    pub offer: Option<&'a Bytes>,
    pub seq: u64,
    pub freshness: &'a Bytes,
    /// Where the catalog keeps this whole answer once written.
    pub cached: Option<&'a OnceLock<Bytes>>,
}

pub(super) fn resolve<'a>(
    snap: &'a Snapshot,
    product: &str,
    version: &str,
    channel: &str,
    ip: IpAddr,
) -> Result<Answer<'a>, ApiError> {
    firmcast_signing::names::validate_product(product)
        .map_err(|e| ApiError::bad_request("bad_product", e.to_string()))?;
    let installed = firmcast_signing::names::parse_version(version)
        .map_err(|e| ApiError::bad_request("bad_version", e.to_string()))?;
    // Most checks name no channel: the default needs no validating.
    if channel != DEFAULT_CHANNEL {
        firmcast_signing::names::validate_channel(channel)
            .map_err(|e| ApiError::bad_request("bad_channel", e.to_string()))?;
    }
    let p = snap.product(product).ok_or_else(|| {
        ApiError::not_found(
            "unknown_product",
            format!("no releases for product {product:?}; check the product name"),
        )
    })?;
    let resolved = p.resolve(&installed, channel, ip).ok_or_else(|| {
        ApiError::not_found(
            "unknown_channel",
            format!("no channel {channel:?}; use stable, beta or a channel a release names"),
        )
    })?;
    let offer = resolved.offer;
    Ok(Answer {
        offer: offer.map(|r| &r.offer_json),
        seq: offer.map(|r| r.manifest.seq).unwrap_or(0),
        freshness: resolved.freshness,
        cached: Some(resolved.answer),
    })
}

/// `"update":<offer or null>,"freshness":<statement>`, piece by piece to
/// `put`: counted or written by the same code.
pub(super) fn put_answer(put: &mut impl FnMut(&[u8]), a: &Answer<'_>) {
    put(b"\"update\":");
    put(a.offer.map_or(b"null", |o| o));
    put(b",\"freshness\":");
    put(a.freshness);
}

/// `GET /v1/updates/{product}/{version}` without warp's filter chain, for
/// the plain requests every app sends; `None` for anything else, or a query
/// needing decoding (percent-escapes, `+`, a repeated `channel`), which the
/// warp route answers the same way. Saves a third of the instructions per
/// check (callgrind, see bench/RESULTS.md).
pub fn fast_check<B>(
    req: &warp::http::Request<B>,
    ip: IpAddr,
    state: &AppState,
) -> Option<Response> {
    if req.method() != warp::http::Method::GET {
        return None;
    }
    let (product, version) = req
        .uri()
        .path()
        .strip_prefix("/v1/updates/")?
        .split_once('/')?;
    // Like warp's `String` segments: not percent-decoded.
    let plain = |s: &str| !s.is_empty() && !s.contains('/');
    if !plain(product) || !plain(version) {
        return None;
    }
    let mut channel = None;
    for pair in req.uri().query().unwrap_or("").split('&') {
        if pair.contains(['%', '+']) || pair == "channel" {
            return None;
        }
        if let Some(value) = pair.strip_prefix("channel=") {
            if channel.replace(value).is_some() {
                return None;
            }
        }
    }
    let mut inm = req.headers().get_all(header::IF_NONE_MATCH).iter();
    let if_none_match = match (inm.next(), inm.next()) {
        (None, _) => None,
        (Some(v), None) => Some(v.to_str().ok()?),
        (Some(_), Some(_)) => return None,
    };
    Some(check_update(
        product,
        version,
        channel,
        if_none_match,
        ip,
        state,
    ))
}

fn check_update(
    product: &str,
    version: &str,
    channel: Option<&str>,
    if_none_match: Option<&str>,
    ip: IpAddr,
    state: &AppState,
) -> Response {
    let channel = channel.unwrap_or(DEFAULT_CHANNEL);
    let snap = state.catalog.load();
    let answer = match resolve(&snap, product, version, channel, ip) {
        Ok(a) => a,
        Err(e) => {
            state.metrics.check("error");
            return e.into_response();
        }
    };
    state.metrics.check(if answer.offer.is_some() {
        "update"
    } else {
        "none"
    });
    let etag = etag(snap.generation, answer.seq);
    if if_none_match.map(str::as_bytes) == Some(etag.as_bytes()) {
        let mut resp = Response::new(Vec::new().into());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        set_cache_headers(&mut resp, etag);
        return resp;
    }
    let body = match answer.cached {
        Some(cell) => cell.get_or_init(|| whole_answer(&answer)).clone(),
        None => whole_answer(&answer),
    };
    let mut resp = json_response(StatusCode::OK, body);
    set_cache_headers(&mut resp, etag);
    resp
}

/// `{"update":…,"freshness":…}`, exactly sized: `Bytes` then takes the
/// buffer as it is.
fn whole_answer(answer: &Answer<'_>) -> Bytes {
    let mut len = 2;
    put_answer(&mut |text: &[u8]| len += text.len(), answer);
    let mut body = Vec::with_capacity(len);
    body.push(b'{');
    put_answer(&mut |text: &[u8]| body.extend_from_slice(text), answer);
    body.push(b'}');
    Bytes::from(body)
}

/// Varies with the snapshot (re-signed freshness) and the offered release.
/// Hex written by hand: `format!` costs more than the rest of the check.
fn etag(generation: u64, seq: u64) -> HeaderValue {
    fn hex(out: &mut [u8; 36], at: &mut usize, n: u64) {
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            out[*at] = b"0123456789abcdef"[(n >> (i * 4)) as usize & 0xf];
            *at += 1;
        }
    }
    // On the stack, then copied once into an exactly sized buffer.
    let mut tag = [b'"'; 36];
    let mut at = 1;
    hex(&mut tag, &mut at, generation);
    tag[at] = b'-';
    at += 1;
    hex(&mut tag, &mut at, seq);
    HeaderValue::from_bytes(&tag[..=at]).expect("hex and quotes are valid header bytes")
}

/// Rollout answers differ per client address, so only the client may cache.
fn set_cache_headers(resp: &mut Response, etag: HeaderValue) {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60"),
    );
    h.insert(header::ETAG, etag);
}

/// The check's only query parameter; others are ignored, as caches and
/// app versions add their own.
#[derive(Deserialize)]
struct CheckQuery {
    channel: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn etags_are_quoted_lowercase_hex() {
        for (g, s) in [(0, 0), (1, 0x1f), (0xabc, 7), (u64::MAX, u64::MAX)] {
            let want = format!("\"{g:x}-{s:x}\"");
            assert_eq!(super::etag(g, s).to_str().unwrap(), want);
        }
    }
}
