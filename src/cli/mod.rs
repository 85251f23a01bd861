//! The `firmcast` command line: one module per command group. Each command
//! returns an exit code or an error whose one-line text says what to do.

mod admin;
mod admin_releases;
mod check;
mod client;
mod keys;
mod notify;
mod release;
mod rollout;
mod serve;
mod state;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "firmcast",
    version,
    about = "Firmware-update and push-notification distribution"
)]
pub struct Cli {
    /// More log output (or set RUST_LOG).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service.
    ///
    /// Example: firmcast serve --config /etc/firmcast/config.toml
    Serve(serve::ServeArgs),
    /// Create, rotate and show signing keys and keysets.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Sign releases offline; publish and manage them on a server.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Verify a signed release and its firmware file offline.
    Verify(verify::VerifyArgs),
    /// Admin tokens for the server's /v1/admin API.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Check a server for an update as an app must: verify everything, optionally download.
    ///
    /// Example: firmcast check --server https://updates.example.com --root root.pub.pem
    ///   --product WH-1000XM5 --version 2.1.0 --state state.json --download downloads
    Check(check::CheckArgs),
    /// Export and import the state store (releases, audit log) as JSON lines.
    ///
    /// Example: firmcast state export --config embedded.toml --out state.jsonl &&
    ///   firmcast state import --config redis.toml --in state.jsonl
    #[command(subcommand)]
    State(state::StateCommand),
    /// Follow or cancel a notification job.
    #[command(subcommand)]
    Job(JobCommand),
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Show a job's state and counters.
    ///
    /// Example: firmcast job show 3f2a... --server https://updates.example.com
    Show(notify::JobArgs),
    /// Stop a job: batches not yet sent are dropped.
    ///
    /// Example: firmcast job cancel 3f2a... --server https://updates.example.com
    Cancel(notify::JobArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Release(cmd) => release::run(cmd),
        Command::Verify(args) => verify::run(args),
        Command::Admin(cmd) => admin::run(cmd),
        Command::Check(args) => check::run(args),
        Command::State(cmd) => state::run(cmd),
        Command::Job(JobCommand::Show(a)) => notify::show(a),
        Command::Job(JobCommand::Cancel(a)) => notify::cancel(a),
    }
}

/// A progress bar for long work, drawn only on a terminal.
pub(crate) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// sha256 and size of a file, read in large blocks with a progress bar.
pub(crate) fn hash_file(path: &std::path::Path) -> anyhow::Result<(String, u64)> {
    use anyhow::Context;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open firmware file {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(len, "hashing");
    let out = firmcast_signing::digest::sha256_reader(bar.wrap_read(file))
        .with_context(|| format!("cannot read firmware file {}", path.display()))?;
    bar.finish_and_clear();
    Ok(out)
}

/// Rows as left-aligned columns two spaces apart, the first row a header.
pub(crate) fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
