//! `firmcast release sign`: offline signing of a release manifest; the other
//! `release` subcommands talk to the server (see `admin_releases` and
//! `rollout`).

use super::admin_releases;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use firmcast_signing::release::{ArtifactRef, ReleaseManifest, RELEASE_TYPE};
use firmcast_signing::{Envelope, PrivateKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Sign a release manifest for a firmware file, or add a signature (k of n).
    ///
    /// Example: firmcast release sign --key keys/release-1.pem --product WH-1000XM5
    ///   --version 2.2.0 --seq 17 --file fw.bin --notes en="Improves call quality." --out release.json
    ///
    /// Second signer: firmcast release sign --key keys/release-2.pem --file fw.bin --add-to release.json
    Sign(SignArgs),
    /// Upload a firmware file and publish its signed release.
    ///
    /// The file is checked against the signed manifest before anything is sent.
    ///
    /// Example: FIRMCAST_TOKEN=fct_... firmcast release publish --server https://updates.example.com
    ///   --release release.json --file fw.bin --rollout 5
    Publish(admin_releases::PublishArgs),
    /// List releases with their rollout state.
    ///
    /// Example: firmcast release list --server https://updates.example.com --product WH-1000XM5
    List(admin_releases::ListArgs),
    /// Change the share of clients a release is offered to.
    ///
    /// Example: firmcast release rollout WH-1000XM5 2.2.0 25 --server https://updates.example.com
    Rollout(admin_releases::RolloutArgs),
    /// Stop offering a release until it is resumed.
    ///
    /// Example: firmcast release pause WH-1000XM5 2.2.0 --server https://updates.example.com
    Pause(admin_releases::TargetArgs),
    /// Offer a paused release again, at its rollout percentage.
    ///
    /// Example: firmcast release resume WH-1000XM5 2.2.0 --server https://updates.example.com
    Resume(admin_releases::TargetArgs),
    /// Withdraw a release for good; clients are offered the next best one.
    ///
    /// Example: firmcast release yank WH-1000XM5 2.2.0 --server https://updates.example.com
    Yank(admin_releases::TargetArgs),
    /// Tell the release's push subscribers an update is available.
    ///
    /// Example: firmcast release notify WH-1000XM5 2.2.0 --wait --server https://updates.example.com
    Notify(super::notify::NotifyArgs),
    /// Adoption per version and each release's install reports against its gate.
    ///
    /// Example: firmcast release stats WH-1000XM5 --days 14 --server https://updates.example.com
    Stats(super::rollout::StatsArgs),
    /// Raise a release's rollout in steps, one step each interval.
    ///
    /// Example: firmcast release ramp WH-1000XM5 2.2.0 --steps 1,5,20,100 --every 24h
    ///   --server https://updates.example.com
    ///
    /// Apple-style phased release: firmcast release ramp WH-1000XM5 2.2.0 --steps phased
    Ramp(super::rollout::RampArgs),
    /// Set the install-failure gate that pauses a release by itself.
    ///
    /// Example: firmcast release health WH-1000XM5 2.2.0 --min-reports 200
    ///   --max-failure-rate 0.02 --server https://updates.example.com
    Health(super::rollout::HealthArgs),
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The release engineer's private key (PKCS#8 PEM).
    #[arg(long)]
    key: PathBuf,
    /// The firmware file; read streaming, so any size works.
    #[arg(long)]
    file: PathBuf,
    #[arg(long, required_unless_present = "add_to")]
    product: Option<String>,
    #[arg(long, required_unless_present = "add_to")]
    version: Option<String>,
    /// Sequence number, above every earlier release of the product.
    #[arg(long, required_unless_present = "add_to")]
    seq: Option<u64>,
    #[arg(long, default_value = "stable")]
    channel: String,
    /// Installed versions that may take this release, e.g. ">=2.0.0, <2.2.0".
    #[arg(long)]
    from: Option<String>,
    /// Apps should install this release without delay.
    #[arg(long)]
    critical: bool,
    /// Release notes per locale: --notes en="Better calls" --notes ja="...".
    #[arg(long = "notes", value_name = "LOCALE=TEXT")]
    notes: Vec<String>,
    /// Where to write the signed release (never overwritten).
    #[arg(long, required_unless_present = "add_to", conflicts_with = "add_to")]
    out: Option<PathBuf>,
    /// Add this key's signature to an existing signed release, in place.
    #[arg(long, conflicts_with_all = ["product", "version", "seq", "from", "critical", "notes"])]
    add_to: Option<PathBuf>,
}

pub fn run(cmd: ReleaseCommand) -> Result<ExitCode> {
    match cmd {
        ReleaseCommand::Sign(args) => sign(args),
        ReleaseCommand::Publish(args) => admin_releases::publish(args),
        ReleaseCommand::List(args) => admin_releases::list(args),
        ReleaseCommand::Rollout(args) => admin_releases::rollout(args),
        ReleaseCommand::Pause(args) => admin_releases::pause(args),
        ReleaseCommand::Resume(args) => admin_releases::resume(args),
        ReleaseCommand::Yank(args) => admin_releases::yank(args),
        ReleaseCommand::Notify(args) => super::notify::notify(args),
        ReleaseCommand::Stats(args) => super::rollout::stats(args),
        ReleaseCommand::Ramp(args) => super::rollout::ramp(args),
        ReleaseCommand::Health(args) => super::rollout::health(args),
    }
}

fn sign(args: SignArgs) -> Result<ExitCode> {
    let key = PrivateKey::read_pem_file(&args.key)?;
    let (sha256, size) = super::hash_file(&args.file)?;
    if let Some(path) = &args.add_to {
        return add_signature(path, &key, &sha256, size, &args.file);
    }
    let notes = parse_notes(&args.notes)?;
    let manifest = ReleaseManifest {
        product: args.product.expect("clap requires --product"),
        version: firmcast_signing::names::parse_version(
            &args.version.expect("clap requires --version"),
        )?,
        channel: args.channel,
        seq: args.seq.expect("clap requires --seq"),
        artifact: ArtifactRef { sha256, size },
        from: args
            .from
            .as_deref()
            .map(|s| {
                semver::VersionReq::parse(s).with_context(|| {
                    format!("--from {s:?} is not a semver requirement such as \">=2.0.0, <2.2.0\"")
                })
            })
            .transpose()?,
        critical: args.critical,
        notes,
        released_at: super::keys::now_seconds(),
    };
    let env = manifest.sign(&key)?;
    let out = args.out.expect("clap requires --out");
    firmcast_signing::keys::write_new_file(&out, env.to_pretty_json().as_bytes())?;
    eprintln!(
        "signed {} {} (seq {}, {}, {} bytes, sha256 {}) with key {} -> {}",
        manifest.product,
        manifest.version,
        manifest.seq,
        manifest.channel,
        size,
        manifest.artifact.sha256,
        short(key.keyid()),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A co-signer checks the bytes they vouch for before adding a signature.
fn add_signature(
    path: &Path,
    key: &PrivateKey,
    sha256: &str,
    size: u64,
    file: &Path,
) -> Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut env = Envelope::parse(&bytes)
        .with_context(|| format!("{} is not a signed release", path.display()))?;
    if env.payload_type != RELEASE_TYPE {
        bail!(
            "{} is a {}, not a release",
            path.display(),
            env.payload_type
        );
    }
    let manifest = ReleaseManifest::parse(&env.payload)?;
    if manifest.artifact.sha256 != sha256 || manifest.artifact.size != size {
        bail!(
            "{} does not match the release: it has sha256 {sha256} and {size} bytes, the release names {} and {} bytes; refusing to sign",
            file.display(),
            manifest.artifact.sha256,
            manifest.artifact.size
        );
    }
    env.add_signature(key)?;
    crate::files::write_atomic(path, env.to_pretty_json().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "added signature by {} to {} ({} {}); it now carries {} signature(s)",
        short(key.keyid()),
        path.display(),
        manifest.product,
        manifest.version,
        env.signatures.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_notes(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut notes = BTreeMap::new();
    for item in raw {
        let Some((locale, text)) = item.split_once('=') else {
            bail!(
                "--notes {item:?} must look like LOCALE=TEXT, e.g. en=\"Improves call quality.\""
            );
        };
        if notes.insert(locale.to_owned(), text.to_owned()).is_some() {
            bail!("--notes gives locale {locale:?} twice");
        }
    }
    Ok(notes)
}

pub(crate) fn short(keyid: &str) -> &str {
    &keyid[..keyid.len().min(16)]
}
