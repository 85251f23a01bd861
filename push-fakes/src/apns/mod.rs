//! A fake APNs provider API: `POST /3/device/{token}` over HTTP/2 + TLS.
//!
//! It checks what Apple checks (provider token signature, `kid`, `iss`,
//! `iat` age; `apns-topic`, `apns-push-type`, `apns-priority`,
//! `apns-expiration`, `apns-collapse-id`; payload size and shape) and
//! answers the way Apple does: status, `apns-id` header, `{"reason": ...}`
//! (plus `timestamp` on 410).

mod delivery;
mod payload;
mod request;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::jwt;
use crate::server::{self, Handler, Mode};
use crate::tls::TestCa;
use crate::util::{Arena, Interner, Span};

use delivery::Delivered;
use request::handle;

/// A team's token-signing key, as in an `AuthKey_<key id>.p8` file.
#[derive(Clone)]
pub struct ApnsKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl ApnsKey {
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key generation")
            .as_ref()
            .to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .expect("a key ring just made");
        let public = pair.public_key().as_ref().to_vec();
        ApnsKey { pkcs8, public }
    }

    /// The `.p8` contents: PEM `PRIVATE KEY` (PKCS#8).
    pub fn p8_pem(&self) -> String {
        jwt::pem("PRIVATE KEY", &self.pkcs8)
    }

    pub fn write_p8(&self, path: &Path) -> std::io::Result<()> {
        jwt::write_secret(path, &self.p8_pem())
    }

    /// The uncompressed public point, what APNs verifies tokens with.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }
}

/// Who the fake believes it serves.
#[derive(Clone, Debug)]
pub struct ApnsOptions {
    pub team_id: String,
    pub key_id: String,
    /// The one topic (bundle id) the team's key may push to.
    pub topic: String,
    /// Largest accepted payload (Apple: 4096 bytes for alerts).
    pub max_payload: usize,
    /// Hold every request to `/3/device/{token}` this long before looking
    /// at it (on top of any scripted [`ApnsFault::Delay`]): a slow provider,
    /// so a batch of sends takes long. Zero: answer at once.
    pub answer_delay: Duration,
    /// Never negotiate `h2`: ALPN `http/1.1` when offered, else none, and
    /// every HTTP/1.1 request answered 505. A misconfigured endpoint (a
    /// proxy without HTTP/2), which a client that needs h2 must give up on.
    pub http1_only: bool,
}

impl Default for ApnsOptions {
    fn default() -> Self {
        ApnsOptions {
            team_id: "TEAM000001".to_owned(),
            key_id: "KEY0000001".to_owned(),
            topic: "com.example.firmcast".to_owned(),
            max_payload: 4096,
            answer_delay: Duration::ZERO,
            http1_only: false,
        }
    }
}

/// A scripted answer for one device token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApnsFault {
    /// 410 `Unregistered` with `timestamp` (ms since the epoch).
    Unregistered { timestamp_ms: i64 },
    /// 400 `BadDeviceToken`.
    BadDeviceToken,
    /// 403 `ExpiredProviderToken`; the provider token used is then treated
    /// as expired for good, as APNs would.
    ExpiredProviderToken,
    /// 429 `TooManyRequests`, with `Retry-After` seconds when given.
    TooManyRequests { retry_after: Option<u64> },
    /// 500 `InternalServerError`.
    InternalServerError,
    /// 503 `ServiceUnavailable`, with `Retry-After` seconds when given.
    ServiceUnavailable { retry_after: Option<u64> },
    /// Hold the request this long before looking at it, then answer it
    /// as usual (the provider token may have expired meanwhile).
    Delay(Duration),
}

/// A notification the fake accepted (200).
#[derive(Clone, Debug)]
pub struct ApnsDelivery {
    pub token: String,
    pub apns_id: String,
    pub topic: String,
    pub push_type: String,
    pub priority: Option<String>,
    pub expiration: Option<u64>,
    pub collapse_id: Option<String>,
    pub payload: Value,
}

/// What the fake knows of one provider token.
#[derive(Clone, Copy, Default)]
struct JwtState {
    /// `iat` once the signature and claims checked out: like APNs, each
    /// distinct token is verified once (re-verifying it was most of the
    /// fake's CPU and capped the fan-out benchmark).
    verified_iat: Option<i64>,
    /// Answered `ExpiredProviderToken` by a scripted fault: expired for good.
    expired: bool,
}

#[derive(Default)]
struct State {
    total_requests: usize,
    /// Device tokens of the requests that named one, whatever the answer.
    requests: Vec<Span>,
    tokens: Arena,
    deliveries: Vec<Delivered>,
    payloads: Interner,
    collapse_ids: Interner,
    /// Every distinct provider token presented, valid or not.
    jwts: HashMap<String, JwtState>,
    /// The last provider token presented and a copy of its state: clients
    /// reuse one token for up to an hour, so this spares hashing it.
    last_jwt: Option<(String, JwtState)>,
    once: HashMap<String, VecDeque<ApnsFault>>,
    always: HashMap<String, ApnsFault>,
}

impl State {
    fn jwt(&mut self, jwt: &str) -> JwtState {
        if let Some((last, state)) = &self.last_jwt {
            if last == jwt {
                return *state;
            }
        }
        let state = *self.jwts.entry(jwt.to_owned()).or_default();
        self.last_jwt = Some((jwt.to_owned(), state));
        state
    }

    fn update_jwt(&mut self, jwt: &str, f: impl Fn(&mut JwtState)) {
        f(self.jwts.entry(jwt.to_owned()).or_default());
        if let Some((last, state)) = &mut self.last_jwt {
            if last == jwt {
                f(state);
            }
        }
    }

    /// The fault scripted for this request to `token` that `take` wants, if
    /// any: the next one-shot fault, else the standing one.
    fn fault(&mut self, token: &str, take: impl Fn(&ApnsFault) -> bool) -> Option<ApnsFault> {
        if self.once.is_empty() && self.always.is_empty() {
            return None;
        }
        let once = self.once.get_mut(token).and_then(|q| match q.front() {
            Some(f) if take(f) => q.pop_front(),
            _ => None,
        });
        once.or_else(|| self.always.get(token).filter(|f| take(f)).cloned())
    }
}

struct Shared {
    options: ApnsOptions,
    public_key: Vec<u8>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake APNs. Dropping it stops it.
pub struct ApnsFake {
    server: server::Server,
    ca: TestCa,
    key: ApnsKey,
    shared: Arc<Shared>,
}

impl ApnsFake {
    /// On `127.0.0.1`, a free port, default team, key id and topic, a new key.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ApnsOptions::default(),
        )
        .await
    }

    pub async fn start_with(addr: SocketAddr, options: ApnsOptions) -> std::io::Result<Self> {
        let ca = TestCa::generate();
        let key = ApnsKey::generate();
        let mode = if options.http1_only {
            Mode::Http1OverTls {
                http1: ca.server_config(&[b"http/1.1"]),
                plain: ca.server_config(&[]),
            }
        } else {
            Mode::Http2OverTls(tokio_rustls::TlsAcceptor::from(ca.server_config(&[b"h2"])))
        };
        let shared = Arc::new(Shared {
            options,
            public_key: key.public_key().to_vec(),
            state: Mutex::new(State::default()),
        });
        let listener = TcpListener::bind(addr).await?;
        let handler_shared = shared.clone();
        let handler: Handler = Arc::new(move |req| handle(&handler_shared, req));
        let server = server::spawn(listener, mode, handler)?;
        Ok(ApnsFake {
            server,
            ca,
            key,
            shared,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.server.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> &str {
        self.ca.ca_pem()
    }

    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        self.ca.write_ca_pem(path)
    }

    /// The team key whose tokens the fake accepts.
    pub fn key(&self) -> &ApnsKey {
        &self.key
    }

    pub fn write_key(&self, path: &Path) -> std::io::Result<()> {
        self.key.write_p8(path)
    }

    pub fn options(&self) -> &ApnsOptions {
        &self.shared.options
    }

    pub fn team_id(&self) -> &str {
        &self.shared.options.team_id
    }

    pub fn key_id(&self) -> &str {
        &self.shared.options.key_id
    }

    pub fn topic(&self) -> &str {
        &self.shared.options.topic
    }

    /// Answer the next request for `token` with `fault` (queued after any
    /// earlier one-shot faults for it).
    pub fn fail_once(&self, token: &str, fault: ApnsFault) {
        let mut state = self.shared.state();
        state
            .once
            .entry(token.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// Answer every request for `token` with `fault` (after one-shot faults).
    pub fn fail_always(&self, token: &str, fault: ApnsFault) {
        let mut state = self.shared.state();
        state.always.insert(token.to_owned(), fault);
    }

    /// Requests that named `token`, whatever the answer.
    pub fn requests_for(&self, token: &str) -> usize {
        let state = self.shared.state();
        let tokens = &state.tokens;
        state
            .requests
            .iter()
            .filter(|t| tokens.is(**t, token))
            .count()
    }

    /// Requests received in all.
    pub fn total_requests(&self) -> usize {
        self.shared.state().total_requests
    }

    /// Notifications accepted, in order.
    pub fn deliveries(&self) -> Vec<ApnsDelivery> {
        let state = self.shared.state();
        let payloads = state.payload_values();
        let topic = &self.shared.options.topic;
        state
            .deliveries
            .iter()
            .map(|d| state.delivery(d, topic, &payloads))
            .collect()
    }

    /// How many notifications were accepted (`deliveries().len()`, cheaply).
    pub fn delivery_count(&self) -> usize {
        self.shared.state().deliveries.len()
    }

    pub fn delivered_to(&self, token: &str) -> usize {
        let state = self.shared.state();
        state
            .deliveries
            .iter()
            .filter(|d| state.tokens.is(d.token, token))
            .count()
    }

    pub fn delivered_with_collapse_id(&self, collapse_id: &str) -> usize {
        let state = self.shared.state();
        state
            .deliveries
            .iter()
            .filter(|d| {
                d.collapse_id
                    .is_some_and(|id| state.collapse_ids.get(id) == collapse_id.as_bytes())
            })
            .count()
    }

    /// Distinct provider tokens (JWTs) presented, valid or not.
    pub fn distinct_jwts(&self) -> usize {
        self.shared.state().jwts.len()
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.server
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
