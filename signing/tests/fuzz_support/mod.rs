//! Shared by the signing crate's fuzz targets (`fuzz_envelopes`, `fuzz_verify`,
//! `fuzz_names`, `fuzz_payloads`): case counts, the keys every case signs
//! with, generators of JSON, of valid documents and of byte edits, and the
//! by-hand reference matchers for product names, channels and versions.
#![allow(dead_code)]

use base64::{engine::general_purpose, Engine};
use chrono::{DateTime, Duration, Utc};
use firmcast_signing::release::{ArtifactRef, ReleaseManifest};
use firmcast_signing::{Envelope, Error, Freshness, Keyset, PrivateKey, Role, VerifiedKeyset};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use std::sync::OnceLock;

/// Case counts by cost, chosen so the fuzz files together run in about 10 s
/// in a debug build on two cores.
pub const CHEAP: u32 = 20_000; // string checks, arbitrary bytes
pub const STRUCTURED: u32 = 5_000; // generated JSON documents
pub const SIGNED: u32 = 3_000; // a signature or two per case, or big documents

/// `default` cases unless `PROPTEST_CASES` says otherwise.
pub fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Keys shared by every case: a keyset with a 2-of-3 release role.
// ---------------------------------------------------------------------------

pub struct Fixture {
    pub root: PrivateKey,
    pub release: [PrivateKey; 3],
    pub timestamp: PrivateKey,
    pub intruder: PrivateKey,
    pub keyset_envelope: Envelope,
    pub keyset: VerifiedKeyset,
}

pub const RELEASE_THRESHOLD: usize = 2;

pub fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let root = PrivateKey::generate();
        let release = [
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        ];
        let timestamp = PrivateKey::generate();
        let ks = Keyset {
            version: 1,
            expires: Utc::now() + Duration::days(365),
            root: None,
            release: Role::new(
                "release",
                RELEASE_THRESHOLD,
                release.iter().map(|k| k.public().clone()).collect(),
            )
            .unwrap(),
            timestamp: Role::single(timestamp.public().clone()),
        };
        let keyset_envelope = ks.sign(&[&root]).unwrap();
        let keyset = VerifiedKeyset::verify_pinned(
            keyset_envelope.clone(),
            &Role::single(root.public().clone()),
            Utc::now(),
        )
        .unwrap();
        Fixture {
            root,
            release,
            timestamp,
            intruder: PrivateKey::generate(),
            keyset_envelope,
            keyset,
        }
    })
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// Field names of every document, so random objects often hit real fields.
const FIELD_NAMES: &[&str] = &[
    "payloadType",
    "payload",
    "signatures",
    "keyid",
    "sig",
    "product",
    "version",
    "channel",
    "seq",
    "artifact",
    "sha256",
    "size",
    "from",
    "critical",
    "notes",
    "en",
    "released_at",
    "latest_seq",
    "keyset_version",
    "expires",
    "root",
    "release",
    "timestamp",
    "threshold",
    "keys",
    "public",
];

pub fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Strings that tend to matter: base64-ish, times, versions, hex, unicode.
pub fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9+/=_-]{0,48}",
        "[0-9a-f]{62,66}",
        "[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}(-[a-z0-9.]{0,8})?",
        "[0-9+-]{0,6}-[0-9]{1,2}-[0-9]{1,2}T[0-9:.]{0,12}(Z|[+-][0-9]{2}:[0-9]{2})?",
        "[<>=~^*, 0-9.]{0,24}",
        Just(String::new()),
        Just("\u{0}\u{FEFF}\u{10FFFF}".to_owned()),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(0u64), Just(1), Just(2), Just(3), Just(64), Just(65)]
            .prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        arb_string().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
pub fn arb_json() -> BoxedStrategy<Value> {
    arb_leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((arb_key(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

pub fn b64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

pub fn time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

pub fn arb_manifest() -> impl Strategy<Value = ReleaseManifest> {
    (
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}",
        (0u64..50, 0u64..50, 0u64..50, "(-(rc|beta)\\.[1-9])?"),
        "[a-z][a-z0-9-]{0,10}",
        1u64..u64::MAX,
        (any::<[u8; 32]>(), 1u64..u64::MAX),
        prop::option::of(Just(">=1.0.0, <2.0.0")),
        any::<bool>(),
        prop::collection::btree_map("(en|ja|de|pt-BR|zh_Hant)", "\\PC{0,40}", 0..3),
        0i64..4_000_000_000,
    )
        .prop_map(
            |(product, (ma, mi, pa, pre), channel, seq, (sha, size), from, critical, notes, t)| {
                ReleaseManifest {
                    product,
                    version: format!("{ma}.{mi}.{pa}{pre}").parse().unwrap(),
                    channel,
                    seq,
                    artifact: ArtifactRef {
                        sha256: hex::encode(sha),
                        size,
                    },
                    from: from.map(|f| f.parse().unwrap()),
                    critical,
                    notes,
                    released_at: time(t),
                }
            },
        )
}

pub fn arb_freshness() -> impl Strategy<Value = Freshness> {
    (
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}",
        "[a-z][a-z0-9-]{0,10}",
        any::<u64>(),
    )
        .prop_map(|(product, channel, latest_seq)| Freshness {
            product,
            channel,
            latest_seq,
            keyset_version: 1,
            expires: Utc::now() + Duration::hours(24),
        })
}

// ---------------------------------------------------------------------------
// Byte edits to serialized envelopes
// ---------------------------------------------------------------------------

/// One byte-level change to a byte string: the classic fuzzer moves.
#[derive(Clone, Debug)]
pub enum ByteEdit {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Delete(Index),
    Set(Index, u8),
}

pub fn arb_byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        1 => any::<Index>().prop_map(ByteEdit::Delete),
        1 => (any::<Index>(), prop::sample::select(&b"\"\\{}[],:0 -+/=\xff\x00"[..]))
            .prop_map(|(i, b)| ByteEdit::Set(i, b)),
    ]
}

pub fn apply_byte_edit(bytes: &mut Vec<u8>, e: &ByteEdit) {
    if bytes.is_empty() {
        if let ByteEdit::Insert(_, b) = e {
            bytes.push(*b);
        }
        return;
    }
    match e {
        ByteEdit::Flip(i, bit) => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        ByteEdit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        ByteEdit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        ByteEdit::Delete(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        ByteEdit::Set(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
    }
}

// ---------------------------------------------------------------------------
// Product names and versions: reference matchers and generators
// ---------------------------------------------------------------------------

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, by hand, over chars (not bytes).
pub fn reference_product(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_uppercase() || c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let mut rest = 0;
    for c in chars {
        if !(alnum(c) || c == '.' || c == '_' || c == '-') {
            return false;
        }
        rest += 1;
    }
    alnum(first) && rest <= 63
}

/// `^[a-z][a-z0-9-]{0,31}$`, the channel pattern `names.rs` documents.
pub fn reference_channel(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let mut rest = 0;
    for c in chars {
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return false;
        }
        rest += 1;
    }
    first.is_ascii_lowercase() && rest <= 31
}

/// SemVer 2.0.0 (semver.org's grammar), by hand; major, minor and patch
/// must also fit in a u64, the only bound the implementation adds.
pub fn reference_semver(s: &str) -> bool {
    fn ident(id: &str) -> bool {
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }
    fn numeric(id: &str) -> bool {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && (id == "0" || !id.starts_with('0'))
    }
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p) && p.parse::<u64>().is_ok())
        && pre.is_none_or(|p| {
            p.split('.')
                .all(|id| ident(id) && (!id.bytes().all(|b| b.is_ascii_digit()) || numeric(id)))
        })
        && build.is_none_or(|b| b.split('.').all(ident))
}

/// Characters around the edges of the product pattern.
fn product_char() -> impl Strategy<Value = char> {
    prop_oneof![
        8 => prop::sample::select(
            "AZaz09Mm5._-/\\ \0%+:@~é\u{0660}\u{FF21}\u{212A}\u{0130}\u{FEFF}\n"
                .chars()
                .collect::<Vec<_>>()
        ),
        1 => any::<char>(),
    ]
}

pub fn arb_product() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        "[A-Za-z0-9._-]{60,70}",
        prop::collection::vec(product_char(), 0..70).prop_map(|c| c.into_iter().collect()),
        (
            "[A-Za-z0-9][A-Za-z0-9._-]{0,70}",
            any::<Index>(),
            product_char()
        )
            .prop_map(|(s, i, c)| {
                let mut cs: Vec<char> = s.chars().collect();
                cs.insert(i.index(cs.len() + 1), c);
                cs.into_iter().collect()
            }),
    ]
}

fn version_token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "7",
            "01",
            "00",
            "10",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            ".",
            ".",
            ".",
            "-",
            "-",
            "+",
            "+",
            "a",
            "Z",
            "rc",
            "alpha",
            "x-y",
            "--",
            " ",
            "v",
            "=",
            "é",
            "\0",
            "\u{0661}",
            "1.2.3",
            "*",
            "^",
            "~",
            ">=",
        ])
        .prop_map(str::to_owned),
        "[0-9]{1,3}",
        "[0-9A-Za-z-]{1,4}",
    ]
}

/// Mostly valid SemVer (pre-release identifiers may still carry a leading
/// zero, which SemVer forbids).
pub fn arb_semver_like() -> impl Strategy<Value = String> {
    (
        "(0|[1-9][0-9]{0,4})\\.(0|[1-9][0-9]{0,4})\\.(0|[1-9][0-9]{0,4})",
        prop::option::of("[0-9A-Za-z-]{1,5}(\\.[0-9A-Za-z-]{1,5}){0,3}"),
        prop::option::of("[0-9A-Za-z-]{1,5}(\\.[0-9A-Za-z-]{1,5}){0,3}"),
    )
        .prop_map(|(core, pre, build)| {
            let mut s = core;
            if let Some(p) = pre {
                s.push('-');
                s.push_str(&p);
            }
            if let Some(b) = build {
                s.push('+');
                s.push_str(&b);
            }
            s
        })
}

pub fn arb_version() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(version_token(), 0..10).prop_map(|t| t.concat()),
        arb_semver_like(),
        // One token slipped into a valid version: `v1.2.3`, `1.2.3 `, `1..2.3`.
        (arb_semver_like(), any::<Index>(), version_token()).prop_map(|(v, i, t)| {
            let mut v = v;
            v.insert_str(i.index(v.len() + 1), &t);
            v
        }),
        // One character dropped.
        (arb_semver_like(), any::<Index>()).prop_map(|(v, i)| {
            let mut v = v;
            v.remove(i.index(v.len()));
            v
        }),
    ]
}

pub fn invalid_field(err: &Error) -> Option<&str> {
    match err {
        Error::Invalid { field, .. } => Some(field),
        _ => None,
    }
}
