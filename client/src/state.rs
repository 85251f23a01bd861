//! What an app remembers between checks: the last verified keyset (and the
//! root that must sign its successor), the highest release `seq` seen per
//! product, and the server's last `day` per product. A small JSON value the
//! app stores where it likes; losing it loses the rollback protection.

use crate::Error;
use firmcast_signing::keyset::KEYSET_TYPE;
use firmcast_signing::{Envelope, Keyset, PublicKey, Role, VerifiedKeyset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The persisted state; the same JSON `firmcast check --state` writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The last verified keyset envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyset: Option<serde_json::Value>,
    /// The root role that must sign the next keyset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyset_root: Option<RootJson>,
    /// Highest release seq seen per product.
    #[serde(default)]
    pub seq: BTreeMap<String, u64>,
    /// The server's `day` from the last answer per product, echoed back as
    /// `last_day` (see "Rollout intelligence" in DESIGN.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_day: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RootJson {
    threshold: usize,
    /// base64 of the raw public keys.
    keys: Vec<String>,
}

impl State {
    /// Reads state JSON; an empty string is a first start.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Ok(State::default());
        }
        serde_json::from_str(text).map_err(|e| {
            Error::CorruptState(format!(
                "the saved update state is corrupt ({e}); restore it, or start from an empty state \
                 (which forgets the rollback protection)"
            ))
        })
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("state always serializes");
        s.push('\n');
        s
    }

    /// The keyset version held, if any (not re-verified).
    pub fn keyset_version(&self) -> Option<u64> {
        let env = Envelope::from_value(self.keyset.clone()?).ok()?;
        Keyset::parse(&env.payload).ok().map(|k| k.version)
    }

    pub(crate) fn hold(&mut self, keyset: &VerifiedKeyset) {
        self.keyset = Some(keyset.envelope.to_value());
        self.keyset_root = Some(RootJson {
            threshold: keyset.root.threshold,
            keys: keyset.root.keys.iter().map(PublicKey::to_base64).collect(),
        });
    }

    /// The keyset verified on an earlier run; its signatures are checked
    /// again so a damaged value is noticed, its expiry is not (rotation
    /// handles that).
    pub(crate) fn held_keyset(&self) -> Result<Option<VerifiedKeyset>, Error> {
        let (Some(raw), Some(root)) = (&self.keyset, &self.keyset_root) else {
            return Ok(None);
        };
        let bad = |e: firmcast_signing::Error| {
            Error::CorruptState(format!(
                "the saved state's keyset is damaged ({e}); start from an empty state to trust the pinned root again"
            ))
        };
        let keys = root
            .keys
            .iter()
            .map(|k| PublicKey::from_base64(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let root = Role::new("root", root.threshold, keys).map_err(bad)?;
        let envelope = Envelope::from_value(raw.clone()).map_err(bad)?;
        let payload = envelope
            .verify(KEYSET_TYPE, "root", &root.keys, root.threshold)
            .map_err(bad)?;
        let keyset = Keyset::parse(payload).map_err(bad)?;
        Ok(Some(VerifiedKeyset {
            keyset,
            envelope,
            root,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_empty_and_corrupt() {
        assert_eq!(State::from_json("").unwrap(), State::default());
        let mut s = State::default();
        s.seq.insert("P".into(), 7);
        s.last_day.insert("P".into(), 20_000);
        let back = State::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        // The CLI's older files (no last_day) still read.
        let old = State::from_json(r#"{"seq":{"P":3}}"#).unwrap();
        assert_eq!(old.seq["P"], 3);
        let err = State::from_json("{").unwrap_err();
        assert!(matches!(err, Error::CorruptState(_)), "{err}");
        assert!(err.to_string().contains("rollback protection"), "{err}");
    }
}
