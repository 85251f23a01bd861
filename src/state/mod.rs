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
    #[error("seq {seq} is not above {max}, the highest seq published for {product}; sign the release with --seq {next}", next = max.saturating_add(1))]
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
