//! `firmcast check`: the reference update client, a thin user of
//! `firmcast-client` (every rule lives there): arguments, the state file,
//! progress on the terminal, and one line for the result.

use super::client::ServerArgs;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use firmcast_client::transport::{Event, Transport};
use firmcast_client::{CheckItem, Client, Outcome, Report, State, Update};
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
    /// Remembers the keyset, the highest release seq seen (so a later check
    /// refuses rollbacks) and the server's last day (created if missing).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Download the update into DIR and verify it (resumes a partial download).
    #[arg(long, value_name = "DIR")]
    download: Option<PathBuf>,
    /// With --download: report the outcome to the server (installed, or
    /// failed with the stage and a code); anonymous.
    #[arg(long, requires = "download")]
    report: bool,
}

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let pem = std::fs::read_to_string(&args.root)
        .with_context(|| format!("cannot read the root key {}", args.root.display()))?;
    let client = Client::new(&args.server.server, &pem)
        .map_err(|e| anyhow!("{e} (--server / --root {})", args.root.display()))?;
    let state = match &args.state {
        Some(path) => load(path)?,
        None => State::default(),
    };
    let transport = Transport::new(client);
    let item = CheckItem {
        product: args.product.clone(),
        version: args.version.clone(),
        channel: Some(args.channel.clone()),
    };
    let outcome = transport.check(&state, vec![item])?;
    if let Some(path) = &args.state {
        save(path, &outcome.state)?;
    }
    let [result] = <[_; 1]>::try_from(outcome.results)
        .map_err(|_| anyhow!("one item was checked; the core answered otherwise"))?;
    let Some(update) = result.outcome? else {
        println!(
            "up to date: {} {} (channel {}, latest seq {})",
            args.product,
            args.version,
            args.channel,
            result.latest_seq.unwrap_or(0)
        );
        return Ok(ExitCode::SUCCESS);
    };
    let line = format!(
        "update available: {} {} (seq {}, sha256 {}, {} bytes{})",
        update.product,
        update.version,
        update.seq,
        update.sha256,
        update.size,
        if update.critical { ", critical" } else { "" }
    );
    let Some(dir) = &args.download else {
        println!("{line}");
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!("{line}");
    let downloaded = download(&transport, &update, dir);
    let outcome = match &downloaded {
        Ok(_) => Some(Outcome::Installed),
        Err(e) => Outcome::for_download_error(e),
    };
    if let (true, Some(outcome)) = (args.report, outcome) {
        if let Err(e) = transport.report(&Report::new(&update, outcome)) {
            eprintln!("warning: the outcome report was not accepted: {e}");
        }
    }
    match downloaded {
        Ok(path) => println!("downloaded and verified: {}", path.display()),
        Err(e) if e.discard_download() => bail!("{e} (the partial download was deleted)"),
        Err(e @ firmcast_client::Error::Interrupted(_)) => {
            bail!("{e}; run the same command again to resume")
        }
        Err(e) => bail!("download failed: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn download(
    transport: &Transport,
    update: &Update,
    dir: &Path,
) -> Result<PathBuf, firmcast_client::Error> {
    let bar = super::progress_bar(update.size, "downloading");
    let part = dir.join(format!("{}-{}.part", update.product, update.version));
    let result = transport.download_to(update, dir, &mut |event| match event {
        Event::Resuming { at, size } => {
            bar.suspend(|| eprintln!("resuming {} at byte {at} of {size}", part.display()))
        }
        Event::Restarted => {
            bar.suspend(|| eprintln!("the server ignored the range; starting over"))
        }
        Event::Progress { have, .. } => bar.set_position(have),
    });
    bar.finish_and_clear();
    result
}

fn load(path: &Path) -> Result<State> {
    match std::fs::read_to_string(path) {
        Ok(text) => State::from_json(&text).map_err(|e| {
            anyhow!(
                "state file {}: {e}; fix or delete it (deleting forgets the rollback protection)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read state file {}", path.display())),
    }
}

fn save(path: &Path, state: &State) -> Result<()> {
    std::fs::create_dir_all(crate::files::parent_dir(path))?;
    crate::files::write_atomic(path, state.to_json().as_bytes())
        .with_context(|| format!("cannot write state file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert!(load(&path).unwrap().seq.is_empty());
        let mut s = State::default();
        s.seq.insert("P".into(), 7);
        s.last_day.insert("P".into(), 20_424);
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), s);
        std::fs::write(&path, b"{").unwrap();
        let err = load(&path).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
