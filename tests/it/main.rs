//! The integration tests: one binary (each extra test binary links the
//! whole crate again). `support/` holds the harness, the fakes and the
//! conformance suites every backend runs.

#[allow(dead_code)]
mod support;

mod api_artifacts;
mod api_updates;
mod blob_conformance;
mod cli_release;
mod cli_rollout;
mod cli_signing;
mod console;
mod disk_full;
mod edge;
mod fuzz_ranges;
mod fuzz_update_batch;
mod fuzz_update_paths;
mod limits;
mod multi_instance;
mod openapi;
mod privacy;
mod push_failures;
mod push_fanout;
mod push_multi;
mod push_providers;
mod push_store_conformance;
mod rollout;
mod serve;
mod state_conformance;
mod state_migrate;
mod stats_conformance;
mod tuf_attacks;
