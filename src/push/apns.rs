//! APNs sender: `POST {base_url}/3/device/{token}` over HTTP/2 + TLS with a
//! provider token (JWT ES256 signed by the team's .p8 key).
//!
//! One [`ApnsProvider`] holds one HTTP/2 client (Apple wants long-lived
//! connections, many streams on each) and one provider token behind a lock,
//! re-signed every [`TOKEN_REFRESH_AFTER`] and shared by every send in
//! flight. On `403 ExpiredProviderToken` the token is refreshed once (by the
//! first send to see it; the others pick up the new one) and the send retried
//! once.
//!
//! The JSON payload and the headers are built once per notice
//! ([`Provider::prepare`]) from a few serde structs of Apple's documented
//! shape; the HTTP/2 is ours (`push/h2.rs`: h2 over rustls, a few
//! connections).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

use super::h2::{H2Client, H2Settings};
use super::{
    compact_jws, excerpt, parse_retry_after, pem_to_der, read_ca_file, unix_now, ApnsSettings,
    Notice, Prepared, Priority, Provider, SendOutcome,
};

/// Age at which the provider token is re-signed. Apple rejects tokens older
/// than an hour (`ExpiredProviderToken`) and refreshes more often than every
/// 20 minutes (`TooManyProviderTokenUpdates`).
pub const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(40 * 60);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Signs APNs provider tokens: ES256 JWTs with `kid` = key id,
/// `iss` = team id, `iat` = now.
pub struct ApnsTokenSigner {
    key: EcdsaKeyPair,
    key_id: String,
    team_id: String,
    rng: SystemRandom,
}

impl ApnsTokenSigner {
    /// From the team's `.p8` file contents (PEM, PKCS#8 EC P-256).
    pub fn from_pkcs8_pem(pem: &str, key_id: &str, team_id: &str) -> anyhow::Result<Self> {
        let der = pem_to_der(pem, "PRIVATE KEY").context("reading the APNs .p8 key")?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| anyhow!("the APNs key is not a PKCS#8 EC P-256 key: {e}"))?;
        if key_id.is_empty() || team_id.is_empty() {
            anyhow::bail!("APNs key_id and team_id must be set");
        }
        Ok(ApnsTokenSigner {
            key,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            rng,
        })
    }

    /// A provider token issued at `iat` (seconds since the epoch).
    pub fn sign(&self, iat: u64) -> anyhow::Result<String> {
        compact_jws(
            &json!({"alg": "ES256", "kid": self.key_id}),
            &json!({"iss": self.team_id, "iat": iat}),
            |input| {
                self.key
                    .sign(&self.rng, input)
                    .map(|sig| sig.as_ref().to_vec())
                    .map_err(|_| anyhow!("ES256 signing failed"))
            },
        )
    }
}

#[derive(Clone)]
struct ProviderToken {
    /// `bearer {jwt}`, ready for every request.
    authorization: HeaderValue,
    generation: u64,
    minted: tokio::time::Instant,
}

/// The one cached provider token every send shares.
struct ProviderTokens {
    signer: ApnsTokenSigner,
    refresh_after: Duration,
    cached: Mutex<Option<ProviderToken>>,
    signed: AtomicU64,
}

impl ProviderTokens {
    fn new(signer: ApnsTokenSigner, refresh_after: Duration) -> Self {
        ProviderTokens {
            signer,
            refresh_after,
            cached: Mutex::new(None),
            signed: AtomicU64::new(0),
        }
    }

    /// The cached token, re-signed when it is `refresh_after` old.
    fn current(&self) -> anyhow::Result<ProviderToken> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        match cached.as_ref() {
            Some(token) if token.minted.elapsed() < self.refresh_after => Ok(token.clone()),
            _ => self.mint(&mut cached),
        }
    }

    /// A new token to replace the one of `stale_generation` that APNs
    /// called expired; when another send already replaced it, that one.
    fn refresh(&self, stale_generation: u64) -> anyhow::Result<ProviderToken> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        match cached.as_ref() {
            Some(token) if token.generation != stale_generation => Ok(token.clone()),
            _ => self.mint(&mut cached),
        }
    }

    fn mint(&self, slot: &mut Option<ProviderToken>) -> anyhow::Result<ProviderToken> {
        let jwt = self.signer.sign(unix_now())?;
        let authorization = HeaderValue::from_str(&format!("bearer {jwt}"))
            .context("the provider token is not a header value")?;
        self.signed.fetch_add(1, Ordering::Relaxed);
        let token = ProviderToken {
            authorization,
            generation: slot.as_ref().map_or(1, |t| t.generation + 1),
            minted: tokio::time::Instant::now(),
        };
        *slot = Some(token.clone());
        Ok(token)
    }
}

/// The APNs [`Provider`].
pub struct ApnsProvider {
    client: H2Client,
    base_url: String,
    topic: String,
    tokens: ProviderTokens,
}

impl std::fmt::Debug for ApnsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsProvider")
            .field("base_url", &self.base_url)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ApnsProvider {
    /// From `[push.apns]`: reads `key_file` and, when set, `ca_file`.
    pub fn from_settings(settings: &ApnsSettings) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(&settings.key_file)
            .with_context(|| format!("reading APNs key {}", settings.key_file.display()))?;
        let signer = ApnsTokenSigner::from_pkcs8_pem(&pem, &settings.key_id, &settings.team_id)?;
        let ca = read_ca_file(&settings.ca_file, "APNs")?;
        Self::with_connections(
            &settings.base_url,
            &settings.topic,
            signer,
            ca.as_deref(),
            settings.connections,
        )
    }

    /// `extra_root_pem`: PEM certificates trusted besides the web PKI roots.
    pub fn new(
        base_url: &str,
        topic: &str,
        signer: ApnsTokenSigner,
        extra_root_pem: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        Self::with_connections(
            base_url,
            topic,
            signer,
            extra_root_pem,
            super::DEFAULT_CONNECTIONS,
        )
    }

    fn with_connections(
        base_url: &str,
        topic: &str,
        signer: ApnsTokenSigner,
        extra_root_pem: Option<&[u8]>,
        connections: usize,
    ) -> anyhow::Result<Self> {
        if topic.is_empty() {
            anyhow::bail!("APNs topic (the app's bundle id) must be set");
        }
        HeaderValue::from_str(topic).context("APNs topic is not a valid header value")?;
        let client = H2Client::new(&H2Settings {
            name: "APNs",
            base_url,
            extra_roots_pem: extra_root_pem,
            connections,
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        })
        .context("APNs base_url")?;
        Ok(ApnsProvider {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            topic: topic.to_owned(),
            tokens: ProviderTokens::new(signer, TOKEN_REFRESH_AFTER),
        })
    }

    /// How many provider tokens this instance has signed (for metrics and
    /// tests: about one per [`TOKEN_REFRESH_AFTER`], not one per send).
    pub fn tokens_signed(&self) -> u64 {
        self.tokens.signed.load(Ordering::Relaxed)
    }

    async fn post(&self, device: &str, request: &ApnsRequest, token: &ProviderToken) -> Answer {
        let uri = match self.client.uri(&format!("/3/device/{device}")) {
            Ok(uri) => uri,
            Err(e) => return Answer::Done(fatal("bad_request", format!("APNs request: {e}"))),
        };
        let mut headers = request.headers.clone();
        headers.insert(AUTHORIZATION, token.authorization.clone());
        match self
            .client
            .post(uri, headers, request.payload.clone())
            .await
        {
            Ok(answer) => classify(answer.status, &answer.headers, &answer.text()),
            Err(e) => Answer::Done(e.into_retry("APNs")),
        }
    }
}

#[async_trait]
impl Provider for ApnsProvider {
    fn name(&self) -> &'static str {
        "apns"
    }

    fn prepare(&self, notice: &Notice) -> Result<Prepared, String> {
        ApnsRequest::build(notice, &self.topic).map(Prepared::new)
    }

    fn backoff(&self, outcome: &SendOutcome) -> Option<Duration> {
        match outcome {
            // Too many notices to one device: that device's business.
            SendOutcome::Retry { code, .. } if code == "TooManyRequests" => None,
            SendOutcome::Retry { after, .. } => *after,
            _ => None,
        }
    }

    fn mixup(&self, code: &str) -> Option<&'static str> {
        (code == "BadDeviceToken").then_some(
            "most device tokens were refused as BadDeviceToken: are development \
             (sandbox) tokens going to production, or the reverse? [push.apns] base_url \
             is api.push.apple.com for App Store and TestFlight builds, \
             api.sandbox.push.apple.com for development builds; no token was deleted",
        )
    }

    async fn send_prepared(&self, prepared: &Prepared, device: &str) -> SendOutcome {
        if !is_device_token(device) {
            return SendOutcome::dead("BadDeviceToken", "malformed APNs device token (not hex)");
        }
        let Some(request) = prepared.get::<ApnsRequest>() else {
            return fatal(
                "payload",
                "a notice prepared by another provider was given to APNs",
            );
        };
        let token = match self.tokens.current() {
            Ok(token) => token,
            Err(e) => {
                return fatal(
                    "provider_token",
                    format!("signing the APNs provider token: {e:#}"),
                )
            }
        };
        match self.post(device, request, &token).await {
            Answer::Done(outcome) => outcome,
            Answer::ExpiredProviderToken => {
                let token = match self.tokens.refresh(token.generation) {
                    Ok(token) => token,
                    Err(e) => {
                        return fatal(
                            "provider_token",
                            format!("signing the APNs provider token: {e:#}"),
                        )
                    }
                };
                match self.post(device, request, &token).await {
                    Answer::Done(outcome) => outcome,
                    Answer::ExpiredProviderToken => fatal(
                        "ExpiredProviderToken",
                        "APNs 403 ExpiredProviderToken right after a refresh: \
                         check the clock and the key",
                    ),
                }
            }
        }
    }
}

fn fatal(code: &str, reason: impl Into<String>) -> SendOutcome {
    SendOutcome::fatal(code, reason)
}

/// APNs device tokens are hex (64 digits today; Apple says not to assume
/// the length). Anything else cannot be put in the path safely.
fn is_device_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 512 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Body and headers (all but `authorization`) of one notice, built once
/// and sent to every device token it goes to.
struct ApnsRequest {
    payload: Bytes,
    headers: HeaderMap,
}

/// `{"aps": {"alert": {"title", "body"}}, <custom data>...}`, Apple's
/// "Generating a remote notification" shape for an alert.
#[derive(Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
    #[serde(flatten)]
    data: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Aps<'a> {
    alert: Alert<'a>,
}

#[derive(Serialize)]
struct Alert<'a> {
    title: &'a str,
    body: &'a str,
}

impl ApnsRequest {
    fn build(msg: &Notice, topic: &str) -> Result<Self, String> {
        if msg.collapse_id.len() > super::MAX_COLLAPSE_ID_BYTES {
            return Err(format!(
                "the collapse id is {} bytes; APNs takes at most {}",
                msg.collapse_id.len(),
                super::MAX_COLLAPSE_ID_BYTES
            ));
        }
        if msg.data.contains_key("aps") {
            return Err("custom data may not use the key `aps`".into());
        }
        let expiration = if msg.expires_at <= Utc::now() {
            0 // expired: deliver now or never, APNs does not store it
        } else {
            msg.expires_at.timestamp()
        };
        let payload = Payload {
            aps: Aps {
                alert: Alert {
                    title: &msg.title,
                    body: &msg.body,
                },
            },
            data: &msg.data,
        };
        let json = serde_json::to_vec(&payload).map_err(|e| format!("APNs payload: {e}"))?;

        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| -> Result<(), String> {
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("{name} is not a valid header value: {value:?}"))?;
            headers.insert(name, value);
            Ok(())
        };
        put("apns-topic", topic)?;
        put("apns-push-type", "alert")?;
        put("apns-expiration", &expiration.to_string())?;
        put(
            "apns-priority",
            match msg.priority {
                Priority::High => "10",
                Priority::Normal => "5",
            },
        )?;
        put("apns-collapse-id", &msg.collapse_id)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(ApnsRequest {
            payload: Bytes::from(json),
            headers,
        })
    }
}

enum Answer {
    Done(SendOutcome),
    /// 403 ExpiredProviderToken: refresh the token and send again, once.
    ExpiredProviderToken,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    reason: String,
    /// Milliseconds since the epoch (410 only).
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
}

/// APNs status and `reason` to an outcome. See Apple's "Handling
/// notification responses from APNs".
fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Answer {
    let apns_id = headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status.is_success() {
        return Answer::Done(SendOutcome::Sent { id: apns_id });
    }
    let error: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    // APNs names every refusal; a bare status is a proxy or a mistake.
    let code = if error.reason.is_empty() {
        format!("http_{}", status.as_u16())
    } else {
        error.reason.clone()
    };
    let reason = if error.reason.is_empty() {
        format!("{status} {}", excerpt(body))
    } else {
        error.reason.clone()
    };
    let outcome = match (status.as_u16(), error.reason.as_str()) {
        (403, "ExpiredProviderToken") => return Answer::ExpiredProviderToken,
        // Unregistered (and ExpiredToken): dead since `timestamp`.
        (410, _) => SendOutcome::DeadToken {
            code,
            reason,
            since: error.timestamp.as_ref().and_then(millis_to_time),
        },
        (400, "BadDeviceToken") => SendOutcome::dead(code, reason),
        // TooManyRequests (to this device), TooManyProviderTokenUpdates.
        (429, _) => SendOutcome::Retry {
            after: parse_retry_after(headers),
            code,
            reason,
        },
        // InternalServerError, ServiceUnavailable, Shutdown.
        (500..=599, _) => SendOutcome::Retry {
            after: parse_retry_after(headers),
            code,
            reason,
        },
        // PayloadTooLarge, Bad*, Missing*, TopicDisallowed, InvalidProviderToken,
        // Forbidden, BadPath, ...: our payload, configuration or credentials.
        (status, _) => SendOutcome::fatal(code, format!("APNs {status} {reason}")),
    };
    Answer::Done(outcome)
}

fn millis_to_time(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    let millis = match value {
        serde_json::Value::Number(n) => n.as_i64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::PushMessage;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    fn test_signer() -> ApnsTokenSigner {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8.as_ref())
        );
        ApnsTokenSigner::from_pkcs8_pem(&pem, "KEYID12345", "TEAMID1234").unwrap()
    }

    #[tokio::test]
    async fn provider_token_is_cached_and_re_signed_at_forty_minutes() {
        tokio::time::pause();
        let tokens = ProviderTokens::new(test_signer(), TOKEN_REFRESH_AFTER);
        let first = tokens.current().unwrap();
        tokio::time::advance(Duration::from_secs(39 * 60)).await;
        assert_eq!(tokens.current().unwrap().authorization, first.authorization);
        assert_eq!(tokens.signed.load(Ordering::Relaxed), 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        let second = tokens.current().unwrap();
        assert_ne!(second.authorization, first.authorization);
        assert_eq!(second.generation, first.generation + 1);
        assert_eq!(tokens.signed.load(Ordering::Relaxed), 2);
        assert!(TOKEN_REFRESH_AFTER >= Duration::from_secs(20 * 60));
        assert!(TOKEN_REFRESH_AFTER < Duration::from_secs(60 * 60));
    }

    #[test]
    fn concurrent_refreshes_of_one_stale_token_sign_once() {
        let tokens = ProviderTokens::new(test_signer(), TOKEN_REFRESH_AFTER);
        let stale = tokens.current().unwrap();
        let a = tokens.refresh(stale.generation).unwrap();
        let b = tokens.refresh(stale.generation).unwrap();
        assert_eq!(a.authorization, b.authorization);
        assert_ne!(a.authorization, stale.authorization);
        assert_eq!(tokens.signed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn payload_and_headers_follow_apns_shape() {
        let msg = PushMessage::update_available("ab12", "WH-1000XM5", "2.2.0", true, "T", "B");
        let request = ApnsRequest::build(&msg.notice, "com.example.app").unwrap();
        let json: serde_json::Value = serde_json::from_slice(&request.payload).unwrap();
        assert_eq!(json["aps"]["alert"], json!({"title": "T", "body": "B"}));
        assert_eq!(json["product"], "WH-1000XM5");
        assert_eq!(json["version"], "2.2.0");
        assert_eq!(json["critical"], "true");
        let h = &request.headers;
        assert_eq!(h["apns-topic"], "com.example.app");
        assert_eq!(h["apns-push-type"], "alert");
        assert_eq!(h["apns-priority"], "10");
        assert_eq!(h["apns-collapse-id"], "fw.WH-1000XM5");
        let expiration: i64 = h["apns-expiration"].to_str().unwrap().parse().unwrap();
        assert_eq!(expiration, msg.notice.expires_at.timestamp());
    }

    #[test]
    fn oversized_collapse_id_and_aps_data_key_are_fatal_locally() {
        let mut msg = PushMessage::update_available("ab12", "P", "1.0.0", false, "T", "B");
        msg.notice.collapse_id = "x".repeat(65);
        assert!(ApnsRequest::build(&msg.notice, "t").is_err());
        let mut msg = PushMessage::update_available("ab12", "P", "1.0.0", false, "T", "B");
        msg.notice.data.insert("aps".into(), "x".into());
        assert!(ApnsRequest::build(&msg.notice, "t").is_err());
    }
}
