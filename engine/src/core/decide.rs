//! What to do next: `commands = decide(state, now)`.
//!
//! [`decide`] reads a [`WorkflowState`] and the time and returns
//! [`Command`]s for the runtime: events to record, activities to start,
//! compensations to run, attempts to abort. It never does them itself. The
//! runtime records the events a decision implies, applies them, and asks
//! again until the answer is only "wait" ([`Decision::wake_at_ms`]).
//!
//! One call answers one concern, in this order, and returns:
//!
//! 1. operator requests: cancel, rollback, pause, resume, skip;
//! 2. failures not yet acted on: the plan's failure policy;
//! 3. (nothing more while paused)
//! 4. rollbacks: abort forward attempts in scope, then compensations,
//!    newest first, then the end of the rollback;
//! 5. forward progress: fired timers, granted approvals, due retries, ready steps;
//! 6. the end: succeeded when every step is done, failed when nothing can move.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::event::{
    CompensationSkipped, Event, GroupRolledBack, NEEDS_OPERATOR, Paused, RollbackStarted, Scope, StepError, StepFailed,
    StepSkipped, StepStarted, StepSucceeded, TimerFired, TimerStarted, WorkflowCancelled, WorkflowFailed,
};
use crate::core::payload::Payload;
use crate::core::plan::{Compensation, FailurePolicy, StepAction, StepId};
use crate::core::state::{Compensating, Forward, GroupRollback, RESUMES_COUNT_MAX, StepState, WorkflowState};

/// Something for the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Record this event. No side effect.
    Record(Event),
    /// Record `StepStarted`, then run the step's activity.
    Start {
        /// The step.
        step: StepId,
        /// The attempt.
        attempt: u32,
        /// Whether it re-runs an attempt a stopped process left unfinished.
        resumed: bool,
    },
    /// Record `CompensationStarted`, then run the step's compensation.
    Compensate {
        /// The step.
        step: StepId,
        /// The compensation attempt.
        attempt: u32,
        /// Whether it re-runs an attempt a stopped process left unfinished.
        resumed: bool,
    },
    /// Stop the attempt if it is running here, and record `StepAborted`.
    Abort {
        /// The step.
        step: StepId,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: String,
    },
}

/// The answer of [`decide`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Do these now, in order.
    pub commands: Vec<Command>,
    /// If no event arrives before then, decide again at this time (Unix ms).
    pub wake_at_ms: Option<u64>,
}

impl Decision {
    fn wait_until(&mut self, at_ms: u64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at_ms, |current| current.min(at_ms)));
    }

    fn record(event: Event) -> Self {
        Self { commands: vec![Command::Record(event)], wake_at_ms: None }
    }
}

/// Decides what the runtime does next. Pure: same state and time, same answer.
#[must_use]
pub fn decide(state: &WorkflowState, now_ms: u64) -> Decision {
    if state.is_final() {
        return Decision::default();
    }
    if let Some(decision) = requests(state) {
        return decision;
    }
    if state.paused.is_some() {
        return Decision::default();
    }
    if let Some(decision) = failures(state) {
        return decision;
    }
    let mut decision = Decision::default();
    rollbacks(state, now_ms, &mut decision);
    if !decision.commands.is_empty() {
        return decision;
    }
    if state.rollback.is_none() && state.outcome.is_none() {
        forward(state, now_ms, &mut decision);
        if decision.commands.is_empty() && decision.wake_at_ms.is_none() {
            decision.commands.extend(ending(state));
        }
    }
    decision
}

/// What to do once, when a process takes up a workflow whose history it did
/// not write: attempts left without an outcome by a stopped process are run
/// again (or aborted, if the workflow is rolling back or cancelling).
#[must_use]
pub fn recover(state: &WorkflowState) -> Vec<Command> {
    let mut commands = Vec::new();
    if state.is_final() {
        return commands;
    }
    for step in &state.steps {
        if let Forward::Running { attempt, .. } = step.forward
            && matches!(step.spec.action, StepAction::Activity { .. })
        {
            commands.push(recover_forward(state, step, attempt));
        }
        if let Compensating::Running { attempt, .. } = step.compensation {
            commands.push(Command::Compensate { step: step.spec.id.clone(), attempt: attempt + 1, resumed: true });
        }
    }
    commands
}

fn recover_forward(state: &WorkflowState, step: &StepState, attempt: u32) -> Command {
    let id = step.spec.id.clone();
    if state.in_rollback(step) || state.requests.cancel.is_some() {
        let reason = "the process stopped during this attempt, and the workflow no longer runs it forward".into();
        return Command::Abort { step: id, attempt, reason };
    }
    if step.resumes >= RESUMES_COUNT_MAX {
        let message = format!("interrupted by {RESUMES_COUNT_MAX} process restarts; not run again");
        let error = StepError { message, class: "interrupted".into(), retryable: false };
        return Command::Record(Event::StepFailed(StepFailed { step: id, attempt, error }));
    }
    Command::Start { step: id, attempt: attempt + 1, resumed: true }
}

/// 1. Operator requests.
fn requests(state: &WorkflowState) -> Option<Decision> {
    let requests = &state.requests;
    if let Some(reason) = &requests.cancel {
        let aborts: Vec<Command> = running_forward(state.steps.iter())
            .map(|(step, attempt)| Command::Abort {
                step: step.spec.id.clone(),
                attempt,
                reason: format!("cancelled: {reason}"),
            })
            .collect();
        if !aborts.is_empty() {
            return Some(Decision { commands: aborts, wake_at_ms: None });
        }
        let compensating = state.steps.iter().any(|step| matches!(step.compensation, Compensating::Running { .. }));
        if compensating {
            return Some(Decision::default());
        }
        return Some(Decision::record(Event::WorkflowCancelled(WorkflowCancelled { reason: reason.clone() })));
    }
    if let Some(rollback) = &requests.rollback {
        return Some(Decision::record(Event::RollbackStarted(rollback.clone())));
    }
    if let Some(reason) = &requests.pause {
        return Some(Decision::record(Event::Paused(Paused { reason: reason.clone() })));
    }
    if requests.resume {
        return Some(Decision::record(Event::Resumed));
    }
    if let Some(step) = requests.skips.first() {
        let reason = "skipped by an operator".to_string();
        return Some(Decision::record(Event::StepSkipped(StepSkipped { step: step.clone(), reason })));
    }
    None
}

/// 2. Failures not yet acted on.
fn failures(state: &WorkflowState) -> Option<Decision> {
    if let Some(step) = state.steps.iter().find(|step| step.compensation == Compensating::Failed) {
        let error = step.last_error.as_ref().map_or("unknown error", |error| error.message.as_str());
        let reason = format!("compensation of {} failed: {error}; resume to retry it", step.spec.id);
        return Some(Decision::record(Event::Paused(Paused { reason })));
    }
    let failed = state.steps.iter().find(|step| step.forward == Forward::Failed && !step.failure_handled)?;
    let error = failed.last_error.as_ref().map_or("unknown error", |error| error.message.as_str());
    let reason = format!("step {} failed: {error}", failed.spec.id);
    let rollback = |scope| {
        Decision::record(Event::RollbackStarted(RollbackStarted {
            scope,
            reason: reason.clone(),
            allow_irreversible: false,
        }))
    };
    let needs_operator = failed.last_error.as_ref().is_some_and(|error| error.class == NEEDS_OPERATOR);
    Some(match (state.on_failure, &failed.spec.group) {
        _ if needs_operator => Decision::record(Event::Paused(Paused { reason: reason.clone() })),
        (FailurePolicy::Pause, _) => Decision::record(Event::Paused(Paused { reason: reason.clone() })),
        (FailurePolicy::RollbackAll, _) | (FailurePolicy::RollbackGroup, None) => rollback(Scope::All),
        (FailurePolicy::RollbackGroup, Some(group)) => rollback(Scope::Group(group.clone())),
    })
}

/// 4. Rollbacks: aborts, compensations newest first, and their ends.
fn rollbacks(state: &WorkflowState, now_ms: u64, decision: &mut Decision) {
    let in_scope: Vec<&StepState> = state.steps.iter().filter(|step| state.in_rollback(step)).collect();
    if in_scope.is_empty() && state.rollback.is_none() {
        return;
    }
    for (step, attempt) in running_forward(in_scope.iter().copied()) {
        let reason = "rolling back".to_string();
        decision.commands.push(Command::Abort { step: step.spec.id.clone(), attempt, reason });
    }
    if !decision.commands.is_empty() {
        return;
    }
    let pending: Vec<&StepState> = in_scope.iter().copied().filter(|step| step.needs_compensation()).collect();
    for step in next_compensations(&pending) {
        match step.compensation {
            Compensating::Running { .. } => {}
            Compensating::Retrying { attempt, retry_at_ms } if retry_at_ms <= now_ms => {
                decision.commands.push(Command::Compensate {
                    step: step.spec.id.clone(),
                    attempt: attempt + 1,
                    resumed: false,
                });
            }
            Compensating::Retrying { retry_at_ms, .. } => decision.wait_until(retry_at_ms),
            Compensating::Idle => decision.commands.push(start_compensation(state, step)),
            Compensating::Failed | Compensating::Succeeded | Compensating::Skipped => {}
        }
    }
    if !decision.commands.is_empty() || decision.wake_at_ms.is_some() {
        return;
    }
    if state.rollback.is_some() && state.outcome.is_none() && pending.is_empty() {
        decision.commands.push(Command::Record(Event::WorkflowRolledBack));
        return;
    }
    for (group, phase) in &state.group_rollbacks {
        let busy = pending.iter().any(|step| step.spec.group.as_ref() == Some(group));
        if matches!(phase, GroupRollback::RollingBack(_)) && !busy {
            decision.commands.push(Command::Record(Event::GroupRolledBack(GroupRolledBack { group: group.clone() })));
        }
    }
}

fn start_compensation(state: &WorkflowState, step: &StepState) -> Command {
    let id = step.spec.id.clone();
    match &step.spec.compensation {
        Compensation::Activity { .. } => {
            Command::Compensate { step: id, attempt: step.compensation_attempts + 1, resumed: false }
        }
        Compensation::Irreversible if state.rollback_of(step).is_some_and(|rollback| rollback.allow_irreversible) => {
            let reason = "irreversible; skipped as the operator allowed".to_string();
            Command::Record(Event::CompensationSkipped(CompensationSkipped { step: id, reason }))
        }
        Compensation::Irreversible => {
            let reason =
                format!("step {id} cannot be undone; roll back again with --allow-irreversible to skip it, or cancel");
            Command::Record(Event::Paused(Paused { reason }))
        }
        Compensation::None => unreachable!("steps without compensation never need one"),
    }
}

/// The compensations whose turn it is: in each group, the step that settled
/// last; a step without a group waits for every newer step, and every
/// older step waits for it.
fn next_compensations<'a>(pending: &[&'a StepState]) -> Vec<&'a StepState> {
    let settled = |step: &StepState| step.settled_seq.unwrap_or(u64::MAX);
    let newest_ungrouped = pending.iter().filter(|step| step.spec.group.is_none()).map(|step| settled(step)).max();
    let newest_overall = pending.iter().map(|step| settled(step)).max();
    let mut newest_in_group: BTreeMap<&str, u64> = BTreeMap::new();
    for step in pending {
        if let Some(group) = step.spec.group.as_deref() {
            let entry = newest_in_group.entry(group).or_insert(0);
            *entry = (*entry).max(settled(step));
        }
    }
    pending
        .iter()
        .copied()
        .filter(|step| match step.spec.group.as_deref() {
            None => Some(settled(step)) == newest_overall,
            Some(group) => {
                settled(step) == newest_in_group[group]
                    && newest_ungrouped.is_none_or(|ungrouped| settled(step) > ungrouped)
            }
        })
        .collect()
}

/// 5. Forward progress.
fn forward(state: &WorkflowState, now_ms: u64, decision: &mut Decision) {
    let mut active = active_groups(state);
    for step in &state.steps {
        if state.in_rollback(step) || group_rolled_back(state, step) {
            continue;
        }
        let id = &step.spec.id;
        match (&step.forward, &step.spec.action) {
            (Forward::Running { attempt, .. }, StepAction::Sleep { .. }) => match step.fire_at_ms {
                Some(fire_at_ms) if fire_at_ms <= now_ms => {
                    decision.commands.push(Command::Record(Event::TimerFired(TimerFired { step: id.clone() })));
                    decision.commands.push(succeed(id, *attempt, Payload::null()));
                }
                Some(fire_at_ms) => decision.wait_until(fire_at_ms),
                None => {}
            },
            (Forward::Running { attempt, .. }, StepAction::Approval { gate })
                if state.requests.approvals.contains(gate) =>
            {
                let output = Payload::json(&serde_json::json!({ "approved": gate })).expect("a gate name serializes");
                decision.commands.push(succeed(id, *attempt, output));
            }
            (Forward::Retrying { attempt, retry_at_ms }, _) if *retry_at_ms <= now_ms => {
                decision.commands.extend(start(step, attempt + 1, now_ms));
            }
            (Forward::Retrying { retry_at_ms, .. }, _) => decision.wait_until(*retry_at_ms),
            (Forward::Pending, _) if dependencies_done(state, step) && take_slot(state, step, &mut active) => {
                decision.commands.extend(start(step, step.attempts + 1, now_ms));
            }
            _ => {}
        }
    }
}

fn succeed(step: &StepId, attempt: u32, output: Payload) -> Command {
    Command::Record(Event::StepSucceeded(StepSucceeded { step: step.clone(), attempt, output }))
}

fn start(step: &StepState, attempt: u32, now_ms: u64) -> Vec<Command> {
    let id = step.spec.id.clone();
    let started = || Command::Record(Event::StepStarted(StepStarted { step: id.clone(), attempt, resumed: false }));
    match &step.spec.action {
        StepAction::Activity { .. } => vec![Command::Start { step: id.clone(), attempt, resumed: false }],
        StepAction::Sleep { duration_ms } => {
            let fire_at_ms = now_ms.saturating_add(*duration_ms);
            vec![started(), Command::Record(Event::TimerStarted(TimerStarted { step: id.clone(), fire_at_ms }))]
        }
        StepAction::Approval { .. } => vec![started()],
    }
}

fn dependencies_done(state: &WorkflowState, step: &StepState) -> bool {
    step.spec.depends_on.iter().all(|dep| state.step(dep).is_some_and(StepState::in_effect))
}

fn group_rolled_back(state: &WorkflowState, step: &StepState) -> bool {
    step.spec.group.as_ref().is_some_and(|group| state.group_rollbacks.contains_key(group))
}

/// Groups in progress: some step started, not every step in effect, not rolled back.
///
/// A group in progress holds its slot while it runs something, or has a
/// step ready to run whose dependencies are all inside the group. A group
/// whose next steps wait on something outside it (a wave's gate) is parked:
/// it holds no slot, and must take one again when it goes on. Otherwise
/// clusters waiting at a gate would hold every slot, and the clusters the
/// gate waits for could never start.
fn active_groups(state: &WorkflowState) -> BTreeSet<&str> {
    let mut started = BTreeSet::new();
    let mut busy = BTreeSet::new();
    for step in &state.steps {
        let Some(group) = step.spec.group.as_deref() else { continue };
        if step.attempts > 0 {
            started.insert(group);
        }
        let running = matches!(step.forward, Forward::Running { .. } | Forward::Retrying { .. })
            || matches!(step.compensation, Compensating::Running { .. } | Compensating::Retrying { .. });
        let internally_ready = step.forward == Forward::Pending
            && dependencies_done(state, step)
            && step
                .spec
                .depends_on
                .iter()
                .all(|dep| state.step(dep).is_some_and(|d| d.spec.group.as_deref() == Some(group)));
        if running || internally_ready {
            busy.insert(group);
        }
    }
    started
        .intersection(&busy)
        .copied()
        .filter(|group| !matches!(state.group_rollbacks.get(*group), Some(GroupRollback::RolledBack)))
        .collect()
}

/// Whether `step` may start under the group limits; if its group was not in
/// progress, it is from now on.
fn take_slot<'a>(state: &'a WorkflowState, step: &'a StepState, active: &mut BTreeSet<&'a str>) -> bool {
    let Some(group) = step.spec.group.as_deref() else { return true };
    if active.contains(group) {
        return true;
    }
    let full = state.group_limits.iter().filter(|limit| limit.groups.iter().any(|g| g == group)).any(|limit| {
        let in_progress = limit.groups.iter().filter(|g| active.contains(g.as_str())).count();
        in_progress >= limit.active_max as usize
    });
    if !full {
        active.insert(group);
    }
    !full
}

/// 6. The end: all done, or nothing can move.
fn ending(state: &WorkflowState) -> Vec<Command> {
    if state.steps.iter().all(StepState::in_effect) {
        return vec![Command::Record(Event::WorkflowSucceeded)];
    }
    let busy = state.steps.iter().any(|step| {
        matches!(step.forward, Forward::Running { .. }) || matches!(step.compensation, Compensating::Running { .. })
    });
    if busy {
        return Vec::new();
    }
    let rolled_back: Vec<&str> = state.group_rollbacks.keys().map(String::as_str).collect();
    let blocked = state.steps.iter().filter(|step| !step.in_effect()).count();
    let reason = if rolled_back.is_empty() {
        format!("{blocked} steps can never run")
    } else {
        format!("rolled back: {}; {blocked} steps cannot run without them", rolled_back.join(", "))
    };
    vec![Command::Record(Event::WorkflowFailed(WorkflowFailed { reason }))]
}

fn running_forward<'a>(steps: impl Iterator<Item = &'a StepState>) -> impl Iterator<Item = (&'a StepState, u32)> {
    steps.filter_map(|step| match step.forward {
        Forward::Running { attempt, .. } => Some((step, attempt)),
        _ => None,
    })
}
