//! The console's one cookie, `firmcast_session`: the only cookie firmcast
//! ever sets, scoped to `/console`, unreadable by scripts, never sent on a
//! cross-site request, and (unless `[console] insecure_cookies`) only over
//! HTTPS.

use super::session::SessionId;
use hyper::header::{HeaderMap, HeaderValue, COOKIE};

pub const NAME: &str = "firmcast_session";

/// The session id the request's cookies carry: `None` when there is no
/// session cookie, `Some(None)` when there is one that is not an id.
pub fn session_id(headers: &HeaderMap) -> Option<Option<SessionId>> {
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, v)) = pair.trim().split_once('=') {
                if name == NAME {
                    // Two session cookies: believe neither.
                    if found.is_some() {
                        return Some(None);
                    }
                    found = Some(SessionId::parse(v.trim_matches('"')));
                }
            }
        }
    }
    found
}

fn attributes(secure: bool) -> &'static str {
    if secure {
        "Path=/console; HttpOnly; SameSite=Strict; Secure"
    } else {
        "Path=/console; HttpOnly; SameSite=Strict"
    }
}

/// `Set-Cookie` for a new session (a browser-session cookie: the server's
/// idle timeout ends it, not a date in the browser).
pub fn set(id: &SessionId, secure: bool) -> HeaderValue {
    HeaderValue::from_str(&format!("{NAME}={}; {}", id.as_str(), attributes(secure)))
        .expect("hex and ASCII attributes")
}

/// `Set-Cookie` that makes the browser forget the session cookie.
pub fn clear(secure: bool) -> HeaderValue {
    HeaderValue::from_str(&format!("{NAME}=; Max-Age=0; {}", attributes(secure))).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_checked() {
        let id = SessionId::generate();
        let good = format!("a=b; {NAME}={}; c=d", id.as_str());
        assert_eq!(session_id(&with(&[&good])), Some(Some(id.clone())));
        assert_eq!(
            session_id(&with(&["x=1", &format!("{NAME}={}", id.as_str())])),
            Some(Some(id.clone()))
        );
        assert_eq!(session_id(&with(&["a=b"])), None);
        assert_eq!(session_id(&HeaderMap::new()), None);
        assert_eq!(session_id(&with(&[&format!("{NAME}=forged")])), Some(None));
        let twice = format!("{NAME}={0}; {NAME}={0}", id.as_str());
        assert_eq!(session_id(&with(&[&twice])), Some(None));
    }

    #[test]
    fn flags_are_as_designed() {
        let id = SessionId::generate();
        let v = set(&id, true);
        assert_eq!(
            v.to_str().unwrap(),
            format!(
                "firmcast_session={}; Path=/console; HttpOnly; SameSite=Strict; Secure",
                id.as_str()
            )
        );
        assert!(!set(&id, false).to_str().unwrap().contains("Secure"));
        assert!(clear(true)
            .to_str()
            .unwrap()
            .starts_with("firmcast_session=; Max-Age=0; Path=/console"));
    }
}
