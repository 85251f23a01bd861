//! A fake APNs provider API: `POST /3/device/{token}` over HTTP/2 + TLS.
//!
//! It checks what Apple checks (provider token signature, `kid`, `iss`,
//! `iat` age; `apns-topic`, `apns-push-type`, `apns-priority`,
//! `apns-expiration`, `apns-collapse-id`; payload size and shape) and
//! answers the way Apple does: status, `apns-id` header, `{"reason": ...}`
//! (plus `timestamp` on 410).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::{Method, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::jwt;
use crate::server::{self, json_response, Handler, Mode, Req, Resp};
use crate::tls::TestCa;

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

#[derive(Default)]
struct State {
    requests: HashMap<String, usize>,
    total_requests: usize,
    deliveries: Vec<ApnsDelivery>,
    jwts: HashSet<String>,
    expired_jwts: HashSet<String>,
    /// Provider tokens whose signature and claims checked out, with their
    /// `iat`: like APNs, each distinct token is verified once (it was 58%
    /// of the fake's CPU and capped the fan-out benchmark).
    verified_jwts: HashMap<String, i64>,
    once: HashMap<String, VecDeque<ApnsFault>>,
    always: HashMap<String, ApnsFault>,
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
        let handler: Handler = Arc::new(move |req| {
            let shared = handler_shared.clone();
            Box::pin(async move { handle(&shared, req).await })
        });
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
        self.shared
            .state()
            .requests
            .get(token)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received in all.
    pub fn total_requests(&self) -> usize {
        self.shared.state().total_requests
    }

    /// Notifications accepted, in order.
    pub fn deliveries(&self) -> Vec<ApnsDelivery> {
        self.shared.state().deliveries.clone()
    }

    pub fn delivered_to(&self, token: &str) -> usize {
        let state = self.shared.state();
        state.deliveries.iter().filter(|d| d.token == token).count()
    }

    pub fn delivered_with_collapse_id(&self, collapse_id: &str) -> usize {
        let state = self.shared.state();
        state
            .deliveries
            .iter()
            .filter(|d| d.collapse_id.as_deref() == Some(collapse_id))
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

fn reason(status: StatusCode, apns_id: &str, reason: &str) -> Resp {
    with_id(json_response(status, &json!({"reason": reason})), apns_id)
}

fn with_id(mut resp: Resp, apns_id: &str) -> Resp {
    if let Ok(v) = apns_id.parse() {
        resp.headers_mut().insert("apns-id", v);
    }
    resp
}

fn with_retry_after(mut resp: Resp, secs: Option<u64>) -> Resp {
    if let Some(secs) = secs {
        resp.headers_mut()
            .insert("retry-after", secs.to_string().parse().expect("digits"));
    }
    resp
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn new_uuid() -> String {
    let h = jwt::random_hex(16).to_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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

async fn handle(shared: &Shared, req: Req) -> Resp {
    shared.state().total_requests += 1;
    let apns_id = match req.header("apns-id") {
        Some(id) if is_uuid(id) => id.to_owned(),
        Some(_) => return reason(StatusCode::BAD_REQUEST, &new_uuid(), "BadMessageId"),
        None => new_uuid(),
    };
    let Some(token) = req.path.strip_prefix("/3/device/") else {
        return reason(StatusCode::NOT_FOUND, &apns_id, "BadPath");
    };
    let token = token.to_owned();
    if req.method != Method::POST {
        return reason(StatusCode::METHOD_NOT_ALLOWED, &apns_id, "MethodNotAllowed");
    }
    if token.is_empty() {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "MissingDeviceToken");
    }
    *shared.state().requests.entry(token.clone()).or_default() += 1;

    // A scripted delay holds the request before anything is checked, like
    // a slow network: a provider token may expire meanwhile.
    let delay = {
        let mut state = shared.state();
        let queued = state.once.get_mut(&token).and_then(|q| match q.front() {
            Some(ApnsFault::Delay(d)) => {
                let d = *d;
                q.pop_front();
                Some(d)
            }
            _ => None,
        });
        queued.or(match state.always.get(&token) {
            Some(ApnsFault::Delay(d)) => Some(*d),
            _ => None,
        })
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    // Provider token.
    let Some(auth) = req.header("authorization") else {
        return reason(StatusCode::FORBIDDEN, &apns_id, "MissingProviderToken");
    };
    let Some(jwt) = auth
        .strip_prefix("bearer ")
        .or_else(|| auth.strip_prefix("Bearer "))
    else {
        return reason(StatusCode::FORBIDDEN, &apns_id, "MissingProviderToken");
    };
    let jwt = jwt.trim().to_owned();
    let expired = {
        let mut state = shared.state();
        state.jwts.insert(jwt.clone());
        state.expired_jwts.contains(&jwt)
    };
    let opts = &shared.options;
    let cached = shared.state().verified_jwts.get(&jwt).copied();
    let iat = match cached {
        Some(iat) => iat,
        None => {
            let Some(jws) = jwt::verify(&jwt, &ECDSA_P256_SHA256_FIXED, &shared.public_key) else {
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
            shared.state().verified_jwts.insert(jwt.clone(), iat);
            iat
        }
    };
    let now = jwt::unix_now();
    if iat > now + 60 {
        return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
    }
    if expired || now - iat > 3600 {
        return reason(StatusCode::FORBIDDEN, &apns_id, "ExpiredProviderToken");
    }

    // Headers.
    let Some(topic) = req.header("apns-topic") else {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "MissingTopic");
    };
    if topic != opts.topic {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "TopicDisallowed");
    }
    let push_type = req.header("apns-push-type").unwrap_or_default();
    if !PUSH_TYPES.contains(&push_type) {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "InvalidPushType");
    }
    let priority = req.header("apns-priority").map(str::to_owned);
    if !matches!(priority.as_deref(), None | Some("1" | "5" | "10")) {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "BadPriority");
    }
    let expiration = match req.header("apns-expiration") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return reason(StatusCode::BAD_REQUEST, &apns_id, "BadExpirationDate"),
        },
    };
    let collapse_id = req.header("apns-collapse-id").map(str::to_owned);
    if collapse_id.as_ref().is_some_and(|c| c.len() > 64) {
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
    let payload: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return reason(StatusCode::BAD_REQUEST, &apns_id, "PayloadEmpty"),
    };
    let aps_ok =
        payload["aps"].is_object() && (push_type != "alert" || !payload["aps"]["alert"].is_null());
    if !aps_ok {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "PayloadEmpty");
    }

    // Scripted faults.
    let fault = {
        let mut state = shared.state();
        let once = state.once.get_mut(&token).and_then(VecDeque::pop_front);
        once.or_else(|| state.always.get(&token).cloned())
    };
    match fault {
        None => {}
        Some(ApnsFault::Delay(_)) => {} // already waited
        Some(ApnsFault::Unregistered { timestamp_ms }) => {
            let body = json!({"reason": "Unregistered", "timestamp": timestamp_ms});
            return with_id(json_response(StatusCode::GONE, &body), &apns_id);
        }
        Some(ApnsFault::BadDeviceToken) => {
            return reason(StatusCode::BAD_REQUEST, &apns_id, "BadDeviceToken")
        }
        Some(ApnsFault::ExpiredProviderToken) => {
            shared.state().expired_jwts.insert(jwt);
            return reason(StatusCode::FORBIDDEN, &apns_id, "ExpiredProviderToken");
        }
        Some(ApnsFault::TooManyRequests { retry_after }) => {
            let resp = reason(StatusCode::TOO_MANY_REQUESTS, &apns_id, "TooManyRequests");
            return with_retry_after(resp, retry_after);
        }
        Some(ApnsFault::InternalServerError) => {
            return reason(
                StatusCode::INTERNAL_SERVER_ERROR,
                &apns_id,
                "InternalServerError",
            )
        }
        Some(ApnsFault::ServiceUnavailable { retry_after }) => {
            let resp = reason(
                StatusCode::SERVICE_UNAVAILABLE,
                &apns_id,
                "ServiceUnavailable",
            );
            return with_retry_after(resp, retry_after);
        }
    }

    shared.state().deliveries.push(ApnsDelivery {
        token,
        apns_id: apns_id.clone(),
        topic: topic.to_owned(),
        push_type: push_type.to_owned(),
        priority,
        expiration,
        collapse_id,
        payload,
    });
    let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    with_id(resp, &apns_id)
}
