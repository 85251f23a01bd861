//! Scanning bytes (logs, metrics, files, a whole Redis) for anything that
//! must not be there: client addresses in every encoding, secrets, push
//! tokens. Every scan also expects planted decoys, so a scanner that finds
//! nothing cannot pass.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

/// What may not touch a match on either side (`127.0.0.2` is not in `127.0.0.25`).
#[derive(Clone, Copy)]
pub enum Edge {
    Raw,
    Dec,
    Hex,
}

#[derive(Clone)]
pub struct Needle(pub String, pub Vec<u8>, pub Edge);

pub fn needle(label: &str, bytes: impl Into<Vec<u8>>, edge: Edge) -> Needle {
    Needle(label.to_owned(), bytes.into(), edge)
}

/// Every form an address could be kept in: text, raw octets, hex, IPv4-mapped.
pub fn ip_needles(label: &str, ip: IpAddr) -> Vec<Needle> {
    let text = if ip.is_ipv4() { Edge::Dec } else { Edge::Hex };
    let mut v = vec![needle(label, ip.to_string(), text)];
    match ip {
        IpAddr::V4(a) => {
            let (o, m) = (a.octets(), a.to_ipv6_mapped());
            let s = m.segments();
            v.push(needle(label, o, Edge::Raw));
            for h in [
                hex::encode(o),
                hex::encode(m.octets()),
                format!("::ffff:{:x}:{:x}", s[6], s[7]),
            ] {
                v.push(needle(label, h, Edge::Hex));
            }
        }
        // As raw bytes ::1 is 15 zeros and a one: everywhere, so meaningless.
        IpAddr::V6(a) if !a.is_loopback() => v.push(needle(label, a.octets(), Edge::Raw)),
        IpAddr::V6(_) => {}
    }
    v
}

/// A PEM private key: its lines, its DER, and (Ed25519) the seed in every encoding.
pub fn key_needles(label: &str, pem: &str) -> Vec<Needle> {
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body.concat()).unwrap();
    let lines = body.iter().filter(|l| l.len() >= 16);
    let mut v: Vec<Needle> = lines.map(|l| needle(label, *l, Edge::Raw)).collect();
    if der.len() == 48 {
        let seed = &der[16..];
        let forms = [
            STANDARD_NO_PAD.encode(seed),
            URL_SAFE_NO_PAD.encode(seed),
            hex::encode(seed),
        ];
        v.extend(forms.map(|f| needle(label, f, Edge::Raw)));
        v.push(needle(label, seed, Edge::Raw));
    }
    v.push(needle(label, der, Edge::Raw));
    v
}

pub fn edges_ok(hay: &[u8], i: usize, n: &Needle) -> bool {
    let at = |j: Option<usize>| j.and_then(|j| hay.get(j).copied());
    let end = i + n.1.len();
    let (before, after) = (at(i.checked_sub(1)), at(Some(end)));
    let dig = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit());
    let hexy = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_hexdigit() || b == b':');
    match n.2 {
        Edge::Raw => true,
        Edge::Dec => {
            let dotted = after == Some(b'.') && dig(at(Some(end + 1)));
            !dig(before) && before != Some(b'.') && !dig(after) && !dotted
        }
        Edge::Hex => !hexy(before) && !hexy(after),
    }
}

/// (needle, offset) of every match; one pass, indexed by the first two bytes.
pub fn scan(hay: &[u8], needles: &[Needle]) -> Vec<(usize, usize)> {
    let mut by_prefix: HashMap<[u8; 2], Vec<usize>> = HashMap::new();
    let mut first = [false; 256];
    for (k, n) in needles.iter().enumerate() {
        by_prefix.entry([n.1[0], n.1[1]]).or_default().push(k);
        first[n.1[0] as usize] = true;
    }
    let mut out = vec![];
    for i in 0..hay.len().saturating_sub(1) {
        if first[hay[i] as usize] {
            for &k in by_prefix.get(&[hay[i], hay[i + 1]]).into_iter().flatten() {
                if hay[i..].starts_with(&needles[k].1) && edges_ok(hay, i, &needles[k]) {
                    out.push((k, i));
                }
            }
        }
    }
    out
}

/// No needle is in `sources` but those labelled `decoy…`, and exactly the
/// decoys named in `planted` are found.
#[track_caller]
pub fn expect_only(sources: &[(String, Vec<u8>)], needles: &[Needle], planted: &[&str]) {
    let (mut leaks, mut found) = (vec![], BTreeSet::new());
    for (what, hay) in sources {
        for (k, i) in scan(hay, needles) {
            let (label, ctx) = (
                &needles[k].0,
                &hay[i.saturating_sub(80)..hay.len().min(i + 80)],
            );
            if label.starts_with("decoy") {
                found.insert(label.as_str());
            } else {
                leaks.push(format!(
                    "{label} in {what} at {i}: {:?}",
                    String::from_utf8_lossy(ctx)
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "found:\n{}", leaks.join("\n"));
    let planted = BTreeSet::from_iter(planted.iter().copied());
    assert_eq!(found, planted, "every planted decoy is found");
}

pub fn src(what: &str, bytes: impl Into<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    vec![(what.to_owned(), bytes.into())]
}

pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        match e.file_type().unwrap().is_dir() {
            true => out.extend(files_under(&e.path())),
            false => out.extend(src(
                &e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )),
        }
    }
    out
}

pub async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Every key of every type with its whole value, one source per key.
pub async fn redis_dump(c: &mut redis::aio::MultiplexedConnection) -> Vec<(String, Vec<u8>)> {
    fn flat(v: redis::Value, out: &mut Vec<u8>) {
        match v {
            redis::Value::BulkString(b) => out.extend(b),
            redis::Value::SimpleString(s) => out.extend(s.into_bytes()),
            redis::Value::Array(a) | redis::Value::Set(a) => {
                a.into_iter().for_each(|v| flat(v, out))
            }
            redis::Value::Map(m) => m
                .into_iter()
                .flat_map(|(k, v)| [k, v])
                .for_each(|v| flat(v, out)),
            other => out.extend(format!("{other:?}").into_bytes()),
        }
        out.push(b'\n');
    }
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query_async(c).await.unwrap();
    let mut out = vec![];
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(c).await.unwrap();
        let (read, rest): (&[&str], &[&str]) = match kind.as_str() {
            "string" => (&["GET"], &[]),
            "hash" => (&["HGETALL"], &[]),
            "set" => (&["SMEMBERS"], &[]),
            "zset" => (&["ZRANGE"], &["0", "-1", "WITHSCORES"]),
            "list" => (&["LRANGE"], &["0", "-1"]),
            "stream" => (&["XINFO", "STREAM"], &["FULL"]), // entries, groups, consumers, pending
            other => panic!("a new Redis type {other}: teach this dump to read it"),
        };
        let mut bytes = [key.as_slice(), b"\n"].concat();
        let cmd = redis::cmd(read[0])
            .arg(&read[1..])
            .arg(&key)
            .arg(rest)
            .clone();
        flat(cmd.query_async(c).await.unwrap(), &mut bytes);
        out.extend(src(
            &format!("redis {kind} {}", String::from_utf8_lossy(&key)),
            bytes,
        ));
    }
    out
}
