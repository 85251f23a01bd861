//! Operations endpoints: liveness, readiness (each backend pinged with a
//! deadline, and whether the public pool is saturated), Prometheus metrics.

use super::{json, json_response, Api};
use crate::edge::body::Body;
use crate::edge::Response;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;
use std::time::Duration;

const PING_DEADLINE: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process answers.
pub fn health() -> Response {
    json_response(StatusCode::OK, &br#"{"status":"ok"}"#[..])
}

/// `GET /metrics`: Prometheus text.
pub fn metrics(api: &Api) -> Response {
    let snap = api.catalog.load();
    let mut text = api.metrics.render(snap.release_count(), snap.generation);
    api.fanout.metrics.render(&mut text);
    api.requests.render(&mut text);
    let (public, ops) = api.admission.in_flight();
    use std::fmt::Write;
    let _ = writeln!(
        text,
        "# HELP firmcast_in_flight Requests holding a slot, by pool.\n# TYPE firmcast_in_flight gauge\nfirmcast_in_flight{{pool=\"public\"}} {public}\nfirmcast_in_flight{{pool=\"ops\"}} {ops}"
    );
    render_rollout(&api.rollout.metrics, &mut text);
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// `GET /readyz`: 200 when every backend answers and the public pool has
/// room; otherwise 503 naming what is wrong, so a load balancer sends new
/// clients elsewhere.
pub async fn readiness(api: &Api) -> Response {
    let state = api.releases.store();
    let state_check = tokio::time::timeout(PING_DEADLINE, state.ping());
    let blob_check = tokio::time::timeout(PING_DEADLINE, api.blobs.ping());
    let (s, b) = tokio::join!(state_check, blob_check);
    let status = |r: Result<Result<(), String>, tokio::time::error::Elapsed>| match r {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e,
        Err(_) => format!("no answer within {} s", PING_DEADLINE.as_secs()),
    };
    let s = status(s.map(|r| r.map_err(|e| e.to_string())));
    let b = status(b.map(|r| r.map_err(|e| e.to_string())));
    let saturated = api.admission.saturated();
    let ready = s == "ok" && b == "ok" && !saturated;
    let (public, _) = api.admission.in_flight();
    let body = serde_json::json!({
        "ready": ready,
        "state": {"backend": state.backend(), "status": s},
        "blob": {"backend": api.blobs.backend(), "status": b},
        "requests": {
            "status": if saturated { "saturated" } else { "ok" },
            "in_flight": public,
        },
        "catalog": {"releases": api.catalog.load().release_count()},
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, &body)
}

/// Auto-pauses, ramp steps, today's active installs and the reports of
/// every live release's current window.
fn render_rollout(m: &crate::rollout::RolloutMetrics, out: &mut String) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let _ = writeln!(
        out,
        "# HELP firmcast_release_auto_pauses_total Releases paused by their health gate (alert on any).\n# TYPE firmcast_release_auto_pauses_total counter\nfirmcast_release_auto_pauses_total {}",
        m.auto_pauses.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP firmcast_release_ramp_steps_total Ramp steps taken by this instance.\n# TYPE firmcast_release_ramp_steps_total counter\nfirmcast_release_ramp_steps_total {}",
        m.ramp_steps.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP firmcast_stats_flush_failures_total Flushes of counts the store did not take (retried).\n# TYPE firmcast_stats_flush_failures_total counter\nfirmcast_stats_flush_failures_total {}",
        m.flush_failures.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP firmcast_active_installs Devices that checked today, by product, channel and installed version.\n# TYPE firmcast_active_installs gauge"
    );
    for ((product, channel, version), n) in m.active.load().iter() {
        let _ = writeln!(
            out,
            "firmcast_active_installs{{product=\"{product}\",channel=\"{channel}\",version=\"{version}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP firmcast_release_reports Install reports in each release's current window, by outcome.\n# TYPE firmcast_release_reports gauge"
    );
    for ((product, version), w) in m.reports.load().iter() {
        for (outcome, n) in [("installed", w.installed), ("failed", w.failed)] {
            let _ = writeln!(
                out,
                "firmcast_release_reports{{product=\"{product}\",version=\"{version}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
}
