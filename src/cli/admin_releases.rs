//! `firmcast release publish|list|rollout|pause|resume|yank`: the release
//! engineer's side of /v1/admin. Publishing checks the file against the
//! signed manifest before any byte leaves the machine.

use super::client::{AdminArgs, Api};
use anyhow::{bail, Context, Result};
use clap::Args;
use firmcast_signing::release::{ReleaseManifest, RELEASE_TYPE};
use firmcast_signing::Envelope;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The signed release (from `firmcast release sign`).
    #[arg(long)]
    release: PathBuf,
    /// The firmware file the release names; uploaded streaming.
    #[arg(long)]
    file: PathBuf,
    /// Percentage of clients offered the release, 0 to 100 (fractions allowed).
    #[arg(long, default_value = "100", value_parser = parse_percent)]
    rollout: f64,
    /// Create the release paused: visible to admins, offered to nobody yet.
    #[arg(long)]
    paused: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Only this product's releases.
    #[arg(long)]
    product: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct TargetArgs {
    /// Product, e.g. WH-1000XM5.
    product: String,
    /// Release version, e.g. 2.2.0.
    version: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct RolloutArgs {
    /// Product, e.g. WH-1000XM5.
    product: String,
    /// Release version, e.g. 2.2.0.
    version: String,
    /// New percentage, 0 to 100 (fractions such as 0.5 allowed).
    #[arg(value_parser = parse_percent)]
    percent: f64,
    #[command(flatten)]
    admin: AdminArgs,
}

/// A release with its rollout state, as /v1/admin/releases shows it.
#[derive(Deserialize, Debug)]
struct ReleaseView {
    product: String,
    version: String,
    #[serde(default)]
    channel: String,
    seq: u64,
    #[serde(default)]
    size: u64,
    rollout: f64,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    yanked: bool,
    #[serde(default)]
    critical: bool,
    #[serde(default)]
    published_at: String,
    #[serde(default)]
    published_by: String,
    #[serde(default)]
    paused_by: Option<String>,
    #[serde(default)]
    ramp: Option<RampView>,
}

#[derive(Deserialize, Debug)]
struct RampView {
    steps: Vec<f64>,
    step: usize,
    next_at: Option<String>,
    done: bool,
}

impl ReleaseView {
    /// "live", "paused", "paused by health" (or by a token name), "yanked".
    fn state(&self) -> String {
        match (self.yanked, self.paused, self.paused_by.as_deref()) {
            (true, _, _) => "yanked".into(),
            (false, true, Some(by)) => format!("paused by {by}"),
            (false, true, _) => "paused".into(),
            _ => "live".into(),
        }
    }

    /// "step 2/4, next 20% at …" while a ramp runs.
    fn ramp(&self) -> String {
        let Some(r) = &self.ramp else {
            return String::new();
        };
        let at = format!("step {}/{}", r.step + 1, r.steps.len());
        match (&r.next_at, r.steps.get(r.step + 1)) {
            (_, _) if r.done => format!("{at}, done"),
            (Some(next), Some(p)) => format!("{at}, next {} at {next}", percent(*p)),
            _ => format!("{at}, waiting"),
        }
    }

    fn summary(&self) -> String {
        let ramp = self.ramp();
        format!(
            "{} {} (seq {}, {}): rollout {}, {}{}{}{}",
            self.product,
            self.version,
            self.seq,
            self.channel,
            percent(self.rollout),
            self.state(),
            if self.critical { ", critical" } else { "" },
            if ramp.is_empty() { "" } else { ", ramp " },
            ramp
        )
    }
}

#[derive(Deserialize)]
struct ReleaseList {
    releases: Vec<ReleaseView>,
}

#[derive(Deserialize)]
struct Uploaded {
    sha256: String,
    size: u64,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage between 0 and 100")),
    }
}

fn percent(p: f64) -> String {
    format!("{p}%")
}

/// The upload may take long, but not forever: allow 64 KiB/s at worst.
fn upload_timeout(size: u64) -> Duration {
    Duration::from_secs(120 + size / (64 << 10))
}

pub fn publish(args: PublishArgs) -> Result<ExitCode> {
    let api = Api::admin(&args.admin)?;
    let raw = std::fs::read(&args.release)
        .with_context(|| format!("cannot read {}", args.release.display()))?;
    // Sent as the file holds it, so the server verifies exactly what was signed.
    let release: serde_json::Value = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is not JSON", args.release.display()))?;
    let env = Envelope::parse(&raw)
        .with_context(|| format!("{} is not a signed release", args.release.display()))?;
    if env.payload_type != RELEASE_TYPE {
        bail!(
            "{} is a {}, not a release",
            args.release.display(),
            env.payload_type
        );
    }
    let manifest = ReleaseManifest::parse(&env.payload)
        .with_context(|| format!("{}", args.release.display()))?;
    let want = &manifest.artifact;

    let (sha256, size) = super::hash_file(&args.file)?;
    if sha256 != want.sha256 || size != want.size {
        bail!(
            "{} does not match {}: the file has sha256 {sha256} and {size} bytes, the release names {} and {} bytes; nothing was uploaded",
            args.file.display(),
            args.release.display(),
            want.sha256,
            want.size
        );
    }

    let version = manifest.version.to_string();
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let bar = super::progress_bar(size, "uploading");
    let body = reqwest::blocking::Body::sized(bar.wrap_read(file), size);
    let url = api.url(&["v1", "admin", "artifacts", &manifest.product, &version]);
    let req = api
        .request(Method::PUT, url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .timeout(upload_timeout(size))
        .body(body);
    let uploaded: Result<Uploaded> = api.send_json(req, "upload answer");
    bar.finish_and_clear();
    let uploaded = uploaded.context("upload failed")?;
    if uploaded.sha256 != want.sha256 || uploaded.size != want.size {
        bail!(
            "the server stored sha256 {} and {} bytes, not the signed {} and {} bytes (did {} change during the upload?)",
            uploaded.sha256,
            uploaded.size,
            want.sha256,
            want.size,
            args.file.display()
        );
    }

    let req = api
        .request(Method::POST, api.url(&["v1", "admin", "releases"]))
        .json(&json!({"release": release, "rollout": args.rollout, "paused": args.paused}));
    let view: ReleaseView = api
        .send_json(req, "release")
        .with_context(|| format!("uploaded, but publishing {} failed", manifest.product))?;
    println!("published {}, {} bytes", view.summary(), size);
    Ok(ExitCode::SUCCESS)
}

pub fn list(args: ListArgs) -> Result<ExitCode> {
    let api = Api::admin(&args.admin)?;
    let mut url = api.url(&["v1", "admin", "releases"]);
    if let Some(p) = &args.product {
        url.query_pairs_mut().append_pair("product", p);
    }
    let req = api.request(Method::GET, url);
    if args.json {
        let v: serde_json::Value = api.send_json(req, "release list")?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list: ReleaseList = api.send_json(req, "release list")?;
    if list.releases.is_empty() {
        println!("no releases");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&list.releases));
    Ok(ExitCode::SUCCESS)
}

fn table(releases: &[ReleaseView]) -> String {
    let header = [
        "PRODUCT",
        "VERSION",
        "CHANNEL",
        "SEQ",
        "ROLLOUT",
        "STATE",
        "RAMP",
        "SIZE",
        "PUBLISHED",
        "BY",
    ]
    .map(str::to_owned);
    let rows = releases.iter().map(|r| {
        let state = if r.critical {
            format!("{},critical", r.state())
        } else {
            r.state()
        };
        [
            r.product.clone(),
            r.version.clone(),
            r.channel.clone(),
            r.seq.to_string(),
            percent(r.rollout),
            state,
            r.ramp(),
            r.size.to_string(),
            r.published_at.clone(),
            r.published_by.clone(),
        ]
    });
    super::columns(&std::iter::once(header).chain(rows).collect::<Vec<_>>())
}

pub(super) fn patch_release(
    target: (&str, &str),
    admin: &AdminArgs,
    body: serde_json::Value,
) -> Result<ExitCode> {
    let (product, version) = target;
    let api = Api::admin(admin)?;
    let url = api.url(&["v1", "admin", "releases", product, version]);
    let view: ReleaseView =
        api.send_json(api.request(Method::PATCH, url).json(&body), "release")?;
    println!("{}", view.summary());
    Ok(ExitCode::SUCCESS)
}

pub fn rollout(a: RolloutArgs) -> Result<ExitCode> {
    patch_release(
        (&a.product, &a.version),
        &a.admin,
        json!({"rollout": a.percent}),
    )
}

pub fn pause(a: TargetArgs) -> Result<ExitCode> {
    patch_release((&a.product, &a.version), &a.admin, json!({"paused": true}))
}

pub fn resume(a: TargetArgs) -> Result<ExitCode> {
    patch_release((&a.product, &a.version), &a.admin, json!({"paused": false}))
}

pub fn yank(a: TargetArgs) -> Result<ExitCode> {
    patch_release((&a.product, &a.version), &a.admin, json!({"yanked": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("0.5"), Ok(0.5));
        assert_eq!(parse_percent("25%"), Ok(25.0));
        for bad in ["-1", "100.1", "NaN", "inf", "ten"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
        assert_eq!(percent(100.0), "100%");
        assert_eq!(percent(0.5), "0.5%");
    }

    #[test]
    fn table_aligns_columns() {
        let v: ReleaseView = serde_json::from_value(json!({
            "product": "WH-1000XM5", "version": "2.2.0", "channel": "stable", "seq": 17,
            "sha256": "ab", "size": 9, "rollout": 12.5, "paused": true, "yanked": false,
            "critical": true, "published_at": "2026-11-29T10:00:00Z", "published_by": "bot",
            "updated_at": "2026-11-29T10:00:00Z"
        }))
        .unwrap();
        let t = table(&[v]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("PRODUCT     VERSION  CHANNEL"), "{t}");
        assert!(lines[1].contains("12.5%    paused,critical"), "{t}");
        assert!(lines[1].ends_with("bot"), "{t}");
    }
}
