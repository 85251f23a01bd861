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
