//! The request log and per-route counters: one line per answer at debug
//! level (warn for a 5xx), without the client (not even its prefix: the
//! privacy promise), and a count per route and status class for `/metrics`.

use super::route::Route;
use hyper::{Method, StatusCode};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Routes, plus one slot for requests no route matched.
const SLOTS: usize = Route::NAMES.len() + 1;
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
pub struct RequestLog {
    counts: [[AtomicU64; 5]; SLOTS],
}

impl RequestLog {
    /// Counts an answer and logs it (see the module docs). `route` is the
    /// route's [`Route::index`], `None` when no route matched; `started` is
    /// set only when debug logging is on (reading the clock costs more than
    /// the rest).
    pub fn answered(
        &self,
        route: Option<usize>,
        method: &Method,
        path: &str,
        status: StatusCode,
        started: Option<Instant>,
    ) {
        let slot = route.unwrap_or(SLOTS - 1).min(SLOTS - 1);
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.counts[slot][class].fetch_add(1, Relaxed);
        if !status.is_server_error() && !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let micros = started.map(|t| t.elapsed().as_micros() as u64);
        let path = if path.len() > 200 {
            &path[..path.floor_char_boundary(200)]
        } else {
            path
        };
        let route = Route::NAMES.get(slot).copied().unwrap_or("none");
        if status.is_server_error() {
            tracing::warn!(%method, path, route, status = status.as_u16(), micros, "request");
        } else {
            tracing::debug!(%method, path, route, status = status.as_u16(), micros, "request");
        }
    }

    /// `firmcast_http_requests_total{route, status}`, rows with a count only.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP firmcast_http_requests_total HTTP answers, by route and status class.\n# TYPE firmcast_http_requests_total counter"
        );
        for (slot, classes) in self.counts.iter().enumerate() {
            let route = Route::NAMES.get(slot).copied().unwrap_or("none");
            for (class, n) in CLASSES.iter().zip(classes) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "firmcast_http_requests_total{{route=\"{route}\",status=\"{class}\"}} {n}"
                    );
                }
            }
        }
    }
}
