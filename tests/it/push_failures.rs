//! Issue 17 against the provider fakes: a job that cannot send says why in
//! its JSON, in `firmcast job show` and in /metrics (untrusted certificate,
//! refused connection, an endpoint without HTTP/2); a sandbox/production
//! or wrong-project mix-up stops the job and deletes no token, while a few
//! dead tokens in a healthy job are still deleted; a batch slower than the
//! claim's idle time is sent once.

use crate::support;

use firmcast_push_fakes::apns::{ApnsFake, ApnsFault, ApnsOptions};
use firmcast_push_fakes::fcm::{FcmFake, FcmFault, FcmOptions};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::app::{firmware, spawn_app_with, Rel, TestApp, PUBLISHER_TOKEN};

const ANY: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

/// `[push.apns]` for `fake` at `base_url`, trusting its CA only if `trust`.
fn apns_config(fake: &ApnsFake, dir: &std::path::Path, base_url: &str, trust: bool) -> String {
    fake.write_key(&dir.join("apns.p8")).unwrap();
    fake.write_ca(&dir.join("ca.pem")).unwrap();
    let ca = if trust {
        format!("ca_file = \"{}/ca.pem\"", dir.display())
    } else {
        String::new()
    };
    format!(
        "[push]\nworkers = 2\n[push.apns]\nenabled = true\nbase_url = \"{base_url}\"\nkey_file = \"{d}/apns.p8\"\nkey_id = \"{}\"\nteam_id = \"{}\"\ntopic = \"{}\"\n{ca}\n",
        fake.key_id(),
        fake.team_id(),
        fake.topic(),
        d = dir.display(),
    )
}

fn fcm_config(fake: &FcmFake, dir: &std::path::Path) -> String {
    fake.write_service_account(&dir.join("fcm.json")).unwrap();
    format!(
        "[push.fcm]\nenabled = true\nbase_url = \"{}\"\nservice_account_file = \"{}/fcm.json\"\n",
        fake.base_url(),
        dir.display()
    )
}

fn apns_token(i: usize) -> String {
    format!("{i:064x}")
}

fn fcm_token(i: usize) -> String {
    format!("fcm-failures-{i:08}-abcdefghijklmnopqrstuvwxyz")
}

async fn subscribe(app: &TestApp, provider: &str, token: &str) {
    let r = app
        .client
        .post(format!("{}/v1/push/subscriptions", app.url))
        .json(&json!({"provider": provider, "token": token, "products": ["P"], "locale": "en"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn notify(app: &TestApp, dry_run: bool) -> Value {
    let r = app
        .client
        .post(format!("{}/v1/admin/releases/P/1.0.0/notify", app.url))
        .bearer_auth(PUBLISHER_TOKEN)
        .json(&json!({ "dry_run": dry_run }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

async fn run_job(app: &TestApp) -> Value {
    let id = notify(app, false).await["job"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = app.admin_get(&format!("/v1/admin/jobs/{id}")).await;
        if j["state"] != "running" {
            return j;
        }
        assert!(Instant::now() < deadline, "job did not finish: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn app_with(config: &str) -> TestApp {
    let app = spawn_app_with(config).await;
    app.publish(&Rel::new("P", "1.0.0", 1, &firmware(100, 1)), 100.0)
        .await;
    app
}

async fn metrics(app: &TestApp) -> String {
    let r = app.client.get(format!("{}/metrics", app.url)).send();
    r.await.unwrap().text().await.unwrap()
}

/// Five APNs subscribers behind `base_url`; the job they get.
async fn job_against(fake: &ApnsFake, base_url: &str, trust: bool) -> (TestApp, Value) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(&apns_config(fake, dir.path(), base_url, trust)).await;
    for i in 0..5 {
        subscribe(&app, "apns", &apns_token(i)).await;
    }
    let j = run_job(&app).await;
    (app, j)
}

/// Nothing sent: `failed`, the reason in words, the count by code, tokens kept.
async fn assert_nothing_sent(app: &TestApp, j: &Value, code: &str, words: &str) {
    assert_eq!(j["state"], "failed", "{j}");
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.starts_with("nothing could be sent: APNs: "), "{j}");
    assert!(reason.contains(words), "{words:?} missing: {j}");
    assert_eq!(
        (j["sent"].as_u64(), j["failed"].as_u64()),
        (Some(0), Some(5)),
        "{j}"
    );
    assert_eq!(j["failures"]["apns"]["by_reason"][code], 5, "{j}");
    let last = j["failures"]["apns"]["last_error"].as_str().unwrap();
    assert!(last.contains(words), "{j}");
    assert_eq!(notify(app, true).await["total"], 5, "tokens kept");
    let m = metrics(app).await;
    let line = format!("firmcast_push_failed_total{{provider=\"apns\",reason=\"{code}\"}} 5");
    assert!(m.contains(&line), "{line} missing:\n{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_endpoint_fails_the_job_and_job_show_says_why() {
    let fake = ApnsFake::start().await.unwrap();
    let (app, j) = job_against(&fake, &fake.base_url(), false).await;
    assert_nothing_sent(&app, &j, "tls_untrusted", "not trusted (unknown issuer)").await;
    assert_eq!(fake.total_requests(), 0);

    // The release engineer's view of the same job.
    let dir = tempfile::tempdir().unwrap();
    let id = j["id"].as_str().unwrap();
    let args = [
        "job",
        "show",
        id,
        "--server",
        &app.url,
        "--token",
        PUBLISHER_TOKEN,
    ];
    let run = support::cli::firmcast(dir.path(), &args).ok();
    assert!(
        run.stdout.contains("failed (nothing could be sent"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("apns failures: tls_untrusted 5"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("apns last error: APNs: TLS with 127.0.0.1: its certificate is not trusted"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_fails_the_job_with_why() {
    let fake = ApnsFake::start().await.unwrap();
    let closed = tokio::net::TcpListener::bind(SocketAddr::from(ANY))
        .await
        .unwrap();
    let url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let (app, j) = job_against(&fake, &url, true).await;
    assert_nothing_sent(&app, &j, "connect_refused", "cannot connect to 127.0.0.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_http2_fails_the_job_with_why() {
    let options = ApnsOptions {
        http1_only: true,
        ..ApnsOptions::default()
    };
    let fake = ApnsFake::start_with(SocketAddr::from(ANY), options)
        .await
        .unwrap();
    let (app, j) = job_against(&fake, &fake.base_url(), true).await;
    assert_nothing_sent(&app, &j, "not_http2", "does not speak HTTP/2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apns_environment_mix_up_deletes_no_token() {
    let fake = ApnsFake::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(&apns_config(&fake, dir.path(), &fake.base_url(), true)).await;
    for i in 0..40 {
        subscribe(&app, "apns", &apns_token(i)).await;
        fake.fail_always(&apns_token(i), ApnsFault::BadDeviceToken);
    }
    let j = run_job(&app).await;
    assert_eq!(j["state"], "failed", "{j}");
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains("of the first 20 answers were BadDeviceToken"),
        "{j}"
    );
    assert!(
        reason.contains("sandbox") && reason.contains("no token was deleted"),
        "{j}"
    );
    assert_eq!(j["removed"], 0, "{j}");
    assert_eq!(notify(&app, true).await["total"], 40, "every token kept");
    assert!(metrics(&app)
        .await
        .contains("firmcast_push_jobs_fatal_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_firebase_project_deletes_no_token() {
    let fake = FcmFake::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(&format!(
        "[push]\nworkers = 2\n{}",
        fcm_config(&fake, dir.path())
    ))
    .await;
    for i in 0..30 {
        subscribe(&app, "fcm", &fcm_token(i)).await;
        fake.fail_always(&fcm_token(i), FcmFault::SenderIdMismatch);
    }
    let j = run_job(&app).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains("were SENDER_ID_MISMATCH"),
        "{j}"
    );
    assert_eq!(notify(&app, true).await["total"], 30, "every token kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_bad_tokens_in_a_healthy_job_are_still_deleted() {
    let apns = ApnsFake::start().await.unwrap();
    let fcm = FcmFake::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config =
        apns_config(&apns, dir.path(), &apns.base_url(), true) + &fcm_config(&fcm, dir.path());
    let app = app_with(&config).await;
    for i in 0..40 {
        subscribe(&app, "apns", &apns_token(i)).await;
        subscribe(&app, "fcm", &fcm_token(i)).await;
    }
    // The first two subscribers of each provider (the first answers).
    for i in [0, 1] {
        apns.fail_always(&apns_token(i), ApnsFault::BadDeviceToken);
        fcm.fail_always(&fcm_token(i), FcmFault::SenderIdMismatch);
    }
    let j = run_job(&app).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(
        (j["sent"].as_u64(), j["removed"].as_u64()),
        (Some(76), Some(4)),
        "{j}"
    );
    assert_eq!(notify(&app, true).await["total"], 76);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_slower_than_the_claim_idle_time_is_sent_once() {
    // One batch of 500 at 50 in flight, 250 ms an answer: about 2.5 s,
    // while a claim idle for 1 s is taken over by the other worker.
    let options = FcmOptions {
        answer_delay: Duration::from_millis(250),
        ..FcmOptions::default()
    };
    let fake = FcmFake::start_with(SocketAddr::from(ANY), options)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[push]\nworkers = 2\nin_flight = 50\nstale_batch_secs = 1\n{}",
        fcm_config(&fake, dir.path())
    );
    let app = app_with(&config).await;
    for i in 0..500 {
        subscribe(&app, "fcm", &fcm_token(i)).await;
    }
    let started = Instant::now();
    let j = run_job(&app).await;
    assert!(
        started.elapsed() > Duration::from_millis(2000),
        "the batch was not slow"
    );
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["sent"], 500, "{j}");
    let twice: Vec<usize> = (0..500)
        .filter(|i| fake.delivered_to(&fcm_token(*i)) != 1)
        .collect();
    assert!(twice.is_empty(), "sent twice or never: {twice:?}");
}
