//! Push subscriptions: a phone registers its token for the products it owns,
//! and unregisters. Only the token, products, locale and a last-seen time are
//! kept; never the address the request came from.

use super::{json, parse_json, read_json_body, MAX_JSON_BODY};
use crate::edge::body::{Body, RequestBody};
use crate::edge::Response;
use crate::error::ApiError;
use crate::fanout::{ProviderKind, PushStore, Subscription};
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde::Deserialize;

/// A phone owns a handful of devices; more is abuse.
pub const MAX_PRODUCTS: usize = 32;

/// Token shapes as the providers issue them: APNs device tokens are hex
/// (32 bytes today, longer allowed), FCM registration tokens are URL-safe
/// base64-ish with colons.
pub fn validate_token(provider: ProviderKind, token: &str) -> Result<(), ApiError> {
    let ok = match provider {
        ProviderKind::Apns => {
            (64..=200).contains(&token.len())
                && token.len().is_multiple_of(2)
                && token.bytes().all(|b| b.is_ascii_hexdigit())
        }
        ProviderKind::Fcm => {
            (32..=4096).contains(&token.len())
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_token",
            match provider {
                ProviderKind::Apns => "an APNs device token is 64 or more hex digits; send the token APNs gave the app",
                ProviderKind::Fcm => "an FCM registration token is 32 to 4096 characters of A-Z a-z 0-9 _ - : .; send the token FCM gave the app",
            },
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    provider: ProviderKind,
    token: String,
    products: Vec<String>,
    #[serde(default = "default_locale")]
    locale: String,
}

fn default_locale() -> String {
    "en".to_owned()
}

/// `POST /v1/push/subscriptions`: an idempotent upsert.
pub async fn subscribe(
    push: &dyn PushStore,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response, ApiError> {
    let body = read_json_body(&parts.headers, body, MAX_JSON_BODY).await?;
    let req: SubscribeRequest = parse_json(&body)?;
    validate_token(req.provider, &req.token)?;
    firmcast_signing::names::validate_locale(&req.locale)
        .map_err(|e| ApiError::bad_request("bad_locale", e.to_string()))?;
    if req.products.is_empty() || req.products.len() > MAX_PRODUCTS {
        return Err(ApiError::bad_request(
            "bad_products",
            format!(
                "{} products; subscribe to 1 to {MAX_PRODUCTS}",
                req.products.len()
            ),
        ));
    }
    let mut products = req.products;
    for p in &products {
        firmcast_signing::names::validate_product(p)
            .map_err(|e| ApiError::bad_request("bad_product", e.to_string()))?;
    }
    products.sort();
    products.dedup();
    let sub = Subscription {
        provider: req.provider,
        token: req.token,
        products,
        locale: req.locale,
        last_seen: chrono::Utc::now(),
    };
    push.upsert_subscription(&sub).await?;
    let body = serde_json::json!({"provider": sub.provider, "products": sub.products, "locale": sub.locale});
    Ok(json(StatusCode::OK, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeRequest {
    provider: ProviderKind,
    token: String,
}

/// `POST /v1/push/unsubscribe`: 204, every trace of the token gone.
pub async fn unsubscribe(
    push: &dyn PushStore,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response, ApiError> {
    let body = read_json_body(&parts.headers, body, MAX_JSON_BODY).await?;
    let req: UnsubscribeRequest = parse_json(&body)?;
    validate_token(req.provider, &req.token)?;
    // 204 whether or not it existed: the answer reveals nothing about a token.
    push.remove_subscription(req.provider, &req.token).await?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}
