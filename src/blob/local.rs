//! Local directory blob store: `<dir>/sha256/ab/abcd...`. Uploads stream into
//! `<dir>/tmp/` while hashing, are fsynced, then renamed into place, so a
//! blob is either absent or complete.

use super::{BlobError, BlobInfo, BlobStore, ByteStream};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Reads of this size keep syscalls and chunk overhead small on big files.
const READ_CHUNK: usize = 256 * 1024;
/// Ranges (and files) up to this size are read in one go into one buffer;
/// larger ones stream, so a slow reader holds at most a chunk.
const ONE_READ_MAX: u64 = 1 << 20;

/// `len` bytes at `offset`, or fewer if the file is shorter.
fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<bytes::Bytes> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf.into())
}

pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        for d in [root.join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&d)
                .map_err(|e| BlobError::Io(format!("cannot create {}: {e}", d.display())))?;
        }
        // Uploads cut off by a crash left their temp files: nothing refers
        // to them, and this store has a single owner.
        if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(LocalBlobStore {
            root: root.to_owned(),
        })
    }

    /// Only a validated sha256 ever becomes a path.
    fn path_for(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        if !firmcast_signing::digest::is_sha256_hex(sha256) {
            return Err(BlobError::NotFound(sha256.chars().take(64).collect()));
        }
        Ok(self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }
}

fn io(e: std::io::Error) -> BlobError {
    BlobError::Io(e.to_string())
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn ping(&self) -> Result<(), BlobError> {
        tokio::fs::metadata(self.root.join("sha256"))
            .await
            .map(|_| ())
            .map_err(|e| BlobError::Unavailable {
                backend: "local",
                reason: e.to_string(),
            })
    }

    async fn put(&self, mut body: ByteStream<'_>, max: u64) -> Result<BlobInfo, BlobError> {
        let tmp_dir = self.root.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&tmp_dir)
            .map_err(io)?;
        // The temp file is deleted on drop: an aborted upload leaves nothing.
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(BlobError::TooLarge { limit: max });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        if size == 0 {
            return Err(BlobError::Empty);
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        let dest = self.path_for(&sha256)?;
        let dir = dest.parent().expect("blob paths have a parent").to_owned();
        tokio::task::spawn_blocking(move || -> Result<(), BlobError> {
            std::fs::create_dir_all(&dir).map_err(io)?;
            if dest.exists() {
                // Content-addressed: the same bytes. Stored again, now, so the
                // sweep of unpublished uploads counts from this upload.
                let now = std::time::SystemTime::now();
                std::fs::File::options()
                    .write(true)
                    .open(&dest)
                    .and_then(|f| f.set_modified(now))
                    .map_err(io)?;
                return Ok(());
            }
            tmp_path.persist(&dest).map_err(|e| io(e.error))?;
            crate::files::sync_dir(&dir).map_err(io)
        })
        .await
        .map_err(|e| BlobError::Io(e.to_string()))??;
        Ok(BlobInfo { sha256, size })
    }

    async fn stat(&self, sha256: &str) -> Result<Option<u64>, BlobError> {
        let Ok(path) = self.path_for(sha256) else {
            return Ok(None);
        };
        match tokio::fs::metadata(path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn get(&self, sha256: &str, range: Range<u64>) -> Result<ByteStream<'static>, BlobError> {
        let path = self.path_for(sha256)?;
        let len = range.end.saturating_sub(range.start);
        if len <= ONE_READ_MAX {
            // One trip to the blocking pool (open, pread, close) instead of
            // one per open, seek and chunk: what ranged requests mostly are.
            let sha = sha256.to_owned();
            let bytes = tokio::task::spawn_blocking(move || read_range(&path, range.start, len))
                .await
                .map_err(|e| BlobError::Io(e.to_string()))?
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => BlobError::NotFound(sha),
                    _ => io(e),
                })?;
            return Ok(Box::pin(futures_util::stream::once(
                async move { Ok(bytes) },
            )));
        }
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(sha256.to_owned()))
            }
            Err(e) => return Err(io(e)),
        };
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(io)?;
        let reader = file.take(range.end.saturating_sub(range.start));
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            reader, READ_CHUNK,
        )))
    }

    async fn list(&self) -> Result<Vec<(String, DateTime<Utc>)>, BlobError> {
        let root = self.root.join("sha256");
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for shard in std::fs::read_dir(&root).map_err(io)? {
                let shard = shard.map_err(io)?;
                if !shard.file_type().map_err(io)?.is_dir() {
                    continue;
                }
                for blob in std::fs::read_dir(shard.path()).map_err(io)? {
                    let blob = blob.map_err(io)?;
                    let name = blob.file_name().to_string_lossy().into_owned();
                    if !firmcast_signing::digest::is_sha256_hex(&name) {
                        continue;
                    }
                    let stored = blob.metadata().and_then(|m| m.modified()).map_err(io)?;
                    out.push((name, DateTime::<Utc>::from(stored)));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| BlobError::Io(e.to_string()))?
    }

    async fn delete(&self, sha256: &str) -> Result<(), BlobError> {
        let path = self.path_for(sha256)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
}
