//! A fake APNs provider API: `POST /3/device/{token}` over HTTP/2 + TLS.
//!
//! It checks what Apple checks (provider token signature, `kid`, `iss`,
//! `iat` age; `apns-topic`, `apns-push-type`, `apns-priority`,
//! `apns-expiration`, `apns-collapse-id`; payload size and shape) and
//! answers the way Apple does: status, `apns-id` header, `{"reason": ...}`
//! (plus `timestamp` on 410).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use hyper::{Method, Response, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::jwt;
use crate::server::{self, json_response, Handler, Mode, Reply, Req, Resp};
use crate::tls::TestCa;
use crate::util::{self, bail, Arena, Interner, Key, Skip, Span};

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
}

impl Default for ApnsOptions {
    fn default() -> Self {
        ApnsOptions {
            team_id: "TEAM000001".to_owned(),
            key_id: "KEY0000001".to_owned(),
            topic: "com.example.firmcast".to_owned(),
            max_payload: 4096,
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

/// What the fake keeps of an accepted notification; [`ApnsDelivery`] is
/// rebuilt from it on demand. Compact and allocation-free per request: the
/// token in the arena, the payload and collapse id interned (a fan-out job
/// sends the same ones to every token), the rest inline. The topic is not
/// kept: only the fake's own topic is accepted.
struct Delivered {
    token: Span,
    apns_id: [u8; UUID_LEN],
    push_type: &'static str,
    priority: Option<&'static str>,
    expiration: Option<u64>,
    collapse_id: Option<u32>,
    payload: u32,
}

/// What the fake knows of one provider token.
#[derive(Clone, Copy, Default)]
struct JwtState {
    /// `iat` once the signature and claims checked out: like APNs, each
    /// distinct token is verified once (re-verifying it was 58% of the
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

    fn delivery(&self, d: &Delivered, topic: &str, payloads: &[Value]) -> ApnsDelivery {
        ApnsDelivery {
            token: self.tokens.get(d.token).to_owned(),
            apns_id: String::from_utf8_lossy(&d.apns_id).into_owned(),
            topic: topic.to_owned(),
            push_type: d.push_type.to_owned(),
            priority: d.priority.map(str::to_owned),
            expiration: d.expiration,
            collapse_id: d
                .collapse_id
                .map(|id| String::from_utf8_lossy(self.collapse_ids.get(id)).into_owned()),
            payload: payloads[d.payload as usize].clone(),
        }
    }

    /// Every distinct payload, parsed (each was checked to be JSON).
    fn payload_values(&self) -> Vec<Value> {
        (0..self.payloads.len())
            .map(|id| serde_json::from_slice(self.payloads.get(id as u32)).unwrap_or(Value::Null))
            .collect()
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
        let shared = Arc::new(Shared {
            options,
            public_key: key.public_key().to_vec(),
            state: Mutex::new(State::default()),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[b"h2"]));
        let listener = TcpListener::bind(addr).await?;
        let handler_shared = shared.clone();
        let handler: Handler = Arc::new(move |req| handle(&handler_shared, req));
        let server = server::spawn(listener, Mode::Http2OverTls(acceptor), handler)?;
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

const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

const UUID_LEN: usize = 36;

fn reason(status: StatusCode, apns_id: &[u8; UUID_LEN], reason: &str) -> Resp {
    with_id(json_response(status, &json!({"reason": reason})), apns_id)
}

fn with_id(mut resp: Resp, apns_id: &[u8; UUID_LEN]) -> Resp {
    if let Ok(v) = HeaderValue::from_bytes(apns_id) {
        resp.headers_mut().insert(APNS_ID, v);
    }
    resp
}

fn with_retry_after(mut resp: Resp, secs: Option<u64>) -> Resp {
    if let Some(secs) = secs {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn is_uuid(s: &str) -> bool {
    s.len() == UUID_LEN
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A random id in APNs' format: 8-4-4-4-12 uppercase hex digits.
fn new_uuid() -> [u8; UUID_LEN] {
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&util::fast_u64().to_le_bytes());
    random[8..].copy_from_slice(&util::fast_u64().to_le_bytes());
    let mut hex = [0u8; 32];
    util::hex_into(&random, true, &mut hex);
    let mut id = [b'-'; UUID_LEN];
    id[0..8].copy_from_slice(&hex[0..8]);
    id[9..13].copy_from_slice(&hex[8..12]);
    id[14..18].copy_from_slice(&hex[12..16]);
    id[19..23].copy_from_slice(&hex[16..20]);
    id[24..36].copy_from_slice(&hex[20..32]);
    id
}

const PUSH_TYPES: [&str; 8] = [
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
];

fn handle(shared: &Arc<Shared>, req: Req) -> Reply {
    let mut state = shared.state();
    state.total_requests += 1;
    let apns_id = match req.header(APNS_ID) {
        Some(id) if is_uuid(id) => id.as_bytes().try_into().expect("36 bytes"),
        Some(_) => {
            drop(state);
            return Reply::Now(reason(StatusCode::BAD_REQUEST, &new_uuid(), "BadMessageId"));
        }
        None => new_uuid(),
    };
    let Some(token) = req.path().strip_prefix("/3/device/") else {
        drop(state);
        return Reply::Now(reason(StatusCode::NOT_FOUND, &apns_id, "BadPath"));
    };
    if req.method != Method::POST {
        drop(state);
        return Reply::Now(reason(
            StatusCode::METHOD_NOT_ALLOWED,
            &apns_id,
            "MethodNotAllowed",
        ));
    }
    if token.is_empty() {
        drop(state);
        return Reply::Now(reason(
            StatusCode::BAD_REQUEST,
            &apns_id,
            "MissingDeviceToken",
        ));
    }
    let token_span = state.tokens.push(token);
    state.requests.push(token_span);

    // A scripted delay holds the request before anything is checked, like
    // a slow network: a provider token may expire meanwhile.
    let delay = match state.fault(token, |f| matches!(f, ApnsFault::Delay(_))) {
        Some(ApnsFault::Delay(d)) => Some(d),
        _ => None,
    };
    drop(state);
    match delay {
        None => Reply::Now(check(shared, &req, apns_id, token_span)),
        Some(delay) => {
            let shared = shared.clone();
            Reply::Later(Box::pin(async move {
                tokio::time::sleep(delay).await;
                check(&shared, &req, apns_id, token_span)
            }))
        }
    }
}

/// Everything after the path: provider token, headers, payload, scripted
/// faults; records the notification when all is well.
fn check(shared: &Shared, req: &Req, apns_id: [u8; UUID_LEN], token_span: Span) -> Resp {
    let token = &req.path()["/3/device/".len()..];

    // Provider token.
    let Some(auth) = req.header(AUTHORIZATION) else {
        return reason(StatusCode::FORBIDDEN, &apns_id, "MissingProviderToken");
    };
    let Some(jwt) = auth
        .strip_prefix("bearer ")
        .or_else(|| auth.strip_prefix("Bearer "))
    else {
        return reason(StatusCode::FORBIDDEN, &apns_id, "MissingProviderToken");
    };
    let jwt = jwt.trim();
    let known = shared.state().jwt(jwt);
    let opts = &shared.options;
    let iat = match known.verified_iat {
        Some(iat) => iat,
        None => {
            let Some(jws) = jwt::verify(jwt, &ECDSA_P256_SHA256_FIXED, &shared.public_key) else {
                return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
            };
            if jws.header["alg"] != "ES256"
                || jws.header["kid"] != opts.key_id.as_str()
                || jws.claims["iss"] != opts.team_id.as_str()
            {
                return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
            }
            let Some(iat) = jws.claims["iat"].as_i64() else {
                return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
            };
            shared
                .state()
                .update_jwt(jwt, |s| s.verified_iat = Some(iat));
            iat
        }
    };
    let now = jwt::unix_now();
    if iat > now + 60 {
        return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
    }
    if known.expired || now - iat > 3600 {
        return reason(StatusCode::FORBIDDEN, &apns_id, "ExpiredProviderToken");
    }

    // Headers.
    let Some(topic) = req.header(APNS_TOPIC) else {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "MissingTopic");
    };
    if topic != opts.topic {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "TopicDisallowed");
    }
    let push_type = req.header(APNS_PUSH_TYPE).unwrap_or_default();
    let Some(push_type) = PUSH_TYPES.iter().copied().find(|t| *t == push_type) else {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "InvalidPushType");
    };
    let priority = match req.header(APNS_PRIORITY) {
        None => None,
        Some("1") => Some("1"),
        Some("5") => Some("5"),
        Some("10") => Some("10"),
        Some(_) => return reason(StatusCode::BAD_REQUEST, &apns_id, "BadPriority"),
    };
    let expiration = match req.header(APNS_EXPIRATION) {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return reason(StatusCode::BAD_REQUEST, &apns_id, "BadExpirationDate"),
        },
    };
    let collapse_id = req.header(APNS_COLLAPSE_ID);
    if collapse_id.is_some_and(|c| c.len() > 64) {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "BadCollapseId");
    }
    if token.len() < 64 || token.len() > 200 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "BadDeviceToken");
    }

    // Payload.
    if req.body.len() > opts.max_payload {
        return reason(StatusCode::PAYLOAD_TOO_LARGE, &apns_id, "PayloadTooLarge");
    }
    if req.body.is_empty() {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "PayloadEmpty");
    }
    if !payload_ok(&req.body, push_type) {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "PayloadEmpty");
    }

    // Scripted faults; without one the notification is delivered.
    let mut state = shared.state();
    let fault = match state.fault(token, |_| true) {
        None | Some(ApnsFault::Delay(_)) => None, // a delay was already waited
        Some(ApnsFault::ExpiredProviderToken) => {
            state.update_jwt(jwt, |s| s.expired = true);
            Some(ApnsFault::ExpiredProviderToken)
        }
        Some(fault) => Some(fault),
    };
    if let Some(fault) = fault {
        drop(state);
        return fault_response(fault, &apns_id);
    }
    let payload = state.payloads.intern(&req.body);
    let collapse_id = collapse_id.map(|c| state.collapse_ids.intern(c.as_bytes()));
    state.deliveries.push(Delivered {
        token: token_span,
        apns_id,
        push_type,
        priority,
        expiration,
        collapse_id,
        payload,
    });
    drop(state);
    with_id(Response::new(Full::new(Bytes::new())), &apns_id)
}

fn fault_response(fault: ApnsFault, apns_id: &[u8; UUID_LEN]) -> Resp {
    match fault {
        ApnsFault::Unregistered { timestamp_ms } => {
            let body = json!({"reason": "Unregistered", "timestamp": timestamp_ms});
            with_id(json_response(StatusCode::GONE, &body), apns_id)
        }
        ApnsFault::BadDeviceToken => reason(StatusCode::BAD_REQUEST, apns_id, "BadDeviceToken"),
        ApnsFault::ExpiredProviderToken => {
            reason(StatusCode::FORBIDDEN, apns_id, "ExpiredProviderToken")
        }
        ApnsFault::TooManyRequests { retry_after } => with_retry_after(
            reason(StatusCode::TOO_MANY_REQUESTS, apns_id, "TooManyRequests"),
            retry_after,
        ),
        ApnsFault::InternalServerError => reason(
            StatusCode::INTERNAL_SERVER_ERROR,
            apns_id,
            "InternalServerError",
        ),
        ApnsFault::ServiceUnavailable { retry_after } => with_retry_after(
            reason(
                StatusCode::SERVICE_UNAVAILABLE,
                apns_id,
                "ServiceUnavailable",
            ),
            retry_after,
        ),
        ApnsFault::Delay(_) => unreachable!("a delay is waited, not answered"),
    }
}

/// Apple's payload rule: a JSON object with an `aps` object, which for
/// alerts has a non-null `alert`.
fn payload_ok(body: &[u8], push_type: &str) -> bool {
    let fast = payload_ok_fast(body, push_type);
    debug_assert!(
        !fast || payload_ok_value(body, push_type),
        "the fast path accepted what the Value check refuses: {}",
        String::from_utf8_lossy(body)
    );
    fast || payload_ok_value(body, push_type)
}

/// The rule on a `serde_json::Value`: the reference, and the answer for
/// every payload the fast path does not accept.
fn payload_ok_value(body: &[u8], push_type: &str) -> bool {
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return false,
    };
    payload["aps"].is_object() && (push_type != "alert" || !payload["aps"]["alert"].is_null())
}

/// The same rule without building a tree. `true` only when the payload
/// certainly passes; anything unusual (a duplicate `aps` or `alert` key,
/// which `Value` resolves last-wins) is left to [`payload_ok_value`].
fn payload_ok_fast(body: &[u8], push_type: &str) -> bool {
    /// `Some(has a non-null alert)` when there is an `aps` object.
    struct Payload(Option<bool>);
    /// Whether the `aps` object has a non-null `alert`.
    struct Aps(bool);

    impl<'de> Deserialize<'de> for Payload {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Payload;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an APNs payload")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
                    let mut aps = None;
                    while let Some(key) = map.next_key_seed(Key(&["aps"]))? {
                        match key {
                            Some(_) if aps.is_some() => return Err(bail()),
                            Some(_) => aps = Some(map.next_value::<Aps>()?.0),
                            None => {
                                map.next_value::<Skip>()?;
                            }
                        }
                    }
                    Ok(Payload(aps))
                }
            }
            d.deserialize_map(V)
        }
    }

    impl<'de> Deserialize<'de> for Aps {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Aps;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an aps object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Aps, A::Error> {
                    let mut alert = None;
                    while let Some(key) = map.next_key_seed(Key(&["alert"]))? {
                        match key {
                            Some(_) if alert.is_some() => return Err(bail()),
                            Some(_) => alert = Some(map.next_value::<Option<Skip>>()?.is_some()),
                            None => {
                                map.next_value::<Skip>()?;
                            }
                        }
                    }
                    Ok(Aps(alert.unwrap_or(false)))
                }
            }
            d.deserialize_map(V)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    match Payload::deserialize(&mut de).and_then(|p| de.end().map(|()| p)) {
        Ok(Payload(Some(alert))) => push_type != "alert" || alert,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_apns_payload_fast_path_agrees_with_the_value_check() {
        let cases: &[&str] = &[
            r#"{"aps":{"alert":{"title":"t","body":"b"}},"product":"P","version":"1"}"#,
            r#"{"aps":{"alert":"hi"}}"#,
            r#"{"aps":{"alert":null}}"#,
            r#"{"aps":{}}"#,
            r#"{"aps":{"content-available":1}}"#,
            r#"{"aps":null}"#,
            r#"{"aps":1}"#,
            r#"{"aps":[]}"#,
            r#"[{"aps":{"alert":"x"}}]"#,
            r#"{"a\u0070s":{"al\u0065rt":"x"}}"#,
            r#"{"aps":{"alert":"x"},"aps":{}}"#,
            r#"{"aps":{},"aps":{"alert":"x"}}"#,
            r#"{"aps":{"alert":"x","alert":null}}"#,
            r#"{"aps":{"alert":"x"}} x"#,
            r#"{"aps":{"alert":"x"}}  "#,
            r#"{"aps":{"alert":"x"},"n":1e400}"#,
            r#"{"aps":{"alert":"x"},"n":-0.5e-3}"#,
            r#"{"aps":{"alert":"x"},"s":"\ud800"}"#,
            r#"{"aps":{"alert":"x"},"s":"\u00e9\n"}"#,
            r#"{"aps":{"alert":1e400}}"#,
            r#"{"aps":{"alert":"x"}"#,
            r#"{"aps":{"alert":"x"},}"#,
            r#"null"#,
            r#""#,
        ];
        let deep = format!(
            r#"{{"aps":{{"alert":"x"}},"d":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let mut bodies: Vec<Vec<u8>> = cases.iter().map(|c| c.as_bytes().to_vec()).collect();
        bodies.push(deep.into_bytes());
        bodies.push(b"{\"aps\":{\"alert\":\"x\"},\"s\":\"\xff\"}".to_vec());
        for body in &bodies {
            for push_type in ["alert", "background"] {
                let fast = payload_ok_fast(body, push_type);
                let value = payload_ok_value(body, push_type);
                assert!(
                    !fast || value,
                    "fast accepts, Value refuses: {} ({push_type})",
                    String::from_utf8_lossy(body)
                );
                assert_eq!(
                    payload_ok(body, push_type),
                    value,
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        // The usual shapes stay on the fast path.
        assert!(payload_ok_fast(cases[0].as_bytes(), "alert"));
        assert!(payload_ok_fast(cases[9].as_bytes(), "alert"));
        assert!(payload_ok_fast(cases[4].as_bytes(), "background"));
    }

    #[test]
    fn fake_apns_ids_look_like_uuids() {
        let a = new_uuid();
        let b = new_uuid();
        assert_ne!(a, b);
        let s = std::str::from_utf8(&a).unwrap();
        assert!(is_uuid(s), "{s}");
        assert_eq!(s, s.to_uppercase());
        assert!(is_uuid("0a1B2c3D-0000-1111-2222-333344445555"));
        assert!(!is_uuid("0a1B2c3D-0000-1111-2222-33334444555"));
        assert!(!is_uuid("0a1B2c3D00000-1111-2222-333344445555"));
        assert!(!is_uuid("0a1B2c3D-0000-1111-2222-33334444555g"));
    }
}
