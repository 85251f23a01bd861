//! The `messages:send` body checks: a fast validator that borrows from the
//! body, and the `Value`-based reference it must agree with (and falls back
//! to for anything unusual).

mod fast;

use std::borrow::Cow;

use hyper::StatusCode;
use serde_json::{Map, Value};

use crate::server::Resp;

use super::error::{google_error, invalid};
use fast::check_fast;

/// A message to one registration token that passed every check.
pub(super) struct Accepted<'a> {
    pub(super) token: Cow<'a, str>,
    /// Where the token is in the body, as written (no escapes).
    pub(super) token_at: Option<usize>,
    pub(super) collapse_key: Option<Cow<'a, str>>,
}

/// Check a `messages:send` body: `Ok(None)` for a valid topic or condition
/// message, the error response for an invalid one.
pub(super) fn accept(body: &[u8]) -> Result<Option<Accepted<'_>>, Box<Resp>> {
    if let Some(fast) = check_fast(body) {
        #[cfg(debug_assertions)]
        {
            let value: Value = serde_json::from_slice(body).expect("the fast path parsed it");
            let message = check_message(&value)
                .unwrap_or_else(|_| panic!("the fast path accepted what check_message refuses"));
            assert_eq!(message["token"].as_str(), Some(fast.token));
            assert_eq!(
                message["android"]["collapse_key"].as_str(),
                fast.collapse_key
            );
        }
        // The token is borrowed from the body, so it lies inside it.
        let at = (fast.token.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let token_at = (body.get(at..at.wrapping_add(fast.token.len()))
            == Some(fast.token.as_bytes()))
        .then_some(at);
        return Ok(Some(Accepted {
            token: Cow::Borrowed(fast.token),
            token_at,
            collapse_key: fast.collapse_key.map(Cow::Borrowed),
        }));
    }
    let body: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Err(Box::new(google_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid JSON payload received. {e}"),
                None,
                vec![],
            )))
        }
    };
    let message = check_message(&body)?;
    Ok(message["token"].as_str().map(|token| Accepted {
        token: Cow::Owned(token.to_owned()),
        token_at: None,
        collapse_key: message["android"]["collapse_key"]
            .as_str()
            .map(|c| Cow::Owned(c.to_owned())),
    }))
}

fn bad(field: &str, description: &str) -> Box<Resp> {
    Box::new(invalid(field, description))
}

fn only_keys(obj: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), Box<Resp>> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Box::new(google_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."
            ),
            None,
            vec![(at, "unknown field")],
        ))),
        None => Ok(()),
    }
}

fn object<'a>(v: &'a Value, at: &str) -> Result<Option<&'a Map<String, Value>>, Box<Resp>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(bad(at, "must be an object")),
    }
}

fn strings_only(m: &Map<String, Value>, at: &str) -> Result<(), Box<Resp>> {
    match m.iter().find(|(_, v)| !v.is_string()) {
        Some((k, _)) => Err(bad(&format!("{at}.{k}"), "values must be strings")),
        None => Ok(()),
    }
}

fn valid_duration(s: &str) -> Option<u64> {
    let num = s.strip_suffix('s')?;
    let (secs, frac) = num.split_once('.').unwrap_or((num, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    secs.parse().ok()
}

/// The v1 `Message` checks the fake makes; returns the message.
fn check_message(body: &Value) -> Result<&Value, Box<Resp>> {
    let top = object(body, "")?.ok_or_else(|| bad("", "body must be an object"))?;
    only_keys(top, "", &["message", "validate_only"])?;
    let message = &body["message"];
    let m = object(message, "message")?.ok_or_else(|| bad("message", "required"))?;
    only_keys(m, "message", &MESSAGE_KEYS)?;
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| m.contains_key(**t))
        .count();
    if targets != 1 {
        return Err(bad("message", "exactly one of token, topic, condition"));
    }
    if let Some(token) = m.get("token") {
        if token.as_str().is_none_or(str::is_empty) {
            return Err(bad(
                "message.token",
                "The registration token is not a valid FCM registration token",
            ));
        }
    }
    if let Some(data) = object(&message["data"], "message.data")? {
        strings_only(data, "message.data")?;
        if let Some(k) = data.keys().find(|k| reserved_data_key(k)) {
            return Err(bad(&format!("message.data.{k}"), "reserved key"));
        }
    }
    if let Some(n) = object(&message["notification"], "message.notification")? {
        only_keys(n, "message.notification", &NOTIFICATION_KEYS)?;
        strings_only(n, "message.notification")?;
    }
    let size = message["data"].to_string().len() + message["notification"].to_string().len();
    if size > MAX_MESSAGE_SIZE {
        return Err(bad("message", "Message is too big"));
    }
    if let Some(a) = object(&message["android"], "message.android")? {
        only_keys(a, "message.android", &ANDROID_KEYS)?;
        if let Some(ttl) = a.get("ttl") {
            match ttl.as_str().and_then(valid_duration) {
                Some(secs) if secs <= MAX_TTL_SECS => {}
                _ => return Err(bad("message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)")),
            }
        }
        if let Some(p) = a.get("priority") {
            if !matches!(p.as_str(), Some("NORMAL" | "HIGH")) {
                return Err(bad("message.android.priority", "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority)"));
            }
        }
        if a.get("collapse_key").is_some_and(|c| !c.is_string()) {
            return Err(bad("message.android.collapse_key", "must be a string"));
        }
        if let Some(n) = object(
            &message["android"]["notification"],
            "message.android.notification",
        )? {
            if n.get("tag").is_some_and(|t| !t.is_string()) {
                return Err(bad("message.android.notification.tag", "must be a string"));
            }
        }
    }
    if let Some(apns) = object(&message["apns"], "message.apns")? {
        only_keys(apns, "message.apns", &APNS_KEYS)?;
        if let Some(h) = object(&message["apns"]["headers"], "message.apns.headers")? {
            strings_only(h, "message.apns.headers")?;
        }
    }
    Ok(message)
}

const MESSAGE_KEYS: [&str; 10] = [
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
];
const ANDROID_KEYS: [&str; 8] = [
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
];
const NOTIFICATION_KEYS: [&str; 3] = ["title", "body", "image"];
const APNS_KEYS: [&str; 4] = ["headers", "payload", "fcm_options", "live_activity_token"];
const RESERVED_DATA_KEYS: [&str; 3] = ["from", "notification", "message_type"];
const MAX_MESSAGE_SIZE: usize = 4096;
const MAX_TTL_SECS: u64 = 28 * 24 * 3600;

fn reserved_data_key(k: &str) -> bool {
    RESERVED_DATA_KEYS.contains(&k) || k.starts_with("google") || k.starts_with("gcm")
}

fn ttl_ok(ttl: &str) -> bool {
    valid_duration(ttl).is_some_and(|secs| secs <= MAX_TTL_SECS)
}

/// firmcast's message shape, for these tests and the delivery tests.
#[cfg(test)]
pub(super) fn firmcast_body(token: &str) -> Value {
    serde_json::json!({"message": {
        "token": token,
        "notification": {"title": "Buds 2.0.0", "body": "Buds 2.0.0: better."},
        "data": {"product": "Buds", "version": "2.0.0", "critical": "false"},
        "android": {
            "ttl": "259200s",
            "priority": "NORMAL",
            "collapse_key": "fw.Buds",
            "notification": {"tag": "fw.Buds"},
        },
        "apns": {"headers": {
            "apns-collapse-id": "fw.Buds",
            "apns-expiration": "1796224070",
            "apns-priority": "5",
            "apns-push-type": "alert",
        }},
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use serde_json::json;

    type Outcome = Result<Option<(String, Option<String>)>, (u16, String)>;

    fn error(resp: &Resp) -> (u16, String) {
        let body = resp.body().clone();
        let bytes = futures_body(body);
        (
            resp.status().as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn futures_body(body: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(body.collect()).unwrap().to_bytes()
    }

    /// The reference: `Value` + `check_message`, as before the fast path.
    fn reference(body: &[u8]) -> Outcome {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                let resp = google_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid JSON payload received. {e}"),
                    None,
                    vec![],
                );
                return Err(error(&resp));
            }
        };
        let m = check_message(&value).map_err(|r| error(&r))?;
        Ok(m["token"].as_str().map(|t| {
            (
                t.to_owned(),
                m["android"]["collapse_key"].as_str().map(str::to_owned),
            )
        }))
    }

    fn actual(body: &[u8]) -> Outcome {
        accept(body)
            .map(|a| a.map(|a| (a.token.into_owned(), a.collapse_key.map(Cow::into_owned))))
            .map_err(|r| error(&r))
    }

    #[test]
    fn fake_fcm_fast_path_agrees_with_check_message() {
        let base = firmcast_body("fcm-token-0001:APA91bxxxx");
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let mut push = |v: Value| bodies.push(serde_json::to_vec(&v).unwrap());
        push(base.clone());
        let edits: Vec<(&str, Value)> = vec![
            ("/validate_only", json!(true)),
            ("/message/topic", json!("news")),
            ("/message/condition", json!("'a' in topics")),
            ("/message/token", json!(null)),
            ("/message/token", json!("")),
            ("/message/token", json!(5)),
            ("/message/name", json!({"any": [1, 2.5, null]})),
            ("/message/webpush", json!({"n": -1})),
            ("/message/fcm_options", json!(null)),
            ("/message/foo", json!(1)),
            ("/foo", json!(1)),
            ("/message/data", json!(null)),
            ("/message/data", json!(5)),
            ("/message/data", json!([])),
            ("/message/data/n", json!(1)),
            ("/message/data/from", json!("me")),
            ("/message/data/google.x", json!("y")),
            ("/message/data/gcm", json!("y")),
            ("/message/data/message_type", json!("y")),
            ("/message/data/notification", json!("y")),
            ("/message/data/notes", json!("x".repeat(3500))),
            ("/message/data/notes", json!("x".repeat(4000))),
            ("/message/data/notes", json!("x".repeat(5000))),
            ("/message/notification", json!(null)),
            ("/message/notification", json!("x")),
            ("/message/notification/image", json!("https://x/y.png")),
            ("/message/notification/sound", json!("ding")),
            ("/message/notification/title", json!(1)),
            ("/message/android", json!(null)),
            ("/message/android", json!([])),
            ("/message/android/ttl", json!("3.5s")),
            ("/message/android/ttl", json!("0s")),
            ("/message/android/ttl", json!("2419200s")),
            ("/message/android/ttl", json!("2419201s")),
            ("/message/android/ttl", json!("1.1234567891s")),
            ("/message/android/ttl", json!("s")),
            ("/message/android/ttl", json!("abc")),
            ("/message/android/ttl", json!(5)),
            ("/message/android/ttl", json!(null)),
            ("/message/android/priority", json!("HIGH")),
            ("/message/android/priority", json!("LOW")),
            ("/message/android/priority", json!(null)),
            ("/message/android/collapse_key", json!(5)),
            ("/message/android/collapse_key", json!(null)),
            ("/message/android/collapse_key", json!("fw.\"q\"")),
            ("/message/android/notification", json!(null)),
            ("/message/android/notification", json!(5)),
            ("/message/android/notification/tag", json!(5)),
            ("/message/android/notification/tag", json!(null)),
            ("/message/android/notification/color", json!("#fff")),
            ("/message/android/restricted_package_name", json!(1)),
            ("/message/android/direct_boot_ok", json!(true)),
            ("/message/android/foo", json!(1)),
            ("/message/apns", json!(null)),
            ("/message/apns", json!(1)),
            ("/message/apns/headers", json!(null)),
            ("/message/apns/headers", json!([])),
            ("/message/apns/headers/x", json!(1)),
            ("/message/apns/payload", json!({"aps": {}})),
            ("/message/apns/foo", json!(1)),
            ("/message/token", json!("tok\"en\n")),
            ("/message/token", json!("tök€n")),
        ];
        for (pointer, value) in edits {
            let mut body = base.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut body
            } else {
                body.pointer_mut(parent).unwrap()
            };
            match target {
                Value::Object(m) => {
                    m.insert(key.to_owned(), value);
                }
                _ => panic!("{pointer}"),
            }
            push(body);
        }
        let mut no_token = base.clone();
        no_token["message"].as_object_mut().unwrap().remove("token");
        push(no_token.clone());
        no_token["message"]["topic"] = json!("news");
        push(no_token);
        let mut lean = base.clone();
        let m = lean["message"].as_object_mut().unwrap();
        for k in ["notification", "data", "android", "apns"] {
            m.remove(k);
        }
        push(lean);

        let text = String::from_utf8(bodies[0].clone()).unwrap();
        let raw: Vec<String> = vec![
            text.replace("\"token\"", "\"t\\u006fken\""),
            text.replace("\"collapse_key\"", "\"collapse\\u005fkey\""),
            text.replace("fcm-token-0001", "fcm-t\\u006fken-0001"),
            text.replace("\"fw.Buds\",\"notif", "\"fw.B\\u0075ds\",\"notif"),
            text.replace("\"priority\":\"NORMAL\"", "\"priority\":\"N\\u004fRMAL\""),
            text.replace("\"ttl\":\"259200s\"", "\"ttl\":\"25920\\u0030s\""),
            text.replace("{\"message\":{", "{\"message\":{\"token\":\"other\","),
            text.replace("\"ttl\":", "\"collapse_key\":\"first\",\"ttl\":"),
            text.replace("\"data\":{", "\"data\":{\"product\":\"dup\","),
            text.replace("\"data\":{", "\"data\":{\"from\":1,\"from\":\"x\","),
            text.replace(
                "{\"message\":",
                "{\"validate_only\":1,\"validate_only\":2,\"message\":",
            ),
            text.replace("\"tag\":", "\"tag\":1,\"tag\":"),
            text.replace("\"headers\":{", "\"headers\":null,\"headers\":{"),
            text.replace("\"message\":{", "\"message\":{\"name\":1e400,"),
            text.replace("\"message\":{", "\"message\":{\"name\":\"\\ud800\","),
            text.replace(
                "\"message\":{",
                &format!(
                    "\"message\":{{\"name\":{}1{},",
                    "[".repeat(200),
                    "]".repeat(200)
                ),
            ),
            text.replace("\"message\":{", "\"message\" : {\n "),
            format!("{text} x"),
            format!("{text}\n"),
            format!("[{text}]"),
            text[..text.len() - 1].to_owned(),
            "null".to_owned(),
            String::new(),
        ];
        bodies.extend(raw.into_iter().map(String::into_bytes));
        let mut bad_utf8 = text.clone().into_bytes();
        let at = text.find("Buds 2.0.0: better.").unwrap();
        bad_utf8[at] = 0xff;
        bodies.push(bad_utf8);

        let mut fast = 0;
        for body in &bodies {
            let expected = reference(body);
            assert_eq!(actual(body), expected, "{}", String::from_utf8_lossy(body));
            if let Some(f) = check_fast(body) {
                fast += 1;
                let (token, collapse) = expected.unwrap().unwrap();
                assert_eq!(f.token, token);
                assert_eq!(f.collapse_key, collapse.as_deref());
            }
        }
        // firmcast's shape, and the harmless variants, stay on the fast path.
        assert!(check_fast(&bodies[0]).is_some());
        assert!(fast >= 25, "only {fast} bodies on the fast path");
    }
}
