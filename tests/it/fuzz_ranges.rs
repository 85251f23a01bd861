//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for `Range` and
//! `If-Range` on `GET`/`HEAD /v1/artifacts/...`, through the real server in
//! process, and for the Range parser itself. Requests go over raw TCP so any
//! byte can be sent; only 200, 206 or 416 may answer, each with exactly the
//! bytes (and `Content-Range`) the parser's verdict names, and valid requests
//! keep getting the right answer after the run.
//!
//! Each property runs a fixed number of cases (the `*_CASES` constants below,
//! one request per case for the server property) so the file takes about 4 s
//! in a debug build on two cores. For a longer local run set `PROPTEST_CASES`,
//! which replaces every per-property count, e.g.
//! `PROPTEST_CASES=50000 cargo nextest run --test fuzz_ranges`.
//! A failure prints the minimal input; nothing is written to the source tree.

use crate::support;

use firmcast::api::range::{self, RangeRequest};
use proptest::prelude::*;
use support::fuzz_http::{assert_error_shape, config, Request, Server, FW_SIZE, PRODUCT, VERSION};

/// Case counts: one request each for the server property.
const RANGE_CASES: u32 = 8_000;
const PURE_CASES: u32 = 20_000;

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
