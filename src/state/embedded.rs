//! The embedded state store: one crash-safe redb file holding releases (with
//! their per-product seq order), the catalog version and the audit log. The
//! default backend; one process at a time (redb locks the file).

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, TableDefinition};

use super::{AuditEntry, ReleasePatch, StateError, StateStore, StoredRelease};
use crate::storage::embedded::{encode, DbResult, EmbeddedDb, BACKEND};

/// (product, seq) -> `StoredRelease` JSON. Keyed by seq so a product's
/// releases iterate in publish order and its max seq is simply the last key.
const RELEASES: TableDefinition<(&str, u64), &str> = TableDefinition::new("releases");
/// (product, version) -> seq: looks a release up by version, and is what
/// makes a version publishable only once.
const VERSIONS: TableDefinition<(&str, &str), u64> = TableDefinition::new("release_versions");
/// id -> `AuditEntry` JSON.
const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
/// Named counters; see [`CATALOG_VERSION`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Bumped in the write transaction of every catalog change; absent = 0 (so
/// files written before the counter existed read as version 0).
const CATALOG_VERSION: &str = "catalog_version";

pub struct EmbeddedStateStore {
    db: EmbeddedDb,
}

impl EmbeddedStateStore {
    /// The store on an opened file, its tables created when missing (so
    /// read transactions never meet a missing table). Blocking.
    pub fn new(db: EmbeddedDb) -> Result<Self, StateError> {
        let txn = db.database().begin_write().db()?;
        txn.open_table(RELEASES).db()?;
        txn.open_table(VERSIONS).db()?;
        txn.open_table(AUDIT).db()?;
        txn.open_table(META).db()?;
        txn.commit().db()?;
        Ok(Self { db })
    }

    /// Opens the file at `path` on its own (tools and tests).
    pub fn open(path: &Path) -> Result<Self, StateError> {
        Self::new(EmbeddedDb::open(path, 2 << 20)?)
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StateError> + Send + 'static,
    {
        self.db.run(f).await
    }
}

#[async_trait]
impl StateStore for EmbeddedStateStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(self.db.ping().await?)
    }

    async fn catalog_version(&self) -> Result<u64, StateError> {
        self.blocking(|db| {
            let txn = db.begin_read().db()?;
            let meta = txn.open_table(META).db()?;
            Ok(meta.get(CATALOG_VERSION).db()?.map_or(0, |v| v.value()))
        })
        .await
    }

    async fn watch_catalog(&self) -> Option<tokio::sync::mpsc::Receiver<u64>> {
        // One process holds the file: every change is a local one.
        None
    }

    async fn insert_release(&self, release: &StoredRelease) -> Result<(), StateError> {
        let release = release.clone();
        let json = encode(&release);
        self.blocking(move |db| {
            let (product, version) = (release.product.as_str(), release.version.as_str());
            // One write transaction for check and insert: redb admits one
            // writer at a time, so two racing publishes cannot both pass.
            let txn = db.begin_write().db()?;
            {
                let mut versions = txn.open_table(VERSIONS).db()?;
                let mut releases = txn.open_table(RELEASES).db()?;
                if versions.get((product, version)).db()?.is_some() {
                    return Err(StateError::DuplicateVersion {
                        product: product.to_owned(),
                        version: version.to_owned(),
                    });
                }
                if let Some(max) = max_seq(&releases, product)? {
                    if release.seq <= max {
                        return Err(StateError::StaleSeq {
                            product: product.to_owned(),
                            seq: release.seq,
                            max,
                        });
                    }
                }
                versions.insert((product, version), release.seq).db()?;
                releases
                    .insert((product, release.seq), json.as_str())
                    .db()?;
                bump_catalog_version(&txn)?;
            }
            Ok(txn.commit().db()?)
        })
        .await
    }

    async fn update_release(
        &self,
        product: &str,
        version: &str,
        patch: &ReleasePatch,
        at: DateTime<Utc>,
    ) -> Result<StoredRelease, StateError> {
        let (product, version, patch) = (product.to_owned(), version.to_owned(), patch.clone());
        self.blocking(move |db| {
            let txn = db.begin_write().db()?;
            let updated = {
                let versions = txn.open_table(VERSIONS).db()?;
                let mut releases = txn.open_table(RELEASES).db()?;
                let Some((seq, mut release)) = find(&versions, &releases, &product, &version)?
                else {
                    return Err(StateError::NotFound { product, version });
                };
                patch.apply(&mut release, at)?;
                releases
                    .insert((product.as_str(), seq), encode(&release).as_str())
                    .db()?;
                bump_catalog_version(&txn)?;
                release
            };
            txn.commit().db()?;
            Ok(updated)
        })
        .await
    }

    async fn get_release(
        &self,
        product: &str,
        version: &str,
    ) -> Result<Option<StoredRelease>, StateError> {
        let (product, version) = (product.to_owned(), version.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read().db()?;
            let versions = txn.open_table(VERSIONS).db()?;
            let releases = txn.open_table(RELEASES).db()?;
            Ok(find(&versions, &releases, &product, &version)?.map(|(_, r)| r))
        })
        .await
    }

    async fn list_releases(&self, product: Option<&str>) -> Result<Vec<StoredRelease>, StateError> {
        let product = product.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_read().db()?;
            let releases = txn.open_table(RELEASES).db()?;
            // Key order is (product, seq): exactly the order the trait promises.
            let rows = match &product {
                Some(p) => releases
                    .range((p.as_str(), 0)..=(p.as_str(), u64::MAX))
                    .db()?,
                None => releases.iter().db()?,
            };
            rows.map(|row| {
                let (key, value) = row.db()?;
                let (product, seq) = key.value();
                decode(value.value(), || format!("release {product} seq {seq}"))
            })
            .collect()
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StateError> {
        let mut entry = entry.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().db()?;
            let id = {
                let mut audit = txn.open_table(AUDIT).db()?;
                // Entries are never deleted, so last + 1 never reuses an id.
                let id = match audit.last().db()? {
                    Some((key, _)) => key.value() + 1,
                    None => 1,
                };
                entry.id = id;
                audit.insert(id, encode(&entry).as_str()).db()?;
                id
            };
            txn.commit().db()?;
            Ok(id)
        })
        .await
    }

    async fn list_audit(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StateError> {
        self.blocking(move |db| {
            let txn = db.begin_read().db()?;
            let audit = txn.open_table(AUDIT).db()?;
            let rows = match before {
                Some(before) => audit.range(..before).db()?,
                None => audit.iter().db()?,
            };
            rows.rev()
                .take(limit)
                .map(|row| {
                    let (key, value) = row.db()?;
                    let id = key.value();
                    let mut entry: AuditEntry =
                        decode(value.value(), || format!("audit entry {id}"))?;
                    // The key is authoritative for the id.
                    entry.id = id;
                    Ok(entry)
                })
                .collect()
        })
        .await
    }
}

/// Adds one to the catalog version inside the caller's write transaction,
/// so the change and its version commit (or vanish) together.
fn bump_catalog_version(txn: &redb::WriteTransaction) -> Result<(), StateError> {
    let mut meta = txn.open_table(META).db()?;
    let next = meta.get(CATALOG_VERSION).db()?.map_or(0, |v| v.value()) + 1;
    meta.insert(CATALOG_VERSION, next).db()?;
    Ok(())
}

/// The highest seq stored for `product`, yanked releases included.
fn max_seq(
    releases: &impl ReadableTable<(&'static str, u64), &'static str>,
    product: &str,
) -> Result<Option<u64>, StateError> {
    match releases
        .range((product, 0)..=(product, u64::MAX))
        .db()?
        .next_back()
    {
        Some(row) => Ok(Some(row.db()?.0.value().1)),
        None => Ok(None),
    }
}

/// Looks a release up by version through the version index.
fn find(
    versions: &impl ReadableTable<(&'static str, &'static str), u64>,
    releases: &impl ReadableTable<(&'static str, u64), &'static str>,
    product: &str,
    version: &str,
) -> Result<Option<(u64, StoredRelease)>, StateError> {
    let Some(seq) = versions.get((product, version)).db()?.map(|g| g.value()) else {
        return Ok(None);
    };
    let what = || format!("release {product} {version} (seq {seq})");
    match releases.get((product, seq)).db()? {
        Some(json) => Ok(Some((seq, decode(json.value(), what)?))),
        None => Err(StateError::Corrupt(format!(
            "{} is indexed but not stored",
            what()
        ))),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    json: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StateError> {
    Ok(crate::storage::embedded::decode(json, what)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(product: &str, version: &str, seq: u64) -> StoredRelease {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        StoredRelease {
            product: product.into(),
            version: version.into(),
            channel: "stable".into(),
            seq,
            envelope: "{}".into(),
            rollout_bp: 0,
            paused: false,
            yanked: false,
            seed: 7,
            published_at: at,
            published_by: "alice".into(),
            updated_at: at,
            steering: Default::default(),
        }
    }

    #[tokio::test]
    async fn undecodable_record_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStateStore::open(&dir.path().join("state.redb")).unwrap();
        store
            .insert_release(&release("P", "1.0.0", 1))
            .await
            .unwrap();
        let txn = store.db.database().begin_write().unwrap();
        txn.open_table(RELEASES)
            .unwrap()
            .insert(("P", 1), "{not json")
            .unwrap();
        txn.commit().unwrap();

        let get = store.get_release("P", "1.0.0").await;
        assert!(
            matches!(get, Err(StateError::Corrupt(ref m)) if m.contains("P 1.0.0")),
            "{get:?}"
        );
        let list = store.list_releases(None).await;
        assert!(matches!(list, Err(StateError::Corrupt(_))), "{list:?}");
    }

    #[test]
    fn file_locked_by_another_open_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let _first = EmbeddedStateStore::open(&path).unwrap();
        match EmbeddedStateStore::open(&path) {
            Err(StateError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "embedded");
                assert!(reason.contains("state.redb"), "{reason}");
            }
            other => panic!("expected Unavailable, got {:?}", other.err()),
        }
    }
}
