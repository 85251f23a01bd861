//! firmcast: firmware-update and push-notification distribution.
//!
//! Component map (DESIGN.md in the shared docs is the contract; ARCHITECTURE.md
//! walks one request through these rooms):
//! - [`app`]: `Application::build(settings)` opens the backends and builds
//!   the services; `run_until_stopped(shutdown)` accepts, spawns, serves.
//! - [`edge`]: everything between a socket and a handler, as named layers:
//!   the connection watchdog, client address, the route table
//!   ([`edge::route::Route`]), admission (rates, per-client and pool caps),
//!   request body pace, the request log.
//! - [`api`]: the handlers by area (updates, artifacts, admin, jobs, push,
//!   ops) and the one place a route meets its handler.
//! - [`releases`]: the owner of release changes: publish, patch, audit, and
//!   the catalog kept in step with other instances.
//! - [`rollout`]: rollout intelligence: day-echo adoption counts, install
//!   reports, health gates that pause a failing release, ramps; counted in
//!   memory and flushed to the [`stats`] store.
//! - [`console`]: the web console at `/console`: server-rendered pages
//!   (askama, htmx, SVG charts) on the admin API's roles and operations,
//!   with server-side sessions and CSRF tokens.
//! - [`catalog`]: the in-memory snapshot the update check reads, swapped
//!   atomically; offer selection, staged rollout, freshness statements.
//! - [`storage`]: the backend (embedded redb files or one Redis link),
//!   opened once and shared by the stores built on it.
//! - [`state`]: `StateStore` (releases, rollout state, audit); [`fanout`]:
//!   `PushStore` (subscriptions, jobs, the batch queue) and the workers
//!   that drain it. Each store has one conformance suite for both backends.
//! - [`blob`]: `BlobStore` (firmware bytes by sha256): local directory or S3,
//!   and the sweep of uploads no release names.
//! - [`push`]: the APNs (HTTP/2, ES256 JWT) and FCM v1 (OAuth2) senders.
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
pub mod console;
pub mod edge;
pub mod error;
pub mod fanout;
pub mod files;
pub mod memory;
pub mod metrics;
pub mod privacy;
pub mod push;
pub mod releases;
pub mod rollout;
pub mod state;
pub mod stats;
pub mod storage;
pub mod telemetry;
