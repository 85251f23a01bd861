//! `firmcast keys init|rotate|show`: the offline key ceremony.

use anyhow::{bail, Context, Result};
use chrono::{Duration, Utc};
use clap::{Args, Subcommand};
use firmcast_signing::{Envelope, Keyset, PrivateKey, PublicKey, Role, VerifiedKeyset};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a root key, release keys, a timestamp key and a root-signed keyset.
    ///
    /// Example: firmcast keys init --dir keys --release-keys 3 --threshold 2
    Init {
        /// Directory to create the keys in (created if missing; existing keys are never overwritten).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        opts: RoleOpts,
    },
    /// Sign the next keyset version (renewal, new release or timestamp keys, or a new root).
    ///
    /// The old keyset and any replaced private keys move to DIR/retired-vN/.
    ///
    /// Example: firmcast keys rotate --dir keys --new-release-keys 2 --threshold 2
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        /// Replace the release keys with this many new ones.
        #[arg(long)]
        new_release_keys: Option<usize>,
        /// Release signatures required (defaults to the current threshold).
        #[arg(long)]
        threshold: Option<usize>,
        /// Replace the timestamp key (for example after a server compromise).
        #[arg(long)]
        new_timestamp_key: bool,
        /// Replace the root key; the new keyset is signed by old and new root.
        #[arg(long)]
        new_root: bool,
        /// Days until the new keyset expires.
        #[arg(long, default_value_t = 365)]
        expires_days: i64,
    },
    /// Print a keyset; with --root, verify it against the pinned root key.
    ///
    /// Example: firmcast keys show keys/keyset.json --root keys/root.pub.pem
    Show {
        file: PathBuf,
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct RoleOpts {
    /// How many release keys to create.
    #[arg(long, default_value_t = 1)]
    release_keys: usize,
    /// How many release keys must sign a release (k of n).
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Days until the keyset expires.
    #[arg(long, default_value_t = 365)]
    expires_days: i64,
}

impl KeysCommand {
    /// `keys init --dir DIR` with the defaults, for `serve --dev-keys`.
    pub(crate) fn dev_init(dir: PathBuf) -> Self {
        KeysCommand::Init {
            dir,
            opts: RoleOpts {
                release_keys: 1,
                threshold: 1,
                expires_days: 365,
            },
        }
    }
}

pub fn run(cmd: KeysCommand) -> Result<ExitCode> {
    match cmd {
        KeysCommand::Init { dir, opts } => init(&dir, &opts),
        KeysCommand::Rotate {
            dir,
            new_release_keys,
            threshold,
            new_timestamp_key,
            new_root,
            expires_days,
        } => rotate(
            &dir,
            new_release_keys,
            threshold,
            new_timestamp_key,
            new_root,
            expires_days,
        ),
        KeysCommand::Show { file, root } => show(&file, root.as_deref()),
    }
    .map(|()| ExitCode::SUCCESS)
}

fn check_counts(n: usize, k: usize) -> Result<()> {
    if n == 0 || n > 32 {
        bail!("--release-keys {n}: choose between 1 and 32");
    }
    if k == 0 || k > n {
        bail!("--threshold {k}: must be between 1 and the number of release keys ({n})");
    }
    Ok(())
}

fn new_keys(dir: &Path, prefix: &str, n: usize) -> Result<Vec<PrivateKey>> {
    (1..=n)
        .map(|i| {
            let key = PrivateKey::generate();
            key.write_pem_file(&dir.join(format!("{prefix}-{i}.pem")))?;
            Ok(key)
        })
        .collect()
}

fn init(dir: &Path, opts: &RoleOpts) -> Result<()> {
    check_counts(opts.release_keys, opts.threshold)?;
    if dir.join("keyset.json").exists() {
        bail!(
            "{} already holds a keyset; use `firmcast keys rotate --dir {}` to change it",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = PrivateKey::generate();
    root.write_pem_file(&dir.join("root.pem"))?;
    root.public().write_pem_file(&dir.join("root.pub.pem"))?;
    let release = new_keys(dir, "release", opts.release_keys)?;
    let timestamp = PrivateKey::generate();
    timestamp.write_pem_file(&dir.join("timestamp.pem"))?;

    let keyset = Keyset {
        version: 1,
        expires: expiry(opts.expires_days)?,
        root: None,
        release: Role::new(
            "release",
            opts.threshold,
            release.iter().map(|k| k.public().clone()).collect(),
        )?,
        timestamp: Role::single(timestamp.public().clone()),
    };
    let env = keyset.sign(&[&root])?;
    firmcast_signing::keys::write_new_file(
        &dir.join("keyset.json"),
        env.to_pretty_json().as_bytes(),
    )?;
    eprintln!(
        "created in {}: root.pem (keep offline), root.pub.pem (pin in apps), release-1..{}.pem ({} of {} must sign), timestamp.pem (for the server), keyset.json (version 1)",
        dir.display(),
        opts.release_keys,
        opts.threshold,
        opts.release_keys
    );
    Ok(())
}

fn expiry(days: i64) -> Result<chrono::DateTime<Utc>> {
    if !(1..=3650).contains(&days) {
        bail!("--expires-days {days}: choose between 1 and 3650");
    }
    Ok(Utc::now().with_nanosecond0() + Duration::days(days))
}

trait WholeSeconds {
    fn with_nanosecond0(self) -> Self;
}

impl WholeSeconds for chrono::DateTime<Utc> {
    fn with_nanosecond0(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

pub(crate) fn now_seconds() -> chrono::DateTime<Utc> {
    Utc::now().with_nanosecond0()
}

fn read_envelope(path: &Path) -> Result<Envelope> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Envelope::parse(&bytes).with_context(|| format!("{} is not a signed document", path.display()))
}

fn rotate(
    dir: &Path,
    new_release_keys: Option<usize>,
    threshold: Option<usize>,
    new_timestamp_key: bool,
    new_root: bool,
    expires_days: i64,
) -> Result<()> {
    let keyset_path = dir.join("keyset.json");
    let root = PrivateKey::read_pem_file(&dir.join("root.pem"))?;
    let current_env = read_envelope(&keyset_path)?;
    // The current keyset must verify under our root (expiry aside: renewing an
    // expired keyset is exactly what rotate is for).
    let current = current_env
        .verify(
            firmcast_signing::keyset::KEYSET_TYPE,
            "root",
            &[root.public().clone()],
            1,
        )
        .and_then(Keyset::parse)
        .with_context(|| {
            format!(
                "{} is not signed by {}",
                keyset_path.display(),
                dir.join("root.pem").display()
            )
        })?;

    let old_version = current.version;
    let retired = dir.join(format!("retired-v{old_version}"));
    std::fs::create_dir(&retired).with_context(|| {
        format!(
            "cannot create {} (was this version already rotated?)",
            retired.display()
        )
    })?;
    let retire = |name: &str| -> Result<()> {
        std::fs::rename(dir.join(name), retired.join(name))
            .with_context(|| format!("cannot move {} to {}", name, retired.display()))
    };

    let mut next = current.clone();
    next.version = old_version + 1;
    next.expires = expiry(expires_days)?;
    if let Some(n) = new_release_keys {
        let k = threshold.unwrap_or(next.release.threshold.min(n));
        check_counts(n, k)?;
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("release-") && name.ends_with(".pem") {
                retire(&name)?;
            }
        }
        let keys = new_keys(dir, "release", n)?;
        next.release = Role::new(
            "release",
            k,
            keys.iter().map(|k| k.public().clone()).collect(),
        )?;
    } else if let Some(k) = threshold {
        check_counts(next.release.keys.len(), k)?;
        next.release.threshold = k;
    }
    if new_timestamp_key {
        retire("timestamp.pem")?;
        let ts = PrivateKey::generate();
        ts.write_pem_file(&dir.join("timestamp.pem"))?;
        next.timestamp = Role::single(ts.public().clone());
    }
    let env = if new_root {
        let fresh = PrivateKey::generate();
        next.root = Some(Role::single(fresh.public().clone()));
        let env = next.sign(&[&root, &fresh])?;
        retire("root.pem")?;
        retire("root.pub.pem")?;
        fresh.write_pem_file(&dir.join("root.pem"))?;
        fresh.public().write_pem_file(&dir.join("root.pub.pem"))?;
        env
    } else {
        next.sign(&[&root])?
    };
    std::fs::copy(&keyset_path, retired.join("keyset.json"))?;
    // The public chain, without the retired private keys: deploy this
    // directory beside the keyset so clients can walk /v1/keys/{version}.
    let history = dir.join("keysets");
    std::fs::create_dir_all(&history)
        .with_context(|| format!("cannot create {}", history.display()))?;
    std::fs::copy(&keyset_path, history.join(format!("{old_version}.json")))?;
    crate::files::write_atomic(&keyset_path, env.to_pretty_json().as_bytes())?;
    eprintln!(
        "keyset version {} written to {}; version {old_version} kept in {} and {}; \
         deploy keyset.json and keysets/ to the servers{}",
        next.version,
        keyset_path.display(),
        retired.display(),
        history.display(),
        if new_root {
            "; ship the new root.pub.pem in new app builds (installed apps follow the chain)"
        } else {
            ""
        }
    );
    Ok(())
}

fn show(file: &Path, root: Option<&Path>) -> Result<()> {
    let env = read_envelope(file)?;
    let keyset = match root {
        Some(root) => {
            let pinned = Role::single(PublicKey::read_pem_file(root)?);
            let verified = VerifiedKeyset::verify_pinned(env.clone(), &pinned, Utc::now())
                .with_context(|| {
                    format!(
                        "{} does not verify against {}",
                        file.display(),
                        root.display()
                    )
                })?;
            verified.keyset
        }
        None => {
            eprintln!("(signatures not checked: pass --root ROOT.pub.pem to verify)");
            Keyset::parse(&env.payload)
                .with_context(|| format!("{} holds no valid keyset", file.display()))?
        }
    };
    println!("keyset version {}", keyset.version);
    println!("expires        {}", keyset.expires.to_rfc3339());
    if let Some(r) = &keyset.root {
        print_role("root", r);
    }
    print_role("release", &keyset.release);
    print_role("timestamp", &keyset.timestamp);
    println!(
        "signed by      {}",
        env.signatures
            .iter()
            .map(|s| s.keyid.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if root.is_some() {
        println!("verified       yes");
    }
    Ok(())
}

fn print_role(name: &str, role: &Role) {
    println!("{name:<14} {} of {}", role.threshold, role.keys.len());
    for k in &role.keys {
        println!("  {}", k.keyid());
    }
}
