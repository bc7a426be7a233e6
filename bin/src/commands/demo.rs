//! `canaryflow demo`: a simulated fleet in a process of its own, an
//! upgrade of it in two waves with live progress, and what to try next.
//!
//! The fleet runs apart from the upgrade so that killing the upgrade
//! (`--crash-after`, Ctrl-C, kill -9) leaves the clusters standing as they
//! were at that instant, as real clusters would be; `--resume` and
//! `--rollback` then act on the same, still running fleet.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use canaryflow_engine::{RunOutcome, Scope, Signal, WorkflowState};
use canaryflow_sim::{Revision, manifests_yaml};
use canaryflow_store::{ListFilter, OpenMode, Status};

use crate::cli::{DemoArgs, Format};
use crate::commands::access::Session;
use crate::commands::sim_process::{SimProcess, is_sim, terminate};
use crate::commands::upgrade::{report, run_with_progress, start_upgrade};
use crate::output::duration_ms;

/// Marks a folder as the demo's, so that a fresh demo may empty it.
const MARKER: &str = "CANARYFLOW-DEMO";
const FLEET_LOG: &str = "fleet.log";
const FLEET_PID: &str = "fleet.pid";
/// How long the fleet may take to come up.
const FLEET_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The demo's files.
struct Demo {
    dir: PathBuf,
    data_dir: PathBuf,
    /// How the hints call the demo (`canaryflow demo`, with `--dir` if given).
    demo_command: String,
    /// How the hints call canaryflow on the demo's data directory.
    command: String,
}

impl Demo {
    fn new(args: &DemoArgs, data_dir: Option<PathBuf>) -> Self {
        let exe = std::env::args().next().unwrap_or_else(|| "canaryflow".into());
        let dir = args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join("canaryflow-demo"));
        let demo_command = match (&args.dir, &data_dir) {
            (None, None) => format!("{exe} demo"),
            (Some(dir), None) => format!("{exe} demo --dir {}", dir.display()),
            (None, Some(data)) => format!("{exe} --data-dir {} demo", data.display()),
            (Some(dir), Some(data)) => format!("{exe} --data-dir {} demo --dir {}", data.display(), dir.display()),
        };
        let data_dir = data_dir.unwrap_or_else(|| dir.join("data"));
        let command = format!("{exe} --data-dir {}", data_dir.display());
        Self { dir, data_dir, demo_command, command }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub async fn run(data_dir: Option<PathBuf>, format: Format, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let demo = Demo::new(args, data_dir);
    if args.stop {
        return stop(&demo);
    }
    if args.resume || args.rollback {
        return again(&demo, format, args).await;
    }
    fresh(&demo, format, args).await
}

/// A new fleet and a new upgrade.
async fn fresh(demo: &Demo, format: Format, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    prepare_dir(demo)?;
    let names = cluster_names(args.clusters);
    println!("Starting a simulated fleet of {} clusters with Istio 1.6.5 (non-revisioned) ...", names.len());
    let sim_args: Vec<String> = [
        "--names",
        &names.join(","),
        "--clusters",
        &names.len().to_string(),
        "--namespaces",
        "4",
        "--deployments",
        "3",
        "--replicas",
        "2",
        "--rollout-delay",
        "1s",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let fleet = SimProcess::start(&demo.dir, FLEET_LOG, &sim_args, FLEET_START_TIMEOUT)?;
    std::fs::write(demo.path(FLEET_PID), fleet.pid().to_string())?;
    write_spec(demo, &names)?;
    println!("  fleet:      pid {} (its own process: killing the upgrade leaves it standing)", fleet.pid());
    println!("  kubeconfig: {}", demo.path("kubeconfig").display());
    println!("  spec:       {}", demo.path("upgrade.yaml").display());
    println!("  event log:  {}", demo.data_dir.display());
    if let Some(seq) = args.crash_after {
        println!("  --crash-after {seq}: this process aborts right after event #{seq} is recorded.");
    }
    println!();
    let started = Instant::now();
    let outcome = start_upgrade(
        &demo.data_dir,
        &demo.path("upgrade.yaml"),
        format,
        args.progress,
        args.crash_after,
        &demo.command,
    )
    .await;
    let (outcome, session) = match outcome {
        Ok(started) => started,
        Err(err) => {
            println!("The fleet is still running: `{} --stop` stops it.", demo.demo_command);
            return Err(err);
        }
    };
    finish(demo, format, &session, &outcome, started, "upgrade").await
}

/// `--resume` or `--rollback`: the interrupted upgrade, on the running fleet.
async fn again(demo: &Demo, format: Format, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        demo.path(MARKER).exists(),
        "{} holds no demo; run `{}` first",
        demo.dir.display(),
        demo.demo_command
    );
    let Some(pid) = fleet_pid(demo) else {
        bail!(
            "the demo's fleet is not running any more (it stops when an upgrade succeeds); `{}` starts a new one",
            demo.demo_command
        )
    };
    // One session throughout: sled lets go of its files only some time
    // after a store is dropped, so it is not reopened in this process.
    let session = Session::open(&demo.data_dir, OpenMode::Existing).await?;
    let store = session.engine.store().clone();
    let filter = ListFilter {
        statuses: vec![Status::Running, Status::Paused, Status::RollingBack, Status::Failed],
        ..ListFilter::default()
    };
    let open = tokio::task::spawn_blocking(move || store.list(&filter)).await??;
    let Some(summary) = open.last() else {
        bail!(
            "the demo's upgrade has ended; nothing to resume or roll back (`{} --stop` stops the fleet)",
            demo.demo_command
        )
    };
    let id = summary.id;
    println!("Fleet pid {pid}; workflow {id} is {}.", summary.status);
    let started = Instant::now();
    let what = if args.rollback {
        let reason = "demo --rollback".to_string();
        session.engine.signal(id, Signal::Rollback { scope: Scope::All, reason, allow_irreversible: false }).await?;
        "rollback"
    } else {
        if summary.status == Status::Paused {
            session.engine.signal(id, Signal::Resume).await?;
        }
        "upgrade"
    };
    let outcome = run_with_progress(&session.engine, id, args.progress).await?;
    finish(demo, format, &session, &outcome, started, what).await
}

/// Prints how it ended and what to try next; stops the fleet after a
/// success or a rollback.
async fn finish(
    demo: &Demo,
    format: Format,
    session: &Session,
    outcome: &RunOutcome,
    started: Instant,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let code = report(outcome, format, what);
    let ended = matches!(outcome.status, Status::Succeeded | Status::RolledBack);
    let state = session.engine.load_state(outcome.id).await?;
    if format == Format::Json {
        if ended {
            stop_fleet(demo)?;
        }
        return Ok(code);
    }
    println!();
    print!("{}", summary(&state, started.elapsed()));
    let (id, cmd, demo_cmd) = (outcome.id, &demo.command, &demo.demo_command);
    if ended {
        stop_fleet(demo)?;
        println!("The simulated fleet is stopped.");
    } else {
        println!("The simulated fleet is still running (`{demo_cmd} --stop` stops it).");
        println!("  finish it:       {demo_cmd} --resume        (or: {cmd} resume {id})");
        println!("  roll it back:    {demo_cmd} --rollback      (or: {cmd} rollback {id})");
    }
    println!();
    println!("Look at what happened:");
    println!("  every event:             {cmd} history {id}");
    println!("  one cluster's events:    {cmd} history {id} --cluster {}", first_cluster(&state));
    println!("  the state at event #40:  {cmd} history {id} --at 40");
    println!("  waves and clusters:      {cmd} status {id}");
    println!("Interrupt it and carry on:");
    println!("  {demo_cmd} --crash-after 40    aborts right after event #40, like kill -9; the fleet stays up");
    println!("  {demo_cmd} --resume            finishes it from where it stopped");
    println!("  {demo_cmd} --rollback          or undoes everything it did, newest first");
    Ok(code)
}

fn first_cluster(state: &WorkflowState) -> String {
    state.group_limits.first().and_then(|limit| limit.groups.first()).cloned().unwrap_or_default()
}

/// Per cluster: its wave, its steps, how long it took.
fn summary(state: &WorkflowState, elapsed: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<12} {:<8} {:>6} {:>9}  STATE", "CLUSTER", "WAVE", "STEPS", "TOOK");
    for limit in &state.group_limits {
        for group in &limit.groups {
            let view = crate::fleet_view::cluster(state, group);
            let steps = state.steps.iter().filter(|step| step.spec.group.as_deref() == Some(group.as_str()));
            let first = steps.clone().filter_map(|step| step.first_started_ms).min();
            let last = steps.filter_map(|step| step.settled_ms).max();
            let took = match (first, last) {
                (Some(first), Some(last)) => duration_ms(last.saturating_sub(first)),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{group:<12} {:<8} {:>6} {took:>9}  {}",
                limit.name,
                format!("{}/{}", view.done, view.total),
                view.state
            );
        }
    }
    let _ = writeln!(out, "{} events; {:.1} s in this run.", state.next_seq, elapsed.as_secs_f64());
    out
}

fn cluster_names(count: u16) -> Vec<String> {
    let mut names = vec!["canary-eu".to_string()];
    match count {
        0..=2 => names.push("prod-eu".into()),
        3 => names.extend(["prod-eu".to_string(), "prod-us".to_string()]),
        n => names.extend((1..n).map(|i| format!("prod-{i}"))),
    }
    names
}

/// Empties the demo's folder for a fresh run (only if it is the demo's),
/// stopping a fleet left from an earlier one.
fn prepare_dir(demo: &Demo) -> anyhow::Result<()> {
    let dir = &demo.dir;
    if dir.exists() {
        let empty = std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?.next().is_none();
        if !empty {
            anyhow::ensure!(
                dir.join(MARKER).exists(),
                "{} is not empty and is not a canaryflow demo folder; give another --dir",
                dir.display()
            );
            stop_fleet(demo)?;
            std::fs::remove_dir_all(dir).with_context(|| format!("empty {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "a canaryflow demo folder: `canaryflow demo` empties it on every run\n")?;
    Ok(())
}

fn write_spec(demo: &Demo, names: &[String]) -> anyhow::Result<()> {
    let revision = Revision::new("1-6-8", "1.6.8").map_err(anyhow::Error::msg)?;
    std::fs::write(demo.path("manifests-1-6-8.yaml"), manifests_yaml(&revision).map_err(anyhow::Error::msg)?)?;
    let clusters: String =
        names.iter().map(|name| format!("    - {{name: {name}, context: {name}, kubeconfig: kubeconfig}}\n")).collect();
    let rest = names[1..].join(", ");
    let spec = format!(
        "# Written by `canaryflow demo`: Istio 1.6.5 (non-revisioned) to revision 1-6-8,
# the canary cluster first, then the others two at a time.
apiVersion: canaryflow.io/v1
kind: Upgrade
metadata:
  name: demo-istio-1-6-8
  labels: {{demo: \"true\"}}
spec:
  from: {{revision: default}}
  to: {{revision: 1-6-8, version: 1.6.8, manifests: manifests-1-6-8.yaml}}
  namespaces: {{selector: istio-injection=enabled}}
  clusters:
{clusters}  waves:
    - {{clusters: [{canary}], soak: 5s}}
    - {{clusters: [{rest}], maxParallel: 2, soak: 3s}}
  onFailure: pause
  timeouts: {{controlPlane: 2m, rollout: 2m, unreachable: 2m}}
",
        canary = names[0],
    );
    std::fs::write(demo.path("upgrade.yaml"), spec)?;
    Ok(())
}

/// The fleet's pid, if it still runs.
fn fleet_pid(demo: &Demo) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(demo.path(FLEET_PID)).ok()?.trim().parse().ok()?;
    is_sim(pid).then_some(pid)
}

fn stop_fleet(demo: &Demo) -> anyhow::Result<()> {
    let Some(pid) = fleet_pid(demo) else { return Ok(()) };
    terminate(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet_pid(demo).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(demo.path(FLEET_PID));
    Ok(())
}

fn stop(demo: &Demo) -> anyhow::Result<ExitCode> {
    match fleet_pid(demo) {
        Some(pid) => {
            stop_fleet(demo)?;
            println!("Stopped the demo's simulated fleet (pid {pid}).");
        }
        None => println!("The demo's simulated fleet is not running."),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_comes_first() {
        assert_eq!(cluster_names(3), ["canary-eu", "prod-eu", "prod-us"]);
        assert_eq!(cluster_names(2), ["canary-eu", "prod-eu"]);
        assert_eq!(cluster_names(5), ["canary-eu", "prod-1", "prod-2", "prod-3", "prod-4"]);
    }
}
