//! The state store: releases with their rollout state, and the audit log.
//!
//! One trait, two backends (`embedded`: one redb file for a single
//! instance; `redis`: shared by any number of instances), both held to the
//! same conformance suite (`tests/it/state_conformance.rs`). The store is
//! authoritative for the publish rules that must be atomic: a version is
//! published once, and `seq` only goes up per product.
//!
//! Every change to the catalog (a publish or a rollout patch) bumps the
//! store's catalog version in the same transaction, so an instance can tell
//! that its in-memory snapshot is behind; [`StateStore::watch_catalog`]
//! announces new versions from every instance where the backend is shared.

pub mod embedded;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::storage::{Backend, StoreError};

/// A published release as stored. The envelope is kept byte for byte as the
/// release engineer signed it; everything else is rollout state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRelease {
    pub product: String,
    /// Canonical semver string (as `semver::Version` prints it).
    pub version: String,
    pub channel: String,
    pub seq: u64,
    /// The signed DSSE envelope, JSON.
    pub envelope: String,
    /// Share of clients offered the release, in basis points (0..=10000).
    pub rollout_bp: u16,
    pub paused: bool,
    pub yanked: bool,
    /// Random per release: keys the rollout hash, so each release samples a
    /// different set of clients.
    pub seed: u64,
    pub published_at: DateTime<Utc>,
    pub published_by: String,
    pub updated_at: DateTime<Utc>,
    /// Who paused it and why, its health gate and ramp (absent in records
    /// written before rollout intelligence: all defaults).
    #[serde(default)]
    pub steering: Steering,
}

/// The rollout-intelligence part of a release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Steering {
    /// Who paused it: an admin token's name, or `health` for its gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// Why, in words (the gate's numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    /// The gate; `None` means the deployment's default (`[rollout.health]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,
    /// The report window the gate reads: reports count from the publish,
    /// and a resume starts a new window.
    #[serde(default)]
    pub window: u32,
}

/// A health gate: once `failed / (failed + installed)` exceeds
/// `max_failure_rate` with at least `min_reports` reports in the window,
/// the release pauses itself.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthGate {
    pub min_reports: u64,
    pub max_failure_rate: f64,
}

/// A ramp: the rollout moves to the next of `steps_bp` each time
/// `every_secs` has passed, unless the release is paused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ramp {
    /// Strictly increasing, in basis points, ending at 10000.
    pub steps_bp: Vec<u16>,
    pub every_secs: u64,
    /// The step the rollout is at.
    pub step: usize,
    /// When the next step is due; `None` once at the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
}

impl Ramp {
    /// A ramp starting at its first step now.
    pub fn start(steps_bp: Vec<u16>, every_secs: u64, now: DateTime<Utc>) -> Ramp {
        let mut ramp = Ramp {
            steps_bp,
            every_secs,
            step: 0,
            next_at: None,
        };
        ramp.schedule(now);
        ramp
    }

    pub fn current_bp(&self) -> u16 {
        self.steps_bp.get(self.step).copied().unwrap_or(10_000)
    }

    pub fn done(&self) -> bool {
        self.step + 1 >= self.steps_bp.len()
    }

    /// Sets the next step's time one interval from `now` (none when done).
    pub fn schedule(&mut self, now: DateTime<Utc>) {
        self.next_at = (!self.done()).then(|| {
            now + chrono::Duration::seconds(self.every_secs.min(i64::MAX as u64 / 2) as i64)
        });
    }
}

/// A change to a release; `None` leaves a field alone. Applied by every
/// store in one atomic step ([`ReleasePatch::apply`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReleasePatch {
    pub rollout_bp: Option<u16>,
    /// Pausing records who and why; resuming clears them, starts a new
    /// report window and restarts the ramp's interval.
    pub paused: Option<bool>,
    /// With `paused: Some(true)`: who and why.
    pub pause: Option<(String, Option<String>)>,
    pub yanked: Option<bool>,
    pub health: Option<Option<HealthGate>>,
    pub ramp: Option<Option<Ramp>>,
    /// Applied only if this holds, else `StateError::Precondition`: what
    /// makes a step of the service's own (a ramp step, an auto-pause)
    /// happen once however many instances try it.
    pub only_if: Option<Condition>,
}

/// A condition on the stored release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Not paused, not yanked.
    Live,
    /// Live, and its ramp at this step.
    LiveAtRampStep(usize),
}

impl ReleasePatch {
    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.rollout_bp.is_none()
            && self.paused.is_none()
            && self.yanked.is_none()
            && self.health.is_none()
            && self.ramp.is_none()
    }

    /// Applies the patch to `r` at `at`, or says why it may not.
    pub fn apply(&self, r: &mut StoredRelease, at: DateTime<Utc>) -> Result<(), StateError> {
        let live = !r.paused && !r.yanked;
        let holds = match self.only_if {
            None => true,
            Some(Condition::Live) => live,
            Some(Condition::LiveAtRampStep(step)) => {
                live && r
                    .steering
                    .ramp
                    .as_ref()
                    .is_some_and(|ramp| ramp.step == step)
            }
        };
        if !holds {
            return Err(StateError::Precondition {
                product: r.product.clone(),
                version: r.version.clone(),
            });
        }
        if let Some(bp) = self.rollout_bp {
            r.rollout_bp = bp;
        }
        if let Some(ramp) = &self.ramp {
            r.steering.ramp = ramp.clone();
        }
        if let Some(health) = self.health {
            r.steering.health = health;
        }
        match self.paused {
            Some(true) if !r.paused => {
                r.paused = true;
                let (by, reason) = self.pause.clone().unzip();
                r.steering.paused_by = by;
                r.steering.pause_reason = reason.flatten();
            }
            Some(false) if r.paused => {
                r.paused = false;
                r.steering.paused_by = None;
                r.steering.pause_reason = None;
                r.steering.window += 1;
                if let Some(ramp) = r.steering.ramp.as_mut() {
                    ramp.schedule(at);
                }
            }
            _ => {}
        }
        if let Some(yanked) = self.yanked {
            r.yanked = yanked;
        }
        r.updated_at = at;
        Ok(())
    }
}

/// Who did what, when. Never holds a token or a client address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Assigned by the store, increasing.
    #[serde(default)]
    pub id: u64,
    pub at: DateTime<Utc>,
    /// The admin token's configured name.
    pub actor: String,
    /// e.g. `artifact.upload`, `release.publish`, `release.patch`.
    pub action: String,
    /// e.g. `WH-1000XM5 2.2.0`.
    pub target: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{product} {version} is already published; versions are immutable, publish a new version"
    )]
    DuplicateVersion { product: String, version: String },
    #[error("seq {seq} is not above {max}, the highest seq published for {product}; sign the release with --seq {next}", next = max.saturating_add(1))]
    StaleSeq { product: String, seq: u64, max: u64 },
    #[error("no release {product} {version}")]
    NotFound { product: String, version: String },
    #[error("{product} {version} changed meanwhile (paused, yanked or its ramp moved); look again and retry")]
    Precondition { product: String, version: String },
    #[error("the state store ({backend}) is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("the state store holds data it cannot read ({0}); restore from a backup or `firmcast state export`")]
    Corrupt(String),
}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { backend, reason } => {
                StateError::Unavailable { backend, reason }
            }
            StoreError::Corrupt(what) => StateError::Corrupt(what),
        }
    }
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// `embedded` or `redis`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Cheap round trip proving the backend answers.
    async fn ping(&self) -> Result<(), StateError>;

    /// The catalog version: 0 for an empty store, then one more for every
    /// successful `insert_release` and `update_release`, bumped in the same
    /// atomic step as the change itself. Refused changes leave it alone.
    ///
    /// To build a snapshot that is never silently behind, read this first,
    /// then `list_releases`: any change after the read carries a higher
    /// version, so a later notification above the read value means reload.
    async fn catalog_version(&self) -> Result<u64, StateError>;

    /// A feed of catalog versions announced by every instance sharing this
    /// store (this one included), or `None` where nothing else can change it
    /// (the embedded store: single instance, so local changes are all).
    ///
    /// Each time the feed (re)connects it also yields the current version,
    /// so changes made while it was disconnected are noticed; otherwise
    /// values only go up. The feed retries with backoff while the backend is
    /// away and ends only when the receiver is dropped.
    async fn watch_catalog(&self) -> Option<tokio::sync::mpsc::Receiver<u64>>;

    /// Inserts atomically. Refused with `DuplicateVersion` when the product
    /// already has this version (yanked or not), and with `StaleSeq` when
    /// `seq` is not above every earlier seq of the product (yanked included).
    async fn insert_release(&self, release: &StoredRelease) -> Result<(), StateError>;

    /// Applies `patch`, sets `updated_at = at`, returns the new state.
    async fn update_release(
        &self,
        product: &str,
        version: &str,
        patch: &ReleasePatch,
        at: DateTime<Utc>,
    ) -> Result<StoredRelease, StateError>;

    async fn get_release(
        &self,
        product: &str,
        version: &str,
    ) -> Result<Option<StoredRelease>, StateError>;

    /// All releases (of one product when given), ordered by product then seq.
    async fn list_releases(&self, product: Option<&str>) -> Result<Vec<StoredRelease>, StateError>;

    /// Appends an entry (its `id` is ignored) and returns the assigned id.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StateError>;

    /// Newest first: up to `limit` entries with id below `before` (all when None).
    async fn list_audit(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StateError>;
}

/// The release store of an opened backend (its tables created when new).
pub async fn open(backend: &Backend) -> Result<Arc<dyn StateStore>, StateError> {
    Ok(match backend {
        Backend::Embedded { state, .. } => {
            let db = state.clone();
            let store = state
                .run(move |_| embedded::EmbeddedStateStore::new(db))
                .await?;
            Arc::new(store)
        }
        Backend::Redis(link) => Arc::new(redis::RedisStateStore::new(link.clone())),
    })
}

/// Opens the configured backend and its release store, for the commands
/// that need only that (`state export`, `state import`).
pub async fn open_state(settings: &Settings) -> anyhow::Result<Arc<dyn StateStore>> {
    let backend = Backend::open(settings).await?;
    Ok(open(&backend).await?)
}
