//! The HTTP API: filters (nouns) per area, handlers (verbs) beside them.
//! Every area is `.boxed()` at its edge to keep compile times sane.

mod admin;
mod artifacts;
pub mod batch;
mod docs;
mod drain;
mod jobs;
mod ops;
mod push;
pub mod range;
pub mod updates;

use crate::blob::BlobStore;
use crate::catalog::Catalog;
use crate::config::{Role, Settings};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::StateStore;
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue};
use warp::reply::Response;
use warp::Filter;

/// Everything a handler may need, shared by all connections.
pub struct AppState {
    pub settings: Settings,
    pub catalog: Arc<Catalog>,
    pub state: Arc<dyn StateStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub push: Arc<dyn crate::fanout::PushStore>,
    pub fanout: Arc<crate::fanout::worker::Fanout>,
    pub metrics: Metrics,
    /// (name, role, sha256 of the token) from config.
    pub tokens: Vec<(String, Role, [u8; 32])>,
    /// Per-client rate limits and the global concurrency limit.
    pub limits: crate::limits::Limits,
}

pub type Shared = Arc<AppState>;

/// The client address, set by the accept loop on every request: the TCP
/// peer, or the right-most address in X-Forwarded-For that is not a trusted
/// proxy when the peer is one (see [`resolve_client`]).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

/// Largest JSON body any endpoint takes (a batch of 32 items or a release).
pub const MAX_JSON_BODY: u64 = 64 * 1024;

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    updates::routes(state.clone())
        .or(artifacts::routes(state.clone()))
        .unify()
        .or(admin::routes(state.clone()))
        .unify()
        .or(push::routes(state.clone()))
        .unify()
        .or(jobs::routes(state.clone()))
        .unify()
        .or(ops::routes(state))
        .unify()
        .or(docs::routes())
        .unify()
        .recover(crate::error::handle_rejection)
        .unify()
        .boxed()
}

pub(crate) fn with_state(
    state: Shared,
) -> impl Filter<Extract = (Shared,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The client address the accept loop resolved ([`ClientAddr`]).
pub(crate) fn client_ip() -> BoxedFilter<(IpAddr,)> {
    warp::ext::optional::<ClientAddr>()
        .map(|c: Option<ClientAddr>| c.map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0))
        .boxed()
}

pub fn resolve_client(peer: IpAddr, xff: Option<&str>, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(xff) = xff else { return peer };
    let mut client = peer;
    for hop in xff.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => break, // A forged or garbled hop: stop at the last good one.
        }
    }
    client
}

/// Reads a JSON body of at most `limit` bytes with a `application/json`
/// content type, naming the problem when there is one.
pub(crate) fn json_body(limit: u64) -> BoxedFilter<(Result<Bytes, ApiError>,)> {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            move |ct: Option<String>, len: Option<u64>, body| async move {
                json_headers_ok(ct.as_deref(), len, limit)?;
                read_limited(body, limit).await
            },
        )
        .boxed()
}

/// A JSON body is announced as JSON and not announced as too large.
pub(crate) fn json_headers_ok(
    ct: Option<&str>,
    len: Option<u64>,
    limit: u64,
) -> Result<(), ApiError> {
    let is_json = ct
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            warp::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    if len.is_some_and(|l| l > limit) {
        return Err(too_large(limit));
    }
    Ok(())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        warp::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body exceeds {limit} bytes; send less"),
    )
}

pub(crate) async fn read_limited<E: std::fmt::Display>(
    body: impl futures_util::Stream<Item = Result<impl bytes::Buf, E>>,
    limit: u64,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            ApiError::bad_request("bad_body", format!("the body could not be read: {e}"))
        })?;
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(too_large(limit));
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// A typed query string; a malformed one becomes a 400 from the handler
/// rather than a rejection that warp may merge into a misleading 405.
pub(crate) fn query<T: serde::de::DeserializeOwned + Send + 'static>(
) -> BoxedFilter<(Result<T, ApiError>,)> {
    warp::query::<T>()
        .map(Ok)
        .or(warp::any().map(|| {
            Err(ApiError::bad_request(
                "bad_query",
                "the query string has unknown or malformed parameters; see the API docs at /v1/openapi.yaml",
            ))
        }))
        .unify()
        .boxed()
}

/// Parses JSON into `T`, with serde's own description of what is wrong.
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the JSON body is invalid: {e}")))
}

pub(crate) fn json_response(status: warp::http::StatusCode, body: impl Into<Bytes>) -> Response {
    let mut resp = Response::new(body.into().into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Turns a handler's result into a response; errors become JSON.
pub(crate) fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(ApiError::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            resolve_client(outsider, Some("1.2.3.4"), &trusted),
            outsider
        );
        assert_eq!(
            resolve_client(peer, Some("1.2.3.4"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // A client-supplied left-most hop is ignored: the proxy appended the real one.
        assert_eq!(
            resolve_client(peer, Some("6.6.6.6, 1.2.3.4, 10.2.2.2"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve_client(peer, Some("garbage"), &trusted), peer);
        assert_eq!(resolve_client(peer, None, &trusted), peer);
    }
}
