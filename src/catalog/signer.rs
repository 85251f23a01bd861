//! The server's keys: the keyset it serves, the online timestamp key that
//! signs freshness statements, and the chain of earlier keysets that lets a
//! client which missed rotations walk up one version at a time.

use crate::config::Settings;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::Duration;
use firmcast_signing::{Envelope, Keyset, PrivateKey, PublicKey, Role, VerifiedKeyset};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What signs freshness statements: the online timestamp key, checked at
/// start-up to belong to the keyset's timestamp role.
pub struct Signer {
    pub keyset: VerifiedKeyset,
    pub timestamp_key: Arc<PrivateKey>,
    pub ttl: Duration,
    /// Earlier keyset envelopes by version, each checked to be signed by the
    /// root of the one before it, up to the current keyset.
    pub history: BTreeMap<u64, Bytes>,
}

/// Loads the keyset (verified against the pinned root, as clients will) and
/// the timestamp key, which must belong to the keyset's timestamp role.
pub fn load_signer(settings: &Settings) -> Result<Signer> {
    let s = &settings.signing;
    if !s.keyset.exists() {
        bail!(
            "no keyset at {}. Create keys once with `firmcast keys init --dir {}` (then keep root.pem and release-*.pem offline), \
             or for a throwaway development setup run `firmcast serve --dev-keys`",
            s.keyset.display(),
            crate::files::parent_dir(&s.keyset).display()
        );
    }
    let root = PublicKey::read_pem_file(&s.root_public_key).context("signing.root_public_key")?;
    let bytes = std::fs::read(&s.keyset)
        .with_context(|| crate::config::read_context(&s.keyset, "keyset"))?;
    let env = Envelope::parse(&bytes)
        .with_context(|| format!("signing.keyset {}", s.keyset.display()))?;
    let keyset = VerifiedKeyset::verify_pinned(env, &Role::single(root), chrono::Utc::now())
        .with_context(|| {
            format!(
                "signing.keyset {} does not verify against {}",
                s.keyset.display(),
                s.root_public_key.display()
            )
        })?;
    let timestamp_key =
        PrivateKey::read_pem_file(&s.timestamp_key).context("signing.timestamp_key")?;
    if !keyset
        .keyset
        .timestamp
        .keys
        .iter()
        .any(|k| k.keyid() == timestamp_key.keyid())
    {
        bail!(
            "signing.timestamp_key {} is not in the keyset's timestamp role; point it at the right key or rotate with `firmcast keys rotate --new-timestamp-key`",
            s.timestamp_key.display()
        );
    }
    let history = load_history(&settings.keyset_history_dir(), &keyset)?;
    Ok(Signer {
        keyset,
        timestamp_key: Arc::new(timestamp_key),
        ttl: chrono::Duration::hours(s.freshness_ttl_hours as i64),
        history,
    })
}

/// Reads `DIR/<version>.json` (what `keys rotate` writes) for every version
/// below the current one, newest first, until one is missing. Each file must
/// hold a keyset envelope of the version its name says; signatures are the
/// client's to check, link by link from the root it pins (the server may no
/// longer know the root that signed the oldest links).
fn load_history(dir: &Path, current: &VerifiedKeyset) -> Result<BTreeMap<u64, Bytes>> {
    let mut history = BTreeMap::new();
    for version in (1..current.version()).rev() {
        let path = dir.join(format!("{version}.json"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e).with_context(|| crate::config::read_context(&path, "keyset")),
        };
        let env = Envelope::parse(&bytes).map_err(anyhow::Error::from).and_then(|env| {
            let found = Keyset::parse(&env.payload)?.version;
            if found != version {
                bail!("it holds keyset version {found}, not {version}; each file is named after its version");
            }
            Ok(env)
        });
        let env = env.with_context(|| format!("keyset history file {}", path.display()))?;
        history.insert(version, Bytes::from(env.to_json_bytes()));
    }
    if let Some(oldest) = history.keys().next() {
        tracing::info!(oldest, dir = %dir.display(), "keyset history loaded");
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn keyset(version: u64, root: &PrivateKey) -> Envelope {
        let key = PrivateKey::generate();
        Keyset {
            version,
            expires: Utc::now() + Duration::days(1),
            root: None,
            release: Role::single(key.public().clone()),
            timestamp: Role::single(key.public().clone()),
        }
        .sign(&[root])
        .unwrap()
    }

    #[test]
    fn history_stops_at_the_first_missing_version_and_any_other_read_error_is_refused() {
        let root = PrivateKey::generate();
        let pinned = Role::single(root.public().clone());
        let current = VerifiedKeyset::verify_pinned(keyset(3, &root), &pinned, Utc::now()).unwrap();
        let dir = tempfile::tempdir().unwrap();

        // 2.json present, 1.json missing: the history is version 2.
        std::fs::write(dir.path().join("2.json"), keyset(2, &root).to_json_bytes()).unwrap();
        let history = load_history(dir.path(), &current).unwrap();
        assert_eq!(history.keys().copied().collect::<Vec<_>>(), [2]);

        // 1.json unreadable (a directory): an error, not a shorter history.
        std::fs::create_dir(dir.path().join("1.json")).unwrap();
        let err = load_history(dir.path(), &current).unwrap_err();
        assert!(format!("{err:#}").contains("1.json"), "{err:#}");
    }
}
