//! The OAuth2 token endpoint (JWT-bearer grant) and the access tokens it
//! issues, which `messages:send` then checks.

use std::collections::HashMap;
use std::time::Instant;

use hyper::StatusCode;
use ring::signature::RSA_PKCS1_2048_8192_SHA256;
use serde_json::json;

use crate::jwt;
use crate::server::{json_response, Req, Resp};

use super::{Shared, State};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

impl State {
    pub(super) fn authenticated(&mut self, bearer: &str) -> bool {
        let expires = match &self.last_bearer {
            Some((last, expires)) if last == bearer => *expires,
            _ => {
                if !bearer.is_empty() && !self.access_tokens_used.contains(bearer) {
                    self.access_tokens_used.insert(bearer.to_owned());
                }
                let expires = self.issued.get(bearer).copied();
                self.last_bearer = Some((bearer.to_owned(), expires));
                expires
            }
        };
        expires.is_some_and(|exp| exp > Instant::now())
    }
}

pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

pub(super) fn token_endpoint(shared: &Shared, req: &Req) -> Resp {
    shared.state().token_requests += 1;
    let form: HashMap<String, String> = form_urlencoded::parse(&req.body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type.",
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing assertion.",
        );
    };
    let Some(jws) = jwt::verify(assertion, &RSA_PKCS1_2048_8192_SHA256, &shared.public_pkcs1)
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
    };
    if jws.header["alg"] != "RS256" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: alg.",
        );
    }
    if let Some(kid) = jws.header.get("kid") {
        if kid != shared.key_id.as_str() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Invalid JWT: kid.",
            );
        }
    }
    let c = &jws.claims;
    if c["iss"] != shared.options.client_email.as_str() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: iss.",
        );
    }
    if c["aud"] != shared.token_uri.as_str() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: aud.",
        );
    }
    let scopes = c["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == SCOPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Missing firebase.messaging scope.",
        );
    }
    let (Some(iat), Some(exp)) = (c["iat"].as_i64(), c["exp"].as_i64()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: iat/exp.",
        );
    };
    let now = jwt::unix_now();
    if iat > now + 60 || exp <= now || exp - iat > 3600 || exp <= iat {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    let ttl = shared.options.access_token_ttl;
    let token = {
        let mut state = shared.state();
        state.next += 1;
        let token = format!("ya29.fake-{}-{}", state.next, jwt::random_hex(16));
        state.issued.insert(token.clone(), Instant::now() + ttl);
        state.last_bearer = None;
        token
    };
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": ttl.as_secs(), "token_type": "Bearer"}),
    )
}
