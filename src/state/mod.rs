//! The state store: releases with their rollout state, and the audit log.
//!
//! One trait, several backends (`embedded` now, `redis` next), all held to
//! the same conformance suite (`tests/state_conformance.rs`). The store is
//! authoritative for the publish rules that must be atomic: a version is
//! published once, and `seq` only goes up per product.

pub mod embedded;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A published release as stored. The envelope is kept byte for byte as the
/// release engineer signed it; everything else is rollout state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A change to rollout state; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleasePatch {
    pub rollout_bp: Option<u16>,
    pub paused: Option<bool>,
    pub yanked: Option<bool>,
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
    #[error("seq {seq} is not above {max}, the highest seq published for {product}; sign the release with --seq {next}", next = max + 1)]
    StaleSeq { product: String, seq: u64, max: u64 },
    #[error("no release {product} {version}")]
    NotFound { product: String, version: String },
    #[error("the state store ({backend}) is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("the state store holds data it cannot read ({0}); restore from a backup or `firmcast state export`")]
    Corrupt(String),
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// `embedded` or `redis`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Cheap round trip proving the backend answers.
    async fn ping(&self) -> Result<(), StateError>;

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
