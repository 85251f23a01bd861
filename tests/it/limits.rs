//! Overload protection against the real server in process: per-client rate
//! limits, the global in-flight limit, slow clients.

use crate::support;

use std::net::IpAddr;
use std::time::{Duration, Instant};
use support::app::{
    firmware, spawn_app_with, spawn_app_with_server, Rel, ADMIN_TOKEN, PUBLISHER_TOKEN,
};
use tokio::io::AsyncWriteExt;

fn local(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[tokio::test]
async fn a_burst_from_one_address_is_limited_while_others_are_served() {
    let app = spawn_app_with(
        "[limits]\nper_ip_rps = 0.2\nper_ip_burst = 5\nmax_in_flight = 64\nmax_tracked_clients = 1000\n",
    )
    .await;
    let noisy = app.client_from(local(2));
    let quiet = app.client_from(local(3));
    let keys = format!("{}/v1/keys", app.url);

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..8 {
        let resp = noisy.get(&keys).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 && limited.is_none() {
            limited = Some(resp);
        }
    }
    assert_eq!(
        &statuses[..5],
        &[200; 5],
        "the burst is allowed: {statuses:?}"
    );
    assert_eq!(&statuses[5..], &[429; 3], "then limited: {statuses:?}");
    let limited = limited.unwrap();
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    assert_eq!(limited.headers()["content-type"], "application/json");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("retry"));

    // Other endpoints of the same client share its bucket.
    let check = noisy
        .get(format!("{}/v1/updates/WH-1/1.0.0", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 429);

    // Another address is served.
    let other = quiet.get(&keys).send().await.unwrap();
    assert_eq!(other.status(), 200);

    // Probes are exempt; admin is authenticated, so not limited per client.
    for _ in 0..3 {
        let h = noisy
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), 200);
        let m = noisy
            .get(format!("{}/metrics", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(m.status(), 200);
        let a = noisy
            .get(format!("{}/v1/admin/releases", app.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_told_apart_by_forwarded_for() {
    let app = spawn_app_with_server(
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "[limits]\nper_ip_rps = 0.2\nper_ip_burst = 2\n",
    )
    .await;
    let proxy = app.client_from(local(9));
    let keys = format!("{}/v1/keys", app.url);
    let get = |xff: &'static str| proxy.get(&keys).header("x-forwarded-for", xff).send();
    assert_eq!(get("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(get("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(get("198.51.100.1").await.unwrap().status(), 429);
    // Same /64: the same client.
    assert_eq!(get("2001:db8:1:2::1").await.unwrap().status(), 200);
    assert_eq!(get("2001:db8:1:2::2").await.unwrap().status(), 200);
    assert_eq!(get("2001:db8:1:2::3").await.unwrap().status(), 429);
    // The proxy's other clients are not affected.
    assert_eq!(get("198.51.100.2").await.unwrap().status(), 200);
    assert_eq!(get("2001:db8:1:3::1").await.unwrap().status(), 200);
    app.stop().await;
}

/// An upload whose body the test feeds by hand, so it stays in flight.
fn slow_upload(
    app: &support::app::TestApp,
) -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    tokio::task::JoinHandle<reqwest::Response>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let req = app
        .client
        .put(format!("{}/v1/admin/artifacts/WH-1/1.1.0", app.url))
        .bearer_auth(PUBLISHER_TOKEN)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream));
    (tx, tokio::spawn(async move { req.send().await.unwrap() }))
}

/// A batch check whose body the test feeds by hand from `client`, so it
/// stays in flight.
fn slow_batch(
    client: &reqwest::Client,
    url: &str,
) -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    tokio::task::JoinHandle<reqwest::Response>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let req = client
        .post(format!("{url}/v1/updates"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream));
    (tx, tokio::spawn(async move { req.send().await.unwrap() }))
}

const BATCH: &str = r#"{"items":[{"product":"WH-1","version":"1.0.0"}]}"#;

#[tokio::test]
async fn when_the_public_pool_is_full_the_answer_is_503_at_once_and_operators_still_act() {
    let app = spawn_app_with(
        "[limits]\nper_ip_rps = 0\nmax_in_flight = 1\nbody_read_timeout_secs = 30\n",
    )
    .await;
    let fw = firmware(1000, 1);
    app.publish(&Rel::new("WH-1", "1.1.0", 1, &fw), 100.0).await;
    let slow = app.client_from(local(2));
    let (tx, held) = slow_batch(&slow, &app.url);
    tx.send(Ok(BATCH.as_bytes()[..10].to_vec())).await.unwrap();

    // Wait for the slow batch to take the only slot, then ask for another.
    let other = app.client_from(local(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    let (resp, took) = loop {
        let started = Instant::now();
        let resp = other
            .post(format!("{}/v1/updates", app.url))
            .header("content-type", "application/json")
            .body(BATCH)
            .send()
            .await
            .unwrap();
        if resp.status() == 503 {
            break (resp, started.elapsed());
        }
        assert_eq!(resp.status(), 200);
        assert!(
            Instant::now() < deadline,
            "the slow batch never took the slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        took < Duration::from_millis(500),
        "503 took {took:?}: queued?"
    );
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "overloaded");

    // A plain check takes no slot; operators have their own pool; readiness
    // says why new clients should go elsewhere.
    assert_eq!(
        app.check("WH-1", "1.0.0").await["update"]["version"],
        "1.1.0"
    );
    let admin = other
        .get(format!("{}/v1/admin/releases", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    let ready = other
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["requests"]["status"], "saturated", "{ready}");
    assert_eq!(ready["state"]["status"], "ok", "{ready}");

    // The slow batch finishes normally and frees its slot.
    tx.send(Ok(BATCH.as_bytes()[10..].to_vec())).await.unwrap();
    drop(tx);
    let done = held.await.unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    let ready = other
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_stalled_upload_is_cut_off_and_frees_its_slot() {
    let app =
        spawn_app_with("[limits]\nper_ip_rps = 0\nmax_in_flight = 1\nbody_read_timeout_secs = 1\n")
            .await;
    let (tx, upload) = slow_upload(&app);
    tx.send(Ok(firmware(1000, 1))).await.unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(5), upload)
        .await
        .expect("the server gives up on a stalled body")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upload_interrupted", "{body}");
    drop(tx);
    let keys = format!("{}/v1/keys", app.url);
    assert_eq!(app.client.get(&keys).send().await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn slowloris_connections_do_not_stop_update_checks() {
    let app = spawn_app_with_server("header_read_timeout_secs = 2", "").await;
    let fw = firmware(4096, 7);
    app.publish(&Rel::new("WH-1", "1.1.0", 1, &fw), 100.0).await;

    let mut held = Vec::new();
    for i in 0..500u32 {
        let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        // A partial request line and headers, never finished.
        s.write_all(format!("GET /v1/updates/WH-1/1.0.{i} HTTP/1.1\r\nHost: x\r\n").as_bytes())
            .await
            .unwrap();
        held.push(s);
    }

    let started = Instant::now();
    let answer = app.check("WH-1", "1.0.0").await;
    let took = started.elapsed();
    assert_eq!(answer["update"]["version"], "1.1.0");
    assert!(took < Duration::from_secs(1), "the check took {took:?}");

    // The server drops the slow connections after its header timeout.
    let mut first = held.swap_remove(0);
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        loop {
            match first.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // a 408 may come first
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a slowloris connection outlived the header timeout"
    );
    // And still answers afterwards.
    let answer = app.check("WH-1", "1.0.0").await;
    assert_eq!(answer["update"]["version"], "1.1.0");
    drop(held);
    app.stop().await;
}
