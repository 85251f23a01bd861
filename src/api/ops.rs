//! Operations endpoints: liveness, readiness (each backend pinged with a
//! deadline), Prometheus metrics.

use super::{json_response, with_state, Shared};
use std::time::Duration;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

const PING_DEADLINE: Duration = Duration::from_secs(2);

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()));
    let ready = warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state.clone()))
        .then(readiness);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: Shared| {
            let snap = state.catalog.load();
            let mut text = state.metrics.render(snap.release_count(), snap.generation);
            state.fanout.metrics.render(&mut text);
            let mut resp = Response::new(text.into());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        });
    health.or(ready).unify().or(metrics).unify().boxed()
}

async fn readiness(state: Shared) -> Response {
    let state_check = tokio::time::timeout(PING_DEADLINE, state.state.ping());
    let blob_check = tokio::time::timeout(PING_DEADLINE, state.blobs.ping());
    let (s, b) = tokio::join!(state_check, blob_check);
    let describe = |ok: bool, err: String| if ok { "ok".to_owned() } else { err };
    let s_ok = matches!(s, Ok(Ok(())));
    let b_ok = matches!(b, Ok(Ok(())));
    let s_msg = describe(
        s_ok,
        match s {
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 2 s".into(),
            _ => String::new(),
        },
    );
    let b_msg = describe(
        b_ok,
        match b {
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 2 s".into(),
            _ => String::new(),
        },
    );
    let body = serde_json::json!({
        "ready": s_ok && b_ok,
        "state": {"backend": state.state.backend(), "status": s_msg},
        "blob": {"backend": state.blobs.backend(), "status": b_msg},
        "catalog": {"releases": state.catalog.load().release_count()},
    });
    let status = if s_ok && b_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, serde_json::to_vec(&body).expect("serializes"))
}
