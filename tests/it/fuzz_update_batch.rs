//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for
//! `POST /v1/updates` with arbitrary bodies and content types, through the
//! real server in process. Requests go over raw TCP so any byte can be sent;
//! nothing may answer 5xx, every 4xx from the service is the JSON error shape,
//! a well-formed batch gets the right answer item by item, and valid requests
//! keep getting the right answer after the run.
//!
//! The property runs a fixed number of cases (`BATCH_CASES` below, one request
//! per case) so the file takes about 10 s in a debug build on two cores. For a
//! longer local run set `PROPTEST_CASES`, which replaces the count, e.g.
//! `PROPTEST_CASES=50000 cargo nextest run --test fuzz_update_batch`.
//! A failure prints the minimal input; nothing is written to the source tree.

use crate::support;

use proptest::prelude::*;
use semver::Version;
use serde_json::{json, Value};
use std::fmt;
use support::fuzz_http::{assert_sane, error_code, expected_offer, show, Request, Server, PRODUCT};

/// Case count: one request each.
const BATCH_CASES: u32 = 5_000;

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
