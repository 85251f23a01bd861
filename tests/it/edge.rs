//! The edge against misbehaving clients, over real sockets: silent and
//! preface-only connections, idle HTTP/2, slow bodies from a few addresses,
//! early refusals read by clients that send their whole body first, request
//! hygiene (Host, odd Authorization bytes), sign-in throttling, conditional
//! downloads, and the sweep of uploads no release names.

use crate::support;

use std::net::IpAddr;
use std::time::{Duration, Instant};
use support::app::{firmware, spawn_app, spawn_app_with, spawn_app_with_server, Rel, ADMIN_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn local(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A TCP connection to `app` from `127.0.0.x`.
async fn connect_from(app: &support::app::TestApp, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(app.addr).await.unwrap()
}

/// Reads until the server closes (`Ok(bytes read)`) or `within` passes (`Err`).
async fn closed_within(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, Duration> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(within, read_all).await {
        Ok(()) => Ok(got),
        Err(_) => Err(started.elapsed()),
    }
}

/// Status code of the first HTTP/1.1 answer in `raw`.
fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

/// Sends `request` on a fresh connection and returns the raw answer.
async fn raw(app: &support::app::TestApp, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("the server answers and closes")
}

#[tokio::test]
async fn silent_and_preface_only_connections_are_closed_within_the_header_timeout() {
    let app = spawn_app_with_server("header_read_timeout_secs = 1", "").await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut prefaced = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        prefaced.push(s);
    }
    // Meanwhile everyone else is served.
    let health = app.client.get(format!("{}/healthz", app.url)).send().await;
    assert_eq!(health.unwrap().status(), 200);

    let started = Instant::now();
    for s in silent.iter_mut().chain(prefaced.iter_mut()) {
        // The header timeout, plus the watchdog's granularity and slack.
        let left = Duration::from_secs(4).saturating_sub(started.elapsed());
        let closed = closed_within(s, left).await;
        assert!(
            closed.is_ok(),
            "a silent connection is still open after {:?}",
            started.elapsed()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with_server("idle_timeout_secs = 1", "").await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let request = hyper::http::Request::get(format!("http://{}/healthz", app.addr))
        .body(())
        .unwrap();
    let (answer, _) = h2.send_request(request, true).unwrap();
    assert_eq!(answer.await.unwrap().status(), 200);
    // One request, then nothing (the client keeps its handle, so only the
    // server can end it): closed within two idle periods, not before one.
    let idle = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(4), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was never closed");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed early: {:?}",
        idle.elapsed()
    );
    drop(h2);
    app.stop().await;
}

/// Opens a public POST from `from` that declares 1000 bytes and sends 10.
async fn slow_post(app: &support::app::TestApp, from: IpAddr) -> TcpStream {
    let mut s = connect_from(app, from).await;
    s.write_all(
        b"POST /v1/push/subscriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"provider",
    )
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn slow_bodies_from_a_few_addresses_leave_everyone_else_served_and_are_cut_off() {
    let app = spawn_app_with(
        "[limits]\nper_ip_rps = 0\nmax_in_flight_per_client = 16\nbody_read_timeout_secs = 3\nbody_min_bytes_per_sec = 1024\n",
    )
    .await;
    let fw = firmware(1000, 1);
    app.publish(&Rel::new("WH-1", "1.1.0", 1, &fw), 100.0).await;

    let mut slow = Vec::new();
    for i in 0..160 {
        slow.push(slow_post(&app, local(10 + (i % 4) as u8)).await);
    }
    // Every address gets its 16 slots; the rest are refused at once.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let metrics = app
            .client
            .get(format!("{}/metrics", app.url))
            .send()
            .await
            .unwrap();
        let metrics = metrics.text().await.unwrap();
        if metrics.contains("firmcast_in_flight{pool=\"public\"} 64") {
            break;
        }
        assert!(Instant::now() < deadline, "never 64 in flight:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Others check, operators act and probes say ready, at once.
    let other = app.client_from(local(99));
    for _ in 0..20 {
        let started = Instant::now();
        let check = other
            .get(format!("{}/v1/updates/WH-1/1.0.0", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(check.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
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
    assert_eq!(ready.status(), 200);

    // The slow bodies are cut off: the refused ones at once with a 429, the
    // admitted ones with a 400 once they fall behind the pace.
    let started = Instant::now();
    let (mut refused, mut cut) = (0, 0);
    for s in &mut slow {
        let left = Duration::from_secs(8).saturating_sub(started.elapsed());
        let answer = closed_within(s, left)
            .await
            .expect("a slow body is still open");
        match status_of(&answer) {
            429 => refused += 1,
            400 => cut += 1,
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&answer)),
        }
    }
    assert_eq!((refused, cut), (96, 64));
    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("firmcast_in_flight{pool=\"public\"} 0"));
    app.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_by_the_minimum_rate_not_only_by_idle_time() {
    let app = spawn_app_with(
        "[limits]\nper_ip_rps = 0\nbody_read_timeout_secs = 2\nbody_min_bytes_per_sec = 1024\n",
    )
    .await;
    let mut s = slow_post(&app, local(7)).await;
    let started = Instant::now();
    // A byte every 500 ms never trips the 2 s idle timer; the rate does.
    let answer = loop {
        if let Ok(answer) = closed_within(&mut s, Duration::from_millis(500)).await {
            break answer;
        }
        let _ = s.write_all(b"x").await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the trickle was never cut off"
        );
    };
    assert_eq!(status_of(&answer), 400);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("too slowly"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    app.stop().await;
}

#[tokio::test]
async fn a_refused_upload_is_read_by_a_client_that_sends_everything_first() {
    let app = spawn_app().await;
    let script = format!(
        r#"
import http.client, socket
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=20)
c.connect()
# A small send buffer: the body cannot hide in the kernel before the answer.
c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
c.request("PUT", "/v1/admin/artifacts/P/1.0.0", body=b"x" * 2_000_000,
          headers={{"Content-Type": "application/octet-stream"}})
r = c.getresponse()
print(r.status)
print(r.read().decode())
"#,
        port = app.addr.port()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("401"), "{stdout}");
    assert!(
        lines.next().unwrap().contains("\"unauthorized\""),
        "{stdout}"
    );
    app.stop().await;
}

#[tokio::test]
async fn http11_requests_need_exactly_one_host() {
    let app = spawn_app().await;
    let none = raw(&app, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&none), 400);
    assert!(String::from_utf8_lossy(&none).contains("bad_host"));
    let two = raw(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&two), 400);
    let one = raw(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&one), 200);
    // HTTP/1.0 has no Host rule.
    let old = raw(&app, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&old), 200);
    app.stop().await;
}

#[tokio::test]
async fn odd_authorization_bytes_are_a_401_and_repeated_failures_a_429() {
    let app = spawn_app().await;
    let odd = raw(
        &app,
        b"GET /v1/admin/releases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3\xa9t\xe9\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&odd), 401, "{}", String::from_utf8_lossy(&odd));

    let guesser = app.client_from(local(66));
    let releases = format!("{}/v1/admin/releases", app.url);
    let mut statuses = Vec::new();
    for i in 0..12 {
        let resp = guesser
            .get(&releases)
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    // The odd header above was the first failure from 127.0.0.1, not this one.
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429; 2], "{statuses:?}");
    let throttled = guesser
        .get(&releases)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.status(), 429, "even a right token waits");
    assert!(throttled.headers().contains_key("retry-after"));
    let operator = app.client_from(local(67));
    let ok = operator
        .get(&releases)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn artifacts_answer_conditional_requests() {
    let app = spawn_app().await;
    let fw = firmware(5000, 3);
    app.publish(&Rel::new("P", "1.0.0", 1, &fw), 100.0).await;
    let url = format!("{}/v1/artifacts/P/1.0.0", app.url);
    let etag = format!("\"{}\"", firmcast_signing::digest::sha256_hex(&fw));
    let get = |h: &'static str, v: String| app.client.get(&url).header(h, v).send();

    let same = get("if-none-match", etag.clone()).await.unwrap();
    assert_eq!(same.status(), 304);
    assert_eq!(same.headers()["etag"], etag.as_str());
    assert!(same.bytes().await.unwrap().is_empty());
    let other = get("if-none-match", "\"abc\"".into()).await.unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(other.bytes().await.unwrap(), fw);
    let listed = get("if-none-match", format!("\"abc\", W/{etag}"))
        .await
        .unwrap();
    assert_eq!(listed.status(), 304);

    let matching = get("if-match", etag.clone()).await.unwrap();
    assert_eq!(matching.status(), 200);
    let changed = get("if-match", "\"abc\"".into()).await.unwrap();
    assert_eq!(changed.status(), 412);
    let body: serde_json::Value = changed.json().await.unwrap();
    assert_eq!(body["error"], "precondition_failed");
    assert!(body["message"].as_str().unwrap().contains("again"));
    app.stop().await;
}

#[tokio::test]
async fn uploads_no_release_names_are_swept_after_their_ttl() {
    let app = spawn_app().await;
    let published = firmware(3000, 1);
    let orphan = firmware(3000, 2);
    app.publish(&Rel::new("P", "1.0.0", 1, &published), 100.0)
        .await;
    let up = app.upload("P", "1.1.0", &orphan).await;
    assert_eq!(up.status(), 201);
    let (releases, blobs) = (&app.api.releases, &app.api.blobs);
    let sha = |b: &[u8]| firmcast_signing::digest::sha256_hex(b);
    let stored = || async {
        let mut all: Vec<String> = blobs
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.0)
            .collect();
        all.sort();
        all
    };

    // Too new: nothing goes.
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let n = firmcast::blob::gc::sweep(releases, &**blobs, an_hour_ago)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // Past its TTL the orphan goes, the published artifact stays.
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    let n = firmcast::blob::gc::sweep(releases, &**blobs, later)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(stored().await, vec![sha(&published)]);
    let still = app
        .client
        .get(format!("{}/v1/artifacts/P/1.0.0", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);

    // Uploading bytes again counts as new: the sweep counts from then.
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.upload("P", "1.0.0", &published).await.status(), 201);
    assert_eq!(app.upload("P", "1.1.0", &orphan).await.status(), 201);
    let n = firmcast::blob::gc::sweep(releases, &**blobs, before)
        .await
        .unwrap();
    assert_eq!(n, 0, "a fresh re-upload is not swept");
    app.stop().await;
}
