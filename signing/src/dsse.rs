//! DSSE envelopes (https://github.com/secure-systems-lab/dsse): the payload is
//! signed as its exact bytes through PAE, so no canonical JSON is needed.

use crate::{Error, PrivateKey, PublicKey, Result};
use base64::{engine::general_purpose, Engine};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// An envelope with its payload and signatures decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<Signature>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub keyid: String,
    pub sig: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<SignatureJson>,
}

#[derive(Serialize, Deserialize)]
struct SignatureJson {
    #[serde(default)]
    keyid: String,
    sig: String,
}

/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// DSSE writes standard base64; readers accept the URL-safe alphabet too.
fn decode_b64(field: &'static str, s: &str) -> Result<Vec<u8>> {
    general_purpose::STANDARD
        .decode(s)
        .or_else(|_| general_purpose::URL_SAFE.decode(s))
        .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|e| Error::Base64 {
            field,
            reason: e.to_string(),
        })
}

impl Envelope {
    pub fn sign(payload_type: &str, payload: Vec<u8>, key: &PrivateKey) -> Self {
        let mut env = Envelope {
            payload_type: payload_type.to_owned(),
            payload,
            signatures: Vec::new(),
        };
        env.push_signature(key);
        env
    }

    /// Adds one more signature (k of n). A second signature by the same key
    /// would not count, so it is refused rather than silently kept.
    pub fn add_signature(&mut self, key: &PrivateKey) -> Result<()> {
        if self.signatures.iter().any(|s| s.keyid == key.keyid()) {
            return Err(Error::AlreadySigned {
                keyid: key.keyid().to_owned(),
            });
        }
        self.push_signature(key);
        Ok(())
    }

    fn push_signature(&mut self, key: &PrivateKey) {
        let sig = key.sign(&pae(&self.payload_type, &self.payload));
        self.signatures.push(Signature {
            keyid: key.keyid().to_owned(),
            sig: sig.to_vec(),
        });
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw: EnvelopeJson = serde_json::from_slice(bytes).map_err(|e| Error::Json {
            what: "DSSE envelope",
            reason: e.to_string(),
        })?;
        Self::from_json(raw)
    }

    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        let raw: EnvelopeJson = serde_json::from_value(value).map_err(|e| Error::Json {
            what: "DSSE envelope",
            reason: e.to_string(),
        })?;
        Self::from_json(raw)
    }

    fn from_json(raw: EnvelopeJson) -> Result<Self> {
        let payload = decode_b64("payload", &raw.payload)?;
        let signatures = raw
            .signatures
            .into_iter()
            .map(|s| {
                Ok(Signature {
                    keyid: s.keyid,
                    sig: decode_b64("sig", &s.sig)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Envelope {
            payload_type: raw.payload_type,
            payload,
            signatures,
        })
    }

    fn to_json(&self) -> EnvelopeJson {
        EnvelopeJson {
            payload_type: self.payload_type.clone(),
            payload: general_purpose::STANDARD.encode(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| SignatureJson {
                    keyid: s.keyid.clone(),
                    sig: general_purpose::STANDARD.encode(&s.sig),
                })
                .collect(),
        }
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self.to_json()).expect("an envelope always serializes")
    }

    /// Pretty JSON with a trailing newline, as written to files.
    pub fn to_pretty_json(&self) -> String {
        let mut s =
            serde_json::to_string_pretty(&self.to_json()).expect("an envelope always serializes");
        s.push('\n');
        s
    }

    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).expect("an envelope always serializes")
    }

    /// Checks the payload type, then that at least `threshold` distinct keys
    /// of `trusted` signed it. Unknown key ids are skipped and a key counts
    /// once however often it signed. Returns the verified payload.
    pub fn verify(
        &self,
        expected_type: &'static str,
        role: &'static str,
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<&[u8]> {
        if self.payload_type != expected_type {
            return Err(Error::PayloadType {
                expected: expected_type,
                found: crate::names::truncate(&self.payload_type),
            });
        }
        let message = pae(&self.payload_type, &self.payload);
        let mut good: HashSet<&str> = HashSet::new();
        let (mut invalid, mut unknown) = (0, 0);
        for s in &self.signatures {
            match trusted.iter().find(|k| k.keyid() == s.keyid) {
                None => unknown += 1,
                Some(key) if good.contains(key.keyid()) => {}
                Some(key) if key.verify(&message, &s.sig) => {
                    good.insert(key.keyid());
                }
                Some(_) => invalid += 1,
            }
        }
        if threshold == 0 || good.len() < threshold {
            return Err(Error::BelowThreshold {
                role,
                valid: good.len(),
                threshold,
                invalid,
                unknown,
            });
        }
        Ok(&self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: &str = "application/vnd.firmcast.test+json";

    #[test]
    fn pae_matches_the_spec_example() {
        // The example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn json_round_trip() {
        let k = PrivateKey::generate();
        let env = Envelope::sign(T, b"{\"a\":1}".to_vec(), &k);
        let back = Envelope::parse(env.to_pretty_json().as_bytes()).unwrap();
        assert_eq!(back, env);
        let v: serde_json::Value = serde_json::from_str(&env.to_pretty_json()).unwrap();
        assert_eq!(v["payloadType"], T);
        assert_eq!(v["signatures"][0]["keyid"], k.keyid());
        assert_eq!(Envelope::from_value(env.to_value()).unwrap(), env);
    }

    #[test]
    fn threshold_counts_distinct_trusted_keys() {
        let (a, b, c) = (
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        );
        let trusted = [a.public().clone(), b.public().clone()];
        let mut env = Envelope::sign(T, b"x".to_vec(), &a);
        env.verify(T, "release", &trusted, 1).unwrap();
        // One good signature of two needed, nothing called invalid.
        let one_of_two = |err: Error| {
            assert!(
                matches!(
                    err,
                    Error::BelowThreshold {
                        valid: 1,
                        threshold: 2,
                        invalid: 0,
                        ..
                    }
                ),
                "{err}"
            )
        };
        one_of_two(env.verify(T, "release", &trusted, 2).unwrap_err());

        // The same key twice still counts once, and a second signature by a
        // key that already counted is not even checked (a thousand copies
        // cost one verification): a bad copy is not called invalid.
        let mut dup = env.signatures[0].clone();
        dup.sig = vec![0; 64];
        env.signatures.push(dup);
        one_of_two(env.verify(T, "release", &trusted, 2).unwrap_err());
        env.signatures.pop();
        assert!(matches!(
            env.add_signature(&a),
            Err(Error::AlreadySigned { .. })
        ));

        // An unknown key is ignored, not an error; a second trusted key meets 2.
        env.add_signature(&c).unwrap();
        env.verify(T, "release", &trusted, 1).unwrap();
        env.add_signature(&b).unwrap();
        env.verify(T, "release", &trusted, 2).unwrap();
    }

    #[test]
    fn failures_are_named() {
        let a = PrivateKey::generate();
        let trusted = [a.public().clone()];
        let env = Envelope::sign(T, b"x".to_vec(), &a);
        let err = env
            .verify("other/type", "release", &trusted, 1)
            .unwrap_err();
        assert!(matches!(err, Error::PayloadType { .. }), "{err}");

        let mut forged = env.clone();
        forged.payload = b"y".to_vec();
        let err = forged.verify(T, "release", &trusted, 1).unwrap_err();
        assert!(
            matches!(err, Error::BelowThreshold { invalid: 1, .. }),
            "{err}"
        );

        let err =
            Envelope::parse(br#"{"payloadType":"t","payload":"!!","signatures":[]}"#).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Base64 {
                    field: "payload",
                    ..
                }
            ),
            "{err}"
        );
        let err = Envelope::parse(b"{").unwrap_err();
        assert!(matches!(err, Error::Json { .. }), "{err}");
        let err = Envelope::parse(
            br#"{"payloadType":"t","payload":"","signatures":[{"keyid":"k","sig":"%%"}]}"#,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Base64 { field: "sig", .. }), "{err}");

        let unsigned = Envelope {
            signatures: vec![],
            ..env
        };
        assert!(matches!(
            unsigned.verify(T, "release", &trusted, 1),
            Err(Error::BelowThreshold { valid: 0, .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_flipped_payload_bit_fails(payload in proptest::collection::vec(any::<u8>(), 1..512), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = PrivateKey::generate();
            let mut env = Envelope::sign(T, payload, &k);
            let i = pos.index(env.payload.len());
            env.payload[i] ^= 1 << bit;
            // Through JSON too, as a verifier receives it.
            let env = Envelope::parse(&env.to_json_bytes()).unwrap();
            prop_assert!(env.verify(T, "release", &[k.public().clone()], 1).is_err());
        }

        #[test]
        fn a_flipped_signature_bit_fails(payload in proptest::collection::vec(any::<u8>(), 0..512), pos in 0usize..64, bit in 0u8..8) {
            let k = PrivateKey::generate();
            let mut env = Envelope::sign(T, payload, &k);
            env.signatures[0].sig[pos] ^= 1 << bit;
            let env = Envelope::parse(&env.to_json_bytes()).unwrap();
            prop_assert!(env.verify(T, "release", &[k.public().clone()], 1).is_err());
        }

        #[test]
        fn a_flipped_type_bit_fails(pos in 0usize..T.len(), bit in 0u8..7) {
            let k = PrivateKey::generate();
            let mut env = Envelope::sign(T, b"p".to_vec(), &k);
            let mut t = env.payload_type.into_bytes();
            t[pos] ^= 1 << bit;
            env.payload_type = String::from_utf8_lossy(&t).into_owned();
            prop_assert!(env.verify(T, "release", &[k.public().clone()], 1).is_err());
        }
    }
}
