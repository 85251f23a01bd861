//! The update check, the hot path: answered from the catalog snapshot with
//! pre-serialized offers and freshness statements; nothing is stored.

use super::json_response;
use crate::catalog::{CachedAnswer, Catalog, Snapshot};
use crate::edge::Response;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::rollout::Rollout;
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;

pub const MAX_BATCH: usize = 32;

/// The channel of a check that names none.
pub(super) const DEFAULT_CHANNEL: &str = "stable";

/// `GET /v1/keys`: the current keyset envelope.
pub fn keys(catalog: &Catalog) -> Response {
    keyset_reply(catalog.load().keyset_json.clone())
}

/// `GET /v1/keys/{version}`: a keyset of the rotation chain.
pub fn keys_at(catalog: &Catalog, version: &str) -> Response {
    let Ok(version) = version.parse::<u64>() else {
        return ApiError::not_found(
            "unknown_keyset_version",
            format!("{version:?} is not a keyset version; versions are whole numbers from 1"),
        )
        .into_response();
    };
    match catalog.keyset_at(version) {
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
    }
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
    /// The statement the answer is built on (see the catalog).
    pub statement: u64,
    /// Where the catalog keeps this whole answer once written.
    pub cached: &'a OnceLock<CachedAnswer>,
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
        statement: resolved.statement,
        cached: resolved.answer,
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

/// `GET /v1/updates/{product}/{version}?channel=&last_day=`: the hot path,
/// answered from the snapshot with the whole answer cached per statement
/// and offer, and counted for adoption when it is the app's first check of
/// the day.
#[allow(clippy::too_many_arguments)]
pub fn check(
    catalog: &Catalog,
    rollout: &Rollout,
    metrics: &Metrics,
    product: &str,
    version: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Response {
    let q = match CheckQuery::parse(query) {
        Ok(q) => q,
        Err(e) => {
            metrics.check("error");
            return e.into_response();
        }
    };
    let channel = q.channel.as_deref().unwrap_or(DEFAULT_CHANNEL);
    let snap = catalog.load();
    let answer = match resolve(&snap, product, version, channel, ip) {
        Ok(a) => a,
        Err(e) => {
            metrics.check("error");
            return e.into_response();
        }
    };
    metrics.check(if answer.offer.is_some() {
        "update"
    } else {
        "none"
    });
    rollout.checked(product, channel, version, q.last_day);
    respond(&answer, rollout.today(), headers)
}

/// The answer to a check resolved to `answer` on `day`: 304 when the app
/// holds it, else the cached whole answer, rebuilt when it was built on
/// an earlier day.
fn respond(answer: &Answer<'_>, day: u32, headers: &HeaderMap) -> Response {
    if let Some(tags) = if_none_match(headers) {
        let etag = etag(answer.statement, answer.seq, day);
        if names(tags, &etag) {
            let mut resp = Response::new(crate::edge::body::Body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            set_cache_headers(resp.headers_mut(), etag);
            return resp;
        }
    }
    let build = || {
        let mut headers = hyper::HeaderMap::with_capacity(3);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        set_cache_headers(&mut headers, etag(answer.statement, answer.seq, day));
        CachedAnswer {
            day,
            body: whole_answer(answer, day),
            headers,
        }
    };
    let cached = answer.cached.get_or_init(build);
    // A statement made yesterday is replaced at midnight; until then its
    // answers are built with today's day.
    let fresh;
    let cached = if cached.day == day {
        cached
    } else {
        fresh = build();
        &fresh
    };
    let mut resp = Response::new(crate::edge::body::Body::Full(cached.body.clone()));
    *resp.headers_mut() = cached.headers.clone();
    resp
}

/// The check's query: `channel` and `last_day`; other parameters are
/// ignored, as caches and app versions add their own. Either named twice
/// is a 400.
#[derive(Default)]
struct CheckQuery<'q> {
    channel: Option<Cow<'q, str>>,
    last_day: Option<u32>,
}

impl<'q> CheckQuery<'q> {
    fn parse(query: Option<&'q str>) -> Result<Self, ApiError> {
        let mut q = CheckQuery::default();
        let Some(query) = query else {
            return Ok(q);
        };
        if !query.bytes().any(|b| b == b'%' || b == b'+') {
            // What apps send: nothing to decode, nothing to allocate (a byte
            // scan: a char-set `contains` decodes UTF-8 char by char).
            for pair in query.split('&') {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                q.take(key, Cow::Borrowed(value))?;
            }
        } else {
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                q.take(&key, value)?;
            }
        }
        Ok(q)
    }

    fn take(&mut self, key: &str, value: Cow<'q, str>) -> Result<(), ApiError> {
        let twice = match key {
            "channel" => self.channel.replace(value).is_some(),
            "last_day" => self.last_day.replace(last_day(&value)?).is_some(),
            _ => false,
        };
        if twice {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("{key} is given twice; send it once"),
            ));
        }
        Ok(())
    }
}

/// A `last_day` as apps send it back: the whole number an earlier answer
/// gave. One past any day number is kept as the largest, which counts as
/// "in the future" (answered, not counted).
pub(super) fn last_day(value: &str) -> Result<u32, ApiError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "bad_last_day",
            format!(
                "last_day {:?} is not a day number; send back the \"day\" of your last answer (a whole number), or leave it out",
                value.chars().take(40).collect::<String>()
            ),
        ));
    }
    // By hand (the hot path): any run of digits is a day, capped.
    let day = value.bytes().fold(0u64, |d, b| {
        d.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    Ok(day.min(u64::from(u32::MAX)) as u32)
}

/// The `If-None-Match` value, if any: one pass over the few headers an app
/// sends is cheaper than a lookup.
fn if_none_match(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .iter()
        .find_map(|(name, value)| (name == header::IF_NONE_MATCH).then_some(value))
}

/// True when a list of entity tags names `etag` (or is `*`).
fn names(tags: &HeaderValue, etag: &HeaderValue) -> bool {
    tags.as_bytes() == etag.as_bytes()
        || tags
            .as_bytes()
            .split(|&b| b == b',')
            .map(|t| t.trim_ascii())
            .any(|t| t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag.as_bytes())
}

/// `{"update":…,"freshness":…}`, exactly sized: `Bytes` then takes the
/// buffer as it is.
fn whole_answer(answer: &Answer<'_>, day: u32) -> Bytes {
    let mut day_text = itoa::Buffer::new();
    let day_text = day_text.format(day).as_bytes();
    let mut len = 2 + DAY_KEY.len() + day_text.len();
    put_answer(&mut |text: &[u8]| len += text.len(), answer);
    let mut body = Vec::with_capacity(len);
    body.push(b'{');
    put_answer(&mut |text: &[u8]| body.extend_from_slice(text), answer);
    body.extend_from_slice(DAY_KEY);
    body.extend_from_slice(day_text);
    body.push(b'}');
    Bytes::from(body)
}

/// Every check answer ends with the server's day number.
pub(super) const DAY_KEY: &[u8] = b",\"day\":";

/// Names the answer's bytes: its statement (re-signed freshness, or a
/// changed product, makes a new one), the offered release and the day.
/// Hex written by hand: `format!` costs more than the rest of the check.
fn etag(statement: u64, seq: u64, day: u32) -> HeaderValue {
    fn hex(out: &mut [u8; 48], at: &mut usize, n: u64) {
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            out[*at] = b"0123456789abcdef"[(n >> (i * 4)) as usize & 0xf];
            *at += 1;
        }
    }
    // On the stack, then copied once into an exactly sized buffer.
    let mut tag = [b'"'; 48];
    let mut at = 1;
    hex(&mut tag, &mut at, statement);
    tag[at] = b'-';
    at += 1;
    hex(&mut tag, &mut at, seq);
    tag[at] = b'-';
    at += 1;
    hex(&mut tag, &mut at, u64::from(day));
    HeaderValue::from_bytes(&tag[..=at]).expect("hex and quotes are valid header bytes")
}

/// Rollout answers differ per client address, so only the client may cache.
fn set_cache_headers(h: &mut HeaderMap, etag: HeaderValue) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60"),
    );
    h.insert(header::ETAG, etag);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::testing::{signer, stored};

    fn body(resp: Response) -> serde_json::Value {
        match resp.into_body() {
            crate::edge::body::Body::Full(bytes) => serde_json::from_slice(&bytes).unwrap(),
            crate::edge::body::Body::Stream(_) => panic!("a check answers in one piece"),
        }
    }

    #[test]
    fn an_answer_cached_yesterday_is_rebuilt_with_todays_day() {
        let (signer, key) = signer();
        let catalog = Catalog::new(signer, String::new());
        catalog.replace(vec![stored(&key, "1.1.0", 1, 10_000)]);
        let snap = catalog.load_full();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let answer = resolve(&snap, "P", "1.0.0", "stable", ip).unwrap();
        let none = HeaderMap::new();

        let today = respond(&answer, 20_424, &none);
        let etag = today.headers()[header::ETAG].clone();
        assert_eq!(body(today)["day"], 20_424);
        // Past midnight, the same statement (still cached) answers with the new day.
        let tomorrow = respond(&answer, 20_425, &none);
        assert_ne!(tomorrow.headers()[header::ETAG], etag);
        assert_eq!(body(tomorrow)["day"], 20_425);
        // Yesterday's tag is no longer the answer the app holds.
        let mut held = HeaderMap::new();
        held.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(respond(&answer, 20_425, &held).status(), StatusCode::OK);
    }

    #[test]
    fn etags_are_quoted_lowercase_hex() {
        for (g, s, d) in [
            (0, 0, 0),
            (1, 0x1f, 20_424),
            (0xabc, 7, 1),
            (u64::MAX, u64::MAX, u32::MAX),
        ] {
            let want = format!("\"{g:x}-{s:x}-{d:x}\"");
            assert_eq!(super::etag(g, s, d).to_str().unwrap(), want);
        }
    }
}
