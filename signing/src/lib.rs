//! firmcast-signing: everything that makes a firmware byte trustworthy, with no
//! network code.
//!
//! - [`keys`]: Ed25519 keys as PKCS#8 / SPKI PEM files; key id = hex sha256 of
//!   the raw public key.
//! - [`dsse`]: DSSE envelopes (PAE, base64, key ids) and k-of-n verification.
//! - [`keyset`]: the root-signed list of release and timestamp keys, and the
//!   rotation rule.
//! - [`release`]: release manifests, signed offline by release engineers.
//! - [`freshness`]: short-lived statements signed by the server's timestamp
//!   key, so a client can tell a frozen mirror from "no update".
//! - [`names`]: the product, channel and locale patterns shared with the server.
//!
//! Every failure is an [`Error`] variant that says what failed and what to do.

#![forbid(unsafe_code)]

pub mod digest;
pub mod dsse;
mod error;
pub mod freshness;
pub mod keys;
pub mod keyset;
pub mod names;
pub mod release;

pub use dsse::Envelope;
pub use error::Error;
pub use freshness::Freshness;
pub use keys::{PrivateKey, PublicKey};
pub use keyset::{Keyset, Role, VerifiedKeyset};
pub use release::ReleaseManifest;

pub type Result<T, E = Error> = std::result::Result<T, E>;
