//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for DSSE
//! verification: a validly signed release manifest, freshness statement or
//! keyset, changed by any one attack (or several stacked, or byte edits to its
//! JSON text), never verifies anything but what was signed; reordering and
//! signatures that do not count leave it valid.
//!
//! Each property runs a fixed number of cases (SIGNED in `fuzz_support`) so the
//! file takes about 4 s in a debug build and CI stays bounded. For a longer
//! local run set `PROPTEST_CASES`, which replaces every per-property count,
//! e.g. `PROPTEST_CASES=50000 cargo nextest run -p firmcast-signing --test fuzz_verify`.
//! A failure prints the minimal input; nothing is written to the source tree.

mod fuzz_support;

use chrono::Utc;
use firmcast_signing::dsse::Signature;
use firmcast_signing::freshness::TIMESTAMP_TYPE;
use firmcast_signing::keyset::KEYSET_TYPE;
use firmcast_signing::release::RELEASE_TYPE;
use firmcast_signing::{Envelope, Error, PrivateKey, Role, VerifiedKeyset};
use fuzz_support::{
    apply_byte_edit, arb_byte_edit, arb_freshness, arb_manifest, config, fixture,
    RELEASE_THRESHOLD, SIGNED,
};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------
// Verification: a validly signed envelope, mutated, never verifies.
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
