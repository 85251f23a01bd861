//! firmcast-client: what every firmcast app must verify, once, as a
//! sans-I/O core (the shape of quinn-proto and rustls): the app asks for the
//! next request, sends it with its own HTTP stack, and hands back the answer.
//!
//! - [`Client`]: the server's base URL and the pinned root key.
//! - [`Check`] (`check.rs`): one batch check of the app and its paired
//!   devices; the keyset chain from the pinned root ([`keychain`]),
//!   freshness, k-of-n release signatures, offer fields, `seq` rollback, and
//!   `last_day`.
//! - [`Download`] (`download.rs`): the artifact in chunks, size capped,
//!   sha256 streamed, `Range` resume, redirects.
//! - [`Report`] (`report.rs`): anonymous install outcomes.
//! - [`State`] (`state.rs`): the small JSON value an app persists.
//! - [`Error`] / [`ErrorKind`] (`error.rs`): what went wrong and what to do.
//! - `transport` (feature): a ready blocking client (ureq + rustls).
//!
//! No async runtime, no network or file code outside `transport`.

#![forbid(unsafe_code)]

mod check;
mod download;
mod error;
pub mod http;
pub mod keychain;
mod report;
mod state;
#[cfg(feature = "transport")]
pub mod transport;

pub use check::{
    Check, CheckItem, CheckOutcome, Client, ItemResult, Update, DEFAULT_CHANNEL, MAX_ITEMS,
};
pub use download::{Body, Download, Verified};
pub use error::{Error, ErrorKind};
pub use report::{Outcome, Report, Stage};
pub use state::State;
