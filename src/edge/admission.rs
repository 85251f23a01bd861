//! Admission: whether a request may start, decided before any handler runs.
//!
//! - A per-client token bucket on the public routes (IPv4 by address, IPv6
//!   by /64: the key of rollout bucketing,
//!   [`crate::catalog::rollout::client_key`]); over it, 429 with
//!   `Retry-After`.
//! - A per-client cap on requests in flight (every class), so a few
//!   addresses trickling bodies cannot take every slot; over it, 429.
//! - Two pools of slots: `public` (`limits.max_in_flight`) and a small
//!   `ops` pool for admin calls, probes and metrics, so operators can act
//!   while the public pool is full. A full pool answers 503 with
//!   `Retry-After` at once, never a queue, and `/readyz` says "saturated".
//!
//! A slot is held until the handler has produced the response head: an
//! upload holds it for its whole body, a download only until its bytes
//! start flowing. The update check is answered before its call returns, so
//! it takes no slot at all, only a token.
//!
//! Privacy: the client table holds a keyed hash (SipHash, a random key per
//! process) of the client key, never the address itself; it is memory only
//! and never logged. Memory is bounded: the table is sharded, each shard has
//! a fixed capacity, and a full shard first drops idle entries (whose bucket
//! has refilled and which hold no request, so forgetting them changes
//! nothing), then the least recently seen eighth of those holding no request.

use super::route::Class;
use crate::config::LimitsSettings;
use crate::error::ApiError;
use hyper::StatusCode;
use siphasher::sip::SipHasher13;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const SHARDS: usize = 64;

/// The limiters, shared by all connections.
pub struct Admission {
    clients: ClientTable,
    /// Tokens per client per second on public routes; 0 = no rate limit.
    rate_on: bool,
    /// Requests one client may have in flight; 0 = no cap.
    per_client: u16,
    public: Pool,
    ops: Pool,
}

/// Slots of one class: a counter and its ceiling (0 = unlimited).
struct Pool {
    in_flight: AtomicUsize,
    max: usize,
}

impl Pool {
    fn new(max: usize) -> Self {
        Pool {
            in_flight: AtomicUsize::new(0),
            max,
        }
    }

    fn take(&self) -> bool {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.max > 0 && before >= self.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give_back(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn full(&self) -> bool {
        self.max > 0 && self.in_flight.load(Ordering::Acquire) >= self.max
    }
}

/// Why a request was turned away: a 429 or 503 with `Retry-After`.
#[derive(Debug)]
pub struct Refused(pub ApiError);

impl Refused {
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.0.retry_after
    }
}

/// Held while a request is being handled; dropping it frees its slots.
pub struct Ticket {
    admission: Arc<Admission>,
    client: Option<u64>,
    class: Class,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.client {
            self.admission.clients.leave(key);
        }
        self.admission.pool(self.class).give_back();
    }
}

impl Admission {
    pub fn new(s: &LimitsSettings) -> Self {
        let rate_on = s.per_ip_rps > 0.0;
        Admission {
            clients: ClientTable::new(
                s.per_ip_rps.max(0.0),
                s.per_ip_burst.max(1) as f64,
                s.max_tracked_clients.max(1),
            ),
            rate_on,
            per_client: s.max_in_flight_per_client.min(u16::MAX as usize) as u16,
            public: Pool::new(s.max_in_flight),
            ops: Pool::new(s.max_in_flight_ops),
        }
    }

    fn pool(&self, class: Class) -> &Pool {
        match class {
            Class::Public => &self.public,
            Class::Ops => &self.ops,
        }
    }

    /// The per-client rate alone, for a public request answered before its
    /// call returns (it holds no slot).
    pub fn rate(&self, client: IpAddr) -> Result<(), Refused> {
        if !self.rate_on {
            return Ok(());
        }
        match self.clients.enter(client, self.clients.now_ms(), true, 0) {
            Ok(_) => Ok(()),
            Err(why) => Err(why.refusal()),
        }
    }

    /// Admits a request that will take time: the per-client rate (public
    /// routes), a per-client slot, then a slot in its class's pool. `Err`
    /// is the answer to send instead.
    pub fn admit(self: &Arc<Self>, class: Class, client: IpAddr) -> Result<Ticket, Refused> {
        let rate = self.rate_on && class == Class::Public;
        let tracked = if rate || self.per_client > 0 {
            let now = self.clients.now_ms();
            match self.clients.enter(client, now, rate, self.per_client) {
                Ok(key) => key,
                Err(why) => return Err(why.refusal()),
            }
        } else {
            None
        };
        if !self.pool(class).take() {
            if let Some(key) = tracked {
                self.clients.leave(key);
            }
            let (what, max) = match class {
                Class::Public => ("requests", self.public.max),
                Class::Ops => ("operations requests", self.ops.max),
            };
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("the server is handling its maximum of {max} {what}; retry shortly"),
            );
            e.retry_after = Some(1);
            return Err(Refused(e));
        }
        Ok(Ticket {
            admission: self.clone(),
            client: tracked,
            class,
        })
    }

    /// True when the public pool has no free slot: `/readyz` says so, and a
    /// load balancer sends new clients elsewhere.
    pub fn saturated(&self) -> bool {
        self.public.full()
    }

    /// Requests holding a slot now, public and ops.
    pub fn in_flight(&self) -> (usize, usize) {
        (
            self.public.in_flight.load(Ordering::Acquire),
            self.ops.in_flight.load(Ordering::Acquire),
        )
    }

    /// Clients the table tracks now.
    pub fn tracked_clients(&self) -> usize {
        self.clients.len()
    }
}

/// Why one client was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// Out of tokens: seconds until the next one.
    Rate(u64),
    /// Already this many requests in flight.
    InFlight(u16),
}

impl Over {
    fn refusal(self) -> Refused {
        let (code, message, wait) = match self {
            Over::Rate(wait) => (
                "rate_limited",
                format!("too many requests from your network; retry after {wait} s"),
                wait,
            ),
            Over::InFlight(n) => (
                "too_many_in_flight",
                format!(
                    "your network already has {n} requests in progress here; wait for them to finish, then retry"
                ),
                1,
            ),
        };
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        e.retry_after = Some(wait);
        Refused(e)
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

type Map = HashMap<u64, Entry, BuildHasherDefault<IdentityHasher>>;

#[derive(Clone, Copy)]
struct Entry {
    tokens: f32,
    /// Milliseconds since the table started.
    last_ms: u32,
    in_flight: u16,
}

/// Per client: a token bucket and a count of requests in flight, in a
/// fixed-capacity sharded map. Also the throttle of failed admin logins
/// (`crate::api::auth`), with its own table.
pub struct ClientTable {
    shards: Vec<Mutex<Map>>,
    shard_capacity: usize,
    rate_per_ms: f64,
    burst: f64,
    /// Time after which an untouched bucket is full again.
    refill_ms: u32,
    keys: (u64, u64),
    epoch: Instant,
}

impl ClientTable {
    /// `rps` tokens a second up to `burst`, for at most `max_clients`.
    pub fn new(rps: f64, burst: f64, max_clients: usize) -> Self {
        let shards = SHARDS.min(max_clients.max(1));
        let refill_ms = if rps > 0.0 {
            ((burst / rps) * 1000.0).ceil().min(u32::MAX as f64) as u32
        } else {
            0
        };
        ClientTable {
            shards: (0..shards).map(|_| Mutex::new(Map::default())).collect(),
            shard_capacity: (max_clients / shards).max(1),
            rate_per_ms: rps / 1000.0,
            burst,
            refill_ms,
            keys: rand::random(),
            epoch: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u32 {
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

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Map> {
        let shard = &self.shards[(key >> 58) as usize % self.shards.len()];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a token for `ip`, or says how many seconds until one is there.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.check_at(ip, self.now_ms())
    }

    pub fn check_at(&self, ip: IpAddr, now_ms: u32) -> Result<(), u64> {
        match self.enter(ip, now_ms, true, 0) {
            Ok(_) => Ok(()),
            Err(Over::Rate(wait)) => Err(wait),
            Err(Over::InFlight(_)) => unreachable!("no cap asked for"),
        }
    }

    /// Whether `ip` has a token now, without taking it.
    pub fn has_token(&self, ip: IpAddr) -> bool {
        let (key, now) = (self.hash(ip), self.now_ms());
        let map = self.shard(key);
        map.get(&key).is_none_or(|e| self.refilled(e, now) >= 1.0)
    }

    fn refilled(&self, e: &Entry, now_ms: u32) -> f64 {
        let elapsed = now_ms.wrapping_sub(e.last_ms) as f64;
        (e.tokens as f64 + elapsed * self.rate_per_ms).min(self.burst)
    }

    /// One request from `ip` at `now_ms`: a token when `rate`, and a slot
    /// under `cap` when it is above 0. Returns the key to [`leave`] with
    /// when a slot was taken.
    ///
    /// [`leave`]: ClientTable::leave
    fn enter(&self, ip: IpAddr, now_ms: u32, rate: bool, cap: u16) -> Result<Option<u64>, Over> {
        let key = self.hash(ip);
        let mut map = self.shard(key);
        if !map.contains_key(&key) && map.len() >= self.shard_capacity {
            self.evict(&mut map, now_ms);
        }
        let e = map.entry(key).or_insert(Entry {
            tokens: self.burst as f32,
            last_ms: now_ms,
            in_flight: 0,
        });
        if rate {
            let tokens = self.refilled(e, now_ms);
            e.last_ms = now_ms;
            if tokens < 1.0 {
                e.tokens = tokens as f32;
                let wait_ms = (1.0 - tokens) / self.rate_per_ms;
                return Err(Over::Rate(((wait_ms / 1000.0).ceil() as u64).max(1)));
            }
            e.tokens = (tokens - 1.0) as f32;
        } else {
            e.last_ms = now_ms;
        }
        if cap == 0 {
            return Ok(None);
        }
        if e.in_flight >= cap {
            return Err(Over::InFlight(e.in_flight));
        }
        e.in_flight += 1;
        Ok(Some(key))
    }

    fn leave(&self, key: u64) {
        let mut map = self.shard(key);
        if let Some(e) = map.get_mut(&key) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    /// Frees room in a full shard: idle entries first (bucket refilled, no
    /// request in flight: forgetting them is lossless), then the least
    /// recently seen eighth, so eviction is amortised over many inserts.
    /// An entry with requests in flight is never dropped.
    fn evict(&self, map: &mut Map, now_ms: u32) {
        let refill = self.refill_ms;
        map.retain(|_, e| e.in_flight > 0 || now_ms.wrapping_sub(e.last_ms) < refill);
        let target = self.shard_capacity - self.shard_capacity / 8;
        if map.len() < target.max(1) {
            return;
        }
        let mut ages: Vec<u32> = map
            .values()
            .filter(|e| e.in_flight == 0)
            .map(|e| now_ms.wrapping_sub(e.last_ms))
            .collect();
        if ages.is_empty() {
            return;
        }
        let drop = (map.len() - target).clamp(1, ages.len());
        // The `drop`-th oldest age: everything idle at least this old goes.
        let idx = ages.len() - drop;
        let (_, cutoff, _) = ages.select_nth_unstable(idx);
        let cutoff = *cutoff;
        map.retain(|_, e| e.in_flight > 0 || now_ms.wrapping_sub(e.last_ms) < cutoff);
    }

    /// Clients tracked now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn settings() -> LimitsSettings {
        LimitsSettings {
            per_ip_rps: 0.0,
            per_ip_burst: 1,
            max_in_flight: 0,
            max_in_flight_per_client: 0,
            max_in_flight_ops: 0,
            max_tracked_clients: 1000,
            body_read_timeout_secs: 0,
            body_min_bytes_per_sec: 0,
        }
    }

    impl ClientTable {
        fn tracks(&self, ip: IpAddr) -> bool {
            let key = self.hash(ip);
            self.shard(key).contains_key(&key)
        }

        fn capacity(&self) -> usize {
            self.shard_capacity * self.shards.len()
        }
    }

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let rl = ClientTable::new(2.0, 3.0, 100);
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
        let rl = ClientTable::new(0.1, 1.0, 100); // one per 10 s
        let a = ip("192.0.2.1");
        assert!(rl.check_at(a, 0).is_ok());
        assert_eq!(rl.check_at(a, 0), Err(10));
        assert_eq!(rl.check_at(a, 5_000), Err(5));
    }

    #[test]
    fn ipv4_by_address_and_ipv6_by_slash_64() {
        let rl = ClientTable::new(1.0, 1.0, 1000);
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
        let rl = ClientTable::new(20.0, 40.0, cap);
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
        let rl = ClientTable::new(10.0, 10.0, 64); // one per shard
        let a = ip("192.0.2.1");
        for _ in 0..10 {
            rl.check_at(a, 0).unwrap();
        }
        assert!(rl.check_at(a, 0).is_err(), "a has spent its burst");
        // Much later a's bucket has refilled: forgetting it loses nothing,
        // so it goes before any client seen within the refill window.
        let busy = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000));
        for _ in 0..10 {
            rl.check_at(busy, 10_000).unwrap();
        }
        for i in 1..10_000u32 {
            let b = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            let _ = rl.check_at(b, 10_000);
        }
        assert!(rl.len() <= rl.capacity());
        assert!(!rl.tracks(a), "the idle client was evicted");
        // Eviction never resets a bucket that was kept: busy is either
        // still out of tokens or forgotten, never refilled by mistake.
        if rl.tracks(busy) {
            assert!(rl.check_at(busy, 10_000).is_err());
        }
    }

    #[test]
    fn clients_with_requests_in_flight_are_never_evicted() {
        let mut s = settings();
        s.max_in_flight_per_client = 2;
        s.max_tracked_clients = 64; // one per shard
        let adm = Arc::new(Admission::new(&s));
        let a = ip("192.0.2.1");
        let held = [
            adm.admit(Class::Public, a).unwrap(),
            adm.admit(Class::Public, a).unwrap(),
        ];
        for i in 0..10_000u32 {
            let b = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            drop(adm.admit(Class::Public, b));
        }
        assert!(adm.clients.tracks(a));
        let refused = adm.admit(Class::Public, a).err().unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.0.code, "too_many_in_flight");
        drop(held);
        assert!(adm.admit(Class::Public, a).is_ok());
    }

    #[test]
    fn the_per_client_cap_leaves_room_for_everyone_else() {
        let mut s = settings();
        s.max_in_flight = 10;
        s.max_in_flight_per_client = 3;
        let adm = Arc::new(Admission::new(&s));
        let slow: Vec<IpAddr> = (1..=3).map(|i| ip(&format!("203.0.113.{i}"))).collect();
        let mut held = Vec::new();
        for c in &slow {
            for _ in 0..5 {
                if let Ok(t) = adm.admit(Class::Public, *c) {
                    held.push(t);
                }
            }
        }
        assert_eq!(held.len(), 9, "three each");
        assert_eq!(adm.in_flight(), (9, 0));
        assert!(!adm.saturated());
        let other = adm.admit(Class::Public, ip("198.51.100.1")).unwrap();
        assert!(adm.saturated(), "the tenth slot is taken");
        assert_eq!(adm.tracked_clients(), 4);
        let full = adm.admit(Class::Public, ip("198.51.100.2")).err().unwrap();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.retry_after(), Some(1));
        drop(other);
        assert!(!adm.saturated());
    }

    #[test]
    fn operators_have_their_own_pool() {
        let mut s = settings();
        s.max_in_flight = 1;
        s.max_in_flight_ops = 2;
        let adm = Arc::new(Admission::new(&s));
        let a = ip("192.0.2.1");
        let _public = adm.admit(Class::Public, a).unwrap();
        assert!(adm.admit(Class::Public, a).is_err(), "public pool full");
        let ops = [
            adm.admit(Class::Ops, a).unwrap(),
            adm.admit(Class::Ops, a).unwrap(),
        ];
        let busy = adm.admit(Class::Ops, a).err().unwrap();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.0.message.contains("operations"), "{}", busy.0.message);
        drop(ops);
        assert!(adm.admit(Class::Ops, a).is_ok());
    }

    #[test]
    fn operators_skip_the_rate_but_not_the_per_client_cap() {
        let mut s = settings();
        s.per_ip_rps = 0.001;
        s.per_ip_burst = 1;
        let adm = Arc::new(Admission::new(&s));
        let a = ip("192.0.2.1");
        assert!(adm.rate(a).is_ok());
        let limited = adm.rate(a).err().unwrap();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(limited.retry_after().unwrap() >= 1);
        assert!(adm.admit(Class::Public, a).is_err());
        for _ in 0..10 {
            assert!(adm.admit(Class::Ops, a).is_ok());
        }
    }

    #[test]
    fn has_token_peeks_without_spending() {
        let t = ClientTable::new(1.0 / 60.0, 2.0, 100);
        let a = ip("192.0.2.9");
        assert!(t.has_token(a));
        assert!(t.check(a).is_ok());
        assert!(t.has_token(a));
        assert!(t.has_token(a));
        assert!(t.check(a).is_ok());
        assert!(!t.has_token(a));
        assert!(t.check(a).is_err());
    }

    #[test]
    fn without_limits_nothing_is_tracked_and_nothing_is_full() {
        // No rate and no caps: every request is admitted, no client is
        // remembered (memory), and the server never calls itself saturated.
        let adm = Arc::new(Admission::new(&settings()));
        let held: Vec<Ticket> = (0..1_000u32)
            .map(|i| {
                let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i % 4));
                adm.admit(Class::Public, client).unwrap()
            })
            .collect();
        assert_eq!(adm.in_flight(), (1_000, 0));
        assert!(!adm.saturated(), "an unlimited pool is never full");
        assert_eq!(adm.tracked_clients(), 0);
        drop(held);
        assert_eq!(adm.in_flight(), (0, 0));
    }

    #[test]
    fn a_rate_limited_client_is_told_how_long_to_wait() {
        let mut s = settings();
        s.per_ip_rps = 0.1; // one per 10 s
        let adm = Arc::new(Admission::new(&s));
        let a = ip("192.0.2.1");
        assert!(adm.rate(a).is_ok());
        let refused = adm.rate(a).err().unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.0.code, "rate_limited");
        assert_eq!(refused.retry_after(), Some(10));
        assert!(
            refused.0.message.contains("retry after 10 s"),
            "{}",
            refused.0.message
        );
    }

    #[test]
    fn a_spent_bucket_refills_on_the_clock() {
        let t = ClientTable::new(100.0, 1.0, 100);
        let a = ip("192.0.2.1");
        assert!(t.check(a).is_ok());
        assert!(t.check(a).is_err(), "the burst of one is spent");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while t.check(a).is_err() {
            assert!(
                Instant::now() < deadline,
                "no token 5 s after asking for 100 a second"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn client_keys_are_hashed_once_not_twice() {
        // The map's hasher passes the SipHash output through: distinct
        // clients keep distinct hashes (a constant hash would put a shard
        // in one bucket, every lookup a scan under its lock).
        let hash = |write: &dyn Fn(&mut IdentityHasher)| {
            let mut h = IdentityHasher::default();
            write(&mut h);
            h.finish()
        };
        assert_eq!(
            hash(&|h| h.write_u64(0x0123_4567_89ab_cdef)),
            0x0123_4567_89ab_cdef
        );
        assert_eq!(hash(&|h| h.write(&[0x12, 0x34, 0x56])), 0x12_3456);
        let t = ClientTable::new(1.0, 1.0, 100);
        let keys: std::collections::HashSet<u64> = (0..1_000u32)
            .map(|i| t.hash(IpAddr::from(std::net::Ipv4Addr::from(i))))
            .collect();
        assert_eq!(keys.len(), 1_000);
    }

    #[test]
    fn eviction_forgets_refilled_buckets_and_keeps_the_rest() {
        let t = ClientTable::new(10.0, 10.0, 512); // 64 shards of 8; refilled after 1 s
        assert_eq!((t.shard_capacity, t.refill_ms), (8, 1_000));
        let now = 10_000;
        let entry = |age: u32, in_flight: u16| Entry {
            tokens: 0.0,
            last_ms: now - age,
            in_flight,
        };
        let mut map = Map::default();
        // Refilled, so forgetting them loses nothing: exactly 1 s is refilled.
        for (key, age) in [(1, 1_000), (2, 5_000), (3, 9_000), (4, 10_000)] {
            map.insert(key, entry(age, 0));
        }
        // Seen within the last second, or with a request in flight.
        for (key, age) in [(5, 999), (6, 500), (7, 0)] {
            map.insert(key, entry(age, 0));
        }
        map.insert(8, entry(10_000, 1));
        t.evict(&mut map, now);
        let mut kept: Vec<u64> = map.keys().copied().collect();
        kept.sort();
        assert_eq!(kept, [5, 6, 7, 8], "only the refilled buckets go");
    }

    #[test]
    fn a_full_shard_of_recent_clients_forgets_its_oldest_eighth_not_in_flight() {
        let t = ClientTable::new(10.0, 10.0, 1024); // 64 shards of 16
        assert_eq!(t.shard_capacity, 16);
        let now = 10_000;
        let mut map: Map = (0..16u64)
            .map(|key| {
                let e = Entry {
                    tokens: 0.0,
                    last_ms: now - key as u32 * 10, // key 15 is the oldest
                    in_flight: u16::from(key == 15),
                };
                (key, e)
            })
            .collect();
        t.evict(&mut map, now);
        let mut kept: Vec<u64> = map.keys().copied().collect();
        kept.sort();
        // Two of 16 go: the oldest two that hold no request.
        assert_eq!(kept, (0..13).chain([15]).collect::<Vec<u64>>());
    }
}
