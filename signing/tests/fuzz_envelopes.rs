//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for parsing DSSE
//! envelopes, the outermost thing the signing crate reads from untrusted
//! bytes: arbitrary bytes, arbitrary and envelope-shaped JSON, and a real
//! signed envelope's JSON text after byte edits. Each gives an error naming
//! the envelope or an envelope that round-trips. (Whether what parses also
//! verifies is `fuzz_verify`.)
//!
//! Each property runs a fixed number of cases (CHEAP, STRUCTURED in
//! `fuzz_support`) so the file takes about 2 s in a debug build and CI stays
//! bounded. For a longer local run set `PROPTEST_CASES`, which replaces every
//! per-property count, e.g.
//! `PROPTEST_CASES=50000 cargo nextest run -p firmcast-signing --test fuzz_envelopes`.
//! A failure prints the minimal input; nothing is written to the source tree.

mod fuzz_support;

use base64::{engine::general_purpose, Engine};
use firmcast_signing::release::RELEASE_TYPE;
use firmcast_signing::{Envelope, Error};
use fuzz_support::{
    apply_byte_edit, arb_byte_edit, arb_json, arb_key, arb_manifest, arb_string, b64, config,
    fixture, CHEAP, STRUCTURED,
};
use proptest::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Envelope parsing
// ---------------------------------------------------------------------------

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
