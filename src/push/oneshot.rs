//! The rare request to another origin, FCM's OAuth token exchange: one
//! connection per call (once an hour), HTTP/2 when TLS agrees on it and
//! HTTP/1.1 otherwise (plain-HTTP emulators and proxies speak only that),
//! with the senders' roots, timeouts and failure codes (`push/dial.rs`).

use super::dial;
use super::h2::{Answered, H2Error};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio_rustls::TlsConnector;

/// Longest answer read (a token response is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

pub(crate) struct OneShot {
    tls: TlsConnector,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl OneShot {
    pub fn new(
        extra_roots_pem: Option<&[u8]>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(OneShot {
            tls: dial::tls_connector(extra_roots_pem, &[b"h2", b"http/1.1"])?,
            connect_timeout,
            request_timeout,
        })
    }

    /// `POST url` with `body` of `content_type`, the whole answer read.
    pub async fn post(
        &self,
        url: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<Answered, H2Error> {
        let uri: Uri = url
            .parse()
            .map_err(|e| H2Error::new("bad_url", format!("{url:?} is not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(H2Error::new(
                    "bad_url",
                    format!("{url:?}: only https and http"),
                ))
            }
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err(H2Error::new("bad_url", format!("{url:?} has no host")));
        };
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let connect = async {
            let tcp = dial::tcp(&host, port).await?;
            if !https {
                return Ok(Stream::Plain(tcp));
            }
            Ok(Stream::Tls(Box::new(
                dial::tls(&self.tls, &host, tcp).await?,
            )))
        };
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                let words = format!(
                    "cannot connect: {host}:{port} did not answer within {} s",
                    self.connect_timeout.as_secs()
                );
                H2Error::new("connect_timeout", words)
            })??;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        let h2 = stream.speaks_h2();
        *request.uri_mut() = if h2 {
            uri.clone()
        } else {
            uri.path_and_query()
                .map_or("/", |p| p.as_str())
                .parse()
                .expect("a path parses as a URI")
        };
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if !h2 {
            let host = HeaderValue::from_str(authority.as_str())
                .map_err(|_| H2Error::new("bad_url", format!("{url:?}: bad host")))?;
            headers.insert(HOST, host);
        }
        let exchange = async {
            let response = match stream {
                Stream::Tls(tls) if h2 => {
                    let (mut sender, conn) = hyper::client::conn::http2::handshake(
                        TokioExecutor::new(),
                        TokioIo::new(tls),
                    )
                    .await
                    .map_err(H2Error::transport)?;
                    tokio::spawn(conn);
                    sender.send_request(request).await
                }
                Stream::Tls(tls) => http1(TokioIo::new(tls), request).await?,
                Stream::Plain(tcp) => http1(TokioIo::new(tcp), request).await?,
            }
            .map_err(H2Error::transport)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| H2Error::new("transport", format!("answer cut off or too long: {e}")))?
                .to_bytes();
            Ok(Answered {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| {
                let words = format!("no answer within {} s", self.request_timeout.as_secs());
                H2Error::new("timeout", words)
            })?
    }
}

enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl Stream {
    fn speaks_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

type Sent = Result<hyper::Response<hyper::body::Incoming>, hyper::Error>;

async fn http1<T>(io: TokioIo<T>, request: Request<Full<Bytes>>) -> Result<Sent, H2Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(H2Error::transport)?;
    tokio::spawn(conn);
    Ok(sender.send_request(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An HTTP/1.1-only server answering the request's method, path and
    /// body, as an OAuth emulator would be reached.
    async fn http1_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |req: Request<hyper::body::Incoming>| async move {
                            let head = format!("{} {} ", req.method(), req.uri().path());
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let text = head + &String::from_utf8_lossy(&body);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(text),
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        format!("http://{addr}/token")
    }

    fn client() -> OneShot {
        OneShot::new(None, Duration::from_secs(5), Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn posts_to_a_plain_http1_endpoint() {
        let url = http1_server().await;
        let answer = client()
            .post(
                &url,
                "application/x-www-form-urlencoded",
                Bytes::from("a=b"),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "POST /token a=b");
    }

    #[tokio::test]
    async fn failures_are_named() {
        let err = client()
            .post("ftp://x/", "text/plain", Bytes::new())
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, "bad_url");
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = client()
            .post(&format!("http://{closed}/"), "text/plain", Bytes::new())
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, "connect_refused", "{err}");
    }
}
