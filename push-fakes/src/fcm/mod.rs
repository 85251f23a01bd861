//! A fake FCM: the HTTP v1 `POST /v1/projects/{project}/messages:send` and
//! the OAuth2 token endpoint (`POST /token`) a service account's `token_uri`
//! names, over plain HTTP.
//!
//! The token endpoint accepts only the JWT-bearer grant with an RS256
//! assertion signed by the service account's key (`iss` = client_email,
//! `aud` = token_uri, `scope` incl. firebase.messaging, sane `iat`/`exp`)
//! and issues short opaque access tokens. `messages:send` accepts only those,
//! checks the message against the v1 schema (unknown fields, exactly one
//! target, string data, `ttl` and `priority` formats, size) and answers
//! errors in Google's shape with `details[].errorCode`.

mod delivery;
mod error;
mod message;
mod token;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::header::AUTHORIZATION;
use hyper::{Method, StatusCode};
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::jwt;
use crate::server::{self, json_response, Handler, Mode, Reply, Req};
use crate::util::{Arena, Span};

use delivery::{deliver, Delivered, Templates};
use error::{fault_response, google_error};
use message::accept;
use token::{oauth_error, token_endpoint};

/// A service account's RSA key.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// `private_key` of the JSON key file: PEM PKCS#8.
    pub private_key_pem: String,
    /// `private_key_id`.
    pub key_id: String,
    public_pkcs1: Vec<u8>,
}

impl ServiceAccountKey {
    /// A fresh 2048-bit key (takes a moment).
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key generation");
        let private_key_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding")
            .to_string();
        let public_pkcs1 = key
            .to_public_key()
            .to_pkcs1_der()
            .expect("PKCS#1 encoding")
            .as_bytes()
            .to_vec();
        ServiceAccountKey {
            private_key_pem,
            key_id: jwt::random_hex(20),
            public_pkcs1,
        }
    }
}

/// The project and account the fake serves.
#[derive(Clone, Debug)]
pub struct FcmOptions {
    pub project_id: String,
    pub client_email: String,
    /// `expires_in` of issued access tokens; they stop working after it.
    pub access_token_ttl: Duration,
    /// The project's send quota: at most this many `messages:send` per
    /// wall-clock second, the rest answered 429 `QUOTA_EXCEEDED` with
    /// `Retry-After: 1`, so pacing across instances meets a real limit.
    /// `None`: unlimited, and no quota bookkeeping at all.
    pub max_per_second: Option<u32>,
    /// Hold every `messages:send` this long before handling it: a slow
    /// provider, so a batch of sends takes long. Zero: answer at once.
    pub answer_delay: Duration,
}

impl Default for FcmOptions {
    fn default() -> Self {
        FcmOptions {
            project_id: "firmcast-test".to_owned(),
            client_email: "firmcast-push@firmcast-test.iam.gserviceaccount.com".to_owned(),
            access_token_ttl: Duration::from_secs(3600),
            max_per_second: None,
            answer_delay: Duration::ZERO,
        }
    }
}

/// A scripted answer for one registration token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FcmFault {
    /// 404 NOT_FOUND, errorCode `UNREGISTERED`.
    Unregistered,
    /// 403 PERMISSION_DENIED, errorCode `SENDER_ID_MISMATCH`.
    SenderIdMismatch,
    /// 400 INVALID_ARGUMENT with a field violation on `message.token`.
    InvalidRegistration,
    /// 429 RESOURCE_EXHAUSTED, errorCode `QUOTA_EXCEEDED`, `Retry-After`.
    QuotaExceeded { retry_after: Option<u64> },
    /// 503 UNAVAILABLE, `Retry-After`.
    Unavailable { retry_after: Option<u64> },
    /// 500 INTERNAL.
    Internal,
    /// 401 UNAUTHENTICATED, errorCode `THIRD_PARTY_AUTH_ERROR`.
    ThirdPartyAuthError,
    /// Answer normally, but only after this long.
    Delay(Duration),
}

/// A message the fake accepted.
#[derive(Clone, Debug)]
pub struct FcmDelivery {
    pub token: String,
    pub name: String,
    pub collapse_key: Option<String>,
    pub message: Value,
}

#[derive(Default)]
struct State {
    issued: HashMap<String, Instant>,
    token_requests: usize,
    access_tokens_used: HashSet<String>,
    /// The last access token presented and its expiry when it was issued:
    /// clients reuse one for up to an hour, so this spares hashing it.
    /// Cleared whenever `issued` changes.
    last_bearer: Option<(String, Option<Instant>)>,
    /// Registration tokens of the `messages:send` requests that passed
    /// authentication and named one, whatever the answer.
    requests: Vec<Span>,
    tokens: Arena,
    send_requests: usize,
    deliveries: Vec<Delivered>,
    templates: Templates,
    once: HashMap<String, VecDeque<FcmFault>>,
    always: HashMap<String, FcmFault>,
    next: u64,
    quota: Quota,
}

/// The send quota's counter: fixed windows of one wall-clock second, as a
/// quota service counts (not a sliding window or a token bucket).
#[derive(Default)]
struct Quota {
    /// Unix second of the current window.
    second: u64,
    /// Sends admitted in it.
    used: u32,
    /// Most sends admitted in any one window.
    max_used: u32,
    rejected: usize,
}

impl Quota {
    /// Whether one more send fits within `limit` in second `now`.
    fn admit(&mut self, limit: u32, now: u64) -> bool {
        if now != self.second {
            self.second = now;
            self.used = 0;
        }
        if self.used >= limit {
            self.rejected += 1;
            return false;
        }
        self.used += 1;
        self.max_used = self.max_used.max(self.used);
        true
    }
}

impl State {
    /// The next one-shot fault scripted for `token`, else the standing one.
    fn fault(&mut self, token: &str) -> Option<FcmFault> {
        if self.once.is_empty() && self.always.is_empty() {
            return None;
        }
        let once = self.once.get_mut(token).and_then(VecDeque::pop_front);
        once.or_else(|| self.always.get(token).cloned())
    }

    /// Whether the project's quota (when it has one) admits one more send;
    /// the clock is read only when there is a quota.
    fn within_quota(&mut self, limit: Option<u32>) -> bool {
        let Some(limit) = limit else { return true };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.quota.admit(limit, now)
    }
}

struct Shared {
    options: FcmOptions,
    public_pkcs1: Vec<u8>,
    key_id: String,
    token_uri: String,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake FCM. Dropping it stops it.
pub struct FcmFake {
    server: server::Server,
    key: ServiceAccountKey,
    shared: Arc<Shared>,
}

impl FcmFake {
    /// On `127.0.0.1`, a free port, default project and account, a new key.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), FcmOptions::default()).await
    }

    pub async fn start_with(addr: SocketAddr, options: FcmOptions) -> std::io::Result<Self> {
        let key = tokio::task::spawn_blocking(ServiceAccountKey::generate)
            .await
            .map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            public_pkcs1: key.public_pkcs1.clone(),
            key_id: key.key_id.clone(),
            token_uri: format!("http://{local}/token"),
            state: Mutex::new(State::default()),
        });
        let handler_shared = shared.clone();
        let handler: Handler = Arc::new(move |req| handle(&handler_shared, req));
        let server = server::spawn(listener, Mode::Cleartext, handler)?;
        Ok(FcmFake {
            server,
            key,
            shared,
        })
    }

    /// `http://127.0.0.1:<port>`: FCM's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The OAuth2 token endpoint, the service account's `token_uri`.
    pub fn token_uri(&self) -> &str {
        &self.shared.token_uri
    }

    pub fn options(&self) -> &FcmOptions {
        &self.shared.options
    }

    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    /// The service-account JSON key file for the fake's project.
    pub fn service_account(&self) -> Value {
        self.service_account_with_key(&self.key)
    }

    /// The same account with another key (which the fake will refuse).
    pub fn service_account_with_key(&self, key: &ServiceAccountKey) -> Value {
        let o = &self.shared.options;
        json!({
            "type": "service_account",
            "project_id": o.project_id,
            "private_key_id": key.key_id,
            "private_key": key.private_key_pem,
            "client_email": o.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.shared.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        })
    }

    pub fn write_service_account(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(&self.service_account())?;
        jwt::write_secret(path, &json)
    }

    pub fn fail_once(&self, token: &str, fault: FcmFault) {
        let mut state = self.shared.state();
        state
            .once
            .entry(token.to_owned())
            .or_default()
            .push_back(fault);
    }

    pub fn fail_always(&self, token: &str, fault: FcmFault) {
        self.shared.state().always.insert(token.to_owned(), fault);
    }

    /// Invalidate every access token issued so far (as if revoked).
    pub fn revoke_access_tokens(&self) {
        let mut state = self.shared.state();
        state.issued.clear();
        state.last_bearer = None;
    }

    /// Token endpoint requests, granted or not.
    pub fn token_requests(&self) -> usize {
        self.shared.state().token_requests
    }

    /// Access tokens issued so far and still valid.
    pub fn live_access_tokens(&self) -> usize {
        let now = Instant::now();
        let state = self.shared.state();
        state.issued.values().filter(|exp| **exp > now).count()
    }

    /// Distinct access tokens presented to `messages:send`.
    pub fn distinct_access_tokens_used(&self) -> usize {
        self.shared.state().access_tokens_used.len()
    }

    /// `messages:send` requests in all.
    pub fn send_requests(&self) -> usize {
        self.shared.state().send_requests
    }

    /// `messages:send` requests that passed authentication and named `token`.
    pub fn requests_for(&self, token: &str) -> usize {
        let state = self.shared.state();
        let tokens = &state.tokens;
        state
            .requests
            .iter()
            .filter(|t| tokens.is(**t, token))
            .count()
    }

    pub fn deliveries(&self) -> Vec<FcmDelivery> {
        let state = self.shared.state();
        let project = &self.shared.options.project_id;
        state
            .deliveries
            .iter()
            .map(|d| state.delivery(d, project))
            .collect()
    }

    /// How many messages were accepted (`deliveries().len()`, cheaply).
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

    /// `messages:send` requests refused by [`FcmOptions::max_per_second`].
    pub fn quota_rejections(&self) -> usize {
        self.shared.state().quota.rejected
    }

    /// The most sends the quota admitted within one wall-clock second so
    /// far: what all senders together achieved against
    /// [`FcmOptions::max_per_second`]. Always 0 without a quota (nothing is
    /// counted then).
    pub fn max_accepted_in_one_second(&self) -> usize {
        self.shared.state().quota.max_used as usize
    }

    pub fn delivered_with_collapse_key(&self, key: &str) -> usize {
        let state = self.shared.state();
        state
            .deliveries
            .iter()
            .filter(|d| {
                state.templates.items[d.template as usize]
                    .collapse_key
                    .as_deref()
                    == Some(key)
            })
            .count()
    }
}

fn handle(shared: &Arc<Shared>, req: Req) -> Reply {
    if req.path() == "/token" {
        if req.method != Method::POST {
            return Reply::Now(oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "POST only",
            ));
        }
        return Reply::Now(token_endpoint(shared, &req));
    }
    let prefix = "/v1/projects/";
    if let Some(rest) = req.path().strip_prefix(prefix) {
        if rest.ends_with("/messages:send") {
            if req.method != Method::POST {
                return Reply::Now(google_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed.",
                    None,
                    vec![],
                ));
            }
            let delay = shared.options.answer_delay;
            if delay.is_zero() {
                return send(shared, req, false);
            }
            // A slow provider: counted on arrival (so a test sees what is in
            // flight), handled after the delay, like a scripted delay.
            shared.state().send_requests += 1;
            let shared = shared.clone();
            return Reply::Later(Box::pin(async move {
                tokio::time::sleep(delay).await;
                match send(&shared, req, true) {
                    Reply::Now(resp) => resp,
                    Reply::Later(fut) => fut.await,
                }
            }));
        }
    }
    Reply::Now(google_error(
        StatusCode::NOT_FOUND,
        "Not found.",
        None,
        vec![],
    ))
}

/// The project named by a `messages:send` path.
fn project_of(path: &str) -> &str {
    path.strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/messages:send"))
        .unwrap_or_default()
}

/// One `messages:send`; `counted` when `send_requests` already counted it
/// (on arrival, before a delay); else it is counted here, under the lock
/// authentication takes anyway.
fn send(shared: &Arc<Shared>, req: Req, counted: bool) -> Reply {
    let bearer = req
        .header(AUTHORIZATION)
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default();
    let authenticated = {
        let mut state = shared.state();
        if !counted {
            state.send_requests += 1;
        }
        state.authenticated(bearer)
    };
    if !authenticated {
        return Reply::Now(google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
            None,
            vec![],
        ));
    }
    if project_of(req.path()) != shared.options.project_id {
        return Reply::Now(google_error(
            StatusCode::FORBIDDEN,
            "Permission 'cloudmessaging.messages.create' denied on resource (or it may not exist).",
            None,
            vec![],
        ));
    }
    let accepted = match accept(&req.body) {
        Ok(Some(accepted)) => accepted,
        Ok(None) => {
            // Topic and condition sends: accepted, not counted per token.
            if shared.options.max_per_second.is_some()
                && !shared.state().within_quota(shared.options.max_per_second)
            {
                return Reply::Now(quota_exceeded());
            }
            let name = format!("projects/{}/messages/0", project_of(req.path()));
            return Reply::Now(json_response(StatusCode::OK, &json!({ "name": name })));
        }
        Err(resp) => return Reply::Now(*resp),
    };

    let mut state = shared.state();
    let span = state.tokens.push(&accepted.token);
    state.requests.push(span);
    // The project's quota comes before anything scripted for the token.
    if !state.within_quota(shared.options.max_per_second) {
        drop(state);
        return Reply::Now(quota_exceeded());
    }
    match state.fault(&accepted.token) {
        None => Reply::Now(deliver(shared, state, &req.body, &accepted, span)),
        Some(FcmFault::Delay(d)) => {
            drop(state);
            drop(accepted);
            let shared = shared.clone();
            Reply::Later(Box::pin(async move {
                tokio::time::sleep(d).await;
                match accept(&req.body) {
                    Ok(Some(accepted)) => {
                        deliver(&shared, shared.state(), &req.body, &accepted, span)
                    }
                    _ => unreachable!("the same body was accepted before the delay"),
                }
            }))
        }
        Some(fault) => {
            drop(state);
            Reply::Now(fault_response(fault))
        }
    }
}

/// FCM's answer when the project's send quota is spent.
fn quota_exceeded() -> server::Resp {
    fault_response(FcmFault::QuotaExceeded {
        retry_after: Some(1),
    })
}

#[cfg(test)]
mod tests {
    use super::Quota;

    #[test]
    fn fake_fcm_quota_counts_fixed_one_second_windows() {
        let mut q = Quota::default();
        assert!((0..3).all(|_| q.admit(3, 100)));
        assert!(!q.admit(3, 100));
        assert!(!q.admit(3, 100));
        // A new second starts a new window, whatever was refused before.
        assert!(q.admit(3, 101));
        assert!(q.admit(3, 101));
        assert_eq!((q.max_used, q.rejected), (3, 2));
        // A clock stepping back is a new window too, not a stuck one.
        assert!((0..3).all(|_| q.admit(3, 99)));
        assert!(!q.admit(3, 99));
        assert_eq!((q.max_used, q.rejected), (3, 3));
    }
}
