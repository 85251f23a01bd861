//! A tiny hyper server: HTTP/2-only over TLS (APNs) or HTTP/1.1 + h2c in
//! the clear (FCM), a handler over whole-body requests, stopped on drop;
//! or a TLS endpoint that speaks HTTP/1.1 only (a misconfigured APNs).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{AsHeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub(crate) type Resp = Response<Full<Bytes>>;
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Resp> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(Req) -> Reply + Send + Sync>;

/// A handler's answer: most are ready at once (no boxed future, no extra
/// poll); a scripted delay answers later.
pub(crate) enum Reply {
    Now(Resp),
    Later(BoxFuture),
}

/// HTTP/2 settings of both fakes. Real APNs allows up to 1000 concurrent
/// streams per connection, and firmcast keeps up to `in_flight` (512 by
/// default) streams open on one connection; hyper's default is 200.
const MAX_CONCURRENT_STREAMS: u32 = 1000;
/// Bodies are small (APNs: <= 4 KiB; FCM: a few KiB), so a 64 KiB stream
/// window never stalls a request, and a connection window of
/// `MAX_CONCURRENT_STREAMS` x 4 KiB lets every open stream send its whole
/// body at once while WINDOW_UPDATEs stay rare (one per 2 MiB read).
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// A request with its body read.
pub(crate) struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// A header's value when it is visible ASCII. Pass a `HeaderName`
    /// constant on hot paths: a `&str` is parsed into one on every call.
    pub fn header<K: AsHeaderName>(&self, name: K) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

const JSON_UTF8: HeaderValue = HeaderValue::from_static("application/json; charset=UTF-8");

/// A JSON answer from bytes already serialized.
pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON_UTF8);
    resp
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Resp {
    json_bytes(status, body.to_string().into_bytes())
}

/// Where a fake's server runs; dropping it stops the server and its
/// connections.
pub(crate) struct Server {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) enum Mode {
    /// TLS with ALPN `h2`, HTTP/2 only (APNs).
    Http2OverTls(TlsAcceptor),
    /// TLS that never negotiates `h2`, HTTP/1.1 only, every request refused:
    /// an endpoint behind a proxy without HTTP/2. Like an HTTP/1.1 server,
    /// it selects `http/1.1` when offered and no protocol otherwise (rather
    /// than failing the handshake), so an h2-only client gets as far as a
    /// finished handshake before it must give up.
    Http1OverTls {
        /// ALPN `http/1.1`.
        http1: Arc<rustls::ServerConfig>,
        /// No ALPN.
        plain: Arc<rustls::ServerConfig>,
    },
    /// Plain TCP, HTTP/1.1 or prior-knowledge HTTP/2.
    Cleartext,
}

pub(crate) fn spawn(
    listener: TcpListener,
    mode: Mode,
    handler: Handler,
) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let mode = Arc::new(mode);
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    counter.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(serve_connection(tcp, mode.clone(), handler.clone()));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(Server {
        addr,
        connections,
        task,
    })
}

async fn serve_connection(tcp: tokio::net::TcpStream, mode: Arc<Mode>, handler: Handler) {
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = if body.is_end_stream() {
                Bytes::new()
            } else {
                match body.collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => Bytes::new(),
                }
            };
            let req = Req {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body,
            };
            Ok::<_, Infallible>(match handler(req) {
                Reply::Now(resp) => resp,
                Reply::Later(fut) => fut.await,
            })
        }
    });
    match &*mode {
        Mode::Http2OverTls(acceptor) => {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return; // APNs speaks HTTP/2 only
            }
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
        Mode::Http1OverTls { http1, plain } => {
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(Default::default(), tcp);
            let Ok(start) = acceptor.await else {
                return;
            };
            let offers_http1 = start
                .client_hello()
                .alpn()
                .is_some_and(|mut alpn| alpn.any(|p| p == b"http/1.1"));
            let config = if offers_http1 { http1 } else { plain };
            let Ok(tls) = start.into_stream(config.clone()).await else {
                return;
            };
            let refuse = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
                let mut resp = Response::new(Full::new(Bytes::from_static(
                    b"HTTP/2 is required; this endpoint speaks HTTP/1.1 only\n",
                )));
                *resp.status_mut() = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), refuse)
                .await;
        }
        Mode::Cleartext => {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW);
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        }
    }
}
