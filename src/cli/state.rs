//! `firmcast state export|import`: move releases and the audit log between
//! state stores (typically from the embedded file to Redis when a deployment
//! grows past one instance) as JSON lines, one record per line:
//!
//! ```text
//! {"kind":"release","product":"WH-1000XM5","version":"2.2.0",...}
//! {"kind":"audit","id":1,"at":"...","actor":"release-bot",...}
//! ```
//!
//! Releases go through the target store's publish rules like any publish,
//! so a duplicate version or stale seq is refused (and reported with its
//! line), never overwritten. Audit entries are appended in id order and get
//! the target's ids (the same ones when the target log starts empty).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::config::{config_path, Settings, StateBackend};
use crate::state::{open_state, AuditEntry, StateError, StateStore, StoredRelease};

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Write every release and audit entry of the configured state store as JSON lines.
    ///
    /// Stop the server first when the store is embedded (the file is locked
    /// while it runs).
    ///
    /// Example: firmcast state export --config embedded.toml --out state.jsonl
    Export {
        /// A config file layered over the defaults (or set FIRMCAST_CONFIG); its [state] is read.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to write (atomically); standard output when absent or `-`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Load an export into the configured state store, e.g. to move from embedded to Redis.
    ///
    /// Refused releases (duplicate version, stale seq) are reported with
    /// their line and the import goes on; the exit status is then 1. A
    /// malformed file imports nothing.
    ///
    /// Example: firmcast state import --config redis.toml --in state.jsonl
    Import {
        /// A config file layered over the defaults (or set FIRMCAST_CONFIG); its [state] is written.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The export to read; standard input when absent or `-`.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Import into a store that already holds data (its releases win;
        /// audit entries are appended after its own).
        #[arg(long)]
        merge: bool,
    },
}

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Record {
    Release(StoredRelease),
    Audit(AuditEntry),
}

/// Audit entries read per round trip while exporting.
const AUDIT_PAGE: usize = 1_000;

pub fn run(cmd: StateCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cmd {
        StateCommand::Export { config, out } => {
            let settings = Settings::load(config_path(config).as_deref())?;
            runtime.block_on(export(&settings, out.as_deref()))
        }
        StateCommand::Import {
            config,
            input,
            merge,
        } => {
            let settings = Settings::load(config_path(config).as_deref())?;
            let text = read_input(input.as_deref())?;
            runtime.block_on(import(&settings, &text, merge))
        }
    }
}

fn is_stdio(path: Option<&Path>) -> bool {
    path.is_none_or(|p| p.as_os_str() == "-")
}

async fn export(settings: &Settings, out: Option<&Path>) -> Result<ExitCode> {
    let path = settings.state_path();
    if settings.state.backend == StateBackend::Embedded && !path.exists() {
        // Opening would create an empty store and export nothing.
        bail!(
            "there is no embedded state store at {}; check [server] data_dir in the config",
            path.display()
        );
    }
    let store = open_state(settings).await?;
    let releases = store
        .list_releases(None)
        .await
        .context("cannot read the releases")?;
    let audit = read_all_audit(&*store).await?;

    let mut text = String::new();
    for record in releases
        .iter()
        .cloned()
        .map(Record::Release)
        .chain(audit.iter().cloned().map(Record::Audit))
    {
        text.push_str(&serde_json::to_string(&record).context("cannot encode a record")?);
        text.push('\n');
    }
    if is_stdio(out) {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write the export to standard output")?;
    } else if let Some(path) = out {
        crate::files::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write the export to {}", path.display()))?;
    }
    eprintln!(
        "exported {} releases and {} audit entries from the {} state store",
        releases.len(),
        audit.len(),
        store.backend()
    );
    Ok(ExitCode::SUCCESS)
}

/// The whole audit log, oldest first.
async fn read_all_audit(store: &dyn StateStore) -> Result<Vec<AuditEntry>> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_audit(before, AUDIT_PAGE)
            .await
            .context("cannot read the audit log")?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        let full = page.len() == AUDIT_PAGE;
        all.extend(page);
        if !full {
            break;
        }
    }
    all.reverse();
    Ok(all)
}

fn read_input(input: Option<&Path>) -> Result<String> {
    let mut text = String::new();
    if is_stdio(input) {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the export from standard input")?;
    } else if let Some(path) = input {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the export {}", path.display()))?;
    }
    Ok(text)
}

/// Parses every line, or lists every bad one (by line number).
/// Records with the line (1-based) they came from.
type Lines<T> = Vec<(usize, T)>;

fn parse(text: &str) -> Result<(Lines<StoredRelease>, Lines<AuditEntry>)> {
    let (mut releases, mut audit, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(Record::Release(r)) => match check_release(&r) {
                Ok(()) if !seen.insert((r.product.clone(), r.version.clone())) => bad.push(format!(
                    "line {n}: {} {} appears twice in the file",
                    r.product, r.version
                )),
                Ok(()) => releases.push((n, r)),
                Err(e) => bad.push(format!("line {n}: {e}")),
            },
            Ok(Record::Audit(a)) => audit.push((n, a)),
            Err(e) => bad.push(format!(
                "line {n}: not a release or audit record ({e}); each line must be one JSON object with \"kind\": \"release\" or \"audit\""
            )),
        }
    }
    if !bad.is_empty() {
        const SHOWN: usize = 20;
        let more = bad.len().saturating_sub(SHOWN);
        let mut msg = bad.into_iter().take(SHOWN).collect::<Vec<_>>().join("\n  ");
        if more > 0 {
            msg.push_str(&format!("\n  ... and {more} more"));
        }
        bail!("the export has malformed lines; nothing was imported:\n  {msg}");
    }
    Ok((releases, audit))
}

/// What a publish through the API would have guaranteed.
fn check_release(r: &StoredRelease) -> Result<()> {
    firmcast_signing::names::validate_product(&r.product)
        .map_err(|_| anyhow::anyhow!("product {:?} is not a valid product name", r.product))?;
    match semver::Version::parse(&r.version) {
        Ok(v) if v.to_string() == r.version => {}
        _ => bail!(
            "{} version {:?} is not a canonical semver version",
            r.product,
            r.version
        ),
    }
    if r.rollout_bp > 10_000 {
        bail!(
            "{} {} rollout_bp {} is above 10000 (100 %)",
            r.product,
            r.version,
            r.rollout_bp
        );
    }
    Ok(())
}

async fn import(settings: &Settings, text: &str, merge: bool) -> Result<ExitCode> {
    let (mut releases, mut audit) = parse(text)?;
    let store: Arc<dyn StateStore> = open_state(settings).await?;
    let backend = store.backend();
    if !merge {
        let held = store
            .list_releases(None)
            .await
            .context("cannot read the target's releases")?
            .len();
        let logged = store
            .list_audit(None, 1)
            .await
            .context("cannot read the target's audit log")?
            .len();
        if held > 0 || logged > 0 {
            bail!(
                "the {backend} state store already holds {held} releases{}; import into an empty store, or pass --merge to add to it",
                if logged > 0 { " and an audit log" } else { "" }
            );
        }
    }

    // Per product in seq order, as they were published: the store's
    // stale-seq rule then accepts every one that was valid at the source.
    releases.sort_by(|(_, a), (_, b)| (&a.product, a.seq).cmp(&(&b.product, b.seq)));
    audit.sort_by_key(|(_, a)| a.id);

    let (mut inserted, mut refused) = (0usize, 0usize);
    for (line, r) in &releases {
        match store.insert_release(r).await {
            Ok(()) => inserted += 1,
            Err(e @ (StateError::DuplicateVersion { .. } | StateError::StaleSeq { .. })) => {
                refused += 1;
                eprintln!("line {line}: release {} {} refused: {e}", r.product, r.version);
            }
            Err(e) => bail!(
                "line {line}: cannot import release {} {}: {e} ({inserted} releases were imported before it; re-run with --merge once the store is back)",
                r.product,
                r.version
            ),
        }
    }
    let mut appended = 0usize;
    for (line, entry) in &audit {
        if let Err(e) = store.append_audit(entry).await {
            bail!(
                "line {line}: cannot append audit entry {}: {e} ({inserted} releases and {appended} audit entries were imported before it)",
                entry.id
            );
        }
        appended += 1;
    }
    eprintln!(
        "imported {inserted} releases and {appended} audit entries into the {backend} state store{}",
        if refused > 0 {
            format!("; {refused} releases refused (see above)")
        } else {
            String::new()
        }
    );
    Ok(if refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_named_by_number() {
        let good = r#"{"kind":"audit","id":3,"at":"2026-01-01T00:00:00Z","actor":"a","action":"x","target":"t","detail":null}"#;
        let text = format!("{good}\n\n{{\"kind\":\"nope\"}}\nnot json\n{good}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 3:"), "{err}");
        assert!(err.contains("line 4:"), "{err}");
        assert!(
            !err.contains("line 1:") && !err.contains("line 5:"),
            "{err}"
        );
        assert!(err.contains("nothing was imported"), "{err}");

        let (releases, audit) = parse(&format!("{good}\n{good}\n")).unwrap();
        assert!(releases.is_empty());
        assert_eq!(audit.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn records_round_trip_with_their_kind() {
        let entry = AuditEntry {
            id: 7,
            at: chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
            actor: "ops".into(),
            action: "release.patch".into(),
            target: "P 1.0.0".into(),
            detail: serde_json::json!({"paused": true}),
        };
        let line = serde_json::to_string(&Record::Audit(entry.clone())).unwrap();
        assert!(line.starts_with(r#"{"kind":"audit","#), "{line}");
        match serde_json::from_str::<Record>(&line).unwrap() {
            Record::Audit(back) => assert_eq!(back, entry),
            other => panic!("{other:?}"),
        }
    }
}
