//! `canaryflow bench fleet`: a whole fleet upgrade against a simulated
//! fleet running in a process of its own, timed against its critical-path
//! bound, with this process's peak memory.
//!
//! The bound: in the simulator every rollout takes `--rollout-delay`, and
//! each cluster waits for three of them one after another (the new istiod
//! after install, the gateways, then its namespaces' workloads, all
//! namespaces at once). A wave's clusters run together when the wave holds
//! at most `--max-parallel` of them, so the fastest possible upgrade takes
//! `waves x 3 x rollout delay`; everything else (API calls, the log's
//! fsyncs, polling) is overhead, reported as the ratio to that bound.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use canaryflow_engine::{Engine, EngineConfig, Forward, WorkflowState};
use canaryflow_sim::{Revision, manifests_yaml};
use canaryflow_store::{OpenMode, Status, Store};
use serde::Serialize;

use crate::activities;
use crate::cli::{BenchFleetArgs, FleetShape, Format};
use crate::commands::sim_process::SimProcess;
use crate::output::{parse_duration_ms, print_json};

/// Rollouts each cluster waits for one after another.
const SEQUENTIAL_ROLLOUTS: u64 = 3;

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    fleet: FleetShape,
    waves: usize,
    max_parallel: u32,
    rollout_delay_ms: u64,
    poll_ms: u64,
    fleet_start_seconds: f64,
    plan_seconds: f64,
    steps: usize,
    events: u64,
    upgrade_seconds: f64,
    critical_path_seconds: f64,
    ratio_to_critical_path: f64,
    slowest_cluster_waits_seconds: Vec<f64>,
    engine_peak_rss_megabytes: Option<f64>,
    engine_cpu_seconds: Option<f64>,
    fleet_cpu_seconds: Option<f64>,
    status: String,
}

pub async fn run(format: Format, args: &BenchFleetArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.fleet.clusters >= 1 && args.fleet.clusters <= 1_000,
        "--clusters {} must be 1 to 1000",
        args.fleet.clusters
    );
    anyhow::ensure!(
        args.waves >= 1 && args.waves <= args.fleet.clusters,
        "--waves {} must be 1 to --clusters ({})",
        args.waves,
        args.fleet.clusters
    );
    anyhow::ensure!(args.max_parallel >= 1, "--max-parallel must be at least 1");
    let rollout_delay_ms = parse_duration_ms(&args.rollout_delay).context("--rollout-delay")?;
    let poll_ms = parse_duration_ms(&args.poll).context("--poll")?;
    let work = args
        .keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("canaryflow-bench-fleet-{}", std::process::id())));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let result = measure(args, &work, rollout_delay_ms, poll_ms).await;
    if args.keep.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    let report = result?;
    if format == Format::Json {
        print_json(&report)?;
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.status == "succeeded" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn measure(
    args: &BenchFleetArgs,
    work: &std::path::Path,
    rollout_delay_ms: u64,
    poll_ms: u64,
) -> anyhow::Result<Report> {
    let names: Vec<String> = (0..args.fleet.clusters).map(|i| format!("cluster-{i}")).collect();
    let sim_args: Vec<String> = vec![
        "--clusters".into(),
        args.fleet.clusters.to_string(),
        "--namespaces".into(),
        args.fleet.namespaces.to_string(),
        "--deployments".into(),
        args.fleet.deployments.to_string(),
        "--replicas".into(),
        args.fleet.replicas.to_string(),
        "--rollout-delay".into(),
        args.rollout_delay.clone(),
    ];
    eprintln!(
        "bench: starting {} simulated clusters x {} namespaces x {} deployments in their own process",
        args.fleet.clusters, args.fleet.namespaces, args.fleet.deployments
    );
    let started = Instant::now();
    let fleet = SimProcess::start(work, "fleet.log", &sim_args, Duration::from_secs(300))?;
    let fleet_start_seconds = started.elapsed().as_secs_f64();
    let cpu_before = (cpu_seconds("self"), cpu_seconds(&fleet.pid().to_string()));
    let outcome = upgrade(args, work, &names, poll_ms).await;
    let cpu_after = (cpu_seconds("self"), cpu_seconds(&fleet.pid().to_string()));
    fleet.stop();
    let (plan_seconds, upgrade_seconds, engine_peak_rss_megabytes, state) = outcome?;
    let waves = args.waves;
    let critical_path_ms = waves as u64 * SEQUENTIAL_ROLLOUTS * rollout_delay_ms;
    Ok(Report {
        fleet: args.fleet,
        waves,
        max_parallel: args.max_parallel,
        rollout_delay_ms,
        poll_ms,
        fleet_start_seconds,
        plan_seconds,
        steps: state.steps.len(),
        events: state.next_seq,
        upgrade_seconds,
        critical_path_seconds: critical_path_ms as f64 / 1_000.0,
        ratio_to_critical_path: upgrade_seconds * 1_000.0 / critical_path_ms.max(1) as f64,
        slowest_cluster_waits_seconds: slowest_waits(&state),
        engine_peak_rss_megabytes,
        engine_cpu_seconds: cpu_after.0.zip(cpu_before.0).map(|(after, before)| after - before),
        fleet_cpu_seconds: cpu_after.1.zip(cpu_before.1).map(|(after, before)| after - before),
        status: state.status().to_string(),
    })
}

/// Plans and runs the upgrade; returns the planning time, the run time,
/// the peak RSS so far and the final state.
async fn upgrade(
    args: &BenchFleetArgs,
    work: &std::path::Path,
    names: &[String],
    poll_ms: u64,
) -> anyhow::Result<(f64, f64, Option<f64>, WorkflowState)> {
    let revision = Revision::new("1-6-8", "1.6.8").map_err(anyhow::Error::msg)?;
    std::fs::write(work.join("manifests.yaml"), manifests_yaml(&revision).map_err(anyhow::Error::msg)?)?;
    let mut spec = String::from(
        "apiVersion: canaryflow.io/v1
kind: Upgrade
metadata: {name: bench-fleet}
spec:
  from: {revision: default}
  to: {revision: 1-6-8, version: 1.6.8, manifests: manifests.yaml}
  namespaces: {selector: istio-injection=enabled}
  onFailure: pause
  clusters:
",
    );
    for name in names {
        let _ = writeln!(spec, "    - {{name: {name}, context: {name}, kubeconfig: kubeconfig}}");
    }
    spec.push_str("  waves:\n");
    let per_wave = names.len().div_ceil(args.waves);
    for wave in names.chunks(per_wave) {
        let _ = writeln!(spec, "    - {{clusters: [{}], maxParallel: {}}}", wave.join(", "), args.max_parallel);
    }
    let spec_path = work.join("upgrade.yaml");
    std::fs::write(&spec_path, spec)?;

    let planning = Instant::now();
    let prepared = canaryflow_workflows::prepare(&spec_path).await.map_err(|err| anyhow::anyhow!("{err}"))?;
    let workflow = prepared.workflow().map_err(|err| anyhow::anyhow!("{err}"))?;
    let plan_seconds = planning.elapsed().as_secs_f64();
    eprintln!("bench: planned {} steps in {plan_seconds:.1} s; upgrading", workflow.plan.steps.len());

    let data = work.join("data");
    let store = tokio::task::spawn_blocking(move || Store::open(&data, OpenMode::CreateIfMissing)).await??;
    let registry = activities::registry_polling_every(Duration::from_millis(poll_ms));
    let engine = Engine::new(store, registry, EngineConfig::default());
    let running = Instant::now();
    let id = engine.start(workflow).await?;
    let outcome = engine.run(id).await?;
    let upgrade_seconds = running.elapsed().as_secs_f64();
    if outcome.status != Status::Succeeded {
        eprintln!("bench: the upgrade ended {}: {}", outcome.status, outcome.reason.unwrap_or_default());
    }
    // The peak of the upgrade itself, read before this bench folds the
    // whole log once more for its own report.
    let peak_rss = peak_rss_megabytes();
    Ok((plan_seconds, upgrade_seconds, peak_rss, engine.load_state(id).await?))
}

/// Per wave, the slowest cluster's time in its waiting steps, as measured.
fn slowest_waits(state: &WorkflowState) -> Vec<f64> {
    let took = |id: &str| {
        state.step(&canaryflow_engine::StepId::new(id).ok()?).and_then(|step| {
            match (&step.forward, step.first_started_ms, step.settled_ms) {
                (Forward::Succeeded, Some(start), Some(end)) => Some(end.saturating_sub(start)),
                _ => None,
            }
        })
    };
    state
        .group_limits
        .iter()
        .map(|wave| {
            let slowest_ms = wave
                .groups
                .iter()
                .map(|c| {
                    let moves = state
                        .steps
                        .iter()
                        .filter(|step| step.spec.id.as_str().starts_with(&format!("{c}/move/")))
                        .filter_map(|step| took(step.spec.id.as_str()))
                        .max()
                        .unwrap_or(0);
                    took(&format!("{c}/wait-control-plane")).unwrap_or(0)
                        + took(&format!("{c}/gateways")).unwrap_or(0)
                        + moves
                })
                .max()
                .unwrap_or(0);
            slowest_ms as f64 / 1_000.0
        })
        .collect()
}

/// CPU time (user + system) of process `pid` (or `self`) so far, in
/// seconds, from /proc (clock ticks of 1/100 s, as on every Linux here).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// This process's peak resident memory (VmHWM), in MB.
fn peak_rss_megabytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1_024.0)
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fleet upgrade: {} clusters x {} namespaces x {} deployments ({} replicas), {} waves, maxParallel {}",
        report.fleet.clusters,
        report.fleet.namespaces,
        report.fleet.deployments,
        report.fleet.replicas,
        report.waves,
        report.max_parallel
    );
    let _ = writeln!(
        out,
        "  simulator: every rollout takes {} ms; the upgrade watches rollouts (other waits look every {} ms); fleet started in {:.1} s (own process)",
        report.rollout_delay_ms, report.poll_ms, report.fleet_start_seconds
    );
    let _ =
        writeln!(out, "  planned {} steps in {:.1} s (discovery of every cluster)", report.steps, report.plan_seconds);
    let _ = writeln!(
        out,
        "  upgrade:        {:>7.1} s, {} events, {}",
        report.upgrade_seconds, report.events, report.status
    );
    let _ = writeln!(
        out,
        "  critical path:  {:>7.1} s ({} waves x 3 sequential rollouts x {} ms)",
        report.critical_path_seconds, report.waves, report.rollout_delay_ms
    );
    let _ = writeln!(out, "  ratio:          {:>7.3} (target: at most 1.10)", report.ratio_to_critical_path);
    let waits: Vec<String> = report.slowest_cluster_waits_seconds.iter().map(|s| format!("{s:.1}")).collect();
    let _ = writeln!(out, "  slowest cluster's measured waits per wave (s): {}", waits.join(", "));
    if let (Some(engine), Some(fleet)) = (report.engine_cpu_seconds, report.fleet_cpu_seconds) {
        let _ = writeln!(
            out,
            "  CPU during the upgrade: engine {engine:.1} s, simulated fleet {fleet:.1} s (2 cores shared)"
        );
    }
    if let Some(rss) = report.engine_peak_rss_megabytes {
        let _ = writeln!(
            out,
            "  engine peak RSS (planning and upgrade): {rss:.0} MB (target: under 200 MB; the fleet is another process)"
        );
    }
    out
}
