//! Release manifests: what a release engineer signs offline. The manifest
//! names the artifact by sha256 and size, so the bytes are bound to the
//! product, version and `seq` they were signed for.

use crate::digest::is_sha256_hex;
use crate::keyset::{format_time, parse_time};
use crate::names::{parse_version, truncate, validate_channel, validate_locale, validate_product};
use crate::{Envelope, Error, PrivateKey, Result};
use chrono::{DateTime, Utc};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const RELEASE_TYPE: &str = "application/vnd.firmcast.release+json";

/// Push payloads are capped at 4 KiB, so notes must stay well below.
pub const MAX_NOTE_BYTES: usize = 2000;
pub const MAX_NOTE_LOCALES: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseManifest {
    pub product: String,
    pub version: Version,
    pub channel: String,
    pub seq: u64,
    pub artifact: ArtifactRef,
    pub from: Option<VersionReq>,
    pub critical: bool,
    pub notes: BTreeMap<String, String>,
    pub released_at: DateTime<Utc>,
}

fn default_channel() -> String {
    "stable".to_owned()
}

#[derive(Serialize, Deserialize)]
struct ReleaseJson {
    product: String,
    version: String,
    #[serde(default = "default_channel")]
    channel: String,
    seq: u64,
    artifact: ArtifactRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default)]
    critical: bool,
    #[serde(default)]
    notes: BTreeMap<String, String>,
    released_at: String,
}

impl ReleaseManifest {
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let raw: ReleaseJson = serde_json::from_slice(payload).map_err(|e| Error::Json {
            what: "release manifest",
            reason: e.to_string(),
        })?;
        let from = match raw.from.as_deref() {
            None => None,
            Some(s) => Some(VersionReq::parse(s).map_err(|e| {
                Error::invalid(
                    "from",
                    format!(
                        "{:?} is not a semver requirement such as \">=2.0.0, <2.2.0\" ({e})",
                        truncate(s)
                    ),
                )
            })?),
        };
        let m = ReleaseManifest {
            version: parse_version(&raw.version)?,
            released_at: parse_time("released_at", &raw.released_at)?,
            product: raw.product,
            channel: raw.channel,
            seq: raw.seq,
            artifact: raw.artifact,
            from,
            critical: raw.critical,
            notes: raw.notes,
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks every field a signer or a server could get wrong.
    pub fn validate(&self) -> Result<()> {
        validate_product(&self.product)?;
        validate_channel(&self.channel)?;
        if self.seq == 0 {
            return Err(Error::invalid(
                "seq",
                "starts at 1 and only goes up per product",
            ));
        }
        if !is_sha256_hex(&self.artifact.sha256) {
            return Err(Error::invalid(
                "artifact.sha256",
                "must be 64 lowercase hex digits (the sha256 of the firmware file)",
            ));
        }
        if self.artifact.size == 0 {
            return Err(Error::invalid(
                "artifact.size",
                "an empty firmware file cannot be released",
            ));
        }
        if self.notes.len() > MAX_NOTE_LOCALES {
            return Err(Error::invalid(
                "notes",
                format!("{} locales; at most {MAX_NOTE_LOCALES}", self.notes.len()),
            ));
        }
        for (locale, text) in &self.notes {
            validate_locale(locale)?;
            if text.len() > MAX_NOTE_BYTES {
                return Err(Error::invalid(
                    format!("notes.{locale}"),
                    format!(
                        "{} bytes; at most {MAX_NOTE_BYTES} so a notification fits",
                        text.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn to_payload(&self) -> Vec<u8> {
        let raw = ReleaseJson {
            product: self.product.clone(),
            version: self.version.to_string(),
            channel: self.channel.clone(),
            seq: self.seq,
            artifact: self.artifact.clone(),
            from: self.from.as_ref().map(|r| r.to_string()),
            critical: self.critical,
            notes: self.notes.clone(),
            released_at: format_time(&self.released_at),
        };
        serde_json::to_vec_pretty(&raw).expect("a manifest always serializes")
    }

    pub fn sign(&self, key: &PrivateKey) -> Result<Envelope> {
        self.validate()?;
        Ok(Envelope::sign(RELEASE_TYPE, self.to_payload(), key))
    }

    /// Whether a device on `installed` may take this release: newer by semver
    /// precedence, and inside `from` when the release has one.
    pub fn applies_to(&self, installed: &Version) -> bool {
        self.version > *installed && self.from.as_ref().is_none_or(|req| req.matches(installed))
    }

    /// The best note for `locale`: exact, then language only, then English.
    pub fn note_for(&self, locale: &str) -> Option<&str> {
        let lang = locale.split(['-', '_']).next().unwrap_or(locale);
        self.notes
            .get(locale)
            .or_else(|| self.notes.get(lang))
            .or_else(|| self.notes.get("en"))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest() -> ReleaseManifest {
        ReleaseManifest {
            product: "WH-1000XM5".into(),
            version: Version::new(2, 2, 0),
            channel: "stable".into(),
            seq: 17,
            artifact: ArtifactRef {
                sha256: crate::digest::sha256_hex(b"fw"),
                size: 2,
            },
            from: Some(VersionReq::parse(">=2.0.0, <2.2.0").unwrap()),
            critical: false,
            notes: [
                ("en".into(), "Improves call quality.".into()),
                ("ja".into(), "通話品質".into()),
            ]
            .into(),
            released_at: parse_time("t", "2026-11-29T10:00:00Z").unwrap(),
        }
    }

    #[test]
    fn round_trip_and_design_example_shape() {
        let m = manifest();
        let back = ReleaseManifest::parse(&m.to_payload()).unwrap();
        assert_eq!(back, m);
        let v: serde_json::Value = serde_json::from_slice(&m.to_payload()).unwrap();
        assert_eq!(v["released_at"], "2026-11-29T10:00:00Z");
        assert_eq!(v["from"], ">=2.0.0, <2.2.0");
        assert_eq!(v["artifact"]["size"], 2);
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|v| v["product"] = "../etc".into()), "product"),
            (Box::new(|v| v["version"] = "2.2".into()), "version"),
            (Box::new(|v| v["channel"] = "Stable".into()), "channel"),
            (Box::new(|v| v["seq"] = 0.into()), "seq"),
            (
                Box::new(|v| v["artifact"]["sha256"] = "ABC".into()),
                "artifact.sha256",
            ),
            (
                Box::new(|v| v["artifact"]["size"] = 0.into()),
                "artifact.size",
            ),
            (Box::new(|v| v["from"] = "around 2".into()), "from"),
            (
                Box::new(|v| v["released_at"] = "yesterday".into()),
                "released_at",
            ),
            (Box::new(|v| v["notes"]["english!"] = "x".into()), "locale"),
            (
                Box::new(|v| v["notes"]["en"] = "x".repeat(3000).into()),
                "notes.en",
            ),
        ];
        for (mutate, field) in cases {
            let mut v: serde_json::Value =
                serde_json::from_slice(&manifest().to_payload()).unwrap();
            mutate(&mut v);
            let err = ReleaseManifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(
                matches!(&err, Error::Invalid { field: f, .. } if f == field),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn stepping_stones_and_notes() {
        let m = manifest();
        assert!(m.applies_to(&Version::new(2, 0, 0)));
        assert!(m.applies_to(&Version::new(2, 1, 9)));
        assert!(!m.applies_to(&Version::new(1, 9, 0)), "outside from");
        assert!(!m.applies_to(&Version::new(2, 2, 0)), "not newer");
        assert_eq!(m.note_for("ja-JP"), Some("通話品質"));
        assert_eq!(m.note_for("de"), Some("Improves call quality."));

        // Without `from`, only newer counts: the same version is no update.
        let open = ReleaseManifest { from: None, ..m };
        assert!(open.applies_to(&Version::new(1, 0, 0)));
        assert!(!open.applies_to(&Version::new(2, 2, 0)), "not newer");
        assert!(!open.applies_to(&Version::new(2, 3, 0)), "older");
    }

    #[test]
    fn channel_defaults_to_stable_and_notes_stop_at_the_locale_cap() {
        let mut v: serde_json::Value = serde_json::from_slice(&manifest().to_payload()).unwrap();
        v.as_object_mut().unwrap().remove("channel");
        let m = ReleaseManifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(m.channel, "stable");

        let locales = ('a'..='z').flat_map(|a| ('a'..='z').map(move |b| format!("{a}{b}")));
        let mut m = manifest();
        m.notes = locales
            .clone()
            .take(MAX_NOTE_LOCALES)
            .map(|l| (l, "x".into()))
            .collect();
        m.validate().unwrap();
        m.notes = locales
            .take(MAX_NOTE_LOCALES + 1)
            .map(|l| (l, "x".into()))
            .collect();
        let err = m.validate().unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field, .. } if field == "notes"),
            "{err}"
        );
    }
}
