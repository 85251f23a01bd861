//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for the public
//! request paths, through the real server in process: `GET /v1/updates/{p}/{v}`
//! with arbitrary paths and query strings, `POST /v1/updates` with arbitrary
//! bodies, and `Range` on `GET /v1/artifacts/...`. Requests go over raw TCP so
//! any byte can be sent; nothing may answer 5xx, every 4xx from the service is
//! the JSON error shape, and valid requests keep getting the right answer.
//!
//! Each property runs a fixed number of cases (the `*_CASES` constants below,
//! one request per case) so the file takes about 10 s in a debug build on two
//! cores. For a longer local run set `PROPTEST_CASES`, which replaces every
//! per-property count, e.g.
//! `PROPTEST_CASES=50000 cargo nextest run --test fuzz_requests`.
//! A failure prints the minimal input; nothing is written to the source tree.

mod support;

use firmcast::api::range::{self, RangeRequest};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use semver::Version;
use serde_json::{json, Value};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use support::app::{firmware, spawn_app, Rel, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Case counts: one request each for the server properties.
const CHECK_CASES: u32 = 12_000;
const BATCH_CASES: u32 = 5_000;
const RANGE_CASES: u32 = 8_000;
const PURE_CASES: u32 = 20_000;

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        // Each shrink step is a request; keep a failure's report prompt.
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// The server and a raw HTTP/1.1 client
// ---------------------------------------------------------------------------

/// The published release every property checks answers against.
const PRODUCT: &str = "P";
const VERSION: &str = "1.1.0";
const FW_SIZE: usize = 1000;

struct Server {
    rt: tokio::runtime::Runtime,
    app: Option<TestApp>,
    addr: SocketAddr,
    fw: Vec<u8>,
}

impl Server {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fw = firmware(FW_SIZE, 7);
        let app = rt.block_on(async {
            let app = spawn_app().await;
            app.publish(&Rel::new(PRODUCT, VERSION, 1, &fw), 100.0)
                .await;
            app
        });
        let addr = app.addr;
        Server {
            rt,
            app: Some(app),
            addr,
            fw,
        }
    }

    fn send(&self, req: &Request) -> Reply {
        self.rt
            .block_on(send_raw(self.addr, &req.to_bytes(), req.method == "HEAD"))
    }

    /// Runs `property` for every generated case; panics with the minimal
    /// failing input.
    fn run<S: Strategy>(
        &self,
        cases: u32,
        strategy: S,
        property: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) where
        S::Value: fmt::Debug,
    {
        let mut runner = TestRunner::new(config(cases));
        if let Err(e) = runner.run(&strategy, property) {
            panic!("{e}");
        }
    }

    /// A valid check still gets the right answer, as reqwest sends it.
    fn assert_still_answers(&self) {
        let app = self.app.as_ref().unwrap();
        self.rt.block_on(async {
            let a = app.check(PRODUCT, "1.0.0").await;
            assert_eq!(a["update"]["version"], VERSION, "{a}");
            let a = app.check(PRODUCT, VERSION).await;
            assert!(a["update"].is_null(), "{a}");
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            self.rt.block_on(app.stop());
        }
    }
}

#[derive(Clone)]
struct Request {
    method: &'static str,
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

impl Request {
    fn get(target: Vec<u8>) -> Self {
        Request {
            method: "GET",
            target,
            headers: Vec::new(),
            body: None,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.target.len() + 256);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(body) = &self.body {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

/// Shows bytes as escaped text, cut short, so a failure report stays readable.
fn show(bytes: &[u8]) -> String {
    let s = bytes.escape_ascii().to_string();
    if s.len() > 300 {
        format!("{}... ({} bytes)", &s[..300], bytes.len())
    } else {
        s
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, show(&self.target))?;
        for (k, v) in &self.headers {
            write!(f, " | {k}: {}", show(v))?;
        }
        if let Some(b) = &self.body {
            write!(f, " | body: {}", show(b))?;
        }
        Ok(())
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// hyper's own answer to a request it could not parse (before any route
    /// runs): no body, no content type.
    fn is_transport_rejection(&self) -> bool {
        matches!(self.status, 400 | 414 | 431)
            && self.body.is_empty()
            && self.header("content-type").is_none()
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, show(&self.body))
    }
}

async fn send_raw(addr: SocketAddr, req: &[u8], head: bool) -> Reply {
    let exchange = async {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        // Write and read at once: the server may answer (413) and close
        // before reading all of a large body; a failed write is then fine,
        // the answer is what counts.
        let write = async move {
            let _ = wr.write_all(req).await;
            wr
        };
        let read = async {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf
        };
        let (_wr, buf) = tokio::join!(write, read);
        buf
    };
    let raw = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the server answers within 20 s");
    parse_reply(&raw, head).unwrap_or_else(|| panic!("not an HTTP response: {}", show(&raw)))
}

fn parse_reply(raw: &[u8], is_head: bool) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let rest = &raw[end + 4..];
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    reply.body = if is_head {
        Vec::new()
    } else if reply
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse().ok()?;
        rest.get(..len)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(reply)
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&raw[..eol]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------
// Shared checks
// ---------------------------------------------------------------------------

/// `{"error": "<code>", "message": "<what to do>"}` and nothing else.
fn assert_error_shape(r: &Reply) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{:?}",
        r
    );
    let v = r.json();
    let obj = v.as_ref().and_then(Value::as_object);
    prop_assert!(obj.is_some(), "not a JSON object: {:?}", r);
    let obj = obj.unwrap();
    let code = obj.get("error").and_then(Value::as_str).unwrap_or("");
    let message = obj.get("message").and_then(Value::as_str).unwrap_or("");
    prop_assert!(
        obj.len() == 2
            && !code.is_empty()
            && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && !message.is_empty(),
        "not the error shape: {:?}",
        r
    );
    prop_assert!(
        r.body.len() < 2048,
        "error body floods: {} bytes",
        r.body.len()
    );
    Ok(())
}

/// Never 5xx; a 4xx is the JSON error shape unless hyper refused to parse
/// the request at all, which only a request that is not valid HTTP earns.
fn assert_sane(r: &Reply, valid_http: bool) -> Result<(), TestCaseError> {
    prop_assert!(r.status < 500, "server error: {:?}", r);
    if (400..500).contains(&r.status) {
        if r.is_transport_rejection() {
            prop_assert!(
                !valid_http,
                "valid HTTP refused without a JSON body: {:?}",
                r
            );
        } else {
            assert_error_shape(r)?;
        }
    }
    Ok(())
}

fn error_code(r: &Reply) -> String {
    r.json()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What an update check of `P` must answer for an installed version.
fn expected_offer(installed: &Version) -> Option<&'static str> {
    (*installed < Version::parse(VERSION).unwrap()).then_some(VERSION)
}

/// An update-check answer: `update` null or the offer, and a freshness envelope.
fn assert_answer(v: &Value, installed: Option<&Version>) -> Result<(), TestCaseError> {
    prop_assert!(v["freshness"]["signatures"].is_array(), "{}", v);
    prop_assert!(
        v["update"].is_null() || v["update"]["version"].is_string(),
        "{}",
        v
    );
    if let Some(installed) = installed {
        prop_assert_eq!(
            v["update"]["version"].as_str(),
            expected_offer(installed),
            "{}",
            v
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// Bytes allowed unescaped in a path segment or query (RFC 3986 pchar),
/// besides `%` escapes.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// Whether the request target is one any HTTP/1.1 server must parse:
/// RFC 3986 characters and well-formed `%XX` escapes, of sane length.
fn is_valid_target(t: &[u8]) -> bool {
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            b'%' => {
                if !(t.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && t.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            b'/' | b'?' => {}
            b if is_pchar(b) => {}
            _ => return false,
        }
        i += 1;
    }
    t.len() < 8 * 1024
}

fn pct_encode_all(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| format!("%{b:02X}").into_bytes())
        .collect()
}

fn pct_encode_some(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if is_pchar(b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// Pieces that tend to break path handling.
const PATH_TOKENS: &[&[u8]] = &[
    b"P",
    b"1.0.0",
    b"1.1.0",
    b"..",
    b".",
    b"%2e%2e",
    b"%2E.",
    b"%2f",
    b"%2F",
    b"%5c",
    b"\\",
    b"%00",
    b"\0",
    b"%c0%af",
    b"%e0%80%af",
    b"%c0%ae",
    b"%c0%80",
    b"%ed%a0%80",
    b"%f4%90%80%80",
    b"%ff",
    b"%fe%ff",
    b"%",
    b"%g0",
    b"%2",
    b"%25",
    b"%252f",
    b"%0d%0a",
    b"%20",
    b"+",
    b"-",
    b"_",
    b"~",
    b";",
    b"=",
    b"@",
    b":",
    b"%3f",
    b"%23",
    b"?",
    b"#",
    b" ",
    b"\t",
    b"\x7f",
    b"\xc3\xa9",
    b"\xc0\xaf",
    b"\xff",
    b"%C3%A9",
    b"%u002f",
    b"{}",
    b"|",
    b"\"",
    b"<>",
    b"`^",
];

fn arb_segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(PRODUCT.as_bytes().to_vec()),
        4 => "[A-Za-z0-9][A-Za-z0-9._-]{0,63}".prop_map(String::into_bytes),
        4 => arb_semver().prop_map(String::into_bytes),
        8 => prop::collection::vec(prop::sample::select(PATH_TOKENS), 0..8).prop_map(|t| t.concat()),
        4 => prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| pct_encode_all(&b)),
        4 => any::<String>().prop_map(|s| pct_encode_some(s.as_bytes())),
        3 => prop::collection::vec(any::<u8>(), 0..16),
        3 => (1usize..20_000, prop::sample::select(&b"xX0.%-"[..]))
            .prop_map(|(n, b)| vec![b; n]),
        // Past hyper's URI limit (64 KiB): refused before any route runs.
        1 => Just(vec![b'a'; 70_000]),
    ]
}

fn arb_semver() -> impl Strategy<Value = String> {
    "(0|[1-9][0-9]{0,2})\\.(0|[1-9][0-9]{0,2})\\.(0|[1-9][0-9]{0,2})(-[0-9A-Za-z.-]{1,8})?(\\+[0-9A-Za-z.-]{1,8})?"
}

fn arb_query() -> impl Strategy<Value = Option<Vec<u8>>> {
    let value = prop_oneof![
        Just(b"stable".to_vec()),
        Just(b"beta".to_vec()),
        Just(b"nightly".to_vec()),
        Just(b"STABLE".to_vec()),
        Just(Vec::new()),
        "[a-z][a-z0-9-]{0,40}".prop_map(String::into_bytes),
        prop::collection::vec(prop::sample::select(PATH_TOKENS), 0..5).prop_map(|t| t.concat()),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| pct_encode_all(&b)),
        (1usize..10_000).prop_map(|n| vec![b'b'; n]),
    ];
    let key = prop_oneof![
        4 => Just(b"channel".to_vec()),
        1 => Just(b"channel[]".to_vec()),
        1 => Just(b"Channel".to_vec()),
        1 => Just(b"ch%61nnel".to_vec()),
        1 => "[a-z_]{0,8}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
    ];
    let pair = (key, prop::option::of(value)).prop_map(|(k, v)| match v {
        Some(v) => [k, b"=".to_vec(), v].concat(),
        None => k,
    });
    let query = prop_oneof![
        2 => pair.clone(),
        1 => prop::collection::vec(pair, 0..4).prop_map(|p| p.join(&b'&')),
    ];
    prop::option::weighted(0.4, query)
}

#[derive(Clone, Debug)]
struct CheckPath {
    product: Vec<u8>,
    version: Vec<u8>,
    /// Segments after the version, or a trailing slash when `Some(vec![])`.
    extra: Option<Vec<Vec<u8>>>,
    query: Option<Vec<u8>>,
}

impl CheckPath {
    fn target(&self) -> Vec<u8> {
        let mut t = b"/v1/updates/".to_vec();
        t.extend_from_slice(&self.product);
        t.push(b'/');
        t.extend_from_slice(&self.version);
        if let Some(extra) = &self.extra {
            t.push(b'/');
            t.extend_from_slice(&extra.join(&b'/'));
        }
        if let Some(q) = &self.query {
            t.push(b'?');
            t.extend_from_slice(q);
        }
        t
    }

    /// The installed version when this is a plain, valid check of `P` on
    /// the stable channel, so the answer is known.
    fn plain_check(&self) -> Option<Version> {
        if self.product != PRODUCT.as_bytes() || self.extra.is_some() || self.query.is_some() {
            return None;
        }
        let v = std::str::from_utf8(&self.version).ok()?;
        if v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            Version::parse(v).ok()
        } else {
            None
        }
    }
}

fn arb_check_path() -> impl Strategy<Value = CheckPath> {
    let product = prop_oneof![
        3 => Just(PRODUCT.as_bytes().to_vec()),
        1 => Just(b"Q".to_vec()),
        4 => arb_segment(),
    ];
    let version = prop_oneof![
        1 => arb_semver().prop_map(String::into_bytes),
        1 => arb_segment(),
    ];
    (
        product,
        version,
        prop::option::weighted(0.1, prop::collection::vec(arb_segment(), 0..3)),
        arb_query(),
    )
        .prop_map(|(product, version, extra, query)| CheckPath {
            product,
            version,
            extra,
            query,
        })
}

// ---------------------------------------------------------------------------
// GET /v1/updates/{product}/{version}
// ---------------------------------------------------------------------------

#[test]
fn update_check_paths_and_queries() {
    let server = Server::start();
    server.run(CHECK_CASES, arb_check_path(), |path| {
        let target = path.target();
        let r = server.send(&Request::get(target.clone()));
        assert_sane(&r, is_valid_target(&target))?;
        match r.status {
            200 => {
                let v = r.json();
                prop_assert!(v.is_some(), "200 without JSON: {:?}", r);
                assert_answer(&v.unwrap(), path.plain_check().as_ref())?;
                prop_assert!(r.header("etag").is_some() && r.header("set-cookie").is_none());
            }
            400..=499 => {
                prop_assert!(
                    path.plain_check().is_none(),
                    "a valid check refused: {:?}",
                    r
                );
            }
            _ => prop_assert!(false, "unexpected status: {:?}", r),
        }
        Ok(())
    });
    server.assert_still_answers();
}

// ---------------------------------------------------------------------------
// POST /v1/updates
// ---------------------------------------------------------------------------

/// One item of a well-typed batch: strings everywhere, valid or not.
#[derive(Clone, Debug)]
struct Item {
    product: String,
    version: String,
    channel: Option<Option<String>>,
}

fn arb_item() -> impl Strategy<Value = Item> {
    let product = prop_oneof![
        4 => Just(PRODUCT.to_owned()),
        1 => Just("Q".to_owned()),
        1 => "[A-Za-z0-9][A-Za-z0-9._-]{0,70}",
        1 => any::<String>(),
        1 => Just("../etc/passwd".to_owned()),
        1 => Just("P\0".to_owned()),
    ];
    let version = prop_oneof![
        4 => "(0|[1-9][0-9]?)\\.(0|[1-9][0-9]?)\\.(0|[1-9][0-9]?)(-[0-9A-Za-z.-]{1,6})?(\\+[0-9A-Za-z.-]{1,6})?",
        1 => "[0-9.+-]{0,12}",
        1 => any::<String>(),
        1 => Just("1.0.0 ".to_owned()),
        1 => Just("v1.0.0".to_owned()),
    ];
    let channel = prop_oneof![
        3 => Just(None),
        1 => Just(Some(None)),
        2 => Just(Some(Some("stable".to_owned()))),
        1 => Just(Some(Some("beta".to_owned()))),
        1 => Just(Some(Some("nightly".to_owned()))),
        1 => Just(Some(Some("Stable".to_owned()))),
        1 => any::<String>().prop_map(|s| Some(Some(s))),
    ];
    (product, version, channel).prop_map(|(product, version, channel)| Item {
        product,
        version,
        channel,
    })
}

impl Item {
    fn to_json(&self) -> Value {
        let mut v = json!({"product": self.product, "version": self.version});
        if let Some(c) = &self.channel {
            v["channel"] = json!(c);
        }
        v
    }

    /// What the server must answer for this item: `Ok(offered version)` or
    /// `Err(error code)`, by the rules of DESIGN.md and hand-written checks.
    fn expected(&self) -> Result<Option<&'static str>, &'static str> {
        let product_ok = {
            let b = self.product.as_bytes();
            (1..=64).contains(&b.len())
                && b[0].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        };
        if !product_ok {
            return Err("bad_product");
        }
        let Ok(installed) = Version::parse(&self.version) else {
            return Err("bad_version");
        };
        let channel = self
            .channel
            .clone()
            .flatten()
            .unwrap_or_else(|| "stable".to_owned());
        let channel_ok = {
            let b = channel.as_bytes();
            (1..=32).contains(&b.len())
                && b[0].is_ascii_lowercase()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        };
        if !channel_ok {
            return Err("bad_channel");
        }
        if self.product != PRODUCT {
            return Err("unknown_product");
        }
        if channel != "stable" && channel != "beta" {
            return Err("unknown_channel");
        }
        Ok(expected_offer(&installed))
    }
}

#[derive(Clone)]
enum Body {
    /// Anything at all.
    Bytes(Vec<u8>),
    /// Any JSON value.
    Json(Value),
    /// A well-formed request: the answer is known item by item (or, outside
    /// 1 to 32 items, the batch is refused).
    Items(Vec<Item>),
    /// `items` holding objects whose fields hold anything, or not there.
    WrongTypes(Vec<Value>),
    /// More items than allowed, or a huge array of anything.
    Huge(usize, Value),
    /// Nesting far past any sane depth, written as text.
    Deep(usize, u8),
    /// A body at the size limit, one byte either side.
    AtLimit(i64),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Bytes(b) => b.clone(),
            Body::Json(v) => serde_json::to_vec(v).unwrap(),
            Body::Items(items) => serde_json::to_vec(
                &json!({"items": items.iter().map(Item::to_json).collect::<Vec<_>>()}),
            )
            .unwrap(),
            Body::WrongTypes(items) => serde_json::to_vec(&json!({ "items": items })).unwrap(),
            Body::Huge(n, v) => {
                serde_json::to_vec(&json!({ "items": vec![v.clone(); *n] })).unwrap()
            }
            Body::Deep(depth, kind) => {
                let (open, close) = match kind % 3 {
                    0 => ("[", "]"),
                    1 => ("{\"a\":", "}"),
                    _ => ("[{\"product\":", "}]"),
                };
                let mut s = String::from("{\"items\":");
                s.push_str(&open.repeat(*depth));
                s.push_str("null");
                s.push_str(&close.repeat(*depth));
                s.push('}');
                s.into_bytes()
            }
            Body::AtLimit(delta) => {
                let limit = firmcast::api::MAX_JSON_BODY as i64;
                let item = json!({"product": PRODUCT, "version": "1.0.0"});
                let mut s = serde_json::to_string(&json!({ "items": [item] })).unwrap();
                let pad = (limit + delta - s.len() as i64).max(0) as usize;
                s.insert_str(s.len() - 1, &" ".repeat(pad));
                s.into_bytes()
            }
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Items(items) => write!(f, "Items({items:?})"),
            Body::Huge(n, v) => write!(f, "Huge({n} x {v})"),
            Body::Deep(d, k) => write!(f, "Deep({d}, {k})"),
            Body::AtLimit(d) => write!(f, "AtLimit({d:+})"),
            other => f.write_str(&show(&other.bytes())),
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        Just(json!("P")),
        Just(json!("1.0.0")),
    ];
    let key = prop_oneof![
        prop::sample::select(vec!["items", "product", "version", "channel"])
            .prop_map(str::to_owned),
        any::<String>(),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_wrong_item() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just(None),
        arb_json().prop_map(Some),
        Just(Some(json!("P"))),
        Just(Some(json!("1.0.0"))),
    ];
    (
        field.clone(),
        field.clone(),
        field,
        prop::option::weighted(0.2, any::<String>()),
    )
        .prop_map(|(p, v, c, extra)| {
            let mut o = serde_json::Map::new();
            for (k, f) in [("product", p), ("version", v), ("channel", c)] {
                if let Some(f) = f {
                    o.insert(k.into(), f);
                }
            }
            if let Some(k) = extra {
                o.insert(k, json!(1));
            }
            Value::Object(o)
        })
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Body::Bytes),
        2 => arb_json().prop_map(Body::Json),
        4 => prop::collection::vec(arb_item(), 1..=32).prop_map(Body::Items),
        // Just outside the batch limits (1 to 32 items).
        1 => prop_oneof![Just(0usize), 33usize..=36]
            .prop_flat_map(|n| prop::collection::vec(arb_item(), n))
            .prop_map(Body::Items),
        2 => prop::collection::vec(arb_wrong_item(), 0..6).prop_map(Body::WrongTypes),
        1 => (33usize..20_000, prop_oneof![
                Just(json!({"product": PRODUCT, "version": "1.0.0"})),
                Just(json!(0)),
                Just(json!([])),
            ]).prop_map(|(n, v)| Body::Huge(n, v)),
        1 => (1usize..20_000, any::<u8>()).prop_map(|(d, k)| Body::Deep(d, k)),
        1 => (-1i64..=1).prop_map(Body::AtLimit),
    ]
}

fn arb_content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        12 => Just(Some(b"application/json".to_vec())),
        1 => Just(Some(b"application/json; charset=utf-8".to_vec())),
        1 => Just(Some(b"APPLICATION/JSON".to_vec())),
        1 => Just(Some(b"text/plain".to_vec())),
        1 => Just(Some(b"application/jsonx".to_vec())),
        1 => Just(None),
        1 => prop::collection::vec(32u8..127, 0..40).prop_map(Some),
        1 => prop::collection::vec(128u8..=255, 1..8).prop_map(Some),
    ]
}

fn is_json_content_type(ct: &Option<Vec<u8>>) -> bool {
    ct.as_deref()
        .and_then(|c| std::str::from_utf8(c).ok())
        .is_some_and(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

#[test]
fn batch_update_bodies() {
    let server = Server::start();
    let limit = firmcast::api::MAX_JSON_BODY as usize;
    server.run(
        BATCH_CASES,
        (arb_body(), arb_content_type()),
        |(body, ct)| {
            let bytes = body.bytes();
            let mut req = Request {
                method: "POST",
                target: b"/v1/updates".to_vec(),
                headers: Vec::new(),
                body: Some(bytes.clone()),
            };
            if let Some(ct) = &ct {
                req.headers.push(("Content-Type".into(), ct.clone()));
            }
            let r = server.send(&req);
            assert_sane(&r, true)?;
            if !is_json_content_type(&ct) {
                // warp reads headers as visible ASCII; other bytes make the
                // header itself malformed (400), not merely the wrong type.
                let readable = ct
                    .as_deref()
                    .is_none_or(|c| c.iter().all(|b| (32..127).contains(b)));
                let code = error_code(&r);
                if readable {
                    prop_assert_eq!((r.status, code.as_str()), (415, "unsupported_media_type"));
                } else {
                    prop_assert!(
                        [(415, "unsupported_media_type"), (400, "bad_header")]
                            .contains(&(r.status, code.as_str())),
                        "{:?}",
                        r
                    );
                }
                return Ok(());
            }
            if bytes.len() > limit {
                let code = error_code(&r);
                prop_assert_eq!((r.status, code.as_str()), (413, "too_large"));
                return Ok(());
            }
            match &body {
                Body::Items(items) if !(1..=32).contains(&items.len()) => {
                    let code = error_code(&r);
                    prop_assert_eq!((r.status, code.as_str()), (400, "bad_batch"));
                }
                Body::Items(items) => {
                    prop_assert_eq!(r.status, 200, "{:?}", r);
                    let v = r.json().unwrap_or_default();
                    let results = v["results"].as_array();
                    prop_assert_eq!(results.map(Vec::len), Some(items.len()), "{:?}", r);
                    for (item, got) in items.iter().zip(results.unwrap()) {
                        prop_assert_eq!(&got["product"], &json!(item.product));
                        prop_assert_eq!(&got["version"], &json!(item.version));
                        match item.expected() {
                            Ok(offer) => {
                                prop_assert!(got.get("error").is_none(), "{:?}: {}", item, got);
                                prop_assert_eq!(
                                    got["update"]["version"].as_str(),
                                    offer,
                                    "{:?}",
                                    item
                                );
                                prop_assert!(got["freshness"]["signatures"].is_array());
                            }
                            Err(code) => {
                                prop_assert_eq!(
                                    got["error"].as_str(),
                                    Some(code),
                                    "{:?}: {}",
                                    item,
                                    got
                                );
                                prop_assert!(got["message"]
                                    .as_str()
                                    .is_some_and(|m| !m.is_empty()));
                            }
                        }
                    }
                }
                Body::Huge(..) => prop_assert_eq!(r.status, 400, "{:?}", r),
                Body::Deep(..) => prop_assert_eq!(r.status, 400, "{:?}", r),
                Body::AtLimit(_) => prop_assert_eq!(r.status, 200, "{:?}", r),
                _ => {
                    // The answer is 200 only to a request of 1 to 32 items.
                    if r.status == 200 {
                        let sent: Value = serde_json::from_slice(&bytes).unwrap();
                        let n = sent["items"].as_array().map_or(0, Vec::len);
                        prop_assert!((1..=32).contains(&n), "{:?}", r);
                        let v = r.json().unwrap_or_default();
                        prop_assert_eq!(v["results"].as_array().map(Vec::len), Some(n));
                    } else {
                        prop_assert_eq!(r.status, 400, "{:?}", r);
                    }
                }
            }
            Ok(())
        },
    );
    server.assert_still_answers();
}

// ---------------------------------------------------------------------------
// Range on GET /v1/artifacts/{product}/{version}
// ---------------------------------------------------------------------------

/// Numbers around the edges of a file of `FW_SIZE` bytes.
fn arb_pos() -> BoxedStrategy<String> {
    let size = FW_SIZE as u64;
    prop_oneof![
        12 => (0..size + 2).prop_map(|n| n.to_string()),
        2 => (size..size + 10).prop_map(|n| n.to_string()),
        4 => prop::sample::select(vec![0, 1, size - 1, size, size + 1, u64::MAX - 1, u64::MAX])
            .prop_map(|n| n.to_string()),
        3 => Just(String::new()),
        1 => Just("18446744073709551616".to_owned()),
        1 => Just("000000000000000000000001".to_owned()),
        1 => Just("00".to_owned()),
        1 => Just("-1".to_owned()),
        1 => Just("+1".to_owned()),
        1 => Just("1e3".to_owned()),
        1 => Just("0x10".to_owned()),
    ]
    .boxed()
}

fn arb_range_header() -> impl Strategy<Value = Vec<u8>> {
    let ws = prop::sample::select(vec!["", "", "", " ", "\t", "  "]);
    let size = FW_SIZE as u64;
    let spec = prop_oneof![
        (arb_pos(), ws.clone(), arb_pos()).prop_map(|(a, w, b)| format!("{a}{w}-{w}{b}")),
        (0..size + 2, 0..size + 2).prop_map(|(a, len)| format!("{a}-{}", a + len)),
    ];
    let unit = prop_oneof![
        8 => Just("bytes="),
        1 => prop::sample::select(vec!["bytes =", "Bytes=", "BYTES=", "bytes", "items=", ""]),
    ];
    let specs = prop_oneof![
        4 => prop::collection::vec(spec.clone(), 1..=1),
        1 => prop::collection::vec(spec, 2..4),
    ];
    prop_oneof![
        12 => (ws.clone(), unit, specs, ws)
            .prop_map(|(w1, u, specs, w2)| format!("{w1}{u}{}{w2}", specs.join(",")).into_bytes()),
        2 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => ("bytes=[ -~]{0,20}").prop_map(String::into_bytes),
        // Legal header bytes beyond ASCII (obs-text).
        1 => prop::collection::vec(prop_oneof![32u8..127, 128u8..=255], 0..30),
    ]
}

#[derive(Clone, Debug)]
struct RangeCase {
    range: Option<Vec<u8>>,
    /// `If-Range`: the real ETag, another, or junk.
    if_range: Option<u8>,
    head: bool,
}

fn arb_range_case() -> impl Strategy<Value = RangeCase> {
    (
        prop::option::weighted(0.95, arb_range_header()),
        prop::option::weighted(0.2, 0u8..3),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(range, if_range, head)| RangeCase {
            range,
            if_range,
            head,
        })
}

#[test]
fn artifact_ranges() {
    let server = Server::start();
    let size = server.fw.len() as u64;
    let etag = format!("\"{}\"", firmcast_signing::digest::sha256_hex(&server.fw));
    let target = format!("/v1/artifacts/{PRODUCT}/{VERSION}").into_bytes();
    server.run(RANGE_CASES, arb_range_case(), |case| {
        let mut req = Request::get(target.clone());
        if case.head {
            req.method = "HEAD";
        }
        if let Some(h) = &case.range {
            req.headers.push(("Range".into(), h.clone()));
        }
        let if_range_matches = match case.if_range {
            None => true,
            Some(0) => {
                req.headers
                    .push(("If-Range".into(), etag.clone().into_bytes()));
                true
            }
            Some(1) => {
                req.headers.push(("If-Range".into(), b"\"other\"".to_vec()));
                false
            }
            Some(_) => {
                req.headers
                    .push(("If-Range".into(), b"Wed, 21 Oct 2015 07:28:00 GMT".to_vec()));
                false
            }
        };
        let r = server.send(&req);
        prop_assert!(
            matches!(r.status, 200 | 206 | 416),
            "only 200, 206 or 416: {:?}",
            r
        );
        let length: Option<u64> = r.header("content-length").and_then(|l| l.parse().ok());
        let body_len = if case.head {
            length.unwrap_or(0)
        } else {
            r.body.len() as u64
        };
        if !case.head {
            prop_assert_eq!(
                length,
                Some(body_len),
                "Content-Length is the body's: {:?}",
                r
            );
        }

        // The parser's verdict, for headers a client can send as text.
        let text = case
            .range
            .as_deref()
            .and_then(|h| std::str::from_utf8(h).ok());
        let verdict = if if_range_matches {
            range::parse(text, size)
        } else {
            RangeRequest::Full
        };
        match r.status {
            200 => {
                prop_assert_eq!(body_len, size);
                if !case.head {
                    prop_assert!(r.body == server.fw, "the whole file");
                }
                prop_assert!(r.header("content-range").is_none());
                if case.range.as_deref().is_none_or(|h| h.is_ascii()) {
                    prop_assert_eq!(verdict, RangeRequest::Full);
                }
            }
            206 => {
                let cr = r.header("content-range").unwrap_or("");
                let parsed = cr
                    .strip_prefix("bytes ")
                    .and_then(|s| s.split_once('/'))
                    .and_then(|(span, total)| {
                        let (a, b) = span.split_once('-')?;
                        Some((
                            a.parse::<u64>().ok()?,
                            b.parse::<u64>().ok()?,
                            total.parse::<u64>().ok()?,
                        ))
                    });
                prop_assert!(parsed.is_some(), "Content-Range {:?}", cr);
                let (a, b, total) = parsed.unwrap();
                prop_assert!(
                    a <= b && b < size && total == size,
                    "Content-Range {:?}",
                    cr
                );
                prop_assert_eq!(body_len, b - a + 1, "Content-Range {:?} vs body", cr);
                if !case.head {
                    prop_assert!(
                        r.body == server.fw[a as usize..=b as usize],
                        "the named bytes"
                    );
                }
                prop_assert_eq!(verdict, RangeRequest::Partial(a..b + 1));
            }
            _ => {
                let expected = format!("bytes */{size}");
                prop_assert_eq!(r.header("content-range"), Some(expected.as_str()));
                if !case.head {
                    assert_error_shape(&r)?;
                }
                prop_assert_eq!(verdict, RangeRequest::Unsatisfiable);
            }
        }
        Ok(())
    });
    server.assert_still_answers();
}

// ---------------------------------------------------------------------------
// The Range parser itself (its unit proptest covers arbitrary text only)
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(PURE_CASES))]

    /// Every well-formed single range means what RFC 9110 says.
    #[test]
    fn valid_ranges_round_trip(size in prop_oneof![1u64..2000, any::<u64>()], a in any::<u64>(), len in any::<u64>(), suffix in any::<u64>()) {
        let a = a % size.saturating_add(2);
        let b = a.saturating_add(len % (size / 2 + 2));
        let closed = range::parse(Some(&format!("bytes={a}-{b}")), size);
        if a >= size {
            prop_assert_eq!(&closed, &RangeRequest::Unsatisfiable);
        } else {
            prop_assert_eq!(&closed, &RangeRequest::Partial(a..b.saturating_add(1).min(size)));
        }
        let open = range::parse(Some(&format!("bytes={a}-")), size);
        if a >= size {
            prop_assert_eq!(open, RangeRequest::Unsatisfiable);
        } else {
            prop_assert_eq!(open, RangeRequest::Partial(a..size));
        }
        let n = suffix % (size.saturating_add(2));
        let tail = range::parse(Some(&format!("bytes=-{n}")), size);
        if n == 0 || size == 0 {
            prop_assert_eq!(tail, RangeRequest::Unsatisfiable);
        } else {
            prop_assert_eq!(tail, RangeRequest::Partial(size - n.min(size)..size));
        }
        // What a 206 says round-trips to the same range.
        if let RangeRequest::Partial(r) = closed {
            let again = range::parse(Some(&format!("bytes={}-{}", r.start, r.end - 1)), size);
            prop_assert_eq!(again, RangeRequest::Partial(r));
        }
    }

    /// Range-shaped junk: never a panic, partial ranges inside the file,
    /// and 416 only for a range that starts past the end.
    #[test]
    fn range_shaped_text_stays_in_bounds(h in arb_range_header(), size in prop_oneof![0u64..3, 1u64..2000, any::<u64>()]) {
        let Ok(h) = String::from_utf8(h) else { return Ok(()) };
        match range::parse(Some(&h), size) {
            RangeRequest::Partial(r) => prop_assert!(r.start < r.end && r.end <= size, "{:?}", r),
            RangeRequest::Unsatisfiable => prop_assert!(h.contains('-'), "{}", h),
            RangeRequest::Full => {}
        }
    }
}
