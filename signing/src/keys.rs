//! Ed25519 keys in the PEM forms `openssl` reads: PKCS#8 for private keys,
//! SPKI for public ones. A key id is the hex sha256 of the raw 32-byte public
//! key. Private key files are created 0600 and never overwritten.

use crate::{digest::sha256_hex, Error, Result};
use base64::{engine::general_purpose::STANDARD, Engine};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use std::fmt;
use std::io::Write;
use std::path::Path;

/// A public key with its key id computed once.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    keyid: String,
}

impl PublicKey {
    pub fn from_raw(raw: &[u8]) -> Result<Self> {
        let raw: [u8; 32] = raw.try_into().map_err(|_| {
            Error::invalid(
                "public key",
                format!("{} bytes, Ed25519 keys are 32", raw.len()),
            )
        })?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| Error::invalid("public key", "not a valid Ed25519 point"))?;
        // A small-order point signs nothing honestly: some signatures check
        // out under it for any message.
        if key.is_weak() {
            return Err(Error::invalid(
                "public key",
                "a small-order (weak) Ed25519 point; generate a real key",
            ));
        }
        Ok(Self::from_verifying(key))
    }

    fn from_verifying(key: VerifyingKey) -> Self {
        let keyid = sha256_hex(key.as_bytes());
        Self { key, keyid }
    }

    /// The `public` field of a keyset entry: base64 of the raw key.
    pub fn from_base64(s: &str) -> Result<Self> {
        let raw = STANDARD.decode(s).map_err(|e| Error::Base64 {
            field: "public",
            reason: e.to_string(),
        })?;
        Self::from_raw(&raw)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }

    pub fn from_pem(pem: &str, what: &str) -> Result<Self> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(Self::from_verifying)
            .map_err(|e| Error::KeyFormat {
                what: what.to_owned(),
                kind: "public (SPKI)",
                reason: e.to_string(),
            })
    }

    pub fn read_pem_file(path: &Path) -> Result<Self> {
        let pem = read_to_string(path)?;
        Self::from_pem(&pem, &path.display().to_string())
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 public key always encodes")
    }

    /// Public keys are not secret; written 0644, but still never overwritten.
    pub fn write_pem_file(&self, path: &Path) -> Result<()> {
        write_new(path, self.to_pem().as_bytes(), 0o644)
    }

    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Strict verification (rejects non-canonical and small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &sig).is_ok() && self.key.verify(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("keyid", &self.keyid)
            .finish()
    }
}

/// A private key. `Debug` shows only its key id; the secret is zeroized on drop
/// by ed25519-dalek.
pub struct PrivateKey {
    key: SigningKey,
    public: PublicKey,
}

impl PrivateKey {
    pub fn generate() -> Self {
        Self::from_signing(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    fn from_signing(key: SigningKey) -> Self {
        let public = PublicKey::from_verifying(key.verifying_key());
        Self { key, public }
    }

    pub fn from_pem(pem: &str, what: &str) -> Result<Self> {
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(Self::from_signing)
            .map_err(|e| Error::KeyFormat {
                what: what.to_owned(),
                kind: "private (PKCS#8)",
                reason: e.to_string(),
            })
    }

    pub fn read_pem_file(path: &Path) -> Result<Self> {
        let pem = read_to_string(path)?;
        Self::from_pem(&pem, &path.display().to_string())
    }

    /// PKCS#8 v1 (RFC 8410), without the optional public key: OpenSSL 3.0
    /// refuses the v2 form that ed25519-dalek writes by default.
    fn to_pem(&self) -> zeroize::Zeroizing<String> {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 private key always encodes")
    }

    /// Writes the PKCS#8 PEM with mode 0600; refuses to replace a file.
    pub fn write_pem_file(&self, path: &Path) -> Result<()> {
        write_new(path, self.to_pem().as_bytes(), 0o600)
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn keyid(&self) -> &str {
        self.public.keyid()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("keyid", &self.public.keyid)
            .finish_non_exhaustive()
    }
}

fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Creates `path` with `mode` from the first byte on (no window where a secret
/// is world-readable) and fsyncs it.
/// Creates a new non-secret file (0644), refusing to replace an existing one.
pub fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_new(path, bytes, 0o644)
}

pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let werr = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: path.to_owned(),
            }
        } else {
            werr(e)
        }
    })?;
    file.write_all(bytes).map_err(werr)?;
    file.sync_all().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_public_file_is_written_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.pub.pem");
        write_new_file(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let err = write_new_file(&path, b"second").unwrap_err();
        assert!(matches!(err, Error::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
    }

    #[test]
    fn pem_round_trip_and_keyid() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate();
        let sk = dir.path().join("k.pem");
        let pk = dir.path().join("k.pub.pem");
        key.write_pem_file(&sk).unwrap();
        key.public().write_pem_file(&pk).unwrap();

        let back = PrivateKey::read_pem_file(&sk).unwrap();
        assert_eq!(back.keyid(), key.keyid());
        assert_eq!(PublicKey::read_pem_file(&pk).unwrap(), *key.public());
        assert_eq!(key.keyid(), sha256_hex(key.public().as_bytes()));
        assert!(std::fs::read_to_string(&sk)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(std::fs::read_to_string(&pk)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        PrivateKey::generate().write_pem_file(&p).unwrap();
        let before = std::fs::read(&p).unwrap();
        let err = PrivateKey::generate().write_pem_file(&p).unwrap_err();
        assert!(matches!(err, Error::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn debug_hides_secret() {
        let key = PrivateKey::generate();
        let pem = key.to_pem();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.keyid()));
        let secret_b64 = STANDARD.encode(key.key.to_bytes());
        assert!(!shown.contains(&secret_b64));
        assert!(!shown.contains(pem.lines().nth(1).unwrap()));
    }

    #[test]
    fn wrong_pem_kind_is_named() {
        let key = PrivateKey::generate();
        let err = PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "x.pem",
        )
        .unwrap_err();
        assert!(err.to_string().contains("x.pem"), "{err}");
        let err = PrivateKey::from_pem(&key.public().to_pem(), "pub.pem").unwrap_err();
        assert!(err.to_string().contains("private (PKCS#8)"), "{err}");
    }

    #[test]
    fn verify_rejects_other_messages_and_keys() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let sig = a.sign(b"m");
        assert!(a.public().verify(b"m", &sig));
        assert!(!a.public().verify(b"n", &sig));
        assert!(!b.public().verify(b"m", &sig));
        assert!(!a.public().verify(b"m", &sig[..63]));
    }

    /// The identity point as a public key: with R = identity and S = 0 the
    /// lax equation [S]B = R + [k]A holds for every message.
    const IDENTITY: [u8; 32] = {
        let mut p = [0u8; 32];
        p[0] = 1;
        p
    };

    #[test]
    fn weak_keys_are_refused_and_their_universal_signatures_never_verify() {
        let err = PublicKey::from_raw(&IDENTITY).unwrap_err();
        assert!(err.to_string().contains("weak"), "{err}");
        // Even if one got in (a keyset parsed by an older build), strict
        // verification refuses what lax verification would accept.
        let weak = PublicKey::from_verifying(VerifyingKey::from_bytes(&IDENTITY).unwrap());
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&IDENTITY);
        for message in [&b"any firmware"[..], b"another", b""] {
            assert!(!weak.verify(message, &sig), "{message:?}");
        }
    }
}
