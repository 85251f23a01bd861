//! Request handling: the path, provider token, headers and payload checks,
//! scripted faults, and answers in APNs' shape.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use hyper::{Method, Response, StatusCode};
use ring::signature::ECDSA_P256_SHA256_FIXED;
use serde_json::json;

use crate::jwt;
use crate::server::{json_response, Reply, Req, Resp};
use crate::util::{self, Span};

use super::delivery::Delivered;
use super::payload::payload_ok;
use super::{ApnsFault, Shared};

const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

pub(super) const UUID_LEN: usize = 36;

fn reason(status: StatusCode, apns_id: &[u8; UUID_LEN], reason: &str) -> Resp {
    with_id(json_response(status, &json!({"reason": reason})), apns_id)
}

fn with_id(mut resp: Resp, apns_id: &[u8; UUID_LEN]) -> Resp {
    if let Ok(v) = HeaderValue::from_bytes(apns_id) {
        resp.headers_mut().insert(APNS_ID, v);
    }
    resp
}

fn with_retry_after(mut resp: Resp, secs: Option<u64>) -> Resp {
    if let Some(secs) = secs {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn is_uuid(s: &str) -> bool {
    s.len() == UUID_LEN
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A random id in APNs' format: 8-4-4-4-12 uppercase hex digits.
fn new_uuid() -> [u8; UUID_LEN] {
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&util::fast_u64().to_le_bytes());
    random[8..].copy_from_slice(&util::fast_u64().to_le_bytes());
    let mut hex = [0u8; 32];
    util::hex_into(&random, true, &mut hex);
    let mut id = [b'-'; UUID_LEN];
    id[0..8].copy_from_slice(&hex[0..8]);
    id[9..13].copy_from_slice(&hex[8..12]);
    id[14..18].copy_from_slice(&hex[12..16]);
    id[19..23].copy_from_slice(&hex[16..20]);
    id[24..36].copy_from_slice(&hex[20..32]);
    id
}

const PUSH_TYPES: [&str; 8] = [
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
];

pub(super) fn handle(shared: &Arc<Shared>, req: Req) -> Reply {
    let mut state = shared.state();
    state.total_requests += 1;
    let apns_id = match req.header(APNS_ID) {
        Some(id) if is_uuid(id) => id.as_bytes().try_into().expect("36 bytes"),
        Some(_) => {
            drop(state);
            return Reply::Now(reason(StatusCode::BAD_REQUEST, &new_uuid(), "BadMessageId"));
        }
        None => new_uuid(),
    };
    let Some(token) = req.path().strip_prefix("/3/device/") else {
        drop(state);
        return Reply::Now(reason(StatusCode::NOT_FOUND, &apns_id, "BadPath"));
    };
    if req.method != Method::POST {
        drop(state);
        return Reply::Now(reason(
            StatusCode::METHOD_NOT_ALLOWED,
            &apns_id,
            "MethodNotAllowed",
        ));
    }
    if token.is_empty() {
        drop(state);
        return Reply::Now(reason(
            StatusCode::BAD_REQUEST,
            &apns_id,
            "MissingDeviceToken",
        ));
    }
    let token_span = state.tokens.push(token);
    state.requests.push(token_span);

    // A scripted delay holds the request before anything is checked, like
    // a slow network: a provider token may expire meanwhile. A slow
    // provider (`answer_delay`) holds every request the same way.
    let delay = match state.fault(token, |f| matches!(f, ApnsFault::Delay(_))) {
        Some(ApnsFault::Delay(d)) => Some(d),
        _ => None,
    };
    drop(state);
    let answer_delay = shared.options.answer_delay;
    let delay = if answer_delay.is_zero() {
        delay
    } else {
        Some(delay.unwrap_or_default() + answer_delay)
    };
    match delay {
        None => Reply::Now(check(shared, &req, apns_id, token_span)),
        Some(delay) => {
            let shared = shared.clone();
            Reply::Later(Box::pin(async move {
                tokio::time::sleep(delay).await;
                check(&shared, &req, apns_id, token_span)
            }))
        }
    }
}

/// Everything after the path: provider token, headers, payload, scripted
/// faults; records the notification when all is well.
fn check(shared: &Shared, req: &Req, apns_id: [u8; UUID_LEN], token_span: Span) -> Resp {
    let token = &req.path()["/3/device/".len()..];

    // Provider token.
    let Some(auth) = req.header(AUTHORIZATION) else {
        return reason(StatusCode::FORBIDDEN, &apns_id, "MissingProviderToken");
    };
    let Some(jwt) = auth
        .strip_prefix("bearer ")
        .or_else(|| auth.strip_prefix("Bearer "))
    else {
        return reason(StatusCode::FORBIDDEN, &apns_id, "MissingProviderToken");
    };
    let jwt = jwt.trim();
    let known = shared.state().jwt(jwt);
    let opts = &shared.options;
    let iat = match known.verified_iat {
        Some(iat) => iat,
        None => {
            let Some(jws) = jwt::verify(jwt, &ECDSA_P256_SHA256_FIXED, &shared.public_key) else {
                return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
            };
            if jws.header["alg"] != "ES256"
                || jws.header["kid"] != opts.key_id.as_str()
                || jws.claims["iss"] != opts.team_id.as_str()
            {
                return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
            }
            let Some(iat) = jws.claims["iat"].as_i64() else {
                return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
            };
            shared
                .state()
                .update_jwt(jwt, |s| s.verified_iat = Some(iat));
            iat
        }
    };
    let now = jwt::unix_now();
    if iat > now + 60 {
        return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
    }
    if known.expired || now - iat > 3600 {
        return reason(StatusCode::FORBIDDEN, &apns_id, "ExpiredProviderToken");
    }

    // Headers.
    let Some(topic) = req.header(APNS_TOPIC) else {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "MissingTopic");
    };
    if topic != opts.topic {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "TopicDisallowed");
    }
    let push_type = req.header(APNS_PUSH_TYPE).unwrap_or_default();
    let Some(push_type) = PUSH_TYPES.iter().copied().find(|t| *t == push_type) else {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "InvalidPushType");
    };
    let priority = match req.header(APNS_PRIORITY) {
        None => None,
        Some("1") => Some("1"),
        Some("5") => Some("5"),
        Some("10") => Some("10"),
        Some(_) => return reason(StatusCode::BAD_REQUEST, &apns_id, "BadPriority"),
    };
    let expiration = match req.header(APNS_EXPIRATION) {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return reason(StatusCode::BAD_REQUEST, &apns_id, "BadExpirationDate"),
        },
    };
    let collapse_id = req.header(APNS_COLLAPSE_ID);
    if collapse_id.is_some_and(|c| c.len() > 64) {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "BadCollapseId");
    }
    if token.len() < 64 || token.len() > 200 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "BadDeviceToken");
    }

    // Payload.
    if req.body.len() > opts.max_payload {
        return reason(StatusCode::PAYLOAD_TOO_LARGE, &apns_id, "PayloadTooLarge");
    }
    if req.body.is_empty() {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "PayloadEmpty");
    }
    if !payload_ok(&req.body, push_type) {
        return reason(StatusCode::BAD_REQUEST, &apns_id, "PayloadEmpty");
    }

    // Scripted faults; without one the notification is delivered.
    let mut state = shared.state();
    let fault = match state.fault(token, |_| true) {
        None | Some(ApnsFault::Delay(_)) => None, // a delay was already waited
        Some(ApnsFault::ExpiredProviderToken) => {
            state.update_jwt(jwt, |s| s.expired = true);
            Some(ApnsFault::ExpiredProviderToken)
        }
        Some(fault) => Some(fault),
    };
    if let Some(fault) = fault {
        drop(state);
        return fault_response(fault, &apns_id);
    }
    let payload = state.payloads.intern(&req.body);
    let collapse_id = collapse_id.map(|c| state.collapse_ids.intern(c.as_bytes()));
    state.deliveries.push(Delivered {
        token: token_span,
        apns_id,
        push_type,
        priority,
        expiration,
        collapse_id,
        payload,
    });
    drop(state);
    with_id(Response::new(Full::new(Bytes::new())), &apns_id)
}

fn fault_response(fault: ApnsFault, apns_id: &[u8; UUID_LEN]) -> Resp {
    match fault {
        ApnsFault::Unregistered { timestamp_ms } => {
            let body = json!({"reason": "Unregistered", "timestamp": timestamp_ms});
            with_id(json_response(StatusCode::GONE, &body), apns_id)
        }
        ApnsFault::BadDeviceToken => reason(StatusCode::BAD_REQUEST, apns_id, "BadDeviceToken"),
        ApnsFault::ExpiredProviderToken => {
            reason(StatusCode::FORBIDDEN, apns_id, "ExpiredProviderToken")
        }
        ApnsFault::TooManyRequests { retry_after } => with_retry_after(
            reason(StatusCode::TOO_MANY_REQUESTS, apns_id, "TooManyRequests"),
            retry_after,
        ),
        ApnsFault::InternalServerError => reason(
            StatusCode::INTERNAL_SERVER_ERROR,
            apns_id,
            "InternalServerError",
        ),
        ApnsFault::ServiceUnavailable { retry_after } => with_retry_after(
            reason(
                StatusCode::SERVICE_UNAVAILABLE,
                apns_id,
                "ServiceUnavailable",
            ),
            retry_after,
        ),
        ApnsFault::Delay(_) => unreachable!("a delay is waited, not answered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_apns_ids_look_like_uuids() {
        let a = new_uuid();
        let b = new_uuid();
        assert_ne!(a, b);
        let s = std::str::from_utf8(&a).unwrap();
        assert!(is_uuid(s), "{s}");
        assert_eq!(s, s.to_uppercase());
        assert!(is_uuid("0a1B2c3D-0000-1111-2222-333344445555"));
        assert!(!is_uuid("0a1B2c3D-0000-1111-2222-33334444555"));
        assert!(!is_uuid("0a1B2c3D00000-1111-2222-333344445555"));
        assert!(!is_uuid("0a1B2c3D-0000-1111-2222-33334444555g"));
    }
}
