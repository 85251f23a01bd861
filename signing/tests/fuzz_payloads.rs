//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for the signed
//! documents' payloads: the release manifest, freshness statement and keyset,
//! parsed from arbitrary bytes and JSON, from valid documents with fields
//! edited, and field by field, valid or not. Accepted documents round-trip;
//! every refusal names the bad field, and no error floods.
//!
//! Each property runs a fixed number of cases (STRUCTURED, SIGNED in
//! `fuzz_support`) so the file takes about 3 s in a debug build and CI stays
//! bounded. For a longer local run set `PROPTEST_CASES`, which replaces every
//! per-property count, e.g.
//! `PROPTEST_CASES=50000 cargo nextest run -p firmcast-signing --test fuzz_payloads`.
//! A failure prints the minimal input; nothing is written to the source tree.

mod fuzz_support;

use chrono::DateTime;
use firmcast_signing::names::validate_locale;
use firmcast_signing::release::ReleaseManifest;
use firmcast_signing::{Error, Freshness, Keyset, PrivateKey, PublicKey};
use fuzz_support::{
    arb_freshness, arb_json, arb_key, arb_manifest, arb_product, arb_semver_like, arb_string,
    arb_version, b64, config, fixture, invalid_field, reference_channel, reference_product,
    reference_semver, time, SIGNED, STRUCTURED,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;

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
