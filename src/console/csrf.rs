//! Cross-site request forgery, refused twice over: every state-changing
//! request carries its session's CSRF token (a hidden `csrf` field in a
//! form, the `X-CSRF-Token` header on an upload or publish), compared in
//! constant time; and a browser that says the request comes from another
//! site (`Sec-Fetch-Site: cross-site` or `same-site`) is refused before
//! the token is looked at. The session cookie is `SameSite=Strict` on top.

use hyper::header::HeaderMap;
use subtle::ConstantTimeEq;

/// The form field that carries the token.
pub const FIELD: &str = "csrf";
/// The header that carries it where the body is not a form.
pub const HEADER: &str = "x-csrf-token";

/// True when `presented` is the session's token.
pub fn matches(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| {
        p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes()))
    })
}

/// False when the browser says the request was started by another site.
/// Browsers that send no `Sec-Fetch-Site` (and other clients) pass here
/// and are held to the token alone.
pub fn same_origin(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        None => true,
        Some(site) => site == b"same-origin" || site == b"none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn tokens_must_match_exactly() {
        assert!(matches("ab12", Some("ab12")));
        for bad in [None, Some(""), Some("ab1"), Some("ab123"), Some("AB12")] {
            assert!(!matches("ab12", bad), "{bad:?}");
        }
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        for (v, ok) in [
            ("same-origin", true),
            ("none", true),
            ("same-site", false),
            ("cross-site", false),
        ] {
            h.insert("sec-fetch-site", HeaderValue::from_static(v));
            assert_eq!(same_origin(&h), ok, "{v}");
        }
    }
}
