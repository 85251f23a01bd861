//! The records, enums and the error the bindings expose; each mirrors a
//! core type (conversions in `convert.rs`).

use std::collections::HashMap;

/// A request for the app's HTTP stack to send exactly as given.
#[derive(uniffi::Record, Clone, Debug)]
pub struct HttpRequest {
    /// "GET" or "POST".
    pub method: String,
    pub url: String,
    pub headers: HashMap<String, String>,
    /// Empty for GET.
    pub body: Vec<u8>,
}

/// A whole (small) answer, as the app's HTTP stack received it.
#[derive(uniffi::Record, Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// The app itself or a paired device.
#[derive(uniffi::Record, Clone, Debug)]
pub struct CheckItem {
    pub product: String,
    /// The installed version (semver).
    pub version: String,
    /// null for "stable".
    #[uniffi(default = None)]
    pub channel: Option<String>,
}

/// A verified offer; every field comes from the signed release.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub product: String,
    pub version: String,
    /// The version it replaces.
    pub installed: String,
    pub channel: String,
    pub seq: u64,
    pub sha256: String,
    pub size: u64,
    pub url: String,
    pub critical: bool,
    /// Release notes by locale.
    pub notes: HashMap<String, String>,
}

#[derive(uniffi::Enum, Clone, Debug)]
pub enum ItemOutcome {
    /// A fresh, signed statement says there is nothing newer.
    UpToDate,
    UpdateAvailable {
        update: Update,
    },
    /// Refused for this item only; `kind` says what to do (as [`ClientError`]).
    Failed {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(uniffi::Record, Clone, Debug)]
pub struct ItemResult {
    pub product: String,
    pub installed: String,
    pub channel: String,
    pub outcome: ItemOutcome,
    /// The newest seq the verified freshness statement vouches for.
    pub latest_seq: Option<u64>,
}

#[derive(uniffi::Record, Clone, Debug)]
pub struct CheckResult {
    /// In the order of the items checked.
    pub items: Vec<ItemResult>,
    /// The new state JSON: persist it before acting on the items.
    pub state: String,
    /// The server's day number, when it sent one.
    pub day: Option<u64>,
}

/// What to do with the body of a download answer.
#[derive(uniffi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyAction {
    /// Append each accepted chunk to the file.
    Append,
    /// Empty the file first: the server starts from byte 0.
    Restart,
    /// A redirect: drop the body, send the next request.
    Skip,
}

#[derive(uniffi::Record, Clone, Debug)]
pub struct VerifiedArtifact {
    pub sha256: String,
    pub size: u64,
}

#[derive(uniffi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Download,
    Verify,
    Transfer,
    Install,
    Boot,
}

#[derive(uniffi::Enum, Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    Installed,
    Failed { stage: Stage, code: String },
}

/// An anonymous install outcome (`POST /v1/reports`).
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub product: String,
    /// The version replaced (`from` on the wire).
    pub from_version: String,
    /// The version installed or attempted (`to` on the wire).
    pub to_version: String,
    pub outcome: ReportOutcome,
}

/// The kind of a failure, for an item's `Failed` outcome; the same names
/// as the variants of [`ClientError`].
#[derive(uniffi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidInput,
    Stale,
    Rollback,
    BadSignature,
    UntrustedKeyset,
    KeysetExpired,
    Mismatch,
    DigestMismatch,
    TooLarge,
    Interrupted,
    Server,
    Refused,
    Unreachable,
    Storage,
    Malformed,
    CorruptState,
    Usage,
}

/// Every failure, one variant per thing the app does about it (see
/// client/README.md). `message` says what was wrong, for logs.
#[derive(uniffi::Error, thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The app passed something unusable: fix the app.
    #[error("{message}")]
    InvalidInput { message: String },
    /// A frozen answer: status unknown (not "up to date"); retry later.
    #[error("{message}")]
    Stale { message: String },
    /// An older release than one already seen: refuse, keep the state.
    #[error("{message}")]
    Rollback { message: String },
    /// Not signed by enough trusted keys: refuse; retry later.
    #[error("{message}")]
    BadSignature { message: String },
    /// The keyset does not chain to the pinned root: refuse; retry later.
    #[error("{message}")]
    UntrustedKeyset { message: String },
    /// The server's keyset expired: retry later.
    #[error("{message}")]
    KeysetExpired { message: String },
    /// The answer contradicts what was signed or asked: refuse; retry later.
    #[error("{message}")]
    Mismatch { message: String },
    /// The downloaded bytes are not the signed ones: delete them.
    #[error("{message}")]
    DigestMismatch { message: String },
    /// More bytes than signed: delete the file.
    #[error("{message}")]
    TooLarge { message: String },
    /// The download stopped short: keep the file, resume later.
    #[error("{message}")]
    Interrupted { message: String },
    /// 5xx or 429: retry later (after `retry_after_seconds` when given).
    #[error("{message}")]
    Server {
        status: u16,
        code: String,
        message: String,
        retry_after_seconds: Option<u64>,
    },
    /// A 4xx refusal: the request will not succeed as it is.
    #[error("{message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached: retry later.
    #[error("{message}")]
    Unreachable { message: String },
    /// A local file could not be read or written.
    #[error("{message}")]
    Storage { message: String },
    /// The answer is not what the contract says: retry later.
    #[error("{message}")]
    Malformed { message: String },
    /// The persisted state cannot be read: restore it, or start from "".
    #[error("{message}")]
    CorruptState { message: String },
    /// Calls out of order: a bug in the app's loop.
    #[error("{message}")]
    Usage { message: String },
}
