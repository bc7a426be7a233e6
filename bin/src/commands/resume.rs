//! `canaryflow resume [ID]`

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use canaryflow_engine::{RunOutcome, Signal};
use canaryflow_store::{OpenMode, Status, WorkflowId};
use serde::Serialize;

use crate::cli::{Format, ResumeArgs};
use crate::commands::{engine, open_store, parse_id};
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
    let engine = engine(open_store(data_dir, OpenMode::Existing).await?);
    let results: Vec<(WorkflowId, anyhow::Result<RunOutcome>)> = match id {
        None => engine
            .run_unfinished()
            .await?
            .into_iter()
            .map(|(id, result)| (id, result.map_err(anyhow::Error::from)))
            .collect(),
        Some(id) => {
            let state = engine.load_state(id).await?;
            match state.status() {
                Status::Paused => {
                    engine.signal(id, Signal::Resume).await?;
                }
                Status::Running | Status::RollingBack => {}
                other => {
                    println!("Workflow {id} has {}; there is nothing to resume.", past_tense(other));
                    return Ok(ExitCode::SUCCESS);
                }
            }
            vec![(id, engine.run(id).await.map_err(anyhow::Error::from))]
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
