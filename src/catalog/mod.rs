//! The catalog snapshot: every release and pre-signed freshness statement, in
//! memory, swapped atomically on every change. Update checks read only this;
//! they never touch a store or the network.

pub mod rollout;
pub mod signer;

pub use signer::Signer;

use crate::state::StoredRelease;
use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use firmcast_signing::{Envelope, Freshness, ReleaseManifest, VerifiedKeyset};
use semver::Version;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Channels every product answers for, even before a release uses them.
const BASE_CHANNELS: [&str; 2] = ["stable", "beta"];

/// One release as the hot path needs it: parsed, with its offer pre-serialized.
#[derive(Debug)]
pub struct Release {
    pub stored: StoredRelease,
    pub manifest: ReleaseManifest,
    /// `{"version","url","size","sha256","critical","notes","release"}`.
    pub offer_json: Bytes,
}

impl Release {
    pub fn new(stored: StoredRelease, public_url: &str) -> anyhow::Result<Self> {
        let env = Envelope::parse(stored.envelope.as_bytes())?;
        let manifest = ReleaseManifest::parse(&env.payload)?;
        let release_raw = RawValue::from_string(stored.envelope.clone())?;
        #[derive(Serialize)]
        struct Offer<'a> {
            version: String,
            url: String,
            size: u64,
            sha256: &'a str,
            critical: bool,
            notes: &'a std::collections::BTreeMap<String, String>,
            release: &'a RawValue,
        }
        let offer = Offer {
            version: manifest.version.to_string(),
            url: format!(
                "{public_url}/v1/artifacts/{}/{}",
                manifest.product, manifest.version
            ),
            size: manifest.artifact.size,
            sha256: &manifest.artifact.sha256,
            critical: manifest.critical,
            notes: &manifest.notes,
            release: &release_raw,
        };
        let offer_json = Bytes::from(serde_json::to_vec(&offer)?);
        Ok(Release {
            stored,
            manifest,
            offer_json,
        })
    }

    fn visible_in(&self, channel: &str) -> bool {
        self.manifest.channel == channel || self.manifest.channel == "stable"
    }

    fn offerable(&self, installed: &Version, channel: &str, ip: IpAddr) -> bool {
        !self.stored.paused
            && !self.stored.yanked
            && self.visible_in(channel)
            && self.manifest.applies_to(installed)
            && rollout::in_rollout(self.stored.seed, self.stored.rollout_bp, ip)
    }
}

#[derive(Debug, Default)]
pub struct ProductCatalog {
    /// Newest version first.
    releases: Vec<Arc<Release>>,
    /// Channel -> signed freshness envelope JSON.
    freshness: HashMap<String, Bytes>,
}

impl ProductCatalog {
    pub fn release(&self, version: &Version) -> Option<&Arc<Release>> {
        self.releases
            .iter()
            .find(|r| r.manifest.version == *version)
    }

    pub fn freshness(&self, channel: &str) -> Option<&Bytes> {
        self.freshness.get(channel)
    }

    /// The newest release this client may take: stepping stones through
    /// `from`, skipping paused, yanked and not-yet-rolled-out releases.
    pub fn offer(&self, installed: &Version, channel: &str, ip: IpAddr) -> Option<&Arc<Release>> {
        self.releases
            .iter()
            .find(|r| r.offerable(installed, channel, ip))
    }
}

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every swap; part of ETags.
    pub generation: u64,
    pub products: HashMap<String, ProductCatalog>,
    /// The keyset envelope, served at /v1/keys.
    pub keyset_json: Bytes,
    pub signed_at: Option<DateTime<Utc>>,
}

impl Snapshot {
    pub fn product(&self, product: &str) -> Option<&ProductCatalog> {
        self.products.get(product)
    }

    pub fn release_count(&self) -> usize {
        self.products.values().map(|p| p.releases.len()).sum()
    }
}

pub struct Catalog {
    current: ArcSwap<Snapshot>,
    signer: Signer,
    public_url: String,
    /// Serializes rebuilds so an older one never replaces a newer one.
    rebuild: Mutex<()>,
}

impl Catalog {
    pub fn new(signer: Signer, public_url: String) -> Self {
        Catalog {
            current: ArcSwap::from_pointee(Snapshot::default()),
            signer,
            public_url,
            rebuild: Mutex::new(()),
        }
    }

    /// The current snapshot; cheap, lock-free.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The keyset envelope of `version`, current or from the history; `Err`
    /// names the versions this server holds.
    pub fn keyset_at(&self, version: u64) -> Result<Bytes, std::ops::RangeInclusive<u64>> {
        let current = self.signer.keyset.version();
        if version == current {
            return Ok(self.load().keyset_json.clone());
        }
        let oldest = self
            .signer
            .history
            .keys()
            .next()
            .copied()
            .unwrap_or(current);
        self.signer
            .history
            .get(&version)
            .cloned()
            .ok_or(oldest..=current)
    }

    /// The current snapshot as an owned `Arc`, for holding across awaits.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn keyset(&self) -> &VerifiedKeyset {
        &self.signer.keyset
    }

    /// Builds a snapshot from every stored release and swaps it in. Releases
    /// that no longer parse are skipped loudly rather than taking checks down.
    pub fn replace(&self, stored: Vec<StoredRelease>) {
        let _guard = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let mut releases = Vec::with_capacity(stored.len());
        for s in stored {
            let what = format!("{} {}", s.product, s.version);
            match Release::new(s, &self.public_url) {
                Ok(r) => releases.push(Arc::new(r)),
                Err(e) => {
                    tracing::error!(release = %what, error = %e, "stored release is unreadable; not served")
                }
            }
        }
        self.swap_in(releases);
    }

    /// Re-signs every freshness statement over the same releases (the timer).
    pub fn resign(&self) {
        let _guard = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let releases = self
            .load()
            .products
            .values()
            .flat_map(|p| p.releases.iter().cloned())
            .collect();
        self.swap_in(releases);
    }

    fn swap_in(&self, releases: Vec<Arc<Release>>) {
        let now = Utc::now();
        let expires = now + self.signer.ttl;
        let mut channels: BTreeSet<String> = BASE_CHANNELS.iter().map(|c| c.to_string()).collect();
        channels.extend(releases.iter().map(|r| r.manifest.channel.clone()));

        let mut products: HashMap<String, ProductCatalog> = HashMap::new();
        for r in releases {
            products
                .entry(r.manifest.product.clone())
                .or_default()
                .releases
                .push(r);
        }
        for (name, p) in products.iter_mut() {
            p.releases
                .sort_by(|a, b| b.manifest.version.cmp(&a.manifest.version));
            for channel in &channels {
                let latest_seq = p
                    .releases
                    .iter()
                    .filter(|r| !r.stored.yanked && r.visible_in(channel))
                    .map(|r| r.manifest.seq)
                    .max()
                    .unwrap_or(0);
                let statement = Freshness {
                    product: name.clone(),
                    channel: channel.clone(),
                    latest_seq,
                    keyset_version: self.signer.keyset.version(),
                    expires,
                };
                let env = statement.sign(&self.signer.timestamp_key);
                p.freshness
                    .insert(channel.clone(), Bytes::from(env.to_json_bytes()));
            }
        }
        let generation = self.load().generation + 1;
        self.current.store(Arc::new(Snapshot {
            generation,
            products,
            keyset_json: Bytes::from(self.signer.keyset.envelope.to_json_bytes()),
            signed_at: Some(now),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use firmcast_signing::keyset::Keyset;
    use firmcast_signing::release::ArtifactRef;
    use firmcast_signing::PrivateKey;

    fn signer() -> (Signer, PrivateKey) {
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
                timestamp_key: ts,
                ttl: Duration::hours(24),
                history: Default::default(),
            },
            release,
        )
    }

    fn stored(key: &PrivateKey, version: &str, seq: u64, rollout_bp: u16) -> StoredRelease {
        let m = ReleaseManifest {
            product: "P".into(),
            version: version.parse().unwrap(),
            channel: "stable".into(),
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
            product: "P".into(),
            version: version.into(),
            channel: "stable".into(),
            seq,
            envelope: m.sign(key).unwrap().to_pretty_json(),
            rollout_bp,
            paused: false,
            yanked: false,
            seed: seq,
            published_at: Utc::now(),
            published_by: "t".into(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn newest_eligible_release_wins_and_resign_refreshes() {
        let (signer, key) = signer();
        let verifier = signer.keyset.clone();
        let catalog = Catalog::new(signer, String::new());
        catalog.replace(vec![
            stored(&key, "1.1.0", 1, 10_000),
            stored(&key, "1.2.0", 2, 0),
        ]);
        let snap = catalog.load_full();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let p = snap.product("P").unwrap();
        let offer = p.offer(&"1.0.0".parse().unwrap(), "stable", ip).unwrap();
        assert_eq!(
            offer.manifest.version.to_string(),
            "1.1.0",
            "1.2.0 is at 0%"
        );
        let f1 = Envelope::parse(p.freshness("stable").unwrap()).unwrap();
        let f1 = verifier.verify_freshness(&f1, Utc::now()).unwrap();
        assert_eq!(f1.latest_seq, 2);

        catalog.resign();
        let snap2 = catalog.load_full();
        assert_eq!(snap2.generation, snap.generation + 1);
        let f2 = Envelope::parse(snap2.product("P").unwrap().freshness("stable").unwrap()).unwrap();
        let f2 = verifier.verify_freshness(&f2, Utc::now()).unwrap();
        assert!(f2.expires >= f1.expires);
        assert_eq!(snap2.release_count(), 2);
    }
}
