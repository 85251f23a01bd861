//! Fan-out counters for `/metrics`: sends by provider and outcome, failed
//! sends by provider and code, fatal jobs.

use super::store::{ProviderKind, MAX_CODES};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Default)]
pub struct FanoutMetrics {
    pub sent: [AtomicU64; 2],
    pub failed: [AtomicU64; 2],
    pub removed: [AtomicU64; 2],
    pub retried: [AtomicU64; 2],
    /// Jobs stopped by payload, credential or mix-up errors: page someone.
    pub fatal: AtomicU64,
    /// (provider, code) -> failed sends; at most [`MAX_CODES`] codes per
    /// provider, the rest under `other`.
    failed_by_code: Mutex<BTreeMap<(ProviderKind, String), u64>>,
}

pub fn slot(kind: ProviderKind) -> usize {
    match kind {
        ProviderKind::Fcm => 0,
        ProviderKind::Apns => 1,
    }
}

impl FanoutMetrics {
    /// One failed send of `provider` with `code`.
    pub fn failed(&self, provider: ProviderKind, code: &str) {
        self.failed[slot(provider)].fetch_add(1, Relaxed);
        let mut by_code = self
            .failed_by_code
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (provider, code.to_owned());
        if let Some(n) = by_code.get_mut(&key) {
            *n += 1;
            return;
        }
        let known = by_code.keys().filter(|(p, _)| *p == provider).count();
        let key = match known < MAX_CODES - 1 {
            true => key,
            false => (provider, "other".to_owned()),
        };
        *by_code.entry(key).or_default() += 1;
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP firmcast_push_total Push sends, by provider and outcome.\n# TYPE firmcast_push_total counter");
        for (name, counters) in [
            ("sent", &self.sent),
            ("failed", &self.failed),
            ("removed", &self.removed),
            ("retried", &self.retried),
        ] {
            for (kind, i) in [("fcm", 0), ("apns", 1)] {
                let _ = writeln!(
                    out,
                    "firmcast_push_total{{provider=\"{kind}\",outcome=\"{name}\"}} {}",
                    counters[i].load(Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP firmcast_push_failed_total Failed push sends, by provider and reason (the provider's code, or ours for the transport).\n# TYPE firmcast_push_failed_total counter");
        let by_code = self
            .failed_by_code
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for ((provider, code), n) in by_code.iter() {
            let code: String = code
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "firmcast_push_failed_total{{provider=\"{}\",reason=\"{code}\"}} {n}",
                provider.as_str()
            );
        }
        drop(by_code);
        let _ = writeln!(out, "# HELP firmcast_push_jobs_fatal_total Fan-out jobs stopped by payload, credential or mix-up errors (alert on any).\n# TYPE firmcast_push_jobs_fatal_total counter");
        let _ = writeln!(
            out,
            "firmcast_push_jobs_fatal_total {}",
            self.fatal.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_labelled_by_reason_and_bounded() {
        let m = FanoutMetrics::default();
        m.failed(ProviderKind::Apns, "tls_untrusted");
        m.failed(ProviderKind::Apns, "tls_untrusted");
        for i in 0..100 {
            m.failed(ProviderKind::Fcm, &format!("http_{i}"));
        }
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains(
                "firmcast_push_failed_total{provider=\"apns\",reason=\"tls_untrusted\"} 2"
            ),
            "{out}"
        );
        assert!(
            out.contains("firmcast_push_failed_total{provider=\"fcm\",reason=\"other\"} 69"),
            "{out}"
        );
        assert_eq!(out.matches("provider=\"fcm\",reason=").count(), MAX_CODES);
        assert!(
            out.contains("firmcast_push_total{provider=\"fcm\",outcome=\"failed\"} 100"),
            "{out}"
        );
    }
}
