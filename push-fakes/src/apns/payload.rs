//! Apple's payload rule, checked fast without a `Value` tree, against the
//! `Value`-based reference it must agree with.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::util::{bail, Key, Skip};

/// Apple's payload rule: a JSON object with an `aps` object, which for
/// alerts has a non-null `alert`.
pub(super) fn payload_ok(body: &[u8], push_type: &str) -> bool {
    let fast = payload_ok_fast(body, push_type);
    debug_assert!(
        !fast || payload_ok_value(body, push_type),
        "the fast path accepted what the Value check refuses: {}",
        String::from_utf8_lossy(body)
    );
    fast || payload_ok_value(body, push_type)
}

/// The rule on a `serde_json::Value`: the reference, and the answer for
/// every payload the fast path does not accept.
fn payload_ok_value(body: &[u8], push_type: &str) -> bool {
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return false,
    };
    payload["aps"].is_object() && (push_type != "alert" || !payload["aps"]["alert"].is_null())
}

/// The same rule without building a tree. `true` only when the payload
/// certainly passes; anything unusual (a duplicate `aps` or `alert` key,
/// which `Value` resolves last-wins) is left to [`payload_ok_value`].
fn payload_ok_fast(body: &[u8], push_type: &str) -> bool {
    /// `Some(has a non-null alert)` when there is an `aps` object.
    struct Payload(Option<bool>);
    /// Whether the `aps` object has a non-null `alert`.
    struct Aps(bool);

    impl<'de> Deserialize<'de> for Payload {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Payload;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an APNs payload")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
                    let mut aps = None;
                    while let Some(key) = map.next_key_seed(Key(&["aps"]))? {
                        match key {
                            Some(_) if aps.is_some() => return Err(bail()),
                            Some(_) => aps = Some(map.next_value::<Aps>()?.0),
                            None => {
                                map.next_value::<Skip>()?;
                            }
                        }
                    }
                    Ok(Payload(aps))
                }
            }
            d.deserialize_map(V)
        }
    }

    impl<'de> Deserialize<'de> for Aps {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Aps;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an aps object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Aps, A::Error> {
                    let mut alert = None;
                    while let Some(key) = map.next_key_seed(Key(&["alert"]))? {
                        match key {
                            Some(_) if alert.is_some() => return Err(bail()),
                            Some(_) => alert = Some(map.next_value::<Option<Skip>>()?.is_some()),
                            None => {
                                map.next_value::<Skip>()?;
                            }
                        }
                    }
                    Ok(Aps(alert.unwrap_or(false)))
                }
            }
            d.deserialize_map(V)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    match Payload::deserialize(&mut de).and_then(|p| de.end().map(|()| p)) {
        Ok(Payload(Some(alert))) => push_type != "alert" || alert,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_apns_payload_fast_path_agrees_with_the_value_check() {
        let cases: &[&str] = &[
            r#"{"aps":{"alert":{"title":"t","body":"b"}},"product":"P","version":"1"}"#,
            r#"{"aps":{"alert":"hi"}}"#,
            r#"{"aps":{"alert":null}}"#,
            r#"{"aps":{}}"#,
            r#"{"aps":{"content-available":1}}"#,
            r#"{"aps":null}"#,
            r#"{"aps":1}"#,
            r#"{"aps":[]}"#,
            r#"[{"aps":{"alert":"x"}}]"#,
            r#"{"a\u0070s":{"al\u0065rt":"x"}}"#,
            r#"{"aps":{"alert":"x"},"aps":{}}"#,
            r#"{"aps":{},"aps":{"alert":"x"}}"#,
            r#"{"aps":{"alert":"x","alert":null}}"#,
            r#"{"aps":{"alert":"x"}} x"#,
            r#"{"aps":{"alert":"x"}}  "#,
            r#"{"aps":{"alert":"x"},"n":1e400}"#,
            r#"{"aps":{"alert":"x"},"n":-0.5e-3}"#,
            r#"{"aps":{"alert":"x"},"s":"\ud800"}"#,
            r#"{"aps":{"alert":"x"},"s":"\u00e9\n"}"#,
            r#"{"aps":{"alert":1e400}}"#,
            r#"{"aps":{"alert":"x"}"#,
            r#"{"aps":{"alert":"x"},}"#,
            r#"null"#,
            r#""#,
        ];
        let deep = format!(
            r#"{{"aps":{{"alert":"x"}},"d":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let mut bodies: Vec<Vec<u8>> = cases.iter().map(|c| c.as_bytes().to_vec()).collect();
        bodies.push(deep.into_bytes());
        bodies.push(b"{\"aps\":{\"alert\":\"x\"},\"s\":\"\xff\"}".to_vec());
        for body in &bodies {
            for push_type in ["alert", "background"] {
                let fast = payload_ok_fast(body, push_type);
                let value = payload_ok_value(body, push_type);
                assert!(
                    !fast || value,
                    "fast accepts, Value refuses: {} ({push_type})",
                    String::from_utf8_lossy(body)
                );
                assert_eq!(
                    payload_ok(body, push_type),
                    value,
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        // The usual shapes stay on the fast path.
        assert!(payload_ok_fast(cases[0].as_bytes(), "alert"));
        assert!(payload_ok_fast(cases[9].as_bytes(), "alert"));
        assert!(payload_ok_fast(cases[4].as_bytes(), "background"));
    }
}
