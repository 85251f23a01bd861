//! Production shape: several `firmcast serve` processes sharing one Redis
//! and one S3 bucket (s3s-fs), and what happens when those fail.

use crate::support;

use std::time::{Duration, Instant};
use support::cli::firmcast;
use support::redis_proc::RedisProcess;
use support::s3s::{S3sServer, ACCESS_KEY, SECRET_KEY};
use support::server::{make_token, ServeProcess};

const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

struct Cluster {
    dir: tempfile::TempDir,
    token: String,
}

/// Keys, a token and a config per instance (own data_dir, shared Redis + S3).
fn cluster(
    redis_url: &str,
    prefix: &str,
    s3: &S3sServer,
    instances: usize,
    redirect_on: Option<usize>,
) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    firmcast(dir.path(), &["keys", "init", "--dir", "keys"]).ok();
    let (token, entry) = make_token(dir.path(), "ops", "admin");
    for i in 0..instances {
        let delivery = if redirect_on == Some(i) {
            "redirect"
        } else {
            "stream"
        };
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data-{i}"
[state]
backend = "redis"
redis_url = "{redis_url}"
redis_prefix = "{prefix}"
redis_timeout_ms = 1000
[blob]
backend = "s3"
delivery = "{delivery}"
[blob.s3]
bucket = "firmware"
endpoint = "{endpoint}"
region = "us-east-1"
force_path_style = true
prefix = "{prefix}/"
timeout_ms = 2000
{entry}
[limits]
per_ip_rps = 0
"#,
            endpoint = s3.endpoint()
        );
        std::fs::write(dir.path().join(format!("instance-{i}.toml")), config).unwrap();
    }
    Cluster { dir, token }
}

fn unique_prefix() -> String {
    format!("fc-multi-{}", hex::encode(rand::random::<[u8; 6]>()))
}

fn sign_and_publish(c: &Cluster, url: &str, version: &str, seq: &str, fw: &[u8]) {
    let d = c.dir.path();
    std::fs::write(d.join("fw.bin"), fw).unwrap();
    let rel = format!("release-{version}.json");
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
            version,
            "--seq",
            seq,
            "--file",
            "fw.bin",
            "--out",
            &rel,
        ],
    )
    .ok();
    firmcast(
        d,
        &[
            "release",
            "publish",
            "--server",
            url,
            "--release",
            &rel,
            "--file",
            "fw.bin",
            "--token",
            &c.token,
        ],
    )
    .ok();
}

fn offered(url: &str, version: &str) -> Option<String> {
    let v: serde_json::Value = reqwest::blocking::get(format!("{url}/v1/updates/Buds/{version}"))
        .unwrap()
        .json()
        .unwrap();
    v["update"]["version"].as_str().map(str::to_owned)
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn firmware(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 7 + salt as usize) % 253) as u8)
        .collect()
}

#[test]
fn a_release_published_on_one_instance_is_served_by_the_other() {
    let s3 = S3sServer::start(&["firmware"]);
    let prefix = unique_prefix();
    let c = cluster("redis://127.0.0.1:6379", &prefix, &s3, 2, Some(1));
    let a = ServeProcess::start(c.dir.path(), "instance-0.toml", &AWS_ENV);
    let b = ServeProcess::start(c.dir.path(), "instance-1.toml", &AWS_ENV);
    assert_eq!(offered_or_404(&b.url), 404, "nothing published yet");

    let fw = firmware(9 << 20, 3); // above the multipart part size
    sign_and_publish(&c, &a.url, "1.1.0", "1", &fw);
    let took = wait_until(Duration::from_secs(1), || {
        offered(&b.url, "1.0.0").as_deref() == Some("1.1.0")
    });
    eprintln!("instance b saw the release after {took:?}");

    // Instance a streams the bytes from S3; instance b redirects to a presigned URL.
    let bytes = reqwest::blocking::get(format!("{}/v1/artifacts/Buds/1.1.0", a.url))
        .unwrap()
        .bytes()
        .unwrap();
    assert!(bytes[..] == fw[..], "streamed bytes differ");
    let no_redirect = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(format!("{}/v1/artifacts/Buds/1.1.0", b.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&s3.endpoint()) && location.contains("X-Amz-Signature"),
        "{location}"
    );
    assert!(reqwest::blocking::get(&location).unwrap().bytes().unwrap()[..] == fw[..]);

    // A pause through b reaches a too.
    firmcast(
        c.dir.path(),
        &[
            "release", "pause", "Buds", "1.1.0", "--server", &b.url, "--token", &c.token,
        ],
    )
    .ok();
    wait_until(Duration::from_secs(1), || {
        offered(&a.url, "1.0.0").is_none()
    });
}

fn status_of(r: reqwest::blocking::Response) -> (u16, Option<String>) {
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), retry)
}

#[test]
fn redis_down_keeps_checks_and_downloads_and_refuses_writes_fast() {
    let s3 = S3sServer::start(&["firmware"]);
    let mut redis = RedisProcess::start();
    let c = cluster(&redis.url(), &unique_prefix(), &s3, 1, None);
    let a = ServeProcess::start(c.dir.path(), "instance-0.toml", &AWS_ENV);
    let fw = firmware(4096, 1);
    sign_and_publish(&c, &a.url, "1.1.0", "1", &fw);

    redis.kill();
    let http = reqwest::blocking::Client::new();
    for _ in 0..20 {
        assert_eq!(offered(&a.url, "1.0.0").as_deref(), Some("1.1.0"));
    }
    let dl = http
        .get(format!("{}/v1/artifacts/Buds/1.1.0", a.url))
        .send()
        .unwrap();
    assert_eq!(dl.status(), 200);
    assert!(dl.bytes().unwrap()[..] == fw[..]);

    let started = Instant::now();
    let r = http
        .patch(format!("{}/v1/admin/releases/Buds/1.1.0", a.url))
        .bearer_auth(&c.token)
        .json(&serde_json::json!({"paused": true}))
        .send()
        .unwrap();
    let (status, retry) = status_of(r);
    assert_eq!(status, 503);
    assert!(retry.is_some(), "503 carries Retry-After");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        started.elapsed()
    );
    let ready = http.get(format!("{}/readyz", a.url)).send().unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().unwrap();
    // It names the backend that is down, and why.
    assert_eq!(ready["state"]["backend"], "redis", "{ready}");
    let why = ready["state"]["status"].as_str().unwrap();
    assert!(
        why.contains("redis") && why.contains("unavailable"),
        "{ready}"
    );
    assert_eq!(ready["blob"]["status"], "ok", "{ready}");
    assert_eq!(ready["ready"], false, "{ready}");

    // Redis comes back (with its data): writes work again, no restart.
    redis.restart();
    wait_until(Duration::from_secs(15), || {
        http.get(format!("{}/readyz", a.url))
            .send()
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    });
    let r = http
        .patch(format!("{}/v1/admin/releases/Buds/1.1.0", a.url))
        .bearer_auth(&c.token)
        .json(&serde_json::json!({"paused": true}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(Duration::from_secs(2), || {
        offered(&a.url, "1.0.0").is_none()
    });
}

#[test]
fn s3_down_fails_downloads_fast_and_checks_go_on() {
    let mut s3 = S3sServer::start(&["firmware"]);
    let c = cluster("redis://127.0.0.1:6379", &unique_prefix(), &s3, 1, None);
    let a = ServeProcess::start(c.dir.path(), "instance-0.toml", &AWS_ENV);
    let fw = firmware(4096, 2);
    sign_and_publish(&c, &a.url, "1.1.0", "1", &fw);
    s3.stop();
    assert_eq!(offered(&a.url, "1.0.0").as_deref(), Some("1.1.0"));
    let started = Instant::now();
    let (status, retry) =
        status_of(reqwest::blocking::get(format!("{}/v1/artifacts/Buds/1.1.0", a.url)).unwrap());
    assert_eq!(status, 503);
    assert!(retry.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let ready: serde_json::Value = reqwest::blocking::get(format!("{}/readyz", a.url))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["blob"]["backend"], "s3", "{ready}");
    let why = ready["blob"]["status"].as_str().unwrap();
    assert!(why.contains("s3") && why.contains("unavailable"), "{ready}");
    assert_eq!(ready["state"]["status"], "ok", "{ready}");
}

#[test]
fn a_frozen_s3_times_out_within_its_bound_and_recovers() {
    let s3 = S3sServer::start(&["firmware"]);
    let c = cluster("redis://127.0.0.1:6379", &unique_prefix(), &s3, 1, None);
    let a = ServeProcess::start(c.dir.path(), "instance-0.toml", &AWS_ENV);
    let fw = firmware(4096, 3);
    sign_and_publish(&c, &a.url, "1.1.0", "1", &fw);
    s3.freeze();
    // Checks never touch S3; downloads give up after blob.s3.timeout_ms (2 s).
    assert_eq!(offered(&a.url, "1.0.0").as_deref(), Some("1.1.0"));
    let started = Instant::now();
    let (status, retry) =
        status_of(reqwest::blocking::get(format!("{}/v1/artifacts/Buds/1.1.0", a.url)).unwrap());
    let waited = started.elapsed();
    assert_eq!((status, retry.is_some()), (503, true));
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(offered(&a.url, "1.0.0").as_deref(), Some("1.1.0"));
    s3.resume();
    let body = reqwest::blocking::get(format!("{}/v1/artifacts/Buds/1.1.0", a.url)).unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().unwrap().as_ref(), &fw[..]);
}

#[test]
fn a_crash_between_upload_and_release_leaves_nothing_visible() {
    let s3 = S3sServer::start(&["firmware"]);
    let c = cluster("redis://127.0.0.1:6379", &unique_prefix(), &s3, 1, None);
    let d = c.dir.path();
    let mut a = ServeProcess::start(d, "instance-0.toml", &AWS_ENV);
    let fw = firmware(100_000, 5);
    std::fs::write(d.join("fw.bin"), &fw).unwrap();
    // Step 1 (upload) completes, then the process dies before step 2.
    let r = reqwest::blocking::Client::new()
        .put(format!("{}/v1/admin/artifacts/Buds/1.1.0", a.url))
        .bearer_auth(&c.token)
        .header("content-type", "application/octet-stream")
        .body(fw.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    a.kill();
    let a = ServeProcess::start(d, "instance-0.toml", &AWS_ENV);
    assert_eq!(offered_or_404(&a.url), 404, "no release is visible");
    let r = reqwest::blocking::get(format!("{}/v1/artifacts/Buds/1.1.0", a.url)).unwrap();
    assert_eq!(r.status(), 404);
    // Publishing again completes the release (the upload is idempotent).
    sign_and_publish(&c, &a.url, "1.1.0", "1", &fw);
    assert_eq!(offered(&a.url, "1.0.0").as_deref(), Some("1.1.0"));
}

fn offered_or_404(url: &str) -> u16 {
    reqwest::blocking::get(format!("{url}/v1/updates/Buds/1.0.0"))
        .unwrap()
        .status()
        .as_u16()
}
