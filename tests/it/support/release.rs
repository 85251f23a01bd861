//! A release engineer's commands against a real server, the reference client
//! `check`, and a plain HTTP server that replays recorded (or tampered)
//! answers, as a hostile mirror or man in the middle would.

use super::cli::{firmcast, Run};
use super::server::{spawn_server, TestServer};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

pub const P: &str = "WH-1000XM5";

pub fn firmware(dir: &Path, name: &str, size: usize, salt: u8) -> Vec<u8> {
    let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8 ^ salt).collect();
    std::fs::write(dir.join(name), &bytes).unwrap();
    bytes
}

/// `release sign` of product `product` with `keys/release-1.pem`.
pub fn sign_product(dir: &Path, product: &str, version: &str, seq: &str, fw: &str, out: &str) {
    firmcast(
        dir,
        &[
            "release",
            "sign",
            "--key",
            "keys/release-1.pem",
            "--product",
            product,
            "--version",
            version,
            "--seq",
            seq,
            "--file",
            fw,
            "--from",
            ">=2.0.0",
            "--out",
            out,
        ],
    )
    .ok();
}

pub fn sign(dir: &Path, version: &str, seq: &str, fw: &str, out: &str) {
    sign_product(dir, P, version, seq, fw, out)
}

/// A `release` subcommand with the server's URL and admin token.
pub fn admin(s: &TestServer, args: &[&str]) -> Run {
    let mut all = vec!["release"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", &s.url, "--token", &s.token]);
    firmcast(s.dir.path(), &all)
}

pub fn publish(s: &TestServer, release: &str, fw: &str, extra: &[&str]) -> Run {
    let mut args = vec!["publish", "--release", release, "--file", fw];
    args.extend_from_slice(extra);
    admin(s, &args)
}

/// `check` of product [`P`] at `version`, pinned to `keys/root.pub.pem`
/// unless `extra` names another `--root`.
pub fn check_at(dir: &Path, url: &str, version: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "check",
        "--server",
        url,
        "--product",
        P,
        "--version",
        version,
    ];
    if !extra.contains(&"--root") {
        args.extend_from_slice(&["--root", "keys/root.pub.pem"]);
    }
    args.extend_from_slice(extra);
    firmcast(dir, &args)
}

pub fn check(s: &TestServer, version: &str, extra: &[&str]) -> Run {
    check_at(s.dir.path(), &s.url, version, extra)
}

/// A server with 2.2.0 (seq 1) published from `fw.bin` of `size` bytes.
pub fn published(size: usize, extra: &[&str]) -> (TestServer, Vec<u8>) {
    let s = spawn_server();
    let fw = firmware(s.dir.path(), "fw.bin", size, 0);
    sign(s.dir.path(), "2.2.0", "1", "fw.bin", "release.json");
    publish(&s, "release.json", "fw.bin", extra).ok();
    (s, fw)
}

/// What the real server answers `check` for `product` at `version`: the
/// keyset and the update answer, as a mirror would have stored them.
pub struct Recorded {
    pub keys: Vec<u8>,
    pub updates: serde_json::Value,
}

pub fn record(url: &str, product: &str, version: &str) -> Recorded {
    let http = reqwest::blocking::Client::new();
    let keys = http.get(format!("{url}/v1/keys")).send().unwrap();
    assert!(keys.status().is_success());
    let body = serde_json::json!({"items": [{"product": product, "version": version, "channel": "stable"}]});
    let updates = http
        .post(format!("{url}/v1/updates"))
        .json(&body)
        .send()
        .unwrap();
    assert!(updates.status().is_success());
    Recorded {
        keys: keys.bytes().unwrap().to_vec(),
        updates: updates.json().unwrap(),
    }
}

/// Serves fixed bodies by path (query and method ignored) on 127.0.0.1:0;
/// anything else is a 404. Returns the base URL; runs until the test ends.
pub fn replay(routes: HashMap<String, Vec<u8>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let path = read_request(&mut conn);
            let path = path.split('?').next().unwrap_or_default();
            let (status, body) = match routes.get(path) {
                Some(b) => ("200 OK", b.as_slice()),
                None => (
                    "404 Not Found",
                    &br#"{"error":"not_found","message":"not here"}"#[..],
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).and(conn.write_all(body));
        }
    });
    url
}

/// Reads one request (head and any Content-Length body); returns its path.
pub fn read_request(conn: &mut std::net::TcpStream) -> String {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut len = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    path
}
