//! The APNs and FCM senders against local fakes that speak the real wire
//! protocols (APNs: HTTP/2 over TLS with ES256 provider tokens; FCM: HTTP v1
//! with OAuth2 JWT-bearer access tokens): every classification rule of
//! DESIGN.md "Push providers", token sharing and refresh.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use firmcast::push::{
    send_with_retry, ApnsProvider, ApnsSettings, FcmProvider, FcmSettings, Provider, PushMessage,
    RetryPolicy, SendOutcome,
};
use firmcast_push_fakes::{
    ApnsFake, ApnsFault, ApnsKey, FcmFake, FcmFault, FcmOptions, ServiceAccountKey,
};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

fn apns_token(n: u32) -> String {
    format!("{n:064x}")
}

fn fcm_token(n: u32) -> String {
    format!("fcm-token-{n:04}:APA91b{}", "x".repeat(100))
}

fn notice(token: &str) -> PushMessage {
    PushMessage::update_available(
        token,
        "WH-1000XM5",
        "2.2.0",
        false,
        "WH-1000XM5 2.2.0",
        "Improves call quality.",
    )
}

fn apns_settings(fake: &ApnsFake, dir: &Path, key: Option<&ApnsKey>) -> ApnsSettings {
    let key_file = dir.join("apns.p8");
    let ca_file = dir.join("ca.pem");
    match key {
        Some(key) => key.write_p8(&key_file).unwrap(),
        None => fake.write_key(&key_file).unwrap(),
    }
    fake.write_ca(&ca_file).unwrap();
    ApnsSettings {
        enabled: true,
        base_url: fake.base_url(),
        key_file,
        key_id: fake.key_id().to_owned(),
        team_id: fake.team_id().to_owned(),
        topic: fake.topic().to_owned(),
        ca_file,
        ..ApnsSettings::default()
    }
}

async fn apns() -> (ApnsFake, ApnsProvider, TempDir) {
    apns_with_connections(ApnsSettings::default().connections).await
}

async fn apns_with_connections(connections: usize) -> (ApnsFake, ApnsProvider, TempDir) {
    let fake = ApnsFake::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = ApnsSettings {
        connections,
        ..apns_settings(&fake, dir.path(), None)
    };
    let provider = ApnsProvider::from_settings(&settings).unwrap();
    (fake, provider, dir)
}

fn fcm_provider(fake: &FcmFake, dir: &Path, account: &serde_json::Value) -> FcmProvider {
    let service_account_file = dir.join("fcm.json");
    std::fs::write(&service_account_file, account.to_string()).unwrap();
    FcmProvider::from_settings(&FcmSettings {
        enabled: true,
        base_url: fake.base_url(),
        service_account_file,
        ..FcmSettings::default()
    })
    .unwrap()
}

async fn fcm_with(options: FcmOptions) -> (FcmFake, FcmProvider, TempDir) {
    let fake = FcmFake::start_with(([127, 0, 0, 1], 0).into(), options)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let provider = fcm_provider(&fake, dir.path(), &fake.service_account());
    (fake, provider, dir)
}

async fn fcm() -> (FcmFake, FcmProvider, TempDir) {
    fcm_with(FcmOptions::default()).await
}

fn assert_sent(outcome: &SendOutcome) {
    assert!(
        matches!(outcome, SendOutcome::Sent { id: Some(_) }),
        "expected Sent with an id, got {outcome:?}"
    );
}

fn assert_dead(outcome: &SendOutcome, reason_part: &str) {
    match outcome {
        SendOutcome::DeadToken { reason, .. } if reason.contains(reason_part) => {}
        other => panic!("expected DeadToken ({reason_part}), got {other:?}"),
    }
}

fn assert_retry(outcome: &SendOutcome, after: Option<u64>) {
    match outcome {
        SendOutcome::Retry { after: got, .. } if *got == after.map(Duration::from_secs) => {}
        other => panic!("expected Retry {{ after: {after:?} s }}, got {other:?}"),
    }
}

fn assert_fatal(outcome: &SendOutcome, reason_part: &str) {
    match outcome {
        SendOutcome::Fatal { reason, .. } if reason.contains(reason_part) => {}
        other => panic!("expected Fatal ({reason_part}), got {other:?}"),
    }
}

async fn send_concurrently(provider: Arc<dyn Provider>, tokens: Vec<String>) -> Vec<SendOutcome> {
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.send(&notice(&token)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

// ------------------------------------------------------------------- APNs

#[tokio::test]
async fn apns_sends_over_http2_with_apple_headers_and_a2_payload() {
    let (fake, provider, _dir) = apns().await;
    assert_eq!(provider.name(), "apns");
    let token = apns_token(1);
    let msg = notice(&token);
    let outcome = provider.send(&msg).await;
    assert_sent(&outcome);

    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            id: Some(d.apns_id.clone())
        }
    );
    assert_eq!(d.token, token);
    assert_eq!(d.topic, fake.topic());
    assert_eq!(d.push_type, "alert");
    assert_eq!(d.priority.as_deref(), Some("5"));
    assert_eq!(d.expiration, Some(msg.notice.expires_at.timestamp() as u64));
    assert_eq!(d.collapse_id.as_deref(), Some("fw.WH-1000XM5"));
    assert_eq!(d.payload["aps"]["alert"]["title"], "WH-1000XM5 2.2.0");
    assert_eq!(d.payload["aps"]["alert"]["body"], "Improves call quality.");
    assert_eq!(d.payload["product"], "WH-1000XM5");
    assert_eq!(d.payload["version"], "2.2.0");
    assert_eq!(d.payload["critical"], "false");

    // A duplicated notice carries the same per-product collapse id, so the
    // phone shows it once; another product's notice has its own.
    assert_sent(&provider.send(&msg).await);
    let other = PushMessage::update_available(&token, "WF-1000XM5", "3.0.0", true, "t", "b");
    assert_sent(&provider.send(&other).await);
    assert_eq!(fake.delivered_with_collapse_id("fw.WH-1000XM5"), 2);
    assert_eq!(fake.delivered_with_collapse_id("fw.WF-1000XM5"), 1);
    assert_eq!(fake.deliveries()[2].priority.as_deref(), Some("10"));
}

#[tokio::test]
async fn apns_410_unregistered_is_a_dead_token_with_its_timestamp() {
    let (fake, provider, _dir) = apns().await;
    let token = apns_token(2);
    let dead_at = DateTime::parse_from_rfc3339("2026-05-01T12:00:00.250Z")
        .unwrap()
        .with_timezone(&Utc);
    fake.fail_always(
        &token,
        ApnsFault::Unregistered {
            timestamp_ms: dead_at.timestamp_millis(),
        },
    );
    let outcome = provider.send(&notice(&token)).await;
    assert_eq!(
        outcome,
        SendOutcome::DeadToken {
            code: "Unregistered".into(),
            reason: "Unregistered".into(),
            since: Some(dead_at)
        }
    );
    // Registered before APNs declared it dead: delete. Re-registered after: keep.
    assert!(outcome.should_delete_token(dead_at - chrono::Duration::days(3)));
    assert!(!outcome.should_delete_token(dead_at + chrono::Duration::minutes(1)));
    assert_eq!(fake.requests_for(&token), 1, "a dead token is not retried");
}

#[tokio::test]
async fn apns_400_bad_device_token_is_a_dead_token() {
    let (fake, provider, _dir) = apns().await;
    let token = apns_token(3);
    fake.fail_always(&token, ApnsFault::BadDeviceToken);
    let outcome = provider.send(&notice(&token)).await;
    assert_dead(&outcome, "BadDeviceToken");
    assert!(outcome.should_delete_token(Utc::now()));

    // A token that is not hex never leaves the process.
    let outcome = provider.send(&notice("../../3/device/x")).await;
    assert_dead(&outcome, "malformed");
    assert_eq!(fake.total_requests(), 1);
}

#[tokio::test]
async fn apns_429_and_5xx_are_retried_honouring_retry_after() {
    let (fake, provider, _dir) = apns().await;
    let cases = [
        (
            ApnsFault::TooManyRequests {
                retry_after: Some(7),
            },
            Some(7),
        ),
        (ApnsFault::TooManyRequests { retry_after: None }, None),
        (ApnsFault::InternalServerError, None),
        (
            ApnsFault::ServiceUnavailable {
                retry_after: Some(3),
            },
            Some(3),
        ),
        (ApnsFault::ServiceUnavailable { retry_after: None }, None),
    ];
    for (i, (fault, after)) in cases.into_iter().enumerate() {
        let token = apns_token(100 + i as u32);
        fake.fail_once(&token, fault);
        assert_retry(&provider.send(&notice(&token)).await, after);
        // The fault was transient: the next send goes through.
        assert_sent(&provider.send(&notice(&token)).await);
    }
}

#[tokio::test]
async fn apns_retry_helper_waits_for_retry_after_then_delivers() {
    let (fake, provider, _dir) = apns().await;
    let token = apns_token(4);
    fake.fail_once(
        &token,
        ApnsFault::ServiceUnavailable {
            retry_after: Some(1),
        },
    );
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    };
    let start = Instant::now();
    let delivery = send_with_retry(&provider, &notice(&token), &policy).await;
    assert_sent(&delivery.outcome);
    assert_eq!(delivery.attempts, 2);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert_eq!(fake.requests_for(&token), 2);
    assert_eq!(fake.delivered_to(&token), 1);
}

#[tokio::test]
async fn apns_payload_too_large_is_fatal_and_not_retried() {
    let (fake, provider, _dir) = apns().await;
    let token = apns_token(5);
    let mut msg = notice(&token);
    msg.notice.body = "x".repeat(5000);
    let delivery = send_with_retry(&provider, &msg, &RetryPolicy::default()).await;
    assert_fatal(&delivery.outcome, "413 PayloadTooLarge");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(fake.requests_for(&token), 1);
    assert_eq!(fake.delivered_to(&token), 0);
}

#[tokio::test]
async fn apns_bad_credentials_and_topic_are_fatal() {
    let fake = ApnsFake::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = apns_token(6);

    // A key the team does not have.
    let rogue = ApnsKey::generate();
    let settings = apns_settings(&fake, dir.path(), Some(&rogue));
    let provider = ApnsProvider::from_settings(&settings).unwrap();
    assert_fatal(
        &provider.send(&notice(&token)).await,
        "403 InvalidProviderToken",
    );

    // The right key under another key id.
    let mut settings = apns_settings(&fake, dir.path(), None);
    settings.key_id = "OTHERKEYID".into();
    let provider = ApnsProvider::from_settings(&settings).unwrap();
    assert_fatal(
        &provider.send(&notice(&token)).await,
        "403 InvalidProviderToken",
    );

    // A topic the key may not push to.
    let mut settings = apns_settings(&fake, dir.path(), None);
    settings.topic = "com.example.other".into();
    let provider = ApnsProvider::from_settings(&settings).unwrap();
    assert_fatal(&provider.send(&notice(&token)).await, "400 TopicDisallowed");

    assert_eq!(fake.delivered_to(&token), 0);
}

#[tokio::test]
async fn apns_expired_provider_token_is_refreshed_once_and_retried_once() {
    let (fake, provider, _dir) = apns().await;
    let token = apns_token(7);
    assert_sent(&provider.send(&notice(&apns_token(70))).await);
    assert_eq!(provider.tokens_signed(), 1);

    fake.fail_once(&token, ApnsFault::ExpiredProviderToken);
    assert_sent(&provider.send(&notice(&token)).await);
    assert_eq!(fake.requests_for(&token), 2, "one retry after the refresh");
    assert_eq!(provider.tokens_signed(), 2, "refreshed exactly once");
    assert_eq!(fake.distinct_jwts(), 2);

    // The refreshed token is the shared one from now on.
    assert_sent(&provider.send(&notice(&apns_token(71))).await);
    assert_eq!(provider.tokens_signed(), 2);
    assert_eq!(fake.distinct_jwts(), 2);

    // Still expired after the refresh: no loop, a fatal error (clock or key).
    let token = apns_token(72);
    fake.fail_once(&token, ApnsFault::ExpiredProviderToken);
    fake.fail_once(&token, ApnsFault::ExpiredProviderToken);
    assert_fatal(
        &provider.send(&notice(&token)).await,
        "ExpiredProviderToken",
    );
    assert_eq!(fake.requests_for(&token), 2);
    assert_eq!(provider.tokens_signed(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_concurrent_sends_seeing_an_expired_token_refresh_it_once() {
    let (fake, provider, _dir) = apns().await;
    let provider = Arc::new(provider);
    assert_sent(&provider.send(&notice(&apns_token(900))).await);
    // 20 sends in flight with the shared token, held up by the network ...
    let tokens: Vec<String> = (0..20).map(|i| apns_token(1000 + i)).collect();
    for token in &tokens {
        fake.fail_once(token, ApnsFault::Delay(Duration::from_secs(1)));
    }
    let in_flight = tokio::spawn(send_concurrently(provider.clone(), tokens));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... while APNs starts calling that token expired.
    fake.fail_once(&apns_token(901), ApnsFault::ExpiredProviderToken);
    assert_sent(&provider.send(&notice(&apns_token(901))).await);
    let outcomes = in_flight.await.unwrap();
    assert!(outcomes.iter().all(SendOutcome::is_sent), "{outcomes:?}");
    for i in 0..20 {
        assert_eq!(fake.requests_for(&apns_token(1000 + i)), 2);
    }
    // 21 sends were told "expired"; one new token was signed for all of them.
    assert_eq!(provider.tokens_signed(), 2);
    assert_eq!(fake.distinct_jwts(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_jwt_is_shared_by_100_concurrent_sends_on_the_configured_connections() {
    let (fake, provider, _dir) = apns_with_connections(3).await;
    let provider = Arc::new(provider);
    let tokens: Vec<String> = (0..100).map(|i| apns_token(2000 + i)).collect();
    let outcomes = send_concurrently(provider.clone(), tokens.clone()).await;
    assert!(outcomes.iter().all(SendOutcome::is_sent), "{outcomes:?}");
    assert_eq!(fake.deliveries().len(), 100);
    assert_eq!(fake.distinct_jwts(), 1, "the provider token was re-signed");
    assert_eq!(provider.tokens_signed(), 1);
    assert_eq!(
        fake.connections(),
        3,
        "sends should share the 3 configured HTTP/2 connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_a_slow_answer_does_not_hold_up_other_streams() {
    let (fake, provider, _dir) = apns_with_connections(1).await;
    let provider: Arc<dyn Provider> = Arc::new(provider);
    assert_sent(&provider.send(&notice(&apns_token(3000))).await);
    let slow = apns_token(3001);
    fake.fail_once(&slow, ApnsFault::Delay(Duration::from_secs(2)));
    let slow_task = {
        let provider = provider.clone();
        tokio::spawn(async move { provider.send(&notice(&slow)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    assert_sent(&provider.send(&notice(&apns_token(3002))).await);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_sent(&slow_task.await.unwrap());
    assert_eq!(fake.connections(), 1);
}

// -------------------------------------------------------------------- FCM

#[tokio::test]
async fn fcm_sends_a_v1_message_with_an_oauth_access_token() {
    let (fake, provider, _dir) = fcm().await;
    assert_eq!(provider.name(), "fcm");
    let token = fcm_token(1);
    let msg = notice(&token).with_ttl(Duration::from_secs(3600));
    let outcome = provider.send(&msg).await;
    assert_sent(&outcome);
    assert_eq!(fake.token_requests(), 1);

    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            id: Some(d.name.clone())
        }
    );
    assert!(d.name.starts_with("projects/firmcast-test/messages/"));
    let m = &d.message;
    assert_eq!(m["token"], token.as_str());
    assert_eq!(m["notification"]["title"], "WH-1000XM5 2.2.0");
    assert_eq!(m["notification"]["body"], "Improves call quality.");
    assert_eq!(
        m["data"],
        serde_json::json!({"product": "WH-1000XM5", "version": "2.2.0", "critical": "false"})
    );
    let ttl: u64 = m["android"]["ttl"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    assert_eq!(m["android"]["priority"], "NORMAL");
    assert_eq!(m["android"]["collapse_key"], "fw.WH-1000XM5");
    assert_eq!(m["android"]["notification"]["tag"], "fw.WH-1000XM5");
    assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "fw.WH-1000XM5");
    assert_eq!(m["apns"]["headers"]["apns-push-type"], "alert");

    assert_sent(&provider.send(&msg).await);
    assert_eq!(fake.delivered_with_collapse_key("fw.WH-1000XM5"), 2);
}

#[tokio::test]
async fn fcm_unregistered_sender_id_mismatch_and_invalid_token_are_dead() {
    let (fake, provider, _dir) = fcm().await;
    let cases = [
        (FcmFault::Unregistered, "UNREGISTERED"),
        (FcmFault::SenderIdMismatch, "SENDER_ID_MISMATCH"),
        (
            FcmFault::InvalidRegistration,
            "not a valid FCM registration token",
        ),
    ];
    for (i, (fault, reason)) in cases.into_iter().enumerate() {
        let token = fcm_token(10 + i as u32);
        fake.fail_always(&token, fault);
        let delivery = send_with_retry(&provider, &notice(&token), &RetryPolicy::default()).await;
        assert_dead(&delivery.outcome, reason);
        assert!(matches!(
            delivery.outcome,
            SendOutcome::DeadToken { since: None, .. }
        ));
        assert!(delivery.outcome.should_delete_token(Utc::now()));
        assert_eq!(delivery.attempts, 1);
        assert_eq!(fake.requests_for(&token), 1);
    }
}

#[tokio::test]
async fn fcm_quota_unavailable_and_internal_are_retried_honouring_retry_after() {
    let (fake, provider, _dir) = fcm().await;
    let cases = [
        (
            FcmFault::QuotaExceeded {
                retry_after: Some(9),
            },
            Some(9),
        ),
        (
            FcmFault::Unavailable {
                retry_after: Some(2),
            },
            Some(2),
        ),
        (FcmFault::Unavailable { retry_after: None }, None),
        (FcmFault::Internal, None),
    ];
    for (i, (fault, after)) in cases.into_iter().enumerate() {
        let token = fcm_token(20 + i as u32);
        fake.fail_once(&token, fault);
        assert_retry(&provider.send(&notice(&token)).await, after);
        assert_sent(&provider.send(&notice(&token)).await);
    }
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn fcm_retry_helper_waits_for_retry_after_then_delivers() {
    let (fake, provider, _dir) = fcm().await;
    let token = fcm_token(30);
    fake.fail_once(
        &token,
        FcmFault::QuotaExceeded {
            retry_after: Some(1),
        },
    );
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    };
    let start = Instant::now();
    let delivery = send_with_retry(&provider, &notice(&token), &policy).await;
    assert_sent(&delivery.outcome);
    assert_eq!(delivery.attempts, 2);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert_eq!(fake.delivered_to(&token), 1);
}

#[tokio::test]
async fn fcm_payload_errors_are_fatal() {
    let (fake, provider, _dir) = fcm().await;
    let token = fcm_token(40);
    let mut too_big = notice(&token);
    too_big.notice.data.insert("notes".into(), "x".repeat(5000));
    assert_fatal(&provider.send(&too_big).await, "INVALID_ARGUMENT");
    let mut reserved = notice(&token);
    reserved.notice.data.insert("from".into(), "me".into());
    assert_fatal(&provider.send(&reserved).await, "INVALID_ARGUMENT");
    assert_eq!(fake.delivered_to(&token), 0);
}

#[tokio::test]
async fn fcm_bad_credentials_are_fatal() {
    let (fake, _provider, dir) = fcm().await;
    let token = fcm_token(50);

    // A key Google does not know for this account: the token endpoint refuses.
    let rogue = tokio::task::spawn_blocking(ServiceAccountKey::generate)
        .await
        .unwrap();
    let provider = fcm_provider(&fake, dir.path(), &fake.service_account_with_key(&rogue));
    assert_fatal(&provider.send(&notice(&token)).await, "invalid_grant");
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(fake.send_requests(), 0);

    // A project the account may not send for: 403 PERMISSION_DENIED.
    let mut account = fake.service_account();
    account["project_id"] = "someone-elses-project".into();
    let provider = fcm_provider(&fake, dir.path(), &account);
    assert_fatal(&provider.send(&notice(&token)).await, "403");

    // The APNs credentials uploaded to Firebase were refused.
    let provider = fcm_provider(&fake, dir.path(), &fake.service_account());
    fake.fail_always(&token, FcmFault::ThirdPartyAuthError);
    assert_fatal(
        &provider.send(&notice(&token)).await,
        "THIRD_PARTY_AUTH_ERROR",
    );
    assert_eq!(fake.delivered_to(&token), 0);
}

#[tokio::test]
async fn fcm_401_refreshes_the_access_token_once() {
    let (fake, provider, _dir) = fcm().await;
    assert_sent(&provider.send(&notice(&fcm_token(60))).await);
    fake.revoke_access_tokens();
    assert_sent(&provider.send(&notice(&fcm_token(61))).await);
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.send_requests(), 3, "one 401, one retry");
    assert_eq!(provider.access_tokens_fetched(), 2);

    // Tokens that never work (here: issued already expired): no loop.
    let (fake, provider, _dir) = fcm_with(FcmOptions {
        access_token_ttl: Duration::ZERO,
        ..FcmOptions::default()
    })
    .await;
    assert_fatal(&provider.send(&notice(&fcm_token(62))).await, "401");
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.send_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_access_token_is_cached_and_shared_by_100_concurrent_sends() {
    let (fake, provider, _dir) = fcm().await;
    let provider = Arc::new(provider);
    let tokens: Vec<String> = (0..100).map(|i| fcm_token(100 + i)).collect();
    let outcomes = send_concurrently(provider.clone(), tokens).await;
    assert!(outcomes.iter().all(SendOutcome::is_sent), "{outcomes:?}");
    assert_eq!(fake.deliveries().len(), 100);
    assert_eq!(fake.token_requests(), 1, "one access token for all sends");
    assert_eq!(fake.distinct_access_tokens_used(), 1);
    assert_eq!(provider.access_tokens_fetched(), 1);
}

#[tokio::test]
async fn fcm_access_token_is_renewed_shortly_before_it_expires() {
    let (fake, provider, _dir) = fcm_with(FcmOptions {
        access_token_ttl: Duration::from_secs(4),
        ..FcmOptions::default()
    })
    .await;
    assert_sent(&provider.send(&notice(&fcm_token(70))).await);
    assert_sent(&provider.send(&notice(&fcm_token(71))).await);
    assert_eq!(fake.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_sent(&provider.send(&notice(&fcm_token(72))).await);
    assert_eq!(fake.token_requests(), 2, "renewed before expiry");
    assert_eq!(fake.send_requests(), 3, "without a 401 round trip");
}

#[tokio::test]
async fn fcm_unreachable_token_endpoint_is_retried() {
    let (fake, _provider, dir) = fcm().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut account = fake.service_account();
    account["token_uri"] = format!("http://127.0.0.1:{port}/token").into();
    let provider = fcm_provider(&fake, dir.path(), &account);
    assert_retry(&provider.send(&notice(&fcm_token(80))).await, None);
    assert_eq!(fake.send_requests(), 0);
}
