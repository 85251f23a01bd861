//! Bench helper for `bench/fanout.sh`.
//!
//! ```text
//! fanout-load seed      --url URL --products A,B --from I --to J [--apns-products A,C] [--fcm-products A,D] [--connections 64]
//! fanout-load notify    --url URL --token T --product P --version V --pid PID --name NAME [--poll-ms 20]
//! fanout-load jwt       --key FILE.p8 --key-id KID --team-id TEAM
//! fanout-load fcm-token --account FCM.json
//! fanout-load apns-token I
//! fanout-load fcm-device-token I
//! ```
//!
//! - `seed` subscribes, through the public API (`POST /v1/push/subscriptions`),
//!   two tokens for every index in `[I, J)`: the APNs device token
//!   `apns-token I` (64 hex digits), to `--apns-products` (default
//!   `--products`), and the FCM registration token `fcm-device-token I`, to
//!   `--fcm-products` (default `--products`), over `--connections`
//!   keep-alive HTTP/1.1 connections. Every answer must be 200.
//! - `notify` starts the release's fan-out (`POST /v1/admin/releases/P/V/notify`),
//!   polls `GET /v1/admin/jobs/{id}` until the job leaves `running`, samples
//!   `VmRSS` of PID at every poll and reads its `VmHWM` at the end. It
//!   prints `name<TAB>metric<TAB>value` rows for `bench/report.py` on stdout
//!   (peak RSS = `VmHWM` of a process started for this job, time to the
//!   202, firmcast's own count of notifications/s from the notify call to
//!   the job's end as `job_rps`) and `notify sent at<TAB>unix_s<TAB>T`, and
//!   fails unless every subscriber was sent to. The rates the bench reports
//!   come from what the fakes counted (`bench/report.py fake`), not from here.
//! - `jwt` prints an APNs provider token (ES256, `kid`, `iss`, `iat` = now)
//!   signed with the team key, for h2load's `authorization` header.
//! - `fcm-token` gets an OAuth2 access token for a service-account key file
//!   (RS256 JWT-bearer grant to its `token_uri`, scope firebase.messaging,
//!   as firmcast does) and prints it, for h2load's `authorization` header.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage:
  fanout-load seed      --url URL --products A,B --from I --to J [--apns-products A,C] [--fcm-products A,D] [--connections 64]
  fanout-load notify    --url URL --token T --product P --version V --pid PID --name NAME [--poll-ms 20]
  fanout-load jwt       --key FILE.p8 --key-id KID --team-id TEAM
  fanout-load fcm-token --account FCM.json
  fanout-load apns-token I
  fanout-load fcm-device-token I";

fn usage(msg: &str) -> ! {
    eprintln!("fanout-load: {msg}\n{USAGE}");
    std::process::exit(2)
}

/// `--name value` pairs after the subcommand.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: impl Iterator<Item = String>) -> Self {
        let mut out = Vec::new();
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            let Some(name) = a.strip_prefix("--") else {
                usage(&format!("unexpected argument `{a}`"))
            };
            let value = args
                .next()
                .unwrap_or_else(|| usage(&format!("--{name} needs a value")));
            out.push((name.to_owned(), value));
        }
        Opts(out)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn req(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| usage(&format!("--{name} is required")))
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> T {
        match self.get(name) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| usage(&format!("--{name}: not a number"))),
            None => default.unwrap_or_else(|| usage(&format!("--{name} is required"))),
        }
    }
}

/// The APNs device token of index `i`: 64 hex digits.
fn apns_token(i: u64) -> String {
    format!("{i:064x}")
}

/// The FCM registration token of index `i`.
fn fcm_token(i: u64) -> String {
    format!("bench-fcm-{i:012}-AbCdEfGhIjKlMnOpQrStUvWxYz_0123456789")
}

/// `http://host:port` -> `host:port`.
fn authority(url: &str) -> String {
    url.trim_end_matches('/')
        .strip_prefix("http://")
        .unwrap_or_else(|| usage("--url must be http://HOST:PORT"))
        .to_owned()
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on a keep-alive connection: status and body.
async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), Error> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json");
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(body))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn seed(o: &Opts) -> Result<(), Error> {
    let host = authority(o.req("url"));
    let list = |name: &str| -> Result<String, Error> {
        let products: Vec<&str> = o
            .get(name)
            .unwrap_or_else(|| o.req("products"))
            .split(',')
            .collect();
        Ok(serde_json::to_string(&products)?)
    };
    let (apns_products, fcm_products) = (list("apns-products")?, list("fcm-products")?);
    let from: u64 = o.num("from", None);
    let to: u64 = o.num("to", None);
    let conns: usize = o.num("connections", Some(64));
    if to <= from {
        usage("--to must be above --from");
    }
    let total = ((to - from) * 2) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns.max(1) {
        let (host, apns_products, fcm_products) =
            (host.clone(), apns_products.clone(), fcm_products.clone());
        let (next, done, failed, first_error) = (
            next.clone(),
            done.clone(),
            failed.clone(),
            first_error.clone(),
        );
        tasks.spawn(async move {
            let fail = |msg: String| {
                failed.store(true, Ordering::Relaxed);
                first_error.lock().unwrap().get_or_insert(msg);
            };
            let mut sender = match connect(&host).await {
                Ok(s) => s,
                Err(e) => return fail(format!("connect {host}: {e}")),
            };
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= total || failed.load(Ordering::Relaxed) {
                    return;
                }
                let i = from + (r / 2) as u64;
                let (provider, token, products) = if r % 2 == 0 {
                    ("apns", apns_token(i), &apns_products)
                } else {
                    ("fcm", fcm_token(i), &fcm_products)
                };
                let body = format!(
                    r#"{{"provider":"{provider}","token":"{token}","products":{products},"locale":"en"}}"#
                );
                match call(
                    &mut sender,
                    &host,
                    Method::POST,
                    "/v1/push/subscriptions",
                    None,
                    Bytes::from(body),
                )
                .await
                {
                    Ok((StatusCode::OK, _)) => {
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if n % 100_000 == 0 {
                            eprintln!(
                                "   {n} subscriptions, {:.0}/s",
                                n as f64 / started.elapsed().as_secs_f64()
                            );
                        }
                    }
                    Ok((status, body)) => {
                        return fail(format!(
                            "subscribe answered {status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        ))
                    }
                    Err(e) => return fail(format!("subscribe: {e}")),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    if let Some(e) = first_error.lock().unwrap().take() {
        return Err(e.into());
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "   seeded {total} subscriptions ({} APNs + {} FCM) in {secs:.1} s ({:.0}/s)",
        total / 2,
        total / 2,
        total as f64 / secs
    );
    Ok(())
}

/// `VmRSS` and `VmHWM` of `pid`, in kB.
fn mem_kb(pid: u32) -> Result<(u64, u64), Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => Err(format!("no VmRSS/VmHWM in /proc/{pid}/status").into()),
    }
}

async fn notify(o: &Opts) -> Result<(), Error> {
    let host = authority(o.req("url"));
    let token = o.req("token");
    let (product, version, name) = (o.req("product"), o.req("version"), o.req("name"));
    let pid: u32 = o.num("pid", None);
    let poll = Duration::from_millis(o.num("poll-ms", Some(20)));
    let mut sender = connect(&host).await?;
    let (idle_rss, _) = mem_kb(pid)?;

    let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let started = Instant::now();
    let (status, body) = call(
        &mut sender,
        &host,
        Method::POST,
        &format!("/v1/admin/releases/{product}/{version}/notify"),
        Some(token),
        Bytes::from_static(b"{}"),
    )
    .await?;
    let planned = started.elapsed();
    if status != StatusCode::ACCEPTED {
        return Err(format!(
            "notify answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let accepted: Value = serde_json::from_slice(&body)?;
    let id = accepted["job"].as_str().ok_or("no job id")?.to_owned();
    let total = accepted["total"].as_u64().ok_or("no total")?;

    let mut peak_rss = idle_rss;
    let mut last_report = Instant::now();
    let job = loop {
        let (status, body) = call(
            &mut sender,
            &host,
            Method::GET,
            &format!("/v1/admin/jobs/{id}"),
            Some(token),
            Bytes::new(),
        )
        .await?;
        let now = started.elapsed();
        peak_rss = peak_rss.max(mem_kb(pid)?.0);
        if status != StatusCode::OK {
            return Err(
                format!("job answered {status}: {}", String::from_utf8_lossy(&body)).into(),
            );
        }
        let job: Value = serde_json::from_slice(&body)?;
        let n = |k: &str| job[k].as_u64().unwrap_or(0);
        let processed = n("sent") + n("failed") + n("removed");
        if job["state"] != "running" {
            break job;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "   {processed}/{total} after {:.1} s, RSS {:.1} MB",
                now.as_secs_f64(),
                peak_rss as f64 / 1024.0
            );
        }
        tokio::time::sleep(poll).await;
    };
    let took = started.elapsed();
    let (_, hwm) = mem_kb(pid)?;
    let n = |k: &str| job[k].as_u64().unwrap_or(0);
    if job["state"] != "done" || n("sent") != total || n("failed") != 0 || n("removed") != 0 {
        return Err(format!("the job did not send to every subscriber: {job}").into());
    }
    let secs = took.as_secs_f64();
    let planned_s = planned.as_secs_f64();
    let mb = |kb: u64| kb as f64 / 1024.0;
    eprintln!(
        "   {name}: job done after {secs:.2} s by firmcast's count ({total} sent, {:.0}/s; notify->202 {:.0} ms); RSS idle {:.1} MB, sampled peak {:.1} MB, VmHWM {:.1} MB; {} batches",
        total as f64 / secs,
        planned_s * 1e3,
        mb(idle_rss),
        mb(peak_rss),
        mb(hwm),
        n("batches_total"),
    );
    println!("notify sent at\tunix_s\t{:.6}", sent_at.as_secs_f64());
    println!("{name}\tjob_rps\t{}", total as f64 / secs);
    println!("{name}\tpeak_rss_mb\t{}", mb(hwm));
    println!("{name} notify->202\tplan_ms\t{}", planned_s * 1e3);
    Ok(())
}

/// The DER inside the first PEM block.
fn pem_der(pem: &str) -> Result<Vec<u8>, Error> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.trim().chars())
        .collect();
    Ok(STANDARD.decode(b64)?)
}

fn jwt(o: &Opts) -> Result<(), Error> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let der = pem_der(&std::fs::read_to_string(o.req("key"))?)?;
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = json!({"alg": "ES256", "kid": o.req("key-id")});
    let claims = json!({"iss": o.req("team-id"), "iat": iat});
    let mut jws = URL_SAFE_NO_PAD.encode(header.to_string());
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = key
        .sign(&rng, jws.as_bytes())
        .map_err(|_| "ES256 signing failed")?;
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
    println!("{jws}");
    Ok(())
}

/// An OAuth2 access token for the service account in `--account`: the
/// JWT-bearer grant firmcast makes (RS256, `iss` = client_email, `aud` =
/// token_uri, scope firebase.messaging, one hour), posted as a form.
async fn fcm_access_token(o: &Opts) -> Result<(), Error> {
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    let account: Value = serde_json::from_str(&std::fs::read_to_string(o.req("account"))?)?;
    let field = |k: &str| -> Result<&str, Error> {
        account[k]
            .as_str()
            .ok_or_else(|| format!("no {k} in the service account").into())
    };
    let token_uri = field("token_uri")?;
    let der = pem_der(field("private_key")?)?;
    let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("not a PKCS#8 RSA key: {e}"))?;
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": field("private_key_id")?});
    let claims = json!({
        "iss": field("client_email")?,
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": token_uri,
        "iat": iat,
        "exp": iat + 3600,
    });
    let mut jws = URL_SAFE_NO_PAD.encode(header.to_string());
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        jws.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "RS256 signing failed")?;
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(&sig));

    let rest = token_uri
        .strip_prefix("http://")
        .ok_or("the token_uri is not http://")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut sender = connect(host).await?;
    let form =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jws}");
    let req = Request::builder()
        .method(Method::POST)
        .uri(if path.is_empty() { "/" } else { path })
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "the token endpoint answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let answer: Value = serde_json::from_slice(&body)?;
    let token = answer["access_token"]
        .as_str()
        .ok_or("no access_token in the answer")?;
    println!("{token}");
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_else(|| usage("no command"));
    let result = match cmd.as_str() {
        "apns-token" => {
            let i = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage("apns-token needs an index"));
            println!("{}", apns_token(i));
            Ok(())
        }
        "fcm-device-token" => {
            let i = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage("fcm-device-token needs an index"));
            println!("{}", fcm_token(i));
            Ok(())
        }
        "jwt" => jwt(&Opts::parse(args)),
        "seed" | "notify" | "fcm-token" => {
            let opts = Opts::parse(args);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async {
                match cmd.as_str() {
                    "seed" => seed(&opts).await,
                    "notify" => notify(&opts).await,
                    _ => fcm_access_token(&opts).await,
                }
            })
        }
        "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => usage(&format!("unknown command `{other}`")),
    };
    if let Err(e) = result {
        eprintln!("fanout-load {cmd}: {e}");
        std::process::exit(1);
    }
}
