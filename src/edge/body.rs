//! The bodies that cross the edge.
//!
//! - [`RequestBody`]: what a handler reads. It fails when the client sends
//!   nothing for `limits.body_read_timeout_secs`, or, once that long has
//!   passed, averages less than `limits.body_min_bytes_per_sec`: a client
//!   trickling a byte every few seconds cannot hold a slot for ever.
//! - [`Body`]: what a handler answers with: bytes, or a stream (downloads).
//! - [`Reply`]: the body hyper sends, holding the connection's count of
//!   requests in progress until the answer is gone.
//!
//! A handler that refuses a request before reading its body (a 401 before
//! an upload, a 507 half way) leaves the rest unread; the edge drains it
//! within a budget ([`RequestBody::drain`]) before answering, so a client
//! that sends its whole body before reading (Python's http.client) reads
//! the answer instead of a reset.

use bytes::{Buf, Bytes};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub use crate::blob::ByteStream;

/// Past these, a drain gives up and the connection is closed after the
/// answer.
const DRAIN_BYTES: u64 = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How fast a request body must arrive.
#[derive(Clone, Copy, Debug)]
pub struct BodyPace {
    /// Longest wait for the next bytes; also the grace period of `min_rate`.
    pub idle: Option<Duration>,
    /// Bytes per second averaged from the start, enforced after `idle`.
    pub min_rate: u64,
}

/// Why a request body stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Nothing arrived for this long.
    Idle(Duration),
    /// Slower than the minimum rate: (received, seconds, bytes per second).
    TooSlow {
        received: u64,
        secs: u64,
        min_rate: u64,
    },
    /// The connection failed (reset, malformed chunking, ...).
    Broken(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Idle(d) => write!(f, "no request body data for {} s", d.as_secs()),
            BodyError::TooSlow {
                received,
                secs,
                min_rate,
            } => write!(
                f,
                "the request body arrived too slowly ({received} bytes in {secs} s; at least {min_rate} bytes/s are needed)"
            ),
            BodyError::Broken(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BodyError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    Reading,
    Ended,
    Failed,
}

/// A request body under a pace (see the module docs).
pub struct RequestBody {
    inner: Option<Incoming>,
    pace: BodyPace,
    started: Instant,
    last: Instant,
    received: u64,
    /// Boxed: most bodies arrive with their head and never need a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    progress: Progress,
}

impl RequestBody {
    pub fn new(inner: Incoming, pace: BodyPace) -> Self {
        let now = Instant::now();
        let progress = if hyper::body::Body::is_end_stream(&inner) {
            Progress::Ended
        } else {
            Progress::Reading
        };
        RequestBody {
            inner: Some(inner),
            pace,
            started: now,
            last: now,
            received: 0,
            sleep: None,
            progress,
        }
    }

    /// A body with nothing in it (tests, internal requests).
    pub fn empty() -> Self {
        let now = Instant::now();
        RequestBody {
            inner: None,
            pace: BodyPace {
                idle: None,
                min_rate: 0,
            },
            started: now,
            last: now,
            received: 0,
            sleep: None,
            progress: Progress::Ended,
        }
    }

    /// Neither read to its end nor failed: what a lingering close drains.
    pub fn unread(&self) -> bool {
        self.progress == Progress::Reading
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk of data (trailers are skipped), `None` at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                self.progress = Progress::Ended;
                return Poll::Ready(None);
            };
            if self.progress != Progress::Reading {
                return Poll::Ready(None);
            }
            match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue; // trailers
                    };
                    self.received += data.remaining() as u64;
                    // The timer is re-armed lazily, when it fires.
                    self.last = Instant::now();
                    return Poll::Ready(Some(Ok(data.copy_to_bytes(data.remaining()))));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.progress = Progress::Failed;
                    return Poll::Ready(Some(Err(BodyError::Broken(e.to_string()))));
                }
                Poll::Ready(None) => {
                    self.progress = Progress::Ended;
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            let Some(idle) = self.pace.idle else {
                return Poll::Pending;
            };
            let deadline = self.deadline();
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            ready!(sleep.as_mut().poll(cx));
            // The timer fired: data since it was set moves the deadline on.
            let now = Instant::now();
            if now < deadline {
                sleep.as_mut().reset(deadline);
                continue;
            }
            self.progress = Progress::Failed;
            let error = if now.duration_since(self.last) >= idle {
                BodyError::Idle(idle)
            } else {
                BodyError::TooSlow {
                    received: self.received,
                    secs: now.duration_since(self.started).as_secs(),
                    min_rate: self.pace.min_rate,
                }
            };
            return Poll::Ready(Some(Err(error)));
        }
    }

    /// When the body fails unless more bytes come: `idle` after the last
    /// bytes, or when the average drops below `min_rate` (never before
    /// `idle` from the start).
    fn deadline(&self) -> Instant {
        let far = self.started + Duration::from_secs(86_400 * 365);
        let Some(idle) = self.pace.idle else {
            return far;
        };
        let by_idle = self.last.checked_add(idle).unwrap_or(far);
        if self.pace.min_rate == 0 {
            return by_idle;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.pace.min_rate as f64);
        let by_rate = self.started.checked_add(idle + earned).unwrap_or(far);
        by_idle.min(by_rate)
    }

    /// The next chunk.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The rest of the body as a stream, for a store that consumes it.
    pub fn stream(&mut self) -> ByteStream<'_> {
        Box::pin(futures_util::stream::poll_fn(move |cx| {
            self.poll_chunk(cx)
                .map(|c| c.map(|r| r.map_err(std::io::Error::other)))
        }))
    }

    /// Reads the whole body, failing with `Err(None)` once it passes `limit`
    /// bytes; a body that came in one piece (the usual small JSON) is taken
    /// as it is, without a copy.
    pub async fn read_to_end(&mut self, limit: u64) -> Result<Bytes, Option<BodyError>> {
        let Some(first) = self.chunk().await.transpose().map_err(Some)? else {
            return Ok(Bytes::new());
        };
        if first.len() as u64 > limit {
            return Err(None);
        }
        let Some(second) = self.chunk().await.transpose().map_err(Some)? else {
            return Ok(first);
        };
        let mut all = bytes::BytesMut::from(first);
        let mut next = Some(second);
        while let Some(chunk) = next {
            if all.len() as u64 + chunk.len() as u64 > limit {
                return Err(None);
            }
            all.extend_from_slice(&chunk);
            next = self.chunk().await.transpose().map_err(Some)?;
        }
        Ok(all.freeze())
    }

    /// Reads and discards what is left, within the drain budget; stops at
    /// the first error.
    pub async fn drain(&mut self) {
        let until = Instant::now() + DRAIN_TIME;
        let budget = self.received + DRAIN_BYTES;
        let discard = async {
            while self.received <= budget {
                match self.chunk().await {
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
        };
        let _ = tokio::time::timeout_at(until, discard).await;
    }
}

/// What a handler answers with.
pub enum Body {
    Full(Bytes),
    Stream(ByteStream<'static>),
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(Bytes::new())
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Full(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Body::Full(Bytes::from(b))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::Full(Bytes::from(s))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::Full(Bytes::from_static(s.as_bytes()))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

/// Held by an answer until hyper is done with it: counts the request as in
/// progress for the connection's idle timer.
pub struct InProgress(pub(super) std::sync::Arc<super::conn::ConnTrack>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// The body hyper sends (see the module docs).
pub struct Reply {
    body: Option<Body>,
    _in_progress: Option<InProgress>,
}

impl Reply {
    pub fn new(body: Body) -> Self {
        Reply {
            body: Some(body),
            _in_progress: None,
        }
    }

    pub fn in_progress(mut self, guard: InProgress) -> Self {
        self._in_progress = Some(guard);
        self
    }
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        match &mut this.body {
            Some(Body::Full(bytes)) => {
                let bytes = std::mem::take(bytes);
                this.body = None;
                if !bytes.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
            }
            Some(Body::Stream(stream)) => match ready!(stream.as_mut().poll_next(cx)) {
                Some(Ok(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Some(Err(e)) => {
                    this.body = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.body = None,
            },
            None => {}
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            None => true,
            Some(Body::Full(b)) => b.is_empty(),
            Some(Body::Stream(_)) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            None => SizeHint::with_exact(0),
            Some(Body::Full(b)) => SizeHint::with_exact(b.len() as u64),
            // The handler sets Content-Length where it knows it.
            Some(Body::Stream(_)) => SizeHint::new(),
        }
    }
}
