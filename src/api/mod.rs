//! The handlers, one module per area (updates, artifacts, admin, jobs,
//! push, ops), and the one place a [`Route`] meets its handler:
//! [`Api::answer_now`] for the routes answered from memory before the call
//! returns ([`Route::immediate`]), [`Api::answer`] for the rest. Each
//! handler gets the parts of [`Api`] it needs, not all of them.

pub(crate) mod admin;
mod artifacts;
pub mod auth;
pub mod batch;
mod docs;
pub(crate) mod jobs;
mod ops;
mod push;
pub mod range;
mod reports;
pub mod stats;
pub mod updates;

use crate::blob::BlobStore;
use crate::catalog::Catalog;
use crate::config::{Delivery, Settings};
use crate::edge::admission::Admission;
use crate::edge::body::{Body, BodyError, RequestBody};
use crate::edge::route::Route;
use crate::edge::Response;
use crate::error::ApiError;
use crate::fanout::worker::Fanout;
use crate::fanout::PushStore;
use crate::metrics::Metrics;
use crate::releases::Releases;
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::StatusCode;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use auth::Auth;

/// Largest JSON body any endpoint takes (a batch of 32 items or a release).
pub const MAX_JSON_BODY: u64 = 64 * 1024;

/// What the handlers share. Each field is one area's service; handlers
/// borrow the ones they need.
pub struct Api {
    pub catalog: Arc<Catalog>,
    pub releases: Arc<Releases>,
    pub blobs: Arc<dyn BlobStore>,
    pub push: Arc<dyn PushStore>,
    pub fanout: Arc<Fanout>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    /// For `/readyz` ("saturated") and `/metrics`.
    pub admission: Arc<Admission>,
    pub requests: Arc<crate::edge::log::RequestLog>,
    pub rollout: Arc<crate::rollout::Rollout>,
    pub limits: ApiLimits,
    /// The web console's sessions and cookie policy.
    pub console: crate::console::Console,
}

/// The settings handlers read.
#[derive(Clone, Debug)]
pub struct ApiLimits {
    pub max_artifact_bytes: u64,
    pub delivery: Delivery,
    pub presign_expiry: Duration,
    pub auto_notify: bool,
}

impl ApiLimits {
    pub fn from_settings(s: &Settings) -> Self {
        ApiLimits {
            max_artifact_bytes: s.server.max_artifact_bytes,
            delivery: s.blob.delivery,
            presign_expiry: Duration::from_secs(s.blob.s3.presign_expiry_secs),
            auto_notify: s.push.auto_notify,
        }
    }
}

/// A handler's future, owning what it reads; it hands the request body
/// back, so the edge can drain what the handler left unread.
pub type Later =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Response, RequestBody)> + Send>>;

impl Api {
    /// The answer to an immediate route (see [`Route::immediate`]).
    pub fn answer_now(
        &self,
        route: &Route<'_>,
        query: Option<&str>,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Response {
        match route {
            Route::Check { product, version } => updates::check(
                &self.catalog,
                &self.rollout,
                &self.metrics,
                product,
                version,
                query,
                headers,
                client,
            ),
            Route::Keys => updates::keys(&self.catalog),
            Route::KeysAt(version) => updates::keys_at(&self.catalog, version),
            Route::OpenApi => docs::openapi(),
            Route::Health => ops::health(),
            Route::Metrics => ops::metrics(self),
            other => ApiError::internal(format!("{} is not answered at once", other.name()))
                .into_response(),
        }
    }

    /// The answer to every other route. Admin routes are authenticated
    /// here, once, against the role the route table names.
    pub fn answer(
        self: &Arc<Self>,
        route: Route<'static>,
        parts: Parts,
        mut body: RequestBody,
        client: IpAddr,
    ) -> Later {
        let actor = match route.needs_role() {
            None => None,
            Some(role) => match self.auth.authenticate(&parts.headers, client, role) {
                Ok(actor) => Some(actor),
                Err(e) => return Box::pin(std::future::ready((e.into_response(), body))),
            },
        };
        let api = self.clone();
        Box::pin(async move {
            let b = &mut body;
            let resp = match (route, actor) {
                (Route::Batch, _) => {
                    batch::check_batch(&api.catalog, &api.rollout, &api.metrics, &parts, b, client)
                        .await
                }
                (Route::Report, _) => {
                    reports::report(&api.catalog, &api.rollout, &parts, b, client).await
                }
                (Route::Stats(product), Some(_)) => stats::stats(&api, &product, &parts).await,
                (
                    Route::Artifact {
                        product,
                        version,
                        head,
                    },
                    _,
                ) => artifacts::download(&api, &product, &version, head, &parts.headers).await,
                (Route::Subscribe, _) => push::subscribe(&*api.push, &parts, b).await,
                (Route::Unsubscribe, _) => push::unsubscribe(&*api.push, &parts, b).await,
                (Route::Ready, _) => Ok(ops::readiness(&api).await),
                (Route::Upload { product, version }, Some(actor)) => {
                    admin::upload(&api, &actor, &product, &version, &parts, b).await
                }
                (Route::Publish, Some(actor)) => admin::publish(&api, &actor, &parts, b).await,
                (Route::ListReleases, Some(_)) => admin::list(&api.releases, &parts).await,
                (Route::PatchRelease { product, version }, Some(actor)) => {
                    admin::patch(&api.releases, &actor, &product, &version, &parts, b).await
                }
                (Route::Audit, Some(_)) => admin::audit(&api.releases, &parts).await,
                (Route::Notify { product, version }, Some(actor)) => {
                    jobs::notify(&api, &actor, &product, &version, &parts, b).await
                }
                (Route::Job(id), Some(_)) => jobs::get(&*api.push, &id).await,
                (Route::CancelJob(id), Some(actor)) => jobs::cancel(&api, &actor, &id).await,
                (Route::Console(page), _) => {
                    Ok(crate::console::answer(&api, &page, &parts, b, client).await)
                }
                (route, _) => Err(ApiError::internal(format!(
                    "{} has no handler; this is a bug",
                    route.name()
                ))),
            };
            (resp.unwrap_or_else(ApiError::into_response), body)
        })
    }
}

/// A response with `body` and `Content-Type: application/json`.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut resp = Response::new(Body::Full(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `value` as a JSON response.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    json_response(status, serde_json::to_vec(value).expect("views serialize"))
}

/// Reads a JSON body of at most `limit` bytes announced as
/// `application/json`, naming the problem when there is one.
pub(crate) async fn read_json_body(
    headers: &HeaderMap,
    body: &mut RequestBody,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
    let len = content_length(headers)?;
    json_headers_ok(ct, len, limit)?;
    read_body(body, limit).await
}

/// The declared `Content-Length`, if any; a malformed one is a 400.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request("bad_header", "Content-Length is not a number of bytes")
            }),
    }
}

/// A JSON body is announced as JSON and not announced as too large.
pub(crate) fn json_headers_ok(
    ct: Option<&[u8]>,
    len: Option<u64>,
    limit: u64,
) -> Result<(), ApiError> {
    let is_json = ct.is_some_and(|c| {
        let essence = c.split(|&b| b == b';').next().unwrap_or(b"");
        essence
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/json")
    });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
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
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body exceeds {limit} bytes; send less"),
    )
}

/// The whole body, at most `limit` bytes.
pub(crate) async fn read_body(body: &mut RequestBody, limit: u64) -> Result<Bytes, ApiError> {
    body.read_to_end(limit).await.map_err(|e| match e {
        None => too_large(limit),
        Some(e) => body_error(e),
    })
}

/// A body that stopped arriving: the client's fault, said as such.
pub(crate) fn body_error(e: BodyError) -> ApiError {
    ApiError::bad_request("bad_body", format!("the body could not be read: {e}"))
}

/// A typed query string; a malformed one is a 400 that says so.
pub(crate) fn query<T: serde::de::DeserializeOwned>(parts: &Parts) -> Result<T, ApiError> {
    serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).map_err(|e| {
        ApiError::bad_request(
            "bad_query",
            format!(
                "the query string is not understood ({e}); see the API docs at /v1/openapi.yaml"
            ),
        )
    })
}

/// Parses JSON into `T`, with serde's own description of what is wrong.
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the JSON body is invalid: {e}")))
}

/// Product and version path parameters, validated.
pub(crate) fn check_names(product: &str, version: &str) -> Result<semver::Version, ApiError> {
    firmcast_signing::names::validate_product(product)
        .map_err(|e| ApiError::bad_request("bad_product", e.to_string()))?;
    firmcast_signing::names::parse_version(version)
        .map_err(|e| ApiError::bad_request("bad_version", e.to_string()))
}
