//! The embedded backend: redb files under `server.data_dir`, each opened
//! once. Every operation runs on the blocking pool (redb blocks on disk I/O
//! and on its single writer lock), never on a runtime worker.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;

use super::StoreError;

pub(crate) const BACKEND: &str = "embedded";

/// One redb file, cheap to clone; the stores built on it add their tables.
#[derive(Clone)]
pub struct EmbeddedDb {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl EmbeddedDb {
    /// Opens (creating the file and its directories when missing) with a
    /// page cache of `cache_bytes`. Blocking: call it before serving, or
    /// through [`EmbeddedDb::open_async`].
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let at = |e: StoreError| match e {
            StoreError::Unavailable { backend, reason } => StoreError::Unavailable {
                backend,
                reason: format!("{}: {reason}", path.display()),
            },
            StoreError::Corrupt(msg) => StoreError::Corrupt(format!("{}: {msg}", path.display())),
        };
        let dir = crate::files::parent_dir(path);
        std::fs::create_dir_all(&dir).map_err(|e| {
            at(unavailable(format!(
                "cannot create directory {}: {e}",
                dir.display()
            )))
        })?;
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .db()
            .map_err(at)?;
        Ok(EmbeddedDb {
            db: Arc::new(db),
            path: Arc::new(path.to_owned()),
        })
    }

    pub async fn open_async(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let path = path.to_owned();
        match tokio::task::spawn_blocking(move || Self::open(&path, cache_bytes)).await {
            Ok(opened) => opened,
            Err(e) => Err(unavailable(format!("the open task did not finish: {e}"))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database, for set-up steps run before serving.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs `f` on the blocking pool; a panic in it is resumed here.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Database) -> Result<T, E> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(unavailable(format!("store task did not finish: {e}")).into()),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|db| db.begin_read().db().map(drop)).await
    }
}

/// JSON for a stored record. Plain structs with string keys only, which
/// serde_json cannot fail on.
pub fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("stored records serialize to JSON")
}

/// A stored record back from JSON; `what` names it in the error.
pub fn decode<T: serde::de::DeserializeOwned>(
    json: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{}: {e}", what())))
}

pub(crate) fn unavailable(reason: String) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        reason,
    }
}

/// Maps any redb error: a damaged file is `Corrupt`, everything else (I/O,
/// lock held by another process, ...) is `Unavailable`.
pub trait DbResult<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> DbResult<T> for Result<T, E> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| match e.into() {
            redb::Error::Corrupted(msg) => StoreError::Corrupt(msg),
            e => unavailable(e.to_string()),
        })
    }
}
