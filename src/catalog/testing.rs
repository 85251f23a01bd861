//! Signed releases for unit tests: a keyset, its signer and releases
//! signed with its release key.

use super::signer::Signer;
use crate::state::StoredRelease;
use chrono::{Duration, Utc};
use firmcast_signing::keyset::Keyset;
use firmcast_signing::release::ArtifactRef;
use firmcast_signing::{PrivateKey, ReleaseManifest, VerifiedKeyset};
use std::sync::Arc;

/// A signer over a fresh keyset, and that keyset's release key.
pub(crate) fn signer() -> (Signer, PrivateKey) {
    let root = PrivateKey::generate();
    let release = PrivateKey::generate();
    let ts = PrivateKey::generate();
    let ks = Keyset {
        version: 1,
        expires: Utc::now() + Duration::days(1),
        root: None,
        release: firmcast_signing::Role::single(release.public().clone()),
        timestamp: firmcast_signing::Role::single(ts.public().clone()),
    };
    let pinned = firmcast_signing::Role::single(root.public().clone());
    let keyset =
        VerifiedKeyset::verify_pinned(ks.sign(&[&root]).unwrap(), &pinned, Utc::now()).unwrap();
    (
        Signer {
            keyset,
            timestamp_key: Arc::new(ts),
            ttl: Duration::hours(24),
            history: Default::default(),
        },
        release,
    )
}

pub(crate) fn stored(key: &PrivateKey, version: &str, seq: u64, rollout_bp: u16) -> StoredRelease {
    stored_for(key, "P", "stable", version, seq, rollout_bp)
}

pub(crate) fn stored_for(
    key: &PrivateKey,
    product: &str,
    channel: &str,
    version: &str,
    seq: u64,
    rollout_bp: u16,
) -> StoredRelease {
    let m = ReleaseManifest {
        product: product.into(),
        version: version.parse().unwrap(),
        channel: channel.into(),
        seq,
        artifact: ArtifactRef {
            sha256: "a".repeat(64),
            size: 1,
        },
        from: None,
        critical: false,
        notes: Default::default(),
        released_at: Utc::now(),
    };
    StoredRelease {
        product: product.into(),
        version: version.into(),
        channel: channel.into(),
        seq,
        envelope: m.sign(key).unwrap().to_pretty_json(),
        rollout_bp,
        paused: false,
        yanked: false,
        seed: seq,
        published_at: Utc::now(),
        published_by: "t".into(),
        updated_at: Utc::now(),
        steering: Default::default(),
    }
}
