//! `canaryflow bench engine`: the engine's durable throughput, beside the
//! same appends made straight into sled in the same run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use canaryflow_engine::{
    Engine, EngineConfig, FailurePolicy, NewWorkflow, Payload, Plan, RetryPolicy, StepId, StepSpec,
};
use canaryflow_store::{OpenMode, RawBenchConfig, Status, raw_append_bench};
use serde::Serialize;

use crate::activities::{self, BENCH_NOOP};
use crate::cli::{BenchEngineArgs, Format};
use crate::commands::open_store;
use crate::output::print_json;

const WORKFLOWS_MAX: u64 = 1_000_000;
const STEPS_MAX: u32 = 10_000;
const CONCURRENCY_MAX: usize = 10_000;

#[derive(Serialize)]
struct Report {
    workflows: u64,
    steps_per_workflow: u32,
    concurrency: usize,
    engine: EngineFigures,
    raw: Option<RawFigures>,
    /// Engine steps/s divided by the raw run's steps/s equivalent (same appends).
    ratio: Option<f64>,
}

#[derive(Serialize)]
struct EngineFigures {
    elapsed_s: f64,
    workflows_per_s: f64,
    steps_per_s: f64,
    events_per_s: f64,
    events: u64,
    appends: u64,
    fsyncs: u64,
}

#[derive(Serialize)]
struct RawFigures {
    elapsed_s: f64,
    appends_per_s: f64,
    records_per_s: f64,
    steps_equivalent_per_s: f64,
    appends: u64,
    records: u64,
    fsyncs: u64,
    payload_bytes: usize,
}

pub async fn engine(data_dir: &Path, format: Format, args: &BenchEngineArgs) -> anyhow::Result<ExitCode> {
    check_args(args)?;
    let store = open_store(data_dir, OpenMode::CreateIfMissing).await?;
    let config = EngineConfig { workflows_running_max: args.concurrency, ..EngineConfig::default() };
    let engine = Engine::new(store, activities::registry(), config);
    // Like every command that runs workflows, it answers `status`, `list`
    // and signals from other processes while it holds the data directory.
    let _control = crate::control::Server::start(&engine, data_dir);
    let (appends_before, fsyncs_before) = (engine.store().append_count(), engine.store().flush_count());

    let started = Instant::now();
    let ids = start_all(&engine, args).await?;
    eprintln!("bench: {} workflows recorded; running them", ids.len());
    let outcomes = run_all(&engine, &ids, args.concurrency).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let not_succeeded = outcomes.iter().filter(|status| **status != Status::Succeeded).count();
    anyhow::ensure!(not_succeeded == 0, "{not_succeeded} benchmark workflows did not succeed");

    let events = args.workflows * (2 * u64::from(args.steps) + 2);
    let steps = args.workflows * u64::from(args.steps);
    let engine_figures = EngineFigures {
        elapsed_s: elapsed,
        workflows_per_s: args.workflows as f64 / elapsed,
        steps_per_s: steps as f64 / elapsed,
        events_per_s: events as f64 / elapsed,
        events,
        appends: engine.store().append_count() - appends_before,
        fsyncs: engine.store().flush_count() - fsyncs_before,
    };
    let payload_bytes = average_payload_bytes(&engine, ids[0]).await?;
    drop(engine);

    let raw = if args.no_reference { None } else { Some(raw_reference(data_dir, args, payload_bytes).await?) };
    let ratio = raw.as_ref().map(|raw| engine_figures.steps_per_s / raw.steps_equivalent_per_s);
    let report = Report {
        workflows: args.workflows,
        steps_per_workflow: args.steps,
        concurrency: args.concurrency,
        engine: engine_figures,
        raw,
        ratio,
    };
    if format == Format::Json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn check_args(args: &BenchEngineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=WORKFLOWS_MAX).contains(&args.workflows),
        "--workflows {} must be 1 to {WORKFLOWS_MAX}",
        args.workflows
    );
    anyhow::ensure!((1..=STEPS_MAX).contains(&args.steps), "--steps {} must be 1 to {STEPS_MAX}", args.steps);
    anyhow::ensure!(
        (1..=CONCURRENCY_MAX).contains(&args.concurrency),
        "--concurrency {} must be 1 to {CONCURRENCY_MAX}",
        args.concurrency
    );
    Ok(())
}

fn plan(steps: u32) -> anyhow::Result<Plan> {
    let mut specs = Vec::with_capacity(steps as usize);
    for n in 0..steps {
        let mut spec = StepSpec::activity(&format!("s{n}"), BENCH_NOOP, Payload::null())?;
        spec.retry = RetryPolicy::exponential(3, 100, 1_000);
        if n > 0 {
            spec.depends_on = vec![StepId::new(format!("s{}", n - 1))?];
        }
        specs.push(spec);
    }
    Ok(Plan { steps: specs, group_limits: Vec::new(), on_failure: FailurePolicy::Pause })
}

/// Records every workflow first, so that a run killed midway leaves all of
/// them for `canaryflow resume`.
async fn start_all(engine: &Engine, args: &BenchEngineArgs) -> anyhow::Result<Vec<canaryflow_store::WorkflowId>> {
    let plan = Arc::new(plan(args.steps)?);
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.workflows {
        let (engine, plan, limit) = (engine.clone(), plan.clone(), limit.clone());
        tasks.spawn(async move {
            let _slot = limit.acquire_owned().await.expect("never closed");
            let mut new = NewWorkflow::new("bench.engine", &format!("bench-{n}"), (*plan).clone());
            new.labels = BTreeMap::from([("bench".to_string(), "engine".to_string())]);
            engine.start(new).await
        });
    }
    let mut ids = Vec::with_capacity(args.workflows as usize);
    while let Some(joined) = tasks.join_next().await {
        ids.push(joined??);
    }
    ids.sort();
    Ok(ids)
}

async fn run_all(
    engine: &Engine,
    ids: &[canaryflow_store::WorkflowId],
    concurrency: usize,
) -> anyhow::Result<Vec<Status>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let (engine, id, limit) = (engine.clone(), *id, limit.clone());
        tasks.spawn(async move {
            let _slot = limit.acquire_owned().await.expect("never closed");
            engine.run(id).await
        });
    }
    let mut out = Vec::with_capacity(ids.len());
    while let Some(joined) = tasks.join_next().await {
        out.push(joined??.status);
    }
    Ok(out)
}

async fn average_payload_bytes(engine: &Engine, id: canaryflow_store::WorkflowId) -> anyhow::Result<usize> {
    let store = engine.store().clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let records: Vec<_> = store.history(id, 0)?.collect::<Result<_, _>>()?;
        Ok(records.iter().map(|record| record.payload.len()).sum::<usize>() / records.len().max(1))
    })
    .await?
}

/// The engine's append pattern per workflow: the start, the first step's
/// start, then one append per step (its success with the next start, or
/// with the workflow's success).
async fn raw_reference(data_dir: &Path, args: &BenchEngineArgs, payload_bytes: usize) -> anyhow::Result<RawFigures> {
    let mut batch_sizes = vec![1, 1];
    batch_sizes.extend(std::iter::repeat_n(2, args.steps as usize));
    let config =
        RawBenchConfig { workflows: args.workflows, batch_sizes, payload_bytes, concurrency: args.concurrency };
    let raw_dir = raw_dir(data_dir);
    let result = tokio::task::spawn_blocking({
        let raw_dir = raw_dir.clone();
        move || raw_append_bench(&raw_dir, &config)
    })
    .await?;
    let _ = std::fs::remove_dir_all(&raw_dir);
    let report = result?;
    let elapsed = report.elapsed.as_secs_f64();
    Ok(RawFigures {
        elapsed_s: elapsed,
        appends_per_s: report.appends as f64 / elapsed,
        records_per_s: report.records as f64 / elapsed,
        steps_equivalent_per_s: (args.workflows * u64::from(args.steps)) as f64 / elapsed,
        appends: report.appends,
        records: report.records,
        fsyncs: report.flushes,
        payload_bytes,
    })
}

/// A scratch directory beside the data directory: same file system, same disk.
fn raw_dir(data_dir: &Path) -> PathBuf {
    let name = data_dir.file_name().map_or_else(|| "canaryflow".into(), |name| name.to_string_lossy().into_owned());
    data_dir.with_file_name(format!(".{name}.raw-bench-{}", std::process::id()))
}

fn print_report(report: &Report) {
    let engine = &report.engine;
    println!(
        "engine: {} workflows x {} no-op steps, {} at once, durable (group commit)",
        report.workflows, report.steps_per_workflow, report.concurrency
    );
    println!("  elapsed        {:>10.2} s", engine.elapsed_s);
    println!("  workflows/s    {:>10.1}", engine.workflows_per_s);
    println!("  steps/s        {:>10.1}", engine.steps_per_s);
    println!(
        "  events/s       {:>10.1}   ({} events in {} appends, {} fsyncs)",
        engine.events_per_s, engine.events, engine.appends, engine.fsyncs
    );
    if let (Some(raw), Some(ratio)) = (&report.raw, report.ratio) {
        println!(
            "raw sled: the same {} appends ({} records of {} payload bytes), same concurrency, same group commit",
            raw.appends, raw.records, raw.payload_bytes
        );
        println!("  elapsed        {:>10.2} s", raw.elapsed_s);
        println!("  appends/s      {:>10.1}   ({} fsyncs)", raw.appends_per_s, raw.fsyncs);
        println!("  records/s      {:>10.1}", raw.records_per_s);
        println!("  steps/s equiv. {:>10.1}", raw.steps_equivalent_per_s);
        println!("ratio: engine steps/s / raw steps/s = {ratio:.2}");
    }
}
