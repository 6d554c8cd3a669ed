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

fn main() -> ExitCode {
    kernels_on_the_calling_thread();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("castwork: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// candle runs its quantized kernels on a process-wide pool of its own (one thread
/// per core, one caller at a time) and its float kernels on rayon's: with both at
/// one thread each kernel runs on the local backend's compute thread that calls it,
/// so concurrent generations use the cores side by side (docs/ARCHITECTURE.md §14,
/// "Local backend"). An operator's own values are kept.
fn kernels_on_the_calling_thread() {
    for name in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(name).is_none() {
            // SAFETY: called first in `main`, before the runtime or any other thread exists.
            unsafe { std::env::set_var(name, "1") };
        }
    }
}

async fn run() -> ExitCode {
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
