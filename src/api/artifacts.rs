//! Firmware downloads: whole or one range, streamed from the blob store in
//! large chunks; the ETag is the sha256 the release signed.

use super::range::{self, RangeRequest};
use super::{check_names, Api};
use crate::edge::body::Body;
use crate::edge::Response;
use crate::error::ApiError;
use futures_util::StreamExt;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;

/// A header as text, `None` when absent. Bytes beyond visible ASCII do not
/// make the request a 400: a Range the server cannot read is ignored and
/// such an If-Range never matches, so the client gets the whole file
/// (RFC 9110 14.2, 13.1.5).
fn lenient_header(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Whether a list of entity tags (`If-Match`, `If-None-Match`) names
/// `etag`; `*` names any. Weak tags compare by their opaque part: the
/// artifact's tag is its sha256, the same for every representation.
fn names_tag(headers: &HeaderMap, name: header::HeaderName, etag: &str) -> Option<bool> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(values.any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag.as_bytes()
        })
    }))
}

/// `GET|HEAD /v1/artifacts/{product}/{version}`.
pub async fn download(
    api: &Api,
    product: &str,
    version: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let version = check_names(product, version)?;
    let (sha256, size) = {
        let snap = api.catalog.load();
        let release = snap
            .product(product)
            .and_then(|p| p.release(&version))
            .ok_or_else(|| {
                ApiError::not_found("unknown_release", format!("no release {product} {version}"))
            })?;
        if release.stored.yanked {
            return Err(ApiError::new(
                StatusCode::GONE,
                "yanked",
                format!("{product} {version} was withdrawn; check for updates again"),
            ));
        }
        (
            release.manifest.artifact.sha256.clone(),
            release.manifest.artifact.size,
        )
    };
    let etag = format!("\"{sha256}\"");
    // Conditional requests (RFC 9110 13.2.2): If-Match first, then
    // If-None-Match; a resumed download's If-Range is read below.
    if names_tag(headers, header::IF_MATCH, &etag) == Some(false) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("{product} {version} now has ETag {etag}; download it again from the start"),
        ));
    }
    if names_tag(headers, header::IF_NONE_MATCH, &etag) == Some(true) {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        set_validators(&mut resp, &etag);
        return Ok(resp);
    }
    if api.limits.delivery == crate::config::Delivery::Redirect {
        if let Some(url) = api
            .blobs
            .presigned_url(&sha256, api.limits.presign_expiry)
            .await?
        {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::FOUND;
            let h = resp.headers_mut();
            let location = HeaderValue::from_str(&url)
                .map_err(|_| ApiError::internal("the presigned URL is not a valid header"))?;
            h.insert(header::LOCATION, location);
            // The URL expires: caches must not keep the redirect.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(resp);
        }
    }
    // A resumed download must be of the same bytes; otherwise send it all.
    let range_header = lenient_header(headers, header::RANGE);
    let range_header = match lenient_header(headers, header::IF_RANGE) {
        Some(tag) if tag != etag => None,
        _ => range_header,
    };
    let (status, span) = match range::parse(range_header.as_deref(), size) {
        RangeRequest::Full => (StatusCode::OK, 0..size),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeRequest::Unsatisfiable => {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the artifact has {size} bytes; request a range inside it"),
            );
            e.content_range = Some(format!("bytes */{size}"));
            return Err(e);
        }
    };
    let len = span.end - span.start;
    let mut resp = if head {
        Response::new(Body::empty())
    } else {
        let metrics = api.metrics.clone();
        let stream = api
            .blobs
            .get(&sha256, span.clone())
            .await?
            .inspect(move |chunk| {
                if let Ok(c) = chunk {
                    metrics.bytes_served(c.len() as u64);
                }
            });
        Response::new(Body::Stream(Box::pin(stream)))
    };
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    set_validators(&mut resp, &etag);
    let h = resp.headers_mut();
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = format!("bytes {}-{}/{size}", span.start, span.end - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("digits are a valid header"),
        );
    }
    Ok(resp)
}

/// Artifacts are immutable and named by their sha256: cache for ever.
fn set_validators(resp: &mut Response, etag: &str) {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
}
