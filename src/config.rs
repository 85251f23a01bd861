//! Typed settings, layered: embedded `config/default.toml`, then the file
//! from `--config` / `FIRMCAST_CONFIG`, then `FIRMCAST__SECTION__KEY` env.

use anyhow::{bail, Result};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variables `FIRMCAST__SECTION__KEY` override the files.
const ENV_PREFIX: &str = "FIRMCAST__";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub signing: SigningSettings,
    pub state: StateSettings,
    pub blob: BlobSettings,
    pub push: PushSettings,
    pub admin: AdminSettings,
    pub limits: LimitsSettings,
    pub rollout: RolloutSettings,
    pub alerts: AlertsSettings,
    pub console: ConsoleSettings,
}

/// The web console at `/console` (see `crate::console`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Leaves `Secure` off the session cookie, so a browser keeps it over
    /// plain HTTP: for development on localhost only.
    pub insecure_cookies: bool,
    /// A session unused this long is gone (each page view restarts it).
    pub session_idle_secs: u64,
}

/// Rollout intelligence (see `crate::rollout`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSettings {
    /// How often in-memory counts go to the store: a crash loses at most
    /// this much of them.
    pub flush_interval_secs: u64,
    /// How often health gates and ramps are looked at.
    pub evaluate_interval_secs: u64,
    /// Distinct installed versions counted per product, channel and day;
    /// past it they count as `other` (the versions come from clients).
    pub max_versions_per_product: usize,
    /// Distinct failure codes kept per release and day; past it, `other`.
    pub max_codes_per_release: usize,
    /// The gate of every release that sets none.
    pub health: HealthSettings,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    pub min_reports: u64,
    pub max_failure_rate: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSettings {
    /// POSTed `{"text": ...}` when a release pauses itself; empty = none.
    pub webhook_url: String,
    /// One attempt's deadline; three attempts in all.
    pub webhook_timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base of artifact URLs in offers, e.g. `https://updates.example.com`.
    pub public_url: String,
    /// Only peers in these networks may set the client IP via X-Forwarded-For.
    pub trusted_proxies: Vec<IpNet>,
    pub max_artifact_bytes: u64,
    /// A connection that has not sent a whole request head this long after
    /// it was opened is closed, whatever its protocol.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in progress for this long is closed
    /// (HTTP/1.1 keep-alive and HTTP/2 alike).
    pub idle_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
}

/// Overload protection (see `crate::limits`). 0 turns a limit off.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Sustained requests per second per client (IPv4 address or IPv6 /64)
    /// on the public endpoints.
    pub per_ip_rps: f64,
    /// Requests a client may make at once before the rate applies.
    pub per_ip_burst: u32,
    /// Public requests handled at once; past it, an immediate 503 with
    /// Retry-After, and `/readyz` says "saturated".
    pub max_in_flight: usize,
    /// Requests one client (IPv4 address or IPv6 /64) may have in progress.
    pub max_in_flight_per_client: usize,
    /// Admin calls, probes and metrics handled at once: their own pool, so
    /// operators can act while the public one is full.
    pub max_in_flight_ops: usize,
    /// Clients the rate limiter remembers; bounds its memory.
    pub max_tracked_clients: usize,
    /// A request body that sends nothing for this long is cut off; so is
    /// one that, after this long, averages less than `body_min_bytes_per_sec`.
    pub body_read_timeout_secs: u64,
    pub body_min_bytes_per_sec: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    pub keyset: PathBuf,
    pub root_public_key: PathBuf,
    pub timestamp_key: PathBuf,
    /// Earlier keysets as `<version>.json`, served at `/v1/keys/{version}`;
    /// by default the `keysets` directory beside the keyset.
    #[serde(default)]
    pub keyset_history: Option<PathBuf>,
    pub freshness_ttl_hours: u64,
    pub resign_interval_secs: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    Embedded,
    Redis,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    pub backend: StateBackend,
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments (or test runs) can
    /// share one Redis.
    pub redis_prefix: String,
    /// Deadline for one Redis operation; past it the request gets a 503.
    pub redis_timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackend {
    Local,
    S3,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Stream,
    Redirect,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobSettings {
    pub backend: BlobBackend,
    pub delivery: Delivery,
    /// An uploaded artifact that no release names is deleted this many hours
    /// after its upload (0 keeps them all).
    pub orphan_ttl_hours: u64,
    pub s3: S3Settings,
}

/// S3 or an S3-compatible server. Credentials come from the standard AWS
/// chain (env, profile, instance role), never from this file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    /// Empty = AWS; set for S3-compatible servers (MinIO, s3s-fs, ...).
    pub endpoint: String,
    pub region: String,
    pub force_path_style: bool,
    /// Key prefix inside the bucket, e.g. `firmcast/`.
    pub prefix: String,
    /// Lifetime of presigned download URLs (delivery = "redirect").
    pub presign_expiry_secs: u64,
    /// Deadline for one S3 request before it becomes a 503.
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// Tokens not seen for this long are deleted by the sweeper.
    pub retention_days: u64,
    /// How often the idle-token sweeper runs (it also runs once at start).
    pub sweep_interval_secs: u64,
    /// Fan-out workers per instance (each sends a batch at a time).
    pub workers: usize,
    /// Concurrent sends per provider per instance.
    pub in_flight: usize,
    /// How long a notice stays deliverable.
    pub ttl_secs: u64,
    /// Start a notification job by itself when a release is published at 100%.
    pub auto_notify: bool,
    /// A batch claimed this long ago and never completed is taken over by
    /// another worker (its own worker died).
    pub stale_batch_secs: u64,
    #[serde(default)]
    pub apns: ApnsSettings,
    #[serde(default)]
    pub fcm: FcmSettings,
}

/// `[push.apns]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsSettings {
    pub enabled: bool,
    /// `https://api.push.apple.com` (or `https://api.sandbox.push.apple.com`).
    pub base_url: String,
    /// The team's token-signing key (`AuthKey_XXXXXXXXXX.p8`, PKCS#8 EC P-256).
    pub key_file: PathBuf,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id.
    pub topic: String,
    /// An extra trusted root certificate (PEM); empty = none.
    pub ca_file: PathBuf,
    /// HTTP/2 connections kept open to APNs (each carries many streams).
    pub connections: usize,
    /// Sends per second to APNs, all instances together; 0: no limit
    /// (Apple publishes none).
    pub max_per_second: u32,
}

impl Default for ApnsSettings {
    fn default() -> Self {
        ApnsSettings {
            enabled: false,
            base_url: "https://api.push.apple.com".to_owned(),
            key_file: PathBuf::from("secrets/apns.p8"),
            key_id: String::new(),
            team_id: String::new(),
            topic: String::new(),
            ca_file: PathBuf::new(),
            connections: crate::push::DEFAULT_CONNECTIONS,
            max_per_second: 0,
        }
    }
}

/// `[push.fcm]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FcmSettings {
    pub enabled: bool,
    /// `https://fcm.googleapis.com`.
    pub base_url: String,
    /// The service-account JSON; its `token_uri` is where OAuth tokens come from.
    pub service_account_file: PathBuf,
    /// An extra trusted root certificate (PEM); empty = none.
    pub ca_file: PathBuf,
    /// HTTP/2 connections kept open to FCM (each carries many streams).
    pub connections: usize,
    /// Sends per second to FCM, all instances together; 0: no limit. The
    /// default is FCM's default project quota (600,000 a minute).
    pub max_per_second: u32,
}

impl Default for FcmSettings {
    fn default() -> Self {
        FcmSettings {
            enabled: false,
            base_url: "https://fcm.googleapis.com".to_owned(),
            service_account_file: PathBuf::from("secrets/fcm.json"),
            ca_file: PathBuf::new(),
            connections: crate::push::DEFAULT_CONNECTIONS,
            max_per_second: 10_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub tokens: Vec<TokenSettings>,
}

#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything under `/v1/admin`, changes nothing.
    Viewer,
    /// Uploads, publishes, rolls out, pauses, yanks, notifies.
    Publisher,
    /// Everything.
    Admin,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub name: String,
    pub role: Role,
    /// sha256 hex of the token; the token itself is never configured.
    pub sha256: String,
}

impl Settings {
    /// Defaults, then `file` (if any), then the environment. An unknown key
    /// or section anywhere is an error that names it and where it came from:
    /// a typo must not silently turn a setting (say, rate limits) off.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            fig = fig.merge(Toml::file(file));
        }
        fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__"));
        let settings: Settings = fig.extract().map_err(|e| {
            let problems: Vec<String> = e.into_iter().map(|e| describe(&fig, e)).collect();
            anyhow::anyhow!("invalid configuration: {}", problems.join("; "))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<()> {
        for t in &self.admin.tokens {
            if !firmcast_signing::digest::is_sha256_hex(&t.sha256) {
                bail!(
                    "admin token {:?}: sha256 must be 64 lowercase hex digits (make one with `firmcast admin token`)",
                    t.name
                );
            }
        }
        if !self.server.public_url.is_empty() {
            let u = &self.server.public_url;
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/') {
                bail!("server.public_url {u:?} must start with http:// or https:// and have no trailing slash");
            }
        }
        if self.blob.delivery == Delivery::Redirect && self.blob.backend != BlobBackend::S3 {
            bail!("blob.delivery = \"redirect\" needs blob.backend = \"s3\" (presigned URLs); use \"stream\" with the local store");
        }
        if self.blob.backend == BlobBackend::S3 && self.blob.s3.bucket.is_empty() {
            bail!("blob.backend = \"s3\" needs [blob.s3] bucket");
        }
        let h = &self.rollout.health;
        if !(0.0..=1.0).contains(&h.max_failure_rate) || h.min_reports == 0 {
            bail!("[rollout.health] needs min_reports >= 1 and max_failure_rate from 0 to 1 (0.05 is 5%)");
        }
        let r = &self.rollout;
        if r.flush_interval_secs == 0 || r.evaluate_interval_secs == 0 {
            bail!("[rollout] flush_interval_secs and evaluate_interval_secs must be above 0");
        }
        let hook = &self.alerts.webhook_url;
        if !(hook.is_empty() || hook.starts_with("http://") || hook.starts_with("https://")) {
            bail!("[alerts] webhook_url {hook:?} must start with http:// or https://");
        }
        if self.console.session_idle_secs == 0 {
            bail!("[console] session_idle_secs must be above 0");
        }
        if self.signing.freshness_ttl_hours == 0 || self.signing.resign_interval_secs == 0 {
            bail!("signing.freshness_ttl_hours and signing.resign_interval_secs must be above 0");
        }
        if self.signing.resign_interval_secs >= self.signing.freshness_ttl_hours * 3600 {
            bail!("signing.resign_interval_secs must be shorter than the freshness TTL, or statements expire between re-signs");
        }
        Ok(())
    }

    pub fn state_path(&self) -> PathBuf {
        self.server.data_dir.join("state.redb")
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.server.data_dir.join("blobs")
    }

    pub fn keyset_history_dir(&self) -> PathBuf {
        let s = &self.signing;
        s.keyset_history
            .clone()
            .unwrap_or_else(|| crate::files::parent_dir(&s.keyset).join("keysets"))
    }
}

/// One configuration problem in words: which key, where it was set (the file
/// or the environment variable), and what is wrong with it.
fn describe(fig: &Figment, e: figment::Error) -> String {
    use figment::error::Kind;
    // Where the offending value was set: a file, an environment variable, or
    // the embedded defaults. An unknown key's own value knows best.
    // The path names the offending key; its section is the rest.
    let mut path = e.path.clone();
    if let Kind::UnknownField(field, _) = &e.kind {
        if path.last() != Some(field) {
            path.push(field.clone());
        }
    }
    let section_path = match &e.kind {
        Kind::UnknownField(..) => &path[..path.len() - 1],
        _ => &e.path[..],
    };
    let source = fig
        .find_metadata(&path.join("."))
        .or(e.metadata.as_ref())
        .map(|md| match &md.source {
            Some(figment::Source::File(file)) => file.display().to_string(),
            _ if md.name.contains(ENV_PREFIX) => format!(
                "the environment variable {ENV_PREFIX}{}",
                path.join("__").to_uppercase()
            ),
            _ => md.interpolate(&fig.profile().clone(), &path),
        })
        .unwrap_or_else(|| "the configuration".to_owned());
    let section = match section_path.is_empty() {
        true => "at the top level".to_owned(),
        false => format!("in [{}]", section_path.join(".")),
    };
    match &e.kind {
        Kind::UnknownField(field, expected) => format!(
            "unknown key `{field}` {section} of {source}; the keys there are: {}",
            expected.join(", ")
        ),
        Kind::MissingField(field) => format!("missing key `{field}` {section} of {source}"),
        kind => format!("`{}` in {source}: {kind}", path.join(".")),
    }
}

/// Reads a config file path from `--config` or `FIRMCAST_CONFIG`.
pub fn config_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("FIRMCAST_CONFIG").map(PathBuf::from))
}

pub(crate) fn read_context(path: &Path, what: &str) -> String {
    format!("cannot read the {what} at {}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_files_layer() {
        let s = Settings::load(None).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.state.backend, StateBackend::Embedded);

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n[[admin.tokens]]\nname = \"bot\"\nrole = \"publisher\"\nsha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f)).unwrap();
        assert_eq!(s.server.listen.port(), 0);
        assert_eq!(s.server.trusted_proxies.len(), 1);
        assert_eq!(s.admin.tokens[0].role, Role::Publisher);
        assert_eq!(
            s.server.data_dir,
            PathBuf::from("./data"),
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_refused_by_name_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("typo.toml");
        for (text, key, section) in [
            (
                "[server]\nlisen = \"0.0.0.0:80\"\n",
                "`lisen`",
                "in [server]",
            ),
            ("[limitz]\nper_ip_rps = 5\n", "`limitz`", "at the top level"),
            ("[limits]\nper_ip_rsp = 5\n", "`per_ip_rsp`", "in [limits]"),
            (
                "[push.apns]\nenabeld = true\n",
                "`enabeld`",
                "in [push.apns]",
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let err = Settings::load(Some(&f)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("unknown key {key} {section}")),
                "{err}"
            );
            assert!(
                err.contains(&f.display().to_string()),
                "names the file: {err}"
            );
        }
        // The keys it could have meant are listed.
        std::fs::write(&f, "[server]\nlisen = \"0.0.0.0:80\"\n").unwrap();
        let err = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(err.contains("listen, data_dir"), "{err}");
    }

    #[test]
    fn the_example_config_parses() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let s = Settings::load(Some(&example)).unwrap();
        assert_eq!(s.server.public_url, "https://updates.example.com");
    }

    #[test]
    fn bad_values_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[state]\nbackend = \"mongo\"\n").unwrap();
        let err = Settings::load(Some(&f)).unwrap_err().to_string();
        for part in ["`state.backend`", "mongo", "embedded", "redis", "c.toml"] {
            assert!(err.contains(part), "{part} in {err}");
        }
        std::fs::write(
            &f,
            "[[admin.tokens]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"plaintext\"\n",
        )
        .unwrap();
        let err = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(err.contains("firmcast admin token"), "{err}");
        let err = Settings::load(Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(
            err.to_string().contains("missing.toml does not exist"),
            "{err}"
        );
    }
}
