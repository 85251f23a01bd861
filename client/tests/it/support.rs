//! A firmcast server in memory, speaking the v1 wire format with genuinely
//! signed documents, that tests tamper with as a compromised server or
//! mirror would; and the loops an app runs to drive the core against it.

use chrono::{Duration, Utc};
use firmcast_client::http::{header, Method, Request, Response};
use firmcast_client::{
    Body, CheckItem, CheckOutcome, Client, Download, Error, State, Update, Verified,
};
use firmcast_signing::release::ArtifactRef;
use firmcast_signing::{Envelope, Freshness, Keyset, PrivateKey, ReleaseManifest, Role};
use serde_json::{json, Value};
use std::collections::HashMap;

pub const P: &str = "WH-1000XM5";
pub const D: &str = "WF-1000XM4";
pub const BASE: &str = "https://updates.example";

pub struct Keys {
    pub root: PrivateKey,
    pub release: Vec<PrivateKey>,
    pub ts: PrivateKey,
}

impl Keys {
    pub fn new(release_keys: usize) -> Self {
        Keys {
            root: PrivateKey::generate(),
            release: (0..release_keys).map(|_| PrivateKey::generate()).collect(),
            ts: PrivateKey::generate(),
        }
    }

    pub fn keyset(&self, version: u64, threshold: usize) -> Keyset {
        Keyset {
            version,
            expires: Utc::now() + Duration::days(365),
            root: None,
            release: Role::new(
                "release",
                threshold,
                self.release.iter().map(|k| k.public().clone()).collect(),
            )
            .unwrap(),
            timestamp: Role::single(self.ts.public().clone()),
        }
    }

    pub fn root_b64(&self) -> String {
        self.root.public().to_base64()
    }
}

/// Firmware bytes for a test: deterministic, not all one value.
pub fn firmware(size: usize, salt: u8) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8 ^ salt).collect()
}

pub fn manifest(product: &str, version: &str, seq: u64, fw: &[u8]) -> ReleaseManifest {
    ReleaseManifest {
        product: product.into(),
        version: version.parse().unwrap(),
        channel: "stable".into(),
        seq,
        artifact: ArtifactRef {
            sha256: firmcast_signing::digest::sha256_hex(fw),
            size: fw.len() as u64,
        },
        from: None,
        critical: false,
        notes: [("en".to_owned(), "Better calls.".to_owned())].into(),
        released_at: Utc::now(),
    }
}

/// How the artifact endpoint misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    Honest,
    /// Ignores `Range` and sends everything with 200.
    IgnoreRange,
    /// Stops after this many bytes of the body (a dropped connection).
    CutAt(usize),
    /// Appends this many bytes past the signed size, with no length.
    Extra(usize),
    /// First answers a 302 to another path on the same server.
    Redirect,
}

/// One published release of a product.
#[derive(Clone)]
pub struct Published {
    pub manifest: ReleaseManifest,
    pub envelope: Value,
    pub fw: Vec<u8>,
}

pub struct Server {
    /// `/v1/keys`.
    pub keys: Vec<u8>,
    /// `/v1/keys/{version}`.
    pub keys_at: HashMap<u64, Vec<u8>>,
    pub releases: HashMap<String, Published>,
    /// A whole `/v1/updates` answer to send instead of computing one.
    pub updates_override: Option<Value>,
    pub ts: PrivateKey,
    pub keyset_version: u64,
    pub freshness_ttl: Duration,
    pub day: Option<u64>,
    pub serve: Serve,
    /// Every request asked, in order.
    pub log: std::cell::RefCell<Vec<Request>>,
}

impl Server {
    /// Keyset version 1 of `keys` (threshold 1), nothing published.
    pub fn new(keys: &Keys) -> Self {
        let env = keys.keyset(1, 1).sign(&[&keys.root]).unwrap();
        Server {
            keys: env.to_json_bytes(),
            keys_at: HashMap::from([(1, env.to_json_bytes())]),
            releases: HashMap::new(),
            updates_override: None,
            ts: PrivateKey::from_pem(&pem(&keys.ts), "ts").unwrap(),
            keyset_version: 1,
            freshness_ttl: Duration::hours(24),
            day: Some(20_424),
            serve: Serve::Honest,
            log: Default::default(),
        }
    }

    /// Publishes `product` `version` (seq) signed by the first release key.
    pub fn publish(&mut self, keys: &Keys, product: &str, version: &str, seq: u64, fw: Vec<u8>) {
        let m = manifest(product, version, seq, &fw);
        let env = m.sign(&keys.release[0]).unwrap().to_value();
        self.releases.insert(
            product.into(),
            Published {
                manifest: m,
                envelope: env,
                fw,
            },
        );
    }

    pub fn freshness(&self, product: &str, channel: &str) -> Envelope {
        let latest = self.releases.get(product).map_or(0, |r| r.manifest.seq);
        Freshness {
            product: product.into(),
            channel: channel.into(),
            latest_seq: latest,
            keyset_version: self.keyset_version,
            expires: Utc::now() + self.freshness_ttl,
        }
        .sign(&self.ts)
    }

    /// The answer for one batch item, as the real server writes it.
    pub fn item(&self, product: &str, version: &str, channel: &str) -> Value {
        let installed: semver::Version = version.parse().unwrap();
        let offer = self
            .releases
            .get(product)
            .filter(|r| r.manifest.applies_to(&installed))
            .map(|r| {
                let m = &r.manifest;
                json!({"version": m.version.to_string(), "url": format!("/v1/artifacts/{product}/{}", m.version),
                       "size": m.artifact.size, "sha256": m.artifact.sha256, "critical": m.critical,
                       "notes": m.notes, "release": r.envelope})
            });
        if !self.releases.contains_key(product) && product != P && product != D {
            return json!({"product": product, "version": version, "error": "unknown_product",
                          "message": format!("no releases for product {product:?}; check the product name")});
        }
        json!({"product": product, "version": version, "channel": channel, "update": offer,
               "freshness": self.freshness(product, channel).to_value()})
    }

    pub fn answer(&self, req: &Request) -> Response {
        self.log.borrow_mut().push(req.clone());
        let path = req.url.strip_prefix(BASE).expect("asked this server");
        let json = |status: u16, body: Vec<u8>| {
            Response::new(
                status,
                vec![("Content-Type".into(), "application/json".into())],
                body,
            )
        };
        match (req.method, path) {
            (Method::Get, "/v1/keys") => json(200, self.keys.clone()),
            (Method::Get, p) if p.starts_with("/v1/keys/") => {
                let v: u64 = p["/v1/keys/".len()..].parse().unwrap();
                match self.keys_at.get(&v) {
                    Some(k) => json(200, k.clone()),
                    None => json(
                        404,
                        br#"{"error":"unknown_keyset_version","message":"not kept"}"#.to_vec(),
                    ),
                }
            }
            (Method::Post, "/v1/updates") => {
                if let Some(v) = &self.updates_override {
                    return json(200, serde_json::to_vec(v).unwrap());
                }
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let results: Vec<Value> = body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        self.item(
                            i["product"].as_str().unwrap(),
                            i["version"].as_str().unwrap(),
                            i["channel"].as_str().unwrap_or("stable"),
                        )
                    })
                    .collect();
                let mut answer = json!({ "results": results });
                if let Some(day) = self.day {
                    answer["day"] = day.into();
                }
                json(200, serde_json::to_vec(&answer).unwrap())
            }
            (Method::Post, "/v1/reports") => json(202, br#"{}"#.to_vec()),
            (Method::Get, p) if p.starts_with("/v1/artifacts/") || p.starts_with("/blob/") => {
                self.artifact(req, p)
            }
            _ => json(
                404,
                br#"{"error":"not_found","message":"no such path"}"#.to_vec(),
            ),
        }
    }

    fn artifact(&self, req: &Request, path: &str) -> Response {
        let product = match path.strip_prefix("/blob/") {
            Some(p) => p,
            None => path.split('/').nth(3).unwrap_or_default(),
        };
        let fw = &self.releases[product].fw;
        if self.serve == Serve::Redirect && path.starts_with("/v1/") {
            return Response::new(
                302,
                vec![("Location".into(), format!("/blob/{product}"))],
                vec![],
            );
        }
        let start = header(&req.headers, "range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .map(|s| s.parse::<usize>().unwrap());
        match (start, self.serve) {
            (Some(s), Serve::Honest | Serve::CutAt(_) | Serve::Redirect) => {
                if s >= fw.len() {
                    return Response::new(416, vec![], vec![]);
                }
                let range = format!("bytes {s}-{}/{}", fw.len() - 1, fw.len());
                Response::new(206, vec![("Content-Range".into(), range)], fw[s..].to_vec())
            }
            (_, Serve::Extra(n)) => {
                let mut body = fw.clone();
                body.extend(std::iter::repeat_n(0xAA, n));
                Response::new(200, vec![], body)
            }
            _ => Response::new(
                200,
                vec![("Content-Length".into(), fw.len().to_string())],
                fw.clone(),
            ),
        }
    }
}

fn pem(k: &PrivateKey) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    k.write_pem_file(&path).unwrap();
    std::fs::read_to_string(path).unwrap()
}

pub fn client(keys: &Keys) -> Client {
    Client::new(BASE, &keys.root_b64()).unwrap()
}

/// The app's check loop against `server`.
pub fn check(
    client: &Client,
    server: &Server,
    state: &State,
    items: &[(&str, &str)],
) -> Result<CheckOutcome, Error> {
    let items = items.iter().map(|(p, v)| CheckItem::new(p, v)).collect();
    let mut check = client.check(state, items)?;
    while let Some(req) = check.next_request() {
        check.receive(server.answer(&req))?;
    }
    check.outcome()
}

/// The one item of a single-item check.
pub fn single(
    client: &Client,
    server: &Server,
    state: &State,
    version: &str,
) -> Result<Option<Update>, Error> {
    let o = check(client, server, state, &[(P, version)])?;
    o.results.into_iter().next().unwrap().outcome
}

/// The app's download loop: `file` is what it has on disk (resumed from),
/// chunks of `chunk` bytes; the body stops where `Serve::CutAt` says.
pub fn download(
    server: &Server,
    update: &Update,
    file: &mut Vec<u8>,
    chunk: usize,
) -> Result<Verified, Error> {
    let mut dl = Download::new(update);
    dl.resume(file)?;
    while let Some(req) = dl.next_request() {
        let resp = server.answer(&req);
        match dl.receive_head(resp.status, &resp.headers)? {
            Body::Skip => continue,
            Body::Restart => file.clear(),
            Body::Append => {}
        }
        let body = match server.serve {
            Serve::CutAt(n) => &resp.body[..n.min(resp.body.len())],
            _ => &resp.body[..],
        };
        for c in body.chunks(chunk) {
            dl.receive_chunk(c)?;
            file.extend_from_slice(c);
        }
        dl.receive_end()?;
    }
    dl.finish()
}

/// The request bodies `server` saw for `/v1/updates`.
pub fn update_bodies(server: &Server) -> Vec<Value> {
    server
        .log
        .borrow()
        .iter()
        .filter(|r| r.url.ends_with("/v1/updates"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

pub fn paths(server: &Server) -> Vec<String> {
    server
        .log
        .borrow()
        .iter()
        .map(|r| r.url.strip_prefix(BASE).unwrap().to_owned())
        .collect()
}
