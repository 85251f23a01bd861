//! `firmcast admin token`: a new bearer token and the config entry holding
//! only its sha256, so the server never stores a usable token.

use anyhow::Result;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use clap::{Subcommand, ValueEnum};
use rand::RngCore;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Print a new admin token and the [[admin.tokens]] entry for the config.
    ///
    /// Example: firmcast admin token --name release-bot --role publisher
    Token {
        /// Who holds the token; shown in the audit log.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: TokenRole,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TokenRole {
    /// Read releases, stats, jobs and the audit log; change nothing.
    Viewer,
    /// Upload artifacts, publish releases, change rollouts.
    Publisher,
    /// Everything a publisher may, plus notify and cancel jobs.
    Admin,
}

pub fn run(cmd: AdminCommand) -> Result<ExitCode> {
    match cmd {
        AdminCommand::Token { name, role } => {
            firmcast_signing::names::validate_product(&name).map_err(|_| {
                anyhow::anyhow!("--name {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ -")
            })?;
            let mut raw = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            let token = format!("fct_{}", URL_SAFE_NO_PAD.encode(raw));
            let sha = firmcast_signing::digest::sha256_hex(token.as_bytes());
            let role = format!("{role:?}").to_lowercase();
            println!("token: {token}");
            println!();
            println!("# add to the server config; the token itself is shown only once:");
            println!("[[admin.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{sha}\"");
            Ok(ExitCode::SUCCESS)
        }
    }
}
