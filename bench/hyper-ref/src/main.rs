//! The bare-hyper reference for `bench/check.sh`: answers every request with
//! the same bytes (read once from a file) and the given extra headers, on the
//! same runtime shape as `firmcast serve` (multi-threaded tokio, HTTP/1 and
//! HTTP/2 through hyper-util's auto builder).
//!
//! usage: hyper-ref BODY_FILE [--listen ADDR] [--header 'Name: value']...
//! Prints `hyper-ref listening on http://ADDR` once it accepts connections.

#![forbid(unsafe_code)]

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

struct Reply {
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "hyper-ref: {msg}\nusage: hyper-ref BODY_FILE [--listen ADDR] [--header 'Name: value']..."
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut body_file = None;
    let mut listen: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
    let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().unwrap_or_else(|| usage("--listen needs ADDR"));
                listen = v.parse().unwrap_or_else(|_| usage("bad --listen address"));
            }
            "--header" => {
                let v = args
                    .next()
                    .unwrap_or_else(|| usage("--header needs 'Name: value'"));
                let (name, value) = v
                    .split_once(':')
                    .unwrap_or_else(|| usage("--header needs 'Name: value'"));
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .unwrap_or_else(|_| usage("bad header name"));
                let value = HeaderValue::from_str(value.trim())
                    .unwrap_or_else(|_| usage("bad header value"));
                headers.retain(|(n, _)| *n != name);
                headers.push((name, value));
            }
            _ if body_file.is_none() => body_file = Some(arg),
            _ => usage("unexpected argument"),
        }
    }
    let body_file = body_file.unwrap_or_else(|| usage("BODY_FILE is required"));
    let body = std::fs::read(&body_file)
        .unwrap_or_else(|e| usage(&format!("cannot read {body_file}: {e}")));
    let reply = Arc::new(Reply {
        body: Bytes::from(body),
        headers,
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(serve(listen, reply));
}

async fn serve(listen: SocketAddr, reply: Arc<Reply>) {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| usage(&format!("cannot listen on {listen}: {e}")));
    let addr = listener.local_addr().expect("a bound address");
    println!("hyper-ref listening on http://{addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let reply = reply.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let reply = reply.clone();
                async move {
                    let mut resp = Response::new(Full::new(reply.body.clone()));
                    let h = resp.headers_mut();
                    for (name, value) in &reply.headers {
                        h.insert(name.clone(), value.clone());
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
