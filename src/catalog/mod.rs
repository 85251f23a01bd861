//! The catalog snapshot: every release and pre-signed freshness statement, in
//! memory, swapped atomically on every change. Update checks read only this;
//! they never touch a store or the network.

pub mod rollout;
pub mod signer;
#[cfg(test)]
pub(crate) mod testing;

pub use signer::Signer;

use crate::state::StoredRelease;
use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use firmcast_signing::{Envelope, Freshness, PrivateKey, ReleaseManifest, VerifiedKeyset};
use semver::Version;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// The snapshot's maps hold published names and are only looked up with
/// client input, which cannot lengthen a probe chain: foldhash (seeded per
/// process, not DoS-hardened) is safe here and cheaper than SipHash on the
/// hot path.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Channels every product answers for, even before a release uses them.
const BASE_CHANNELS: [&str; 2] = ["stable", "beta"];

/// One release as the hot path needs it: parsed, with its offer pre-serialized.
#[derive(Debug)]
pub struct Release {
    /// As stored, but `envelope` is empty: the offer holds its bytes.
    pub stored: StoredRelease,
    pub manifest: ReleaseManifest,
    /// `{"version","url","size","sha256","critical","notes","release"}`,
    /// ending with the stored envelope verbatim.
    pub offer_json: Bytes,
    envelope_len: usize,
}

impl Release {
    pub fn new(mut stored: StoredRelease, public_url: &str) -> anyhow::Result<Self> {
        let env = Envelope::parse(stored.envelope.as_bytes())?;
        let manifest = ReleaseManifest::parse(&env.payload)?;
        let release_raw: &RawValue = serde_json::from_str(&stored.envelope)?;
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
            release: release_raw,
        };
        let mut offer_json = serde_json::to_vec(&offer)?;
        offer_json.shrink_to_fit(); // kept for the process's life: no growth slack
        let offer_json = Bytes::from(offer_json);
        let envelope_len = release_raw.get().len();
        debug_assert!(offer_json[..offer_json.len() - 1].ends_with(release_raw.get().as_bytes()));
        stored.envelope = String::new();
        Ok(Release {
            stored,
            manifest,
            offer_json,
            envelope_len,
        })
    }

    /// The signed envelope as stored.
    pub fn envelope(&self) -> &[u8] {
        let end = self.offer_json.len() - 1; // the offer's closing brace
        &self.offer_json[end - self.envelope_len..end]
    }

    /// True when `s` is the stored form this release was built from.
    fn built_from(&self, s: &StoredRelease) -> bool {
        let StoredRelease {
            product,
            version,
            channel,
            seq,
            envelope,
            rollout_bp,
            paused,
            yanked,
            seed,
            published_at,
            published_by,
            updated_at,
            steering,
        } = s;
        let r = &self.stored;
        (
            product, version, channel, seq, rollout_bp, paused, yanked, seed,
        ) == (
            &r.product,
            &r.version,
            &r.channel,
            &r.seq,
            &r.rollout_bp,
            &r.paused,
            &r.yanked,
            &r.seed,
        ) && (published_at, published_by, updated_at)
            == (&r.published_at, &r.published_by, &r.updated_at)
            && *steering == r.steering
            && envelope.trim().as_bytes() == self.envelope()
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

#[derive(Debug)]
pub struct ProductCatalog {
    name: String,
    /// Newest version first.
    releases: Vec<Arc<Release>>,
    /// Channel -> freshness statement, signed on first use.
    freshness: FastMap<String, Statement>,
    stamp: Arc<Stamp>,
}

/// What every statement of one build shares: the key, the keyset version
/// and the expiry.
struct Stamp {
    key: Arc<PrivateKey>,
    keyset_version: u64,
    expires: DateTime<Utc>,
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stamp")
            .field("keyset_version", &self.keyset_version)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// One product and channel's statement. Signing waits for the first check
/// that needs it: a start-up or a re-sign over thousands of products then
/// signs only what clients ask for, once per build.
#[derive(Debug)]
struct Statement {
    /// Unique for the process: the answers built on this statement are the
    /// same bytes exactly as long as the statement lives (it is shared by
    /// snapshots in which its product did not change).
    id: u64,
    latest_seq: u64,
    signed: OnceLock<Bytes>,
    /// The whole answer to a plain check, per offered release (by index in
    /// `releases`; the last for no offer), built on first use: the hot path
    /// then sends shared bytes and headers instead of building them.
    answers: OnceLock<Box<[OnceLock<CachedAnswer>]>>,
}

static NEXT_STATEMENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The whole HTTP answer to a plain check for one statement and offer:
/// built once by the API, then sent as it is.
#[derive(Debug)]
pub struct CachedAnswer {
    /// The day number the body carries.
    pub day: u32,
    pub body: Bytes,
    pub headers: hyper::HeaderMap,
}

/// What a check resolved to in one product: the offer, if any, and the
/// channel's statement.
pub struct Resolved<'a> {
    pub offer: Option<&'a Arc<Release>>,
    pub freshness: &'a Bytes,
    /// Identifies the statement (and with the offer, the answer's bytes).
    pub statement: u64,
    /// Where the whole answer for this offer and statement is kept.
    pub answer: &'a OnceLock<CachedAnswer>,
}

impl ProductCatalog {
    /// Newest version first.
    pub fn releases(&self) -> &[Arc<Release>] {
        &self.releases
    }

    pub fn release(&self, version: &Version) -> Option<&Arc<Release>> {
        self.releases
            .iter()
            .find(|r| r.manifest.version == *version)
    }

    /// The signed freshness envelope JSON for `channel`.
    pub fn freshness(&self, channel: &str) -> Option<&Bytes> {
        let (channel, statement) = self.freshness.get_key_value(channel)?;
        Some(self.signed(channel, statement))
    }

    fn signed<'a>(&'a self, channel: &str, statement: &'a Statement) -> &'a Bytes {
        statement.signed.get_or_init(|| {
            let stamp = &self.stamp;
            let env = Freshness {
                product: self.name.clone(),
                channel: channel.to_owned(),
                latest_seq: statement.latest_seq,
                keyset_version: stamp.keyset_version,
                expires: stamp.expires,
            }
            .sign(&stamp.key);
            Bytes::from(env.to_json_bytes())
        })
    }

    /// A check of `channel` from `installed`: the newest release this
    /// client may take (stepping stones through `from`, skipping paused,
    /// yanked and not-yet-rolled-out releases); `None` when the product does
    /// not answer for that channel.
    pub fn resolve(&self, installed: &Version, channel: &str, ip: IpAddr) -> Option<Resolved<'_>> {
        let (channel, statement) = self.freshness.get_key_value(channel)?;
        let index = self
            .releases
            .iter()
            .position(|r| r.offerable(installed, channel, ip));
        let answers = statement
            .answers
            .get_or_init(|| (0..=self.releases.len()).map(|_| OnceLock::new()).collect());
        Some(Resolved {
            offer: index.map(|i| &self.releases[i]),
            freshness: self.signed(channel, statement),
            statement: statement.id,
            answer: &answers[index.unwrap_or(self.releases.len())],
        })
    }

    /// True when `stored` is exactly the releases this entry was built from.
    fn holds_exactly(&self, stored: &[StoredRelease]) -> bool {
        self.releases.len() == stored.len()
            && stored
                .iter()
                .all(|s| self.releases.iter().any(|r| r.built_from(s)))
    }
}

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every swap; part of ETags.
    pub generation: u64,
    /// Shared between snapshots: a change rebuilds only its own product.
    pub products: FastMap<String, Arc<ProductCatalog>>,
    /// Channels every product answers for: the base ones and any a release uses.
    pub channels: BTreeSet<String>,
    /// The keyset envelope, served at /v1/keys.
    pub keyset_json: Bytes,
}

impl Snapshot {
    pub fn product(&self, product: &str) -> Option<&ProductCatalog> {
        self.products.get(product).map(|p| &**p)
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

    /// Installs every stored release (start-up, or a change made through
    /// another instance). Products whose releases are unchanged keep their
    /// entry and statements; the rest are rebuilt and re-signed.
    pub fn replace(&self, stored: Vec<StoredRelease>) {
        let _guard = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_product: HashMap<String, Vec<StoredRelease>> = HashMap::new();
        for s in stored {
            by_product.entry(s.product.clone()).or_default().push(s);
        }
        self.install(by_product, Scope::Everything);
    }

    /// Installs one product's releases after a change made here; every other
    /// product is shared with the previous snapshot as it is.
    pub fn replace_product(&self, product: &str, stored: Vec<StoredRelease>) {
        let _guard = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let changed = HashMap::from([(product.to_owned(), stored)]);
        self.install(changed, Scope::Only);
    }

    /// Re-signs every freshness statement over the same releases (the timer).
    pub fn resign(&self) {
        let _guard = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.load_full();
        let mut products =
            FastMap::with_capacity_and_hasher(current.products.len(), Default::default());
        let stamp = self.stamp();
        for (name, p) in &current.products {
            let releases = p.releases.clone();
            products.insert(
                name.clone(),
                Arc::new(self.product(name, releases, &current.channels, &stamp)),
            );
        }
        self.swap(&current, products, current.channels.clone());
    }

    fn install(&self, changed: HashMap<String, Vec<StoredRelease>>, scope: Scope) {
        let current = self.load_full();
        let mut channels: BTreeSet<String> = match scope {
            Scope::Everything => BASE_CHANNELS.iter().map(|c| c.to_string()).collect(),
            Scope::Only => current.channels.clone(),
        };
        channels.extend(changed.values().flatten().map(|s| s.channel.clone()));
        // A new channel must be answered by every product: re-sign them all.
        let resign_all = channels != current.channels;
        let stamp = self.stamp();

        let mut products = match scope {
            Scope::Everything => {
                FastMap::with_capacity_and_hasher(changed.len(), Default::default())
            }
            Scope::Only => current.products.clone(),
        };
        for (name, stored) in changed {
            let old = current.products.get(&name);
            if stored.is_empty() {
                products.remove(&name);
                continue;
            }
            if let Some(old) = old.filter(|o| !resign_all && o.holds_exactly(&stored)) {
                products.insert(name, old.clone());
                continue;
            }
            let releases = self.parse(stored, old);
            products.insert(
                name.clone(),
                Arc::new(self.product(&name, releases, &channels, &stamp)),
            );
        }
        if resign_all {
            for (name, p) in products.iter_mut() {
                if p.freshness.len() != channels.len() {
                    *p = Arc::new(self.product(name, p.releases.clone(), &channels, &stamp));
                }
            }
        }
        self.swap(&current, products, channels);
    }

    /// Parses stored releases, reusing the parsed form of any unchanged one.
    /// Releases that no longer parse are skipped loudly rather than taking
    /// checks down.
    fn parse(
        &self,
        stored: Vec<StoredRelease>,
        old: Option<&Arc<ProductCatalog>>,
    ) -> Vec<Arc<Release>> {
        let mut releases = Vec::with_capacity(stored.len());
        for s in stored {
            let reuse = old.and_then(|o| o.releases.iter().find(|r| r.built_from(&s)));
            if let Some(r) = reuse {
                releases.push(r.clone());
                continue;
            }
            let what = format!("{} {}", s.product, s.version);
            match Release::new(s, &self.public_url) {
                Ok(r) => releases.push(Arc::new(r)),
                Err(e) => {
                    tracing::error!(release = %what, error = %e, "stored release is unreadable; not served")
                }
            }
        }
        releases.sort_by(|a, b| b.manifest.version.cmp(&a.manifest.version));
        releases
    }

    /// One product's entry with a freshness statement per channel.
    fn product(
        &self,
        name: &str,
        releases: Vec<Arc<Release>>,
        channels: &BTreeSet<String>,
        stamp: &Arc<Stamp>,
    ) -> ProductCatalog {
        let mut freshness = FastMap::with_capacity_and_hasher(channels.len(), Default::default());
        for channel in channels {
            let latest_seq = releases
                .iter()
                .filter(|r| !r.stored.yanked && r.visible_in(channel))
                .map(|r| r.manifest.seq)
                .max()
                .unwrap_or(0);
            let statement = Statement {
                id: NEXT_STATEMENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                latest_seq,
                signed: OnceLock::new(),
                answers: OnceLock::new(),
            };
            freshness.insert(channel.clone(), statement);
        }
        ProductCatalog {
            name: name.to_owned(),
            releases,
            freshness,
            stamp: stamp.clone(),
        }
    }

    /// Statements signed from now on expire one TTL ahead.
    fn stamp(&self) -> Arc<Stamp> {
        Arc::new(Stamp {
            key: self.signer.timestamp_key.clone(),
            keyset_version: self.signer.keyset.version(),
            expires: Utc::now() + self.signer.ttl,
        })
    }

    fn swap(
        &self,
        current: &Snapshot,
        products: FastMap<String, Arc<ProductCatalog>>,
        channels: BTreeSet<String>,
    ) {
        self.current.store(Arc::new(Snapshot {
            generation: current.generation + 1,
            products,
            channels,
            keyset_json: Bytes::from(self.signer.keyset.envelope.to_json_bytes()),
        }));
    }
}

#[derive(Clone, Copy)]
enum Scope {
    /// The given products are the whole catalog.
    Everything,
    /// Only the given products changed.
    Only,
}

#[cfg(test)]
mod tests {
    use super::testing::{signer, stored, stored_for};
    use super::*;

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
        let offer = p
            .resolve(&"1.0.0".parse().unwrap(), "stable", ip)
            .unwrap()
            .offer
            .unwrap();
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
        let versions: Vec<String> = snap2
            .product("P")
            .unwrap()
            .releases()
            .iter()
            .map(|r| r.manifest.version.to_string())
            .collect();
        assert_eq!(versions, ["1.2.0", "1.1.0"], "newest first");
    }

    #[test]
    fn freshness_names_the_newest_live_release_of_its_own_channel() {
        let (signer, key) = signer();
        let verifier = signer.keyset.clone();
        let catalog = Catalog::new(signer, String::new());
        let mut yanked = stored(&key, "1.1.0", 2, 10_000);
        yanked.yanked = true;
        catalog.replace(vec![
            stored(&key, "1.0.0", 1, 10_000),
            yanked,
            stored_for(&key, "P", "nightly", "1.2.0-n.1", 3, 10_000),
        ]);
        let snap = catalog.load_full();
        let f = Envelope::parse(snap.product("P").unwrap().freshness("stable").unwrap()).unwrap();
        let f = verifier.verify_freshness(&f, Utc::now()).unwrap();
        assert_eq!(f.latest_seq, 1, "not the yanked 2 nor nightly's 3");
    }

    #[test]
    fn a_release_changed_in_the_store_is_rebuilt() {
        let (signer, key) = signer();
        let catalog = Catalog::new(signer, String::new());
        let r = stored(&key, "1.0.0", 1, 10_000);
        catalog.replace(vec![r.clone()]);
        let changed = StoredRelease {
            published_by: "someone else".into(),
            ..r
        };
        catalog.replace(vec![changed]);
        let snap = catalog.load_full();
        let p = snap.product("P").unwrap();
        assert_eq!(p.releases()[0].stored.published_by, "someone else");
    }

    #[test]
    fn a_change_rebuilds_only_its_own_product() {
        let (signer, key) = signer();
        let catalog = Catalog::new(signer, String::new());
        let a1 = stored_for(&key, "A", "stable", "1.0.0", 1, 10_000);
        let b1 = stored_for(&key, "B", "stable", "1.0.0", 1, 10_000);
        catalog.replace(vec![a1.clone(), b1.clone()]);
        let before = catalog.load_full();

        let a2 = stored_for(&key, "A", "stable", "1.1.0", 2, 10_000);
        catalog.replace_product("A", vec![a1.clone(), a2.clone()]);
        let after = catalog.load_full();
        assert!(Arc::ptr_eq(&before.products["B"], &after.products["B"]));
        let a = &after.products["A"];
        assert_eq!(a.releases[0].manifest.version.to_string(), "1.1.0");
        assert!(
            Arc::ptr_eq(&before.products["A"].releases[0], &a.releases[1]),
            "the unchanged release is not parsed again"
        );
        assert_ne!(
            a.freshness("stable"),
            before.products["A"].freshness("stable")
        );

        // The same catalog from another instance changes nothing.
        catalog.replace(vec![b1.clone(), a2.clone(), a1.clone()]);
        let same = catalog.load_full();
        assert!(Arc::ptr_eq(&after.products["A"], &same.products["A"]));
        assert!(Arc::ptr_eq(&after.products["B"], &same.products["B"]));
        assert_eq!(same.generation, after.generation + 1);

        // A new channel is answered by every product.
        let n = stored_for(&key, "A", "nightly", "1.2.0-n.1", 3, 10_000);
        catalog.replace_product("A", vec![a1.clone(), a2.clone(), n]);
        let snap = catalog.load_full();
        assert!(snap.products["B"].freshness("nightly").is_some());
        assert_eq!(snap.channels.len(), 3);

        // A product with no releases left is gone; a full replace drops it too.
        catalog.replace_product("A", vec![]);
        assert!(catalog.load().product("A").is_none());
        catalog.replace(vec![]);
        assert!(catalog.load().products.is_empty());
    }
}
