//! Google's error shape, and the scripted faults' answers in it.

use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::server::{json_response, Resp};

use super::FcmFault;

const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

/// Google's error shape: `{"error": {code, message, status, details}}`.
pub(super) fn google_error(
    status: StatusCode,
    message: &str,
    error_code: Option<&str>,
    field_violations: Vec<(&str, &str)>,
) -> Resp {
    let status_name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let mut details = Vec::new();
    if let Some(code) = error_code {
        details.push(json!({"@type": FCM_ERROR, "errorCode": code}));
    }
    if !field_violations.is_empty() {
        let violations: Vec<Value> = field_violations
            .into_iter()
            .map(|(field, description)| json!({"field": field, "description": description}))
            .collect();
        details.push(json!({"@type": BAD_REQUEST, "fieldViolations": violations}));
    }
    let mut error = json!({"code": status.as_u16(), "message": message, "status": status_name});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    json_response(status, &json!({ "error": error }))
}

pub(super) fn invalid(field: &str, description: &str) -> Resp {
    google_error(
        StatusCode::BAD_REQUEST,
        description,
        Some("INVALID_ARGUMENT"),
        vec![(field, description)],
    )
}

pub(super) fn fault_response(fault: FcmFault) -> Resp {
    let retry_after = |mut resp: Resp, secs: Option<u64>| {
        if let Some(secs) = secs {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    };
    match fault {
        FcmFault::Unregistered => google_error(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
            Some("UNREGISTERED"),
            vec![],
        ),
        FcmFault::SenderIdMismatch => google_error(
            StatusCode::FORBIDDEN,
            "SenderId mismatch",
            Some("SENDER_ID_MISMATCH"),
            vec![],
        ),
        FcmFault::InvalidRegistration => invalid(
            "message.token",
            "The registration token is not a valid FCM registration token",
        ),
        FcmFault::QuotaExceeded { retry_after: secs } => retry_after(
            google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Quota exceeded for quota metric 'Send requests'.",
                Some("QUOTA_EXCEEDED"),
                vec![],
            ),
            secs,
        ),
        FcmFault::Unavailable { retry_after: secs } => retry_after(
            google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
                vec![],
            ),
            secs,
        ),
        FcmFault::Internal => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error encountered.",
            Some("INTERNAL"),
            vec![],
        ),
        FcmFault::ThirdPartyAuthError => google_error(
            StatusCode::UNAUTHORIZED,
            "Auth error from APNS or Web Push Service",
            Some("THIRD_PARTY_AUTH_ERROR"),
            vec![],
        ),
        FcmFault::Delay(_) => unreachable!("a delay is waited, not answered"),
    }
}
