//! Firmware downloads: whole or one range, streamed from the blob store in
//! large chunks; the ETag is the sha256 the release signed.

use super::range::{self, RangeRequest};
use super::{with_state, Shared};
use crate::error::ApiError;
use futures_util::StreamExt;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "artifacts" / String / String)
        .and(warp::get().or(warp::head()).unify())
        .and(warp::method())
        .and(lenient_header("range"))
        .and(lenient_header("if-range"))
        .and(with_state(state))
        .then(
            |product, version, method, range, if_range, state| async move {
                download(method, product, version, range, if_range, state)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        )
        .boxed()
}

/// A header as text, `None` when absent. Unlike `warp::header::optional`,
/// bytes beyond visible ASCII do not reject the request with a 400: a Range
/// the server cannot read is ignored and such an If-Range never matches, so
/// the client gets the whole file (RFC 9110 14.2, 13.1.5).
fn lenient_header(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(move |h: warp::http::HeaderMap| {
        h.get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    })
}

async fn download(
    method: Method,
    product: String,
    version: String,
    range_header: Option<String>,
    if_range: Option<String>,
    state: Shared,
) -> Result<Response, ApiError> {
    firmcast_signing::names::validate_product(&product)
        .map_err(|e| ApiError::bad_request("bad_product", e.to_string()))?;
    let version = firmcast_signing::names::parse_version(&version)
        .map_err(|e| ApiError::bad_request("bad_version", e.to_string()))?;
    let (sha256, size) = {
        let snap = state.catalog.load();
        let release = snap
            .product(&product)
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
    if state.settings.blob.delivery == crate::config::Delivery::Redirect {
        let expiry = std::time::Duration::from_secs(state.settings.blob.s3.presign_expiry_secs);
        if let Some(url) = state.blobs.presigned_url(&sha256, expiry).await? {
            let mut resp = Response::new(bytes::Bytes::new().into());
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
    let etag = format!("\"{sha256}\"");
    // A resumed download must be of the same bytes; otherwise send it all.
    let range_header = match if_range {
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
    let mut resp = if method == Method::HEAD {
        Response::new(bytes::Bytes::new().into())
    } else {
        let metrics = state.clone();
        let stream = state
            .blobs
            .get(&sha256, span.clone())
            .await?
            .inspect(move |chunk| {
                if let Ok(c) = chunk {
                    metrics.metrics.bytes_served(c.len() as u64);
                }
            });
        warp::Reply::into_response(warp::reply::stream(sync_wrapper::SyncStream::new(stream)))
    };
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = format!("bytes {}-{}/{size}", span.start, span.end - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("digits are a valid header"),
        );
    }
    Ok(resp)
}
