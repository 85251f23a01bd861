//! The requests the core asks the app to send and the answers it is handed
//! back: plain values, so any HTTP stack (URLSession, OkHttp, requests,
//! ureq) can carry them. Also the server base URL and how refusals read.

use crate::Error;

/// JSON answers are small; anything bigger is a broken or hostile server.
pub const MAX_JSON: usize = 4 << 20;

/// One request for the app to send as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Absolute `http(s)://` URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Empty for GET.
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A whole (small) answer: status, headers, body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Response {
            status,
            headers,
            body,
        }
    }
}

/// First value of a header, by case-insensitive name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

impl Request {
    pub(crate) fn get(url: String) -> Self {
        Request {
            method: Method::Get,
            url,
            headers: vec![("Accept".into(), "application/json".into())],
            body: Vec::new(),
        }
    }

    pub(crate) fn post_json(url: String, body: &serde_json::Value) -> Self {
        Request {
            method: Method::Post,
            url,
            headers: vec![
                ("Accept".into(), "application/json".into()),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: serde_json::to_vec(body).expect("a JSON value always serializes"),
        }
    }
}

/// The server's base URL: `http(s)://host[:port][/path]`, no query, no
/// trailing slash. Paths are appended from validated names only (product,
/// semver version, numbers), so no percent-encoding is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(server: &str) -> Result<Self, Error> {
        let s = server.trim().trim_end_matches('/');
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "server URL {:?} {why}; use one such as https://updates.example.com",
                one_line(server, 200)
            ))
        };
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .ok_or_else(|| bad("must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("has no host"));
        }
        if s.contains(['?', '#']) || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must not carry a query, fragment or spaces"));
        }
        Ok(BaseUrl(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `base` + `/` + `path` (which starts without a slash).
    pub(crate) fn join(&self, path: &str) -> String {
        format!("{}/{path}", self.0)
    }

    /// An artifact URL from an offer: absolute http(s), or a path under the
    /// server base. Anything else (file:, relative) is refused.
    pub(crate) fn resolve(&self, url: &str) -> Result<String, Error> {
        let clean = !url.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if clean && url.starts_with('/') && !url.starts_with("//") {
            return Ok(format!("{}{url}", self.0));
        }
        if clean && (url.starts_with("https://") || url.starts_with("http://")) {
            return Ok(url.to_owned());
        }
        Err(Error::Malformed(format!(
            "the server offered an unusable download URL {:?}; retry later",
            one_line(url, 200)
        )))
    }
}

/// A redirect's `Location` against the URL that was asked.
pub(crate) fn redirect_target(from: &str, location: &str) -> Option<String> {
    if location.starts_with("https://") || location.starts_with("http://") {
        return Some(location.to_owned());
    }
    if location.starts_with('/') && !location.starts_with("//") {
        let scheme_end = from.find("://")? + 3;
        let host_end = from[scheme_end..]
            .find('/')
            .map_or(from.len(), |i| scheme_end + i);
        return Some(format!("{}{location}", &from[..host_end]));
    }
    None
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: String,
}

/// The typed error for a non-success status: `Server` for 5xx, 429 and
/// anything unexpected (retry later), `Refused` for other 4xx.
pub(crate) fn status_error(status: u16, headers: &[(String, String)], body: &[u8]) -> Error {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (one_line(&e.error, 64), one_line(&e.message, 300)),
        Err(_) => (String::new(), one_line(&String::from_utf8_lossy(body), 200)),
    };
    let retry_after = header(headers, "retry-after").and_then(|v| v.parse().ok());
    if (400..500).contains(&status) && status != 429 && status != 408 {
        Error::Refused {
            status,
            code,
            message,
        }
    } else {
        Error::Server {
            status,
            code,
            message,
            retry_after,
        }
    }
}

/// Server text shown to a person: one line, no control characters, bounded.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.trim().chars().count() > max {
        out.push_str("...");
    }
    out
}

/// `bytes START-END/TOTAL` → (START, TOTAL unless `*`).
pub(crate) fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_a_path_and_refuse_the_rest() {
        let b = BaseUrl::parse("https://h/firmcast/").unwrap();
        assert_eq!(b.join("v1/keys"), "https://h/firmcast/v1/keys");
        assert_eq!(
            b.resolve("/v1/artifacts/P/1.0.0").unwrap(),
            "https://h/firmcast/v1/artifacts/P/1.0.0"
        );
        assert_eq!(
            b.resolve("https://cdn.example/x?sig=1").unwrap(),
            "https://cdn.example/x?sig=1"
        );
        for bad in ["file:///etc/passwd", "v1/relative", "//evil/x", "/a b"] {
            assert!(b.resolve(bad).is_err(), "{bad}");
        }
        for bad in [
            "updates.example.com",
            "ftp://h",
            "http://h/?q=1",
            "https://",
        ] {
            let err = BaseUrl::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn redirects_resolve_against_the_asked_url() {
        assert_eq!(
            redirect_target("http://h:1/v1/artifacts/P/1", "/blob/x").unwrap(),
            "http://h:1/blob/x"
        );
        assert_eq!(
            redirect_target("http://h/a", "https://s3/x?sig").unwrap(),
            "https://s3/x?sig"
        );
        assert_eq!(redirect_target("http://h/a", "x"), None);
    }

    #[test]
    fn refusals_are_typed_by_status() {
        let body = br#"{"error":"unknown_product","message":"no releases"}"#;
        let e = status_error(404, &[], body);
        assert!(matches!(&e, Error::Refused { code, .. } if code == "unknown_product"));
        let e = status_error(503, &[("Retry-After".into(), "7".into())], b"down");
        assert!(matches!(
            e,
            Error::Server {
                retry_after: Some(7),
                ..
            }
        ));
        assert!(matches!(status_error(429, &[], b""), Error::Server { .. }));
    }

    #[test]
    fn content_ranges_and_one_line() {
        assert_eq!(content_range("bytes 10-99/100"), Some((10, Some(100))));
        assert_eq!(content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(content_range("bytes */100"), None);
        assert_eq!(one_line(" a\nb\x1b[31m ", 100), "a b [31m");
        assert_eq!(one_line("abcdef", 3), "abc...");
    }
}
