//! Overload protection at the edge, before any handler runs:
//!
//! - a per-client token bucket for the public endpoints (`/v1/updates*`,
//!   `/v1/artifacts*`, `/v1/keys`, `/v1/push/*`, and anything else that is
//!   not admin or ops): IPv4 by address, IPv6 by /64 (the same key as rollout
//!   bucketing, [`crate::catalog::rollout::client_key`]); over the limit is a
//!   429 with `Retry-After`;
//! - a global concurrency limit (a semaphore): when every slot is taken the
//!   answer is an immediate 503 with `Retry-After`, never a queue;
//!   a slot is held until the handler has produced the response head, so
//!   uploads count for their whole body but a streamed download only until
//!   its bytes start flowing;
//! - an idle timeout on request bodies (hyper has a header read timeout but
//!   none for bodies), so a stalled upload cannot hold a slot for ever.
//!
//! Admin endpoints (`/v1/admin/*`) are authenticated, so they skip the
//! per-client bucket but count towards the global limit. `/healthz`,
//! `/readyz` and `/metrics` are exempt from both, so probes keep answering
//! under overload.
//!
//! Privacy: the bucket map holds a keyed hash (SipHash, a random key per
//! process) of the client key, never the address itself; it is memory only
//! and never logged. Memory is bounded: the map is sharded, each shard has a
//! fixed capacity, and a full shard first drops idle entries (whose bucket
//! has refilled, so forgetting them changes nothing), then the least recently
//! seen eighth. At the default million clients it is at most about 36 MB
//! (16 bytes an entry in hash tables at most half empty).

use crate::config::LimitsSettings;
use crate::error::ApiError;
use siphasher::sip::SipHasher13;
use std::collections::HashMap;
use std::future::Future as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::http::StatusCode;
use warp::reply::Response;

const SHARDS: usize = 64;

/// Which limits apply to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Probes and metrics: never limited.
    Exempt,
    /// Authenticated: the global limit only.
    Admin,
    /// Everything else: per client and global.
    Public,
}

pub fn classify(path: &str) -> Class {
    match path {
        "/healthz" | "/readyz" | "/metrics" => Class::Exempt,
        p if p == "/v1/admin" || p.starts_with("/v1/admin/") => Class::Admin,
        _ => Class::Public,
    }
}

/// The limiters, shared by all connections.
pub struct Limits {
    rate: Option<RateLimiter>,
    in_flight: Option<Arc<Semaphore>>,
    max_in_flight: usize,
    body_read_timeout: Option<Duration>,
}

/// Why a request was turned away: a 429 or 503 with `Retry-After`.
#[derive(Debug)]
pub struct Refused(ApiError);

impl Refused {
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.0.retry_after
    }

    pub fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// Held while a request is being handled; dropping it frees the slot.
pub struct Admitted {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Limits {
    pub fn new(s: &LimitsSettings) -> Self {
        let rate = (s.per_ip_rps > 0.0 && s.max_tracked_clients > 0).then(|| {
            RateLimiter::new(
                s.per_ip_rps,
                s.per_ip_burst.max(1) as f64,
                s.max_tracked_clients,
            )
        });
        let in_flight = (s.max_in_flight > 0).then(|| Arc::new(Semaphore::new(s.max_in_flight)));
        Limits {
            rate,
            in_flight,
            max_in_flight: s.max_in_flight,
            body_read_timeout: (s.body_read_timeout_secs > 0)
                .then(|| Duration::from_secs(s.body_read_timeout_secs)),
        }
    }

    /// Decides whether a request to `path` from `client` may proceed: the
    /// per-client bucket first (cheap, and an abuser does not take a global
    /// slot), then a global slot. `Err` is the response to send instead.
    pub fn admit(&self, path: &str, client: IpAddr) -> Result<Admitted, Refused> {
        let class = classify(path);
        if class == Class::Exempt {
            return Ok(Admitted { _permit: None });
        }
        if class == Class::Public {
            if let Some(rate) = &self.rate {
                if let Err(wait) = rate.check(client) {
                    let mut e = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!("too many requests from your network; retry after {wait} s"),
                    );
                    e.retry_after = Some(wait);
                    return Err(Refused(e));
                }
            }
        }
        let permit = match &self.in_flight {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let mut e = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        format!(
                            "the server is handling its maximum of {} requests; retry shortly",
                            self.max_in_flight
                        ),
                    );
                    e.retry_after = Some(1);
                    return Err(Refused(e));
                }
            },
        };
        Ok(Admitted { _permit: permit })
    }

    /// The idle timeout for request bodies, if any.
    pub fn body_read_timeout(&self) -> Option<Duration> {
        self.body_read_timeout
    }

    /// Requests being handled now (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .as_ref()
            .map_or(0, |s| self.max_in_flight - s.available_permits())
    }

    /// Clients the rate limiter tracks now.
    pub fn tracked_clients(&self) -> usize {
        self.rate.as_ref().map_or(0, RateLimiter::len)
    }
}

/// Keys are already SipHash outputs: hash them no further.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | *b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, Bucket, BuildHasherDefault<IdentityHasher>>;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f32,
    /// Milliseconds since the limiter started.
    last_ms: u32,
}

/// A token bucket per client in a fixed-capacity sharded map.
pub struct RateLimiter {
    shards: Vec<Mutex<Map>>,
    shard_capacity: usize,
    rate_per_ms: f64,
    burst: f64,
    /// Time after which an untouched bucket is full again.
    refill_ms: u32,
    keys: (u64, u64),
    epoch: Instant,
}

impl RateLimiter {
    pub fn new(rps: f64, burst: f64, max_clients: usize) -> Self {
        let shards = SHARDS.min(max_clients.max(1));
        RateLimiter {
            shards: (0..shards).map(|_| Mutex::new(Map::default())).collect(),
            shard_capacity: (max_clients / shards).max(1),
            rate_per_ms: rps / 1000.0,
            burst,
            refill_ms: ((burst / rps) * 1000.0).ceil().min(u32::MAX as f64) as u32,
            keys: rand::random(),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u32 {
        // Wraps after 49 days; a wrapped bucket just looks idle and refills.
        self.epoch.elapsed().as_millis() as u32
    }

    fn hash(&self, ip: IpAddr) -> u64 {
        let (key, len) = crate::catalog::rollout::client_key(ip);
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(&key[..len]);
        h.write_u8(len as u8);
        h.finish()
    }

    /// Takes a token for `ip`, or says how many seconds until one is there.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.check_at(ip, self.now_ms())
    }

    pub fn check_at(&self, ip: IpAddr, now_ms: u32) -> Result<(), u64> {
        let key = self.hash(ip);
        let shard = &self.shards[(key >> 58) as usize % self.shards.len()];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get_mut(&key) {
            let elapsed = now_ms.wrapping_sub(b.last_ms) as f64;
            let tokens = (b.tokens as f64 + elapsed * self.rate_per_ms).min(self.burst);
            b.last_ms = now_ms;
            if tokens >= 1.0 {
                b.tokens = (tokens - 1.0) as f32;
                return Ok(());
            }
            b.tokens = tokens as f32;
            let wait_ms = (1.0 - tokens) / self.rate_per_ms;
            return Err(((wait_ms / 1000.0).ceil() as u64).max(1));
        }
        if map.len() >= self.shard_capacity {
            self.evict(&mut map, now_ms);
        }
        map.insert(
            key,
            Bucket {
                tokens: (self.burst - 1.0) as f32,
                last_ms: now_ms,
            },
        );
        Ok(())
    }

    /// Frees room in a full shard: idle entries first (their buckets are
    /// full, so forgetting them is lossless), then the least recently seen
    /// eighth, so eviction is amortised over many inserts.
    fn evict(&self, map: &mut Map, now_ms: u32) {
        let refill = self.refill_ms;
        map.retain(|_, b| now_ms.wrapping_sub(b.last_ms) < refill);
        let target = self.shard_capacity - self.shard_capacity / 8;
        if map.len() < target.max(1) {
            return;
        }
        let mut ages: Vec<u32> = map
            .values()
            .map(|b| now_ms.wrapping_sub(b.last_ms))
            .collect();
        let drop = (map.len() - target).max(1);
        // The `drop`-th oldest age: everything at least this old goes.
        let idx = ages.len() - drop;
        let (_, cutoff, _) = ages.select_nth_unstable(idx);
        let cutoff = *cutoff;
        map.retain(|_, b| now_ms.wrapping_sub(b.last_ms) < cutoff);
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.shard_capacity * self.shards.len()
    }
}

/// A request body that fails when no data arrives for `timeout`: hyper's
/// `header_read_timeout` covers only the head, so without this a client
/// could trickle an upload (and hold a slot) indefinitely.
pub struct TimeoutBody<B> {
    /// Unboxed (hyper's body is `Unpin`): one allocation less per request.
    inner: B,
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimeoutBody<B> {
    pub fn new(inner: B, timeout: Option<Duration>) -> Self {
        TimeoutBody {
            inner,
            timeout,
            sleep: None,
        }
    }
}

#[derive(Debug)]
pub struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no request body data for {} s",
            self.0.as_secs_f64().round()
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl<B> hyper::body::Body for TimeoutBody<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(timeout) = this.timeout else {
                    return Poll::Pending;
                };
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.sleep = None;
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn paths_are_classified() {
        assert_eq!(classify("/healthz"), Class::Exempt);
        assert_eq!(classify("/readyz"), Class::Exempt);
        assert_eq!(classify("/metrics"), Class::Exempt);
        assert_eq!(classify("/v1/admin/releases"), Class::Admin);
        assert_eq!(classify("/v1/admin/jobs/x"), Class::Admin);
        assert_eq!(classify("/v1/adminx"), Class::Public);
        assert_eq!(classify("/v1/updates/P/1.0.0"), Class::Public);
        assert_eq!(classify("/v1/artifacts/P/1.0.0"), Class::Public);
        assert_eq!(classify("/v1/keys"), Class::Public);
        assert_eq!(classify("/v1/push/subscriptions"), Class::Public);
        assert_eq!(classify("/nowhere"), Class::Public);
    }

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let rl = RateLimiter::new(2.0, 3.0, 100);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(rl.check_at(a, 0).is_ok());
        }
        assert_eq!(rl.check_at(a, 0), Err(1));
        // 2 per second: one token after 500 ms, two after a second.
        assert!(rl.check_at(a, 400).is_err());
        assert!(rl.check_at(a, 1000).is_ok());
        assert!(rl.check_at(a, 1000).is_ok());
        assert!(rl.check_at(a, 1000).is_err());
        // Never more than the burst after a long idle time.
        for _ in 0..3 {
            assert!(rl.check_at(a, 60_000).is_ok());
        }
        assert!(rl.check_at(a, 60_000).is_err());
    }

    #[test]
    fn retry_after_is_the_wait_for_one_token() {
        let rl = RateLimiter::new(0.1, 1.0, 100); // one per 10 s
        let a = ip("192.0.2.1");
        assert!(rl.check_at(a, 0).is_ok());
        assert_eq!(rl.check_at(a, 0), Err(10));
        assert_eq!(rl.check_at(a, 5_000), Err(5));
    }

    #[test]
    fn ipv4_by_address_and_ipv6_by_slash_64() {
        let rl = RateLimiter::new(1.0, 1.0, 1000);
        // IPv4: each address its own bucket, even neighbours.
        assert!(rl.check_at(ip("198.51.100.1"), 0).is_ok());
        assert!(rl.check_at(ip("198.51.100.1"), 0).is_err());
        assert!(rl.check_at(ip("198.51.100.2"), 0).is_ok());
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert!(rl.check_at(ip("::ffff:198.51.100.2"), 0).is_err());
        // IPv6: one bucket per /64, whatever the interface id.
        assert!(rl.check_at(ip("2001:db8:1:2::1"), 0).is_ok());
        assert!(rl
            .check_at(ip("2001:db8:1:2:ffff:eeee:dddd:cccc"), 0)
            .is_err());
        assert!(rl.check_at(ip("2001:db8:1:3::1"), 0).is_ok());
        // An IPv6 /64 whose first bytes equal an IPv4 address is not that address.
        assert!(rl.check_at(ip("c633:6402::1"), 0).is_ok()); // 198.51.100.2 as hex
    }

    #[test]
    fn memory_stays_bounded_under_a_million_addresses() {
        let cap = 50_000;
        let rl = RateLimiter::new(20.0, 40.0, cap);
        let mut peak = 0;
        for i in 0..1_000_000u32 {
            // All active within the refill window: idle eviction alone cannot help.
            let now = i / 1000;
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(rl.check_at(a, now).is_ok(), "a new client gets its burst");
            if i % 50_000 == 0 {
                peak = peak.max(rl.len());
            }
        }
        let len = rl.len();
        assert!(len <= cap, "{len} tracked > capacity {cap}");
        assert!(peak <= cap, "peak {peak} > capacity {cap}");
        assert!(len >= cap / 2, "eviction keeps most of the map: {len}");
        // The most recent client is still tracked (its bucket is not reset).
        let last = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 999_999));
        for _ in 0..39 {
            assert!(rl.check_at(last, 999).is_ok());
        }
        assert!(rl.check_at(last, 999).is_err());
    }

    #[test]
    fn idle_clients_are_dropped_first() {
        let rl = RateLimiter::new(10.0, 10.0, 64); // one per shard
        let a = IpAddr::from([192, 0, 2, 1]);
        for _ in 0..10 {
            rl.check_at(a, 0).unwrap();
        }
        // Fill far past capacity much later: a's bucket would have refilled.
        for i in 0..10_000u32 {
            let b = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            let _ = rl.check_at(b, 10_000);
        }
        assert!(rl.len() <= rl.capacity());
    }

    #[test]
    fn global_limit_answers_503_at_once_and_frees_on_drop() {
        let limits = Limits::new(&LimitsSettings {
            per_ip_rps: 0.0,
            per_ip_burst: 1,
            max_in_flight: 1,
            max_tracked_clients: 10,
            body_read_timeout_secs: 0,
        });
        let a = ip("192.0.2.1");
        let first = limits.admit("/v1/admin/releases", a).ok().unwrap();
        let busy = limits.admit("/v1/keys", a).err().unwrap();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.retry_after(), Some(1));
        let resp = busy.into_response();
        assert!(resp.headers().contains_key("retry-after"));
        // Probes still answer.
        assert!(limits.admit("/healthz", a).is_ok());
        drop(first);
        assert!(limits.admit("/v1/keys", a).is_ok());
    }

    #[test]
    fn admin_paths_skip_the_per_client_bucket() {
        let limits = Limits::new(&LimitsSettings {
            per_ip_rps: 0.001,
            per_ip_burst: 1,
            max_in_flight: 0,
            max_tracked_clients: 10,
            body_read_timeout_secs: 0,
        });
        let a = ip("192.0.2.1");
        assert!(limits.admit("/v1/keys", a).is_ok());
        let limited = limits.admit("/v1/keys", a).err().unwrap();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(limited.retry_after().unwrap() >= 1);
        let resp = limited.into_response();
        assert!(resp.headers().contains_key("retry-after"));
        for _ in 0..10 {
            assert!(limits.admit("/v1/admin/releases", a).is_ok());
            assert!(limits.admit("/metrics", a).is_ok());
        }
    }
}
