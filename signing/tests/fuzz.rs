//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for everything
//! the signing crate parses from untrusted bytes: DSSE envelopes, their
//! verification, product names and versions, and the release manifest,
//! freshness statement and keyset payloads.
//!
//! Each property runs a fixed number of cases (CHEAP, STRUCTURED, SIGNED
//! below) so the file takes about 10 s in a debug build and CI stays bounded.
//! For a longer local run set `PROPTEST_CASES`, which replaces every
//! per-property count, e.g.
//! `PROPTEST_CASES=50000 cargo nextest run -p firmcast-signing --test fuzz`.
//! A failure prints the minimal input; nothing is written to the source tree.

use base64::{engine::general_purpose, Engine};
use chrono::{DateTime, Duration, Utc};
use firmcast_signing::dsse::Signature;
use firmcast_signing::freshness::TIMESTAMP_TYPE;
use firmcast_signing::keyset::KEYSET_TYPE;
use firmcast_signing::names::{parse_version, validate_channel, validate_locale, validate_product};
use firmcast_signing::release::{ArtifactRef, ReleaseManifest, RELEASE_TYPE};
use firmcast_signing::{
    Envelope, Error, Freshness, Keyset, PrivateKey, PublicKey, Role, VerifiedKeyset,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

/// Case counts by cost, chosen so the whole file runs in about 10 s in a
/// debug build on two cores.
const CHEAP: u32 = 20_000; // string checks, arbitrary bytes
const STRUCTURED: u32 = 5_000; // generated JSON documents
const SIGNED: u32 = 3_000; // a signature or two per case, or big documents

/// `default` cases unless `PROPTEST_CASES` says otherwise.
fn config(default: u32) -> ProptestConfig {
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

struct Fixture {
    root: PrivateKey,
    release: [PrivateKey; 3],
    timestamp: PrivateKey,
    intruder: PrivateKey,
    keyset_envelope: Envelope,
    keyset: VerifiedKeyset,
}

const RELEASE_THRESHOLD: usize = 2;

fn fixture() -> &'static Fixture {
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

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Strings that tend to matter: base64-ish, times, versions, hex, unicode.
fn arb_string() -> impl Strategy<Value = String> {
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
fn arb_json() -> BoxedStrategy<Value> {
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

fn b64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

/// Objects shaped like an envelope whose fields hold anything.
fn arb_envelope_json() -> impl Strategy<Value = Value> {
    // Mostly well-formed (strings, base64 of either alphabet), so parsing
    // gets past the JSON shape often; sometimes anything at all.
    let text = prop_oneof![
        2 => arb_string().prop_map(Value::String),
        3 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| Value::String(b64(&b))),
        1 => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| Value::String(general_purpose::URL_SAFE.encode(b))),
        1 => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| Value::String(general_purpose::URL_SAFE_NO_PAD.encode(b))),
        1 => arb_json(),
    ]
    .boxed();
    let sig = (
        prop::option::weighted(0.9, text.clone()),
        prop::option::weighted(0.9, text.clone()),
        prop::option::weighted(0.1, (arb_key(), arb_json())),
    )
        .prop_map(|(keyid, sig, extra)| {
            let mut o = serde_json::Map::new();
            if let Some(k) = keyid {
                o.insert("keyid".into(), k);
            }
            if let Some(s) = sig {
                o.insert("sig".into(), s);
            }
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        });
    let sigs = prop_oneof![
        4 => prop::collection::vec(sig, 0..4).prop_map(Value::Array),
        1 => arb_json(),
    ];
    (
        prop::option::weighted(0.9, text.clone()),
        prop::option::weighted(0.9, text),
        prop::option::weighted(0.9, sigs),
        prop::option::weighted(0.1, (arb_key(), arb_json())),
    )
        .prop_map(|(ty, payload, sigs, extra)| {
            let mut o = serde_json::Map::new();
            for (k, v) in [
                ("payloadType", ty),
                ("payload", payload),
                ("signatures", sigs),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        })
}

fn time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn arb_manifest() -> impl Strategy<Value = ReleaseManifest> {
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

fn arb_freshness() -> impl Strategy<Value = Freshness> {
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
// (a) Envelope parsing
// ---------------------------------------------------------------------------

/// A parsed envelope re-serializes, and reading that back gives it again.
fn assert_round_trip(env: &Envelope) -> Result<(), TestCaseError> {
    for (how, back) in [
        ("bytes", Envelope::parse(&env.to_json_bytes())),
        ("value", Envelope::from_value(env.to_value())),
        ("pretty", Envelope::parse(env.to_pretty_json().as_bytes())),
    ] {
        match back {
            Ok(back) => prop_assert_eq!(&back, env, "via {}", how),
            Err(e) => prop_assert!(false, "via {how}: {e}"),
        }
    }
    Ok(())
}

fn assert_parse_error_is_named(err: &Error) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(
            err,
            Error::Json {
                what: "DSSE envelope",
                ..
            } | Error::Base64 {
                field: "payload" | "sig",
                ..
            }
        ),
        "unexpected error kind: {err:?}"
    );
    Ok(())
}

/// One byte-level change to a byte string: the classic fuzzer moves.
#[derive(Clone, Debug)]
enum ByteEdit {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Delete(Index),
    Set(Index, u8),
}

fn arb_byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        1 => any::<Index>().prop_map(ByteEdit::Delete),
        1 => (any::<Index>(), prop::sample::select(&b"\"\\{}[],:0 -+/=\xff\x00"[..]))
            .prop_map(|(i, b)| ByteEdit::Set(i, b)),
    ]
}

fn apply_byte_edit(bytes: &mut Vec<u8>, e: &ByteEdit) {
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

proptest! {
    #![proptest_config(config(CHEAP))]

    /// Arbitrary bytes: an error naming the envelope, or an envelope that
    /// round-trips.
    #[test]
    fn envelope_parse_of_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        match Envelope::parse(&bytes) {
            Ok(env) => assert_round_trip(&env)?,
            Err(e) => assert_parse_error_is_named(&e)?,
        }
    }

}

proptest! {
    #![proptest_config(config(STRUCTURED))]

    /// Any JSON value and envelope-shaped objects with anything in their
    /// fields, through both entry points (bytes and `serde_json::Value`).
    #[test]
    fn envelope_parse_of_arbitrary_json(v in prop_oneof![arb_json(), arb_envelope_json()]) {
        let from_value = Envelope::from_value(v.clone());
        let from_bytes = Envelope::parse(&serde_json::to_vec(&v).unwrap());
        prop_assert_eq!(from_value.as_ref().ok(), from_bytes.as_ref().ok());
        match from_value {
            Ok(env) => assert_round_trip(&env)?,
            Err(e) => assert_parse_error_is_named(&e)?,
        }
        if let Err(e) = from_bytes {
            assert_parse_error_is_named(&e)?;
        }
    }

    /// A real signed envelope's JSON text after a few byte edits.
    #[test]
    fn envelope_parse_of_mutated_json(
        m in arb_manifest(),
        pretty in any::<bool>(),
        edits in prop::collection::vec(arb_byte_edit(), 1..4),
    ) {
        let env = Envelope::sign(RELEASE_TYPE, m.to_payload(), &fixture().release[0]);
        let mut bytes = if pretty { env.to_pretty_json().into_bytes() } else { env.to_json_bytes() };
        for e in &edits {
            apply_byte_edit(&mut bytes, e);
        }
        match Envelope::parse(&bytes) {
            Ok(env) => assert_round_trip(&env)?,
            Err(e) => assert_parse_error_is_named(&e)?,
        }
    }
}

// ---------------------------------------------------------------------------
// (b) Verification: a validly signed envelope, mutated, never verifies.
// ---------------------------------------------------------------------------

/// Which signed document and how it is checked.
#[derive(Clone, Copy, Debug)]
enum Doc {
    /// A release manifest, 2 of 3 release keys, via `verify_release`.
    Release,
    /// A freshness statement, the timestamp key, via `verify_freshness`.
    Freshness,
    /// The keyset itself, root-signed, via `verify_pinned`.
    Keyset,
}

impl Doc {
    fn payload_type(self) -> &'static str {
        match self {
            Doc::Release => RELEASE_TYPE,
            Doc::Freshness => TIMESTAMP_TYPE,
            Doc::Keyset => KEYSET_TYPE,
        }
    }

    fn signers(self) -> Vec<&'static PrivateKey> {
        let fx = fixture();
        match self {
            Doc::Release => fx.release[..RELEASE_THRESHOLD].iter().collect(),
            Doc::Freshness => vec![&fx.timestamp],
            Doc::Keyset => vec![&fx.root],
        }
    }

    /// A trusted key of this document's role that did not sign, if any.
    fn spare(self) -> Option<&'static PrivateKey> {
        match self {
            Doc::Release => Some(&fixture().release[2]),
            _ => None,
        }
    }

    /// Keys trusted for another role: their signatures never count here.
    fn other_roles(self) -> Vec<&'static PrivateKey> {
        let fx = fixture();
        match self {
            Doc::Release => vec![&fx.root, &fx.timestamp],
            Doc::Freshness => vec![&fx.root, &fx.release[0], &fx.release[1]],
            Doc::Keyset => vec![&fx.timestamp, &fx.release[0], &fx.release[1]],
        }
    }

    fn verify(self, env: &Envelope) -> Result<(), Error> {
        let fx = fixture();
        match self {
            Doc::Release => fx.keyset.verify_release(env).map(drop),
            Doc::Freshness => fx.keyset.verify_freshness(env, Utc::now()).map(drop),
            Doc::Keyset => VerifiedKeyset::verify_pinned(
                env.clone(),
                &Role::single(fx.root.public().clone()),
                Utc::now(),
            )
            .map(drop),
        }
    }
}

fn sign_all(payload_type: &str, payload: &[u8], keys: &[&PrivateKey]) -> Envelope {
    let mut env = Envelope::sign(payload_type, payload.to_vec(), keys[0]);
    for k in &keys[1..] {
        env.add_signature(k).unwrap();
    }
    env
}

fn sig_by(key: &PrivateKey, payload_type: &str, payload: &[u8]) -> Signature {
    Envelope::sign(payload_type, payload.to_vec(), key)
        .signatures
        .remove(0)
}

/// A signed document, fresh per case.
fn arb_signed() -> impl Strategy<Value = (Doc, Envelope)> {
    prop_oneof![
        4 => arb_manifest().prop_map(|m| {
            let d = Doc::Release;
            (d, sign_all(d.payload_type(), &m.to_payload(), &d.signers()))
        }),
        1 => arb_freshness().prop_map(|f| {
            let d = Doc::Freshness;
            (d, sign_all(d.payload_type(), &f.to_payload(), &d.signers()))
        }),
        1 => Just(()).prop_map(|()| (Doc::Keyset, fixture().keyset_envelope.clone())),
    ]
}

/// One change an attacker could make to a signed envelope. Each alone must
/// make verification fail.
#[derive(Clone, Debug)]
enum Attack {
    FlipPayloadBit(Index, u8),
    FlipSigBit(Index, Index, u8),
    TruncatePayload(Index),
    AppendToPayload(Vec<u8>),
    TruncateSig(Index, Index),
    ExtendSig(Index, u8),
    /// Removes one signature: below threshold.
    DropSig(Index),
    /// Replaces every signature by copies of one: the same key k times to
    /// fake a k-of-n threshold (only meaningful with 2 or more signatures).
    SameKeyRepeated(Index, usize),
    /// Swaps the key ids of two signatures (or relabels the only one with a
    /// spare trusted key id).
    SwapKeyids,
    /// Relabels a signature with another trusted key's id.
    RelabelWithSpare(Index),
    /// Changes a key id's case: hex compares exactly.
    UppercaseKeyid(Index),
    /// Another payload type with the same signatures.
    PayloadType(String),
    /// Re-signed correctly by the right keys, but under another type.
    ResignedAsOtherType(Index),
    /// A signature by an untrusted key replaces one of the valid ones.
    UntrustedReplaces(Index),
    /// An untrusted key's signature wearing a trusted key id.
    UntrustedRelabeled(Index),
    /// Keys trusted for other roles sign instead.
    OtherRolesSign,
    /// The payload of another document, the original signatures.
    SwapPayload(Vec<u8>),
    /// All signatures removed.
    NoSignatures,
}

fn arb_attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Attack::FlipPayloadBit(i, b)),
        (any::<Index>(), any::<Index>(), 0u8..8).prop_map(|(s, i, b)| Attack::FlipSigBit(s, i, b)),
        any::<Index>().prop_map(Attack::TruncatePayload),
        prop::collection::vec(any::<u8>(), 1..8).prop_map(Attack::AppendToPayload),
        (any::<Index>(), any::<Index>()).prop_map(|(s, i)| Attack::TruncateSig(s, i)),
        (any::<Index>(), any::<u8>()).prop_map(|(s, b)| Attack::ExtendSig(s, b)),
        any::<Index>().prop_map(Attack::DropSig),
        (any::<Index>(), 2usize..5).prop_map(|(s, n)| Attack::SameKeyRepeated(s, n)),
        Just(Attack::SwapKeyids),
        any::<Index>().prop_map(Attack::RelabelWithSpare),
        any::<Index>().prop_map(Attack::UppercaseKeyid),
        prop_oneof![
            Just(KEYSET_TYPE.to_owned()),
            Just(TIMESTAMP_TYPE.to_owned()),
            Just(RELEASE_TYPE.to_owned()),
            Just(RELEASE_TYPE.to_uppercase()),
            Just(format!("{RELEASE_TYPE} ")),
            Just(String::new()),
            any::<String>(),
        ]
        .prop_map(Attack::PayloadType),
        any::<Index>().prop_map(Attack::ResignedAsOtherType),
        any::<Index>().prop_map(Attack::UntrustedReplaces),
        any::<Index>().prop_map(Attack::UntrustedRelabeled),
        Just(Attack::OtherRolesSign),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Attack::SwapPayload),
        Just(Attack::NoSignatures),
    ]
}

/// Applies `a`; returns false when it would leave the envelope unchanged
/// (e.g. the "other" payload type equals the real one), so the case is moot.
fn apply_attack(doc: Doc, env: &mut Envelope, a: &Attack) -> bool {
    let fx = fixture();
    let n = env.signatures.len();
    let on_a_signature = matches!(
        a,
        Attack::FlipSigBit(..)
            | Attack::TruncateSig(..)
            | Attack::ExtendSig(..)
            | Attack::DropSig(..)
            | Attack::SameKeyRepeated(..)
            | Attack::SwapKeyids
            | Attack::RelabelWithSpare(..)
            | Attack::UppercaseKeyid(..)
            | Attack::UntrustedReplaces(..)
            | Attack::UntrustedRelabeled(..)
    );
    if on_a_signature && n == 0 {
        return false; // only reachable when attacks are stacked
    }
    let before = env.clone();
    match a {
        Attack::FlipPayloadBit(i, bit) => {
            if env.payload.is_empty() {
                return false;
            }
            let i = i.index(env.payload.len());
            env.payload[i] ^= 1 << bit;
        }
        Attack::FlipSigBit(s, i, bit) => {
            let sig = &mut env.signatures[s.index(n)].sig;
            if sig.is_empty() {
                return false;
            }
            let i = i.index(sig.len());
            sig[i] ^= 1 << bit;
        }
        Attack::TruncatePayload(i) => {
            if env.payload.is_empty() {
                return false;
            }
            let i = i.index(env.payload.len());
            env.payload.truncate(i);
        }
        Attack::AppendToPayload(extra) => env.payload.extend_from_slice(extra),
        Attack::TruncateSig(s, i) => {
            let sig = &mut env.signatures[s.index(n)].sig;
            if sig.is_empty() {
                return false;
            }
            let i = i.index(sig.len());
            sig.truncate(i);
        }
        Attack::ExtendSig(s, b) => env.signatures[s.index(n)].sig.push(*b),
        Attack::DropSig(s) => {
            env.signatures.remove(s.index(n));
        }
        Attack::SameKeyRepeated(s, k) => {
            if n < 2 {
                return false; // a 1-of-1 signature repeated is still the real one
            }
            let one = env.signatures[s.index(n)].clone();
            env.signatures = vec![one; *k];
        }
        Attack::SwapKeyids => {
            if n >= 2 {
                let k0 = env.signatures[0].keyid.clone();
                env.signatures[0].keyid = std::mem::replace(&mut env.signatures[1].keyid, k0);
            } else if let Some(spare) = doc.spare() {
                env.signatures[0].keyid = spare.keyid().to_owned();
            } else {
                // A single-key role: label it with a key trusted elsewhere.
                env.signatures[0].keyid = fx.release[0].keyid().to_owned();
            }
        }
        Attack::RelabelWithSpare(s) => {
            let label = doc.spare().unwrap_or(&fx.release[2]).keyid().to_owned();
            env.signatures[s.index(n)].keyid = label;
        }
        Attack::UppercaseKeyid(s) => {
            let sig = &mut env.signatures[s.index(n)];
            sig.keyid = sig.keyid.to_uppercase();
        }
        Attack::PayloadType(t) => env.payload_type = t.clone(),
        Attack::ResignedAsOtherType(i) => {
            let others: Vec<&str> = [RELEASE_TYPE, TIMESTAMP_TYPE, KEYSET_TYPE]
                .into_iter()
                .filter(|t| *t != doc.payload_type())
                .collect();
            let t = others[i.index(others.len())];
            *env = sign_all(t, &env.payload, &doc.signers());
        }
        Attack::UntrustedReplaces(s) => {
            env.signatures[s.index(n)] = sig_by(&fx.intruder, &env.payload_type, &env.payload);
        }
        Attack::UntrustedRelabeled(s) => {
            let i = s.index(n);
            let keyid = env.signatures[i].keyid.clone();
            env.signatures[i] = Signature {
                keyid,
                ..sig_by(&fx.intruder, &env.payload_type, &env.payload)
            };
        }
        Attack::OtherRolesSign => {
            *env = sign_all(&env.payload_type, &env.payload, &doc.other_roles());
        }
        Attack::SwapPayload(p) => env.payload = p.clone(),
        Attack::NoSignatures => env.signatures.clear(),
    }
    *env != before
}

/// Changes that must not matter: order and extra noise signatures.
#[derive(Clone, Debug)]
enum Benign {
    Reverse,
    AppendUnknownKey(Vec<u8>),
    AppendGarbageFromSpareKey(Vec<u8>),
    AppendSpareKeySignature,
}

fn arb_benign() -> impl Strategy<Value = Benign> {
    prop_oneof![
        Just(Benign::Reverse),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(Benign::AppendUnknownKey),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(Benign::AppendGarbageFromSpareKey),
        Just(Benign::AppendSpareKeySignature),
    ]
}

fn apply_benign(doc: Doc, env: &mut Envelope, b: &Benign) {
    let fx = fixture();
    match b {
        Benign::Reverse => env.signatures.reverse(),
        Benign::AppendUnknownKey(sig) => env.signatures.push(Signature {
            keyid: fx.intruder.keyid().to_owned(),
            sig: sig.clone(),
        }),
        Benign::AppendGarbageFromSpareKey(sig) => {
            if let Some(spare) = doc.spare() {
                env.signatures.push(Signature {
                    keyid: spare.keyid().to_owned(),
                    sig: sig.clone(),
                });
            }
        }
        Benign::AppendSpareKeySignature => {
            if let Some(spare) = doc.spare() {
                // Refused (and so skipped) when the spare key already signed.
                let _ = env.add_signature(spare);
            }
        }
    }
}

/// As a verifier receives it: through JSON.
fn via_json(env: &Envelope) -> Envelope {
    Envelope::parse(&env.to_json_bytes()).expect("a serialized envelope parses")
}

proptest! {
    #![proptest_config(config(SIGNED))]

    /// Every single attack fails, through JSON as a client receives it,
    /// while the untouched envelope verifies.
    #[test]
    fn any_single_attack_fails_verification((doc, env) in arb_signed(), attack in arb_attack()) {
        prop_assert!(doc.verify(&via_json(&env)).is_ok(), "the untouched envelope verifies");
        let mut bad = env.clone();
        if !apply_attack(doc, &mut bad, &attack) {
            return Ok(());
        }
        let res = doc.verify(&via_json(&bad));
        prop_assert!(res.is_err(), "{:?} after {:?} still verifies", doc, attack);
    }

    /// Attacks stacked: whatever still verifies carries exactly the signed
    /// payload and type (two edits may cancel out, nothing else may).
    #[test]
    fn stacked_attacks_never_change_what_verifies(
        (doc, env) in arb_signed(),
        attacks in prop::collection::vec(arb_attack(), 2..5),
    ) {
        let mut bad = env.clone();
        for a in &attacks {
            apply_attack(doc, &mut bad, a);
        }
        if doc.verify(&via_json(&bad)).is_ok() {
            prop_assert_eq!(&bad.payload, &env.payload);
            prop_assert_eq!(&bad.payload_type, &env.payload_type);
        }
    }

    /// Byte edits to the envelope's JSON text: either it no longer verifies
    /// or it decodes to exactly the signed envelope (base64 accepts the
    /// URL-safe alphabet, so `+` -> `-` is the same bytes).
    #[test]
    fn edited_json_text_never_verifies_other_content(
        (doc, env) in arb_signed(),
        edits in prop::collection::vec(arb_byte_edit(), 1..3),
    ) {
        let mut bytes = env.to_json_bytes();
        for e in &edits {
            apply_byte_edit(&mut bytes, e);
        }
        if let Ok(parsed) = Envelope::parse(&bytes) {
            if doc.verify(&parsed).is_ok() {
                prop_assert_eq!(parsed, env);
            }
        }
    }

    /// The checks above are not vacuous: reordering and extra signatures
    /// that do not count leave a valid envelope valid.
    #[test]
    fn order_and_noise_do_not_break_a_valid_envelope(
        (doc, env) in arb_signed(),
        changes in prop::collection::vec(arb_benign(), 1..4),
    ) {
        let mut env = env;
        for c in &changes {
            apply_benign(doc, &mut env, c);
        }
        let res = doc.verify(&via_json(&env));
        prop_assert!(res.is_ok(), "{:?}", res);
    }
}

// ---------------------------------------------------------------------------
// (c) Product names and versions
// ---------------------------------------------------------------------------

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, by hand, over chars (not bytes).
fn reference_product(s: &str) -> bool {
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
fn reference_channel(s: &str) -> bool {
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
fn reference_semver(s: &str) -> bool {
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

fn arb_product() -> impl Strategy<Value = String> {
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
fn arb_semver_like() -> impl Strategy<Value = String> {
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

fn arb_version() -> impl Strategy<Value = String> {
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

fn invalid_field(err: &Error) -> Option<&str> {
    match err {
        Error::Invalid { field, .. } => Some(field),
        _ => None,
    }
}

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn product_names_match_the_design_pattern(s in arb_product()) {
        let got = validate_product(&s);
        prop_assert_eq!(got.is_ok(), reference_product(&s), "{:?}: {:?}", s, got);
        if let Err(e) = got {
            prop_assert_eq!(invalid_field(&e), Some("product"));
            prop_assert!(e.to_string().len() < 400, "error floods: {}", e);
        }
    }

    #[test]
    fn channels_match_their_pattern(s in prop_oneof![
        any::<String>(),
        "[a-z][a-z0-9-]{0,34}",
        prop::collection::vec(prop::sample::select("az09-_A ".chars().collect::<Vec<_>>()), 0..36)
            .prop_map(|c| c.into_iter().collect::<String>()),
    ]) {
        let got = validate_channel(&s);
        prop_assert_eq!(got.is_ok(), reference_channel(&s), "{:?}", s);
    }

    #[test]
    fn locales_never_panic(s in prop_oneof![any::<String>(), "[a-zA-Z0-9_-]{0,40}"]) {
        if let Err(e) = validate_locale(&s) {
            prop_assert_eq!(invalid_field(&e), Some("locale"));
        }
    }

    /// Accepts exactly SemVer 2.0, names the field when it refuses, and
    /// prints an accepted version back exactly as written.
    #[test]
    fn versions_are_exactly_semver(s in arb_version()) {
        let got = parse_version(&s);
        prop_assert_eq!(got.is_ok(), reference_semver(&s), "{:?}: {:?}", s, got);
        match got {
            Ok(v) => prop_assert_eq!(v.to_string(), s),
            Err(e) => {
                prop_assert_eq!(invalid_field(&e), Some("version"));
                prop_assert!(e.to_string().len() < 400, "error floods: {}", e);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (d) Release manifest, freshness statement and keyset payloads
// ---------------------------------------------------------------------------

/// An error from a payload parser says which field (or, for JSON that is not
/// even the right shape, where) it is about.
fn assert_names_a_field(err: &Error) -> Result<(), TestCaseError> {
    let msg = err.to_string();
    match err {
        Error::Invalid { field, .. } => {
            prop_assert!(!field.is_empty() && msg.contains(field.as_str()), "{msg}");
        }
        Error::Base64 { field, .. } => prop_assert!(!field.is_empty(), "{msg}"),
        Error::Json { reason, .. } => prop_assert!(
            reason.contains("field `")
                || (reason.contains(" line ") && reason.contains(" column ")),
            "neither a field nor a position: {msg}"
        ),
        other => prop_assert!(false, "unexpected error from a payload parser: {other:?}"),
    }
    prop_assert!(msg.len() < 1000, "error floods: {msg}");
    Ok(())
}

/// Paths of the fields in each document, for structure-aware edits.
const MANIFEST_PATHS: &[&str] = &[
    "product",
    "version",
    "channel",
    "seq",
    "artifact",
    "artifact.sha256",
    "artifact.size",
    "from",
    "critical",
    "notes",
    "notes.en",
    "released_at",
];
const FRESHNESS_PATHS: &[&str] = &[
    "product",
    "channel",
    "latest_seq",
    "keyset_version",
    "expires",
];
const KEYSET_PATHS: &[&str] = &[
    "version",
    "expires",
    "root",
    "release",
    "release.threshold",
    "release.keys",
    "release.keys.0",
    "release.keys.0.keyid",
    "release.keys.0.public",
    "release.keys.1.public",
    "timestamp",
    "timestamp.threshold",
    "timestamp.keys.0.public",
];

/// Replacement values: half well-typed but odd (so the field checks run,
/// not just serde's type checks), half anything.
fn arb_field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => arb_string().prop_map(Value::String),
        1 => prop_oneof![Just(0u64), Just(1), Just(2), Just(u64::MAX)].prop_map(Value::from),
        1 => Just(json!({})),
        4 => arb_json(),
    ]
}

#[derive(Clone, Debug)]
enum FieldEdit {
    Remove(Index),
    Replace(Index, Value),
    AddUnknown(Index, String, Value),
}

fn arb_field_edit() -> impl Strategy<Value = FieldEdit> {
    prop_oneof![
        1 => any::<Index>().prop_map(FieldEdit::Remove),
        3 => (any::<Index>(), arb_field_value()).prop_map(|(i, v)| FieldEdit::Replace(i, v)),
        1 => (any::<Index>(), arb_key(), arb_json())
            .prop_map(|(i, k, v)| FieldEdit::AddUnknown(i, k, v)),
    ]
}

/// The parent object (or array) of `path` and its last segment.
fn parent<'a>(root: &'a mut Value, path: &'a str) -> Option<(&'a mut Value, &'a str)> {
    let (dirs, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut v = root;
    for seg in dirs.split('.').filter(|s| !s.is_empty()) {
        v = match seg.parse::<usize>() {
            Ok(i) => v.get_mut(i)?,
            Err(_) => v.get_mut(seg)?,
        };
    }
    Some((v, last))
}

fn apply_field_edit(doc: &mut Value, paths: &[&str], e: &FieldEdit) {
    let pick = |i: &Index| paths[i.index(paths.len())];
    match e {
        FieldEdit::Remove(i) => match parent(doc, pick(i)) {
            Some((Value::Object(o), k)) => {
                o.remove(k);
            }
            Some((Value::Array(a), k)) => {
                if let Ok(i) = k.parse::<usize>() {
                    if i < a.len() {
                        a.remove(i);
                    }
                }
            }
            _ => {}
        },
        FieldEdit::Replace(i, v) => match parent(doc, pick(i)) {
            Some((Value::Object(o), k)) => {
                o.insert(k.to_owned(), v.clone());
            }
            Some((Value::Array(a), k)) => {
                if let Some(slot) = k.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *slot = v.clone();
                }
            }
            _ => {}
        },
        FieldEdit::AddUnknown(i, key, v) => {
            if let Some((Value::Object(o), _)) = parent(doc, pick(i)) {
                o.insert(key.clone(), v.clone());
            }
        }
    }
}

fn keyset_value() -> Value {
    let fx = fixture();
    serde_json::from_slice(&fx.keyset.keyset.to_payload()).unwrap()
}

fn freshness_value() -> Value {
    json!({
        "product": "WH-1000XM5", "channel": "stable", "latest_seq": 17,
        "keyset_version": 1, "expires": "2030-01-01T00:00:00Z"
    })
}

/// Parses with each of the three payload parsers; any success must survive
/// its own serialization.
fn parse_all_payloads(bytes: &[u8]) -> Result<(), TestCaseError> {
    match ReleaseManifest::parse(bytes) {
        Ok(m) => {
            prop_assert_eq!(ReleaseManifest::parse(&m.to_payload()).ok(), Some(m));
        }
        Err(e) => assert_names_a_field(&e)?,
    }
    match Freshness::parse(bytes) {
        Ok(f) => prop_assert_eq!(Freshness::parse(&f.to_payload()).ok(), Some(f)),
        Err(e) => assert_names_a_field(&e)?,
    }
    match Keyset::parse(bytes) {
        Ok(k) => prop_assert_eq!(Keyset::parse(&k.to_payload()).ok(), Some(k)),
        Err(e) => assert_names_a_field(&e)?,
    }
    Ok(())
}

/// Public keys as a keyset holds them: valid ones, and 32 random bytes
/// (most are not curve points), and wrong lengths.
fn arb_public_b64() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(()).prop_map(|()| PrivateKey::generate().public().to_base64()),
        prop::sample::select(vec![0usize, 1])
            .prop_map(|i| fixture().release[i].public().to_base64()),
        any::<[u8; 32]>().prop_map(|b| b64(&b)),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| b64(&b)),
        arb_string(),
    ]
}

proptest! {
    #![proptest_config(config(STRUCTURED))]

    /// Any JSON value, as any of the three payloads.
    #[test]
    fn payloads_from_arbitrary_json(v in arb_json()) {
        parse_all_payloads(&serde_json::to_vec(&v).unwrap())?;
    }

    /// Arbitrary bytes, as any of the three payloads.
    #[test]
    fn payloads_from_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..200)) {
        parse_all_payloads(&b)?;
    }

    /// Keysets whose roles hold arbitrary keys, key ids and thresholds.
    #[test]
    fn keysets_with_arbitrary_roles(
        keys in prop::collection::vec((arb_public_b64(), any::<bool>()), 0..4),
        threshold in prop_oneof![0usize..5, Just(usize::MAX)],
        version in prop_oneof![Just(0u64), Just(1), any::<u64>()],
    ) {
        let entries: Vec<Value> = keys
            .iter()
            .map(|(public, honest)| {
                let keyid = match PublicKey::from_base64(public) {
                    Ok(k) if *honest => k.keyid().to_owned(),
                    _ => "0".repeat(64),
                };
                json!({"keyid": keyid, "public": public})
            })
            .collect();
        let mut doc = keyset_value();
        doc["version"] = version.into();
        doc["release"] = json!({"threshold": threshold, "keys": entries});
        let bytes = serde_json::to_vec(&doc).unwrap();
        parse_all_payloads(&bytes)?;

        // Accepted exactly when every key is a real key under its own id,
        // listed once, and 1 <= threshold <= keys.
        let ids: Option<Vec<String>> = keys
            .iter()
            .map(|(public, honest)| {
                PublicKey::from_base64(public).ok().filter(|_| *honest).map(|k| k.keyid().to_owned())
            })
            .collect();
        let expect_ok = version != 0
            && ids.is_some_and(|ids| {
                let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
                !ids.is_empty() && distinct.len() == ids.len() && (1..=ids.len()).contains(&threshold)
            });
        let got = Keyset::parse(&bytes);
        prop_assert_eq!(got.is_ok(), expect_ok, "{:?}", got);
    }

}

proptest! {
    #![proptest_config(config(SIGNED))]

    /// Valid documents with fields removed, replaced by anything, or added.
    #[test]
    fn payloads_with_edited_fields(
        m in arb_manifest(),
        which in 0usize..3,
        edits in prop::collection::vec(arb_field_edit(), 1..4),
    ) {
        let (mut doc, paths) = match which {
            0 => (serde_json::from_slice(&m.to_payload()).unwrap(), MANIFEST_PATHS),
            1 => (freshness_value(), FRESHNESS_PATHS),
            _ => (keyset_value(), KEYSET_PATHS),
        };
        for e in &edits {
            apply_field_edit(&mut doc, paths, e);
        }
        parse_all_payloads(&serde_json::to_vec(&doc).unwrap())?;
    }

    /// Valid documents round-trip; this is what keeps the "errors are named"
    /// checks above from passing on parsers that refuse everything.
    #[test]
    fn valid_payloads_round_trip(m in arb_manifest(), f in arb_freshness()) {
        prop_assert_eq!(ReleaseManifest::parse(&m.to_payload()).ok(), Some(m));
        prop_assert_eq!(Freshness::parse(&f.to_payload()).ok(), Some(f));
        let ks = &fixture().keyset.keyset;
        let back = Keyset::parse(&ks.to_payload()).ok();
        prop_assert_eq!(back.as_ref(), Some(ks));
    }
}

/// Every field well-typed, each valid or not: what the checks after serde
/// see. `bad_as` holds the names an error may give for the field when it is
/// bad, and is empty when the field is valid.
#[derive(Clone, Debug)]
struct Field {
    value: Value,
    bad_as: Vec<String>,
}

fn field(value: impl Into<Value>, bad: bool, name: &str) -> Field {
    Field {
        value: value.into(),
        bad_as: if bad { vec![name.to_owned()] } else { vec![] },
    }
}

/// Valid four times in five.
fn valid_or<T: fmt::Debug>(
    valid: impl Strategy<Value = T> + 'static,
    other: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![4 => valid, 1 => other].boxed()
}

fn valid_product() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
}

fn valid_channel() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,31}"
}

fn arb_channel() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,33}",
        "[a-zA-Z0-9_ -]{0,4}",
        any::<String>()
    ]
}

fn valid_time() -> impl Strategy<Value = String> {
    (0i64..4_000_000_000).prop_map(|t| time(t).to_rfc3339())
}

fn arb_time_string() -> impl Strategy<Value = String> {
    prop_oneof![
        valid_time(),
        arb_string(),
        Just("2026-02-30T00:00:00Z".to_owned()),
        Just("2026-01-01T24:00:00Z".to_owned()),
        Just("9999-12-31T23:59:60-23:59".to_owned()),
        Just("0000-01-01T00:00:00+23:59".to_owned()),
    ]
}

fn rfc3339_ok(s: &str) -> bool {
    DateTime::parse_from_rfc3339(s).is_ok()
}

fn arb_manifest_fields() -> impl Strategy<Value = Vec<(&'static str, Field)>> {
    // Each field valid four times in five, so documents with exactly one
    // bad field (the case that shows a missing check) are common.
    let count = prop_oneof![
        4 => 1..u64::MAX,
        1 => prop_oneof![Just(0u64), Just(1), Just(u64::MAX)],
    ];
    let notes = prop_oneof![
        4 => prop::collection::btree_map("(en|ja|de|pt-BR|zh_Hant)", "\\PC{0,20}", 0..3),
        1 => prop::collection::btree_map(
            prop_oneof!["[a-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,2}", any::<String>()],
            prop_oneof!["\\PC{0,20}", Just("é".repeat(1001)), Just("x".repeat(2000))],
            0..4,
        ),
    ];
    (
        (
            valid_or(valid_product(), arb_product()),
            valid_or(arb_semver_like(), arb_version()),
            valid_or(valid_channel(), arb_channel()),
        ),
        (count.clone(), count),
        valid_or(
            "[0-9a-f]{64}",
            prop_oneof!["[0-9a-fA-F]{63,65}", any::<String>()],
        ),
        valid_or(
            prop::sample::select(vec![">=2.0.0, <2.2.0", "^1", "*", "~1.2", "=1.0.0"])
                .prop_map(str::to_owned),
            prop_oneof!["[<>=~^*, 0-9.a-z-]{0,16}", any::<String>()],
        ),
        notes,
        valid_or(valid_time(), arb_time_string()),
    )
        .prop_map(
            |((product, version, channel), (seq, size), sha, from, notes, at)| {
                let mut notes_bad = Vec::new();
                for (locale, text) in &notes {
                    if validate_locale(locale).is_err() {
                        notes_bad.push("locale".to_owned());
                    }
                    if text.len() > 2000 {
                        notes_bad.push(format!("notes.{locale}"));
                    }
                }
                let sha_ok = sha.len() == 64
                    && sha
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                vec![
                    (
                        "product",
                        field(product.clone(), !reference_product(&product), "product"),
                    ),
                    (
                        "version",
                        field(version.clone(), !reference_semver(&version), "version"),
                    ),
                    (
                        "channel",
                        field(channel.clone(), !reference_channel(&channel), "channel"),
                    ),
                    ("seq", field(seq, seq == 0, "seq")),
                    (
                        "artifact",
                        Field {
                            value: json!({"sha256": sha, "size": size}),
                            bad_as: [(!sha_ok, "artifact.sha256"), (size == 0, "artifact.size")]
                                .into_iter()
                                .filter(|(bad, _)| *bad)
                                .map(|(_, name)| name.to_owned())
                                .collect(),
                        },
                    ),
                    (
                        "from",
                        field(
                            from.clone(),
                            semver::VersionReq::parse(&from).is_err(),
                            "from",
                        ),
                    ),
                    (
                        "notes",
                        Field {
                            value: json!(notes),
                            bad_as: notes_bad,
                        },
                    ),
                    (
                        "released_at",
                        field(at.clone(), !rfc3339_ok(&at), "released_at"),
                    ),
                ]
            },
        )
}

fn arb_freshness_fields() -> impl Strategy<Value = Vec<(&'static str, Field)>> {
    (
        valid_or(valid_product(), arb_product()),
        valid_or(valid_channel(), arb_channel()),
        any::<u64>(),
        valid_or(valid_time(), arb_time_string()),
    )
        .prop_map(|(product, channel, seq, expires)| {
            vec![
                (
                    "product",
                    field(product.clone(), !reference_product(&product), "product"),
                ),
                (
                    "channel",
                    field(channel.clone(), !reference_channel(&channel), "channel"),
                ),
                ("latest_seq", field(seq, false, "latest_seq")),
                ("keyset_version", field(1, false, "keyset_version")),
                (
                    "expires",
                    field(expires.clone(), !rfc3339_ok(&expires), "freshness expires"),
                ),
            ]
        })
}

/// Accepted exactly when every field is valid; refused with an error that
/// names one of the bad fields.
fn check_fields<T: std::fmt::Debug>(
    fields: &[(&str, Field)],
    parse: impl Fn(&[u8]) -> Result<T, Error>,
) -> Result<(), TestCaseError> {
    let doc: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, f)| ((*k).to_owned(), f.value.clone()))
        .collect();
    let bad: Vec<&str> = fields
        .iter()
        .flat_map(|(_, f)| f.bad_as.iter().map(String::as_str))
        .collect();
    match parse(&serde_json::to_vec(&doc).unwrap()) {
        Ok(v) => prop_assert!(bad.is_empty(), "accepted with bad {:?}: {:?}", bad, v),
        Err(e) => {
            let named = invalid_field(&e);
            prop_assert!(
                named.is_some_and(|n| bad.contains(&n)),
                "refused for {:?} but the bad fields are {:?}: {}",
                named,
                bad,
                e
            );
            assert_names_a_field(&e)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(SIGNED))]

    #[test]
    fn manifest_fields_are_checked_and_named(fields in arb_manifest_fields()) {
        check_fields(&fields, ReleaseManifest::parse)?;
    }

    #[test]
    fn freshness_fields_are_checked_and_named(fields in arb_freshness_fields()) {
        check_fields(&fields, Freshness::parse)?;
    }
}

/// Error messages quote at most a short prefix of hostile input.
#[test]
fn huge_fields_do_not_flood_errors() {
    let long = "x".repeat(100_000);
    let mut notes = BTreeMap::new();
    notes.insert(long.clone(), "y".to_owned());
    for doc in [
        json!({"product": long, "version": "1.0.0", "seq": 1, "released_at": "2026-01-01T00:00:00Z",
               "artifact": {"sha256": "0".repeat(64), "size": 1}}),
        json!({"product": "P", "version": long, "seq": 1, "released_at": "2026-01-01T00:00:00Z",
               "artifact": {"sha256": "0".repeat(64), "size": 1}}),
        json!({"product": "P", "version": "1.0.0", "seq": 1, "released_at": long,
               "artifact": {"sha256": "0".repeat(64), "size": 1}}),
        json!({"product": "P", "version": "1.0.0", "seq": 1, "released_at": "2026-01-01T00:00:00Z",
               "artifact": {"sha256": "0".repeat(64), "size": 1}, "notes": notes}),
    ] {
        let err = ReleaseManifest::parse(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert!(err.to_string().len() < 1000, "{}", err.to_string().len());
    }
}
