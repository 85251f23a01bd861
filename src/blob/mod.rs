//! The blob store: firmware bytes, content-addressed by sha256 and immutable.
//!
//! Keys are derived from the sha256 alone, never from a product or version
//! name, so no request path can reach outside the store.

pub mod gc;
pub mod local;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use std::ops::Range;
use std::pin::Pin;

/// A stream of bytes: an upload read from a request, a download answered.
pub type ByteStream<'a> = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + 'a>>;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlobInfo {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no artifact with sha256 {0}")]
    NotFound(String),
    #[error("the upload exceeds the limit of {limit} bytes; raise server.max_artifact_bytes if this firmware is genuine")]
    TooLarge { limit: u64 },
    #[error("the upload is empty")]
    Empty,
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("the blob store ({backend}) is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("the blob store is full or failed to write: {0}")]
    Io(String),
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    async fn ping(&self) -> Result<(), BlobError>;

    /// Streams `body` in with at most `max` bytes, computing sha256 on the
    /// way; the blob becomes visible only once complete and durable. An
    /// existing blob with the same hash keeps its bytes (they are the same)
    /// and counts as stored now ([`BlobStore::list`]).
    async fn put(&self, body: ByteStream<'_>, max: u64) -> Result<BlobInfo, BlobError>;

    /// The size of a stored blob, or None.
    async fn stat(&self, sha256: &str) -> Result<Option<u64>, BlobError>;

    /// Streams `range` of the blob (already clamped to its size by the caller).
    async fn get(&self, sha256: &str, range: Range<u64>) -> Result<ByteStream<'static>, BlobError>;

    /// Every stored blob's sha256 and when it was last stored (uploaded, or
    /// uploaded again), for the sweep of uploads no release names.
    async fn list(&self) -> Result<Vec<(String, DateTime<Utc>)>, BlobError>;

    /// Removes a blob; absent is fine.
    async fn delete(&self, sha256: &str) -> Result<(), BlobError>;

    /// A URL that serves the blob without credentials until `expiry`, for
    /// `blob.delivery = "redirect"`; None when the backend cannot make one.
    async fn presigned_url(
        &self,
        _sha256: &str,
        _expiry: std::time::Duration,
    ) -> Result<Option<String>, BlobError> {
        Ok(None)
    }
}
