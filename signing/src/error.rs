//! The one error type of the crate: each variant names what failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; move it away or choose another directory (keys are never overwritten)")]
    Exists { path: PathBuf },
    #[error(
        "{what} is not an Ed25519 {kind} PEM key ({reason}); keys come from `firmcast keys init`"
    )]
    KeyFormat {
        what: String,
        kind: &'static str,
        reason: String,
    },
    #[error("malformed base64 in {field}: {reason}")]
    Base64 { field: &'static str, reason: String },
    #[error("malformed {what}: {reason}")]
    Json { what: &'static str, reason: String },
    #[error("wrong payload type: expected {expected}, found {found:?}")]
    PayloadType {
        expected: &'static str,
        found: String,
    },
    #[error("envelope is not signed by {role} keys: {valid} valid signature(s) from distinct trusted keys, {threshold} required ({invalid} invalid, {unknown} from unknown keys)")]
    BelowThreshold {
        role: &'static str,
        valid: usize,
        threshold: usize,
        invalid: usize,
        unknown: usize,
    },
    #[error("the envelope already carries a signature by key {keyid}; sign with a different key to add one")]
    AlreadySigned { keyid: String },
    #[error("{what} expired at {expires}; {hint}")]
    Expired {
        what: &'static str,
        expires: String,
        hint: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("keyset version {found} cannot follow version {current}: rotation must go to version {expected} exactly")]
    KeysetVersion {
        current: u64,
        found: u64,
        expected: u64,
    },
    #[error("{what} is for {found}, expected {expected}")]
    Mismatch {
        what: &'static str,
        expected: String,
        found: String,
    },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
