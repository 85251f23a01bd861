//! FCM sender: the HTTP v1 API,
//! `POST {base_url}/v1/projects/{project_id}/messages:send`, with an OAuth2
//! access token from the service account's `token_uri` (JWT-bearer grant,
//! RS256 assertion signed by the account's key).
//!
//! One [`FcmProvider`] holds a few HTTP/2 connections (`push/h2.rs`) and
//! one access token, fetched by the first send that needs it (the others
//! wait for it rather than fetching their own) and reused until shortly
//! before `expires_in`. A 401 refreshes it once and retries once; a second
//! 401 is a credential error. The message body is serialized once per
//! notice; each send only splices in its token.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{StatusCode, Uri};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use serde_json::{json, Value};

use super::h2::{H2Client, H2Settings};
use super::oneshot::OneShot;
use super::{
    compact_jws, excerpt, parse_retry_after, pem_to_der, read_ca_file, unix_now, FcmSettings,
    Notice, Prepared, Priority, Provider, SendOutcome,
};

/// The OAuth2 scope for sending with the v1 API.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Google's token endpoint, when a service account names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// FCM keeps a message at most 28 days.
pub const MAX_TTL: Duration = Duration::from_secs(28 * 24 * 3600);

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// Refresh this long before the access token expires (at most half its life).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The fields of a service-account JSON key file that the sender needs.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

fn default_token_uri() -> String {
    DEFAULT_TOKEN_URI.to_owned()
}

impl ServiceAccount {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading FCM service account {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a service-account JSON key", path.display()))
    }
}

/// Signs the JWT-bearer assertions that buy access tokens.
struct AssertionSigner {
    key: RsaKeyPair,
    key_id: Option<String>,
    client_email: String,
    token_uri: String,
    rng: SystemRandom,
}

impl AssertionSigner {
    fn new(account: &ServiceAccount) -> anyhow::Result<Self> {
        let der = pem_to_der(&account.private_key, "PRIVATE KEY")
            .context("reading the service account's private_key")?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| {
            anyhow!("the service account's private_key is not a PKCS#8 RSA key: {e}")
        })?;
        Ok(AssertionSigner {
            key,
            key_id: account.private_key_id.clone(),
            client_email: account.client_email.clone(),
            token_uri: account.token_uri.clone(),
            rng: SystemRandom::new(),
        })
    }

    fn sign(&self, iat: u64) -> anyhow::Result<String> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": FCM_SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        compact_jws(&header, &claims, |input| {
            let mut signature = vec![0; self.key.public().modulus_len()];
            self.key
                .sign(&RSA_PKCS1_SHA256, &self.rng, input, &mut signature)
                .map_err(|_| anyhow!("RS256 signing failed"))?;
            Ok(signature)
        })
    }
}

#[derive(Clone)]
struct AccessToken {
    /// `Bearer {access token}`, ready for every request.
    authorization: HeaderValue,
    generation: u64,
    refresh_at: tokio::time::Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The FCM [`Provider`].
pub struct FcmProvider {
    /// For the OAuth token endpoint: the senders' roots and timeouts, one
    /// connection per exchange (`push/oneshot.rs`).
    client: OneShot,
    sender: H2Client,
    send_uri: Uri,
    signer: AssertionSigner,
    /// The current token, read by every send without waiting.
    token: Mutex<Option<AccessToken>>,
    /// Held while fetching, so one send fetches and the others wait.
    fetching: tokio::sync::Mutex<()>,
    fetched: AtomicU64,
}

impl std::fmt::Debug for FcmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmProvider")
            .field("send_uri", &self.send_uri)
            .field("token_uri", &self.signer.token_uri)
            .finish_non_exhaustive()
    }
}

impl FcmProvider {
    /// From `[push.fcm]`: reads `service_account_file` and, when set, `ca_file`.
    pub fn from_settings(settings: &FcmSettings) -> anyhow::Result<Self> {
        let account = ServiceAccount::from_file(&settings.service_account_file)?;
        let ca = read_ca_file(&settings.ca_file, "FCM")?;
        Self::build(
            &settings.base_url,
            &account,
            ca.as_deref(),
            settings.connections,
        )
    }

    pub fn new(base_url: &str, account: &ServiceAccount) -> anyhow::Result<Self> {
        Self::build(base_url, account, None, super::DEFAULT_CONNECTIONS)
    }

    fn build(
        base_url: &str,
        account: &ServiceAccount,
        extra_roots_pem: Option<&[u8]>,
        connections: usize,
    ) -> anyhow::Result<Self> {
        if account.project_id.is_empty() || account.client_email.is_empty() {
            anyhow::bail!("the service account has no project_id or client_email");
        }
        let sender = H2Client::new(&H2Settings {
            name: "FCM",
            base_url,
            extra_roots_pem,
            connections,
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        })
        .context("FCM base_url")?;
        let send_uri = sender
            .uri(&format!(
                "/v1/projects/{}/messages:send",
                account.project_id
            ))
            .map_err(|e| anyhow!("the service account's project_id: {e}"))?;
        Ok(FcmProvider {
            client: OneShot::new(extra_roots_pem, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
                .context("FCM ca_file")?,
            sender,
            send_uri,
            signer: AssertionSigner::new(account)?,
            token: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetched: AtomicU64::new(0),
        })
    }

    /// How many access tokens this instance has fetched (for metrics and
    /// tests: one per token lifetime, not one per send).
    pub fn access_tokens_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The current token unless it is due for refresh or is `stale`.
    fn cached(&self, stale_generation: Option<u64>) -> Option<AccessToken> {
        let slot = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref()
            .filter(|t| {
                tokio::time::Instant::now() < t.refresh_at && Some(t.generation) != stale_generation
            })
            .cloned()
    }

    /// The cached access token, fetched when missing or about to expire.
    async fn access_token(&self) -> Result<AccessToken, SendOutcome> {
        if let Some(token) = self.cached(None) {
            return Ok(token);
        }
        // Boxed, here and below: the OAuth exchange is a future of several
        // KiB that every send's future would carry.
        Box::pin(self.fetch_unless_fresh(None)).await
    }

    /// A new access token to replace the one of `stale_generation` that FCM
    /// rejected; when another send already replaced it, that one.
    async fn refresh_access_token(
        &self,
        stale_generation: u64,
    ) -> Result<AccessToken, SendOutcome> {
        Box::pin(self.fetch_unless_fresh(Some(stale_generation))).await
    }

    async fn fetch_unless_fresh(
        &self,
        stale_generation: Option<u64>,
    ) -> Result<AccessToken, SendOutcome> {
        let _fetching = self.fetching.lock().await;
        if let Some(token) = self.cached(stale_generation) {
            return Ok(token); // fetched by the send we waited for
        }
        let previous = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |t| t.generation);
        let token = self.fetch(previous + 1).await?;
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        Ok(token)
    }

    async fn fetch(&self, generation: u64) -> Result<AccessToken, SendOutcome> {
        let assertion = self
            .signer
            .sign(unix_now())
            .map_err(|e| fatal("oauth", format!("signing the OAuth assertion: {e:#}")))?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", JWT_BEARER)
            .append_pair("assertion", &assertion)
            .finish();
        let answer = self
            .client
            .post(
                &self.signer.token_uri,
                "application/x-www-form-urlencoded",
                Bytes::from(form),
            )
            .await
            .map_err(|e| match e.code {
                "bad_url" => fatal("oauth", format!("the service account's token_uri: {e}")),
                code => SendOutcome::retry(code, format!("OAuth token endpoint: {e}")),
            })?;
        let (status, headers) = (answer.status, &answer.headers);
        let body = answer.text();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(SendOutcome::Retry {
                after: parse_retry_after(headers),
                code: format!("oauth_http_{}", status.as_u16()),
                reason: format!("OAuth token endpoint {status}"),
            });
        }
        if !status.is_success() {
            // invalid_grant (bad key, unknown account, clock), invalid_scope, ...
            return Err(fatal(
                "oauth_refused",
                format!(
                    "OAuth token endpoint refused the service account: {status} {}",
                    excerpt(&body)
                ),
            ));
        }
        let parsed: TokenResponse = serde_json::from_str(&body)
            .map_err(|e| fatal("oauth", format!("OAuth token response: {e}")))?;
        if parsed.access_token.is_empty() {
            return Err(fatal("oauth", "OAuth token response without access_token"));
        }
        let authorization = HeaderValue::from_str(&format!("Bearer {}", parsed.access_token))
            .map_err(|_| fatal("oauth", "the OAuth access token is not a header value"))?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS));
        self.fetched.fetch_add(1, Ordering::Relaxed);
        Ok(AccessToken {
            authorization,
            generation,
            refresh_at: tokio::time::Instant::now() + lifetime - REFRESH_MARGIN.min(lifetime / 2),
        })
    }

    async fn post(&self, body: Bytes, token: &AccessToken) -> Answer {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(AUTHORIZATION, token.authorization.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self.sender.post(self.send_uri.clone(), headers, body).await {
            Ok(answer) => classify(answer.status, &answer.headers, &answer.text()),
            Err(e) => Answer::Done(e.into_retry("FCM")),
        }
    }
}

#[async_trait]
impl Provider for FcmProvider {
    fn name(&self) -> &'static str {
        "fcm"
    }

    fn prepare(&self, notice: &Notice) -> Result<Prepared, String> {
        MessageTemplate::new(notice).map(Prepared::new)
    }

    fn backoff(&self, outcome: &SendOutcome) -> Option<Duration> {
        match outcome {
            // The project's quota is spent: FCM answers the same to every
            // send until its window turns.
            SendOutcome::Retry { code, after, .. } if code == "QUOTA_EXCEEDED" => {
                Some(after.unwrap_or(Duration::from_secs(1)))
            }
            SendOutcome::Retry { after, .. } => *after,
            _ => None,
        }
    }

    fn mixup(&self, code: &str) -> Option<&'static str> {
        (code == "SENDER_ID_MISMATCH").then_some(
            "most registration tokens were refused as SENDER_ID_MISMATCH: they belong to \
             another Firebase project; is [push.fcm] service_account_file the app's \
             project? no token was deleted",
        )
    }

    async fn send_prepared(&self, prepared: &Prepared, device: &str) -> SendOutcome {
        if device.is_empty() {
            return SendOutcome::dead("INVALID_ARGUMENT", "empty FCM registration token");
        }
        let Some(template) = prepared.get::<MessageTemplate>() else {
            return fatal(
                "payload",
                "a notice prepared by another provider was given to FCM",
            );
        };
        let body = template.body_for(device);
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        match self.post(body.clone(), &token).await {
            Answer::Done(outcome) => outcome,
            Answer::Unauthenticated(_) => {
                let token = match self.refresh_access_token(token.generation).await {
                    Ok(token) => token,
                    Err(outcome) => return outcome,
                };
                match self.post(body, &token).await {
                    Answer::Done(outcome) => outcome,
                    Answer::Unauthenticated(reason) => fatal(
                        "UNAUTHENTICATED",
                        format!("FCM 401 with a fresh access token: {reason}"),
                    ),
                }
            }
        }
    }
}

fn fatal(code: &str, reason: impl Into<String>) -> SendOutcome {
    SendOutcome::fatal(code, reason)
}

/// The v1 `messages:send` body of one notice, serialized once and split
/// where each send puts its token: `{"message":{"token":` + the token as a
/// JSON string + the rest.
struct MessageTemplate {
    head: &'static [u8],
    tail: Vec<u8>,
}

impl MessageTemplate {
    const HEAD: &'static [u8] = br#"{"message":{"token":"#;

    fn new(notice: &Notice) -> Result<Self, String> {
        let without_token = message_body(notice)?.to_string();
        // Serializes as `{"message":{...}}`; keep what follows the `{` that
        // opens `message`, after a comma for the token before it.
        let rest = without_token
            .strip_prefix(r#"{"message":{"#)
            .ok_or("the FCM message did not serialize as an object")?;
        let mut tail = Vec::with_capacity(rest.len() + 1);
        tail.push(b',');
        tail.extend_from_slice(rest.as_bytes());
        Ok(MessageTemplate {
            head: Self::HEAD,
            tail,
        })
    }

    fn body_for(&self, token: &str) -> Bytes {
        let mut body = Vec::with_capacity(self.head.len() + token.len() + 2 + self.tail.len());
        body.extend_from_slice(self.head);
        serde_json::to_writer(&mut body, token).expect("a string serializes into a Vec");
        body.extend_from_slice(&self.tail);
        Bytes::from(body)
    }
}

/// The v1 `messages:send` body without `message.token`.
fn message_body(msg: &Notice) -> Result<Value, String> {
    let ttl = msg.ttl_remaining(Utc::now()).min(MAX_TTL);
    let expiration = if ttl.is_zero() {
        0
    } else {
        msg.expires_at.timestamp()
    };
    let (android_priority, apns_priority) = match msg.priority {
        Priority::High => ("HIGH", "10"),
        Priority::Normal => ("NORMAL", "5"),
    };
    if msg.collapse_id.len() > super::MAX_COLLAPSE_ID_BYTES {
        return Err(format!(
            "collapse id longer than {} bytes",
            super::MAX_COLLAPSE_ID_BYTES
        ));
    }
    Ok(json!({
        "message": {
            "notification": {"title": msg.title, "body": msg.body},
            "data": msg.data,
            "android": {
                "ttl": format!("{}s", ttl.as_secs()),
                "priority": android_priority,
                // Collapses pending messages on FCM's side ...
                "collapse_key": msg.collapse_id,
                // ... and replaces a notice already shown on the device.
                "notification": {"tag": msg.collapse_id},
            },
            "apns": {
                "headers": {
                    "apns-collapse-id": msg.collapse_id,
                    "apns-expiration": expiration.to_string(),
                    "apns-priority": apns_priority,
                    "apns-push-type": "alert",
                },
            },
        }
    }))
}

enum Answer {
    Done(SendOutcome),
    /// 401: the access token was refused; refresh it and send again, once.
    Unauthenticated(String),
}

#[derive(Deserialize)]
struct SentBody {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorEnvelope {
    #[serde(default)]
    error: GoogleError,
}

#[derive(Deserialize, Default)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
    #[serde(default, rename = "fieldViolations")]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize, Default)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

/// Status and v1 error body to an outcome. See Google's `ErrorCode`
/// reference for FCM v1.
fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Answer {
    if status.is_success() {
        let id = serde_json::from_str::<SentBody>(body)
            .ok()
            .and_then(|sent| sent.name);
        return Answer::Done(SendOutcome::Sent { id });
    }
    let envelope: ErrorEnvelope = serde_json::from_str(body).unwrap_or_default();
    let error = envelope.error;
    let code = error
        .details
        .iter()
        .find_map(|d| d.error_code.clone())
        .unwrap_or_else(|| error.status.clone());
    // Google names every refusal; a bare status is a proxy or a mistake.
    let code = match code.is_empty() {
        true => format!("http_{}", status.as_u16()),
        false => code,
    };
    let reason = if error.message.is_empty() {
        format!("{status} {code} {}", excerpt(body))
    } else {
        format!("{code}: {}", error.message)
    };
    let bad_token_field = error
        .details
        .iter()
        .flat_map(|d| &d.field_violations)
        .any(|v| v.field == "message.token");
    let retry = |reason: String| SendOutcome::Retry {
        after: parse_retry_after(headers),
        code: code.clone(),
        reason,
    };
    let outcome = match code.as_str() {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => SendOutcome::dead(code.clone(), reason),
        // A malformed registration token is as dead as an unregistered one;
        // any other invalid argument is our payload's fault.
        "INVALID_ARGUMENT" if bad_token_field => SendOutcome::dead(code.clone(), reason),
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" => retry(reason),
        // The APNs certificate or key uploaded to Firebase was refused.
        "THIRD_PARTY_AUTH_ERROR" => fatal(&code, reason),
        _ if status == StatusCode::UNAUTHORIZED => return Answer::Unauthenticated(reason),
        _ if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => retry(reason),
        // INVALID_ARGUMENT, PERMISSION_DENIED (403), NOT_FOUND project, ...
        _ => fatal(&code, format!("FCM {}: {reason}", status.as_u16())),
    };
    Answer::Done(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::PushMessage;

    /// The body a send of `msg` puts on the wire.
    fn wire_body(msg: &PushMessage) -> Value {
        let template = MessageTemplate::new(&msg.notice).unwrap();
        serde_json::from_slice(&template.body_for(&msg.token)).unwrap()
    }

    #[test]
    fn message_body_follows_v1_shape() {
        let msg = PushMessage::update_available("tok", "WH-1000XM5", "2.2.0", false, "T", "B")
            .with_ttl(Duration::from_secs(3600));
        let body = wire_body(&msg);
        let m = &body["message"];
        assert_eq!(m["token"], "tok");
        assert_eq!(m["notification"], json!({"title": "T", "body": "B"}));
        assert_eq!(
            m["data"],
            json!({"product": "WH-1000XM5", "version": "2.2.0", "critical": "false"})
        );
        let ttl: u64 = m["android"]["ttl"]
            .as_str()
            .unwrap()
            .trim_end_matches('s')
            .parse()
            .unwrap();
        assert!((3590..=3600).contains(&ttl), "{ttl}");
        assert_eq!(m["android"]["priority"], "NORMAL");
        assert_eq!(m["android"]["collapse_key"], "fw.WH-1000XM5");
        assert_eq!(m["android"]["notification"]["tag"], "fw.WH-1000XM5");
        assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "fw.WH-1000XM5");
        assert_eq!(m["apns"]["headers"]["apns-priority"], "5");
    }

    #[test]
    fn ttl_is_capped_at_28_days() {
        let msg = PushMessage::update_available("tok", "P", "1.0.0", true, "T", "B")
            .with_ttl(Duration::from_secs(90 * 24 * 3600));
        let body = wire_body(&msg);
        assert_eq!(body["message"]["android"]["ttl"], "2419200s");
        assert_eq!(body["message"]["android"]["priority"], "HIGH");
    }

    #[test]
    fn the_token_is_spliced_in_as_a_json_string() {
        let msg = PushMessage::update_available(r#"a"b\c"#, "P", "1.0.0", false, "T", "B");
        let body = wire_body(&msg);
        assert_eq!(body["message"]["token"], r#"a"b\c"#);
        assert_eq!(body["message"]["notification"]["title"], "T");
    }
}
