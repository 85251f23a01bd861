//! The batch check, `POST /v1/updates`: the app and its paired devices in
//! one request. The usual body is read by hand and the answer written into
//! one buffer sized up front; anything unusual is read by serde and
//! answered the same way.

use super::updates::{put_answer, resolve, Answer, DEFAULT_CHANNEL, MAX_BATCH};
use super::{json_response, parse_json, MAX_JSON_BODY};
use crate::catalog::Catalog;
use crate::edge::body::RequestBody;
use crate::edge::Response;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::rollout::Rollout;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde::Deserialize;
use std::borrow::Cow;
use std::net::IpAddr;

/// `POST /v1/updates`.
pub async fn check_batch(
    catalog: &Catalog,
    rollout: &Rollout,
    metrics: &Metrics,
    parts: &Parts,
    body: &mut RequestBody,
    ip: IpAddr,
) -> Result<Response, ApiError> {
    let h = &parts.headers;
    let ct = h.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
    let len = super::content_length(h)?;
    // What nearly every client sends needs no picking apart.
    if ct != Some(b"application/json") || len.is_none_or(|l| l > MAX_JSON_BODY) {
        super::json_headers_ok(ct, len, MAX_JSON_BODY)?;
    }
    let body = super::read_body(body, MAX_JSON_BODY).await?;
    batch_answer(&body, ip, catalog, rollout, metrics)
}

/// The batch body as serde reads it: any valid JSON of this shape, borrowed
/// from the body where no escapes force a copy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    items: Vec<BatchItem<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem<'a> {
    #[serde(borrow)]
    product: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    /// Checked after parsing, to say what is wrong with it.
    #[serde(default)]
    last_day: Option<serde_json::Value>,
}

/// A batch item's `last_day`: absent (or null), or the whole number an
/// earlier answer gave.
fn item_last_day(value: Option<&serde_json::Value>) -> Result<Option<u32>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {
            super::updates::last_day(&n.to_string()).map(Some)
        }
        Some(other) => super::updates::last_day(&other.to_string()).map(Some),
    }
}

/// One item of a batch, however it was read.
#[derive(Clone, Copy)]
struct Item<'a> {
    product: &'a str,
    version: &'a str,
    channel: &'a str,
    last_day: Option<u32>,
    /// No string of the item needs escaping in JSON: written as it is.
    plain: bool,
}

impl Item<'_> {
    const NONE: Item<'static> = Item {
        product: "",
        version: "",
        channel: "",
        last_day: None,
        plain: true,
    };
}

/// What one item resolved to. Errors are rare, so they wait in a `Vec`
/// that is only allocated when there is one.
#[derive(Clone, Copy)]
enum Outcome<'a> {
    Answer(Answer<'a>),
    Error(usize),
}

fn batch_answer(
    body: &[u8],
    ip: IpAddr,
    catalog: &Catalog,
    rollout: &Rollout,
    metrics: &Metrics,
) -> Result<Response, ApiError> {
    let mut items = [Item::NONE; MAX_BATCH];
    let parsed: BatchRequest;
    let n = match std::str::from_utf8(body)
        .ok()
        .and_then(|b| parse_plain(b, &mut items))
    {
        Some(n) => n,
        None => {
            parsed = parse_json(body)?;
            if parsed.items.is_empty() || parsed.items.len() > MAX_BATCH {
                return Err(ApiError::bad_request(
                    "bad_batch",
                    format!(
                        "{} items; send 1 to {MAX_BATCH} (the app and its paired devices)",
                        parsed.items.len()
                    ),
                ));
            }
            for (slot, item) in items.iter_mut().zip(&parsed.items) {
                let channel = item.channel.as_deref().unwrap_or(DEFAULT_CHANNEL);
                *slot = Item {
                    product: &item.product,
                    version: &item.version,
                    channel,
                    last_day: item_last_day(item.last_day.as_ref())?,
                    plain: !needs_escape(&item.product)
                        && !needs_escape(&item.version)
                        && !needs_escape(channel),
                };
            }
            parsed.items.len()
        }
    };
    let items = &items[..n];

    // Resolve every item first, so the answer is written into one buffer
    // of its exact size: no regrowth, and `Bytes` takes it without a copy.
    let snap = catalog.load();
    let mut outcomes = [Outcome::Error(0); MAX_BATCH];
    let mut errors = Vec::new();
    let day = rollout.today();
    let mut day_text = itoa::Buffer::new();
    let day_text = day_text.format(day).as_bytes();
    // The items, n - 1 commas, and `],"day":N}`.
    let mut size =
        RESULTS_OPEN.len() + n - 1 + 1 + super::updates::DAY_KEY.len() + day_text.len() + 1;
    for (item, outcome) in items.iter().zip(&mut outcomes) {
        *outcome = match resolve(&snap, item.product, item.version, item.channel, ip) {
            Ok(a) => {
                metrics.check(if a.offer.is_some() { "update" } else { "none" });
                rollout.checked(item.product, item.channel, item.version, item.last_day);
                Outcome::Answer(a)
            }
            Err(e) => {
                metrics.check("error");
                errors.push(e);
                Outcome::Error(errors.len() - 1)
            }
        };
        put_item(
            &mut |text: &[u8]| size += text.len(),
            item,
            *outcome,
            &errors,
        );
    }

    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(RESULTS_OPEN);
    for (i, (item, outcome)) in items.iter().zip(&outcomes).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_item(
            &mut |text| out.extend_from_slice(text),
            item,
            *outcome,
            &errors,
        );
    }
    out.push(b']');
    out.extend_from_slice(super::updates::DAY_KEY);
    out.extend_from_slice(day_text);
    out.push(b'}');
    debug_assert_eq!(out.len(), size, "the batch answer's size was miscounted");
    let mut resp = json_response(StatusCode::OK, out);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(resp)
}

const RESULTS_OPEN: &[u8] = b"{\"results\":[";

/// One item's answer, piece by piece to `put` (counted or written by the
/// same code): `{"product":..,"version":..,` then `"channel":..,"update":..,
/// "freshness":..}` or `"error":..,"message":..}`.
fn put_item(
    put: &mut impl FnMut(&[u8]),
    item: &Item<'_>,
    outcome: Outcome<'_>,
    errors: &[ApiError],
) {
    put(b"{\"product\":");
    put_str(put, item.product, item.plain);
    put(b",\"version\":");
    put_str(put, item.version, item.plain);
    match outcome {
        Outcome::Answer(a) => {
            put(b",\"channel\":");
            put_str(put, item.channel, item.plain);
            put(b",");
            put_answer(put, &a);
        }
        Outcome::Error(e) => {
            let e = &errors[e];
            put(b",\"error\":");
            put_str(put, e.code, false);
            put(b",\"message\":");
            put_str(put, &e.message, false);
        }
    }
    put(b"}");
}

/// Reads a batch body of the shape apps send, `{"items":[{"product":..,
/// "version":..,"channel":..},..]}` with 1 to [`MAX_BATCH`] items and strings
/// free of escapes, into `items`; returns how many. serde costs more than
/// resolving three items, so this reads that shape by hand and says `None`
/// to anything else (escapes, `null`, unknown or repeated keys, no items or
/// too many, anything malformed): serde then reads it, or words the error,
/// exactly as before.
fn parse_plain<'a>(body: &'a str, items: &mut [Item<'a>; MAX_BATCH]) -> Option<usize> {
    let mut p = Cursor { s: body, at: 0 };
    p.expect(b'{')?;
    p.expect(b'"')?;
    p.literal(b"items\"")?;
    p.expect(b':')?;
    p.expect(b'[')?;
    let mut n = 0;
    loop {
        *items.get_mut(n)? = p.item()?;
        n += 1;
        match p.next()? {
            b',' => {}
            b']' => break,
            _ => return None,
        }
    }
    p.expect(b'}')?;
    p.next().is_none().then_some(n)
}

/// A position in a JSON text, for [`parse_plain`].
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    /// The next byte that is not JSON whitespace, consumed.
    fn next(&mut self) -> Option<u8> {
        let bytes = self.s.as_bytes();
        while let Some(&c) = bytes.get(self.at) {
            self.at += 1;
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
        }
        None
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// `want`, right here.
    fn literal(&mut self, want: &[u8]) -> Option<()> {
        self.s.as_bytes()[self.at..]
            .starts_with(want)
            .then(|| self.at += want.len())
    }

    /// The rest of a string after its opening quote, if it holds no escape
    /// and no control character (serde reads those).
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at;
        let end = start + string_stop(&self.s.as_bytes()[start..])?;
        (self.s.as_bytes()[end] == b'"').then(|| {
            self.at = end + 1;
            &self.s[start..end]
        })
    }

    /// `{"product":..,"version":..,"channel":..}`, keys in any order,
    /// `channel` optional.
    fn item(&mut self) -> Option<Item<'a>> {
        // The three keys are 8 bytes with their closing quote: one compare.
        const PRODUCT: u64 = u64::from_le_bytes(*b"product\"");
        const VERSION: u64 = u64::from_le_bytes(*b"version\"");
        const CHANNEL: u64 = u64::from_le_bytes(*b"channel\"");
        const LAST_DAY: u64 = u64::from_le_bytes(*b"last_day");
        self.expect(b'{')?;
        let (mut product, mut version, mut channel) = (None, None, None);
        let mut last_day = None;
        loop {
            self.expect(b'"')?;
            let key = self.s.as_bytes().get(self.at..self.at + 8)?;
            let slot = match u64::from_le_bytes(key.try_into().ok()?) {
                PRODUCT => &mut product,
                VERSION => &mut version,
                CHANNEL => &mut channel,
                LAST_DAY if self.s.as_bytes().get(self.at + 8) == Some(&b'"') => {
                    self.at += 9;
                    self.expect(b':')?;
                    if last_day.replace(self.day()?).is_some() {
                        return None;
                    }
                    match self.next()? {
                        b',' => continue,
                        b'}' => break,
                        _ => return None,
                    }
                }
                _ => return None,
            };
            self.at += 8;
            self.expect(b':')?;
            self.expect(b'"')?;
            if slot.replace(self.string()?).is_some() {
                return None;
            }
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        Some(Item {
            product: product?,
            version: version?,
            channel: channel.unwrap_or(DEFAULT_CHANNEL),
            last_day,
            plain: true,
        })
    }

    /// A day number: digits without a leading zero, as JSON writes a whole
    /// number (anything else is serde's to read, or to refuse).
    fn day(&mut self) -> Option<u32> {
        let b = self.s.as_bytes();
        while matches!(b.get(self.at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
        let start = self.at;
        while b.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.s[start..self.at];
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) || digits.len() > 9 {
            return None;
        }
        if matches!(b.get(self.at), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        digits.parse().ok()
    }
}

/// Where a string that starts `b` stops being plain: the index of the first
/// quote, backslash or control character. Eight bytes a step, as products
/// and versions are about that long.
fn string_stop(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let mut at = 0;
    while let Some(word) = b.get(at..at + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let (quote, backslash) = (w ^ (ONES * b'"' as u64), w ^ (ONES * b'\\' as u64));
        // A byte's high bit is set where it is zero (so, a quote or a
        // backslash in `w`) or below 0x20. Borrows can only flag bytes
        // above a flagged one: the lowest flag is exact.
        let stops = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH;
        if stops != 0 {
            return Some(at + stops.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    Some(at + tail)
}

/// True when serde_json would escape something in `s`: a quote, a
/// backslash or a control character.
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20)
}

/// `s` as a JSON string, escaped as serde_json escapes it; `plain`: known
/// to need no escaping, so written as it is.
fn put_str(put: &mut impl FnMut(&[u8]), s: &str, plain: bool) {
    if plain || !needs_escape(s) {
        put(b"\"");
        put(s.as_bytes());
        put(b"\"");
        return;
    }
    struct Put<'p, F>(&'p mut F);
    impl<F: FnMut(&[u8])> std::io::Write for Put<'_, F> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            (self.0)(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Put(put), s).expect("strings always serialize");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// The items serde reads from `body`, as `(product, version, channel)`.
    type Read = (String, String, String, Option<u32>);

    /// What serde reads, with `last_day` checked as the handler checks it.
    fn by_serde(body: &str) -> Option<Vec<Read>> {
        let req: BatchRequest = serde_json::from_str(body).ok()?;
        let items = req.items.iter().map(|i| {
            let channel = i.channel.as_deref().unwrap_or(DEFAULT_CHANNEL);
            Some((
                i.product.to_string(),
                i.version.to_string(),
                channel.to_owned(),
                item_last_day(i.last_day.as_ref()).ok()?,
            ))
        });
        items.collect()
    }

    fn by_hand(body: &str) -> Option<Vec<Read>> {
        let mut items = [Item::NONE; MAX_BATCH];
        let n = parse_plain(body, &mut items)?;
        let items = items[..n].iter().map(|i| {
            assert!(
                i.plain
                    && ![i.product, i.version, i.channel]
                        .iter()
                        .any(|s| needs_escape(s))
            );
            (
                i.product.to_owned(),
                i.version.to_owned(),
                i.channel.to_owned(),
                i.last_day,
            )
        });
        Some(items.collect())
    }

    /// Whatever the hand-written reader takes, serde reads alike.
    fn agrees(body: &str) -> Result<(), TestCaseError> {
        if let Some(hand) = by_hand(body) {
            prop_assert_eq!(Some(hand), by_serde(body), "{:?}", body);
        }
        Ok(())
    }

    #[test]
    fn the_usual_bodies_are_read_by_hand() {
        let three = r#"{"items":[{"product":"WH-00250","version":"1.1.0"},{"product":"WH-00166","version":"1.0.0","channel":"stable"},{"product":"WH-00499","version":"1.2.0"}]}"#;
        let spaced = " {\n \"items\" : [ { \"version\" : \"2.0.0-rc.1+b7\" ,\t\"channel\":\"beta\", \"product\" : \"é-P\" } ] }\r\n";
        let full: String = format!(
            r#"{{"items":[{}]}}"#,
            vec![r#"{"product":"P","version":"1.0.0"}"#; MAX_BATCH].join(",")
        );
        for body in [three, spaced, &full] {
            let hand = by_hand(body).unwrap_or_else(|| panic!("not read by hand: {body}"));
            assert_eq!(Some(hand), by_serde(body));
        }
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        let over: String = format!(
            r#"{{"items":[{}]}}"#,
            vec![r#"{"product":"P","version":"1.0.0"}"#; MAX_BATCH + 1].join(",")
        );
        for body in [
            r#"{"items":[]}"#,
            &over,
            r#"{"items":[{"product":"P","version":"1.0.0","channel":null}]}"#,
            r#"{"items":[{"product":"P\u0051","version":"1.0.0"}]}"#,
            r#"{"items":[{"product":"P","version":"1.0.0","product":"Q"}]}"#,
            r#"{"items":[{"product":"P","version":"1.0.0","extra":"x"}]}"#,
            r#"{"items":[{"product":"P"}]}"#,
            r#"{"items":[{}]}"#,
            r#"{"items":[["P","1.0.0"]]}"#,
            r#"{"items":[{"product":"P","version":"1.0.0"}],"items":[]}"#,
            r#"{"items":[{"product":"P","version":"1.0.0"},]}"#,
            r#"{"items":[{"product":"P","version":"1.0.0"}]} x"#,
            "{\"items\":[{\"product\":\"P\",\"version\":\"1.0.0\t\"}]}",
            "\u{feff}{\"items\":[{\"product\":\"P\",\"version\":\"1.0.0\"}]}",
            r#"{"items":[{"product":1,"version":"1.0.0"}]}"#,
            "",
            "{}",
        ] {
            assert_eq!(by_hand(body), None, "{body}");
        }
    }

    #[test]
    fn string_stop_finds_the_first_quote_backslash_or_control() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let fill = [b'a', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']', b' '];
        for len in 0..20 {
            for at in 0..=len {
                for stop in [b'"', b'\\', 0, 0x1f, b'a'] {
                    for &f in &fill {
                        let mut b = vec![f; len];
                        if at < len {
                            b[at] = stop;
                        }
                        assert_eq!(string_stop(&b), naive(&b), "{b:?}");
                        // Later stops never hide the first one.
                        b.extend_from_slice(b"\"\\\x00");
                        assert_eq!(string_stop(&b), naive(&b), "{b:?}");
                    }
                }
            }
        }
    }

    /// A batch body built from valid and invalid pieces, so the
    /// hand-written reader is driven both ways.
    fn arb_body() -> impl Strategy<Value = String> {
        let ws = || {
            prop_oneof![
                30 => prop::sample::select(vec!["", "", "", " ", "\n", "\t", "\r\n "]),
                1 => Just("\u{a0}"),
            ]
        };
        let text = prop_oneof![
            30 => "[A-Za-z0-9._-]{0,12}",
            1 => "[ -~]{0,12}",
            1 => any::<String>(),
            1 => Just("a\\\"b".to_owned()),
            1 => Just("\\u0041".to_owned()),
        ];
        let value = prop_oneof![
            30 => text.prop_map(|t| format!("\"{t}\"")),
            1 => Just("null".to_owned()),
            1 => Just("1".to_owned()),
            1 => Just("\"x".to_owned()),
        ];
        let key = prop_oneof![
            30 => prop::sample::select(vec!["product", "version", "channel"]),
            1 => prop::sample::select(vec!["items", "Product", "productx", "prod", "", "last_day"]),
        ];
        // A day number and its near misses.
        let day = prop_oneof![
            20 => (0u32..50_000).prop_map(|d| d.to_string()),
            1 => prop::sample::select(vec!["-1", "01", "1.0", "1e3", "\"20424\"", "null", "4294967296", "99999999999"])
                .prop_map(str::to_owned),
        ];
        let last_day = (ws(), ws(), ws(), day, ws())
            .prop_map(|(a, b, c, d, e)| format!("{a}\"last_day\"{b}:{c}{d}{e}"));
        let pair = |key: BoxedStrategy<&'static str>| {
            (ws(), key, ws(), ws(), value.clone(), ws())
                .prop_map(|(a, k, b, c, v, d)| format!("{a}\"{k}\"{b}:{c}{v}{d}"))
        };
        let fixed = |k: &'static str| pair(Just(k).boxed());
        // Mostly the keys an item needs, once each in some order; sometimes anything.
        let pairs = prop_oneof![
            8 => (
                fixed("product"),
                fixed("version"),
                prop::option::of(fixed("channel")),
                prop::option::of(last_day),
                any::<prop::sample::Index>(),
            )
                .prop_map(|(p, v, c, d, i)| {
                    let mut all: Vec<String> = [Some(p), Some(v), c, d].into_iter().flatten().collect();
                    let n = all.len();
                    all.rotate_left(i.index(n));
                    all
                }),
            1 => prop::collection::vec(pair(key.boxed()), 0..5),
        ];
        let item = (ws(), pairs, ws()).prop_map(|(a, p, b)| format!("{a}{{{}}}{b}", p.join(",")));
        let items = prop::collection::vec(item, 0..5);
        let tail = prop_oneof![20 => Just(""), 1 => prop::sample::select(vec!["]", ",", "x"])];
        (ws(), ws(), items, ws(), tail).prop_map(|(a, b, items, c, tail)| {
            format!("{a}{{{b}\"items\":[{}]}}{c}{tail}", items.join(","))
        })
    }

    #[test]
    fn arb_body_reaches_both_readers() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut hand, mut serde) = (0, 0);
        for _ in 0..2000 {
            let body = arb_body().new_tree(&mut runner).unwrap().current();
            match by_hand(&body) {
                Some(_) => hand += 1,
                None if by_serde(&body).is_some() => serde += 1,
                None => {}
            }
        }
        assert!(
            hand > 50 && serde > 50,
            "by hand {hand}, by serde only {serde}"
        );
    }

    proptest! {
        #[test]
        fn hand_reading_agrees_with_serde(body in arb_body()) {
            agrees(&body)?;
        }

        #[test]
        fn hand_reading_agrees_with_serde_on_any_text(body in any::<String>()) {
            agrees(&body)?;
        }
    }

    /// An item as the batch wrote it before it was written by hand: every
    /// string through serde_json.
    fn reference(item: &Item<'_>, outcome: Outcome<'_>, errors: &[ApiError]) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let head = format!(
            "{{\"product\":{},\"version\":{},",
            q(item.product),
            q(item.version)
        );
        match outcome {
            Outcome::Answer(a) => {
                let offer = a
                    .offer
                    .map_or("null".into(), |o| String::from_utf8_lossy(o));
                let freshness = String::from_utf8_lossy(a.freshness);
                let channel = q(item.channel);
                format!(
                    "{head}\"channel\":{channel},\"update\":{offer},\"freshness\":{freshness}}}"
                )
            }
            Outcome::Error(e) => {
                let e = &errors[e];
                format!(
                    "{head}\"error\":{},\"message\":{}}}",
                    q(e.code),
                    q(&e.message)
                )
            }
        }
    }

    proptest! {
        #[test]
        fn items_are_written_as_serde_would_and_counted_exactly(
            product in any::<String>(),
            version in "[ -~]{0,8}",
            channel in prop_oneof![Just("stable".to_owned()), any::<String>()],
            message in any::<String>(),
            offer in prop::option::of("[ -~]{0,40}"),
            failed in any::<bool>(),
        ) {
            let plain = [&product, &version, &channel].iter().all(|s| !needs_escape(s));
            let item = Item { product: &product, version: &version, channel: &channel, last_day: None, plain };
            let (offer, freshness) = (offer.map(Bytes::from), Bytes::from_static(b"{\"f\":1}"));
            let errors = [ApiError::bad_request("bad_version", message)];
            let cell = std::sync::OnceLock::new();
            let outcome = if failed {
                Outcome::Error(0)
            } else {
                Outcome::Answer(Answer { offer: offer.as_ref(), seq: 1, freshness: &freshness, statement: 1, cached: &cell })
            };
            let (mut len, mut out) = (0, Vec::new());
            put_item(&mut |t: &[u8]| len += t.len(), &item, outcome, &errors);
            put_item(&mut |t| out.extend_from_slice(t), &item, outcome, &errors);
            prop_assert_eq!(len, out.len());
            prop_assert_eq!(String::from_utf8(out).unwrap(), reference(&item, outcome, &errors));
        }
    }
}
