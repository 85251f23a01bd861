//! `firmcast verify`: the whole offline chain, pinned root -> keyset ->
//! release -> firmware bytes.

use anyhow::{bail, Context, Result};
use clap::Args;
use firmcast_signing::{Envelope, PublicKey, Role, VerifiedKeyset};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
/// Example: firmcast verify --root keys/root.pub.pem --keyset keys/keyset.json --release release.json --file fw.bin
pub struct VerifyArgs {
    /// The pinned root public key (SPKI PEM).
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    keyset: PathBuf,
    #[arg(long)]
    release: PathBuf,
    /// The firmware file the release must describe.
    #[arg(long)]
    file: PathBuf,
}

fn read_envelope(path: &std::path::Path, what: &str) -> Result<Envelope> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    Envelope::parse(&bytes).with_context(|| format!("{what} {}", path.display()))
}

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let root = Role::single(PublicKey::read_pem_file(&args.root)?);
    let keyset = VerifiedKeyset::verify_pinned(
        read_envelope(&args.keyset, "keyset")?,
        &root,
        chrono::Utc::now(),
    )
    .with_context(|| format!("keyset {}", args.keyset.display()))?;
    let manifest = keyset
        .verify_release(&read_envelope(&args.release, "release")?)
        .with_context(|| format!("release {}", args.release.display()))?;
    let (sha256, size) = super::hash_file(&args.file)?;
    if size != manifest.artifact.size {
        bail!(
            "firmware {}: {size} bytes, the release signed {} bytes; do not install it",
            args.file.display(),
            manifest.artifact.size
        );
    }
    if sha256 != manifest.artifact.sha256 {
        bail!(
            "firmware {}: sha256 {sha256} is not the signed {}; do not install it",
            args.file.display(),
            manifest.artifact.sha256
        );
    }
    println!(
        "OK {} {} (seq {}, channel {}, {} bytes, sha256 {}), keyset version {}",
        manifest.product,
        manifest.version,
        manifest.seq,
        manifest.channel,
        size,
        sha256,
        keyset.version()
    );
    Ok(ExitCode::SUCCESS)
}
