//! The blob store conformance suite, written once for every backend.
//!
//! `blob_conformance!(make)` expands to one `#[tokio::test]` per behaviour;
//! `make` is an expression whose `.await` yields a [`Fixture`]: a fresh,
//! empty store plus a way to list everything the backend holds (finished
//! blobs, temporary files or objects, open multipart uploads), so a test can
//! see that a failed upload left nothing behind. Whatever must outlive the
//! store (a temp dir, a server process) lives in the fixture and is dropped
//! when the test ends. Instantiate it once per module:
//!
//! ```ignore
//! mod local { blob_conformance!(super::local_fixture()); }
//! ```
//!
//! The bodies live here as plain async functions so a failure points at this
//! file, not at the macro. Bodies are generated, never stored in the repo.

use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use firmcast::blob::{BlobError, BlobInfo, BlobStore, ByteStream};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

#[macro_export]
macro_rules! blob_conformance {
    ($make:expr) => {
        $crate::blob_conformance!(@tests $make;
            ping_answers,
            round_trip_of_a_multi_part_body,
            round_trip_of_small_bodies,
            ranged_gets_at_start_middle_and_end,
            same_bytes_twice_give_same_info_and_one_blob,
            different_bytes_give_different_blobs,
            exactly_the_limit_is_accepted,
            over_the_limit_is_refused_and_leaves_nothing,
            empty_upload_is_refused_and_leaves_nothing,
            body_error_midway_leaves_nothing,
            dropped_upload_leaves_nothing,
            unknown_sha256_is_not_found,
            non_hex_keys_are_never_looked_up,
        );
        $crate::blob_conformance!(@race_tests $make;
            concurrent_uploads_of_the_same_bytes_agree,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = $make.await;
                $crate::support::blob_suite::$name(&fixture).await;
                drop(fixture);
            }
        )+
    };
    // Races need real parallelism, not one thread interleaving at awaits.
    (@race_tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let fixture = $make.await;
                $crate::support::blob_suite::$name(&fixture).await;
                drop(fixture);
            }
        )+
    };
}

/// What `make` yields: a fresh, empty store and a view of its backend.
#[async_trait::async_trait]
pub trait Fixture: Send + Sync {
    fn store(&self) -> Arc<dyn BlobStore>;

    /// Everything the backend holds, sorted: finished blobs (whose names end
    /// in `sha256/<ab>/<hex>`) and anything an upload may leave behind
    /// (temporary files or objects, open multipart uploads).
    async fn contents(&self) -> Vec<String>;
}

pub const MIB: usize = 1024 * 1024;
/// Larger than two 8 MiB S3 parts, and not a multiple of any part size.
pub const BIG: usize = 20 * MIB + 12_345;
/// A generous limit for uploads that should succeed.
pub const LIMIT: u64 = 64 * MIB as u64;

/// `len` deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub fn body(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Chunk sizes an HTTP body might arrive in: tiny, odd, and larger than a part.
const CHUNKS: [usize; 5] = [65_536, 1_000_003, 7, 9 * MIB, 1];

fn split(data: &Bytes) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = CHUNKS[i % CHUNKS.len()].min(data.len() - at);
        chunks.push(data.slice(at..at + n));
        at += n;
        i += 1;
    }
    chunks
}

/// `data` as an upload body, in chunks of varying size.
pub fn stream(data: &Bytes) -> ByteStream<'static> {
    Box::pin(futures_util::stream::iter(split(data).into_iter().map(Ok)))
}

/// `data`, then an error, as a client that goes away mid-upload.
pub fn failing_after(data: &Bytes) -> ByteStream<'static> {
    let chunks = split(data).into_iter().map(Ok);
    let err = io::Error::new(io::ErrorKind::ConnectionReset, "client went away");
    Box::pin(futures_util::stream::iter(
        chunks.chain(std::iter::once(Err(err))),
    ))
}

pub async fn read_all(mut s: ByteStream<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("a stored blob streams without error"));
    }
    out
}

pub async fn get(store: &dyn BlobStore, sha256: &str, range: Range<u64>) -> Vec<u8> {
    let s = store
        .get(sha256, range.clone())
        .await
        .unwrap_or_else(|e| panic!("get {range:?}: {e}"));
    read_all(s).await
}

pub async fn put(store: &dyn BlobStore, data: &Bytes) -> BlobInfo {
    let info = store
        .put(stream(data), LIMIT)
        .await
        .unwrap_or_else(|e| panic!("put of {} bytes: {e}", data.len()));
    assert_eq!(
        info,
        BlobInfo {
            sha256: sha256_hex(data),
            size: data.len() as u64
        }
    );
    info
}

/// The backend holds exactly these blobs and nothing else.
pub async fn assert_holds_only(f: &dyn Fixture, blobs: &[&str]) {
    let contents = f.contents().await;
    let mut want: Vec<String> = blobs
        .iter()
        .map(|h| format!("sha256/{}/{}", &h[..2], h))
        .collect();
    want.sort();
    want.dedup();
    // Keys are unique and each wanted name ends in a different hash, so equal
    // counts plus every wanted name matched means a one-to-one match.
    assert!(
        contents.len() == want.len()
            && want
                .iter()
                .all(|w| contents.iter().any(|c| c.ends_with(w.as_str()))),
        "the backend should hold exactly {want:?}, but holds {contents:?}"
    );
}

/// Cleanup of a dropped upload may run in the background: wait for it.
async fn eventually_holds_nothing(f: &dyn Fixture) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let contents = f.contents().await;
        if contents.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "an abandoned upload left {contents:?} behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- behaviours ----

pub async fn ping_answers(f: &dyn Fixture) {
    f.store().ping().await.expect("a fresh store is reachable");
}

pub async fn round_trip_of_a_multi_part_body(f: &dyn Fixture) {
    let store = f.store();
    let data = body(BIG, 1);
    let info = put(&*store, &data).await;
    assert_eq!(store.stat(&info.sha256).await.unwrap(), Some(BIG as u64));
    let back = get(&*store, &info.sha256, 0..BIG as u64).await;
    assert!(back == data, "the bytes read back differ from those stored");
    assert_holds_only(f, &[&info.sha256]).await;
}

pub async fn round_trip_of_small_bodies(f: &dyn Fixture) {
    let store = f.store();
    let mut shas = Vec::new();
    for (len, seed) in [(1, 2), (1000, 3), (MIB + 1, 4)] {
        let data = body(len, seed);
        let info = put(&*store, &data).await;
        assert_eq!(store.stat(&info.sha256).await.unwrap(), Some(len as u64));
        assert_eq!(get(&*store, &info.sha256, 0..len as u64).await, data);
        shas.push(info.sha256);
    }
    let shas: Vec<&str> = shas.iter().map(String::as_str).collect();
    assert_holds_only(f, &shas).await;
}

pub async fn ranged_gets_at_start_middle_and_end(f: &dyn Fixture) {
    let store = f.store();
    let data = body(BIG, 5);
    let info = put(&*store, &data).await;
    let n = BIG as u64;
    let part = 8 * MIB as u64;
    for r in [
        0..1,
        0..4096,
        n / 2 - 1000..n / 2 + 1000,
        part - 5..part + 5, // across an S3 part boundary
        n - 4096..n,
        n - 1..n,
        1..n - 1,
        0..n,
    ] {
        let got = get(&*store, &info.sha256, r.clone()).await;
        assert!(
            got == data[r.start as usize..r.end as usize],
            "range {r:?} returned {} bytes that differ from the stored ones",
            got.len()
        );
    }
    // An empty range is an empty body, not an error.
    assert!(get(&*store, &info.sha256, 7..7).await.is_empty());
}

pub async fn same_bytes_twice_give_same_info_and_one_blob(f: &dyn Fixture) {
    let store = f.store();
    for (len, seed) in [(BIG, 6), (1000, 7)] {
        let data = body(len, seed);
        let first = put(&*store, &data).await;
        let second = put(&*store, &data).await;
        assert_eq!(first, second);
        assert_eq!(get(&*store, &first.sha256, 0..len as u64).await, data);
    }
    let big = sha256_hex(&body(BIG, 6));
    let small = sha256_hex(&body(1000, 7));
    assert_holds_only(f, &[&big, &small]).await;
}

pub async fn different_bytes_give_different_blobs(f: &dyn Fixture) {
    let store = f.store();
    let a = body(4096, 8);
    let mut b = a.to_vec();
    b[4095] ^= 1; // one bit apart
    let b = Bytes::from(b);
    let ia = put(&*store, &a).await;
    let ib = put(&*store, &b).await;
    assert_ne!(ia.sha256, ib.sha256);
    assert_eq!(get(&*store, &ia.sha256, 4095..4096).await, &a[4095..]);
    assert_eq!(get(&*store, &ib.sha256, 4095..4096).await, &b[4095..]);
    assert_holds_only(f, &[&ia.sha256, &ib.sha256]).await;
}

pub async fn exactly_the_limit_is_accepted(f: &dyn Fixture) {
    let store = f.store();
    let mut shas = Vec::new();
    for (len, seed) in [(100, 9), (8 * MIB, 10), (8 * MIB + 1, 11)] {
        let data = body(len, seed);
        let info = store.put(stream(&data), len as u64).await.unwrap();
        assert_eq!(info.size, len as u64);
        assert_eq!(info.sha256, sha256_hex(&data));
        shas.push(info.sha256);
    }
    let shas: Vec<&str> = shas.iter().map(String::as_str).collect();
    assert_holds_only(f, &shas).await;
}

pub async fn over_the_limit_is_refused_and_leaves_nothing(f: &dyn Fixture) {
    let store = f.store();
    // One byte over, small; and far over, after whole parts were sent.
    for (len, limit) in [(100, 99), (BIG, 12 * MIB as u64), (BIG, BIG as u64 - 1)] {
        let data = body(len, 12);
        match store.put(stream(&data), limit).await {
            Err(BlobError::TooLarge { limit: l }) => assert_eq!(l, limit),
            other => panic!("{len} bytes over a {limit} limit: {other:?}"),
        }
        assert_eq!(store.stat(&sha256_hex(&data)).await.unwrap(), None);
        assert_holds_only(f, &[]).await;
    }
}

pub async fn empty_upload_is_refused_and_leaves_nothing(f: &dyn Fixture) {
    let store = f.store();
    let nothing: ByteStream = Box::pin(futures_util::stream::empty());
    assert!(matches!(
        store.put(nothing, LIMIT).await,
        Err(BlobError::Empty)
    ));
    let empty_chunks: ByteStream =
        Box::pin(futures_util::stream::iter((0..3).map(|_| Ok(Bytes::new()))));
    assert!(matches!(
        store.put(empty_chunks, LIMIT).await,
        Err(BlobError::Empty)
    ));
    assert_eq!(store.stat(&sha256_hex(b"")).await.unwrap(), None);
    assert_holds_only(f, &[]).await;
}

pub async fn body_error_midway_leaves_nothing(f: &dyn Fixture) {
    let store = f.store();
    // Before any part is complete, and after whole parts were sent.
    for len in [1000, 17 * MIB] {
        let data = body(len, 13);
        match store.put(failing_after(&data), LIMIT).await {
            Err(BlobError::Body(msg)) => assert!(msg.contains("client went away"), "{msg}"),
            other => panic!("a body that errors after {len} bytes: {other:?}"),
        }
        assert_eq!(store.stat(&sha256_hex(&data)).await.unwrap(), None);
        assert_holds_only(f, &[]).await;
    }
}

pub async fn dropped_upload_leaves_nothing(f: &dyn Fixture) {
    let store = f.store();
    let data = body(10 * MIB, 14);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    let body: ByteStream = Box::pin(tokio_stream_from(rx));
    let upload = tokio::spawn(async move { store.put(body, LIMIT).await });
    // Feed more than one S3 part, then stall like a client that hung up.
    for chunk in data.chunks(MIB) {
        tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let midway = f.contents().await;
    assert!(
        !midway.is_empty(),
        "an upload in progress should have left a trace to clean up"
    );
    upload.abort(); // the server drops the handler future
    assert!(upload.await.unwrap_err().is_cancelled());
    drop(tx);
    eventually_holds_nothing(f).await;
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub async fn unknown_sha256_is_not_found(f: &dyn Fixture) {
    let store = f.store();
    let stored = put(&*store, &body(1000, 15)).await;
    let unknown = sha256_hex(b"never stored");
    assert_eq!(store.stat(&unknown).await.unwrap(), None);
    match store.get(&unknown, 0..10).await {
        Err(BlobError::NotFound(k)) => assert_eq!(k, unknown),
        Err(e) => panic!("get of an unknown sha256: {e}"),
        Ok(_) => panic!("get of an unknown sha256 returned a stream"),
    }
    assert_holds_only(f, &[&stored.sha256]).await;
}

pub async fn non_hex_keys_are_never_looked_up(f: &dyn Fixture) {
    let store = f.store();
    let info = put(&*store, &body(1000, 16)).await;
    let h = info.sha256.clone();
    let bad = [
        String::new(),
        h.to_uppercase(),
        h[..63].to_owned(),
        format!("{h}0"),
        format!("{}/{}", &h[..2], h),
        format!("sha256/{}/{}", &h[..2], h),
        format!("../{}", &h[3..]),
        format!("{}/../{}", &h[..2], &h[5..]),
        "../../../../etc/passwd".to_owned(),
        format!("{}%2F{}", &h[..31], &h[34..]),
        format!("{} ", &h[..63]),
        format!("{}é", &h[..62]),
        "g".repeat(64),
    ];
    for key in &bad {
        assert_eq!(store.stat(key).await.unwrap(), None, "stat {key:?}");
        assert!(
            matches!(store.get(key, 0..1).await, Err(BlobError::NotFound(_))),
            "get {key:?} must be NotFound"
        );
    }
    assert_eq!(store.stat(&h).await.unwrap(), Some(1000));
    assert_holds_only(f, &[&h]).await;
}

pub async fn concurrent_uploads_of_the_same_bytes_agree(f: &dyn Fixture) {
    let store = f.store();
    let data = body(9 * MIB + 3, 17);
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let (store, data) = (Arc::clone(&store), data.clone());
            tokio::spawn(async move { store.put(stream(&data), LIMIT).await })
        })
        .collect();
    let want = BlobInfo {
        sha256: sha256_hex(&data),
        size: data.len() as u64,
    };
    for u in uploads {
        assert_eq!(u.await.unwrap().unwrap(), want);
    }
    assert!(get(&*store, &want.sha256, 0..want.size).await == data);
    assert_holds_only(f, &[&want.sha256]).await;
}

/// Every file under `root`, as sorted `/`-separated paths relative to it
/// (for backends that are directories).
pub fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    out.sort();
    out
}
