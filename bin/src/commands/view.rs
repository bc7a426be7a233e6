//! A workflow's state as people and scripts read it (`status`, `history --at`).

use canaryflow_engine::{Compensating, Forward, Outcome, StepAction, StepState, WorkflowState};
use serde::Serialize;

use crate::cli::Format;
use crate::fleet_view::{self, WaveView};
use crate::output::{Table, duration_ms, print_json, time};

/// One step, flattened.
#[derive(Serialize)]
pub struct StepView {
    pub id: String,
    pub title: String,
    pub group: Option<String>,
    pub state: String,
    pub attempts: u32,
    pub since: Option<String>,
    pub took: Option<String>,
    pub detail: Option<String>,
}

/// Something the workflow waits for.
#[derive(Serialize)]
pub struct Waiting {
    pub what: String,
    pub step: String,
    pub until: Option<String>,
}

/// The whole workflow.
#[derive(Serialize)]
pub struct WorkflowView {
    pub id: String,
    pub name: String,
    pub definition: String,
    pub status: String,
    pub reason: Option<String>,
    pub created: String,
    pub updated: String,
    pub events: u64,
    pub waiting: Vec<Waiting>,
    pub waves: Vec<WaveView>,
    pub steps: Vec<StepView>,
    /// What steps reported an operator must do (pods no restart moves).
    pub needs_operator: Vec<String>,
}

impl WorkflowView {
    pub fn of(state: &WorkflowState) -> Self {
        let reason = match (&state.outcome, &state.paused) {
            (Some(Outcome::Failed { reason } | Outcome::Cancelled { reason }), _) => Some(reason.clone()),
            (None, Some(reason)) => Some(reason.clone()),
            _ => state.rollback.as_ref().map(|rollback| format!("rolling back: {}", rollback.reason)),
        };
        Self {
            id: state.id.to_string(),
            name: state.name.clone(),
            definition: format!("{} v{}", state.definition, state.definition_version),
            status: state.status().to_string(),
            reason,
            created: time(state.created_ms),
            updated: time(state.updated_ms),
            events: state.next_seq,
            waiting: waiting(state),
            waves: fleet_view::waves(state),
            steps: state.steps.iter().map(step_view).collect(),
            needs_operator: needs_operator(state),
        }
    }

    pub fn print(&self, format: Format) -> anyhow::Result<()> {
        if format == Format::Json {
            return print_json(self);
        }
        println!("Workflow:  {} ({})", self.id, self.name);
        println!("Status:    {}{}", self.status, self.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default());
        println!("Started:   {}   last event {} (#{})", self.created, self.updated, self.events.saturating_sub(1));
        for waiting in &self.waiting {
            let until = waiting.until.as_ref().map(|until| format!(" until {until}")).unwrap_or_default();
            println!("Waiting:   {} ({}){until}", waiting.what, waiting.step);
        }
        for item in &self.needs_operator {
            println!("Operator:  {item}");
        }
        if !self.waves.is_empty() {
            println!();
            let mut table = Table::new(&["WAVE", "CLUSTER", "STATE", "STEP", "ATTEMPTS", "SINCE", "DONE", "DETAIL"]);
            for wave in &self.waves {
                let gate = match (&wave.gate, wave.gate_until_ms) {
                    (Some(gate), Some(until)) => format!("gate: {gate} until {}", time(until)),
                    (Some(gate), None) => format!("gate: {gate}"),
                    (None, _) => String::new(),
                };
                table.row(vec![
                    format!("{} (max {} at once)", wave.name, wave.max_parallel),
                    "-".into(),
                    wave.state.into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("{}/{}", wave.done, wave.total),
                    gate,
                ]);
                for cluster in &wave.clusters {
                    let step = cluster.step.clone().map_or_else(
                        || "-".into(),
                        |step| {
                            if cluster.also_running > 0 { format!("{step} +{}", cluster.also_running) } else { step }
                        },
                    );
                    table.row(vec![
                        String::new(),
                        cluster.name.clone(),
                        cluster.state.into(),
                        step,
                        cluster.attempts.to_string(),
                        cluster.since_ms.map_or_else(|| "-".into(), time),
                        format!("{}/{}", cluster.done, cluster.total),
                        cluster.detail.clone().unwrap_or_default(),
                    ]);
                }
            }
            table.print();
        }
        println!();
        let mut table = Table::new(&["STEP", "GROUP", "STATE", "ATTEMPTS", "SINCE", "TOOK", "DETAIL"]);
        for step in &self.steps {
            table.row(vec![
                step.id.clone(),
                step.group.clone().unwrap_or_else(|| "-".into()),
                step.state.clone(),
                step.attempts.to_string(),
                step.since.clone().unwrap_or_else(|| "-".into()),
                step.took.clone().unwrap_or_else(|| "-".into()),
                step.detail.clone().unwrap_or_default(),
            ]);
        }
        table.print();
        Ok(())
    }
}

fn step_view(step: &StepState) -> StepView {
    let forward = match &step.forward {
        Forward::Pending => "pending".to_string(),
        Forward::Running { .. } => match step.spec.action {
            StepAction::Sleep { .. } => "sleeping".into(),
            StepAction::Approval { .. } => "awaiting approval".into(),
            StepAction::Activity { .. } => "running".into(),
        },
        Forward::Retrying { .. } => "retrying".into(),
        Forward::Succeeded => "succeeded".into(),
        Forward::Failed => "failed".into(),
        Forward::Aborted => "aborted".into(),
        Forward::Skipped => "skipped".into(),
    };
    let state = match &step.compensation {
        Compensating::Idle => forward,
        Compensating::Running { .. } => format!("{forward}, undoing"),
        Compensating::Retrying { .. } => format!("{forward}, undo retrying"),
        Compensating::Succeeded => format!("{forward}, undone"),
        Compensating::Failed => format!("{forward}, undo failed"),
        Compensating::Skipped => format!("{forward}, undo skipped"),
    };
    let took = match (&step.forward, step.first_started_ms, step.settled_ms) {
        (Forward::Succeeded, Some(start), Some(end)) => Some(duration_ms(end.saturating_sub(start))),
        _ => None,
    };
    let since = match &step.forward {
        Forward::Running { since_ms, .. } => Some(time(*since_ms)),
        _ => step.first_started_ms.map(time),
    };
    StepView {
        id: step.spec.id.to_string(),
        title: step.spec.title.clone(),
        group: step.spec.group.clone(),
        state,
        attempts: step.attempts,
        since,
        took,
        detail: step.last_error.as_ref().map(|error| error.message.clone()),
    }
}

/// What succeeded steps' outputs list under `needs_operator` (a step that
/// could not move something, and says so rather than wait on it forever).
fn needs_operator(state: &WorkflowState) -> Vec<String> {
    let mut out = Vec::new();
    for step in &state.steps {
        let Some(output) = &step.output else { continue };
        let value = output.to_value();
        for item in value.get("needs_operator").and_then(serde_json::Value::as_array).into_iter().flatten() {
            if let Some(text) = item.as_str() {
                out.push(format!("{} needs replacing by an operator (found by {})", text, step.spec.id));
            }
        }
    }
    out
}

fn waiting(state: &WorkflowState) -> Vec<Waiting> {
    let mut out = Vec::new();
    for step in &state.steps {
        let id = step.spec.id.to_string();
        match (&step.forward, &step.spec.action) {
            (Forward::Running { .. }, StepAction::Sleep { .. }) => {
                out.push(Waiting { what: "timer".into(), step: id, until: step.fire_at_ms.map(time) });
            }
            (Forward::Running { .. }, StepAction::Approval { gate }) => {
                let what = match gate.strip_prefix("wave-") {
                    Some(n) => format!("approval of {gate}: canaryflow approve {} --wave {n}", state.id),
                    None => format!("approval of gate {gate}"),
                };
                out.push(Waiting { what, step: id, until: None });
            }
            (Forward::Retrying { retry_at_ms, .. }, _) => {
                out.push(Waiting { what: "retry".into(), step: id, until: Some(time(*retry_at_ms)) });
            }
            _ => {}
        }
        if let Compensating::Retrying { retry_at_ms, .. } = step.compensation {
            out.push(Waiting {
                what: "compensation retry".into(),
                step: step.spec.id.to_string(),
                until: Some(time(retry_at_ms)),
            });
        }
    }
    out
}
