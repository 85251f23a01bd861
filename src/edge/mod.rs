//! The edge: everything between a TCP connection and a handler, as small
//! named layers that every request passes in this order:
//!
//! 1. [`conn`]: the connection's watchdog (time to the first request head,
//!    idle time, graceful close) around hyper.
//! 2. [`client`]: the client address (the peer, or `X-Forwarded-For` from a
//!    trusted proxy).
//! 3. [`route`]: the route, from method and path, decided once.
//! 4. Request hygiene: an HTTP/1.1 request needs exactly one `Host`.
//! 5. [`admission`]: per-client rate and in-flight caps, the public and
//!    ops pools.
//! 6. [`crate::api::Api`]: the handler the route names, reading the body
//!    through [`body::RequestBody`] (deadline and minimum rate).
//! 7. [`body::Reply`]: the answer, draining an unread upload after it
//!    (lingering close); and [`log`]: the request log and per-route counts.

pub mod admission;
pub mod body;
pub mod client;
pub mod conn;
pub mod log;
pub mod route;

use crate::api::Api;
use crate::error::ApiError;
use admission::Admission;
use body::{BodyPace, Reply, RequestBody};
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, HOST};
use hyper::{Request, StatusCode, Version};
use ipnet::IpNet;
use route::{Class, NoRoute, Route};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a handler answers.
pub type Response = hyper::Response<body::Body>;

/// The edge's settings (from `[server]` and `[limits]`).
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    pub trusted_proxies: Vec<IpNet>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub pace: BodyPace,
}

impl EdgeSettings {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        EdgeSettings {
            trusted_proxies: s.server.trusted_proxies.clone(),
            header_timeout: Duration::from_secs(s.server.header_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(s.server.idle_timeout_secs.max(1)),
            pace: BodyPace {
                idle: secs(s.limits.body_read_timeout_secs),
                min_rate: s.limits.body_min_bytes_per_sec,
            },
        }
    }
}

/// Shared by every connection.
pub struct Edge {
    pub api: Arc<Api>,
    pub admission: Arc<Admission>,
    pub log: Arc<log::RequestLog>,
    pub settings: EdgeSettings,
}

/// One connection's hyper service: every request goes through [`Edge::handle`].
#[derive(Clone)]
pub(crate) struct Service {
    pub edge: Arc<Edge>,
    pub peer: SocketAddr,
    pub track: Arc<conn::ConnTrack>,
}

type Answered = Result<hyper::Response<Reply>, Infallible>;
type Handling =
    Either<std::future::Ready<Answered>, Pin<Box<dyn Future<Output = Answered> + Send>>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = hyper::Response<Reply>;
    type Error = Infallible;
    type Future = Handling;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.edge.handle(&self.track, self.peer, req)
    }
}

impl Edge {
    fn handle(
        self: &Arc<Self>,
        track: &Arc<conn::ConnTrack>,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Handling {
        track.started();
        // Timed only for the debug log: reading the clock is not free.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let route = match Route::parse(req.method(), req.uri().path()) {
            Ok(route) => route,
            Err(none) => return self.now(track, &req, None, started, no_route(none)),
        };
        if let Err(e) = one_host(&req) {
            return self.now(track, &req, Some(&route), started, e.into_response());
        }
        let client = client::resolve(peer.ip(), req.headers(), &self.settings.trusted_proxies);
        if route.immediate() {
            let resp = match route.class() {
                Class::Public => self.admission.rate(client).map_err(|r| r.0),
                Class::Ops => Ok(()),
            }
            .map_or_else(ApiError::into_response, |()| {
                self.api
                    .answer_now(&route, req.uri().query(), req.headers(), client)
            });
            return self.now(track, &req, Some(&route), started, resp);
        }
        let ticket = match self.admission.admit(route.class(), client) {
            Ok(ticket) => ticket,
            Err(refused) => {
                let resp = refused.0.into_response();
                return self.now(track, &req, Some(&route), started, resp);
            }
        };
        let route = route.into_owned();
        let (parts, incoming) = req.into_parts();
        let body = RequestBody::new(incoming, self.settings.pace);
        let edge = self.clone();
        let track = track.clone();
        Either::Right(Box::pin(async move {
            // HTTP/2 resets an unread stream cleanly; a client waiting for
            // `100 Continue` has sent nothing and needs no drain.
            let drains = parts.version <= Version::HTTP_11
                && parts.headers.get(hyper::header::EXPECT).is_none();
            let (method, uri, index) = (parts.method.clone(), parts.uri.clone(), route.index());
            let (resp, mut body) = edge.api.answer(route, parts, body, client).await;
            drop(ticket);
            if drains && body.unread() {
                body.drain().await;
            }
            edge.log
                .answered(Some(index), &method, uri.path(), resp.status(), started);
            let in_progress = body::InProgress(track);
            Ok(resp.map(|b| Reply::new(b).in_progress(in_progress)))
        }))
    }

    /// An answer made before the call returns.
    fn now(
        &self,
        track: &conn::ConnTrack,
        req: &Request<Incoming>,
        route: Option<&Route<'_>>,
        started: Option<Instant>,
        resp: Response,
    ) -> Handling {
        let index = route.map(Route::index);
        self.log.answered(
            index,
            req.method(),
            req.uri().path(),
            resp.status(),
            started,
        );
        // Its body is in memory and goes out at once: the request is done.
        track.finished();
        Either::Left(std::future::ready(Ok(resp.map(Reply::new))))
    }
}

/// RFC 9112 3.2: an HTTP/1.1 request carries exactly one `Host`.
fn one_host(req: &Request<Incoming>) -> Result<(), ApiError> {
    if req.version() != Version::HTTP_11 {
        return Ok(());
    }
    // One pass over the few headers a request has beats a lookup.
    match req
        .headers()
        .iter()
        .filter(|(name, _)| *name == HOST)
        .count()
    {
        1 => Ok(()),
        0 => Err(ApiError::bad_request(
            "bad_host",
            "an HTTP/1.1 request needs a Host header; send the server's name",
        )),
        _ => Err(ApiError::bad_request(
            "bad_host",
            "the request has more than one Host header; send exactly one",
        )),
    }
}

fn no_route(none: NoRoute) -> Response {
    match none {
        NoRoute::NotFound => ApiError::not_found(
            "not_found",
            "no such endpoint; see the API at /v1/openapi.yaml",
        )
        .into_response(),
        NoRoute::MethodNotAllowed { allow } => {
            let mut resp = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this endpoint takes {allow}"),
            )
            .into_response();
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            resp
        }
    }
}
