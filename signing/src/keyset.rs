//! The keyset: which release and timestamp keys are trusted, signed by root.
//!
//! A client pins the root public key. A keyset is accepted when root signed
//! it and it has not expired; a newer one must have `version` exactly one
//! more than the one the client holds. A keyset may name a new `root` role:
//! then it must be signed by the old root *and* the new one, and the new root
//! signs every later version.

use crate::{release::ReleaseManifest, Envelope, Error, Freshness, PrivateKey, PublicKey, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub const KEYSET_TYPE: &str = "application/vnd.firmcast.keyset+json";

/// A set of keys and how many of them must sign.
#[derive(Clone, Debug)]
pub struct Role {
    pub threshold: usize,
    pub keys: Vec<PublicKey>,
}

impl Role {
    pub fn new(name: &str, threshold: usize, keys: Vec<PublicKey>) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::invalid(name, "lists no keys"));
        }
        if threshold == 0 || threshold > keys.len() {
            return Err(Error::invalid(
                name,
                format!(
                    "threshold {threshold} must be between 1 and the {} key(s) listed",
                    keys.len()
                ),
            ));
        }
        let distinct: BTreeSet<&str> = keys.iter().map(|k| k.keyid()).collect();
        if distinct.len() != keys.len() {
            return Err(Error::invalid(name, "lists the same key twice"));
        }
        Ok(Role { threshold, keys })
    }

    /// A single pinned key, as an app ships it.
    pub fn single(key: PublicKey) -> Self {
        Role {
            threshold: 1,
            keys: vec![key],
        }
    }

    fn keyids(&self) -> BTreeSet<&str> {
        self.keys.iter().map(|k| k.keyid()).collect()
    }

    fn to_json(&self) -> RoleJson {
        RoleJson {
            threshold: self.threshold,
            keys: self
                .keys
                .iter()
                .map(|k| KeyEntry {
                    keyid: k.keyid().to_owned(),
                    public: k.to_base64(),
                })
                .collect(),
        }
    }

    fn from_json(name: &str, raw: RoleJson) -> Result<Self> {
        let keys = raw
            .keys
            .into_iter()
            .map(|e| {
                let key = PublicKey::from_base64(&e.public)?;
                if key.keyid() != e.keyid {
                    return Err(Error::invalid(
                        format!("{name} key {}", crate::names::truncate(&e.keyid)),
                        "keyid is not the sha256 of its public key",
                    ));
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>>>()?;
        Role::new(name, raw.threshold, keys)
    }
}

impl PartialEq for Role {
    fn eq(&self, other: &Self) -> bool {
        self.threshold == other.threshold && self.keyids() == other.keyids()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    keyid: String,
    public: String,
}

#[derive(Serialize, Deserialize)]
struct RoleJson {
    threshold: usize,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeysetJson {
    version: u64,
    expires: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root: Option<RoleJson>,
    release: RoleJson,
    timestamp: RoleJson,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Keyset {
    pub version: u64,
    pub expires: DateTime<Utc>,
    /// Present when this keyset rotates (or restates) the root keys.
    pub root: Option<Role>,
    pub release: Role,
    pub timestamp: Role,
}

impl Keyset {
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let raw: KeysetJson = serde_json::from_slice(payload).map_err(|e| Error::Json {
            what: "keyset",
            reason: e.to_string(),
        })?;
        if raw.version == 0 {
            return Err(Error::invalid("keyset version", "starts at 1"));
        }
        Ok(Keyset {
            version: raw.version,
            expires: parse_time("keyset expires", &raw.expires)?,
            root: raw.root.map(|r| Role::from_json("root", r)).transpose()?,
            release: Role::from_json("release", raw.release)?,
            timestamp: Role::from_json("timestamp", raw.timestamp)?,
        })
    }

    pub fn to_payload(&self) -> Vec<u8> {
        let raw = KeysetJson {
            version: self.version,
            expires: format_time(&self.expires),
            root: self.root.as_ref().map(Role::to_json),
            release: self.release.to_json(),
            timestamp: self.timestamp.to_json(),
        };
        serde_json::to_vec_pretty(&raw).expect("a keyset always serializes")
    }

    /// Signs with every given root key.
    pub fn sign(&self, roots: &[&PrivateKey]) -> Result<Envelope> {
        let (first, rest) = roots
            .split_first()
            .ok_or_else(|| Error::invalid("root keys", "at least one is needed to sign"))?;
        let mut env = Envelope::sign(KEYSET_TYPE, self.to_payload(), first);
        for k in rest {
            env.add_signature(k)?;
        }
        Ok(env)
    }
}

/// A keyset whose signatures and expiry have been checked, with the root role
/// that must sign its successor.
#[derive(Clone, Debug)]
pub struct VerifiedKeyset {
    pub keyset: Keyset,
    pub envelope: Envelope,
    pub root: Role,
}

impl VerifiedKeyset {
    /// First contact: the keyset must be signed by the pinned root.
    pub fn verify_pinned(envelope: Envelope, pinned: &Role, now: DateTime<Utc>) -> Result<Self> {
        let k = Self::anchor(envelope, pinned)?;
        k.ensure_current(now)?;
        Ok(k)
    }

    /// Rotation: `envelope` must be the next version, signed by this keyset's
    /// root (and by its own new root if it names one).
    pub fn verify_next(&self, envelope: Envelope, now: DateTime<Utc>) -> Result<Self> {
        let next = self.follow(envelope)?;
        next.ensure_current(now)?;
        Ok(next)
    }

    /// The start of a chain: signed by the pinned root, expiry not checked.
    /// An old keyset expires on its own schedule; a client walking up from it
    /// checks expiry on the last link only (`ensure_current`).
    pub fn anchor(envelope: Envelope, pinned: &Role) -> Result<Self> {
        Self::verify_with_root(envelope, pinned)
    }

    /// One link of a chain: the next version, signed by this keyset's root
    /// (and its own new root if it names one); expiry not checked.
    pub fn follow(&self, envelope: Envelope) -> Result<Self> {
        let next = Self::verify_with_root(envelope, &self.root)?;
        let expected = self.keyset.version + 1;
        if next.keyset.version != expected {
            return Err(Error::KeysetVersion {
                current: self.keyset.version,
                found: next.keyset.version,
                expected,
            });
        }
        Ok(next)
    }

    /// Refuses a keyset past its `expires`.
    pub fn ensure_current(&self, now: DateTime<Utc>) -> Result<()> {
        if self.keyset.expires <= now {
            return Err(Error::Expired {
                what: "keyset",
                expires: format_time(&self.keyset.expires),
                hint: "the root key holder must sign a new keyset (`firmcast keys rotate`)",
            });
        }
        Ok(())
    }

    fn verify_with_root(envelope: Envelope, trusted_root: &Role) -> Result<Self> {
        let payload = envelope.verify(
            KEYSET_TYPE,
            "root",
            &trusted_root.keys,
            trusted_root.threshold,
        )?;
        let keyset = Keyset::parse(payload)?;
        let root = match &keyset.root {
            Some(new_root) if new_root != trusted_root => {
                envelope.verify(KEYSET_TYPE, "new root", &new_root.keys, new_root.threshold)?;
                new_root.clone()
            }
            _ => trusted_root.clone(),
        };
        Ok(VerifiedKeyset {
            keyset,
            envelope,
            root,
        })
    }

    pub fn version(&self) -> u64 {
        self.keyset.version
    }

    /// A release manifest signed by the release-key threshold.
    pub fn verify_release(&self, envelope: &Envelope) -> Result<ReleaseManifest> {
        let role = &self.keyset.release;
        let payload = envelope.verify(
            crate::release::RELEASE_TYPE,
            "release",
            &role.keys,
            role.threshold,
        )?;
        ReleaseManifest::parse(payload)
    }

    /// A freshness statement signed by the timestamp role for this keyset
    /// version, not yet expired.
    pub fn verify_freshness(&self, envelope: &Envelope, now: DateTime<Utc>) -> Result<Freshness> {
        let role = &self.keyset.timestamp;
        let payload = envelope.verify(
            crate::freshness::TIMESTAMP_TYPE,
            "timestamp",
            &role.keys,
            role.threshold,
        )?;
        let f = Freshness::parse(payload)?;
        if f.keyset_version != self.keyset.version {
            return Err(Error::Mismatch {
                what: "freshness statement",
                expected: format!("keyset version {}", self.keyset.version),
                found: format!("keyset version {}", f.keyset_version),
            });
        }
        if f.expires <= now {
            return Err(Error::Expired {
                what: "freshness statement",
                expires: format_time(&f.expires),
                hint: "the answer is stale (a frozen server or mirror); treat it as unknown, not as \"no update\", and retry later",
            });
        }
        Ok(f)
    }
}

pub(crate) fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::invalid(
                field,
                format!(
                    "{:?} is not an RFC 3339 time such as 2027-01-01T00:00:00Z ({e})",
                    crate::names::truncate(s)
                ),
            )
        })
}

pub(crate) fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    struct Keys {
        root: PrivateKey,
        release: Vec<PrivateKey>,
        ts: PrivateKey,
    }

    fn keys(n: usize) -> Keys {
        Keys {
            root: PrivateKey::generate(),
            release: (0..n).map(|_| PrivateKey::generate()).collect(),
            ts: PrivateKey::generate(),
        }
    }

    fn keyset(k: &Keys, version: u64, threshold: usize) -> Keyset {
        Keyset {
            version,
            expires: Utc::now() + Duration::days(365),
            root: None,
            release: Role::new(
                "release",
                threshold,
                k.release.iter().map(|r| r.public().clone()).collect(),
            )
            .unwrap(),
            timestamp: Role::single(k.ts.public().clone()),
        }
    }

    #[test]
    fn pinned_root_round_trip() {
        let k = keys(3);
        let ks = keyset(&k, 1, 2);
        let env = ks.sign(&[&k.root]).unwrap();
        let env = Envelope::parse(env.to_pretty_json().as_bytes()).unwrap();
        let v =
            VerifiedKeyset::verify_pinned(env, &Role::single(k.root.public().clone()), Utc::now())
                .unwrap();
        assert_eq!(v.keyset, ks);
    }

    #[test]
    fn wrong_root_expired_and_malformed_are_refused() {
        let k = keys(1);
        let pinned = Role::single(k.root.public().clone());
        let other = PrivateKey::generate();
        let env = keyset(&k, 1, 1).sign(&[&other]).unwrap();
        let err = VerifiedKeyset::verify_pinned(env, &pinned, Utc::now()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BelowThreshold {
                    role: "root",
                    unknown: 1,
                    ..
                }
            ),
            "{err}"
        );

        let mut ks = keyset(&k, 1, 1);
        ks.expires = Utc::now() - Duration::seconds(1);
        let err = VerifiedKeyset::verify_pinned(ks.sign(&[&k.root]).unwrap(), &pinned, Utc::now())
            .unwrap_err();
        assert!(
            matches!(err, Error::Expired { what: "keyset", .. }),
            "{err}"
        );

        let bad = br#"{"version":1,"expires":"tomorrow","release":{"threshold":1,"keys":[]},"timestamp":{"threshold":1,"keys":[]}}"#;
        let err = Keyset::parse(bad).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn role_validation() {
        let a = PrivateKey::generate().public().clone();
        assert!(Role::new("release", 0, vec![a.clone()]).is_err());
        assert!(Role::new("release", 2, vec![a.clone()]).is_err());
        assert!(Role::new("release", 1, vec![a.clone(), a.clone()]).is_err());
        assert!(Role::new("release", 1, vec![]).is_err());

        // A keyid that is not the key's hash is refused.
        let k = keys(1);
        let payload = String::from_utf8(keyset(&k, 1, 1).to_payload()).unwrap();
        let tampered = payload.replacen(k.release[0].keyid(), &"0".repeat(64), 1);
        let err = Keyset::parse(tampered.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("keyid is not the sha256"), "{err}");
    }

    #[test]
    fn rotation_requires_next_version_and_current_root() {
        let k = keys(1);
        let pinned = Role::single(k.root.public().clone());
        let v1 = VerifiedKeyset::verify_pinned(
            keyset(&k, 1, 1).sign(&[&k.root]).unwrap(),
            &pinned,
            Utc::now(),
        )
        .unwrap();

        let v2 = v1
            .verify_next(keyset(&k, 2, 1).sign(&[&k.root]).unwrap(), Utc::now())
            .unwrap();
        assert_eq!(v2.version(), 2);

        let err = v1
            .verify_next(keyset(&k, 3, 1).sign(&[&k.root]).unwrap(), Utc::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::KeysetVersion {
                    expected: 2,
                    found: 3,
                    ..
                }
            ),
            "{err}"
        );
        let err = v2
            .verify_next(keyset(&k, 2, 1).sign(&[&k.root]).unwrap(), Utc::now())
            .unwrap_err();
        assert!(matches!(err, Error::KeysetVersion { .. }), "{err}");

        let intruder = PrivateKey::generate();
        let err = v1
            .verify_next(keyset(&k, 2, 1).sign(&[&intruder]).unwrap(), Utc::now())
            .unwrap_err();
        assert!(matches!(err, Error::BelowThreshold { .. }), "{err}");
    }

    #[test]
    fn root_rotation_needs_old_and_new_root() {
        let k = keys(1);
        let pinned = Role::single(k.root.public().clone());
        let v1 = VerifiedKeyset::verify_pinned(
            keyset(&k, 1, 1).sign(&[&k.root]).unwrap(),
            &pinned,
            Utc::now(),
        )
        .unwrap();
        let new_root = PrivateKey::generate();
        let mut ks2 = keyset(&k, 2, 1);
        ks2.root = Some(Role::single(new_root.public().clone()));

        // Only the old root: the new root never agreed.
        let err = v1
            .verify_next(ks2.sign(&[&k.root]).unwrap(), Utc::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::BelowThreshold {
                    role: "new root",
                    ..
                }
            ),
            "{err}"
        );
        // Only the new root: the old root never agreed.
        let err = v1
            .verify_next(ks2.sign(&[&new_root]).unwrap(), Utc::now())
            .unwrap_err();
        assert!(
            matches!(err, Error::BelowThreshold { role: "root", .. }),
            "{err}"
        );

        let v2 = v1
            .verify_next(ks2.sign(&[&k.root, &new_root]).unwrap(), Utc::now())
            .unwrap();
        // From now on the new root alone signs, and the old one no longer can.
        let mut ks3 = keyset(&k, 3, 1);
        ks3.root = Some(Role::single(new_root.public().clone()));
        v2.verify_next(ks3.sign(&[&new_root]).unwrap(), Utc::now())
            .unwrap();
        let err = v2
            .verify_next(keyset(&k, 3, 1).sign(&[&k.root]).unwrap(), Utc::now())
            .unwrap_err();
        assert!(matches!(err, Error::BelowThreshold { .. }), "{err}");
    }

    #[test]
    fn a_chain_may_pass_through_expired_links_but_must_end_current() {
        let k = keys(1);
        let pinned = Role::single(k.root.public().clone());
        let mut ks1 = keyset(&k, 1, 1);
        ks1.expires = Utc::now() - Duration::days(400);
        let v1 = ks1.sign(&[&k.root]).unwrap();
        assert!(matches!(
            VerifiedKeyset::verify_pinned(v1.clone(), &pinned, Utc::now()),
            Err(Error::Expired { .. })
        ));
        let held = VerifiedKeyset::anchor(v1, &pinned).unwrap();

        // v2 rotated the root and has expired too; v3 is signed by v2's root only.
        let new_root = PrivateKey::generate();
        let mut ks2 = keyset(&k, 2, 1);
        ks2.root = Some(Role::single(new_root.public().clone()));
        ks2.expires = Utc::now() - Duration::days(30);
        let v2 = held
            .follow(ks2.sign(&[&k.root, &new_root]).unwrap())
            .unwrap();
        assert!(v2.ensure_current(Utc::now()).is_err());
        let mut ks3 = keyset(&k, 3, 1);
        ks3.root = Some(Role::single(new_root.public().clone()));
        let v3 = v2.follow(ks3.sign(&[&new_root]).unwrap()).unwrap();
        v3.ensure_current(Utc::now()).unwrap();
        // Skipping the link that rotated the root cannot verify.
        let err = held.follow(ks3.sign(&[&new_root]).unwrap()).unwrap_err();
        assert!(
            matches!(err, Error::BelowThreshold { role: "root", .. }),
            "{err}"
        );
    }

    #[test]
    fn freshness_is_checked_against_timestamp_role_and_expiry() {
        let k = keys(1);
        let pinned = Role::single(k.root.public().clone());
        let v = VerifiedKeyset::verify_pinned(
            keyset(&k, 1, 1).sign(&[&k.root]).unwrap(),
            &pinned,
            Utc::now(),
        )
        .unwrap();
        let f = Freshness {
            product: "P".into(),
            channel: "stable".into(),
            latest_seq: 3,
            keyset_version: 1,
            expires: Utc::now() + Duration::hours(24),
        };
        assert_eq!(v.verify_freshness(&f.sign(&k.ts), Utc::now()).unwrap(), f);

        let err = v
            .verify_freshness(&f.sign(&k.release[0]), Utc::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::BelowThreshold {
                    role: "timestamp",
                    ..
                }
            ),
            "{err}"
        );
        let err = v
            .verify_freshness(&f.sign(&k.ts), Utc::now() + Duration::hours(25))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Expired {
                    what: "freshness statement",
                    ..
                }
            ),
            "{err}"
        );
        let old = Freshness {
            keyset_version: 7,
            ..f
        };
        assert!(matches!(
            v.verify_freshness(&old.sign(&k.ts), Utc::now()),
            Err(Error::Mismatch { .. })
        ));
    }
}
