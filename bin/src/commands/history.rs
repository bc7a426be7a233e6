//! `canaryflow history ID [--at SEQ]`

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use canaryflow_engine::{Event, EventKind, RecordedEvent, Signal, WorkflowState};
use serde::Serialize;

use crate::cli::{Format, HistoryArgs};
use crate::commands::access::Reader;
use crate::commands::parse_id;
use crate::commands::view::WorkflowView;
use crate::output::{Table, print_json, time};

#[derive(Serialize)]
struct Entry<'a> {
    seq: u64,
    at: String,
    at_ms: u64,
    kind: &'static str,
    step: Option<String>,
    group: Option<String>,
    event: &'a Event,
    #[serde(skip)]
    recorded: &'a RecordedEvent,
}

#[derive(Serialize)]
struct AtSeq<'a> {
    at_seq: u64,
    state: WorkflowView,
    events: Vec<Entry<'a>>,
}

pub async fn run(data_dir: &Path, format: Format, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let id = parse_id(&args.id)?;
    let kinds: Vec<EventKind> = args
        .kind
        .iter()
        .map(|name| {
            EventKind::parse(name)
                .with_context(|| format!("--kind {name:?} is not an event kind (StepFailed, SignalReceived, ...)"))
        })
        .collect::<anyhow::Result<_>>()?;
    let reader = Reader::open(data_dir).await?;
    let history = reader.history(id, args.at).await?;
    // A history read up to `at` that ends before it is the whole history.
    if let Some(at) = args.at
        && let last = history.last().map_or(0, |last| last.seq)
        && last < at
    {
        anyhow::bail!("workflow {id} has events 0 to {last}; --at {at} is past its end");
    }
    let state = WorkflowState::fold(id, &history).context("the history does not fold (run `canaryflow verify`)")?;
    let group_of = |step: &canaryflow_engine::StepId| state.step(step).and_then(|s| s.spec.group.clone());
    let entries: Vec<Entry> = history
        .iter()
        .map(|recorded| Entry {
            seq: recorded.seq,
            at: time(recorded.at_ms),
            at_ms: recorded.at_ms,
            kind: recorded.event.kind().name(),
            step: recorded.event.step().map(ToString::to_string),
            group: recorded.event.step().and_then(group_of),
            event: &recorded.event,
            recorded,
        })
        .filter(|entry| kinds.is_empty() || kinds.iter().any(|kind| kind.name() == entry.kind))
        .filter(|entry| {
            args.step.as_ref().is_none_or(|prefix| entry.step.as_ref().is_some_and(|step| step.starts_with(prefix)))
        })
        .filter(|entry| args.group.as_ref().is_none_or(|group| entry.group.as_ref() == Some(group)))
        .collect();
    if format == Format::Json {
        match args.at {
            Some(at_seq) => print_json(&AtSeq { at_seq, state: WorkflowView::of(&state), events: entries })?,
            None => print_json(&entries)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(at) = args.at {
        println!("As of event #{at}:");
        WorkflowView::of(&state).print(format)?;
        println!();
    }
    let mut table = Table::new(&["SEQ", "TIME", "EVENT", "STEP", "DETAIL"]);
    for entry in &entries {
        table.row(vec![
            entry.seq.to_string(),
            entry.at.clone(),
            entry.kind.to_string(),
            entry.step.clone().unwrap_or_else(|| "-".into()),
            detail(entry.recorded),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

/// One line about an event, for the table.
fn detail(recorded: &RecordedEvent) -> String {
    match &recorded.event {
        Event::WorkflowStarted(e) => {
            format!("{} ({} v{}), {} steps", e.name, e.definition, e.definition_version, e.plan.steps.len())
        }
        Event::StepStarted(e) => {
            format!("attempt {}{}", e.attempt, if e.resumed { ", resumed after a restart" } else { "" })
        }
        Event::StepSucceeded(e) => format!("attempt {}{}", e.attempt, short_output(&e.output)),
        Event::StepFailed(e) => format!(
            "attempt {}: {}{}",
            e.attempt,
            e.error.message,
            if e.error.retryable { "" } else { " (not retryable)" }
        ),
        Event::StepAborted(e) => format!("attempt {}: {}", e.attempt, e.reason),
        Event::StepSkipped(e) => e.reason.clone(),
        Event::StepsAdded(e) => format!("{} steps added", e.steps.len()),
        Event::TimerStarted(e) => format!("fires at {}", time(e.fire_at_ms)),
        Event::TimerFired(_) | Event::Resumed | Event::WorkflowSucceeded | Event::WorkflowRolledBack => String::new(),
        Event::SignalReceived(e) => format!("{} from {}{}", e.signal.name(), e.by, signal_detail(&e.signal)),
        Event::Paused(e) => e.reason.clone(),
        Event::RollbackStarted(e) => format!("{}: {}", e.scope, e.reason),
        Event::CompensationStarted(e) => {
            format!("attempt {}{}", e.attempt, if e.resumed { ", resumed after a restart" } else { "" })
        }
        Event::CompensationSucceeded(e) => format!("attempt {}", e.attempt),
        Event::CompensationFailed(e) => format!("attempt {}: {}", e.attempt, e.error.message),
        Event::CompensationSkipped(e) => e.reason.clone(),
        Event::GroupRolledBack(e) => format!("group {}", e.group),
        Event::WorkflowFailed(e) => e.reason.clone(),
        Event::WorkflowCancelled(e) => e.reason.clone(),
    }
}

fn signal_detail(signal: &Signal) -> String {
    match signal {
        Signal::Approve { gate } => format!(": gate {gate}"),
        Signal::Pause { reason } | Signal::Cancel { reason } => format!(": {reason}"),
        Signal::Rollback { scope, reason, .. } => format!(": {scope}: {reason}"),
        Signal::Skip { step } => format!(": step {step}"),
        Signal::Resume => String::new(),
    }
}

fn short_output(output: &canaryflow_engine::Payload) -> String {
    if output.is_null() {
        return String::new();
    }
    let text = output.as_str();
    let cut: String = text.chars().take(80).collect();
    if cut.len() < text.len() { format!(": {cut}…") } else { format!(": {cut}") }
}
