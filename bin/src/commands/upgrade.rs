//! `canaryflow plan`, `start` and `rollback`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use canaryflow_engine::{Engine, RunOutcome, Scope, Signal};
use canaryflow_store::{OpenMode, Status, WorkflowId};
use canaryflow_workflows::{ClusterDiscovery, ClusterSummary, Prepared, compensation_of, prepare};
use serde::Serialize;

use crate::cli::{Format, PlanArgs, Progress, RollbackArgs, StartArgs};
use crate::commands::access::{Delivery, Session, deliver, wait_remote};
use crate::commands::parse_id;
use crate::control::Reply;
use crate::output::{Table, print_json};
use crate::progress::Printer;

#[derive(Serialize)]
struct PlannedStep {
    id: String,
    does: String,
    cluster: Option<String>,
    after: Vec<String>,
    undo: String,
}

#[derive(Serialize)]
struct PlanView<'a> {
    name: &'a str,
    from: &'a str,
    to: &'a str,
    to_version: &'a str,
    clusters: &'a [ClusterDiscovery],
    summaries: Vec<ClusterSummary>,
    steps: Vec<PlannedStep>,
}

async fn prepared(file: &Path) -> anyhow::Result<Prepared> {
    prepare(file).await.map_err(|err| anyhow::anyhow!("{err}"))
}

pub async fn plan(format: Format, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let prepared = prepared(&args.file).await?;
    let workflow = prepared.workflow().map_err(|err| anyhow::anyhow!("{err}"))?;
    let steps: Vec<PlannedStep> = workflow
        .plan
        .steps
        .iter()
        .map(|step| PlannedStep {
            id: step.id.to_string(),
            does: step.title.clone(),
            cluster: step.group.clone(),
            after: step.depends_on.iter().map(ToString::to_string).collect(),
            undo: compensation_of(step),
        })
        .collect();
    let spec = &prepared.spec;
    let view = PlanView {
        name: &spec.name,
        from: &spec.from.0,
        to: &spec.to.0,
        to_version: &spec.to_version,
        clusters: &prepared.clusters,
        summaries: prepared.summaries(),
        steps,
    };
    if format == Format::Json {
        print_json(&view)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Upgrade {}: revision {} -> {} (Istio {})", view.name, view.from, view.to, view.to_version);
    for (cluster, summary) in prepared.clusters.iter().zip(&view.summaries) {
        println!();
        println!(
            "Cluster {} (context {}, Kubernetes {}, Istio {} now):",
            cluster.cluster.name, cluster.cluster.context, cluster.kubernetes_version, cluster.from_version
        );
        for namespace in &cluster.namespaces {
            let workloads: Vec<String> =
                namespace.workloads.iter().map(|w| format!("{}/{}", w.kind.to_lowercase(), w.name)).collect();
            println!(
                "  moves          namespace {} ({} workloads: {})",
                namespace.name,
                workloads.len(),
                workloads.join(", ")
            );
        }
        print_section(
            "revision",
            &[format!("{} objects of {}: {}", summary.revision.len(), view.to, summary.revision.join(", "))],
        );
        print_section("in place", &summary.in_place);
        print_section("shared", &summary.shared);
        print_section("needs operator", &summary.needs_operator);
        let kinds: Vec<String> = summary
            .kinds
            .iter()
            .map(|k| format!("{} {}", k.api_version, k.kind.rsplit('/').next().unwrap_or(&k.kind)))
            .collect();
        print_section("kinds", &[kinds.join(", ")]);
    }
    println!();
    let mut table = Table::new(&["STEP", "DOES", "UNDO"]);
    for step in &view.steps {
        table.row(vec![step.id.clone(), step.does.clone(), step.undo.clone()]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

/// One section of a cluster's plan: a label, then a line per entry.
fn print_section(label: &str, lines: &[String]) {
    for (index, line) in lines.iter().enumerate() {
        let label = if index == 0 { label } else { "" };
        println!("  {label:<14} {line}");
    }
}

pub async fn start(data_dir: &Path, format: Format, args: &StartArgs) -> anyhow::Result<ExitCode> {
    let (outcome, _session) = start_upgrade(data_dir, &args.file, format, args.progress, None, "canaryflow").await?;
    Ok(report(&outcome, format, "upgrade"))
}

/// Checks the spec and the clusters, records the upgrade, prints its id and
/// runs it in the foreground; `crash_after_seq` aborts the process right
/// after that event (`demo --crash-after`). `command` is how the printed
/// hints call canaryflow. Returns the session, still holding the data
/// directory, for what the caller does next.
pub async fn start_upgrade(
    data_dir: &Path,
    spec: &Path,
    format: Format,
    progress: Progress,
    crash_after_seq: Option<u64>,
    command: &str,
) -> anyhow::Result<(RunOutcome, Session)> {
    // Everything that can be wrong with the spec or the clusters is found
    // before the data directory is touched.
    let mut prepared = prepared(spec).await?;
    prepared.workflow().map_err(|err| anyhow::anyhow!("{err}"))?;
    let session = match crash_after_seq {
        None => Session::open(data_dir, OpenMode::CreateIfMissing).await?,
        Some(seq) => Session::open_crashing_after(data_dir, OpenMode::CreateIfMissing, Some(seq)).await?,
    };
    let engine = &session.engine;
    // An old revision an earlier upgrade here installed is removed as its record says.
    prepared.attach_install_records(|id| {
        let id = parse_id(id).ok()?;
        canaryflow_engine::load_history(engine.store(), id, None).ok()
    });
    let workflow = prepared.workflow().map_err(|err| anyhow::anyhow!("{err}"))?;
    let steps = workflow.plan.steps.len();
    let id = engine.start(workflow).await?;
    if format == Format::Table && progress != Progress::Json {
        println!("Workflow {id} started: {} ({steps} steps)", prepared.spec.name);
        println!("  follow:   {command} status {id}");
        println!("  history:  {command} history {id}");
        println!("  undo:     {command} rollback {id}");
    } else {
        println!("{}", serde_json::json!({"workflow": id.to_string(), "name": prepared.spec.name, "steps": steps}));
    }
    let outcome = run_with_progress(engine, id, progress).await?;
    Ok((outcome, session))
}

pub async fn rollback(data_dir: &Path, format: Format, args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let id = parse_id(&args.id)?;
    let scope = match &args.cluster {
        Some(cluster) => Scope::Group(cluster.clone()),
        None => Scope::All,
    };
    let signal = Signal::Rollback {
        scope: scope.clone(),
        reason: args.reason.clone(),
        allow_irreversible: args.allow_irreversible,
    };
    let session = match deliver(data_dir, id, signal).await.with_context(|| format!("rollback of {id}"))? {
        Delivery::Local { session, .. } => session,
        Delivery::Remote { holder_pid, .. } => {
            return rollback_elsewhere(data_dir, format, id, &scope, holder_pid).await;
        }
    };
    let engine = &session.engine;
    println!("Rolling back {scope} of workflow {id}.");
    let outcome = run_with_progress(engine, id, args.progress).await?;
    if let Scope::Group(cluster) = &scope {
        let state = engine.load_state(id).await?;
        let done = matches!(state.group_rollbacks.get(cluster), Some(canaryflow_engine::GroupRollback::RolledBack));
        println!(
            "{}",
            if done {
                format!("Cluster {cluster} is rolled back.")
            } else {
                format!("Cluster {cluster} is not rolled back: {}", outcome.status)
            }
        );
        return Ok(if done { ExitCode::SUCCESS } else { ExitCode::from(crate::EXIT_NEEDS_OPERATOR) });
    }
    Ok(report(&outcome, format, "rollback"))
}

/// The rollback was handed to the process running the workflow: wait for
/// it there.
async fn rollback_elsewhere(
    data_dir: &Path,
    format: Format,
    id: WorkflowId,
    scope: &Scope,
    holder_pid: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let pid = holder_pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
    println!("Rolling back {scope} of workflow {id} in the canaryflow process running it{pid}; waiting for it.");
    let group = match scope {
        Scope::Group(group) => Some(group.clone()),
        Scope::All => None,
    };
    match wait_remote(data_dir, id, group.clone()).await? {
        Reply::Settled { status, reason, group_rolled_back } => {
            if let Some(cluster) = group {
                println!(
                    "Cluster {cluster} is {}rolled back{}.",
                    if group_rolled_back { "" } else { "not " },
                    if group_rolled_back { String::new() } else { format!(": the workflow is {status}") }
                );
                return Ok(if group_rolled_back {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(crate::EXIT_NEEDS_OPERATOR)
                });
            }
            Ok(report(&RunOutcome { id, status, reason }, format, "rollback"))
        }
        Reply::Refused { error } => Err(anyhow::anyhow!(error)),
        other => Err(anyhow::anyhow!("an unexpected answer on the control socket: {other:?}")),
    }
}

/// Runs the workflow in the foreground with progress.
pub async fn run_with_progress(engine: &Engine, id: WorkflowId, progress: Progress) -> anyhow::Result<RunOutcome> {
    let printer = Printer::start(engine, id, progress).await;
    let outcome = engine.run(id).await;
    printer.finish().await;
    Ok(outcome?)
}

/// Prints the end and picks the exit status: 0 when what was asked is
/// done, 3 when an operator must decide, 1 when it failed.
pub fn report(outcome: &RunOutcome, format: Format, what: &str) -> ExitCode {
    let reason = outcome.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    if format == Format::Json {
        println!(
            "{}",
            serde_json::json!({"workflow": outcome.id.to_string(), "status": outcome.status.as_str(), "reason": outcome.reason})
        );
    } else {
        println!("Workflow {} {}{reason}", outcome.id, outcome.status);
    }
    match (what, outcome.status) {
        ("upgrade", Status::Succeeded) | ("rollback", Status::RolledBack) => ExitCode::SUCCESS,
        (_, Status::Paused | Status::Failed) => {
            println!("It needs a decision: canaryflow resume {0}, or canaryflow rollback {0}", outcome.id);
            ExitCode::from(crate::EXIT_NEEDS_OPERATOR)
        }
        _ => ExitCode::FAILURE,
    }
}
