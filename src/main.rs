//! The `firmcast` binary: parse the command line, set up logging, dispatch.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = firmcast::cli::Cli::parse();
    firmcast::telemetry::init(cli.verbose);
    match firmcast::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One line: scripts and release engineers read the reason at once.
            eprintln!("firmcast: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
