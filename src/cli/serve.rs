//! `firmcast serve`: load settings, make sure keys exist, run until SIGINT or
//! SIGTERM.

use crate::app::Application;
use crate::config::{config_path, Settings};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A config file layered over the defaults (or set FIRMCAST_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// When no keyset exists, generate a throwaway development keyset next to
    /// the configured path. Never for production: its root key sits on this box.
    #[arg(long)]
    dev_keys: bool,
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let settings = Settings::load(config_path(args.config).as_deref())?;
    if args.dev_keys && !settings.signing.keyset.exists() {
        make_dev_keys(&settings)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app = Application::build(settings).await?;
        // The one line scripts and tests wait for.
        println!("firmcast listening on http://{}", app.local_addr());
        app.run_until_stopped(shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn make_dev_keys(settings: &Settings) -> Result<()> {
    let s = &settings.signing;
    let dir = crate::files::parent_dir(&s.keyset);
    let expected = [
        dir.join("keyset.json"),
        dir.join("root.pub.pem"),
        dir.join("timestamp.pem"),
    ];
    if [&s.keyset, &s.root_public_key, &s.timestamp_key]
        .iter()
        .zip(&expected)
        .any(|(a, b)| a.as_path() != b.as_path())
    {
        anyhow::bail!(
            "--dev-keys writes keys/keyset.json, keys/root.pub.pem and keys/timestamp.pem into one directory, but [signing] points elsewhere; run `firmcast keys init --dir {}` instead",
            dir.display()
        );
    }
    crate::cli::run(crate::cli::Cli {
        verbose: false,
        command: crate::cli::Command::Keys(super::keys::KeysCommand::dev_init(dir.clone())),
    })?;
    tracing::warn!(
        dir = %dir.display(),
        "DEVELOPMENT KEYS CREATED: root and release private keys are on this machine. Fine for trying firmcast, never for production."
    );
    eprintln!("\n  *** firmcast: created a DEVELOPMENT keyset in {} (root and release keys included). Do not ship with it. ***\n", dir.display());
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
