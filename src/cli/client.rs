//! Blocking HTTP helpers shared by the admin and release commands: URL building under a
//! server base, the admin bearer token, timeouts, bounded JSON bodies, and
//! the one-line error a refusal `{"error", "message"}` turns into.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use std::io::Read;
use std::time::Duration;

/// Server text printed to a terminal: one line, no control characters, bounded.
pub(crate) use firmcast_client::http::one_line;

/// Connecting should be quick; a server that takes longer is down or unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// For a whole small request, and for each read of a streamed response body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// JSON answers are small; anything bigger is a broken or hostile server.
pub(crate) const MAX_JSON: u64 = 4 << 20;

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Base URL of the firmcast server, e.g. https://updates.example.com.
    #[arg(long, env = "FIRMCAST_SERVER", value_name = "URL")]
    pub server: String,
}

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Admin bearer token (from `firmcast admin token`); prefer the
    /// FIRMCAST_TOKEN variable, since arguments are visible to other users.
    #[arg(long, env = "FIRMCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A server base URL, an HTTP client with timeouts, and maybe a token.
pub(crate) struct Api {
    base: Url,
    http: Client,
    token: Option<String>,
}

impl Api {
    /// A client for the public API (no credentials).
    pub fn public(args: &ServerArgs) -> Result<Self> {
        let base = parse_base(&args.server)?;
        let http = Client::builder()
            .user_agent(concat!("firmcast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Api {
            base,
            http,
            token: None,
        })
    }

    /// A client for /v1/admin: refuses to start without a token.
    pub fn admin(args: &AdminArgs) -> Result<Self> {
        let token = args
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!("no admin token: pass --token or set FIRMCAST_TOKEN (`firmcast admin token` makes one)")
            })?
            .to_owned();
        Ok(Api {
            token: Some(token),
            ..Self::public(&args.server)?
        })
    }

    /// `base` + the given path segments, each percent-encoded as needed.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    pub fn request(&self, method: reqwest::Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends, and turns transport failures and error statuses into one line.
    pub fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = self.send_any(req)?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            return Err(self.refusal(resp));
        }
        Ok(resp)
    }

    /// Sends; any status is returned, only transport failures are errors.
    pub fn send_any(&self, req: RequestBuilder) -> Result<Response> {
        req.send().map_err(|e| transport_error(&self.base, e))
    }

    pub fn refusal(&self, resp: Response) -> anyhow::Error {
        refusal(resp, self.token.is_some())
    }

    /// Sends and reads a JSON answer of at most [`MAX_JSON`] bytes.
    pub fn send_json<T: DeserializeOwned>(&self, req: RequestBuilder, what: &str) -> Result<T> {
        let resp = self.send(req)?;
        let body = read_limited(resp, MAX_JSON)
            .with_context(|| format!("cannot read the server's {what}"))?;
        serde_json::from_slice(&body).map_err(|e| {
            anyhow!(
                "the server's {what} is not what firmcast expects ({e}): {}",
                one_line(&String::from_utf8_lossy(&body), 200)
            )
        })
    }
}

fn parse_base(server: &str) -> Result<Url> {
    let url = Url::parse(server.trim()).with_context(|| {
        format!("--server {server:?} is not a URL such as https://updates.example.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        bail!("--server {server:?} must be an http:// or https:// URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("--server {server:?} must not carry a query or fragment");
    }
    Ok(url)
}

fn transport_error(base: &Url, e: reqwest::Error) -> anyhow::Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The innermost cause says the most (refused, DNS, TLS); keep it on one line.
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    anyhow!(
        "cannot reach {} ({what}: {})",
        base.as_str().trim_end_matches('/'),
        one_line(&cause.to_string(), 200)
    )
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: String,
}

/// "server refused (409 stale_seq): <message>", or the raw status when the
/// body is not the API's error shape (a proxy in between, say).
fn refusal(resp: Response, had_token: bool) -> anyhow::Error {
    let status = resp.status();
    let body = read_limited(resp, 64 << 10).unwrap_or_default();
    let mut hint = match status {
        StatusCode::UNAUTHORIZED if !had_token => " (this needs --token or FIRMCAST_TOKEN)",
        StatusCode::UNAUTHORIZED => " (check --token / FIRMCAST_TOKEN)",
        _ => "",
    };
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => {
            if e.message.contains("TOKEN") || e.message.contains("token") {
                hint = "";
            }
            anyhow!(
                "server refused ({} {}): {}{hint}",
                status.as_u16(),
                one_line(&e.error, 64),
                one_line(&e.message, 300)
            )
        }
        Err(_) => anyhow!(
            "server answered {status}{hint}: {}",
            one_line(&String::from_utf8_lossy(&body), 200)
        ),
    }
}

/// Reads a body, failing rather than buffering more than `limit` bytes.
pub(crate) fn read_limited(resp: Response, limit: u64) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    resp.take(limit + 1).read_to_end(&mut body)?;
    if body.len() as u64 > limit {
        bail!("the answer is larger than {limit} bytes");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(server: &str) -> Api {
        Api::public(&ServerArgs {
            server: server.into(),
        })
        .unwrap()
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_segments() {
        let a = api("http://h:8080");
        assert_eq!(
            a.url(&["v1", "admin", "artifacts", "P", "1.0.0+b.1"])
                .as_str(),
            "http://h:8080/v1/admin/artifacts/P/1.0.0+b.1"
        );
        let a = api("https://h/firmcast/");
        assert_eq!(
            a.url(&["v1", "keys"]).as_str(),
            "https://h/firmcast/v1/keys"
        );
    }

    #[test]
    fn bad_servers_and_missing_tokens_are_named() {
        for bad in ["updates.example.com", "ftp://h", "http://h/?q=1"] {
            let err = Api::public(&ServerArgs { server: bad.into() })
                .err()
                .unwrap();
            assert!(err.to_string().contains("--server"), "{err}");
        }
        let args = AdminArgs {
            server: ServerArgs {
                server: "http://h".into(),
            },
            token: Some("  ".into()),
        };
        let err = Api::admin(&args).err().unwrap();
        assert!(err.to_string().contains("FIRMCAST_TOKEN"), "{err}");
    }
}
