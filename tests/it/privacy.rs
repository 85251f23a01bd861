//! Issue #7, end to end against the real binary and stores: client addresses
//! never leave memory (logs at trace level, /metrics, every Redis key, data
//! and blob files), no answer sets a cookie, push tokens leave no trace once
//! unsubscribed, dead or idle, secrets stay out of logs and `Debug`, and every
//! admin action is audited. Issue #18: thousands of checks and install
//! reports from as many addresses leave counts only, no address or prefix.
//! Every scan must also find planted decoys, so a scanner that finds nothing
//! cannot pass.

use crate::support;

use firmcast::fanout::{ProviderKind, PushStore, Subscription};
use firmcast_push_fakes::{apns::ApnsFake, apns::ApnsFault, fcm::FcmFake, fcm::FcmFault};
use reqwest::{Method as M, RequestBuilder};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::app::{firmware, sign_with, Rel};
use support::scan::*;
use support::server::{spawn_server_logged, TestServer};

struct Fakes {
    apns: ApnsFake,
    fcm: FcmFake,
    dir: tempfile::TempDir,
    config: String,
}

/// APNs and FCM fakes; the config enables both and sweeps idle tokens every second.
async fn fakes() -> Fakes {
    let (apns, fcm) = (
        ApnsFake::start().await.unwrap(),
        FcmFake::start().await.unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    apns.write_key(&d.join("apns.p8")).unwrap();
    apns.write_ca(&d.join("ca.pem")).unwrap();
    fcm.write_service_account(&d.join("fcm.json")).unwrap();
    let config = format!(
        "[push]\nworkers = 2\nsweep_interval_secs = 1\n[push.apns]\nenabled = true\nbase_url = \"{}\"\nkey_file = \"{d}/apns.p8\"\nkey_id = \"{}\"\nteam_id = \"{}\"\ntopic = \"{}\"\nca_file = \"{d}/ca.pem\"\n[push.fcm]\nenabled = true\nbase_url = \"{}\"\nservice_account_file = \"{d}/fcm.json\"\n",
        apns.base_url(), apns.key_id(), apns.team_id(), apns.topic(), fcm.base_url(), d = d.display(),
    );
    Fakes {
        apns,
        fcm,
        dir,
        config,
    }
}

/// The server's secrets: its admin token, timestamp key, APNs and FCM keys.
fn secret_needles(server_dir: &Path, f: &Fakes, token: &str) -> Vec<Needle> {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let account: Value = serde_json::from_str(&read(&f.dir.path().join("fcm.json"))).unwrap();
    let fcm_key = account["private_key"].as_str().unwrap();
    let mut v = vec![needle("admin token", token, Edge::Raw)];
    v.extend(key_needles(
        "timestamp key",
        &read(&server_dir.join("keys/timestamp.pem")),
    ));
    v.extend(key_needles(
        "APNs key",
        &read(&f.dir.path().join("apns.p8")),
    ));
    v.extend(key_needles("FCM key", fcm_key));
    v
}

/// A push token as sent, upper case (APNs hex), and its sha256 as itself or member key.
fn token_needles(label: &str, provider: &str, token: &str) -> Vec<Needle> {
    let sha = |s: &str| firmcast_signing::digest::sha256_hex(s.as_bytes());
    let member = format!("{provider}:{token}");
    let forms = [
        token.to_owned(),
        token.to_uppercase(),
        sha(token),
        sha(&member),
    ];
    forms
        .into_iter()
        .map(|t| needle(label, t, Edge::Raw))
        .collect()
}

fn fcm_token(tag: &str) -> String {
    format!("privacy-{tag}-fcm-token-0123456789abcdefghij")
}

/// Sends, and holds every answer to the promise of no cookies.
async fn send(req: RequestBuilder, want: u16) -> reqwest::Response {
    let r = req.send().await.unwrap();
    assert!(
        r.headers().get("set-cookie").is_none(),
        "{} set a cookie",
        r.url()
    );
    assert_eq!(r.status(), want, "{}", r.url());
    r
}

async fn send_json(req: RequestBuilder, want: u16) -> Value {
    send(req, want).await.json().await.unwrap()
}

/// What an app does: checks (single and batch), downloads, push (un)subscribe.
async fn app_traffic(url: &str, from: IpAddr, xff: Option<&str>, push: (&str, &str), leave: bool) {
    let c = reqwest::Client::builder().local_address(from).build();
    let (c, (provider, token)) = (c.unwrap(), push);
    let batch = json!({"items": [{"product": "Buds", "version": "1.0.0"},
        {"product": "Case", "version": "0.1.0", "channel": "beta"}]});
    let sub = json!({"provider": provider, "token": token, "products": ["Buds"], "locale": "de"});
    let yesterday = format!("/v1/updates/Buds/1.0.0?last_day={}", today() - 1);
    let mut reqs = vec![
        (
            M::GET,
            "/v1/updates/Buds/1.0.0?channel=stable",
            Value::Null,
            200,
        ),
        (M::POST, "/v1/updates", batch, 200),
        (M::GET, "/v1/artifacts/Buds/2.0.0", Value::Null, 200),
        (M::GET, "/v1/artifacts/Buds/2.0.0", json!("bytes=3-9"), 206),
        (M::GET, &yesterday, Value::Null, 200),
        (M::POST, "/v1/reports", report(leave), 202),
        (M::GET, "/v1/keys", Value::Null, 200),
        (M::GET, "/v1/updates/Buds/not-a-version", Value::Null, 400),
        (M::POST, "/v1/push/subscriptions", sub, 200),
    ];
    if leave {
        let unsub = json!({"provider": provider, "token": token});
        reqs.push((M::POST, "/v1/push/unsubscribe", unsub, 204));
    }
    for (method, path, body, want) in reqs {
        let mut req = c.request(method, format!("{url}{path}"));
        req = match body {
            Value::Null => req,
            Value::String(range) => req.header("range", range),
            body => req.json(&body),
        };
        if let Some(f) = xff {
            req = req.header("x-forwarded-for", f);
        }
        send(req, want).await.bytes().await.unwrap();
    }
}

fn today() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(86_400)
}

/// An install report for Buds 2.0.0, as the client library sends it.
fn report(failed: bool) -> Value {
    match failed {
        true => json!({"product": "Buds", "from": "1.0.0", "to": "2.0.0",
            "outcome": "failed", "stage": "verify", "code": "E_HASH"}),
        false => json!({"product": "Buds", "from": "1.0.0", "to": "2.0.0", "outcome": "installed"}),
    }
}

/// The fleet, through the trusted proxy: `n` clients (one in five IPv4,
/// the others each in an IPv6 /64 of its own), each checking once (without `last_day`,
/// with yesterday's or with today's, by turns) and reporting once.
/// Returns the addresses and the needles of their prefixes.
async fn fleet_traffic(url: &str, n: usize) -> (Vec<IpAddr>, Vec<Needle>) {
    let fleet: Vec<IpAddr> = (0..n)
        .map(|i| match i % 5 {
            0 => IpAddr::from([198, 18, (i / 250) as u8, (i % 250) as u8 + 1]),
            _ => format!("2001:db8:5eed:{i:x}::{:x}", i % 40 + 1)
                .parse()
                .unwrap(),
        })
        .collect();
    let c = reqwest::Client::new();
    let mut running = tokio::task::JoinSet::new();
    for (i, ip) in fleet.iter().enumerate() {
        let last_day = [String::new(), format!("?last_day={}", today() - 1)]
            .into_iter()
            .chain([format!("?last_day={}", today())])
            .nth(i % 3)
            .unwrap();
        let check = c.get(format!("{url}/v1/updates/Buds/1.0.0{last_day}"));
        let rep = c
            .post(format!("{url}/v1/reports"))
            .json(&report(i % 50 == 0));
        let xff = format!("{ip}, 127.0.0.1");
        running.spawn(async move {
            send(check.header("x-forwarded-for", &xff), 200).await;
            send(rep.header("x-forwarded-for", &xff), 202).await;
        });
        if running.len() >= 16 {
            running.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = running.join_next().await {
        done.unwrap();
    }
    let prefixes = vec![
        needle("fleet IPv4 prefix", "198.18.", Edge::Raw),
        needle("fleet IPv6 prefix", "2001:db8:5eed:", Edge::Raw),
        needle(
            "fleet IPv6 prefix",
            [0x20, 0x01, 0x0d, 0xb8, 0x5e, 0xed],
            Edge::Raw,
        ),
    ];
    (fleet, prefixes)
}

fn admin(s: &TestServer, m: M, path: &str, body: Value) -> RequestBuilder {
    let req = reqwest::Client::new().request(m, format!("{}{path}", s.url));
    let req = req.bearer_auth(&s.token);
    if body.is_null() {
        req
    } else {
        req.json(&body)
    }
}

/// Publishes two releases, rolls out, pauses, resumes, yanks; returns the
/// audit actions these must leave (reads leave none).
async fn publish_and_patch(s: &TestServer) -> Vec<&'static str> {
    let key_file = s.dir.path().join("keys/release-1.pem");
    let key = firmcast_signing::PrivateKey::read_pem_file(&key_file).unwrap();
    for (version, seq, rollout) in [("2.0.0", 1, 50), ("2.1.0", 2, 0)] {
        let bytes = firmware(5000, seq as u8);
        let path = format!("/v1/admin/artifacts/Buds/{version}");
        let upload = admin(s, M::PUT, &path, Value::Null);
        let upload = upload.header("content-type", "application/octet-stream");
        send(upload.body(bytes.clone()), 201).await;
        let env = sign_with(&key, &Rel::new("Buds", version, seq, &bytes));
        let body = json!({"release": env.to_value(), "rollout": rollout});
        send(admin(s, M::POST, "/v1/admin/releases", body), 201).await;
    }
    let patch = |v: &str, body| admin(s, M::PATCH, &format!("/v1/admin/releases/Buds/{v}"), body);
    send(patch("2.1.0", json!({"yanked": true})), 200).await;
    // Ends at a partial rollout, so update checks are bucketed by address.
    let values = [json!(100), json!(true), json!(false), json!(37.5)];
    for (k, v) in ["rollout", "paused", "paused", "rollout"]
        .into_iter()
        .zip(values)
    {
        send(patch("2.0.0", json!({ k: v })), 200).await;
    }
    send(admin(s, M::GET, "/v1/admin/releases", Value::Null), 200).await;
    let mut done = ["artifact.upload", "release.publish"].repeat(2);
    done.extend(["release.patch"; 5]);
    done
}

/// Notifies (a dry run, then for real through the fakes), cancels the job.
async fn notify_and_cancel(s: &TestServer) -> Vec<&'static str> {
    let notify = |body| admin(s, M::POST, "/v1/admin/releases/Buds/2.0.0/notify", body);
    send(notify(json!({"dry_run": true})), 202).await;
    let job = send_json(notify(json!({"force": true})), 202).await;
    let job = format!("/v1/admin/jobs/{}", job["job"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while send_json(admin(s, M::GET, &job, Value::Null), 200).await["state"] != "done" {
        assert!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(admin(s, M::DELETE, &job, Value::Null), 200).await;
    vec!["release.notify", "release.notify", "job.cancel"]
}

/// Addresses of the fleet that checks and reports through the proxy.
const FLEET: usize = 1500;

#[derive(PartialEq)]
enum Run {
    Redis,
    Embedded,
    Ipv6,
}

/// The real binary at trace level, many clients and every admin action;
/// then logs, /metrics, the stores and their files are scanned.
async fn privacy_run(run: Run) {
    let f = fakes().await;
    let redis = (run == Run::Redis).then(support::redis_proc::RedisProcess::start);
    let url = redis.as_ref().map(|r| r.url());
    let state = url.as_ref().map_or(String::new(), |u| {
        format!("[state]\nbackend = \"redis\"\nredis_url = \"{u}\"\nredis_prefix = \"privacy\"\n")
    });
    let proxies = ("FIRMCAST__SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]");
    let flush = ("FIRMCAST__ROLLOUT__FLUSH_INTERVAL_SECS", "1");
    let mut envs = vec![("RUST_LOG", "trace"), proxies, flush];
    let mut sources: Vec<IpAddr> = (2..=60).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    let mut decoy_ip = IpAddr::from([127, 0, 0, 99]);
    if run == Run::Ipv6 {
        envs.push(("FIRMCAST__SERVER__LISTEN", "[::1]:0"));
        (sources, decoy_ip) = (
            vec!["::1".parse().unwrap()],
            "2001:db8:dec0::99".parse().unwrap(),
        );
    }
    let mut server = spawn_server_logged(&format!("{}{state}", f.config), &envs);
    let mut needles = secret_needles(server.dir.path(), &f, &server.token);
    let mut audited = publish_and_patch(&server).await;
    // Push tokens: FCM and APNs by turns; every third leaves, two die (below).
    let mut tokens = vec![];
    for (i, ip) in sources.iter().enumerate() {
        let (provider, token) = match i % 2 {
            0 => ("fcm", fcm_token(&format!("s{i}"))),
            _ => ("apns", format!("c0ffee{i:02x}").repeat(8)),
        };
        app_traffic(&server.url, *ip, None, (provider, &token), i % 3 == 1).await;
        tokens.push((provider, token, i % 3 == 1 || i == 0 || i == 3));
        needles.extend(ip_needles(&format!("client {ip}"), *ip));
    }
    f.fcm.fail_always(&tokens[0].1, FcmFault::Unregistered);
    if let Some((_, dead, _)) = tokens.get(3) {
        f.apns.fail_always(dead, ApnsFault::BadDeviceToken);
    }
    // Through the trusted proxy: these addresses only ever travel in a header.
    let forwarded = [
        "203.0.113.77",
        "2001:db8:aa:bb::1234",
        "::ffff:198.51.100.23",
    ];
    for fwd in forwarded.into_iter().filter(|_| run != Run::Ipv6) {
        let ip = fwd.parse::<IpAddr>().unwrap().to_canonical();
        let (xff, token) = (format!("{fwd}, 127.0.0.1"), fcm_token("fw"));
        let proxy = IpAddr::from([127, 0, 0, 1]);
        app_traffic(&server.url, proxy, Some(&xff), ("fcm", &token), true).await;
        tokens.push(("fcm", token, true));
        needles.extend(ip_needles(&format!("forwarded {ip}"), ip));
    }
    if let Some(url) = &url {
        // Idle past push.retention_days (270): swept within a second; idle less: kept.
        let timeout = Duration::from_secs(2);
        let store = firmcast::fanout::redis::RedisPushStore::connect(url, "privacy", timeout);
        let store = store.await.unwrap();
        for (tag, days) in [("idle", 300), ("recent", 200)] {
            let last_seen = chrono::Utc::now() - chrono::Duration::days(days);
            let (provider, token, locale) = (ProviderKind::Fcm, fcm_token(tag), "en".into());
            let products = vec!["Buds".into()];
            let sub = Subscription {
                provider,
                token,
                products,
                locale,
                last_seen,
            };
            store.upsert_subscription(&sub).await.unwrap();
            tokens.push(("fcm", sub.token, days > 270));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while store
            .get_subscription(ProviderKind::Fcm, &fcm_token("idle"))
            .await
            .unwrap()
            .is_some()
        {
            assert!(Instant::now() < deadline, "the idle token was not swept");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut reports = sources.len();
    if run != Run::Ipv6 {
        reports += forwarded.len() + FLEET;
        let (fleet, prefixes) = fleet_traffic(&server.url, FLEET).await;
        needles.extend(prefixes);
        for ip in fleet {
            // Four random bytes match somewhere in megabytes of signatures
            // and hashes by chance; IPv4 raw octets are held to the test by
            // the direct clients above, the fleet's IPv6 ones here.
            let forms = ip_needles(&format!("fleet {ip}"), ip).into_iter();
            needles.extend(forms.filter(|n| ip.is_ipv6() || !matches!(n.2, Edge::Raw)));
        }
    }
    // The counts were made and flushed: the scans below see them stored.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = send_json(
            admin(&server, M::GET, "/v1/admin/stats/Buds", Value::Null),
            200,
        );
        let rep = stats.await["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == "2.0.0")
            .unwrap()["reports"]
            .clone();
        let counted = rep["installed"].as_u64().unwrap() + rep["failed"].as_u64().unwrap();
        if counted == reports as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} of {reports} reports counted: {rep}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    audited.extend(notify_and_cancel(&server).await);
    let c = reqwest::Client::new();
    let metrics = send(c.get(format!("{}/metrics", server.url)), 200)
        .await
        .text();
    let metrics = metrics.await.unwrap();
    let audit = send_json(admin(&server, M::GET, "/v1/admin/audit", Value::Null), 200).await;
    let entries = audit["entries"].as_array().unwrap();
    let mut actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    actions.sort();
    audited.sort();
    assert_eq!(actions, audited, "one entry per admin action: {audit}");
    assert!(
        entries.iter().all(|e| e["actor"] == "test-admin"),
        "{audit}"
    );

    // Decoys the scans must find: in the log (through a logged path) and a data file.
    let decoy_token = "fct_decoy0123456789abcdefghijklmnopqrstuvwxyz";
    for product in [decoy_ip.to_string(), decoy_token.to_owned()] {
        let r = c
            .get(format!("{}/v1/updates/{product}/1.0.0", server.url))
            .send();
        r.await.unwrap();
    }
    needles.extend(ip_needles("decoy log address", decoy_ip));
    needles.push(needle("decoy log token", decoy_token, Edge::Raw));
    let data = server.dir.path().join("data");
    std::fs::write(data.join("decoy.bin"), [9, 127, 0, 0, 98, 9]).unwrap();
    needles.extend(ip_needles("decoy file address", [127, 0, 0, 98].into()));
    server.stop(); // gracefully: the embedded stores are flushed and closed

    // No push token in the log either; the server's own listen address is no client's.
    let (mut log_needles, mut store_needles) = (needles.clone(), vec![]);
    for (provider, token, gone) in &tokens {
        log_needles.extend(token_needles("push token", provider, token));
        let label = if *gone {
            "gone push token"
        } else {
            "decoy kept push token"
        };
        store_needles.extend(token_needles(label, provider, token));
    }
    let log = server
        .log()
        .replace(server.url.trim_start_matches("http://"), "<listen>");
    let log_decoys = ["decoy log address", "decoy log token"];
    expect_only(&src("log", log), &log_needles, &log_decoys);
    expect_only(&src("/metrics", metrics), &log_needles, &[]);
    // Raw file bytes, free pages included: every address ever written would be here.
    expect_only(&files_under(&data), &needles, &["decoy file address"]);
    let kept = ["decoy kept push token"];
    if run == Run::Embedded {
        // redb does not scrub freed pages (nor does `compact`), so removed
        // tokens stay in the file's raw bytes until their pages are reused;
        // everything the store can still read back has none of them.
        let path = data.join("push.redb");
        let store = firmcast::fanout::embedded::EmbeddedPushStore::open(&path).unwrap();
        let mut held = store
            .subscriber_page("Buds", None, 1000)
            .await
            .unwrap()
            .join("\n");
        for (provider, token, _) in &tokens {
            let kind = [ProviderKind::Apns, ProviderKind::Fcm][(*provider == "fcm") as usize];
            held += &format!("{:?}\n", store.get_subscription(kind, token).await.unwrap());
        }
        expect_only(&src("push store", held), &store_needles, &kept);
    }
    let Some(url) = url else { return };
    // A decoy of every Redis type, as text or raw bytes; then the live data,
    // and the append-only file (every write ever made, minus push tokens).
    let mut c = redis_conn(&url).await;
    let mut planted = vec![];
    for (i, cmd) in ["SET", "HSET f", "SADD", "ZADD 0", "RPUSH", "XADD * f"]
        .iter()
        .enumerate()
    {
        let ip = IpAddr::from([127, 0, 0, 91 + i as u8]);
        let value = [ip.to_string().into_bytes(), vec![127, 0, 0, 91 + i as u8]][i % 2].clone();
        let mut args = cmd.split(' ');
        let name = args.next().unwrap();
        let mut cmd = redis::cmd(name);
        cmd.arg(format!("privacy:decoy:{name}"))
            .arg(args.collect::<Vec<_>>());
        let _: redis::Value = cmd.arg(value).query_async(&mut c).await.unwrap();
        planted.push(format!("decoy redis {ip}"));
        needles.extend(ip_needles(planted.last().unwrap(), ip));
    }
    let mut planted: Vec<&str> = planted.iter().map(String::as_str).collect();
    let dir: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut c)
        .await
        .unwrap();
    expect_only(&files_under(Path::new(&dir[1])), &needles, &planted);
    planted.extend(kept);
    let dump = redis_dump(&mut c).await;
    expect_only(&dump, &[needles, store_needles].concat(), &planted);
    // Counts only: a record per client, even a hashed one, would make
    // thousands of keys or fields where a few dozen hold every count.
    let stats = dump.iter().filter(|(key, _)| key.contains("{stats}"));
    let (keys, items) = stats.fold((0, 0), |(k, n), (_, bytes)| {
        (k + 1, n + bytes.split(|b| *b == b'\n').count())
    });
    assert!(
        keys > 0 && items < FLEET / 10,
        "{keys} stats keys holding {items} items after {FLEET} clients"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_personal_or_secret_in_logs_metrics_or_redis() {
    privacy_run(Run::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_personal_or_secret_in_logs_metrics_or_embedded_files() {
    privacy_run(Run::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ipv6_client_address_in_logs_metrics_or_files() {
    privacy_run(Run::Ipv6).await;
}

#[tokio::test]
async fn debug_output_of_key_holders_is_redacted() {
    use figment::providers::Format as _;
    let f = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    support::cli::firmcast(dir.path(), &["keys", "init", "--dir", "keys"]).ok();
    let pem = dir.path().join("keys/timestamp.pem");
    let key = firmcast_signing::PrivateKey::read_pem_file(&pem).unwrap();
    let push = figment::Figment::from(figment::providers::Toml::string(&f.config));
    let fcm_file = f.dir.path().join("fcm.json");
    let account = firmcast::push::fcm::ServiceAccount::from_file(&fcm_file).unwrap();
    let fcm =
        firmcast::push::fcm::FcmProvider::from_settings(&push.extract_inner("push.fcm").unwrap());
    let apns = firmcast::push::apns::ApnsProvider::from_settings(
        &push.extract_inner("push.apns").unwrap(),
    );
    let shown = format!("{key:?} {account:?} {:?} {:?}", fcm.unwrap(), apns.unwrap());
    assert!(shown.contains(key.keyid()), "{shown}");
    let needles = secret_needles(dir.path(), &f, "fct_unused");
    expect_only(&src("Debug", shown), &needles, &[]);
    // The same needles find each key where it is.
    let mut found = BTreeSet::new();
    for file in [pem, f.dir.path().join("apns.p8"), fcm_file] {
        let hay = std::fs::read(file).unwrap();
        found.extend(
            scan(&hay, &needles)
                .into_iter()
                .map(|(k, _)| needles[k].0.clone()),
        );
    }
    assert_eq!(
        found,
        BTreeSet::from(["APNs key", "FCM key", "timestamp key"].map(String::from))
    );
}
