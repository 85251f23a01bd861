//! The sweep of uploads no release names: an artifact uploaded but never
//! published (a publish that was refused, or abandoned) is deleted
//! `blob.orphan_ttl_hours` after it was last uploaded. Any instance may run
//! it: it reads the shared release store, and a delete is idempotent.

use super::BlobStore;
use crate::releases::Releases;
use chrono::{DateTime, Utc};
use firmcast_signing::{Envelope, ReleaseManifest};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How often the sweep runs (the first time a minute after start).
const EVERY: Duration = Duration::from_secs(3600);

pub async fn sweep_orphans(releases: Arc<Releases>, blobs: Arc<dyn BlobStore>, ttl_hours: u64) {
    if ttl_hours == 0 {
        return;
    }
    let ttl = chrono::Duration::hours(ttl_hours.min(i64::MAX as u64 / 3600) as i64);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(60), EVERY);
    loop {
        tick.tick().await;
        match sweep(&releases, &*blobs, Utc::now() - ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, ttl_hours, "uploads no release names deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "the sweep of unpublished uploads failed; trying again in an hour")
            }
        }
    }
}

/// Deletes every blob stored before `before` that no release names (yanked
/// releases included: their bytes stay until an operator removes them).
/// Returns how many it deleted.
pub async fn sweep(
    releases: &Releases,
    blobs: &dyn BlobStore,
    before: DateTime<Utc>,
) -> anyhow::Result<u64> {
    // Blobs first, then releases: a blob uploaded and published between the
    // two reads is either too new to delete or named by a release.
    let stored = blobs.list().await?;
    let mut named = HashSet::new();
    for r in releases.store().list_releases(None).await? {
        // A release that cannot be read might name any blob: delete nothing.
        let sha256 = Envelope::parse(r.envelope.as_bytes())
            .and_then(|env| ReleaseManifest::parse(&env.payload))
            .map_err(|e| {
                anyhow::anyhow!(
                    "release {} {} is unreadable ({e}); nothing deleted",
                    r.product,
                    r.version
                )
            })?
            .artifact
            .sha256;
        named.insert(sha256);
    }
    let mut deleted = 0;
    for (sha256, at) in stored {
        if at < before && !named.contains(&sha256) {
            blobs.delete(&sha256).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
