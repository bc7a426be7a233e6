//! `canaryflow verify` and `canaryflow reindex`

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use canaryflow_engine::{Error as EngineError, RecordedEvent, WorkflowState, load_state};
use canaryflow_store::{ListFilter, OpenMode, Problem, Store, SummaryFields, VerifyReport, WorkflowId};
use serde::Serialize;

use crate::cli::{Format, VerifyArgs};
use crate::commands::open_store;
use crate::output::{Table, print_json};

#[derive(Serialize)]
struct Report {
    clean: bool,
    workflows: u64,
    records_ok: u64,
    sled_refused: Option<String>,
    problems: Vec<ProblemRow>,
}

#[derive(Serialize)]
struct ProblemRow {
    workflow: Option<String>,
    seq: Option<u64>,
    problem: String,
}

pub async fn run(data_dir: &Path, format: Format, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let path = data_dir.to_path_buf();
    if args.accept_loss {
        let accepted = tokio::task::spawn_blocking({
            let path = path.clone();
            move || Store::accept_damage(&path)
        })
        .await??;
        eprintln!(
            "{}",
            if accepted {
                "Damage accepted: canaryflow will open this log again."
            } else {
                "No damage report to accept."
            }
        );
    }
    let (report, semantic) = tokio::task::spawn_blocking(move || -> anyhow::Result<(VerifyReport, Vec<Problem>)> {
        let (report, store) = Store::verify(&path)?;
        let semantic = match store {
            Some(store) => check_workflows(&store, &report)?,
            None => Vec::new(),
        };
        Ok((report, semantic))
    })
    .await??;
    let problems: Vec<ProblemRow> = report
        .problems
        .iter()
        .chain(&semantic)
        .map(|p| ProblemRow { workflow: p.workflow_id.map(|id| id.to_string()), seq: p.seq, problem: p.what.clone() })
        .collect();
    let clean = report.sled_refused.is_none() && problems.is_empty();
    let out = Report {
        clean,
        workflows: report.workflows,
        records_ok: report.records_ok,
        sled_refused: report.sled_refused,
        problems,
    };
    if format == Format::Json {
        print_json(&out)?;
    } else {
        print_report(&out);
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_report(report: &Report) {
    if report.clean {
        println!(
            "OK: {} workflows, {} records, every checksum and sequence intact, every history folds.",
            report.workflows, report.records_ok
        );
        return;
    }
    if let Some(refused) = &report.sled_refused {
        println!("DAMAGED: {refused}");
    }
    println!(
        "DAMAGED: {} problems ({} workflows, {} intact records)",
        report.problems.len(),
        report.workflows,
        report.records_ok
    );
    let mut table = Table::new(&["WORKFLOW", "SEQ", "PROBLEM"]);
    for problem in &report.problems {
        table.row(vec![
            problem.workflow.clone().unwrap_or_else(|| "-".into()),
            problem.seq.map_or_else(|| "-".into(), |seq| seq.to_string()),
            problem.problem.clone(),
        ]);
    }
    table.print();
}

/// Decodes and folds every workflow the store found intact: a record can
/// pass its checksum and still not decode, or break the state machine.
fn check_workflows(store: &Store, report: &VerifyReport) -> anyhow::Result<Vec<Problem>> {
    let damaged: BTreeSet<WorkflowId> = report.problems.iter().filter_map(|p| p.workflow_id).collect();
    let mut problems = Vec::new();
    for summary in store.list(&ListFilter::default())? {
        if damaged.contains(&summary.id) {
            continue;
        }
        let problem = match load_state(store, summary.id, None) {
            Ok(_) => continue,
            Err(EngineError::Codec { workflow_id, seq, source }) => {
                Problem { workflow_id: Some(workflow_id), seq: Some(seq), what: source.to_string() }
            }
            Err(EngineError::Fold { workflow_id, source }) => {
                Problem { workflow_id: Some(workflow_id), seq: Some(source.seq), what: source.to_string() }
            }
            Err(other) => Problem { workflow_id: Some(summary.id), seq: None, what: other.to_string() },
        };
        problems.push(problem);
    }
    Ok(problems)
}

pub async fn reindex(data_dir: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let store = open_store(data_dir, OpenMode::Existing).await?;
    let rebuilt = tokio::task::spawn_blocking(move || {
        store.rebuild_summaries(|id, records| {
            let mut events = Vec::new();
            for record in records {
                let record = record?;
                let event = canaryflow_engine::decode_record(&record)
                    .map_err(|err| canaryflow_store::Error::Invalid(err.to_string()))?;
                events.push(RecordedEvent { seq: record.seq, at_ms: record.at_ms, event });
            }
            let state = WorkflowState::fold(id, &events)
                .map_err(|err| canaryflow_store::Error::Invalid(format!("workflow {id}: {err}")))?;
            Ok(SummaryFields { name: state.name.clone(), status: state.status(), labels: state.labels.clone() })
        })
    })
    .await??;
    if format == Format::Json {
        print_json(&serde_json::json!({ "reindexed": rebuilt }))?;
    } else {
        println!("Rebuilt the summaries of {rebuilt} workflows from the log.");
    }
    Ok(ExitCode::SUCCESS)
}
