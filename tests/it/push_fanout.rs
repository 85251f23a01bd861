//! Subscriptions and release fan-out end to end: the real server, the real
//! embedded stores, and provider fakes that speak APNs (HTTP/2 over TLS) and
//! FCM v1 (OAuth2 JWT-bearer) on the wire.

use crate::support;

use firmcast_push_fakes::apns::{ApnsFake, ApnsFault};
use firmcast_push_fakes::fcm::{FcmFake, FcmFault};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::app::{firmware, spawn_app_with, Rel, TestApp, PUBLISHER_TOKEN};

struct Fakes {
    apns: ApnsFake,
    fcm: FcmFake,
    _dir: tempfile::TempDir,
    config: String,
}

async fn fakes() -> Fakes {
    let apns = ApnsFake::start().await.unwrap();
    let fcm = FcmFake::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    apns.write_key(&d.join("apns.p8")).unwrap();
    apns.write_ca(&d.join("ca.pem")).unwrap();
    fcm.write_service_account(&d.join("fcm.json")).unwrap();
    let config = format!(
        r#"
[push]
workers = 4
[push.apns]
enabled = true
base_url = "{apns_url}"
key_file = "{d}/apns.p8"
key_id = "{key_id}"
team_id = "{team_id}"
topic = "{topic}"
ca_file = "{d}/ca.pem"
[push.fcm]
enabled = true
base_url = "{fcm_url}"
service_account_file = "{d}/fcm.json"
"#,
        apns_url = apns.base_url(),
        key_id = apns.key_id(),
        team_id = apns.team_id(),
        topic = apns.topic(),
        fcm_url = fcm.base_url(),
        d = d.display(),
    );
    Fakes {
        apns,
        fcm,
        _dir: dir,
        config,
    }
}

fn apns_token(i: usize) -> String {
    format!("{i:064x}")
}

fn fcm_token(i: usize) -> String {
    format!("fcm-token-{i:08}-abcdefghijklmnopqrstuvwxyz")
}

async fn subscribe(
    app: &TestApp,
    provider: &str,
    token: &str,
    products: &[&str],
    locale: &str,
) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/push/subscriptions", app.url))
        .json(
            &json!({"provider": provider, "token": token, "products": products, "locale": locale}),
        )
        .send()
        .await
        .unwrap()
}

async fn notify(app: &TestApp, product: &str, version: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!(
            "{}/v1/admin/releases/{product}/{version}/notify",
            app.url
        ))
        .bearer_auth(PUBLISHER_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.admin_get(&format!("/v1/admin/jobs/{id}")).await
}

async fn wait_done(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = job(app, id).await;
        if j["state"] != "running" {
            return j;
        }
        assert!(Instant::now() < deadline, "job did not finish: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscriber_once_and_prunes_dead_tokens() {
    let f = fakes().await;
    let app = spawn_app_with(&f.config).await;
    let n = 600; // per provider: two batches each and a partial one
    for i in 0..n {
        assert_eq!(
            subscribe(&app, "apns", &apns_token(i), &["Buds"], "ja-JP")
                .await
                .status(),
            200
        );
        assert_eq!(
            subscribe(&app, "fcm", &fcm_token(i), &["Buds", "Other"], "de")
                .await
                .status(),
            200
        );
    }
    // Idempotent upsert: subscribing again changes nothing.
    subscribe(&app, "fcm", &fcm_token(0), &["Buds", "Other"], "de").await;
    // Dead and flaky tokens.
    f.apns
        .fail_always(&apns_token(1), ApnsFault::BadDeviceToken);
    // Unregistered after its last registration: dead. Unregistered before
    // the app registered it again (it is valid again): kept.
    f.apns.fail_always(
        &apns_token(2),
        ApnsFault::Unregistered {
            timestamp_ms: chrono::Utc::now().timestamp_millis() + 60_000,
        },
    );
    f.apns.fail_always(
        &apns_token(4),
        ApnsFault::Unregistered {
            timestamp_ms: chrono::Utc::now().timestamp_millis() - 600_000,
        },
    );
    f.apns.fail_once(
        &apns_token(3),
        ApnsFault::ServiceUnavailable {
            retry_after: Some(0),
        },
    );
    f.fcm.fail_always(&fcm_token(1), FcmFault::Unregistered);
    f.fcm.fail_always(&fcm_token(2), FcmFault::SenderIdMismatch);
    f.fcm.fail_once(
        &fcm_token(3),
        FcmFault::QuotaExceeded {
            retry_after: Some(0),
        },
    );

    let fw = firmware(100, 1);
    let mut rel = Rel::new("Buds", "2.0.0", 1, &fw);
    rel.from = None;
    app.publish(&rel, 100.0).await;

    let dry = notify(&app, "Buds", "2.0.0", json!({"dry_run": true})).await;
    assert_eq!(dry.status(), 202);
    let dry: Value = dry.json().await.unwrap();
    assert_eq!(dry["total"], 2 * n);
    assert_eq!(
        f.apns.total_requests() + f.fcm.send_requests(),
        0,
        "a dry run sends nothing"
    );

    let r = notify(&app, "Buds", "2.0.0", json!({})).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = wait_done(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["total"], 2 * n);
    assert_eq!(j["removed"], 4, "{j}");
    assert_eq!(j["sent"], 2 * n - 5, "{j}");
    assert_eq!(j["failed"], 1, "the re-registered token: {j}");
    assert_eq!(j["retried"], 2, "{j}");

    // Once each, localized, with the product's collapse id.
    assert_eq!(f.apns.delivered_to(&apns_token(10)), 1);
    assert_eq!(f.fcm.delivered_to(&fcm_token(10)), 1);
    assert_eq!(f.apns.delivered_with_collapse_id("fw.Buds"), n - 3);
    let ja = f
        .apns
        .deliveries()
        .into_iter()
        .find(|d| d.token == apns_token(10))
        .unwrap();
    assert_eq!(
        ja.payload["aps"]["alert"]["body"], "Buds 2.0.0",
        "{}",
        ja.payload
    );
    assert_eq!(ja.payload["product"], "Buds", "{}", ja.payload);
    // One provider token for all those sends, not one per request.
    assert!(f.apns.distinct_jwts() <= 2, "{}", f.apns.distinct_jwts());

    // Dead tokens are gone, the re-registered one stays: four fewer.
    let dry: Value = notify(&app, "Buds", "2.0.0", json!({"dry_run": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dry["total"], 2 * n - 4);

    let m = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(&format!(
            "firmcast_push_total{{provider=\"apns\",outcome=\"sent\"}} {}",
            n - 3
        )),
        "{m}"
    );
    app.stop().await;
}

#[tokio::test]
async fn unsubscribe_removes_every_trace_even_from_pending_work() {
    let f = fakes().await;
    let app = spawn_app_with(&f.config).await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("P", "1.0.0", 1, &fw), 100.0).await;
    subscribe(&app, "fcm", &fcm_token(1), &["P"], "en").await;
    subscribe(&app, "fcm", &fcm_token(2), &["P"], "en").await;
    let r = app
        .client
        .post(format!("{}/v1/push/unsubscribe", app.url))
        .json(&json!({"provider": "fcm", "token": fcm_token(1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let dry: Value = notify(&app, "P", "1.0.0", json!({"dry_run": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dry["total"], 1);
    let id = notify(&app, "P", "1.0.0", json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = wait_done(&app, &id).await;
    assert_eq!(
        (j["sent"].as_u64(), j["total"].as_u64()),
        (Some(1), Some(1)),
        "{j}"
    );
    assert_eq!(f.fcm.delivered_to(&fcm_token(1)), 0);
    app.stop().await;
}

#[tokio::test]
async fn notify_refuses_partial_rollouts_unless_forced_and_bad_input_is_explained() {
    let f = fakes().await;
    let app = spawn_app_with(&f.config).await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("P", "1.0.0", 1, &fw), 20.0).await;
    let r = notify(&app, "P", "1.0.0", json!({})).await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("force"));
    assert_eq!(
        notify(&app, "P", "1.0.0", json!({"force": true}))
            .await
            .status(),
        202
    );
    assert_eq!(notify(&app, "P", "9.0.0", json!({})).await.status(), 404);

    for (body, code) in [
        (
            json!({"provider": "apns", "token": "not-hex", "products": ["P"]}),
            "bad_token",
        ),
        (
            json!({"provider": "gcm", "token": fcm_token(1), "products": ["P"]}),
            "bad_json",
        ),
        (
            json!({"provider": "fcm", "token": fcm_token(1), "products": []}),
            "bad_products",
        ),
        (
            json!({"provider": "fcm", "token": fcm_token(1), "products": ["../x"]}),
            "bad_product",
        ),
        (
            json!({"provider": "fcm", "token": fcm_token(1), "products": ["P"], "locale": "xx-!!"}),
            "bad_locale",
        ),
    ] {
        let r = app
            .client
            .post(format!("{}/v1/push/subscriptions", app.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], code, "{body}");
    }
    let r = app
        .client
        .get(format!("{}/v1/admin/jobs/zzz", app.url))
        .bearer_auth(PUBLISHER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn credential_errors_stop_the_job_and_keep_tokens() {
    let f = fakes().await;
    let app = spawn_app_with(
        &f.config
            .replacen("workers = 4", "workers = 1\nin_flight = 4", 1),
    )
    .await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("P", "1.0.0", 1, &fw), 100.0).await;
    let n = 1200; // three batches
    for i in 0..n {
        subscribe(&app, "fcm", &fcm_token(i), &["P"], "en").await;
        f.fcm
            .fail_always(&fcm_token(i), FcmFault::ThirdPartyAuthError);
    }
    let id = notify(&app, "P", "1.0.0", json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = wait_done(&app, &id).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .starts_with("FCM: THIRD_PARTY_AUTH_ERROR"),
        "{j}"
    );
    assert_eq!(j["removed"], 0, "{j}");
    // The first answer stops the job: what was already in flight, and no
    // later send, let alone a later batch.
    let sends = f.fcm.send_requests();
    assert!(
        (1..=4).contains(&sends),
        "{sends} sends after a credential error"
    );
    let dry: Value = notify(&app, "P", "1.0.0", json!({"dry_run": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dry["total"], n, "tokens kept");
    let m = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("firmcast_push_jobs_fatal_total 1"), "{m}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_100k_tokens_has_exact_counters() {
    use futures_util::StreamExt;
    let f = fakes().await;
    let app = spawn_app_with(&f.config).await;
    let n = 50_000; // per provider
    let started = Instant::now();
    futures_util::stream::iter(0..2 * n)
        .map(|i| {
            let app = &app;
            async move {
                let (provider, token) = if i % 2 == 0 {
                    ("apns", apns_token(i / 2))
                } else {
                    ("fcm", fcm_token(i / 2))
                };
                let r = subscribe(app, provider, &token, &["Big"], "en").await;
                assert_eq!(r.status(), 200);
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    eprintln!("100k subscriptions in {:?}", started.elapsed());
    for i in [7, 70, 700] {
        f.apns
            .fail_always(&apns_token(i), ApnsFault::BadDeviceToken);
        f.fcm.fail_always(&fcm_token(i), FcmFault::Unregistered);
    }
    let fw = firmware(100, 1);
    app.publish(&Rel::new("Big", "1.0.0", 1, &fw), 100.0).await;
    let started = Instant::now();
    let id = notify(&app, "Big", "1.0.0", json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = wait_done(&app, &id).await;
    eprintln!("100k fan-out in {:?}: {j}", started.elapsed());
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["total"], 2 * n);
    assert_eq!(j["sent"], 2 * n - 6);
    assert_eq!(j["removed"], 6);
    assert_eq!(j["failed"], 0);
    assert_eq!(f.apns.total_requests() + f.fcm.send_requests(), 2 * n);
    let dry: Value = notify(&app, "Big", "1.0.0", json!({"dry_run": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dry["total"], 2 * n - 6, "dead tokens are gone");

    // The CLI sees the same job.
    let show = support::cli::firmcast(
        app.dir.path(),
        &[
            "job",
            "show",
            &id,
            "--server",
            &app.url,
            "--token",
            support::app::ADMIN_TOKEN,
        ],
    )
    .ok();
    assert!(
        show.stdout.contains("done") && show.stdout.contains(&format!("sent {}", 2 * n - 6)),
        "{}",
        show.stdout
    );
    let dry = support::cli::firmcast(
        app.dir.path(),
        &[
            "release",
            "notify",
            "Big",
            "1.0.0",
            "--dry-run",
            "--server",
            &app.url,
            "--token",
            support::app::ADMIN_TOKEN,
        ],
    )
    .ok();
    assert!(
        dry.stdout.contains(&format!("{} subscriber(s)", 2 * n - 6)),
        "{}",
        dry.stdout
    );
    app.stop().await;
}

/// Polls `cond` every 10 ms until it holds; fails after `secs`.
async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_sending() {
    let f = fakes().await;
    let app = spawn_app_with(
        &f.config
            .replacen("workers = 4", "workers = 1\nin_flight = 2", 1),
    )
    .await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("Slow", "1.0.0", 1, &fw), 100.0).await;
    let n = 1500;
    for i in 0..n {
        subscribe(&app, "fcm", &fcm_token(i), &["Slow"], "en").await;
        f.fcm
            .fail_always(&fcm_token(i), FcmFault::Delay(Duration::from_millis(20)));
    }
    let id = notify(&app, "Slow", "1.0.0", json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(10, "ten sends", || f.fcm.send_requests() >= 10).await;
    let r = app
        .client
        .delete(format!("{}/v1/admin/jobs/{id}", app.url))
        .bearer_auth(PUBLISHER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "cancelled");
    // Counted at the fake: once the cancel is acknowledged, no send starts
    // (at most the `in_flight` sends already on the wire arrive), while the
    // job would otherwise go on for seconds.
    let at_cancel = f.fcm.send_requests();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = f.fcm.send_requests();
    assert!(
        after <= at_cancel + 2,
        "{} sends after the cancel",
        after - at_cancel
    );
    assert!(at_cancel < 500, "the job was cancelled mid-batch");
    let j = job(&app, &id).await;
    assert_eq!(j["state"], "cancelled", "{j}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_during_a_running_job_drops_the_token_from_pending_batches() {
    let f = fakes().await;
    let app = spawn_app_with(
        &f.config
            .replacen("workers = 4", "workers = 1\nin_flight = 4", 1),
    )
    .await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("Q", "1.0.0", 1, &fw), 100.0).await;
    let n = 1500; // three batches, sent one after another
    for i in 0..n {
        subscribe(&app, "fcm", &fcm_token(i), &["Q"], "en").await;
        f.fcm
            .fail_always(&fcm_token(i), FcmFault::Delay(Duration::from_millis(5)));
    }
    let id = notify(&app, "Q", "1.0.0", json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(10, "ten sends", || f.fcm.send_requests() >= 10).await;
    // The last batch is still queued: its tokens leave before it is sent.
    let leaving: Vec<usize> = (n - 20..n).collect();
    for &i in &leaving {
        let r = app
            .client
            .post(format!("{}/v1/push/unsubscribe", app.url))
            .json(&json!({"provider": "fcm", "token": fcm_token(i)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let j = wait_done(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    for &i in &leaving {
        assert_eq!(
            f.fcm.delivered_to(&fcm_token(i)),
            0,
            "token {i} was sent after it unsubscribed"
        );
    }
    assert_eq!(j["sent"].as_u64(), Some((n - leaving.len()) as u64), "{j}");
    app.stop().await;
}

#[tokio::test]
async fn auto_notify_tells_subscribers_when_a_release_goes_live_at_100_percent() {
    let f = fakes().await;
    let app = spawn_app_with(&f.config.replacen(
        "workers = 4",
        "workers = 2\nauto_notify = true",
        1,
    ))
    .await;
    subscribe(&app, "apns", &apns_token(1), &["Auto"], "en").await;
    let (a, b) = (firmware(100, 1), firmware(100, 2));
    // Staged: nobody is told. Then live for everyone: told once. Had the
    // staged release started a job, its batch would have been queued, and
    // sent, first.
    app.publish(&Rel::new("Auto", "1.0.0", 1, &a), 50.0).await;
    app.publish(&Rel::new("Auto", "1.1.0", 2, &b), 100.0).await;
    wait_until(10, "the notification", || {
        f.apns.delivered_to(&apns_token(1)) > 0
    })
    .await;
    let told: Vec<Value> = f
        .apns
        .deliveries()
        .into_iter()
        .filter(|d| d.token == apns_token(1))
        .map(|d| d.payload["version"].clone())
        .collect();
    assert_eq!(told, vec![json!("1.1.0")]);
    app.stop().await;
}
