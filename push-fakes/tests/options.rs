//! The fakes' options for firmcast's harder tests, checked over the wire:
//! FCM's send quota, slow providers, and an APNs endpoint without HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use firmcast_push_fakes::{ApnsFake, ApnsOptions, FcmFake, FcmOptions};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

// --- over the wire ------------------------------------------------------

type Answer = (StatusCode, HeaderMap, Bytes);

/// A request's answer, its body read.
async fn call(
    pending: impl std::future::Future<Output = hyper::Result<Response<Incoming>>>,
) -> Answer {
    let (parts, body) = pending.await.expect("an answer").into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

// --- FCM ----------------------------------------------------------------

async fn fcm_conn(addr: SocketAddr) -> http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An access token from the fake's OAuth endpoint, by the JWT-bearer grant
/// a service account makes.
async fn fcm_access_token(fake: &FcmFake) -> String {
    let account = fake.service_account();
    let key = RsaKeyPair::from_pkcs8(&pem_der(account["private_key"].as_str().unwrap())).unwrap();
    let now = unix_now();
    let assertion = jws(
        &json!({"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]}),
        &json!({
            "iss": account["client_email"],
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": fake.token_uri(),
            "iat": now,
            "exp": now + 3600,
        }),
        |input| {
            let mut signature = vec![0; key.public().modulus_len()];
            key.sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input,
                &mut signature,
            )
            .unwrap();
            signature
        },
    );
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", &assertion)
        .finish();
    let req = Request::post(fake.token_uri())
        .header("host", fake.addr().to_string())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let (status, _, body) = call(fcm_conn(fake.addr()).await.send_request(req)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn fcm_with(options: FcmOptions) -> (FcmFake, String) {
    let fake = FcmFake::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .unwrap();
    let bearer = fcm_access_token(&fake).await;
    (fake, bearer)
}

fn fcm_request(fake: &FcmFake, bearer: &str, token: &str) -> Request<Full<Bytes>> {
    let body = json!({"message": {
        "token": token,
        "notification": {"title": "Buds 2.0.0", "body": "Buds 2.0.0: better."},
        "data": {"product": "Buds", "version": "2.0.0"},
    }});
    Request::post(format!(
        "{}/v1/projects/{}/messages:send",
        fake.base_url(),
        fake.options().project_id
    ))
    .header("host", fake.addr().to_string())
    .header(AUTHORIZATION, format!("Bearer {bearer}"))
    .header(CONTENT_TYPE, "application/json")
    .body(Full::new(Bytes::from(body.to_string())))
    .unwrap()
}

// --- FCM quota ----------------------------------------------------------

/// Sleep until `margin` past the next wall-clock second: a quota window
/// then has `1s - margin` left, ample for a burst of local requests.
async fn next_second(margin: Duration) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(Duration::from_secs(1) - into + margin).await;
    unix_now()
}

fn assert_quota_exceeded((status, headers, body): &Answer) {
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers.get(RETRY_AFTER).unwrap(), "1");
    let body: Value = serde_json::from_slice(body).unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], 429);
    assert_eq!(error["status"], "RESOURCE_EXHAUSTED");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("Quota exceeded"));
    assert_eq!(
        error["details"],
        json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "QUOTA_EXCEEDED",
        }])
    );
}

#[tokio::test]
async fn fcm_quota_refuses_the_send_past_the_limit_until_the_next_second() {
    let (fake, bearer) = fcm_with(FcmOptions {
        max_per_second: Some(50),
        ..FcmOptions::default()
    })
    .await;
    let mut conn = fcm_conn(fake.addr()).await;

    let second = next_second(Duration::from_millis(20)).await;
    for i in 0..50 {
        let req = fcm_request(&fake, &bearer, &format!("tok-{i}"));
        let (status, _, body) = call(conn.send_request(req)).await;
        assert_eq!(status, StatusCode::OK, "send {i}: {body:?}");
    }
    let refused = call(conn.send_request(fcm_request(&fake, &bearer, "tok-50"))).await;
    let again = call(conn.send_request(fcm_request(&fake, &bearer, "tok-51"))).await;
    assert_eq!(unix_now(), second, "the burst must fit in one second");
    assert_quota_exceeded(&refused);
    assert_quota_exceeded(&again);
    // Refused sends were received, but are no deliveries.
    assert_eq!(fake.requests_for("tok-50"), 1);
    assert_eq!(fake.delivered_to("tok-50"), 0);
    assert_eq!(fake.delivery_count(), 50);

    next_second(Duration::from_millis(20)).await;
    let (status, _, body) = call(conn.send_request(fcm_request(&fake, &bearer, "tok-50"))).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(fake.delivered_to("tok-50"), 1);
    assert_eq!(fake.delivery_count(), 51);
    assert_eq!(fake.quota_rejections(), 2);
    assert_eq!(fake.max_accepted_in_one_second(), 50);
    assert_eq!(fake.send_requests(), 53);
}

#[tokio::test]
async fn fcm_quota_is_shared_by_every_sender() {
    let (fake, bearer) = fcm_with(FcmOptions {
        max_per_second: Some(50),
        ..FcmOptions::default()
    })
    .await;
    let (a, b) = (fcm_conn(fake.addr()).await, fcm_conn(fake.addr()).await);

    /// 40 sends on one connection; how many were accepted.
    async fn burst(
        fake: &FcmFake,
        bearer: &str,
        name: &str,
        mut conn: http1::SendRequest<Full<Bytes>>,
    ) -> usize {
        let mut ok = 0;
        for i in 0..40 {
            let req = fcm_request(fake, bearer, &format!("{name}-{i}"));
            let answer = call(conn.send_request(req)).await;
            if answer.0 == StatusCode::OK {
                ok += 1;
            } else {
                assert_quota_exceeded(&answer);
            }
        }
        ok
    }

    let second = next_second(Duration::from_millis(20)).await;
    let (ok_a, ok_b) = tokio::join!(burst(&fake, &bearer, "a", a), burst(&fake, &bearer, "b", b));
    assert_eq!(unix_now(), second, "the bursts must fit in one second");
    assert_eq!(ok_a + ok_b, 50, "a: {ok_a}, b: {ok_b}");
    assert_eq!(fake.delivery_count(), 50);
    assert_eq!(fake.quota_rejections(), 30);
    assert_eq!(fake.max_accepted_in_one_second(), 50);
}

#[tokio::test]
async fn fcm_without_a_quota_counts_nothing_and_refuses_nothing() {
    let (fake, bearer) = fcm_with(FcmOptions::default()).await;
    let mut conn = fcm_conn(fake.addr()).await;
    for i in 0..100 {
        let req = fcm_request(&fake, &bearer, &format!("t{i}"));
        assert_eq!(call(conn.send_request(req)).await.0, StatusCode::OK);
    }
    assert_eq!(fake.quota_rejections(), 0);
    assert_eq!(fake.max_accepted_in_one_second(), 0);
}

// --- FCM answer delay ---------------------------------------------------

#[tokio::test]
async fn fcm_answer_delay_holds_every_send() {
    let delay = Duration::from_millis(300);
    let (fake, bearer) = fcm_with(FcmOptions {
        answer_delay: delay,
        ..FcmOptions::default()
    })
    .await;

    let mut conn = fcm_conn(fake.addr()).await;
    let started = Instant::now();
    let pending = tokio::spawn(call(
        conn.send_request(fcm_request(&fake, &bearer, "slow-1")),
    ));
    // Counted on arrival, delivered only after the delay.
    tokio::time::sleep(delay / 3).await;
    assert_eq!(fake.send_requests(), 1);
    assert_eq!(fake.delivery_count(), 0);
    assert_eq!(pending.await.unwrap().0, StatusCode::OK);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(fake.delivered_to("slow-1"), 1);

    // Concurrent sends wait side by side, not one after another.
    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..5 {
        let mut conn = fcm_conn(fake.addr()).await;
        let req = fcm_request(&fake, &bearer, &format!("slow-batch-{i}"));
        sends.spawn(async move { call(conn.send_request(req)).await.0 });
    }
    while let Some(status) = sends.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let took = started.elapsed();
    assert!(took >= delay && took < delay * 4, "{took:?}");
    assert_eq!(fake.delivery_count(), 6);
}

// --- APNs ---------------------------------------------------------------

async fn apns_tls(fake: &ApnsFake, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pem_der(fake.ca_pem())))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(fake.addr()).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the TLS handshake completes")
}

async fn apns_conn(fake: &ApnsFake) -> http2::SendRequest<Full<Bytes>> {
    let tls = apns_tls(fake, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A provider token signed with the fake's team key.
fn apns_jwt(fake: &ApnsFake) -> String {
    let rng = SystemRandom::new();
    let p8 = pem_der(&fake.key().p8_pem());
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &p8, &rng).unwrap();
    jws(
        &json!({"alg": "ES256", "kid": fake.key_id()}),
        &json!({"iss": fake.team_id(), "iat": unix_now()}),
        |input| key.sign(&rng, input).unwrap().as_ref().to_vec(),
    )
}

fn apns_request(fake: &ApnsFake, jwt: &str, token: &str) -> Request<Full<Bytes>> {
    Request::post(format!("{}/3/device/{token}", fake.base_url()))
        .header(AUTHORIZATION, format!("bearer {jwt}"))
        .header("apns-topic", fake.topic())
        .header("apns-push-type", "alert")
        .body(Full::new(Bytes::from_static(
            br#"{"aps":{"alert":"Buds 2.0.0"}}"#,
        )))
        .unwrap()
}

fn device_token(i: u8) -> String {
    format!("{i:02x}").repeat(32)
}

// --- APNs answer delay --------------------------------------------------

#[tokio::test]
async fn apns_answer_delay_holds_every_send() {
    let delay = Duration::from_millis(300);
    let options = ApnsOptions {
        answer_delay: delay,
        ..ApnsOptions::default()
    };
    let fake = ApnsFake::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .unwrap();
    let jwt = apns_jwt(&fake);
    let mut conn = apns_conn(&fake).await;

    let started = Instant::now();
    let req = apns_request(&fake, &jwt, &device_token(1));
    let (status, _, body) = call(conn.send_request(req)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());

    // A batch on one connection: every stream waits, side by side.
    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 2..12 {
        let mut conn = conn.clone();
        let req = apns_request(&fake, &jwt, &device_token(i));
        sends.spawn(async move { call(conn.send_request(req)).await.0 });
    }
    tokio::time::sleep(delay / 3).await;
    assert_eq!(fake.total_requests(), 11, "counted on arrival");
    assert_eq!(fake.delivery_count(), 1, "delivered after the delay");
    while let Some(status) = sends.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let took = started.elapsed();
    assert!(took >= delay && took < delay * 4, "{took:?}");
    assert_eq!(fake.delivery_count(), 11);
}

// --- APNs over HTTP/1.1 only --------------------------------------------

#[tokio::test]
async fn apns_http1_only_never_negotiates_h2() {
    let options = ApnsOptions {
        http1_only: true,
        ..ApnsOptions::default()
    };
    let fake = ApnsFake::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .unwrap();

    // A client offering both gets HTTP/1.1, and HTTP/1.1 gets refused.
    let tls = apns_tls(&fake, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("/3/device/{}", device_token(1)))
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let (status, _, body) = call(sender.send_request(req)).await;
    assert_eq!(status, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    assert!(String::from_utf8_lossy(&body).contains("HTTP/1.1 only"));

    // An h2-only client finishes the handshake with no protocol agreed; if
    // it tried HTTP/2 anyway, nothing answers it.
    let tls = apns_tls(&fake, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let attempt = async {
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        sender
            .send_request(apns_request(&fake, &apns_jwt(&fake), &device_token(2)))
            .await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .expect("refused, not hung");
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(fake.total_requests(), 0);
    assert_eq!(fake.connections(), 2);
}

#[tokio::test]
async fn apns_negotiates_h2_by_default() {
    // The same client as above, against the usual fake: h2 is chosen.
    let fake = ApnsFake::start().await.unwrap();
    let tls = apns_tls(&fake, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}
