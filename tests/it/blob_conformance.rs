//! The blob store conformance suite against both backends: a local directory,
//! and S3 as spoken by s3s-fs (a real S3 protocol server, started per test).
//! Then what only S3 has: a key prefix, presigned URLs, and failing fast with
//! `Unavailable` when the server is gone or hangs.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use firmcast::blob::local::LocalBlobStore;
use firmcast::blob::s3::S3BlobStore;
use firmcast::blob::{BlobError, BlobStore};
use support::blob_suite::{self, body, Fixture, MIB};
use support::s3s::{S3sServer, ACCESS_KEY, SECRET_KEY};
use tempfile::TempDir;

// ---- local directory ----

pub struct LocalFixture {
    store: Arc<LocalBlobStore>,
    dir: TempDir,
}

#[async_trait::async_trait]
impl Fixture for LocalFixture {
    fn store(&self) -> Arc<dyn BlobStore> {
        self.store.clone()
    }

    /// Blobs under `sha256/`, and any upload left in `tmp/`.
    async fn contents(&self) -> Vec<String> {
        blob_suite::files_under(self.dir.path())
    }
}

async fn local_fixture() -> LocalFixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalBlobStore::open(dir.path()).unwrap());
    LocalFixture { store, dir }
}

mod local {
    crate::blob_conformance!(super::local_fixture());
}

// ---- S3 (s3s-fs) ----

const BUCKET: &str = "firmware";
const PREFIX: &str = "fw/";

pub struct S3Fixture {
    store: Arc<S3BlobStore>,
    server: S3sServer,
}

#[async_trait::async_trait]
impl Fixture for S3Fixture {
    fn store(&self) -> Arc<dyn BlobStore> {
        self.store.clone()
    }

    /// Every object in the bucket (blobs and temporary upload objects), and
    /// every multipart upload neither completed nor aborted.
    async fn contents(&self) -> Vec<String> {
        let mut all = self.server.list_keys(BUCKET).await;
        all.extend(
            self.server
                .open_uploads()
                .into_iter()
                .map(|u| format!("open multipart upload {u}")),
        );
        all
    }
}

async fn s3_fixture_with_timeout(timeout_ms: u64) -> S3Fixture {
    let server = S3sServer::start(&[BUCKET]);
    let settings = server.settings(BUCKET, PREFIX, timeout_ms);
    let store = S3BlobStore::with_static_credentials(&settings, ACCESS_KEY, SECRET_KEY).unwrap();
    S3Fixture {
        store: Arc::new(store),
        server,
    }
}

async fn s3_fixture() -> S3Fixture {
    s3_fixture_with_timeout(10_000).await
}

mod s3 {
    crate::blob_conformance!(super::s3_fixture());
}

// ---- backend specifics ----

#[tokio::test]
async fn backends_name_themselves() {
    assert_eq!(local_fixture().await.store.backend(), "local");
    assert_eq!(s3_fixture().await.store.backend(), "s3");
}

#[tokio::test]
async fn s3_blobs_live_under_the_prefix_by_sha256_only() {
    let f = s3_fixture().await;
    let data = body(9 * MIB + 7, 100);
    let info = blob_suite::put(&*f.store, &data).await;
    let key = format!("{PREFIX}sha256/{}/{}", &info.sha256[..2], info.sha256);
    assert_eq!(f.server.list_keys(BUCKET).await, vec![key.clone()]);
    // The object is exactly the blob, read behind the store's back.
    let out = f
        .server
        .client()
        .get_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap();
    let stored = out.body.collect().await.unwrap().into_bytes();
    assert!(stored == data, "the stored object differs from the blob");
}

#[tokio::test]
async fn s3_presigned_url_downloads_the_exact_bytes() {
    let f = s3_fixture().await;
    let data = body(9 * MIB + 7, 101);
    let info = blob_suite::put(&*f.store, &data).await;
    let url = f
        .store
        .presign_get(&info.sha256, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(url.starts_with(&f.server.endpoint()), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");

    // A plain HTTP client, no credentials.
    let http = reqwest::Client::new();
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert!(got == data, "the presigned download differs from the blob");

    // Ranges work through the URL too (apps resume downloads).
    let resp = http
        .get(&url)
        .header("Range", "bytes=8388600-8388615")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), &data[8_388_600..8_388_616]);

    // A tampered signature is refused.
    let sig_at = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = url.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);

    // Only a sha256 becomes a key.
    assert!(matches!(
        f.store
            .presign_get("../fw/uploads/x", Duration::from_secs(60))
            .await,
        Err(BlobError::NotFound(_))
    ));
}

/// Runs `op`, which must fail with `Unavailable` from S3 within `limit`.
async fn assert_unavailable_within<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    op: impl std::future::Future<Output = Result<T, BlobError>>,
) {
    let started = Instant::now();
    // The outer bound turns a hang into a failure instead of a stuck test.
    let result = tokio::time::timeout(limit * 3, op).await;
    let elapsed = started.elapsed();
    match result {
        Ok(Err(BlobError::Unavailable { backend: "s3", .. })) => {}
        Ok(other) => panic!("{what}: expected Unavailable, got {other:?}"),
        Err(_) => panic!("{what}: still hanging after {:?}", limit * 3),
    }
    assert!(
        elapsed < limit,
        "{what}: took {elapsed:?}, more than {limit:?}"
    );
}

/// Everything a request can do against a store whose backend is gone.
async fn assert_every_call_unavailable(store: &S3BlobStore, known: &str, limit: Duration) {
    assert_unavailable_within("ping", limit, store.ping()).await;
    assert_unavailable_within("stat", limit, store.stat(known)).await;
    assert_unavailable_within("get", limit, async {
        store.get(known, 0..10).await.map(|_| ())
    })
    .await;
    let small = body(1000, 103);
    assert_unavailable_within(
        "small put",
        limit,
        store.put(blob_suite::stream(&small), 1 << 30),
    )
    .await;
    let big = body(9 * MIB, 104);
    assert_unavailable_within(
        "multipart put",
        limit,
        store.put(blob_suite::stream(&big), 1 << 30),
    )
    .await;

    // Non-hex keys are answered without asking the (dead) backend.
    assert_eq!(store.stat("../../etc/passwd").await.unwrap(), None);
    assert!(matches!(
        store.get(&known.to_uppercase(), 0..1).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(matches!(
        store.presign_get("nope", Duration::from_secs(60)).await,
        Err(BlobError::NotFound(_))
    ));
}

#[tokio::test]
async fn s3_stopped_server_is_unavailable_within_the_timeout() {
    let timeout_ms = 1000;
    let mut f = s3_fixture_with_timeout(timeout_ms).await;
    let info = blob_suite::put(&*f.store, &body(1000, 102)).await;
    f.server.stop();
    let limit = Duration::from_millis(timeout_ms + 1000);
    assert_every_call_unavailable(&f.store, &info.sha256, limit).await;
}

#[tokio::test]
async fn s3_unresponsive_server_is_unavailable_within_the_timeout() {
    // Accepts connections and never answers: only the timeout ends a request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let black_hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let timeout_ms = 800;
    let settings = firmcast::config::S3Settings {
        bucket: BUCKET.into(),
        endpoint,
        region: "us-east-1".into(),
        force_path_style: true,
        prefix: PREFIX.into(),
        presign_expiry_secs: 300,
        timeout_ms,
    };
    let store = S3BlobStore::with_static_credentials(&settings, ACCESS_KEY, SECRET_KEY).unwrap();
    let limit = Duration::from_millis(timeout_ms + 1000);
    assert_every_call_unavailable(&store, &blob_suite::sha256_hex(b"x"), limit).await;
    black_hole.abort();
}

#[tokio::test]
async fn s3_missing_bucket_fails_ping_with_its_name() {
    let server = S3sServer::start(&[]);
    let settings = server.settings("no-such-bucket", PREFIX, 5000);
    let store = S3BlobStore::with_static_credentials(&settings, ACCESS_KEY, SECRET_KEY).unwrap();
    match store.ping().await {
        Err(e @ BlobError::Unavailable { backend: "s3", .. }) => {
            assert!(e.to_string().contains("no-such-bucket"), "{e}")
        }
        other => panic!("ping of a missing bucket: {other:?}"),
    }
}

#[tokio::test]
async fn s3_wrong_credentials_are_unavailable_not_a_bad_request() {
    let server = S3sServer::start(&[BUCKET]);
    let settings = server.settings(BUCKET, PREFIX, 5000);
    let store = S3BlobStore::with_static_credentials(&settings, ACCESS_KEY, "wrong").unwrap();
    assert!(matches!(
        store.ping().await,
        Err(BlobError::Unavailable { backend: "s3", .. })
    ));
    assert!(matches!(
        store.put(blob_suite::stream(&body(10, 105)), 100).await,
        Err(BlobError::Unavailable { backend: "s3", .. })
    ));
}
