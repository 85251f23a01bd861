//! One connection's life: hyper serves it (HTTP/1.1 or HTTP/2, chosen by
//! hyper-util from the first bytes), and a watchdog closes it when it
//! misbehaves, whatever the protocol:
//!
//! - no request head within `server.header_read_timeout_secs` of the accept
//!   (a silent socket, or one that sent only the HTTP/2 preface): closed at
//!   once;
//! - no request in progress for `server.idle_timeout_secs`: closed
//!   gracefully (HTTP/2 GOAWAY; HTTP/1.1 simply closes between requests);
//! - the server stopping: closed gracefully, then dropped after the grace.
//!
//! The watchdog costs a request two relaxed atomic adds: it re-arms one
//! timer per connection lazily, looking at counters when it wakes, instead
//! of starting a timer per request.

use super::Edge;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How long a connection told to close gracefully may take to finish.
const CLOSING_GRACE: Duration = Duration::from_secs(10);

/// Requests of one connection: started so far, and in progress now.
#[derive(Default)]
pub struct ConnTrack {
    started: AtomicU64,
    active: AtomicU32,
}

impl ConnTrack {
    /// A request head arrived.
    pub fn started(&self) {
        self.started.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
    }

    /// Its answer is sent (or dropped).
    pub fn finished(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    fn look(&self) -> (u64, u32) {
        (self.started.load(Relaxed), self.active.load(Relaxed))
    }
}

/// hyper's connection settings, shared by every connection.
pub fn builder(h2_keep_alive: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // The watchdog bounds the time to a request head; hyper's own header
    // timer would start a timer per request and only after hyper-util has
    // seen enough bytes to pick a protocol.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // A peer that stopped answering (gone, or never speaking HTTP/2
        // beyond the preface) is found by PING.
        .keep_alive_interval(Some(h2_keep_alive))
        .keep_alive_timeout(h2_keep_alive / 2);
    builder
}

/// Serves one accepted connection until it ends, misbehaves or `stop`.
pub async fn serve(
    edge: Arc<Edge>,
    builder: Arc<Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let track = Arc::new(ConnTrack::default());
    let service = super::Service {
        edge: edge.clone(),
        peer,
        track: track.clone(),
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let stopped = stop.cancelled();
    let mut stopped = std::pin::pin!(stopped);
    let (header, idle) = (edge.settings.header_timeout, edge.settings.idle_timeout);
    let accepted = tokio::time::Instant::now();
    let watchdog = tokio::time::sleep(header.min(idle));
    let mut watchdog = std::pin::pin!(watchdog);
    let mut seen = 0;
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut stopped, if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
                watchdog.as_mut().reset(tokio::time::Instant::now() + CLOSING_GRACE);
            }
            () = &mut watchdog => {
                let (started, active) = track.look();
                let now = tokio::time::Instant::now();
                if closing {
                    tracing::debug!("connection still open after a graceful close; dropping it");
                    return;
                }
                if started == 0 && active == 0 {
                    if now < accepted + header {
                        watchdog.as_mut().reset(accepted + header);
                        continue;
                    }
                    tracing::debug!(
                        secs = header.as_secs(),
                        "no request head in time; closing the connection"
                    );
                    return;
                }
                if active > 0 || started != seen {
                    seen = started;
                    watchdog.as_mut().reset(now + idle);
                    continue;
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
                watchdog.as_mut().reset(now + CLOSING_GRACE);
            }
        }
    }
}
