//! The `castwork` binary: parse the command line, load and validate the
//! configuration, set up telemetry, run the command.

use std::process::ExitCode;

use clap::Parser;

use castwork::cli::{Cli, Command};
use castwork::config::Settings;
use castwork::telemetry;

/// mimalloc: a request allocates and frees many small buffers across worker
/// threads; glibc's malloc spent a measurable share of each cached read
/// consolidating its free lists (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Jobs(args)) = cli.command {
        // a client of a running node: this process's configuration plays no part
        return match castwork::cli::jobs::run(args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("castwork: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("castwork: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&settings.log);
    match cli.run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "castwork failed");
            eprintln!("castwork: {err:#}");
            ExitCode::FAILURE
        }
    }
}
