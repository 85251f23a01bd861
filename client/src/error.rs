//! Every way a check, a download or a report can fail, each saying what was
//! wrong and what the app should do. [`ErrorKind`] is the flat list apps
//! switch on (the FFI exposes exactly these); the text is for logs.

/// What went wrong; the message names the detail and the next step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The app passed something unusable (a bad product, version, URL, key).
    #[error("{0}")]
    InvalidInput(String),
    /// The freshness statement expired: a frozen server or mirror. The
    /// update status is unknown; it must not read as "no update".
    #[error("stale answer, update status unknown: {0}")]
    Stale(String),
    /// A validly signed release older than one already seen.
    #[error("{0}")]
    Rollback(String),
    /// A document is not signed by enough trusted keys, or not at all.
    #[error("{0}")]
    BadSignature(String),
    /// The server's keyset cannot be chained to the pinned root (wrong root,
    /// a missing rotation link, older than the one held).
    #[error("{0}")]
    UntrustedKeyset(String),
    /// The newest keyset the server offers has expired.
    #[error("{0}")]
    KeysetExpired(String),
    /// The answer contradicts what was signed or asked (another product or
    /// channel, a different size, a seq above the freshness statement).
    #[error("{0}")]
    Mismatch(String),
    /// The downloaded bytes are not the signed ones: delete them.
    #[error("{0}")]
    DigestMismatch(String),
    /// The server sent (or announced) more than the signed size: delete.
    #[error("{0}")]
    TooLarge(String),
    /// The download stopped short: keep the bytes, resume later.
    #[error("{0}")]
    Interrupted(String),
    /// 5xx, 429, or an unexpected status: retry later.
    #[error("{}", server_text(*status, code, message, *retry_after))]
    Server {
        status: u16,
        code: String,
        message: String,
        /// Seconds, from `Retry-After`.
        retry_after: Option<u64>,
    },
    /// A 4xx refusal: this request will not succeed as it is.
    #[error("server refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached (the `transport` feature only).
    #[error("{0}")]
    Unreachable(String),
    /// A local file could not be read or written (the `transport` feature only).
    #[error("{0}")]
    Storage(String),
    /// The answer is not what the contract says (bad JSON, too big).
    #[error("{0}")]
    Malformed(String),
    /// The persisted state cannot be read.
    #[error("{0}")]
    CorruptState(String),
    /// The session was driven out of order (a bug in the app's loop).
    #[error("{0}")]
    Usage(String),
}

fn server_text(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> String {
    let after = retry_after.map_or_else(String::new, |s| format!(" after {s} s"));
    if code.is_empty() {
        format!("server answered {status}: {message}; retry later{after}")
    } else {
        format!("server refused ({status} {code}): {message}; retry later{after}")
    }
}

/// The flat kind of an [`Error`], for an app's `switch`/`when`/`match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Stale(_) => ErrorKind::Stale,
            Error::Rollback(_) => ErrorKind::Rollback,
            Error::BadSignature(_) => ErrorKind::BadSignature,
            Error::UntrustedKeyset(_) => ErrorKind::UntrustedKeyset,
            Error::KeysetExpired(_) => ErrorKind::KeysetExpired,
            Error::Mismatch(_) => ErrorKind::Mismatch,
            Error::DigestMismatch(_) => ErrorKind::DigestMismatch,
            Error::TooLarge(_) => ErrorKind::TooLarge,
            Error::Interrupted(_) => ErrorKind::Interrupted,
            Error::Server { .. } => ErrorKind::Server,
            Error::Refused { .. } => ErrorKind::Refused,
            Error::Unreachable(_) => ErrorKind::Unreachable,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Malformed(_) => ErrorKind::Malformed,
            Error::CorruptState(_) => ErrorKind::CorruptState,
            Error::Usage(_) => ErrorKind::Usage,
        }
    }

    /// Whether the same call may succeed later without the app changing
    /// anything: the server or network is at fault, or an attacker is
    /// in the way for now.
    pub fn retry_later(&self) -> bool {
        !matches!(
            self.kind(),
            ErrorKind::InvalidInput
                | ErrorKind::Refused
                | ErrorKind::CorruptState
                | ErrorKind::Usage
        )
    }

    /// Whether a partly downloaded file must be deleted (its bytes cannot
    /// become the signed artifact); otherwise it may be kept to resume.
    pub fn discard_download(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::DigestMismatch | ErrorKind::TooLarge | ErrorKind::Mismatch
        )
    }

    /// The `code` of a `failed` outcome report: short, from the contract's
    /// alphabet `[A-Za-z0-9_.-]{1,32}`.
    pub fn report_code(&self) -> String {
        match self {
            Error::Server { status, .. } | Error::Refused { status, .. } => {
                format!("http_{status}")
            }
            _ => match self.kind() {
                ErrorKind::InvalidInput => "invalid_input",
                ErrorKind::Stale => "stale",
                ErrorKind::Rollback => "rollback",
                ErrorKind::BadSignature => "bad_signature",
                ErrorKind::UntrustedKeyset => "untrusted_keyset",
                ErrorKind::KeysetExpired => "keyset_expired",
                ErrorKind::Mismatch => "mismatch",
                ErrorKind::DigestMismatch => "digest_mismatch",
                ErrorKind::TooLarge => "too_large",
                ErrorKind::Interrupted => "interrupted",
                ErrorKind::Unreachable => "unreachable",
                ErrorKind::Storage => "storage",
                ErrorKind::Malformed => "malformed",
                ErrorKind::CorruptState => "corrupt_state",
                ErrorKind::Usage => "usage",
                ErrorKind::Server | ErrorKind::Refused => unreachable!("matched above"),
            }
            .to_owned(),
        }
    }
}

/// A signing-crate failure while verifying `what`, as the client's kind.
pub(crate) fn signing(what: &str, e: firmcast_signing::Error) -> Error {
    use firmcast_signing::Error as S;
    let text = format!("{what}: {e}");
    match e {
        S::BelowThreshold { .. } | S::PayloadType { .. } => Error::BadSignature(text),
        S::Expired { .. } => Error::Stale(text),
        S::KeysetVersion { .. } => Error::UntrustedKeyset(text),
        S::Mismatch { .. } => Error::Mismatch(text),
        _ => Error::Malformed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_codes_fit_the_contract() {
        let errors = [
            Error::Stale("x".into()),
            Error::DigestMismatch("x".into()),
            Error::Server {
                status: 503,
                code: "unavailable".into(),
                message: "m".into(),
                retry_after: Some(3),
            },
            Error::CorruptState("x".into()),
        ];
        for e in errors {
            let code = e.report_code();
            assert!(
                (1..=32).contains(&code.len())
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                "{code}"
            );
        }
        let e = Error::Server {
            status: 503,
            code: String::new(),
            message: "down".into(),
            retry_after: Some(3),
        };
        assert_eq!(
            e.to_string(),
            "server answered 503: down; retry later after 3 s"
        );
        assert!(e.retry_later());
        assert!(!Error::InvalidInput("x".into()).retry_later());
        assert!(Error::TooLarge("x".into()).discard_download());
        assert!(!Error::Interrupted("x".into()).discard_download());
    }
}
