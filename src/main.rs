//! The `firmcast` binary: parse the command line, set up logging, dispatch.

use clap::Parser;

// Why mimalloc, and what it costs at start-up: `firmcast::memory`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
