//! A small HTTP/2 client for one provider origin: a few long-lived
//! connections (TLS with ALPN `h2` for `https`, prior-knowledge h2c for
//! `http` fakes), many concurrent streams on each, requests spread round
//! robin, a dead connection replaced by the next send that needs it.
//!
//! Why not reqwest (or hyper's client): per request reqwest parses the URL,
//! clones header maps and goes through its pool, and hyper spawns a task
//! to stream each request body, whose wake-up makes the connection write
//! every request on its own (~1 `writev` per notification). A fan-out sends
//! millions of nearly identical requests, so the senders build them from
//! prepared parts and queue headers and body on the `h2` stream at once;
//! the connection task then writes many requests per syscall.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::dial;
use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use h2::client::SendRequest;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{HeaderMap, Request, StatusCode, Uri};
use tokio_rustls::TlsConnector;

/// Longest response body read (provider answers are a few hundred bytes).
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// A PING this often; a connection whose PONG is this late is dropped.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// One connection's request handle, and whether its task has ended.
#[derive(Clone)]
struct Conn {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A provider's answer.
pub(crate) struct Answered {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answered {
    /// The body as text (provider error bodies are JSON).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// Why a request got no answer: a short `code` (counted by jobs and
/// `/metrics`) and the words for a person. Transient for a push send.
#[derive(Debug)]
pub(crate) struct H2Error {
    pub code: &'static str,
    pub words: String,
}

impl H2Error {
    pub fn new(code: &'static str, words: impl Into<String>) -> Self {
        H2Error {
            code,
            words: words.into(),
        }
    }

    pub fn transport(e: impl std::fmt::Display) -> Self {
        H2Error::new("transport", e.to_string())
    }

    /// What a push send that got no answer comes to: try again later.
    pub fn into_retry(self, provider: &str) -> super::SendOutcome {
        super::SendOutcome::retry(self.code, format!("{provider}: {}", self.words))
    }
}

impl std::fmt::Display for H2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.words)
    }
}

pub(crate) struct H2Settings<'a> {
    /// The provider, for log lines: `APNs`, `FCM`.
    pub name: &'static str,
    pub base_url: &'a str,
    /// PEM certificates trusted besides the web PKI roots.
    pub extra_roots_pem: Option<&'a [u8]>,
    pub connections: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

struct Slot {
    conn: Mutex<Option<Conn>>,
    /// Held while (re)connecting, so a burst of sends opens one connection.
    connecting: tokio::sync::Mutex<()>,
}

pub(crate) struct H2Client {
    name: &'static str,
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing slash (usually empty).
    base_path: String,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    connect_timeout: Duration,
    request_timeout: Duration,
    connects: AtomicUsize,
    /// Set by a failed connect, cleared by a good one: one warning per
    /// burst of failures, not one per send.
    failing: AtomicBool,
}

impl H2Client {
    pub fn new(settings: &H2Settings<'_>) -> anyhow::Result<Self> {
        let uri: Uri = settings
            .base_url
            .parse()
            .with_context(|| format!("base_url {:?} is not a URL", settings.base_url))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| anyhow!("base_url {:?} has no scheme", settings.base_url))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| anyhow!("base_url {:?} has no host", settings.base_url))?;
        let tls = if scheme == Scheme::HTTPS {
            Some(dial::tls_connector(settings.extra_roots_pem, &[b"h2"])?)
        } else if scheme == Scheme::HTTP {
            None
        } else {
            bail!("base_url {:?}: only https and http", settings.base_url);
        };
        let port = authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let slots = (0..settings.connections.max(1))
            .map(|_| Slot {
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            })
            .collect();
        Ok(H2Client {
            name: settings.name,
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            host,
            port,
            tls,
            slots,
            next: AtomicUsize::new(0),
            connect_timeout: settings.connect_timeout,
            request_timeout: settings.request_timeout,
            connects: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// `scheme://authority{base path}{path}`.
    pub fn uri(&self, path: &str) -> Result<Uri, String> {
        let mut full = String::with_capacity(self.base_path.len() + path.len());
        full.push_str(&self.base_path);
        full.push_str(path);
        let path = PathAndQuery::from_maybe_shared(Bytes::from(full))
            .map_err(|e| format!("not a valid request path: {e}"))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| format!("not a valid request URI: {e}"))
    }

    /// Connections opened so far (tests: reuse, reconnection).
    #[cfg(test)]
    fn connects(&self) -> usize {
        self.connects.load(Ordering::Relaxed)
    }

    /// `POST uri` (from [`H2Client::uri`]) with `headers` and `body`.
    pub async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answered, H2Error> {
        let mut request = Request::new(());
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        self.send(request, body).await
    }

    /// Sends `request` (whose URI comes from [`H2Client::uri`]) with `body`
    /// and reads the whole answer, within the request timeout. A request
    /// refused by a connection that was closing is sent again on a fresh
    /// one (it never reached the provider).
    async fn send(&self, request: Request<()>, body: Bytes) -> Result<Answered, H2Error> {
        match tokio::time::timeout(self.request_timeout, self.exchange(request, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(H2Error::new(
                "timeout",
                format!("no answer within {} s", self.request_timeout.as_secs()),
            )),
        }
    }

    async fn exchange(&self, request: Request<()>, body: Bytes) -> Result<Answered, H2Error> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut conn = self.conn(index).await?;
        let mut sender = match conn.sender.clone().ready().await {
            Ok(sender) => sender,
            Err(_) => {
                // Closed or going away before this request was sent: the
                // provider never saw it, so a fresh connection gets it.
                self.forget(index, &conn);
                conn = self.conn(index).await?;
                conn.sender
                    .clone()
                    .ready()
                    .await
                    .map_err(H2Error::transport)?
            }
        };
        let (response, mut stream) = sender
            .send_request(request, false)
            .map_err(H2Error::transport)?;
        stream.send_data(body, true).map_err(H2Error::transport)?;
        let response = response.await.map_err(H2Error::transport)?;
        let (parts, mut body) = response.into_parts();
        let mut read = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk =
                chunk.map_err(|e| H2Error::new("transport", format!("response cut off: {e}")))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if read.len() + chunk.len() > MAX_RESPONSE_BODY {
                return Err(H2Error::new(
                    "transport",
                    format!("response body over {MAX_RESPONSE_BODY} bytes"),
                ));
            }
            read.extend_from_slice(&chunk);
        }
        Ok(Answered {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(read),
        })
    }

    /// The slot's live connection, opened when it has none.
    async fn conn(&self, index: usize) -> Result<Conn, H2Error> {
        let slot = &self.slots[index];
        if let Some(live) = self.live(slot) {
            return Ok(live);
        }
        // Boxed: connecting (TCP, TLS, the h2 handshake) is a future of
        // several KiB, and unboxed it would be part of every send's future,
        // which the fan-out moves around per token.
        Box::pin(self.open(slot)).await
    }

    /// Opens the slot's connection, unless another send just did.
    async fn open(&self, slot: &Slot) -> Result<Conn, H2Error> {
        let _connecting = slot.connecting.lock().await;
        if let Some(live) = self.live(slot) {
            return Ok(live); // another send connected while we waited
        }
        let conn = match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.failed(e)),
            Err(_) => {
                let words = format!(
                    "cannot connect: {}:{} did not answer within {} s",
                    self.host,
                    self.port,
                    self.connect_timeout.as_secs()
                );
                return Err(self.failed(H2Error::new("connect_timeout", words)));
            }
        };
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(provider = self.name, host = %self.host, "connected to the provider again");
        }
        *slot.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// A failed connect: warned about once per burst (sends retry, and
    /// every one would log the same line).
    fn failed(&self, e: H2Error) -> H2Error {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(provider = self.name, code = e.code, error = %e, "cannot connect to the provider; sends are retried and failures counted in their jobs");
        }
        e
    }

    fn live(&self, slot: &Slot) -> Option<Conn> {
        let guard = slot.conn.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// Drops the slot's connection if it is still `dead`.
    fn forget(&self, index: usize, dead: &Conn) {
        let mut guard = self.slots[index]
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if guard
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.closed, &dead.closed))
        {
            *guard = None;
        }
    }

    async fn connect(&self) -> Result<Conn, H2Error> {
        let tcp = dial::tcp(&self.host, self.port).await?;
        let conn = match &self.tls {
            Some(tls) => {
                let stream = dial::tls(tls, &self.host, tcp).await?;
                let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                if alpn.as_deref() != Some(b"h2") {
                    let spoke = alpn.map_or("no protocol".to_owned(), |p| {
                        String::from_utf8_lossy(&p).into_owned()
                    });
                    return Err(H2Error::new(
                        "not_http2",
                        format!(
                            "{}:{} does not speak HTTP/2 (it chose {spoke} over TLS); the provider API needs HTTP/2: check base_url",
                            self.host, self.port
                        ),
                    ));
                }
                self.handshake(stream).await?
            }
            None => self.handshake(tcp).await?,
        };
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// HTTP/2 over `io`; the connection runs in its own task, which PINGs
    /// it every [`KEEP_ALIVE`] and drops it when a PONG is late.
    async fn handshake<T>(&self, io: T) -> Result<Conn, H2Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| {
                let words = format!(
                    "HTTP/2 handshake with {}:{} failed: {e}",
                    self.host, self.port
                );
                H2Error::new("not_http2", words)
            })?;
        let mut ping = connection.ping_pong().expect("taken once, here");
        let closed = Arc::new(AtomicBool::new(false));
        let (host, done) = (self.host.clone(), closed.clone());
        tokio::spawn(async move {
            let keep_alive = async {
                loop {
                    tokio::time::sleep(KEEP_ALIVE).await;
                    match tokio::time::timeout(PING_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("PING failed: {e}"),
                        Err(_) => return format!("no PONG within {} s", PING_TIMEOUT.as_secs()),
                    }
                }
            };
            let why = tokio::select! {
                ended = &mut connection => match ended {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                },
                why = keep_alive => why,
            };
            done.store(true, Ordering::Release);
            tracing::debug!(host = %host, why = %why, "provider connection ended");
        });
        Ok(Conn { sender, closed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;

    /// An h2c server answering 200 with the request path, until aborted
    /// (its connections go with it).
    async fn serve(listener: TcpListener) {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            conns.spawn(async move {
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(path)),
                        ))
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    }

    fn client(addr: std::net::SocketAddr, connections: usize) -> H2Client {
        H2Client::new(&H2Settings {
            name: "test",
            base_url: &format!("http://{addr}/base/"),
            extra_roots_pem: None,
            connections,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    /// A fan-out moves each send's future a few times (into the provider's
    /// box, into the worker's set): connecting must stay out of it. With
    /// the connect path inline, a send's future was twice the bound.
    #[test]
    fn a_send_future_does_not_carry_the_connect_path() {
        let client = client("127.0.0.1:1".parse().unwrap(), 1);
        let send = client.post(client.uri("/x").unwrap(), HeaderMap::new(), Bytes::new());
        let size = std::mem::size_of_val(&send);
        assert!(size < 3 * 1024, "a send's future is {size} bytes");
    }

    async fn get(client: &H2Client, path: &str) -> Result<Answered, H2Error> {
        let mut request = Request::new(());
        *request.uri_mut() = client.uri(path).unwrap();
        client.send(request, Bytes::from_static(b"x")).await
    }

    #[tokio::test]
    async fn connections_are_reused_and_replaced_when_the_server_drops_them() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let client = client(addr, 2);
        for i in 0..10 {
            let answer = get(&client, &format!("/{i}")).await.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.body, format!("/base/{i}"));
        }
        assert_eq!(client.connects(), 2, "10 requests on the 2 connections");

        server.abort();
        let _ = server.await;
        let listener = TcpListener::bind(addr).await.unwrap();
        let _server = tokio::spawn(serve(listener));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..4 {
            assert_eq!(
                get(&client, &format!("/{i}")).await.unwrap().status,
                StatusCode::OK
            );
        }
        assert_eq!(client.connects(), 4, "both dead connections replaced once");
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_a_connect_error() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = get(&client(addr, 1), "/").await.err().unwrap();
        assert_eq!(err.code, "connect_refused", "{err}");
    }
}
