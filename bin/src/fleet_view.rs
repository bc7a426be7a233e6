//! A fleet upgrade as people follow it: waves, each with its clusters and
//! its gate, derived from the folded state alone. Used by `status` and by
//! the live progress bars. Pure.

use canaryflow_engine::{Compensating, Forward, GroupRollback, StepAction, StepState, WorkflowState};
use serde::Serialize;

/// One cluster (a plan group) of a wave.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// Its name.
    pub name: String,
    /// pending, running, waiting, done, failed, rolling back, rolled back.
    pub state: &'static str,
    /// The step it is at: running, else failed, else the last one done.
    pub step: Option<String>,
    /// Other steps running beside `step`.
    pub also_running: usize,
    /// Attempts of `step`.
    pub attempts: u32,
    /// Since when `step` runs (or ran), Unix ms.
    pub since_ms: Option<u64>,
    /// Its steps done (and not undone).
    pub done: usize,
    /// Its steps.
    pub total: usize,
    /// The last error of `step`, if any.
    pub detail: Option<String>,
}

/// One wave: its clusters and its gate.
#[derive(Debug, Clone, Serialize)]
pub struct WaveView {
    /// Its name (`wave-1`).
    pub name: String,
    /// Clusters in progress at once, at most.
    pub max_parallel: u32,
    /// pending, running, gate, done, stopped.
    pub state: &'static str,
    /// What the gate waits for, while it does.
    pub gate: Option<String>,
    /// When a soak ends, Unix ms.
    pub gate_until_ms: Option<u64>,
    /// Steps done in the wave (clusters and gate).
    pub done: usize,
    /// Steps in the wave.
    pub total: usize,
    /// Its clusters.
    pub clusters: Vec<ClusterView>,
}

/// The waves of `state`'s plan, in order; empty for a plan without waves.
#[must_use]
pub fn waves(state: &WorkflowState) -> Vec<WaveView> {
    state
        .group_limits
        .iter()
        .map(|limit| {
            let clusters: Vec<ClusterView> = limit.groups.iter().map(|group| cluster(state, group)).collect();
            let prefix = format!("{}/", limit.name);
            let gate: Vec<&StepState> = state
                .steps
                .iter()
                .filter(|step| step.spec.group.is_none() && step.spec.id.as_str().starts_with(&prefix))
                .collect();
            let (gate_text, gate_until_ms) = gate_waiting(&gate);
            let done = clusters.iter().map(|c| c.done).sum::<usize>() + gate.iter().filter(|s| s.in_effect()).count();
            let total = clusters.iter().map(|c| c.total).sum::<usize>() + gate.len();
            let wave_state = if done == total {
                "done"
            } else if clusters.iter().any(|c| matches!(c.state, "failed" | "rolling back" | "rolled back")) {
                "stopped"
            } else if gate_text.is_some() {
                "gate"
            } else if clusters.iter().all(|c| c.state == "pending") {
                "pending"
            } else {
                "running"
            };
            WaveView {
                name: limit.name.clone(),
                max_parallel: limit.active_max,
                state: wave_state,
                gate: gate_text,
                gate_until_ms,
                done,
                total,
                clusters,
            }
        })
        .collect()
}

fn gate_waiting(gate: &[&StepState]) -> (Option<String>, Option<u64>) {
    for step in gate {
        let running = matches!(step.forward, Forward::Running { .. } | Forward::Retrying { .. });
        if !running {
            continue;
        }
        return match &step.spec.action {
            StepAction::Sleep { .. } => (Some("soak".into()), step.fire_at_ms),
            StepAction::Approval { gate } => {
                (Some(format!("approval (canaryflow approve ID --wave {})", wave_number(gate))), None)
            }
            StepAction::Activity { .. } => (Some("health check".into()), None),
        };
    }
    (None, None)
}

fn wave_number(gate: &str) -> &str {
    gate.strip_prefix("wave-").unwrap_or(gate)
}

/// Where one cluster stands.
#[must_use]
pub fn cluster(state: &WorkflowState, group: &str) -> ClusterView {
    let steps: Vec<&StepState> = state.steps.iter().filter(|step| step.spec.group.as_deref() == Some(group)).collect();
    let done = steps.iter().filter(|step| step.in_effect()).count();
    let undoing: Vec<&&StepState> = steps
        .iter()
        .filter(|step| matches!(step.compensation, Compensating::Running { .. } | Compensating::Retrying { .. }))
        .collect();
    let running: Vec<&&StepState> = steps
        .iter()
        .filter(|step| matches!(step.forward, Forward::Running { .. } | Forward::Retrying { .. }))
        .collect();
    let failed = steps.iter().find(|step| step.forward == Forward::Failed || step.compensation == Compensating::Failed);
    let last_done = steps.iter().filter(|step| step.in_effect()).max_by_key(|step| step.settled_seq);
    let (state_name, at): (&'static str, Option<&StepState>) = match state.group_rollbacks.get(group) {
        Some(GroupRollback::RolledBack) => ("rolled back", None),
        Some(GroupRollback::RollingBack(_)) => ("rolling back", undoing.first().map(|s| **s)),
        None if state.rollback.is_some() && !undoing.is_empty() => ("rolling back", undoing.first().map(|s| **s)),
        None if state.rollback.is_some() && state.outcome.is_some() => ("rolled back", None),
        None => {
            if let Some(step) = running.first() {
                ("running", Some(**step))
            } else if let Some(step) = failed {
                ("failed", Some(*step))
            } else if done == steps.len() {
                ("done", last_done.copied())
            } else if steps.iter().all(|step| step.attempts == 0) {
                ("pending", None)
            } else {
                ("waiting", last_done.copied())
            }
        }
    };
    let also_running = match state_name {
        "running" => running.len().saturating_sub(1),
        "rolling back" => undoing.len().saturating_sub(1),
        _ => 0,
    };
    let since_ms = at.and_then(|step| match (&step.forward, &step.compensation) {
        (_, Compensating::Running { since_ms, .. }) | (Forward::Running { since_ms, .. }, _) => Some(*since_ms),
        _ => step.first_started_ms,
    });
    ClusterView {
        name: group.to_string(),
        state: state_name,
        step: at.map(|step| {
            step.spec.id.as_str().strip_prefix(&format!("{group}/")).unwrap_or(step.spec.id.as_str()).to_string()
        }),
        also_running,
        attempts: at.map_or(0, |step| step.attempts),
        since_ms,
        done,
        total: steps.len(),
        detail: at.and_then(|step| step.last_error.as_ref()).map(|error| error.message.clone()),
    }
}
