//! firmcast: firmware-update and push-notification distribution.
//!
//! Component map (see DESIGN.md in the shared docs for the contract):
//! - [`app`]: `Application::build(settings)` wires the backends, binds, and
//!   `run_until_stopped(shutdown)` serves; tests run it on port 0.
//! - [`api`]: warp filters and handlers: updates, artifacts, admin, ops.
//! - [`catalog`]: the in-memory snapshot the update check reads, swapped
//!   atomically; offer selection, staged rollout, freshness statements.
//! - [`state`]: `StateStore` (releases, rollout state, audit): embedded
//!   (redb) or Redis; one conformance suite for both.
//! - [`blob`]: `BlobStore` (firmware bytes by sha256): local directory or S3.
//! - [`push`]: the APNs (HTTP/2, ES256 JWT) and FCM v1 (OAuth2) providers.
//! - [`fanout`]: push subscriptions, notification jobs, the durable batch
//!   queue and the workers that drain it.
//! - [`config`]: layered typed settings; [`error`]: `ApiError` at the edge.
//! - [`metrics`], [`privacy`]: counters without client data; IP prefixes.
//! - [`cli`]: the `firmcast` commands; thin wrappers over the library.
//! - [`files`]: atomic file writes shared by the CLI and the local stores.
//! - [`memory`]: start-up's freed memory handed back (mimalloc).
//! - [`telemetry`]: logging set-up.
//!
//! Signing lives in its own crate, `firmcast-signing`, which has no network
//! code: keys, DSSE envelopes, keysets, release manifests, freshness.

pub mod api;
pub mod app;
pub mod blob;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod edge;
pub mod error;
pub mod fanout;
pub mod files;
pub mod memory;
pub mod metrics;
pub mod privacy;
pub mod push;
pub mod releases;
pub mod state;
pub mod storage;
pub mod telemetry;
