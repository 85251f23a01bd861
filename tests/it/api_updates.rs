//! The release path through HTTP against the real server: publish, check
//! (single and batch), stepping stones, staged rollout by source address,
//! pause and yank, ETags, and the bad inputs that must never change state.

use crate::support;

use firmcast_signing::{Envelope, VerifiedKeyset};
use serde_json::{json, Value};
use std::net::IpAddr;
use support::app::{
    check_with, firmware, spawn_app, Rel, ADMIN_TOKEN, PUBLISHER_TOKEN, VIEWER_TOKEN,
};

fn offered_version(answer: &Value) -> Option<&str> {
    answer["update"]["version"].as_str()
}

#[tokio::test]
async fn publish_then_check_offers_a_verifiable_update() {
    let app = spawn_app().await;
    let fw = firmware(5000, 1);
    app.publish(&Rel::new("WH-1000XM5", "2.2.0", 17, &fw), 100.0)
        .await;

    let a = app.check("WH-1000XM5", "2.1.0").await;
    assert_eq!(offered_version(&a), Some("2.2.0"));
    assert_eq!(a["update"]["url"], "/v1/artifacts/WH-1000XM5/2.2.0");
    assert_eq!(a["update"]["size"], 5000);
    assert_eq!(
        a["update"]["sha256"],
        firmcast_signing::digest::sha256_hex(&fw)
    );
    assert_eq!(a["update"]["notes"]["en"], "WH-1000XM5 2.2.0");

    // Everything in the answer verifies as a client would verify it.
    let keys: Value = app
        .client
        .get(format!("{}/v1/keys", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let root = firmcast_signing::Role::single(app.root_key.public().clone());
    let keyset = VerifiedKeyset::verify_pinned(
        Envelope::from_value(keys).unwrap(),
        &root,
        chrono::Utc::now(),
    )
    .unwrap();
    let m = keyset
        .verify_release(&Envelope::from_value(a["update"]["release"].clone()).unwrap())
        .unwrap();
    assert_eq!((m.product.as_str(), m.seq), ("WH-1000XM5", 17));
    let f = keyset
        .verify_freshness(
            &Envelope::from_value(a["freshness"].clone()).unwrap(),
            chrono::Utc::now(),
        )
        .unwrap();
    assert_eq!(
        (f.product.as_str(), f.channel.as_str(), f.latest_seq),
        ("WH-1000XM5", "stable", 17)
    );
    assert!(f.expires > chrono::Utc::now() + chrono::Duration::hours(23));

    // Up to date: no offer, still a signed freshness statement.
    let a = app.check("WH-1000XM5", "2.2.0").await;
    assert!(a["update"].is_null());
    assert!(a["freshness"]["signatures"].is_array());
    app.stop().await;
}

#[tokio::test]
async fn stepping_stones_follow_from_requirements() {
    let app = spawn_app().await;
    let (a, b, c) = (firmware(100, 1), firmware(100, 2), firmware(100, 3));
    app.publish(
        &Rel {
            from: Some(">=1.0.0, <2.0.0"),
            ..Rel::new("P", "2.0.0", 1, &a)
        },
        100.0,
    )
    .await;
    app.publish(
        &Rel {
            from: Some(">=2.0.0, <2.2.0"),
            ..Rel::new("P", "2.2.0", 2, &b)
        },
        100.0,
    )
    .await;
    app.publish(&Rel::new("P", "3.0.0-rc.1", 3, &c), 100.0)
        .await;

    // 3.0.0-rc.1 has no `from`: everyone older may take it... but semver says
    // a pre-release of 3.0.0 is newer than 2.x, so it is offered to all.
    assert_eq!(
        offered_version(&app.check("P", "2.1.0").await),
        Some("3.0.0-rc.1")
    );
    app.patch("P", "3.0.0-rc.1", json!({"yanked": true})).await;
    assert_eq!(
        offered_version(&app.check("P", "1.5.0").await),
        Some("2.0.0"),
        "1.x steps to 2.0.0 first"
    );
    assert_eq!(
        offered_version(&app.check("P", "2.0.0").await),
        Some("2.2.0")
    );
    assert_eq!(offered_version(&app.check("P", "2.2.0").await), None);
    assert_eq!(
        offered_version(&app.check("P", "0.9.0").await),
        None,
        "outside every from"
    );
    app.stop().await;
}

#[tokio::test]
async fn channels_beta_sees_stable_but_not_the_reverse() {
    let app = spawn_app().await;
    let (a, b) = (firmware(100, 1), firmware(100, 2));
    app.publish(&Rel::new("P", "1.1.0", 1, &a), 100.0).await;
    app.publish(
        &Rel {
            channel: "beta",
            ..Rel::new("P", "1.2.0", 2, &b)
        },
        100.0,
    )
    .await;
    let stable = check_with(&app.client, &app.url, "P", "1.0.0", "stable").await;
    let beta = check_with(&app.client, &app.url, "P", "1.0.0", "beta").await;
    assert_eq!(offered_version(&stable), Some("1.1.0"));
    assert_eq!(offered_version(&beta), Some("1.2.0"));
    app.stop().await;
}

#[tokio::test]
async fn staged_rollout_is_deterministic_per_source_address() {
    let app = spawn_app().await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("P", "2.0.0", 1, &fw), 30.0).await;

    let mut offered = 0;
    let mut first = Vec::new();
    for i in 1..=60u8 {
        let ip: IpAddr = format!("127.0.0.{i}").parse().unwrap();
        let client = app.client_from(ip);
        let a = check_with(&client, &app.url, "P", "1.0.0", "stable").await;
        let got = offered_version(&a).is_some();
        // The same address gets the same answer every time.
        let again = check_with(&client, &app.url, "P", "1.0.0", "stable").await;
        assert_eq!(offered_version(&again).is_some(), got, "127.0.0.{i}");
        offered += got as usize;
        first.push(got);
    }
    assert!(
        (5..=35).contains(&offered),
        "30% of 60 addresses, got {offered}"
    );

    // Raising the rollout keeps everyone who had it (monotone), adds others.
    app.patch("P", "2.0.0", json!({"rollout": 100})).await;
    for i in 1..=60u8 {
        let client = app.client_from(format!("127.0.0.{i}").parse().unwrap());
        assert_eq!(
            offered_version(&check_with(&client, &app.url, "P", "1.0.0", "stable").await),
            Some("2.0.0")
        );
    }
    app.patch("P", "2.0.0", json!({"rollout": 0})).await;
    assert_eq!(offered_version(&app.check("P", "1.0.0").await), None);
    app.stop().await;
}

/// Which of `clients` (behind a trusted proxy) are offered `product`.
async fn offered_to(app: &support::app::TestApp, product: &str, clients: &[String]) -> Vec<bool> {
    let mut out = Vec::new();
    for c in clients {
        let a: Value = app
            .client
            .get(format!("{}/v1/updates/{product}/1.0.0", app.url))
            .header("x-forwarded-for", c)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.push(offered_version(&a).is_some());
    }
    out
}

#[tokio::test]
async fn each_release_reaches_its_own_sample_and_raising_the_rollout_keeps_it() {
    let app = support::app::spawn_app_with_server("trusted_proxies = [\"127.0.0.0/8\"]", "").await;
    let (a, b) = (firmware(100, 1), firmware(100, 2));
    app.publish(&Rel::new("P", "2.0.0", 1, &a), 50.0).await;
    app.publish(&Rel::new("Q", "2.0.0", 1, &b), 50.0).await;
    let clients: Vec<String> = (0..400)
        .map(|i| format!("198.51.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let p = offered_to(&app, "P", &clients).await;
    let q = offered_to(&app, "Q", &clients).await;
    let share = |v: &[bool]| v.iter().filter(|x| **x).count();
    assert!((150..=250).contains(&share(&p)), "P reached {}", share(&p));
    assert!((150..=250).contains(&share(&q)), "Q reached {}", share(&q));
    // Two releases at 50% sample independently: about a quarter get both.
    let both = p.iter().zip(&q).filter(|(x, y)| **x && **y).count();
    assert!(
        (60..=140).contains(&both),
        "{both} of 400 got both: the same sample?"
    );

    // 30% -> 60%: everyone who had it keeps it, and others join.
    app.patch("P", "2.0.0", json!({"rollout": 30})).await;
    let low = offered_to(&app, "P", &clients).await;
    app.patch("P", "2.0.0", json!({"rollout": 60})).await;
    let high = offered_to(&app, "P", &clients).await;
    for (i, (l, h)) in low.iter().zip(&high).enumerate() {
        assert!(
            !l || *h,
            "{} lost the release when the rollout went up",
            clients[i]
        );
    }
    assert!(
        share(&high) > share(&low) + 60,
        "{} -> {}",
        share(&low),
        share(&high)
    );
    app.stop().await;
}

#[tokio::test]
async fn pause_and_yank_withdraw_offers() {
    let app = spawn_app().await;
    let (a, b) = (firmware(100, 1), firmware(100, 2));
    app.publish(&Rel::new("P", "1.1.0", 1, &a), 100.0).await;
    app.publish(&Rel::new("P", "1.2.0", 2, &b), 100.0).await;
    assert_eq!(
        offered_version(&app.check("P", "1.0.0").await),
        Some("1.2.0")
    );

    let r = app.patch("P", "1.2.0", json!({"paused": true})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["paused"], true);
    assert_eq!(
        offered_version(&app.check("P", "1.0.0").await),
        Some("1.1.0")
    );
    app.patch("P", "1.2.0", json!({"paused": false})).await;
    assert_eq!(
        offered_version(&app.check("P", "1.0.0").await),
        Some("1.2.0")
    );

    app.patch("P", "1.2.0", json!({"yanked": true})).await;
    assert_eq!(
        offered_version(&app.check("P", "1.0.0").await),
        Some("1.1.0")
    );
    let dl = app
        .client
        .get(format!("{}/v1/artifacts/P/1.2.0", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(dl.status(), 410);
    let r = app.patch("P", "1.2.0", json!({"yanked": false})).await;
    assert_eq!(r.status(), 409, "a yank is final");
    app.stop().await;
}

#[tokio::test]
async fn batch_answers_in_order_with_per_item_errors() {
    let app = spawn_app().await;
    let (a, b) = (firmware(100, 1), firmware(100, 2));
    app.publish(&Rel::new("App", "5.0.0", 1, &a), 100.0).await;
    app.publish(&Rel::new("Buds", "1.1.0", 1, &b), 100.0).await;
    let resp = app
        .client
        .post(format!("{}/v1/updates", app.url))
        .json(&json!({"items": [
            {"product": "App", "version": "4.0.0"},
            {"product": "Nope", "version": "1.0.0"},
            {"product": "Buds", "version": "1.1.0", "channel": "stable"},
            {"product": "Buds", "version": "one"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r[0]["update"]["version"], "5.0.0");
    assert_eq!(r[1]["error"], "unknown_product");
    assert!(r[2]["update"].is_null() && r[2]["freshness"].is_object());
    assert_eq!(r[3]["error"], "bad_version");

    let items: Vec<Value> = (0..33)
        .map(|_| json!({"product": "App", "version": "1.0.0"}))
        .collect();
    let resp = app
        .client
        .post(format!("{}/v1/updates", app.url))
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    app.stop().await;
}

/// Plain checks take a fast path around warp; anything needing decoding
/// takes the warp route. Both must answer byte for byte alike.
#[tokio::test]
async fn the_fast_path_and_the_warp_route_agree() {
    let app = spawn_app().await;
    let (a, b) = (firmware(100, 1), firmware(100, 2));
    app.publish(&Rel::new("P-1", "1.1.0", 1, &a), 100.0).await;
    let beta = Rel {
        channel: "beta",
        ..Rel::new("P-1", "1.2.0", 2, &b)
    };
    app.publish(&beta, 100.0).await;
    let get = |path: &'static str, inm: Option<String>| {
        let mut req = app.client.get(format!("{}{path}", app.url));
        if let Some(tag) = inm {
            req = req.header("if-none-match", tag);
        }
        async move {
            let r = req.send().await.unwrap();
            let (status, h) = (r.status().as_u16(), r.headers().clone());
            let etag = h.get("etag").map(|v| v.to_str().unwrap().to_owned());
            (
                status,
                etag,
                h.get("cache-control").cloned(),
                r.bytes().await.unwrap(),
            )
        }
    };
    // A percent-escape in the query is decoded only by warp: it takes that route.
    for (plain, encoded) in [
        ("/v1/updates/P-1/1.0.0", "/v1/updates/P-1/1.0.0?z=%20"),
        (
            "/v1/updates/P-1/1.0.0?channel=beta",
            "/v1/updates/P-1/1.0.0?channel=b%65ta",
        ),
        (
            "/v1/updates/P-1/1.0.0?x=1&channel=beta",
            "/v1/updates/P-1/1.0.0?channel=beta&y=a+b",
        ),
        ("/v1/updates/Q/1.0.0", "/v1/updates/Q/1.0.0?q=%41"),
        ("/v1/updates/P-1/1.0", "/v1/updates/P-1/1.0?q=%41"),
        ("/v1/updates/P%2D1/1.0.0", "/v1/updates/P%2D1/1.0.0?q=%41"),
        (
            "/v1/updates/P-1/1.0.0?channel=",
            "/v1/updates/P-1/1.0.0?channel",
        ),
    ] {
        let (fast, slow) = (get(plain, None).await, get(encoded, None).await);
        assert_eq!(fast, slow, "{plain} vs {encoded}");
        if let Some(tag) = fast.1.clone() {
            assert_eq!(get(plain, Some(tag.clone())).await.0, 304);
            assert_eq!(get(encoded, Some(tag)).await.0, 304);
        }
    }
    // A repeated channel is refused, whichever route it takes.
    let r = get("/v1/updates/P-1/1.0.0?channel=beta&channel=stable", None).await;
    assert_eq!(r.0, 400, "{:?}", r.3);
    app.stop().await;
}

#[tokio::test]
async fn etag_and_no_cookies() {
    let app = spawn_app().await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("P", "1.1.0", 1, &fw), 100.0).await;
    let url = format!("{}/v1/updates/P/1.0.0", app.url);
    let r = app.client.get(&url).send().await.unwrap();
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("private"));
    let etag = r.headers()["etag"].clone();
    let r = app
        .client
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // A list naming it, its weak form, or `*` is as good; other tags are not.
    let tag = etag.to_str().unwrap();
    for (tags, status) in [
        (format!("\"other\", {tag}"), 304),
        (format!("W/{tag}"), 304),
        ("*".to_owned(), 304),
        ("\"other\", \"another\"".to_owned(), 200),
    ] {
        let r = app
            .client
            .get(&url)
            .header("if-none-match", &tags)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "If-None-Match: {tags}");
    }
    // A change to the catalog changes the answer's tag.
    app.patch("P", "1.1.0", json!({"paused": true})).await;
    let r = app
        .client
        .get(&url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

async fn status_and_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "every error says what to do: {body}"
    );
    (status, body["error"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_changes_nothing() {
    let app = spawn_app().await;
    let fw = firmware(1000, 1);
    let good = app.publish(&Rel::new("P", "1.1.0", 5, &fw), 100.0).await;
    let c = &app.client;
    let u = &app.url;

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.get(format!("{u}/v1/updates/..%2f..%2fetc/1.0.0")),
            400,
            "bad_product",
        ),
        (c.get(format!("{u}/v1/updates/P/1.0")), 400, "bad_version"),
        (
            c.get(format!("{u}/v1/updates/Unknown/1.0.0")),
            404,
            "unknown_product",
        ),
        (
            c.get(format!("{u}/v1/updates/P/1.0.0?channel=NO")),
            400,
            "bad_channel",
        ),
        (
            c.get(format!("{u}/v1/updates/P/1.0.0?channel=nightly")),
            404,
            "unknown_channel",
        ),
        (
            c.get(format!("{u}/v1/updates/{}/1.0.0", "x".repeat(10_000))),
            400,
            "bad_product",
        ),
        (
            c.post(format!("{u}/v1/updates"))
                .header("content-type", "application/json")
                .body("{"),
            400,
            "bad_json",
        ),
        (
            c.post(format!("{u}/v1/updates")).body("{\"items\":[]}"),
            415,
            "unsupported_media_type",
        ),
        (
            c.post(format!("{u}/v1/updates"))
                .header("content-type", "application/json")
                .body(vec![b' '; 70_000]),
            413,
            "too_large",
        ),
        (
            c.post(format!("{u}/v1/admin/releases"))
                .json(&json!({"release": good.to_value()})),
            401,
            "unauthorized",
        ),
        (
            c.post(format!("{u}/v1/admin/releases"))
                .bearer_auth("wrong")
                .json(&json!({"release": good.to_value()})),
            401,
            "unauthorized",
        ),
        (
            c.post(format!("{u}/v1/admin/releases"))
                .bearer_auth(VIEWER_TOKEN)
                .json(&json!({"release": good.to_value()})),
            403,
            "forbidden",
        ),
        (
            c.post(format!("{u}/v1/admin/releases"))
                .bearer_auth(PUBLISHER_TOKEN)
                .json(&json!({"release": good.to_value()})),
            409,
            "duplicate_version",
        ),
        (
            c.post(format!("{u}/v1/admin/releases"))
                .bearer_auth(PUBLISHER_TOKEN)
                .json(&json!({"release": good.to_value(), "rollout": 101})),
            400,
            "bad_rollout",
        ),
        (
            c.post(format!("{u}/v1/admin/releases"))
                .bearer_auth(PUBLISHER_TOKEN)
                .json(&json!({"release": {"payloadType": 1}})),
            422,
            "invalid_release",
        ),
        (
            c.put(format!("{u}/v1/admin/artifacts/P/1.2.0"))
                .bearer_auth(PUBLISHER_TOKEN)
                .body("x"),
            415,
            "unsupported_media_type",
        ),
        (
            c.put(format!("{u}/v1/admin/artifacts/P/1.2.0"))
                .bearer_auth(PUBLISHER_TOKEN)
                .header("content-type", "application/octet-stream")
                .body(vec![0u8; 11 << 20]),
            413,
            "too_large",
        ),
        (
            c.patch(format!("{u}/v1/admin/releases/P/9.9.9"))
                .bearer_auth(PUBLISHER_TOKEN)
                .json(&json!({"paused": true})),
            404,
            "unknown_release",
        ),
        (
            c.patch(format!("{u}/v1/admin/releases/P/1.1.0"))
                .bearer_auth(PUBLISHER_TOKEN)
                .json(&json!({})),
            400,
            "empty_patch",
        ),
        (
            c.patch(format!("{u}/v1/admin/releases/P/1.1.0"))
                .bearer_auth(PUBLISHER_TOKEN)
                .json(&json!({"rollout": "all"})),
            400,
            "bad_json",
        ),
        (
            c.delete(format!("{u}/v1/updates/P/1.0.0")),
            405,
            "method_not_allowed",
        ),
        (c.get(format!("{u}/v2/nothing")), 404, "not_found"),
    ];
    for (req, status, code) in cases {
        let (s, c) = status_and_code(req.send().await.unwrap()).await;
        assert_eq!((s, c.as_str()), (status, code));
    }

    // Stale seq, bad signature, missing artifact.
    let fw2 = firmware(1000, 2);
    let stale = app.sign(&Rel::new("P", "1.2.0", 5, &fw2));
    app.upload("P", "1.2.0", &fw2).await;
    assert_eq!(
        status_and_code(app.post_release(&stale, 100.0).await).await,
        (409, "stale_seq".into())
    );
    let intruder = firmcast_signing::PrivateKey::generate();
    let forged = support::app::sign_with(&intruder, &Rel::new("P", "1.2.0", 6, &fw2));
    assert_eq!(
        status_and_code(app.post_release(&forged, 100.0).await).await,
        (422, "bad_signature".into())
    );
    let fw3 = firmware(1000, 3);
    let missing = app.sign(&Rel::new("P", "1.3.0", 7, &fw3));
    assert_eq!(
        status_and_code(app.post_release(&missing, 100.0).await).await,
        (409, "artifact_missing".into())
    );

    // Nothing changed: one release, still offered.
    let list: Value = c
        .get(format!("{u}/v1/admin/releases?product=P"))
        .bearer_auth(PUBLISHER_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["releases"].as_array().unwrap().len(), 1);
    assert_eq!(
        offered_version(&app.check("P", "1.0.0").await),
        Some("1.1.0")
    );

    // And the audit log saw every admin action, never a token.
    let audit = c
        .get(format!("{u}/v1/admin/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("release.publish")
            && audit.contains("artifact.upload")
            && audit.contains("release-bot"),
        "{audit}"
    );
    assert!(!audit.contains(PUBLISHER_TOKEN) && !audit.contains(ADMIN_TOKEN));
    app.stop().await;
}

#[tokio::test]
async fn ops_endpoints_and_metrics() {
    let app = spawn_app().await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("P", "1.1.0", 1, &fw), 100.0).await;
    app.check("P", "1.0.0").await;
    app.check("P", "1.1.0").await;
    let c = &app.client;
    assert_eq!(
        c.get(format!("{}/healthz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = c
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["state"]["backend"], "embedded");
    let m = c
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("firmcast_update_checks_total{outcome=\"update\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("firmcast_update_checks_total{outcome=\"none\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("firmcast_publish_total{result=\"published\"} 1"),
        "{m}"
    );
    assert!(!m.contains("127.0.0.1"), "no client address in metrics");
    app.stop().await;
}

#[tokio::test]
async fn releases_and_rollout_state_survive_a_restart() {
    let app = spawn_app().await;
    let fw = firmware(100, 1);
    app.publish(&Rel::new("P", "1.1.0", 1, &fw), 100.0).await;
    app.patch("P", "1.1.0", json!({"paused": true})).await;
    let app = app.restart().await;
    let list = app.admin_get("/v1/admin/releases").await;
    assert_eq!(list["releases"][0]["paused"], true);
    assert_eq!(offered_version(&app.check("P", "1.0.0").await), None);
    app.patch("P", "1.1.0", json!({"paused": false})).await;
    assert_eq!(
        offered_version(&app.check("P", "1.0.0").await),
        Some("1.1.0")
    );
    app.stop().await;
}
