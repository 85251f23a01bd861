//! Firmware downloads: whole, ranged (resume), HEAD, 416, If-Range, and the
//! bytes always exactly what the release signed.

use crate::support;

use support::app::{firmware, spawn_app, Rel};

#[tokio::test]
async fn full_and_ranged_downloads_are_the_signed_bytes() {
    let app = spawn_app().await;
    let fw = firmware(3 * 1024 * 1024 + 17, 9);
    app.publish(&Rel::new("P", "1.0.0", 1, &fw), 100.0).await;
    let url = format!("{}/v1/artifacts/P/1.0.0", app.url);
    let sha = firmcast_signing::digest::sha256_hex(&fw);

    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["content-length"], fw.len().to_string().as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &fw[..]);

    // Resume from the middle.
    let r = app
        .client
        .get(&url)
        .header("range", "bytes=1000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1000000-{}/{}", fw.len() - 1, fw.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &fw[1_000_000..]);

    let r = app
        .client
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &fw[10..20]);
    let r = app
        .client
        .get(&url)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &fw[fw.len() - 5..]);

    let r = app
        .client
        .get(&url)
        .header("range", format!("bytes={}-", fw.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", fw.len()).as_str()
    );

    // A resume against other bytes (stale If-Range) gets the whole file.
    let r = app
        .client
        .get(&url)
        .header("range", "bytes=10-")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), fw.len());

    let r = app.client.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], fw.len().to_string().as_str());

    let m = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("firmcast_artifact_bytes_served_total"), "{m}");
    app.stop().await;
}

#[tokio::test]
async fn hostile_and_unknown_names_are_refused() {
    let app = spawn_app().await;
    let fw = firmware(10, 1);
    app.publish(&Rel::new("P", "1.0.0", 1, &fw), 100.0).await;
    for (path, status) in [
        ("/v1/artifacts/P/2.0.0", 404),
        ("/v1/artifacts/Q/1.0.0", 404),
        ("/v1/artifacts/..%2f..%2fetc/1.0.0", 400),
        // The client's URL parser resolves %2e%2e itself: refused either way.
        ("/v1/artifacts/%2e%2e/1.0.0", 404),
        ("/v1/artifacts/P/..%2f..%2fpasswd", 400),
        ("/v1/artifacts/P%00/1.0.0", 400),
    ] {
        let r = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["message"].is_string(), "{path}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn uploads_are_content_addressed_and_idempotent() {
    let app = spawn_app().await;
    let fw = firmware(2 * 1024 * 1024, 4);
    let a = app.upload("P", "1.0.0", &fw).await;
    assert_eq!(a.status(), 201);
    let a: serde_json::Value = a.json().await.unwrap();
    assert_eq!(a["sha256"], firmcast_signing::digest::sha256_hex(&fw));
    assert_eq!(a["size"], fw.len());
    let b: serde_json::Value = app.upload("P", "1.0.0", &fw).await.json().await.unwrap();
    assert_eq!(a, b);
    let stored = app
        .path("data/blobs/sha256")
        .join(&a["sha256"].as_str().unwrap()[..2])
        .join(a["sha256"].as_str().unwrap());
    assert_eq!(std::fs::read(stored).unwrap(), fw);
    // No temp files left behind.
    assert_eq!(
        std::fs::read_dir(app.path("data/blobs/tmp"))
            .unwrap()
            .count(),
        0
    );
    let empty = app.upload("P", "1.0.0", b"").await;
    assert_eq!(empty.status(), 400);
    app.stop().await;
}
