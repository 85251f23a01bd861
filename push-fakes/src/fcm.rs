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

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use ring::signature::RSA_PKCS1_2048_8192_SHA256;
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::jwt;
use crate::server::{self, json_response, Handler, Mode, Req, Resp};

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

#[derive(Default)]
struct State {
    issued: HashMap<String, Instant>,
    token_requests: usize,
    access_tokens_used: HashSet<String>,
    requests: HashMap<String, usize>,
    send_requests: usize,
    deliveries: Vec<FcmDelivery>,
    once: HashMap<String, VecDeque<FcmFault>>,
    always: HashMap<String, FcmFault>,
    next: u64,
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
        let handler: Handler = Arc::new(move |req| {
            let shared = handler_shared.clone();
            Box::pin(async move { handle(&shared, req).await })
        });
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
        self.shared.state().issued.clear();
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
        self.shared
            .state()
            .requests
            .get(token)
            .copied()
            .unwrap_or(0)
    }

    pub fn deliveries(&self) -> Vec<FcmDelivery> {
        self.shared.state().deliveries.clone()
    }

    pub fn delivered_to(&self, token: &str) -> usize {
        let state = self.shared.state();
        state.deliveries.iter().filter(|d| d.token == token).count()
    }

    pub fn delivered_with_collapse_key(&self, key: &str) -> usize {
        let state = self.shared.state();
        state
            .deliveries
            .iter()
            .filter(|d| d.collapse_key.as_deref() == Some(key))
            .count()
    }
}

async fn handle(shared: &Shared, req: Req) -> Resp {
    if req.path == "/token" {
        if req.method != Method::POST {
            return oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "POST only",
            );
        }
        return token_endpoint(shared, &req);
    }
    let prefix = "/v1/projects/";
    if let Some(rest) = req.path.strip_prefix(prefix) {
        if let Some(project) = rest.strip_suffix("/messages:send") {
            if req.method != Method::POST {
                return google_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed.",
                    None,
                    vec![],
                );
            }
            return send(shared, project, &req).await;
        }
    }
    google_error(StatusCode::NOT_FOUND, "Not found.", None, vec![])
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
        token
    };
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": ttl.as_secs(), "token_type": "Bearer"}),
    )
}

async fn send(shared: &Shared, project: &str, req: &Req) -> Resp {
    shared.state().send_requests += 1;
    let bearer = req
        .header("authorization")
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let authenticated = {
        let mut state = shared.state();
        if !bearer.is_empty() {
            state.access_tokens_used.insert(bearer.clone());
        }
        state
            .issued
            .get(&bearer)
            .is_some_and(|exp| *exp > Instant::now())
    };
    if !authenticated {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
            None,
            vec![],
        );
    }
    if project != shared.options.project_id {
        return google_error(
            StatusCode::FORBIDDEN,
            "Permission 'cloudmessaging.messages.create' denied on resource (or it may not exist).",
            None,
            vec![],
        );
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid JSON payload received. {e}"),
                None,
                vec![],
            )
        }
    };
    let message = match check_message(&body) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let Some(token) = message["token"].as_str().map(str::to_owned) else {
        // Topic and condition sends: accepted, not counted per token.
        return json_response(
            StatusCode::OK,
            &json!({"name": format!("projects/{project}/messages/0")}),
        );
    };
    *shared.state().requests.entry(token.clone()).or_default() += 1;

    let fault = {
        let mut state = shared.state();
        let once = state.once.get_mut(&token).and_then(VecDeque::pop_front);
        once.or_else(|| state.always.get(&token).cloned())
    };
    let retry_after = |mut resp: Resp, secs: Option<u64>| {
        if let Some(secs) = secs {
            resp.headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("digits"));
        }
        resp
    };
    match fault {
        None => {}
        Some(FcmFault::Delay(d)) => tokio::time::sleep(d).await,
        Some(FcmFault::Unregistered) => {
            return google_error(
                StatusCode::NOT_FOUND,
                "Requested entity was not found.",
                Some("UNREGISTERED"),
                vec![],
            )
        }
        Some(FcmFault::SenderIdMismatch) => {
            return google_error(
                StatusCode::FORBIDDEN,
                "SenderId mismatch",
                Some("SENDER_ID_MISMATCH"),
                vec![],
            )
        }
        Some(FcmFault::InvalidRegistration) => {
            return invalid(
                "message.token",
                "The registration token is not a valid FCM registration token",
            )
        }
        Some(FcmFault::QuotaExceeded { retry_after: secs }) => {
            let resp = google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Quota exceeded for quota metric 'Send requests'.",
                Some("QUOTA_EXCEEDED"),
                vec![],
            );
            return retry_after(resp, secs);
        }
        Some(FcmFault::Unavailable { retry_after: secs }) => {
            let resp = google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
                vec![],
            );
            return retry_after(resp, secs);
        }
        Some(FcmFault::Internal) => {
            return google_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error encountered.",
                Some("INTERNAL"),
                vec![],
            )
        }
        Some(FcmFault::ThirdPartyAuthError) => {
            return google_error(
                StatusCode::UNAUTHORIZED,
                "Auth error from APNS or Web Push Service",
                Some("THIRD_PARTY_AUTH_ERROR"),
                vec![],
            )
        }
    }

    let name = {
        let mut state = shared.state();
        state.next += 1;
        let name = format!(
            "projects/{project}/messages/0:{}%{}",
            state.next,
            jwt::random_hex(8)
        );
        state.deliveries.push(FcmDelivery {
            token,
            name: name.clone(),
            collapse_key: message["android"]["collapse_key"]
                .as_str()
                .map(str::to_owned),
            message: message.clone(),
        });
        name
    };
    json_response(StatusCode::OK, &json!({ "name": name }))
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
    only_keys(
        m,
        "message",
        &[
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
        ],
    )?;
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
        const RESERVED: [&str; 3] = ["from", "notification", "message_type"];
        if let Some(k) = data.keys().find(|k| {
            RESERVED.contains(&k.as_str()) || k.starts_with("google") || k.starts_with("gcm")
        }) {
            return Err(bad(&format!("message.data.{k}"), "reserved key"));
        }
    }
    if let Some(n) = object(&message["notification"], "message.notification")? {
        only_keys(n, "message.notification", &["title", "body", "image"])?;
        strings_only(n, "message.notification")?;
    }
    let size = message["data"].to_string().len() + message["notification"].to_string().len();
    if size > 4096 {
        return Err(bad("message", "Message is too big"));
    }
    if let Some(a) = object(&message["android"], "message.android")? {
        only_keys(
            a,
            "message.android",
            &[
                "collapse_key",
                "priority",
                "ttl",
                "restricted_package_name",
                "data",
                "notification",
                "fcm_options",
                "direct_boot_ok",
            ],
        )?;
        if let Some(ttl) = a.get("ttl") {
            match ttl.as_str().and_then(valid_duration) {
                Some(secs) if secs <= 28 * 24 * 3600 => {}
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
        only_keys(
            apns,
            "message.apns",
            &["headers", "payload", "fcm_options", "live_activity_token"],
        )?;
        if let Some(h) = object(&message["apns"]["headers"], "message.apns.headers")? {
            strings_only(h, "message.apns.headers")?;
        }
    }
    Ok(message)
}
