//! Fan-out across instances on one Redis: two `firmcast serve` processes
//! share one job's batches, and a killed instance's batch is finished by the
//! other with nobody missed; Redis killed and restarted mid-job loses no one;
//! two instances paced together keep within a provider's quota.

use crate::support;

use firmcast_push_fakes::fcm::{FcmFake, FcmFault, FcmOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::cli::firmcast;
use support::redis_proc::RedisProcess;
use support::server::{make_token, ServeProcess};

struct Setup {
    dir: tempfile::TempDir,
    token: String,
    fcm: FcmFake,
}

/// Keys, a token, the FCM fake and one config per instance on a fresh prefix
/// of the shared Redis, or of `redis_url`.
async fn setup(instances: usize, in_flight: usize, redis_url: Option<&str>) -> Setup {
    let fcm = FcmFake::start().await.unwrap();
    setup_with(fcm, instances, in_flight, redis_url, "max_per_second = 0").await
}

/// [`setup`] with this fake and `fcm_extra` lines in `[push.fcm]`.
async fn setup_with(
    fcm: FcmFake,
    instances: usize,
    in_flight: usize,
    redis_url: Option<&str>,
    fcm_extra: &str,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    firmcast(d, &["keys", "init", "--dir", "keys"]).ok();
    let (token, entry) = make_token(d, "ops", "admin");
    fcm.write_service_account(&d.join("fcm.json")).unwrap();
    let prefix = format!("fc-push-{}", hex::encode(rand::random::<[u8; 6]>()));
    for i in 0..instances {
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data-{i}"
[state]
backend = "redis"
redis_url = "{redis_url}"
redis_prefix = "{prefix}"
[push]
workers = 1
in_flight = {in_flight}
stale_batch_secs = 2
[push.fcm]
enabled = true
base_url = "{fcm}"
service_account_file = "fcm.json"
{fcm_extra}
{entry}
[limits]
per_ip_rps = 0
"#,
            fcm = fcm.base_url(),
            redis_url = redis_url.unwrap_or("redis://127.0.0.1:6379"),
        );
        std::fs::write(d.join(format!("i{i}.toml")), config).unwrap();
    }
    Setup { dir, token, fcm }
}

fn fcm_token(i: usize) -> String {
    format!("multi-fcm-token-{i:08}-abcdefghijklmnop")
}

async fn prepare(s: &Setup, url: &str, n: usize) {
    let http = reqwest::Client::new();
    for i in 0..n {
        let r = http
            .post(format!("{url}/v1/push/subscriptions"))
            .json(&json!({"provider": "fcm", "token": fcm_token(i), "products": ["Buds"], "locale": "en"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let d = s.dir.path();
    std::fs::write(d.join("fw.bin"), b"firmware bytes").unwrap();
    firmcast(
        d,
        &[
            "release",
            "sign",
            "--key",
            "keys/release-1.pem",
            "--product",
            "Buds",
            "--version",
            "2.0.0",
            "--seq",
            "1",
            "--file",
            "fw.bin",
            "--out",
            "rel.json",
        ],
    )
    .ok();
    let (url, token) = (url.to_owned(), s.token.clone());
    let d = d.to_owned();
    tokio::task::spawn_blocking(move || {
        firmcast(
            &d,
            &[
                "release",
                "publish",
                "--server",
                &url,
                "--release",
                "rel.json",
                "--file",
                "fw.bin",
                "--token",
                &token,
            ],
        )
        .ok();
    })
    .await
    .unwrap();
}

async fn notify(s: &Setup, url: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/admin/releases/Buds/2.0.0/notify"))
        .bearer_auth(&s.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_done(s: &Setup, url: &str, id: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let r = reqwest::Client::new()
            .get(format!("{url}/v1/admin/jobs/{id}"))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        // While Redis restarts the answer is a 503 to retry.
        let busy = r.status() == 503;
        let j: Value = r.json().await.unwrap();
        if !busy && j["state"] != "running" {
            return j;
        }
        assert!(start.elapsed() < limit, "job not done in {limit:?}: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sent_by(url: &str) -> u64 {
    let m = reqwest::blocking::get(format!("{url}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("firmcast_push_total{provider=\"fcm\",outcome=\"sent\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Every send takes 10 ms; notifies, and returns once 100 sends have begun.
async fn start_slow_job(s: &Setup, url: &str, n: usize) -> String {
    for i in 0..n {
        s.fcm
            .fail_always(&fcm_token(i), FcmFault::Delay(Duration::from_millis(10)));
    }
    let id = notify(s, url).await;
    let start = Instant::now();
    while s.fcm.send_requests() < 100 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no sends started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    id
}

/// Done, every token counted once, nobody missed, at most one batch twice.
fn assert_everyone_reached_once_counted(s: &Setup, j: &Value, n: usize) {
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(
        (j["total"].as_u64(), j["sent"].as_u64()),
        (Some(n as u64), Some(n as u64)),
        "counted once: {j}"
    );
    let mut twice = 0;
    for i in 0..n {
        let d = s.fcm.delivered_to(&fcm_token(i));
        assert!(d >= 1, "token {i} missed");
        twice += usize::from(d > 1);
    }
    assert!(twice <= 500, "at most one batch sent twice, got {twice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_job() {
    let n = 3000; // six batches
    let s = setup(2, 8, None).await;
    let a = ServeProcess::start(s.dir.path(), "i0.toml", &[]);
    let b = ServeProcess::start(s.dir.path(), "i1.toml", &[]);
    prepare(&s, &a.url, n).await;
    for i in 0..n {
        s.fcm
            .fail_always(&fcm_token(i), FcmFault::Delay(Duration::from_millis(5)));
    }
    let id = notify(&s, &a.url).await;
    let j = wait_done(&s, &b.url, &id, Duration::from_secs(120)).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(
        (j["total"].as_u64(), j["sent"].as_u64()),
        (Some(n as u64), Some(n as u64)),
        "{j}"
    );
    for i in 0..n {
        assert_eq!(s.fcm.delivered_to(&fcm_token(i)), 1, "token {i}");
    }
    let (ua, ub) = (a.url.clone(), b.url.clone());
    let (sa, sb) = tokio::task::spawn_blocking(move || (sent_by(&ua), sent_by(&ub)))
        .await
        .unwrap();
    assert!(sa > 0 && sb > 0, "both instances worked: {sa} + {sb}");
    assert_eq!(sa + sb, n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_batch_is_finished_by_another() {
    let n = 1500; // three batches
    let s = setup(2, 4, None).await;
    let mut a = ServeProcess::start(s.dir.path(), "i0.toml", &[]);
    prepare(&s, &a.url, n).await;
    // Kill a while its first batch is half sent.
    let id = start_slow_job(&s, &a.url, n).await;
    a.kill();
    let b = ServeProcess::start(s.dir.path(), "i1.toml", &[]);
    let j = wait_done(&s, &b.url, &id, Duration::from_secs(120)).await;
    assert_everyone_reached_once_counted(&s, &j, n);
    // And the duplicates carry the collapse key that hides them.
    assert_eq!(
        s.fcm.delivered_with_collapse_key("fw.Buds"),
        s.fcm.deliveries().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_job_loses_nobody() {
    let n = 1500; // three batches
    let mut redis = RedisProcess::start();
    let s = setup(1, 4, Some(&redis.url())).await;
    let a = ServeProcess::start(s.dir.path(), "i0.toml", &[]);
    prepare(&s, &a.url, n).await;
    let id = start_slow_job(&s, &a.url, n).await;
    // SIGKILL mid-batch; sends in flight finish, their acks cannot land.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = s.fcm.send_requests();
    redis.restart();

    let j = wait_done(&s, &a.url, &id, Duration::from_secs(120)).await;
    assert_everyone_reached_once_counted(&s, &j, n);
    assert!(
        during < n,
        "Redis died before the job could finish ({during} sends)"
    );
}

/// Issue 17: FCM allows 500 sends a second (429 QUOTA_EXCEEDED past it);
/// two instances paced at 500/s together finish with exact counters, every
/// token reached once, and fewer than 1% of sends answered 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_paced_together_keep_within_the_quota() {
    let n = 3000; // six batches, six seconds at 500/s
    let quota = FcmOptions {
        max_per_second: Some(500),
        ..FcmOptions::default()
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let fcm = FcmFake::start_with(addr, quota).await.unwrap();
    let s = setup_with(fcm, 2, 64, None, "max_per_second = 500").await;
    let a = ServeProcess::start(s.dir.path(), "i0.toml", &[]);
    let b = ServeProcess::start(s.dir.path(), "i1.toml", &[]);
    prepare(&s, &a.url, n).await;
    let started = Instant::now();
    let id = notify(&s, &a.url).await;
    let j = wait_done(&s, &b.url, &id, Duration::from_secs(120)).await;
    let took = started.elapsed();
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(
        (
            j["total"].as_u64(),
            j["sent"].as_u64(),
            j["failed"].as_u64()
        ),
        (Some(n as u64), Some(n as u64), Some(0)),
        "{j}"
    );
    for i in 0..n {
        assert_eq!(s.fcm.delivered_to(&fcm_token(i)), 1, "token {i}");
    }
    let refused = s.fcm.quota_rejections();
    assert!(
        refused * 100 < n,
        "{refused} of {n} sends answered 429 QUOTA_EXCEEDED"
    );
    assert!(
        took >= Duration::from_secs(5),
        "{n} sends in {took:?}: faster than 500/s, so not paced"
    );
    let (ua, ub) = (a.url.clone(), b.url.clone());
    let (sa, sb) = tokio::task::spawn_blocking(move || (sent_by(&ua), sent_by(&ub)))
        .await
        .unwrap();
    assert!(sa > 0 && sb > 0, "both instances sent: {sa} + {sb}");
    assert!(j["per_second"].as_f64().unwrap() <= 500.0, "{j}");
}
