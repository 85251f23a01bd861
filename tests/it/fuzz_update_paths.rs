//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for
//! `GET /v1/updates/{p}/{v}` with arbitrary paths and query strings, through
//! the real server in process. Requests go over raw TCP so any byte can be
//! sent; nothing may answer 5xx, every 4xx from the service is the JSON error
//! shape, a plain valid check gets the right answer, and valid requests keep
//! getting it after the run.
//!
//! The property runs a fixed number of cases (`CHECK_CASES` below, one request
//! per case) so the file takes about 5 s in a debug build on two cores. For a
//! longer local run set `PROPTEST_CASES`, which replaces the count, e.g.
//! `PROPTEST_CASES=50000 cargo nextest run --test fuzz_update_paths`.
//! A failure prints the minimal input; nothing is written to the source tree.

use crate::support;

use proptest::prelude::*;
use semver::Version;
use support::fuzz_http::{assert_answer, assert_sane, Request, Server, PRODUCT};

/// Case count: one request each.
const CHECK_CASES: u32 = 12_000;

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
