//! Prometheus counters, as plain atomics: the hot path pays one relaxed add.
//! Labels never carry a client address, a token or a push token.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    checks_update: AtomicU64,
    checks_none: AtomicU64,
    checks_error: AtomicU64,
    bytes_served: AtomicU64,
    published: AtomicU64,
    publish_refused: AtomicU64,
}

impl Metrics {
    /// Outcome of one update check: `update`, `none` or `error`.
    pub fn check(&self, outcome: &str) {
        match outcome {
            "update" => &self.checks_update,
            "none" => &self.checks_none,
            _ => &self.checks_error,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn bytes_served(&self, n: u64) {
        self.bytes_served.fetch_add(n, Relaxed);
    }

    pub fn publish(&self, result: &str) {
        match result {
            "published" => &self.published,
            _ => &self.publish_refused,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn render(&self, releases: usize, generation: u64) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "firmcast_update_checks_total",
            "Update checks answered, by outcome.",
            &[
                ("{outcome=\"update\"}", self.checks_update.load(Relaxed)),
                ("{outcome=\"none\"}", self.checks_none.load(Relaxed)),
                ("{outcome=\"error\"}", self.checks_error.load(Relaxed)),
            ],
        );
        counter(
            "firmcast_artifact_bytes_served_total",
            "Firmware bytes sent to clients.",
            &[("", self.bytes_served.load(Relaxed))],
        );
        counter(
            "firmcast_publish_total",
            "Release publish attempts, by result.",
            &[
                ("{result=\"published\"}", self.published.load(Relaxed)),
                ("{result=\"refused\"}", self.publish_refused.load(Relaxed)),
            ],
        );
        let _ = writeln!(out, "# HELP firmcast_catalog_releases Releases in the served snapshot.\n# TYPE firmcast_catalog_releases gauge\nfirmcast_catalog_releases {releases}");
        let _ = writeln!(out, "# HELP firmcast_catalog_generation Snapshot swaps since start.\n# TYPE firmcast_catalog_generation gauge\nfirmcast_catalog_generation {generation}");
        out
    }
}
