//! Rollout intelligence end to end, against the real server: adoption
//! counted from the day echo, install reports counted once per address, a
//! health gate that pauses a failing release (and says so on a webhook), a
//! ramp that walks a rollout up and holds while paused; then two instances
//! sharing Redis, whose counts add up and whose ramp moves once per step.

use crate::support;

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::app::{
    firmware, spawn_app_sharing_keys, spawn_app_with, spawn_app_with_server, Rel, TestApp,
    ADMIN_TOKEN, VIEWER_TOKEN,
};

/// Counts leave memory every second and gates are looked at every second.
const FAST: &str = "[rollout]\nflush_interval_secs = 1\nevaluate_interval_secs = 1\n";

async fn get(app: &TestApp, path: &str) -> Value {
    let r = app
        .client
        .get(format!("{}{path}", app.url))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn stats(app: &TestApp, product: &str) -> Value {
    get(app, &format!("/v1/admin/stats/{product}?days=7")).await
}

/// Today's adoption of `version` in `s` (a stats answer): (active, new).
fn today(s: &Value, version: &str) -> (u64, u64) {
    let day = s["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["day"] == s["today"]);
    let v = day.map(|d| &d["versions"][version]);
    let n = |f: &str| v.and_then(|v| v[f].as_u64()).unwrap_or(0);
    (n("active"), n("new"))
}

/// Polls `cond` until it holds; fails after `secs` with `what`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn check_from(app: &TestApp, product: &str, query: &str) -> Value {
    let r = app
        .client
        .get(format!("{}/v1/updates/{product}/1.0.0{query}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn adoption_counts_active_and_new_exactly_once_a_day() {
    let app = spawn_app_with(FAST).await;
    app.publish(&Rel::new("P", "2.0.0", 1, &firmware(100, 1)), 100.0)
        .await;
    let day = check_from(&app, "P", "?last_day=0").await["day"]
        .as_u64()
        .unwrap();
    let yesterday = day - 1;
    // 100 first checks after install, 150 first of the day, 50 repeats.
    for _ in 0..100 {
        check_from(&app, "P", "").await;
    }
    for _ in 0..150 {
        check_from(&app, "P", &format!("?last_day={yesterday}")).await;
    }
    for _ in 0..50 {
        check_from(&app, "P", &format!("?last_day={day}")).await;
    }
    // In the future or past the horizon: answered, not counted.
    check_from(&app, "P", &format!("?last_day={}", day + 1)).await;
    check_from(&app, "P", &format!("?last_day={}", day - 401)).await;
    // The first check above (last_day=0, long ago) did not count either.
    eventually(10, "251 active", || async {
        today(&stats(&app, "P").await, "1.0.0") == (250, 100)
    })
    .await;

    // A later flush adds nothing to them: count a marker product and wait
    // for it, then look again.
    app.publish(&Rel::new("M", "2.0.0", 1, &firmware(100, 2)), 100.0)
        .await;
    check_from(&app, "M", "").await;
    eventually(10, "the marker", || async {
        today(&stats(&app, "M").await, "1.0.0") == (1, 1)
    })
    .await;
    let s = stats(&app, "P").await;
    assert_eq!(today(&s, "1.0.0"), (250, 100), "{s}");
    assert_eq!(s["today_number"], day);
    app.stop().await;
}

#[tokio::test]
async fn the_batch_echoes_the_day_and_counts_each_item() {
    let app = spawn_app_with(FAST).await;
    app.publish(&Rel::new("P", "2.0.0", 1, &firmware(100, 1)), 100.0)
        .await;
    let body = |last_day: Value| {
        json!({"items": [
            {"product": "P", "version": "1.0.0", "last_day": last_day},
            {"product": "P", "version": "1.1.0"},
            {"product": "Nope", "version": "1.0.0"},
        ]})
    };
    let post = |b: Value| {
        app.client
            .post(format!("{}/v1/updates", app.url))
            .json(&b)
            .send()
    };
    let first: Value = post(body(Value::Null)).await.unwrap().json().await.unwrap();
    let day = first["day"].as_u64().unwrap();
    assert_eq!(first["results"].as_array().unwrap().len(), 3);
    let again: Value = post(body(json!(day))).await.unwrap().json().await.unwrap();
    assert_eq!(again["day"], day);
    for bad in [json!(-1), json!(1.5), json!("20424"), json!(true)] {
        let r = post(body(bad.clone())).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "bad_last_day", "{bad}: {e}");
    }
    eventually(10, "the batch's counts", || async {
        let s = stats(&app, "P").await;
        today(&s, "1.0.0") == (1, 1) && today(&s, "1.1.0") == (2, 2)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_last_day_is_a_400_that_counts_nothing() {
    let app = spawn_app_with(FAST).await;
    app.publish(&Rel::new("P", "2.0.0", 1, &firmware(100, 1)), 100.0)
        .await;
    for q in ["-1", "1.5", "abc", "", "1e3"] {
        let r = app
            .client
            .get(format!("{}/v1/updates/P/1.0.0?last_day={q}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "bad_last_day");
        assert!(e["message"].as_str().unwrap().contains("send back"), "{e}");
    }
    let twice = app
        .client
        .get(format!(
            "{}/v1/updates/P/1.0.0?last_day=1&last_day=2",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    // One good check, flushed, proves the bad ones never counted.
    check_from(&app, "P", "").await;
    eventually(10, "one count", || async {
        today(&stats(&app, "P").await, "1.0.0") == (1, 1)
    })
    .await;
    app.stop().await;
}

/// Captures the JSON bodies POSTed to it.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = keep.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            seen.lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (url, seen)
}

async fn report(app: &TestApp, from: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/reports", app.url))
        .header("x-forwarded-for", from)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn outcome(failed: bool) -> Value {
    if failed {
        json!({"product": "P", "from": "1.0.0", "to": "2.0.0", "outcome": "failed", "stage": "install", "code": "E_FLASH"})
    } else {
        json!({"product": "P", "from": "1.0.0", "to": "2.0.0", "outcome": "installed"})
    }
}

#[tokio::test]
async fn a_failing_release_pauses_itself_within_ten_seconds_and_says_why() {
    let (hook, posted) = webhook().await;
    let app = spawn_app_with_server(
        "trusted_proxies = [\"127.0.0.0/8\"]",
        &format!("{FAST}[alerts]\nwebhook_url = \"{hook}\"\n"),
    )
    .await;
    let env = app.sign(&Rel::new("P", "2.0.0", 1, &firmware(100, 1)));
    assert_eq!(
        app.upload("P", "2.0.0", &firmware(100, 1)).await.status(),
        201
    );
    let r = app
        .client
        .post(format!("{}/v1/admin/releases", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"release": env.to_value(), "health": {"min_reports": 100, "max_failure_rate": 0.05}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        check_from(&app, "P", "").await["update"]["version"],
        "2.0.0"
    );

    // The same address twice counts once.
    for _ in 0..3 {
        assert_eq!(
            report(&app, "192.0.2.1", outcome(false)).await.status(),
            202
        );
    }
    // 200 addresses, one report each, 10% failed.
    let started = Instant::now();
    for i in 0..200u32 {
        let from = format!("198.51.{}.{}", i / 200, i % 200 + 1);
        assert_eq!(
            report(&app, &from, outcome(i % 10 == 0)).await.status(),
            202
        );
    }
    eventually(10, "the auto-pause", || async {
        check_from(&app, "P", "").await["update"].is_null()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let releases = get(&app, "/v1/admin/releases?product=P").await;
    let r = &releases["releases"][0];
    assert_eq!(
        (r["paused"].clone(), r["paused_by"].clone()),
        (json!(true), json!("health"))
    );
    let reason = r["pause_reason"].as_str().unwrap();
    assert!(
        reason.contains("20 of 201") && reason.contains("5.0%"),
        "{reason}"
    );
    let s = stats(&app, "P").await;
    let rep = &s["releases"][0]["reports"];
    assert_eq!(
        (rep["installed"].clone(), rep["failed"].clone()),
        (json!(181), json!(20)),
        "{s}"
    );
    assert_eq!(rep["by_stage"]["install"], 20);
    assert_eq!(rep["top_codes"][0], json!({"code": "E_FLASH", "count": 20}));
    let audit = get(&app, "/v1/admin/audit").await;
    let auto = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "release.auto_pause")
        .expect("an audit entry");
    assert_eq!(auto["actor"], "health");
    assert_eq!(auto["detail"]["failed"], 20);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("firmcast_release_auto_pauses_total 1"),
        "{metrics}"
    );
    eventually(10, "the webhook", || async {
        !posted.lock().unwrap().is_empty()
    })
    .await;
    let text = posted.lock().unwrap()[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("P 2.0.0") && text.contains("20 of 201"),
        "{text}"
    );

    // A person resumes it: a new window, so the old failures do not count.
    let resumed = app.patch("P", "2.0.0", json!({"paused": false})).await;
    assert_eq!(resumed.status(), 200);
    let s = stats(&app, "P").await;
    assert_eq!(s["releases"][0]["reports"]["window"], 1);
    assert_eq!(s["releases"][0]["reports"]["failed"], 0);
    assert_eq!(
        check_from(&app, "P", "").await["update"]["version"],
        "2.0.0"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_reports_are_refused_with_what_to_send_and_count_nothing() {
    let app = spawn_app_with(FAST).await;
    app.publish(&Rel::new("P", "2.0.0", 1, &firmware(100, 1)), 100.0)
        .await;
    let base = json!({"product": "P", "from": "1.0.0", "to": "2.0.0", "outcome": "failed"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, status, code) in [
        (with("outcome", json!("bricked")), 400, "bad_outcome"),
        (with("stage", json!("flash")), 400, "bad_stage"),
        (with("code", json!("x".repeat(33))), 400, "bad_code"),
        (with("code", json!("E 1")), 400, "bad_code"),
        (with("from", json!("one")), 400, "bad_from"),
        (with("to", json!("9.9.9")), 404, "unknown_release"),
        (with("product", json!("Nope")), 404, "unknown_release"),
        (with("extra", json!(1)), 400, "bad_json"),
        (
            json!({"product": "P", "from": "1.0.0", "to": "2.0.0", "outcome": "installed", "code": "E1"}),
            400,
            "bad_report",
        ),
    ] {
        let r = app
            .client
            .post(format!("{}/v1/reports", app.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], code, "{body}: {e}");
    }
    // A failure may say where and why: stage and code are welcome with it.
    let mut failed = with("stage", json!("install"));
    failed["code"] = json!("E_FLASH_42");
    let ok = app
        .client
        .post(format!("{}/v1/reports", app.url))
        .json(&failed)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    eventually(10, "one failure counted", || async {
        stats(&app, "P").await["releases"][0]["reports"]["failed"] == 1
    })
    .await;
    assert_eq!(
        stats(&app, "P").await["releases"][0]["reports"]["installed"],
        0
    );
    app.stop().await;
}

/// `product`'s release `version` as `GET /v1/admin/releases` shows it.
async fn release(app: &TestApp, product: &str, version: &str) -> Value {
    let all = get(app, &format!("/v1/admin/releases?product={product}")).await;
    all["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == version)
        .cloned()
        .unwrap()
}

async fn ramp_steps(app: &TestApp, target: &str) -> Vec<Value> {
    let audit = get(app, "/v1/admin/audit?limit=1000").await;
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "release.ramp_step" && e["target"] == target)
        .map(|e| e["detail"]["to"].clone())
        .collect()
}

async fn publish_ramped(app: &TestApp, product: &str, every: &str) {
    let fw = firmware(100, 3);
    assert_eq!(app.upload(product, "2.0.0", &fw).await.status(), 201);
    let env = app.sign(&Rel::new(product, "2.0.0", 1, &fw));
    let r = app
        .client
        .post(format!("{}/v1/admin/releases", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"release": env.to_value(), "ramp": {"steps": [10, 50, 100], "every": every}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn a_ramp_walks_the_rollout_up_one_step_an_interval_and_holds_while_paused() {
    let app = spawn_app_with(FAST).await;
    publish_ramped(&app, "R", "2s").await;
    assert_eq!(release(&app, "R", "2.0.0").await["rollout"], 10.0);
    eventually(10, "100%", || async {
        release(&app, "R", "2.0.0").await["rollout"] == 100.0
    })
    .await;
    let r = release(&app, "R", "2.0.0").await;
    assert_eq!(r["ramp"]["done"], true, "{r}");
    assert_eq!(r["ramp"]["steps"], json!([10.0, 50.0, 100.0]));
    assert_eq!(ramp_steps(&app, "R 2.0.0").await.len(), 3);
    let mut steps = ramp_steps(&app, "R 2.0.0").await;
    steps.reverse();
    assert_eq!(steps, vec![json!(10.0), json!(50.0), json!(100.0)]);

    // Paused, it holds for well past its interval; resumed, it goes on.
    publish_ramped(&app, "H", "1s").await;
    assert_eq!(
        app.patch("H", "2.0.0", json!({"paused": true}))
            .await
            .status(),
        200
    );
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(3) {
        let r = release(&app, "H", "2.0.0").await;
        assert_eq!(r["rollout"], 10.0, "a paused ramp moved: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.patch("H", "2.0.0", json!({"paused": false}))
            .await
            .status(),
        200
    );
    eventually(10, "the next step", || async {
        release(&app, "H", "2.0.0").await["rollout"] == 50.0
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn ramps_and_gates_refuse_what_makes_no_sense() {
    let app = spawn_app_with(FAST).await;
    let fw = firmware(100, 3);
    assert_eq!(app.upload("B", "2.0.0", &fw).await.status(), 201);
    let env = app.sign(&Rel::new("B", "2.0.0", 1, &fw));
    let publish = |extra: Value| {
        let mut body = json!({"release": env.to_value()});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        app.client
            .post(format!("{}/v1/admin/releases", app.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    for (extra, code, says) in [
        (
            json!({"ramp": {"steps": [10, 5, 100], "every": "1h"}}),
            "bad_ramp",
            "strictly up",
        ),
        (
            json!({"ramp": {"steps": [10, 50], "every": "1h"}}),
            "bad_ramp",
            "last step must be 100",
        ),
        (
            json!({"ramp": {"steps": [0, 100], "every": "1h"}}),
            "bad_ramp",
            "above 0",
        ),
        (
            json!({"ramp": {"steps": [10, 100]}}),
            "bad_ramp",
            "give every",
        ),
        (
            json!({"ramp": {"steps": [10, 100], "every": "soon"}}),
            "bad_ramp",
            "duration",
        ),
        (
            json!({"ramp": {"steps": "daily", "every": "1h"}}),
            "bad_ramp",
            "phased",
        ),
        (
            json!({"ramp": {"steps": [10, 100], "every": "1h"}, "rollout": 50}),
            "bad_rollout",
            "first step",
        ),
        (
            json!({"health": {"min_reports": 100, "max_failure_rate": 1.5}}),
            "bad_health",
            "from 0 to 1",
        ),
        (
            json!({"health": {"min_reports": 0, "max_failure_rate": 0.1}}),
            "bad_health",
            "at least 1",
        ),
    ] {
        let r = publish(extra.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{extra}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], code, "{extra}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{extra}: {e}"
        );
    }
    // "phased" is the seven-step, day-apart ramp.
    let r = publish(json!({"ramp": {"steps": "phased"}})).await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["rollout"], 1.0);
    assert_eq!(
        v["ramp"]["steps"],
        json!([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
    );
    assert_eq!(v["ramp"]["every"], "1day");
    // Nothing refused was stored.
    let all = get(&app, "/v1/admin/releases?product=B").await;
    assert_eq!(all["releases"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn two_instances_on_redis_add_up_step_once_and_see_each_others_pause() {
    let prefix = support::state_suite::unique_prefix();
    let shared = format!(
        "{FAST}[state]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_prefix = \"{prefix}\"\n",
        support::state_suite::redis_url()
    );
    let a = spawn_app_with(&shared).await;
    let b = spawn_app_sharing_keys(&a, &shared).await;
    a.publish(&Rel::new("P", "2.0.0", 1, &firmware(100, 1)), 100.0)
        .await;
    // (last_day=0 is far in the past: such checks are answered, not counted.)
    eventually(5, "b sees the release", || async {
        check_from(&b, "P", "?last_day=0").await["update"]["version"] == "2.0.0"
    })
    .await;
    let day = check_from(&a, "P", "?last_day=0").await["day"]
        .as_u64()
        .unwrap();
    for (app, n) in [(&a, 70), (&b, 30)] {
        for _ in 0..n {
            check_from(app, "P", &format!("?last_day={}", day - 1)).await;
        }
    }
    for _ in 0..5 {
        check_from(&b, "P", "").await;
    }
    eventually(10, "the sum of both", || async {
        today(&stats(&a, "P").await, "1.0.0") == (105, 5)
    })
    .await;
    assert_eq!(today(&stats(&b, "P").await, "1.0.0"), (105, 5));

    // One ramp, two instances evaluating it: one audit entry per step.
    publish_ramped(&a, "R", "1s").await;
    eventually(15, "100%", || async {
        release(&b, "R", "2.0.0").await["rollout"] == 100.0
    })
    .await;
    let steps = ramp_steps(&a, "R 2.0.0").await;
    assert_eq!(steps.len(), 3, "{steps:?}");

    // A pause on one is a pause on both.
    assert_eq!(
        a.patch("P", "2.0.0", json!({"paused": true}))
            .await
            .status(),
        200
    );
    eventually(5, "b stops offering it", || async {
        check_from(&b, "P", "?last_day=0").await["update"].is_null()
    })
    .await;
    b.stop().await;
    a.stop().await;
}
