//! Push providers: one [`Provider`] trait, two senders that speak the real
//! wire protocols ([`apns::ApnsProvider`]: HTTP/2 + TLS with an ES256 provider
//! token; [`fcm::FcmProvider`]: the FCM HTTP v1 API with OAuth2
//! service-account tokens), and [`send_prepared_with_retry`], the backoff
//! loop the fan-out workers wrap around a send.
//!
//! A provider is built once and shared (`Arc<dyn Provider>`) by every
//! concurrent send: it owns a few HTTP/2 connections (`connections`, see
//! `h2.rs`) and one cached auth token, so many sends in flight never re-sign
//! or re-fetch credentials per request. A fan-out prepares each notice once
//! per batch and locale ([`Provider::prepare`]); a send then adds a token.
//!
//! What a caller does with a [`SendOutcome`]:
//! - [`SendOutcome::Sent`]: count it.
//! - [`SendOutcome::DeadToken`]: delete the subscription, unless
//!   [`SendOutcome::should_delete_token`] says the app re-registered the
//!   token after the provider declared it dead (APNs 410 carries that time).
//! - [`SendOutcome::Retry`]: back off (honouring `after`) and send again;
//!   [`send_prepared_with_retry`] does this for one token.
//! - [`SendOutcome::Fatal`]: a payload or credential problem that every
//!   further send would hit too: stop the job, alert, keep the tokens.

pub mod apns;
mod dial;
pub mod fcm;
mod h2;
mod oneshot;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use sha2::{Digest, Sha256};

pub use crate::config::{ApnsSettings, FcmSettings};
pub use apns::ApnsProvider;
pub use fcm::FcmProvider;

/// How long a notice stays deliverable when the caller does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

/// HTTP/2 connections per provider when the config does not say: two,
/// so sends are not all framed and encrypted by one task.
pub const DEFAULT_CONNECTIONS: usize = 2;

/// Longest collapse id APNs accepts (bytes).
pub const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// Delivery urgency. APNs: `apns-priority` 10 / 5; FCM: `HIGH` / `NORMAL`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// Power-considerate delivery (APNs 5, FCM NORMAL).
    #[default]
    Normal,
    /// Deliver at once (APNs 10, FCM HIGH): critical updates.
    High,
}

/// What a notification says: the same for every device a fan-out batch
/// reaches in one locale, so providers turn it into wire form once
/// ([`Provider::prepare`]) and then only add each token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Localized title and body, as shown to the user.
    pub title: String,
    pub body: String,
    /// Custom data for the app, string to string (FCM allows only strings):
    /// `product`, `version`, `critical` for an update notice.
    pub data: BTreeMap<String, String>,
    /// One per product (see [`collapse_id_for`]): a retried or duplicated
    /// notice replaces the one already shown instead of showing twice.
    pub collapse_id: String,
    /// After this instant the provider may drop the notice undelivered.
    /// Absolute, so a notice retried hours later does not live longer.
    pub expires_at: DateTime<Utc>,
    pub priority: Priority,
}

impl Notice {
    /// An "update available" notice for `product` `version`: data carries
    /// `product`, `version` and `critical` ("true"/"false"), the collapse id
    /// is the product's, priority is high only for critical updates, and the
    /// notice expires after [`DEFAULT_TTL`].
    pub fn update_available(
        product: &str,
        version: &str,
        critical: bool,
        title: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        let data = BTreeMap::from([
            ("product".to_owned(), product.to_owned()),
            ("version".to_owned(), version.to_owned()),
            ("critical".to_owned(), critical.to_string()),
        ]);
        Notice {
            title: title.into(),
            body: body.into(),
            data,
            collapse_id: collapse_id_for(product),
            expires_at: expires_after(DEFAULT_TTL),
            priority: if critical {
                Priority::High
            } else {
                Priority::Normal
            },
        }
    }

    /// Expire `ttl` from now.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.expires_at = expires_after(ttl);
        self
    }

    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Time left until `expires_at`, zero once past it.
    pub fn ttl_remaining(&self, now: DateTime<Utc>) -> Duration {
        (self.expires_at - now).to_std().unwrap_or(Duration::ZERO)
    }
}

/// One notification to one device token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushMessage {
    /// The provider's device token (APNs: hex; FCM: registration token).
    pub token: String,
    pub notice: Notice,
}

impl PushMessage {
    /// [`Notice::update_available`] for one token.
    pub fn update_available(
        token: impl Into<String>,
        product: &str,
        version: &str,
        critical: bool,
        title: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        PushMessage {
            token: token.into(),
            notice: Notice::update_available(product, version, critical, title, body),
        }
    }

    /// Expire `ttl` from now.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.notice = self.notice.with_ttl(ttl);
        self
    }
}

/// A [`Notice`] in one provider's wire form (payload, headers), made by that
/// provider's [`Provider::prepare`] and only meaningful to it.
pub struct Prepared(Box<dyn std::any::Any + Send + Sync>);

impl Prepared {
    pub fn new<T: std::any::Any + Send + Sync>(inner: T) -> Self {
        Prepared(Box::new(inner))
    }

    /// The provider's own form; `None` when another provider prepared it.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared(..)")
    }
}

fn expires_after(ttl: Duration) -> DateTime<Utc> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_add_signed(ttl)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The collapse id of `product`'s notices: `fw.<product>`, or, when that
/// would exceed APNs' 64 bytes, `fw.` and 32 hex digits of its sha256.
pub fn collapse_id_for(product: &str) -> String {
    let id = format!("fw.{product}");
    if id.len() <= MAX_COLLAPSE_ID_BYTES {
        id
    } else {
        let digest = Sha256::digest(product.as_bytes());
        format!("fw.{}", &hex::encode(digest)[..32])
    }
}

/// What became of one send. Every failure carries a `code`, short and
/// stable (the provider's own reason such as `BadDeviceToken` or
/// `QUOTA_EXCEEDED`, or ours for the transport: `tls_untrusted`,
/// `connect_refused`, `not_http2`, `timeout`...), which jobs and `/metrics`
/// count by, and a `reason` in words for the person reading the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted by the provider; `id` is its message id (`apns-id`, FCM `name`).
    Sent { id: Option<String> },
    /// The token will never work again: delete the subscription (see
    /// [`SendOutcome::should_delete_token`]). `since` is when the provider
    /// says it stopped being valid (APNs 410 `timestamp`), when it says so.
    DeadToken {
        code: String,
        reason: String,
        since: Option<DateTime<Utc>>,
    },
    /// Transient (429, 5xx, network): send again, not before `after`
    /// (the provider's `Retry-After`) when given.
    Retry {
        after: Option<Duration>,
        code: String,
        reason: String,
    },
    /// Payload or credential error: every send would fail the same way. Stop
    /// the job and alert; keep the tokens.
    Fatal { code: String, reason: String },
}

impl SendOutcome {
    pub fn dead(code: impl Into<String>, reason: impl Into<String>) -> Self {
        SendOutcome::DeadToken {
            code: code.into(),
            reason: reason.into(),
            since: None,
        }
    }

    pub fn retry(code: impl Into<String>, reason: impl Into<String>) -> Self {
        SendOutcome::Retry {
            after: None,
            code: code.into(),
            reason: reason.into(),
        }
    }

    pub fn fatal(code: impl Into<String>, reason: impl Into<String>) -> Self {
        SendOutcome::Fatal {
            code: code.into(),
            reason: reason.into(),
        }
    }

    pub fn is_sent(&self) -> bool {
        matches!(self, SendOutcome::Sent { .. })
    }

    /// The failure's short name; `None` when sent.
    pub fn code(&self) -> Option<&str> {
        match self {
            SendOutcome::Sent { .. } => None,
            SendOutcome::DeadToken { code, .. }
            | SendOutcome::Retry { code, .. }
            | SendOutcome::Fatal { code, .. } => Some(code),
        }
    }

    /// The failure in words; `None` when sent.
    pub fn reason(&self) -> Option<&str> {
        match self {
            SendOutcome::Sent { .. } => None,
            SendOutcome::DeadToken { reason, .. }
            | SendOutcome::Retry { reason, .. }
            | SendOutcome::Fatal { reason, .. } => Some(reason),
        }
    }

    /// Whether a dead-token answer means the subscription must go, given
    /// when the app last registered (upserted) this token. APNs: a token
    /// re-registered after the 410's timestamp is valid again and is kept.
    pub fn should_delete_token(&self, last_registered: DateTime<Utc>) -> bool {
        match self {
            SendOutcome::DeadToken {
                since: Some(since), ..
            } => last_registered <= *since,
            SendOutcome::DeadToken { since: None, .. } => true,
            _ => false,
        }
    }
}

/// A push provider. Implementations are cheap to share: one instance per
/// process, sends called concurrently from many tasks.
#[async_trait]
pub trait Provider: Send + Sync {
    /// `"apns"` or `"fcm"`, as in subscriptions.
    fn name(&self) -> &'static str;

    /// `notice` in this provider's wire form, built once for every token it
    /// goes to. An error is a payload problem every send would hit.
    fn prepare(&self, notice: &Notice) -> Result<Prepared, String>;

    /// Send a prepared notice to one device token. Never panics, never
    /// returns an error: every failure is classified into a [`SendOutcome`].
    async fn send_prepared(&self, prepared: &Prepared, token: &str) -> SendOutcome;

    /// When most of a job's first answers are dead tokens with `code`, the
    /// likely configuration mistake, in words (APNs `BadDeviceToken`: the
    /// sandbox/production mix-up). The fan-out then stops the job and
    /// deletes none of those tokens.
    fn mixup(&self, code: &str) -> Option<&'static str> {
        let _ = code;
        None
    }

    /// How long every send to this provider should wait after `outcome`,
    /// when it says the provider itself (not one device) wants quiet: a
    /// `Retry-After` on a 5xx or a quota answer.
    fn backoff(&self, outcome: &SendOutcome) -> Option<Duration> {
        match outcome {
            SendOutcome::Retry { after, .. } => *after,
            _ => None,
        }
    }

    /// Prepare and send one message.
    async fn send(&self, msg: &PushMessage) -> SendOutcome {
        match self.prepare(&msg.notice) {
            Ok(prepared) => self.send_prepared(&prepared, &msg.token).await,
            Err(reason) => SendOutcome::fatal("payload", reason),
        }
    }
}

/// Backoff for the fan-out and [`send_with_retry`]: exponential with full
/// jitter, capped attempts and delay, `Retry-After` honoured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Sends in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The jitter window before retry `n` (0-based) is
    /// `min(max_delay, base_delay * 2^n)`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The jitter window before retry `retry` (0 = the first retry).
    pub fn window(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// How long to wait before retry `retry`: a uniformly random delay in
    /// `[0, window(retry)]` (full jitter), on top of the provider's
    /// `Retry-After` when it gave one (never earlier than asked, and a burst
    /// of senders told the same `Retry-After` does not come back at once).
    /// `None` when `Retry-After` exceeds `max_delay`: this helper will not
    /// sleep that long; the caller should requeue the message for later.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let floor = match retry_after {
            Some(after) if after > self.max_delay => return None,
            Some(after) => after,
            None => Duration::ZERO,
        };
        let window = self.window(retry).as_nanos().min(u64::MAX as u128) as u64;
        let jitter = Duration::from_nanos(rand::thread_rng().gen_range(0..=window));
        Some(floor + jitter)
    }

    /// What a sender does after the `attempts`-th send of one message
    /// answered `outcome`. `quiet` is the provider's own ask for quiet
    /// ([`Provider::backoff`]); a sender that shares the provider with
    /// others pauses them all, a lone sender just waits. One rule for the
    /// fan-out and for [`send_with_retry`].
    pub fn next(&self, attempts: u32, outcome: &SendOutcome, quiet: Option<Duration>) -> Next {
        let SendOutcome::Retry { after, .. } = outcome else {
            return Next::Stop;
        };
        if attempts >= self.max_attempts.max(1) {
            return Next::Stop;
        }
        if let Some(quiet) = quiet {
            // Longer than this policy waits: the send ends with this answer.
            return if quiet > self.max_delay {
                Next::Stop
            } else {
                Next::Quiet(quiet)
            };
        }
        match self.delay(attempts.saturating_sub(1), *after) {
            Some(delay) => Next::Retry(delay),
            None => Next::Stop,
        }
    }
}

/// The step after a send, per [`RetryPolicy::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The outcome is final: sent, dead, fatal, retries used up, or a
    /// longer wait asked for than the policy gives.
    Stop,
    /// Send this message again after this long.
    Retry(Duration),
    /// The provider wants quiet this long: pause every send to it, then
    /// send this message again.
    Quiet(Duration),
}

/// The final outcome of [`send_with_retry`] and how many sends it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub outcome: SendOutcome,
    pub attempts: u32,
}

/// Send `msg`, retrying [`SendOutcome::Retry`] answers per `policy` (see
/// [`send_prepared_with_retry`]).
pub async fn send_with_retry<P>(provider: &P, msg: &PushMessage, policy: &RetryPolicy) -> Delivery
where
    P: Provider + ?Sized,
{
    match provider.prepare(&msg.notice) {
        Ok(prepared) => send_prepared_with_retry(provider, &prepared, &msg.token, policy).await,
        Err(reason) => Delivery {
            outcome: SendOutcome::fatal("payload", reason),
            attempts: 0,
        },
    }
}

/// Send `prepared` to `token`, retrying [`SendOutcome::Retry`] answers per
/// `policy`. Returns the first non-retry outcome, or the last `Retry` once
/// attempts run out or the provider asks for a longer pause than
/// `policy.max_delay` (the caller requeues then).
pub async fn send_prepared_with_retry<P>(
    provider: &P,
    prepared: &Prepared,
    token: &str,
    policy: &RetryPolicy,
) -> Delivery
where
    P: Provider + ?Sized,
{
    let mut attempts = 0;
    loop {
        let outcome = provider.send_prepared(prepared, token).await;
        attempts += 1;
        match policy.next(attempts, &outcome, None) {
            Next::Stop => return Delivery { outcome, attempts },
            Next::Retry(wait) | Next::Quiet(wait) => tokio::time::sleep(wait).await,
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(headers: &hyper::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((when - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// A compact JWS: `b64url(header).b64url(claims).b64url(sign(...))`.
pub(crate) fn compact_jws(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    sign: impl FnOnce(&[u8]) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<String> {
    let mut jws = URL_SAFE_NO_PAD.encode(header.to_string());
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = sign(jws.as_bytes())?;
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jws)
}

/// The DER inside a PEM block labelled `label` (e.g. `PRIVATE KEY`).
pub(crate) fn pem_to_der(pem: &str, label: &str) -> anyhow::Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| anyhow::anyhow!("no `{begin}` block"))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| anyhow::anyhow!("no `{end}` line"))?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| anyhow::anyhow!("bad base64 in the `{label}` block: {e}"))
}

/// The contents of `ca_file`, or `None` when it is not set.
pub(crate) fn read_ca_file(
    ca_file: &std::path::Path,
    what: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    if ca_file.as_os_str().is_empty() {
        return Ok(None);
    }
    std::fs::read(ca_file)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("reading {what} ca_file {}: {e}", ca_file.display()))
}

/// Seconds since the UNIX epoch, for JWT `iat`/`exp`.
pub(crate) fn unix_now() -> u64 {
    Utc::now().timestamp().max(0) as u64
}

/// A short, single-line excerpt of a response body for outcome reasons.
pub(crate) fn excerpt(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    one_line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    struct Scripted {
        outcomes: Mutex<VecDeque<SendOutcome>>,
        sends: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Scripted {
        fn new(outcomes: impl IntoIterator<Item = SendOutcome>) -> Self {
            Scripted {
                outcomes: Mutex::new(outcomes.into_iter().collect()),
                sends: Mutex::new(Vec::new()),
            }
        }
        fn send_times(&self) -> Vec<tokio::time::Instant> {
            self.sends.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn prepare(&self, _notice: &Notice) -> Result<Prepared, String> {
            Ok(Prepared::new(()))
        }
        async fn send_prepared(&self, _prepared: &Prepared, _token: &str) -> SendOutcome {
            self.sends.lock().unwrap().push(tokio::time::Instant::now());
            self.outcomes
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(SendOutcome::Sent { id: None })
        }
    }

    fn retry(after: Option<u64>) -> SendOutcome {
        SendOutcome::Retry {
            after: after.map(Duration::from_secs),
            code: "test".into(),
            reason: "test".into(),
        }
    }

    fn msg() -> PushMessage {
        PushMessage::update_available("tok", "WH-1000XM5", "2.2.0", false, "t", "b")
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn retry_after_is_a_floor_and_jitter_stays_in_the_window() {
        tokio::time::pause();
        let provider = Scripted::new([retry(Some(5)), retry(Some(5)), retry(None)]);
        let start = tokio::time::Instant::now();
        let delivery = send_with_retry(&provider, &msg(), &policy()).await;
        assert_eq!(delivery.outcome, SendOutcome::Sent { id: None });
        assert_eq!(delivery.attempts, 4);
        let times = provider.send_times();
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(times[0], start);
        // Retry-After 5 s, then jitter of at most 100 ms, 200 ms, 400 ms.
        assert!(gaps[0] >= Duration::from_secs(5), "{gaps:?}");
        assert!(gaps[0] <= Duration::from_millis(5100), "{gaps:?}");
        assert!(gaps[1] >= Duration::from_secs(5), "{gaps:?}");
        assert!(gaps[1] <= Duration::from_millis(5200), "{gaps:?}");
        assert!(gaps[2] <= Duration::from_millis(400), "{gaps:?}");
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_with_the_last_retry() {
        tokio::time::pause();
        let provider = Scripted::new(std::iter::repeat_n(retry(None), 10));
        let start = tokio::time::Instant::now();
        let delivery = send_with_retry(&provider, &msg(), &policy()).await;
        assert_eq!(delivery.attempts, 4);
        assert!(matches!(delivery.outcome, SendOutcome::Retry { .. }));
        assert_eq!(provider.send_times().len(), 4);
        // Windows 100 + 200 + 400 ms.
        assert!(start.elapsed() <= Duration::from_millis(700));
    }

    #[tokio::test]
    async fn dead_and_fatal_are_not_retried() {
        tokio::time::pause();
        for outcome in [
            SendOutcome::dead("Unregistered", "Unregistered"),
            SendOutcome::fatal("PayloadTooLarge", "APNs 413 PayloadTooLarge"),
        ] {
            let provider = Scripted::new([outcome.clone(), retry(None)]);
            let start = tokio::time::Instant::now();
            let delivery = send_with_retry(&provider, &msg(), &policy()).await;
            assert_eq!(
                delivery,
                Delivery {
                    outcome,
                    attempts: 1
                }
            );
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test]
    async fn retry_after_beyond_the_cap_is_handed_back_without_sleeping() {
        tokio::time::pause();
        let provider = Scripted::new([retry(Some(3600))]);
        let start = tokio::time::Instant::now();
        let delivery = send_with_retry(&provider, &msg(), &policy()).await;
        assert_eq!(delivery.attempts, 1);
        assert_eq!(delivery.outcome, retry(Some(3600)));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn next_stops_on_final_outcomes_and_after_the_last_attempt() {
        let p = policy(); // 4 attempts
        for outcome in [
            SendOutcome::Sent { id: None },
            SendOutcome::dead("Unregistered", "Unregistered"),
            SendOutcome::fatal("PayloadTooLarge", "APNs 413"),
        ] {
            assert_eq!(p.next(1, &outcome, None), Next::Stop, "{outcome:?}");
        }
        assert_ne!(p.next(3, &retry(None), None), Next::Stop);
        assert_eq!(p.next(4, &retry(None), None), Next::Stop);
        assert_eq!(
            p.next(4, &retry(None), Some(Duration::from_secs(1))),
            Next::Stop
        );
    }

    #[test]
    fn next_pauses_the_provider_for_as_much_quiet_as_the_policy_waits() {
        let p = policy(); // max_delay 10 s
        let quiet = |s| p.next(1, &retry(Some(1)), Some(Duration::from_secs(s)));
        assert_eq!(quiet(1), Next::Quiet(Duration::from_secs(1)));
        assert_eq!(
            quiet(10),
            Next::Quiet(Duration::from_secs(10)),
            "max_delay itself is waited"
        );
        assert_eq!(
            quiet(11),
            Next::Stop,
            "longer: the send ends with that answer"
        );
    }

    #[test]
    fn next_retries_in_the_window_of_its_retry_number() {
        let p = policy(); // base 100 ms
        for attempts in 1..=3u32 {
            let window = p.window(attempts - 1);
            let waits: Vec<Duration> = (0..200)
                .map(|_| match p.next(attempts, &retry(None), None) {
                    Next::Retry(wait) => wait,
                    other => panic!("attempt {attempts}: {other:?}"),
                })
                .collect();
            assert!(
                waits.iter().all(|w| *w <= window),
                "attempt {attempts}: over {window:?}"
            );
            let high = waits.iter().filter(|w| **w > window / 2).count();
            assert!(
                high > 20,
                "attempt {attempts}: {high} of 200 in the top half of {window:?}"
            );
        }
        // Retry-After is the floor; beyond max_delay the message is given back.
        match p.next(1, &retry(Some(2)), None) {
            Next::Retry(wait) => assert!(wait >= Duration::from_secs(2), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.next(1, &retry(Some(11)), None), Next::Stop);
    }

    #[test]
    fn backoff_is_exponential_capped_and_fully_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        assert_eq!(p.window(0), Duration::from_millis(100));
        assert_eq!(p.window(3), Duration::from_millis(800));
        assert_eq!(p.window(5), Duration::from_secs(2));
        assert_eq!(p.window(200), Duration::from_secs(2));
        for retry in [0, 3, 5, 40] {
            let samples: Vec<Duration> = (0..200).map(|_| p.delay(retry, None).unwrap()).collect();
            assert!(samples.iter().all(|d| *d <= p.window(retry)));
            // Full jitter: spread over the window, not pinned to its end.
            let low = samples.iter().filter(|d| **d < p.window(retry) / 2).count();
            assert!(low > 20 && low < 180, "{low} of 200 below half the window");
        }
        assert_eq!(p.delay(0, Some(Duration::from_secs(3))), None);
    }

    #[test]
    fn collapse_ids_are_per_product_and_fit_apns() {
        assert_eq!(collapse_id_for("WH-1000XM5"), "fw.WH-1000XM5");
        let long = "A".repeat(64);
        let id = collapse_id_for(&long);
        assert!(id.len() <= MAX_COLLAPSE_ID_BYTES);
        assert_eq!(id, collapse_id_for(&long));
        assert_ne!(id, collapse_id_for(&"B".repeat(64)));
    }

    #[test]
    fn update_notice_carries_product_version_critical() {
        let m = PushMessage::update_available("t", "P1", "1.2.3", true, "T", "B");
        assert_eq!(m.token, "t");
        let m = m.notice;
        assert_eq!(m.data["product"], "P1");
        assert_eq!(m.data["version"], "1.2.3");
        assert_eq!(m.data["critical"], "true");
        assert_eq!(m.priority, Priority::High);
        let left = m.ttl_remaining(Utc::now());
        assert!(left > DEFAULT_TTL - Duration::from_secs(60) && left <= DEFAULT_TTL);
    }

    #[test]
    fn dead_token_respects_re_registration_after_the_timestamp() {
        let since = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let dead = SendOutcome::DeadToken {
            code: "Unregistered".into(),
            reason: "Unregistered".into(),
            since: Some(since),
        };
        assert!(dead.should_delete_token(since - chrono::Duration::days(1)));
        assert!(!dead.should_delete_token(since + chrono::Duration::seconds(1)));
        let undated = SendOutcome::dead("BadDeviceToken", "BadDeviceToken");
        assert!(undated.should_delete_token(Utc::now()));
        assert!(!SendOutcome::Sent { id: None }.should_delete_token(since));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut h = hyper::header::HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        let later = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert("retry-after", later.parse().unwrap());
        let d = parse_retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }
}
