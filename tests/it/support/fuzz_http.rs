//! Shared by the fuzz targets on the public request paths (`fuzz_update_paths`,
//! `fuzz_update_batch`, `fuzz_ranges`): the real server in process with one
//! published release, a raw HTTP/1.1 client over TCP (so any byte can be
//! sent), and the checks every answer must pass.

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use semver::Version;
use serde_json::Value;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::app::{firmware, spawn_app, Rel, TestApp};

/// `default` cases unless `PROPTEST_CASES` says otherwise.
pub fn config(default: u32) -> ProptestConfig {
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
pub const PRODUCT: &str = "P";
pub const VERSION: &str = "1.1.0";
pub const FW_SIZE: usize = 1000;

pub struct Server {
    rt: tokio::runtime::Runtime,
    app: Option<TestApp>,
    addr: SocketAddr,
    pub fw: Vec<u8>,
}

impl Server {
    pub fn start() -> Self {
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

    pub fn send(&self, req: &Request) -> Reply {
        self.rt
            .block_on(send_raw(self.addr, &req.to_bytes(), req.method == "HEAD"))
    }

    /// Runs `property` for every generated case; panics with the minimal
    /// failing input.
    pub fn run<S: Strategy>(
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
    pub fn assert_still_answers(&self) {
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
pub struct Request {
    pub method: &'static str,
    pub target: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn get(target: Vec<u8>) -> Self {
        Request {
            method: "GET",
            target,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
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
pub fn show(bytes: &[u8]) -> String {
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

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// hyper's own answer to a request it could not parse (before any route
    /// runs): no body, no content type.
    pub fn is_transport_rejection(&self) -> bool {
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
pub fn assert_error_shape(r: &Reply) -> Result<(), TestCaseError> {
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
pub fn assert_sane(r: &Reply, valid_http: bool) -> Result<(), TestCaseError> {
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

pub fn error_code(r: &Reply) -> String {
    r.json()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What an update check of `P` must answer for an installed version.
pub fn expected_offer(installed: &Version) -> Option<&'static str> {
    (*installed < Version::parse(VERSION).unwrap()).then_some(VERSION)
}

/// An update-check answer: `update` null or the offer, and a freshness envelope.
pub fn assert_answer(v: &Value, installed: Option<&Version>) -> Result<(), TestCaseError> {
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
