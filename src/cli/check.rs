//! `firmcast check`: the reference update client. It trusts nothing the
//! server says until it verifies: keyset against the pinned root (or as the
//! next rotation of the one it holds), a fresh timestamp statement, the
//! release signatures, the offer against the signed manifest, the `seq`
//! against rollback, and the downloaded bytes against the signed sha256/size.

use super::client::{Api, ServerArgs};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use firmcast_signing::keyset::KEYSET_TYPE;
use firmcast_signing::names::{parse_version, validate_channel, validate_product};
use firmcast_signing::{
    Envelope, Freshness, Keyset, PublicKey, ReleaseManifest, Role, VerifiedKeyset,
};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The root public key pinned in the app (SPKI PEM).
    #[arg(long, value_name = "ROOT.pub.pem")]
    root: PathBuf,
    /// Product to check, e.g. WH-1000XM5.
    #[arg(long)]
    product: String,
    /// The installed version.
    #[arg(long)]
    version: String,
    #[arg(long, default_value = "stable")]
    channel: String,
    /// Remembers the keyset and the highest release seq seen, so a later
    /// check refuses rollbacks (created if missing).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Download the update into DIR and verify it (resumes a partial download).
    #[arg(long, value_name = "DIR")]
    download: Option<PathBuf>,
}

/// What the client remembers between checks.
#[derive(Serialize, Deserialize, Default)]
struct State {
    /// The last verified keyset envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyset: Option<serde_json::Value>,
    /// The root role that must sign the next keyset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyset_root: Option<RootJson>,
    /// Highest release seq seen per product.
    #[serde(default)]
    seq: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct RootJson {
    threshold: usize,
    /// base64 of the raw public keys.
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct UpdatesAnswer {
    results: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ItemAnswer {
    product: String,
    version: String,
    update: Option<Offer>,
    freshness: serde_json::Value,
}

#[derive(Deserialize)]
struct Offer {
    version: String,
    url: String,
    size: u64,
    sha256: String,
    release: serde_json::Value,
}

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    validate_product(&args.product)?;
    validate_channel(&args.channel)?;
    let installed = parse_version(&args.version)?;
    let pinned = Role::single(PublicKey::read_pem_file(&args.root)?);
    let mut state = match &args.state {
        Some(path) => State::load(path)?,
        None => State::default(),
    };
    let api = Api::public(&args.server)?;
    let now = Utc::now();

    let keyset = super::keychain::trusted_keyset(&api, &pinned, state.held_keyset()?, now)?;

    // One batch call, as an app makes for itself and its paired devices.
    let body = json!({"items": [{"product": args.product, "version": args.version, "channel": args.channel}]});
    let req = api
        .request(Method::POST, api.url(&["v1", "updates"]))
        .json(&body);
    let answer: UpdatesAnswer = api.send_json(req, "update answer")?;
    let [item] = <[serde_json::Value; 1]>::try_from(answer.results).map_err(|r| {
        anyhow!(
            "the server answered {} results for 1 item; refusing",
            r.len()
        )
    })?;
    if let Some(code) = item.get("error").and_then(|c| c.as_str()) {
        let message = item.get("message").and_then(|m| m.as_str()).unwrap_or("");
        bail!(
            "server refused the check ({}): {}",
            super::client::one_line(code, 64),
            super::client::one_line(message, 300)
        );
    }
    let item: ItemAnswer = serde_json::from_value(item)
        .map_err(|e| anyhow!("the server's update answer is malformed ({e})"))?;
    if item.product != args.product || item.version != args.version {
        bail!("the server answered for another product or version; refusing");
    }

    let fresh = verify_freshness(&keyset, &item.freshness, &args.product, &args.channel, now)?;
    let seen = state.seq.get(&args.product).copied().unwrap_or(0);
    let offer = match item.update {
        None => None,
        Some(offer) => Some(verify_offer(
            &keyset, offer, &args, &installed, seen, &fresh,
        )?),
    };

    state.keyset = Some(keyset.envelope.to_value());
    state.keyset_root = Some(RootJson {
        threshold: keyset.root.threshold,
        keys: keyset.root.keys.iter().map(PublicKey::to_base64).collect(),
    });
    if let Some((m, _)) = &offer {
        state.seq.insert(m.product.clone(), seen.max(m.seq));
    }
    if let Some(path) = &args.state {
        state.save(path)?;
    }

    let Some((manifest, url)) = offer else {
        println!(
            "up to date: {} {} (channel {}, latest seq {})",
            args.product, args.version, args.channel, fresh.latest_seq
        );
        return Ok(ExitCode::SUCCESS);
    };
    let line = format!(
        "update available: {} {} (seq {}, sha256 {}, {} bytes{})",
        manifest.product,
        manifest.version,
        manifest.seq,
        manifest.artifact.sha256,
        manifest.artifact.size,
        if manifest.critical { ", critical" } else { "" }
    );
    match &args.download {
        None => println!("{line}"),
        Some(dir) => {
            eprintln!("{line}");
            let path = download(&api, api.resolve(&url)?, dir, &manifest)?;
            println!("downloaded and verified: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_freshness(
    keyset: &VerifiedKeyset,
    raw: &serde_json::Value,
    product: &str,
    channel: &str,
    now: DateTime<Utc>,
) -> Result<Freshness> {
    let env = Envelope::from_value(raw.clone()).context("the freshness statement")?;
    let fresh = match keyset.verify_freshness(&env, now) {
        Ok(f) => f,
        // Frozen answers must not read as "no update".
        Err(e @ firmcast_signing::Error::Expired { .. }) => {
            bail!("stale answer, update status unknown: {e}")
        }
        Err(e) => bail!("the freshness statement does not verify: {e}"),
    };
    if fresh.product != product || fresh.channel != channel {
        bail!(
            "the freshness statement is for {} on {}, not {product} on {channel}; refusing",
            fresh.product,
            fresh.channel
        );
    }
    Ok(fresh)
}

/// The offer's plain fields must equal the signed manifest's; returns the
/// manifest and the download URL.
fn verify_offer(
    keyset: &VerifiedKeyset,
    offer: Offer,
    args: &CheckArgs,
    installed: &semver::Version,
    seen: u64,
    fresh: &Freshness,
) -> Result<(ReleaseManifest, String)> {
    let env = Envelope::from_value(offer.release).context("the offered release")?;
    let m = keyset
        .verify_release(&env)
        .context("the offered release does not verify")?;
    let offered = parse_version(&offer.version).context("the offer")?;
    // Every channel also carries stable releases (the server's rule); a
    // release signed for another channel never reaches this one.
    if m.product != args.product || (m.channel != args.channel && m.channel != "stable") {
        bail!(
            "the offered release is signed for {} on {}, not {} on {}; refusing",
            m.product,
            m.channel,
            args.product,
            args.channel
        );
    }
    if m.version != offered || m.artifact.sha256 != offer.sha256 || m.artifact.size != offer.size {
        bail!(
            "the offer ({} {}, sha256 {}, {} bytes) does not match its signed release ({}, sha256 {}, {} bytes); refusing",
            m.product,
            super::client::one_line(&offer.version, 64),
            super::client::one_line(&offer.sha256, 64),
            offer.size,
            m.version,
            m.artifact.sha256,
            m.artifact.size
        );
    }
    if !m.applies_to(installed) {
        bail!(
            "the offered release {} does not apply to installed version {installed} (not newer, or outside its `from` range); refusing",
            m.version
        );
    }
    if m.seq < seen {
        bail!(
            "rollback: the offered release {} has seq {}, but seq {seen} was already seen for {}; refusing",
            m.version,
            m.seq,
            m.product
        );
    }
    if m.seq > fresh.latest_seq {
        bail!(
            "the offered release has seq {}, above the latest seq {} the freshness statement vouches for; refusing",
            m.seq,
            fresh.latest_seq
        );
    }
    Ok((m, offer.url))
}

impl State {
    fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "state file {} is corrupt; fix or delete it (deleting forgets the rollback protection)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read state file {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        std::fs::create_dir_all(crate::files::parent_dir(path))?;
        crate::files::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write state file {}", path.display()))
    }

    /// The keyset verified on an earlier run; its signatures are checked again
    /// so a damaged file is noticed, its expiry is not (rotation handles that).
    fn held_keyset(&self) -> Result<Option<VerifiedKeyset>> {
        let (Some(raw), Some(root)) = (&self.keyset, &self.keyset_root) else {
            return Ok(None);
        };
        let bad = || "the state file's keyset is damaged; delete the state file to start over";
        let keys = root
            .keys
            .iter()
            .map(|k| PublicKey::from_base64(k))
            .collect::<Result<Vec<_>, _>>()
            .with_context(bad)?;
        let root = Role::new("root", root.threshold, keys).with_context(bad)?;
        let envelope = Envelope::from_value(raw.clone()).with_context(bad)?;
        let payload = envelope
            .verify(KEYSET_TYPE, "root", &root.keys, root.threshold)
            .with_context(bad)?;
        let keyset = Keyset::parse(payload).with_context(bad)?;
        Ok(Some(VerifiedKeyset {
            keyset,
            envelope,
            root,
        }))
    }
}

/// Downloads into DIR/<product>-<version>.part (resuming), verifies, and
/// renames to .bin. A mismatch deletes the part file; an interruption keeps it.
fn download(api: &Api, url: Url, dir: &Path, m: &ReleaseManifest) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!("{}-{}", m.product, m.version);
    let part = dir.join(format!("{name}.part"));
    let done = dir.join(format!("{name}.bin"));
    let want = &m.artifact;
    if done.exists() {
        if super::hash_file(&done)? == (want.sha256.clone(), want.size) {
            return Ok(done);
        }
        std::fs::remove_file(&done)?;
    }
    let have = match std::fs::metadata(&part) {
        Ok(md) if md.len() <= want.size => md.len(),
        Ok(_) => {
            std::fs::remove_file(&part)?;
            0
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", part.display())),
    };
    if have < want.size {
        fetch(api, url, &part, have, want.size)?;
    }
    let (sha256, size) = super::hash_file(&part)?;
    if sha256 != want.sha256 || size != want.size {
        let _ = std::fs::remove_file(&part);
        bail!(
            "the download does not match the signed release: sha256 {sha256} and {size} bytes, signed {} and {} bytes; deleted {}",
            want.sha256,
            want.size,
            part.display()
        );
    }
    std::fs::rename(&part, &done)
        .with_context(|| format!("cannot rename {} to {}", part.display(), done.display()))?;
    crate::files::sync_dir(dir)?;
    Ok(done)
}

/// Appends bytes `have..size` to `part`. Never accepts more than the signed
/// size: a server streaming endless data is cut off and its bytes deleted.
fn fetch(api: &Api, url: Url, part: &Path, mut have: u64, size: u64) -> Result<()> {
    let mut req = api.request(Method::GET, url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        eprintln!("resuming {} at byte {have} of {size}", part.display());
    }
    let resp = api.send_any(req)?;
    let refuse = |msg: String| -> anyhow::Error {
        let _ = std::fs::remove_file(part);
        anyhow!("{msg}; deleted {}", part.display())
    };
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let range = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(super::client::content_range);
            match range {
                Some((start, _)) if start != have => {
                    return Err(refuse(format!(
                        "the server resumed at byte {start}, not {have}"
                    )))
                }
                Some((_, Some(total))) if total != size => {
                    return Err(refuse(format!(
                        "the server's artifact has {total} bytes, the release signed {size}"
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(refuse(
                        "the server's partial answer has no usable Content-Range".into(),
                    ))
                }
            }
        }
        StatusCode::OK => {
            if have > 0 {
                eprintln!("the server ignored the range; starting over");
            }
            have = 0;
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            return Err(refuse(format!(
                "the server has no bytes from {have} on, but the release signed {size}"
            )))
        }
        s if s.is_client_error() || s.is_server_error() => {
            return Err(api.refusal(resp)).context("download failed")
        }
        s => bail!("unexpected answer {s} to the download"),
    }
    let remaining = size - have;
    if let Some(len) = resp.content_length().filter(|&len| len > remaining) {
        return Err(refuse(format!(
            "the server would send {len} bytes from byte {have}, more than the signed {size} bytes"
        )));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(have > 0)
        .write(true)
        .truncate(have == 0)
        .open(part)
        .with_context(|| format!("cannot write {}", part.display()))?;
    let bar = super::progress_bar(size, "downloading");
    bar.set_position(have);
    // One byte past the signed size is enough to know the server sends too much.
    let copied = copy(&mut bar.wrap_read(resp.take(remaining + 1)), &mut file);
    bar.finish_and_clear();
    file.sync_all()?;
    match copied {
        Ok(n) if n > remaining => Err(refuse(format!(
            "the server sent more than the signed {size} bytes"
        ))),
        Ok(n) if n < remaining => bail!(
            "the download stopped at byte {} of {size}; run the same command again to resume",
            have + n
        ),
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "the download was interrupted at byte {} of {size} ({e}); run the same command again to resume",
            std::fs::metadata(part).map(|m| m.len()).unwrap_or(have)
        ),
    }
}

/// Like `std::io::copy`, but keeps what arrived before a failure on disk.
fn copy(reader: &mut impl Read, file: &mut std::fs::File) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => {
                file.write_all(&buf[..k])?;
                n += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert!(State::load(&path).unwrap().seq.is_empty());
        let mut s = State::default();
        s.seq.insert("P".into(), 7);
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap().seq["P"], 7);
        std::fs::write(&path, b"{").unwrap();
        let err = State::load(&path).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
