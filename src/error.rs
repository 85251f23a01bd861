//! Errors at the HTTP edge. The rule: handlers return typed `ApiError`s with
//! one status each, and every body says what was wrong and what to do;
//! `anyhow` stays in start-up and the CLI. Bad input never becomes a 500.

use crate::blob::BlobError;
use crate::edge::body::Body;
use crate::edge::Response;
use crate::fanout::PushError;
use crate::state::StateError;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// `Content-Range: bytes */size` on 416.
    pub content_range: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            content_range: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(5);
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        let mut resp = Response::new(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(cr) = self
            .content_range
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            h.insert(header::CONTENT_RANGE, cr);
        }
        resp
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match &e {
            StateError::DuplicateVersion { .. } => {
                ApiError::conflict("duplicate_version", e.to_string())
            }
            StateError::StaleSeq { .. } => ApiError::conflict("stale_seq", e.to_string()),
            StateError::NotFound { .. } => ApiError::not_found("unknown_release", e.to_string()),
            StateError::Precondition { .. } => ApiError::conflict("changed", e.to_string()),
            StateError::Unavailable { .. } => ApiError::unavailable(format!("{e}; retry shortly")),
            StateError::Corrupt(_) => {
                tracing::error!(error = %e, "state store corrupt");
                ApiError::internal(
                    "the state store holds unreadable data; the operator has been alerted",
                )
            }
        }
    }
}

impl From<PushError> for ApiError {
    fn from(e: PushError) -> Self {
        match &e {
            PushError::UnknownJob { .. } => ApiError::not_found("unknown_job", e.to_string()),
            PushError::Unavailable { .. } => ApiError::unavailable(format!("{e}; retry shortly")),
            PushError::Corrupt(_) => {
                tracing::error!(error = %e, "push store corrupt");
                ApiError::internal(
                    "the push store holds unreadable data; the operator has been alerted",
                )
            }
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match &e {
            BlobError::NotFound(_) => ApiError::not_found("artifact_missing", e.to_string()),
            BlobError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            BlobError::Empty => ApiError::bad_request(
                "empty_upload",
                "the upload is empty; send the firmware bytes as the body",
            ),
            BlobError::Body(_) => {
                ApiError::bad_request("upload_interrupted", format!("{e}; upload again"))
            }
            BlobError::Unavailable { .. } => ApiError::unavailable(format!("{e}; retry shortly")),
            BlobError::Io(_) => {
                tracing::error!(error = %e, "blob store write failed");
                let mut err = ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_failed",
                    format!("{e}; nothing was stored, retry when the operator has freed space"),
                );
                err.retry_after = Some(60);
                err
            }
        }
    }
}

impl From<firmcast_signing::Error> for ApiError {
    fn from(e: firmcast_signing::Error) -> Self {
        use firmcast_signing::Error as E;
        match &e {
            E::BelowThreshold { .. } | E::PayloadType { .. } => ApiError::unprocessable(
                "bad_signature",
                format!("{e}; sign with the release keys of the server's keyset"),
            ),
            _ => ApiError::unprocessable("invalid_release", e.to_string()),
        }
    }
}
