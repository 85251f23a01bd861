//! Admin authentication: `Authorization: Bearer <token>`, checked against
//! the configured sha256 hashes in constant time, then the role the route
//! needs. Failed attempts are throttled per client (IPv4 address or IPv6
//! /64): a burst of [`FAILURE_BURST`], then one every [`FAILURE_REFILL`];
//! past that the answer is 429 without the token being looked at, so a
//! token cannot be guessed at speed.

use crate::config::{Role, Settings};
use crate::edge::admission::ClientTable;
use crate::error::ApiError;
use crate::releases::Actor;
use hyper::header::{HeaderMap, AUTHORIZATION};
use hyper::StatusCode;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Failed attempts a client may make at once.
pub const FAILURE_BURST: f64 = 10.0;
/// Seconds until one more failed attempt is allowed.
pub const FAILURE_REFILL: f64 = 60.0;

pub struct Auth {
    /// (name, role, sha256 of the token) from config.
    tokens: Vec<(String, Role, [u8; 32])>,
    failures: ClientTable,
}

impl Auth {
    pub fn from_settings(settings: &Settings) -> Self {
        let tokens: Vec<_> = settings
            .admin
            .tokens
            .iter()
            .map(|t| {
                let mut h = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut h).expect("validated as 64 hex digits");
                (t.name.clone(), t.role, h)
            })
            .collect();
        if tokens.is_empty() {
            tracing::warn!("no [[admin.tokens]] configured: the admin API refuses everyone (make one with `firmcast admin token`)");
        }
        Auth {
            tokens,
            failures: ClientTable::new(
                1.0 / FAILURE_REFILL,
                FAILURE_BURST,
                settings.limits.max_tracked_clients.clamp(1, 100_000),
            ),
        }
    }

    /// The caller behind `Authorization: Bearer`, if it holds at least
    /// `role`; otherwise 401, 403, or 429 once `client` has failed too often.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        role: Role,
    ) -> Result<Actor, ApiError> {
        if !self.failures.has_token(client) {
            return Err(self.throttled(client));
        }
        let actor = match self.identify(headers) {
            Ok(actor) => actor,
            Err(e) => {
                return Err(match self.failures.check(client) {
                    Ok(()) => e,
                    Err(_) => self.throttled(client),
                })
            }
        };
        if actor.role < role {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {:?} has role {}; this needs {} or above",
                    actor.name,
                    role_name(actor.role),
                    role_name(role)
                ),
            ));
        }
        Ok(actor)
    }

    /// The console's sign-in: the actor `token` belongs to, under the same
    /// per-client failure throttle as [`Auth::authenticate`] (a wrong token
    /// typed into the form costs what a wrong bearer token costs).
    pub fn sign_in(&self, token: &[u8], client: IpAddr) -> Result<Actor, ApiError> {
        if !self.failures.has_token(client) {
            return Err(self.throttled(client));
        }
        self.actor_for(token.trim_ascii()).ok_or_else(|| {
            match self.failures.check(client) {
                Ok(()) => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "that token is not configured on this server; paste a token made with `firmcast admin token`",
                ),
                Err(_) => self.throttled(client),
            }
        })
    }

    /// The role configured for the token named `name` now, if it still is:
    /// a console session ends when its token leaves the configuration, and
    /// follows a change of its role.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.tokens
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, role, _)| *role)
    }

    fn throttled(&self, client: IpAddr) -> ApiError {
        tracing::warn!(client = %crate::privacy::IpPrefix(client), "admin sign-in attempts throttled after repeated failures");
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth_throttled",
            format!(
                "too many failed sign-ins from your network; wait {FAILURE_REFILL} s, then use a configured token"
            ),
        );
        e.retry_after = Some(FAILURE_REFILL as u64);
        e
    }

    /// Hashes the presented token and compares it with every configured
    /// hash in constant time, so neither timing nor logs reveal a token.
    fn identify(&self, headers: &HeaderMap) -> Result<Actor, ApiError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let token = match (values.next(), values.next()) {
            (Some(v), None) => bearer_token(v.as_bytes()),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send one Authorization: Bearer <token> header; make a token with `firmcast admin token`",
            )
        })?;
        self.actor_for(token).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token is not configured on this server; check FIRMCAST_TOKEN",
            )
        })
    }

    /// The actor a token belongs to (also for the console's sign-in).
    pub fn actor_for(&self, token: &[u8]) -> Option<Actor> {
        let presented: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for (name, role, hash) in &self.tokens {
            if bool::from(presented.ct_eq(hash)) {
                found = Some(Actor {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive), if the value
/// has that shape; any byte is allowed in it, the hash decides.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Publisher => "publisher",
        Role::Admin => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn auth() -> Auth {
        let mut settings = Settings::load(None).unwrap();
        settings.admin.tokens = vec![crate::config::TokenSettings {
            name: "bot".into(),
            role: Role::Publisher,
            sha256: firmcast_signing::digest::sha256_hex(b"s3cret"),
        }];
        Auth::from_settings(&settings)
    }

    fn with(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        h
    }

    #[test]
    fn tokens_roles_and_odd_headers() {
        let a = auth();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let ok = a
            .authenticate(&with(b"Bearer s3cret"), ip, Role::Publisher)
            .unwrap();
        assert_eq!((ok.name.as_str(), ok.role), ("bot", Role::Publisher));
        assert!(a
            .authenticate(&with(b"bearer s3cret"), ip, Role::Viewer)
            .is_ok());
        let forbidden = a
            .authenticate(&with(b"Bearer s3cret"), ip, Role::Admin)
            .unwrap_err();
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
        assert!(
            forbidden.message.contains("needs admin"),
            "{}",
            forbidden.message
        );
        for odd in [
            &b"Bearer \xff\xfe"[..],
            b"Basic czNjcmV0",
            b"Bearer ",
            b"s3cret",
        ] {
            let e = a.authenticate(&with(odd), ip, Role::Viewer).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{odd:?}");
        }
        assert_eq!(
            a.authenticate(&HeaderMap::new(), ip, Role::Viewer)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn failures_are_throttled_per_client_and_successes_are_not() {
        let a = auth();
        let guesser: IpAddr = "203.0.113.7".parse().unwrap();
        let operator: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..FAILURE_BURST as usize {
            let e = a
                .authenticate(&with(b"Bearer guess"), guesser, Role::Viewer)
                .unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        }
        let e = a
            .authenticate(&with(b"Bearer guess"), guesser, Role::Viewer)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(60));
        // Once throttled, even the right token waits: guessing gains nothing.
        let e = a
            .authenticate(&with(b"Bearer s3cret"), guesser, Role::Viewer)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        // Other clients are not affected, and successes cost nothing.
        for _ in 0..50 {
            assert!(a
                .authenticate(&with(b"Bearer s3cret"), operator, Role::Viewer)
                .is_ok());
        }
    }
}
