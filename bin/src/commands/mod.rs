//! One module per subcommand; this one dispatches and holds what they share.

mod access;
mod bench;
mod bench_fleet;
mod bench_sim;
mod demo;
mod history;
mod list;
mod resume;
mod signal;
mod sim;
mod sim_process;
mod status;
mod upgrade;
mod verify;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use canaryflow_engine::{Engine, EngineConfig, Failpoints};
use canaryflow_store::{OpenMode, Store, WorkflowId};

use crate::activities;
use crate::cli::{BenchCommand, Cli, Command};

/// Runs one command; `Ok` carries the exit status.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data_dir_given = cli.data_dir.clone();
    let data_dir = data_dir(cli.data_dir.clone())?;
    let format = cli.output;
    match cli.command {
        Command::Demo(args) => demo::run(data_dir_given, format, &args).await,
        Command::List(args) => list::run(&data_dir, format, &args).await,
        Command::Status(args) => status::run(&data_dir, format, &args).await,
        Command::History(args) => history::run(&data_dir, format, &args).await,
        Command::Verify(args) => verify::run(&data_dir, format, &args).await,
        Command::Reindex => verify::reindex(&data_dir, format).await,
        Command::Resume(args) => resume::run(&data_dir, format, &args).await,
        Command::Sim(args) => sim::run(&data_dir, &args).await,
        Command::Plan(args) => upgrade::plan(format, &args).await,
        Command::Start(args) => upgrade::start(&data_dir, format, &args).await,
        Command::Rollback(args) => upgrade::rollback(&data_dir, format, &args).await,
        Command::Approve(args) => signal::approve(&data_dir, format, &args).await,
        Command::Pause(args) => signal::pause(&data_dir, format, &args).await,
        Command::Cancel(args) => signal::cancel(&data_dir, format, &args).await,
        Command::Bench(BenchCommand::Engine(args)) => bench::engine(&data_dir, format, &args).await,
        Command::Bench(BenchCommand::Sim(args)) => bench_sim::run(format, &args).await,
        Command::Bench(BenchCommand::Fleet(args)) => bench_fleet::run(format, &args).await,
    }
}

/// `--data-dir`, else `$CANARYFLOW_DATA_DIR` (clap reads it), else the
/// user's data directory.
fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home =
                std::env::var_os("HOME").context("no --data-dir given, and neither XDG_DATA_HOME nor HOME is set")?;
            PathBuf::from(home).join(".local").join("share")
        }
    };
    Ok(base.join("canaryflow"))
}

/// Opens the store (blocking work on a blocking thread).
async fn open_store(path: &std::path::Path, mode: OpenMode) -> anyhow::Result<Store> {
    let path = path.to_path_buf();
    let store = tokio::task::spawn_blocking(move || Store::open(&path, mode)).await??;
    Ok(store)
}

/// An engine over the store with every activity this binary knows.
///
/// `$CANARYFLOW_CRASH_AFTER_SEQ=N` makes the process abort right after the
/// event with sequence number N is recorded: a testing aid (crash tests,
/// `demo --crash-after`), never set in normal use.
fn engine(store: Store) -> Engine {
    let crash_after_seq = std::env::var("CANARYFLOW_CRASH_AFTER_SEQ").ok().and_then(|seq| seq.parse().ok());
    engine_crashing_after(store, crash_after_seq)
}

/// [`engine`], aborting the process right after event `crash_after_seq`.
fn engine_crashing_after(store: Store, crash_after_seq: Option<u64>) -> Engine {
    let actor = std::env::var("USER").unwrap_or_else(|_| "canaryflow".into());
    let failpoints = Failpoints { crash_after_seq, crash_before_seq: None };
    Engine::new(store, activities::registry(), EngineConfig { actor, failpoints, ..EngineConfig::default() })
}

fn parse_id(text: &str) -> anyhow::Result<WorkflowId> {
    WorkflowId::parse(text).map_err(anyhow::Error::msg)
}
