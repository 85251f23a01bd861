//! A tiny hyper server: HTTP/2-only over TLS (APNs) or HTTP/1.1 + h2c in
//! the clear (FCM), a handler over whole-body requests, stopped on drop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub(crate) type Resp = Response<Full<Bytes>>;
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Resp> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(Req) -> BoxFuture + Send + Sync>;

/// A request with its body read.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
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
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let req = Req {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                headers: parts.headers,
                body,
            };
            Ok::<_, Infallible>(handler(req).await)
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
                .max_concurrent_streams(1000)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
        Mode::Cleartext => {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    }
}
