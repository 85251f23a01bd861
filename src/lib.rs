//! firmcast: firmware-update and push-notification distribution.
//!
//! Component map (see DESIGN.md in the shared docs for the contract):
//! - [`cli`]: the `firmcast` commands; thin wrappers over the library.
//! - [`files`]: atomic file writes shared by the CLI and the local stores.
//! - [`telemetry`]: logging set-up.
//!
//! Signing lives in its own crate, `firmcast-signing`, which has no network
//! code: keys, DSSE envelopes, keysets, release manifests, freshness.

pub mod cli;
pub mod files;
pub mod telemetry;
