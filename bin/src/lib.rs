//! The `canaryflow` command line: it parses flags, opens the data
//! directory, and calls the engine. It holds no workflow logic of its own.
//!
//! The binary's `main` calls [`main`]; tests build their own binary on it.

mod activities;
mod cli;
mod commands;
mod control;
mod fleet_view;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

pub use crate::cli::Cli;

/// Exit status when a command ran but something needs an operator: a
/// workflow paused or failed.
pub const EXIT_NEEDS_OPERATOR: u8 = 3;

/// Runs the command line with the process's arguments.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    // kube-rs logs every failed request at ERROR; canaryflow reports the
    // ones that matter itself, with what it was doing and whether it retries.
    let default = match verbose {
        0 => "warn,kube_client=off",
        1 => "info,kube_client=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CANARYFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
