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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use hyper::{Method, StatusCode};
use ring::signature::RSA_PKCS1_2048_8192_SHA256;
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::jwt;
use crate::server::{self, json_bytes, json_response, Handler, Mode, Reply, Req, Resp};
use crate::util::{self, bail, AnyStr, Arena, Key, Skip, Span, Str, StrCheck};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

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
}

impl Default for FcmOptions {
    fn default() -> Self {
        FcmOptions {
            project_id: "firmcast-test".to_owned(),
            client_email: "firmcast-push@firmcast-test.iam.gserviceaccount.com".to_owned(),
            access_token_ttl: Duration::from_secs(3600),
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

/// What the fake keeps of an accepted message; [`FcmDelivery`] is rebuilt
/// from it on demand: the registration token in the arena, the request body
/// as a [`Template`] (the body without the token, which a fan-out job's
/// messages share), the message name's two numbers.
struct Delivered {
    token: Span,
    template: u32,
    seq: u64,
    suffix: u64,
}

/// A request body with the registration token cut out at `token_at` (or
/// whole, when the token's place is not known), and the message's
/// `android.collapse_key`, which lies outside the token.
struct Template {
    bytes: Box<[u8]>,
    token_at: Option<usize>,
    collapse_key: Option<String>,
}

/// Distinct templates, the last one used checked first.
#[derive(Default)]
struct Templates {
    items: Vec<Template>,
    index: HashMap<(Option<usize>, Box<[u8]>), u32>,
    last: u32,
}

impl Templates {
    /// The template of `body`, whose token is `body[at..at + len]` when
    /// `token` is `Some((at, len))`.
    fn intern(
        &mut self,
        body: &[u8],
        token: Option<(usize, usize)>,
        collapse_key: Option<&str>,
    ) -> u32 {
        let (head, tail) = match token {
            Some((at, len)) => (&body[..at], &body[at + len..]),
            None => (body, &[][..]),
        };
        let token_at = token.map(|(at, _)| at);
        if let Some(t) = self.items.get(self.last as usize) {
            if t.token_at == token_at
                && t.bytes.len() == head.len() + tail.len()
                && t.bytes[..head.len()] == *head
                && t.bytes[head.len()..] == *tail
            {
                return self.last;
            }
        }
        let key = (token_at, [head, tail].concat().into_boxed_slice());
        let id = match self.index.get(&key) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.items.len()).expect("fewer than 2^32 templates");
                self.items.push(Template {
                    bytes: key.1.clone(),
                    token_at,
                    collapse_key: collapse_key.map(str::to_owned),
                });
                self.index.insert(key, id);
                id
            }
        };
        self.last = id;
        id
    }
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
}

impl State {
    fn authenticated(&mut self, bearer: &str) -> bool {
        let expires = match &self.last_bearer {
            Some((last, expires)) if last == bearer => *expires,
            _ => {
                if !bearer.is_empty() && !self.access_tokens_used.contains(bearer) {
                    self.access_tokens_used.insert(bearer.to_owned());
                }
                let expires = self.issued.get(bearer).copied();
                self.last_bearer = Some((bearer.to_owned(), expires));
                expires
            }
        };
        expires.is_some_and(|exp| exp > Instant::now())
    }

    /// The next one-shot fault scripted for `token`, else the standing one.
    fn fault(&mut self, token: &str) -> Option<FcmFault> {
        if self.once.is_empty() && self.always.is_empty() {
            return None;
        }
        let once = self.once.get_mut(token).and_then(VecDeque::pop_front);
        once.or_else(|| self.always.get(token).cloned())
    }

    fn delivery(&self, d: &Delivered, project: &str) -> FcmDelivery {
        let t = &self.templates.items[d.template as usize];
        let token = self.tokens.get(d.token);
        let body = match t.token_at {
            Some(at) => [&t.bytes[..at], token.as_bytes(), &t.bytes[at..]].concat(),
            None => t.bytes.to_vec(),
        };
        let mut body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        FcmDelivery {
            token: token.to_owned(),
            name: message_name(project, d.seq, d.suffix),
            collapse_key: t.collapse_key.clone(),
            message: body["message"].take(),
        }
    }
}

fn message_name(project: &str, seq: u64, suffix: u64) -> String {
    format!("projects/{project}/messages/0:{seq}%{suffix:016x}")
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
            return send(shared, req);
        }
    }
    Reply::Now(google_error(
        StatusCode::NOT_FOUND,
        "Not found.",
        None,
        vec![],
    ))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// Google's error shape: `{"error": {code, message, status, details}}`.
fn google_error(
    status: StatusCode,
    message: &str,
    error_code: Option<&str>,
    field_violations: Vec<(&str, &str)>,
) -> Resp {
    let status_name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let mut details = Vec::new();
    if let Some(code) = error_code {
        details.push(json!({"@type": FCM_ERROR, "errorCode": code}));
    }
    if !field_violations.is_empty() {
        let violations: Vec<Value> = field_violations
            .into_iter()
            .map(|(field, description)| json!({"field": field, "description": description}))
            .collect();
        details.push(json!({"@type": BAD_REQUEST, "fieldViolations": violations}));
    }
    let mut error = json!({"code": status.as_u16(), "message": message, "status": status_name});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    json_response(status, &json!({ "error": error }))
}

fn invalid(field: &str, description: &str) -> Resp {
    google_error(
        StatusCode::BAD_REQUEST,
        description,
        Some("INVALID_ARGUMENT"),
        vec![(field, description)],
    )
}

fn token_endpoint(shared: &Shared, req: &Req) -> Resp {
    shared.state().token_requests += 1;
    let form: HashMap<String, String> = form_urlencoded::parse(&req.body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type.",
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing assertion.",
        );
    };
    let Some(jws) = jwt::verify(assertion, &RSA_PKCS1_2048_8192_SHA256, &shared.public_pkcs1)
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
    };
    if jws.header["alg"] != "RS256" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: alg.",
        );
    }
    if let Some(kid) = jws.header.get("kid") {
        if kid != shared.key_id.as_str() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Invalid JWT: kid.",
            );
        }
    }
    let c = &jws.claims;
    if c["iss"] != shared.options.client_email.as_str() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: iss.",
        );
    }
    if c["aud"] != shared.token_uri.as_str() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: aud.",
        );
    }
    let scopes = c["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == SCOPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Missing firebase.messaging scope.",
        );
    }
    let (Some(iat), Some(exp)) = (c["iat"].as_i64(), c["exp"].as_i64()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: iat/exp.",
        );
    };
    let now = jwt::unix_now();
    if iat > now + 60 || exp <= now || exp - iat > 3600 || exp <= iat {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    let ttl = shared.options.access_token_ttl;
    let token = {
        let mut state = shared.state();
        state.next += 1;
        let token = format!("ya29.fake-{}-{}", state.next, jwt::random_hex(16));
        state.issued.insert(token.clone(), Instant::now() + ttl);
        state.last_bearer = None;
        token
    };
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": ttl.as_secs(), "token_type": "Bearer"}),
    )
}

/// The project named by a `messages:send` path.
fn project_of(path: &str) -> &str {
    path.strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/messages:send"))
        .unwrap_or_default()
}

fn send(shared: &Arc<Shared>, req: Req) -> Reply {
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
        state.send_requests += 1;
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
            let name = format!("projects/{}/messages/0", project_of(req.path()));
            return Reply::Now(json_response(StatusCode::OK, &json!({ "name": name })));
        }
        Err(resp) => return Reply::Now(*resp),
    };

    let mut state = shared.state();
    let span = state.tokens.push(&accepted.token);
    state.requests.push(span);
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

/// Record an accepted message and answer with its name.
fn deliver(
    shared: &Shared,
    mut state: MutexGuard<'_, State>,
    body: &[u8],
    accepted: &Accepted<'_>,
    token: Span,
) -> Resp {
    state.next += 1;
    let seq = state.next;
    let suffix = util::fast_u64();
    let template = state.templates.intern(
        body,
        accepted.token_at.map(|at| (at, accepted.token.len())),
        accepted.collapse_key.as_deref(),
    );
    state.deliveries.push(Delivered {
        token,
        template,
        seq,
        suffix,
    });
    drop(state);
    #[derive(serde::Serialize)]
    struct Name<'a> {
        name: &'a str,
    }
    let name = message_name(&shared.options.project_id, seq, suffix);
    let body = serde_json::to_vec(&Name { name: &name }).expect("a string serializes");
    json_bytes(StatusCode::OK, body)
}

fn fault_response(fault: FcmFault) -> Resp {
    let retry_after = |mut resp: Resp, secs: Option<u64>| {
        if let Some(secs) = secs {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    };
    match fault {
        FcmFault::Unregistered => google_error(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
            Some("UNREGISTERED"),
            vec![],
        ),
        FcmFault::SenderIdMismatch => google_error(
            StatusCode::FORBIDDEN,
            "SenderId mismatch",
            Some("SENDER_ID_MISMATCH"),
            vec![],
        ),
        FcmFault::InvalidRegistration => invalid(
            "message.token",
            "The registration token is not a valid FCM registration token",
        ),
        FcmFault::QuotaExceeded { retry_after: secs } => retry_after(
            google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Quota exceeded for quota metric 'Send requests'.",
                Some("QUOTA_EXCEEDED"),
                vec![],
            ),
            secs,
        ),
        FcmFault::Unavailable { retry_after: secs } => retry_after(
            google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
                vec![],
            ),
            secs,
        ),
        FcmFault::Internal => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error encountered.",
            Some("INTERNAL"),
            vec![],
        ),
        FcmFault::ThirdPartyAuthError => google_error(
            StatusCode::UNAUTHORIZED,
            "Auth error from APNS or Web Push Service",
            Some("THIRD_PARTY_AUTH_ERROR"),
            vec![],
        ),
        FcmFault::Delay(_) => unreachable!("a delay is waited, not answered"),
    }
}

/// A message to one registration token that passed every check.
struct Accepted<'a> {
    token: Cow<'a, str>,
    /// Where the token is in the body, as written (no escapes).
    token_at: Option<usize>,
    collapse_key: Option<Cow<'a, str>>,
}

/// Check a `messages:send` body: `Ok(None)` for a valid topic or condition
/// message, the error response for an invalid one.
fn accept(body: &[u8]) -> Result<Option<Accepted<'_>>, Box<Resp>> {
    if let Some(fast) = check_fast(body) {
        #[cfg(debug_assertions)]
        {
            let value: Value = serde_json::from_slice(body).expect("the fast path parsed it");
            let message = check_message(&value)
                .unwrap_or_else(|_| panic!("the fast path accepted what check_message refuses"));
            assert_eq!(message["token"].as_str(), Some(fast.token));
            assert_eq!(
                message["android"]["collapse_key"].as_str(),
                fast.collapse_key
            );
        }
        // The token is borrowed from the body, so it lies inside it.
        let at = (fast.token.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let token_at = (body.get(at..at.wrapping_add(fast.token.len()))
            == Some(fast.token.as_bytes()))
        .then_some(at);
        return Ok(Some(Accepted {
            token: Cow::Borrowed(fast.token),
            token_at,
            collapse_key: fast.collapse_key.map(Cow::Borrowed),
        }));
    }
    let body: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Err(Box::new(google_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid JSON payload received. {e}"),
                None,
                vec![],
            )))
        }
    };
    let message = check_message(&body)?;
    Ok(message["token"].as_str().map(|token| Accepted {
        token: Cow::Owned(token.to_owned()),
        token_at: None,
        collapse_key: message["android"]["collapse_key"]
            .as_str()
            .map(|c| Cow::Owned(c.to_owned())),
    }))
}

fn bad(field: &str, description: &str) -> Box<Resp> {
    Box::new(invalid(field, description))
}

fn only_keys(obj: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), Box<Resp>> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Box::new(google_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."
            ),
            None,
            vec![(at, "unknown field")],
        ))),
        None => Ok(()),
    }
}

fn object<'a>(v: &'a Value, at: &str) -> Result<Option<&'a Map<String, Value>>, Box<Resp>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(bad(at, "must be an object")),
    }
}

fn strings_only(m: &Map<String, Value>, at: &str) -> Result<(), Box<Resp>> {
    match m.iter().find(|(_, v)| !v.is_string()) {
        Some((k, _)) => Err(bad(&format!("{at}.{k}"), "values must be strings")),
        None => Ok(()),
    }
}

fn valid_duration(s: &str) -> Option<u64> {
    let num = s.strip_suffix('s')?;
    let (secs, frac) = num.split_once('.').unwrap_or((num, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    secs.parse().ok()
}

/// The v1 `Message` checks the fake makes; returns the message.
fn check_message(body: &Value) -> Result<&Value, Box<Resp>> {
    let top = object(body, "")?.ok_or_else(|| bad("", "body must be an object"))?;
    only_keys(top, "", &["message", "validate_only"])?;
    let message = &body["message"];
    let m = object(message, "message")?.ok_or_else(|| bad("message", "required"))?;
    only_keys(m, "message", &MESSAGE_KEYS)?;
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| m.contains_key(**t))
        .count();
    if targets != 1 {
        return Err(bad("message", "exactly one of token, topic, condition"));
    }
    if let Some(token) = m.get("token") {
        if token.as_str().is_none_or(str::is_empty) {
            return Err(bad(
                "message.token",
                "The registration token is not a valid FCM registration token",
            ));
        }
    }
    if let Some(data) = object(&message["data"], "message.data")? {
        strings_only(data, "message.data")?;
        if let Some(k) = data.keys().find(|k| reserved_data_key(k)) {
            return Err(bad(&format!("message.data.{k}"), "reserved key"));
        }
    }
    if let Some(n) = object(&message["notification"], "message.notification")? {
        only_keys(n, "message.notification", &NOTIFICATION_KEYS)?;
        strings_only(n, "message.notification")?;
    }
    let size = message["data"].to_string().len() + message["notification"].to_string().len();
    if size > MAX_MESSAGE_SIZE {
        return Err(bad("message", "Message is too big"));
    }
    if let Some(a) = object(&message["android"], "message.android")? {
        only_keys(a, "message.android", &ANDROID_KEYS)?;
        if let Some(ttl) = a.get("ttl") {
            match ttl.as_str().and_then(valid_duration) {
                Some(secs) if secs <= MAX_TTL_SECS => {}
                _ => return Err(bad("message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)")),
            }
        }
        if let Some(p) = a.get("priority") {
            if !matches!(p.as_str(), Some("NORMAL" | "HIGH")) {
                return Err(bad("message.android.priority", "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority)"));
            }
        }
        if a.get("collapse_key").is_some_and(|c| !c.is_string()) {
            return Err(bad("message.android.collapse_key", "must be a string"));
        }
        if let Some(n) = object(
            &message["android"]["notification"],
            "message.android.notification",
        )? {
            if n.get("tag").is_some_and(|t| !t.is_string()) {
                return Err(bad("message.android.notification.tag", "must be a string"));
            }
        }
    }
    if let Some(apns) = object(&message["apns"], "message.apns")? {
        only_keys(apns, "message.apns", &APNS_KEYS)?;
        if let Some(h) = object(&message["apns"]["headers"], "message.apns.headers")? {
            strings_only(h, "message.apns.headers")?;
        }
    }
    Ok(message)
}

/// What [`check_fast`] found in a message it accepts.
struct Fast<'a> {
    token: &'a str,
    collapse_key: Option<&'a str>,
}

const MESSAGE_KEYS: [&str; 10] = [
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
];
const ANDROID_KEYS: [&str; 8] = [
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
];
const NOTIFICATION_KEYS: [&str; 3] = ["title", "body", "image"];
const APNS_KEYS: [&str; 4] = ["headers", "payload", "fcm_options", "live_activity_token"];
const RESERVED_DATA_KEYS: [&str; 3] = ["from", "notification", "message_type"];
const MAX_MESSAGE_SIZE: usize = 4096;
const MAX_TTL_SECS: u64 = 28 * 24 * 3600;

fn reserved_data_key(k: &str) -> bool {
    RESERVED_DATA_KEYS.contains(&k) || k.starts_with("google") || k.starts_with("gcm")
}

fn ttl_ok(ttl: &str) -> bool {
    valid_duration(ttl).is_some_and(|secs| secs <= MAX_TTL_SECS)
}

/// [`check_message`]'s checks on a message to a token, without building a
/// `Value` tree: `Some` only when the body certainly passes them all, with
/// the token and collapse key borrowed from the body. Anything unusual (a
/// topic or condition, a duplicate key, which `Value` resolves last-wins,
/// an escaped token or collapse key, a body near the size limit, any
/// error) is `None`, and goes to `check_message` for the exact answer.
fn check_fast(body: &[u8]) -> Option<Fast<'_>> {
    // `check_message` limits the compact JSON of `data` + `notification`
    // (`null`, 4 bytes, when absent), which is never longer than as
    // written: a body this short always passes.
    if body.len() + 8 > MAX_MESSAGE_SIZE {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = Top::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(top.0)
}

/// `{"message": ..., "validate_only": ...}`.
struct Top<'a>(Fast<'a>);
/// A message to a token.
struct Message<'a>(Fast<'a>);
/// `message.data`: string values, no reserved keys.
struct Data;
/// `message.notification`: title, body, image, all strings.
struct Notification;
/// `message.android`, with its collapse key.
struct Android<'a>(Option<&'a str>);
/// `message.android.notification`: `tag`, if any, a string.
struct AndroidNotification;
/// `message.apns`: `headers`, if any, strings.
struct Apns;
/// An object of strings.
struct Strings;

/// Marks `i` seen in `seen`; an error when it was already.
fn once<E: de::Error>(seen: &mut u16, i: usize) -> Result<(), E> {
    if *seen & (1 << i) != 0 {
        return Err(bail());
    }
    *seen |= 1 << i;
    Ok(())
}

/// `impl Deserialize` for a type read as a JSON object by `visit_map`.
macro_rules! object_visitor {
    ($ty:ident $(<$lt:lifetime>)?, $what:literal, |$map:ident| $body:block) => {
        impl<'de> Deserialize<'de> for $ty $(<$lt>)? {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty $(<$lt>)?;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut $map: A,
                    ) -> Result<Self::Value, A::Error> {
                        $body
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

object_visitor!(Top<'de>, "an FCM send request", |map| {
    let (mut seen, mut message) = (0, None);
    while let Some(key) = map.next_key_seed(Key(&["message", "validate_only"]))? {
        let i = key.ok_or_else(bail)?;
        once(&mut seen, i)?;
        if i == 0 {
            message = Some(map.next_value::<Message>()?.0);
        } else {
            map.next_value::<Skip>()?;
        }
    }
    message.map(Top).ok_or_else(bail)
});

object_visitor!(Message<'de>, "an FCM message", |map| {
    let (mut seen, mut token, mut collapse_key) = (0, None, None);
    while let Some(key) = map.next_key_seed(Key(&MESSAGE_KEYS))? {
        let i = key.ok_or_else(bail)?;
        once(&mut seen, i)?;
        match MESSAGE_KEYS[i] {
            "data" => {
                map.next_value::<Option<Data>>()?;
            }
            "notification" => {
                map.next_value::<Option<Notification>>()?;
            }
            "android" => collapse_key = map.next_value::<Option<Android>>()?.and_then(|a| a.0),
            "apns" => {
                map.next_value::<Option<Apns>>()?;
            }
            "token" => match map.next_value::<Str>()?.0 {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Err(bail()),
            },
            "topic" | "condition" => return Err(bail()),
            _ => {
                map.next_value::<Skip>()?;
            }
        }
    }
    let token = token.ok_or_else(bail)?;
    Ok(Message(Fast {
        token,
        collapse_key,
    }))
});

object_visitor!(Data, "message.data", |map| {
    while let Some(reserved) = map.next_key_seed(StrCheck(reserved_data_key))? {
        if reserved {
            return Err(bail());
        }
        map.next_value::<AnyStr>()?;
    }
    Ok(Data)
});

object_visitor!(Notification, "message.notification", |map| {
    while let Some(key) = map.next_key_seed(Key(&NOTIFICATION_KEYS))? {
        key.ok_or_else(bail)?;
        map.next_value::<AnyStr>()?;
    }
    Ok(Notification)
});

object_visitor!(Android<'de>, "message.android", |map| {
    let (mut seen, mut collapse_key) = (0, None);
    while let Some(key) = map.next_key_seed(Key(&ANDROID_KEYS))? {
        let i = key.ok_or_else(bail)?;
        once(&mut seen, i)?;
        let ok = match ANDROID_KEYS[i] {
            "collapse_key" => {
                collapse_key = map.next_value::<Str>()?.0;
                collapse_key.is_some()
            }
            "priority" => map.next_value_seed(StrCheck(|p| matches!(p, "NORMAL" | "HIGH")))?,
            "ttl" => map.next_value_seed(StrCheck(ttl_ok))?,
            "notification" => {
                map.next_value::<Option<AndroidNotification>>()?;
                true
            }
            _ => {
                map.next_value::<Skip>()?;
                true
            }
        };
        if !ok {
            return Err(bail());
        }
    }
    Ok(Android(collapse_key))
});

object_visitor!(AndroidNotification, "message.android.notification", |map| {
    let mut seen = 0;
    while let Some(key) = map.next_key_seed(Key(&["tag"]))? {
        if key.is_some() {
            once(&mut seen, 0)?;
            map.next_value::<AnyStr>()?;
        } else {
            map.next_value::<Skip>()?;
        }
    }
    Ok(AndroidNotification)
});

object_visitor!(Apns, "message.apns", |map| {
    let mut seen = 0;
    while let Some(key) = map.next_key_seed(Key(&APNS_KEYS))? {
        let i = key.ok_or_else(bail)?;
        once(&mut seen, i)?;
        if i == 0 {
            map.next_value::<Option<Strings>>()?;
        } else {
            map.next_value::<Skip>()?;
        }
    }
    Ok(Apns)
});

object_visitor!(Strings, "an object of strings", |map| {
    while map.next_key::<AnyStr>()?.is_some() {
        map.next_value::<AnyStr>()?;
    }
    Ok(Strings)
});

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    type Outcome = Result<Option<(String, Option<String>)>, (u16, String)>;

    fn error(resp: &Resp) -> (u16, String) {
        let body = resp.body().clone();
        let bytes = futures_body(body);
        (
            resp.status().as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn futures_body(body: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(body.collect()).unwrap().to_bytes()
    }

    /// The reference: `Value` + `check_message`, as before the fast path.
    fn reference(body: &[u8]) -> Outcome {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                let resp = google_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid JSON payload received. {e}"),
                    None,
                    vec![],
                );
                return Err(error(&resp));
            }
        };
        let m = check_message(&value).map_err(|r| error(&r))?;
        Ok(m["token"].as_str().map(|t| {
            (
                t.to_owned(),
                m["android"]["collapse_key"].as_str().map(str::to_owned),
            )
        }))
    }

    fn actual(body: &[u8]) -> Outcome {
        accept(body)
            .map(|a| a.map(|a| (a.token.into_owned(), a.collapse_key.map(Cow::into_owned))))
            .map_err(|r| error(&r))
    }

    fn firmcast_body(token: &str) -> Value {
        json!({"message": {
            "token": token,
            "notification": {"title": "Buds 2.0.0", "body": "Buds 2.0.0: better."},
            "data": {"product": "Buds", "version": "2.0.0", "critical": "false"},
            "android": {
                "ttl": "259200s",
                "priority": "NORMAL",
                "collapse_key": "fw.Buds",
                "notification": {"tag": "fw.Buds"},
            },
            "apns": {"headers": {
                "apns-collapse-id": "fw.Buds",
                "apns-expiration": "1796224070",
                "apns-priority": "5",
                "apns-push-type": "alert",
            }},
        }})
    }

    #[test]
    fn fake_fcm_fast_path_agrees_with_check_message() {
        let base = firmcast_body("fcm-token-0001:APA91bxxxx");
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let mut push = |v: Value| bodies.push(serde_json::to_vec(&v).unwrap());
        push(base.clone());
        let edits: Vec<(&str, Value)> = vec![
            ("/validate_only", json!(true)),
            ("/message/topic", json!("news")),
            ("/message/condition", json!("'a' in topics")),
            ("/message/token", json!(null)),
            ("/message/token", json!("")),
            ("/message/token", json!(5)),
            ("/message/name", json!({"any": [1, 2.5, null]})),
            ("/message/webpush", json!({"n": -1})),
            ("/message/fcm_options", json!(null)),
            ("/message/foo", json!(1)),
            ("/foo", json!(1)),
            ("/message/data", json!(null)),
            ("/message/data", json!(5)),
            ("/message/data", json!([])),
            ("/message/data/n", json!(1)),
            ("/message/data/from", json!("me")),
            ("/message/data/google.x", json!("y")),
            ("/message/data/gcm", json!("y")),
            ("/message/data/message_type", json!("y")),
            ("/message/data/notification", json!("y")),
            ("/message/data/notes", json!("x".repeat(3500))),
            ("/message/data/notes", json!("x".repeat(4000))),
            ("/message/data/notes", json!("x".repeat(5000))),
            ("/message/notification", json!(null)),
            ("/message/notification", json!("x")),
            ("/message/notification/image", json!("https://x/y.png")),
            ("/message/notification/sound", json!("ding")),
            ("/message/notification/title", json!(1)),
            ("/message/android", json!(null)),
            ("/message/android", json!([])),
            ("/message/android/ttl", json!("3.5s")),
            ("/message/android/ttl", json!("0s")),
            ("/message/android/ttl", json!("2419200s")),
            ("/message/android/ttl", json!("2419201s")),
            ("/message/android/ttl", json!("1.1234567891s")),
            ("/message/android/ttl", json!("s")),
            ("/message/android/ttl", json!("abc")),
            ("/message/android/ttl", json!(5)),
            ("/message/android/ttl", json!(null)),
            ("/message/android/priority", json!("HIGH")),
            ("/message/android/priority", json!("LOW")),
            ("/message/android/priority", json!(null)),
            ("/message/android/collapse_key", json!(5)),
            ("/message/android/collapse_key", json!(null)),
            ("/message/android/collapse_key", json!("fw.\"q\"")),
            ("/message/android/notification", json!(null)),
            ("/message/android/notification", json!(5)),
            ("/message/android/notification/tag", json!(5)),
            ("/message/android/notification/tag", json!(null)),
            ("/message/android/notification/color", json!("#fff")),
            ("/message/android/restricted_package_name", json!(1)),
            ("/message/android/direct_boot_ok", json!(true)),
            ("/message/android/foo", json!(1)),
            ("/message/apns", json!(null)),
            ("/message/apns", json!(1)),
            ("/message/apns/headers", json!(null)),
            ("/message/apns/headers", json!([])),
            ("/message/apns/headers/x", json!(1)),
            ("/message/apns/payload", json!({"aps": {}})),
            ("/message/apns/foo", json!(1)),
            ("/message/token", json!("tok\"en\n")),
            ("/message/token", json!("tök€n")),
        ];
        for (pointer, value) in edits {
            let mut body = base.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut body
            } else {
                body.pointer_mut(parent).unwrap()
            };
            match target {
                Value::Object(m) => {
                    m.insert(key.to_owned(), value);
                }
                _ => panic!("{pointer}"),
            }
            push(body);
        }
        let mut no_token = base.clone();
        no_token["message"].as_object_mut().unwrap().remove("token");
        push(no_token.clone());
        no_token["message"]["topic"] = json!("news");
        push(no_token);
        let mut lean = base.clone();
        let m = lean["message"].as_object_mut().unwrap();
        for k in ["notification", "data", "android", "apns"] {
            m.remove(k);
        }
        push(lean);

        let text = String::from_utf8(bodies[0].clone()).unwrap();
        let raw: Vec<String> = vec![
            text.replace("\"token\"", "\"t\\u006fken\""),
            text.replace("\"collapse_key\"", "\"collapse\\u005fkey\""),
            text.replace("fcm-token-0001", "fcm-t\\u006fken-0001"),
            text.replace("\"fw.Buds\",\"notif", "\"fw.B\\u0075ds\",\"notif"),
            text.replace("\"priority\":\"NORMAL\"", "\"priority\":\"N\\u004fRMAL\""),
            text.replace("\"ttl\":\"259200s\"", "\"ttl\":\"25920\\u0030s\""),
            text.replace("{\"message\":{", "{\"message\":{\"token\":\"other\","),
            text.replace("\"ttl\":", "\"collapse_key\":\"first\",\"ttl\":"),
            text.replace("\"data\":{", "\"data\":{\"product\":\"dup\","),
            text.replace("\"data\":{", "\"data\":{\"from\":1,\"from\":\"x\","),
            text.replace(
                "{\"message\":",
                "{\"validate_only\":1,\"validate_only\":2,\"message\":",
            ),
            text.replace("\"tag\":", "\"tag\":1,\"tag\":"),
            text.replace("\"headers\":{", "\"headers\":null,\"headers\":{"),
            text.replace("\"message\":{", "\"message\":{\"name\":1e400,"),
            text.replace("\"message\":{", "\"message\":{\"name\":\"\\ud800\","),
            text.replace(
                "\"message\":{",
                &format!(
                    "\"message\":{{\"name\":{}1{},",
                    "[".repeat(200),
                    "]".repeat(200)
                ),
            ),
            text.replace("\"message\":{", "\"message\" : {\n "),
            format!("{text} x"),
            format!("{text}\n"),
            format!("[{text}]"),
            text[..text.len() - 1].to_owned(),
            "null".to_owned(),
            String::new(),
        ];
        bodies.extend(raw.into_iter().map(String::into_bytes));
        let mut bad_utf8 = text.clone().into_bytes();
        let at = text.find("Buds 2.0.0: better.").unwrap();
        bad_utf8[at] = 0xff;
        bodies.push(bad_utf8);

        let mut fast = 0;
        for body in &bodies {
            let expected = reference(body);
            assert_eq!(actual(body), expected, "{}", String::from_utf8_lossy(body));
            if let Some(f) = check_fast(body) {
                fast += 1;
                let (token, collapse) = expected.unwrap().unwrap();
                assert_eq!(f.token, token);
                assert_eq!(f.collapse_key, collapse.as_deref());
            }
        }
        // firmcast's shape, and the harmless variants, stay on the fast path.
        assert!(check_fast(&bodies[0]).is_some());
        assert!(fast >= 25, "only {fast} bodies on the fast path");
    }

    #[test]
    fn fake_fcm_deliveries_are_rebuilt_from_templates() {
        let mut state = State::default();
        let mut expected = Vec::new();
        for (i, body) in [
            firmcast_body("tok-1"),
            firmcast_body("tok-2"),
            json!({"message": {"token": "tok\u{e9}-3", "data": {"a": "b"}}}),
            firmcast_body("tok-4"),
        ]
        .iter()
        .enumerate()
        {
            let mut bytes = serde_json::to_vec(body).unwrap();
            if i == 2 {
                // An escaped token: its place in the body is not known.
                bytes = String::from_utf8(bytes)
                    .unwrap()
                    .replace('\u{e9}', "\\u00e9")
                    .into_bytes();
            }
            let accepted = accept(&bytes).unwrap().unwrap();
            assert_eq!(accepted.token_at.is_some(), i != 2);
            let span = state.tokens.push(&accepted.token);
            let template = state.templates.intern(
                &bytes,
                accepted.token_at.map(|at| (at, accepted.token.len())),
                accepted.collapse_key.as_deref(),
            );
            state.deliveries.push(Delivered {
                token: span,
                template,
                seq: i as u64 + 1,
                suffix: 0xab,
            });
            expected.push(body["message"].clone());
        }
        // tok-1, tok-2 and tok-4 share one template.
        assert_eq!(state.templates.items.len(), 2);
        for (d, message) in state.deliveries.iter().zip(&expected) {
            let got = state.delivery(d, "p");
            assert_eq!(&got.message, message);
            assert_eq!(got.token, message["token"].as_str().unwrap());
            assert_eq!(
                got.collapse_key.as_deref(),
                message["android"]["collapse_key"].as_str()
            );
            assert!(got.name.starts_with("projects/p/messages/0:"));
            assert!(got.name.ends_with("%00000000000000ab"));
        }
    }
}
