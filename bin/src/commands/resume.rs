//! `canaryflow resume [ID]`

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use canaryflow_engine::{RunOutcome, Signal};
use canaryflow_store::{ListFilter, OpenMode, Status, WorkflowId};
use serde::Serialize;

use crate::cli::{Format, ResumeArgs};
use crate::commands::access::{Delivery, Reader, Session, deliver};
use crate::commands::parse_id;
use crate::commands::upgrade::run_with_progress;
use crate::output::{Table, print_json};

#[derive(Serialize)]
struct Row {
    id: String,
    status: Option<String>,
    reason: Option<String>,
    error: Option<String>,
}

pub async fn run(data_dir: &Path, format: Format, args: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let id = args.id.as_deref().map(parse_id).transpose()?;
    let results: Vec<(WorkflowId, anyhow::Result<RunOutcome>)> = match id {
        None => {
            let session = Session::open(data_dir, OpenMode::Existing).await?;
            let store = session.engine.store().clone();
            let filter = ListFilter { statuses: vec![Status::Running, Status::RollingBack], ..ListFilter::default() };
            let unfinished = tokio::task::spawn_blocking(move || store.list(&filter)).await??;
            if let [only] = unfinished.as_slice() {
                // One upgrade to finish: show it going, as `start` does.
                vec![(only.id, run_with_progress(&session.engine, only.id, args.progress).await)]
            } else {
                session
                    .engine
                    .run_unfinished()
                    .await?
                    .into_iter()
                    .map(|(id, result)| (id, result.map_err(anyhow::Error::from)))
                    .collect()
            }
        }
        Some(id) => {
            let reader = Reader::open(data_dir).await?;
            let status = reader.state(id, None).await?.status();
            let remote = matches!(reader, Reader::Remote(_));
            drop(reader);
            let session = match status {
                Status::Paused => match deliver(data_dir, id, Signal::Resume).await? {
                    Delivery::Local { session, .. } => session,
                    Delivery::Remote { holder_pid, .. } => {
                        let pid = holder_pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
                        println!("Workflow {id} resumed; the canaryflow process running it{pid} goes on.");
                        return Ok(ExitCode::SUCCESS);
                    }
                },
                Status::Running | Status::RollingBack if remote => {
                    println!("Workflow {id} is {status} in another canaryflow process; there is nothing to resume.");
                    return Ok(ExitCode::SUCCESS);
                }
                Status::Running | Status::RollingBack => Session::open(data_dir, OpenMode::Existing).await?,
                other => {
                    println!("Workflow {id} has {}; there is nothing to resume.", past_tense(other));
                    return Ok(ExitCode::SUCCESS);
                }
            };
            vec![(id, run_with_progress(&session.engine, id, args.progress).await)]
        }
    };
    print(&results, format)?;
    let errors = results.iter().any(|(_, result)| result.is_err());
    let stuck = results
        .iter()
        .any(|(_, result)| matches!(result, Ok(outcome) if matches!(outcome.status, Status::Paused | Status::Failed)));
    Ok(if errors {
        ExitCode::FAILURE
    } else if stuck {
        ExitCode::from(crate::EXIT_NEEDS_OPERATOR)
    } else {
        ExitCode::SUCCESS
    })
}

fn past_tense(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed (roll it back, or look at `canaryflow status`)",
        Status::RolledBack => "rolled back",
        Status::Cancelled => "been cancelled",
        Status::Running | Status::RollingBack | Status::Paused => "not ended",
    }
}

/// Up to this many workflows are listed one per line; more are counted.
const LISTED_MAX: usize = 20;

fn print(results: &[(WorkflowId, anyhow::Result<RunOutcome>)], format: Format) -> anyhow::Result<()> {
    let rows: Vec<Row> = results
        .iter()
        .map(|(id, result)| match result {
            Ok(outcome) => Row {
                id: id.to_string(),
                status: Some(outcome.status.to_string()),
                reason: outcome.reason.clone(),
                error: None,
            },
            Err(err) => Row { id: id.to_string(), status: None, reason: None, error: Some(format!("{err:#}")) },
        })
        .collect();
    if format == Format::Json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("No unfinished workflows.");
        return Ok(());
    }
    if rows.len() > LISTED_MAX {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for row in &rows {
            *counts.entry(row.status.clone().unwrap_or_else(|| "error".into())).or_default() += 1;
        }
        let counts: Vec<String> = counts.into_iter().map(|(status, count)| format!("{count} {status}")).collect();
        println!("Resumed {} workflows: {}.", rows.len(), counts.join(", "));
        for row in rows.iter().filter(|row| row.error.is_some()) {
            println!("  {}: {}", row.id, row.error.as_deref().unwrap_or_default());
        }
        return Ok(());
    }
    let mut table = Table::new(&["WORKFLOW", "STATUS", "DETAIL"]);
    for row in rows {
        let detail = row.error.or(row.reason).unwrap_or_default();
        table.row(vec![row.id, row.status.unwrap_or_else(|| "error".into()), detail]);
    }
    table.print();
    Ok(())
}
