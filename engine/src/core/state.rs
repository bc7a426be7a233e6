//! A workflow's state, folded from its events: `state = fold(events)`.
//!
//! [`WorkflowState::apply`] takes one recorded event at a time and either
//! moves the state or rejects the event with a [`FoldError`] naming its
//! sequence number. It does no I/O and reads no clock: time comes from the
//! event's record. Transitions of one step, forward and compensating:
//!
//! ```text
//! forward:  Pending --StepStarted--> Running --StepSucceeded--> Succeeded
//!                                    Running --StepFailed(retry left)--> Retrying --StepStarted--> Running
//!                                    Running --StepFailed(no retry)--> Failed --Resumed--> Pending
//!                                    Running --StepAborted--> Aborted
//!           Failed|Pending --StepSkipped--> Skipped
//! compensation (only once rolling back, only if the step ever started):
//!           Idle --CompensationStarted--> Running --CompensationSucceeded--> Succeeded
//!                                         Running --CompensationFailed(retry left)--> Retrying --...--> Running
//!                                         Running --CompensationFailed(no retry)--> Failed --Resumed--> Idle
//!           Idle --CompensationSkipped--> Skipped
//! ```

use std::collections::{BTreeMap, BTreeSet};

use canaryflow_store::{Status, WorkflowId};
use serde::Serialize;

use crate::core::backoff::retry_delay_ms;
use crate::core::event::{Event, RecordedEvent, RollbackStarted, Scope, Signal, StepError};
use crate::core::payload::Payload;
use crate::core::plan::{
    Compensation, FailurePolicy, GroupLimit, PlanError, RetryPolicy, StepAction, StepId, StepSpec, validate_steps,
};

/// How many times one step may be re-run because a process stopped during
/// it, before it is failed instead (a step that crashes its process).
pub const RESUMES_COUNT_MAX: u32 = 10;

/// An event that cannot follow the history before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {seq} ({kind}) cannot be applied: {why}")]
pub struct FoldError {
    /// Its sequence number.
    pub seq: u64,
    /// Its kind's name.
    pub kind: &'static str,
    /// Why not.
    pub why: String,
}

/// How a workflow ended (for now: a succeeded or failed one may still be rolled back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Every step succeeded.
    Succeeded,
    /// It could go no further.
    Failed {
        /// Why.
        reason: String,
    },
    /// Every compensation ran. Final.
    RolledBack,
    /// Stopped by an operator. Final.
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// A whole-workflow rollback in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollback {
    /// Why it started.
    pub reason: String,
    /// Whether irreversible steps are skipped.
    pub allow_irreversible: bool,
}

/// A group's rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum GroupRollback {
    /// Compensations running.
    RollingBack(Rollback),
    /// Done.
    RolledBack,
}

/// Signals received but not yet acted on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// A pause, with its reason.
    pub pause: Option<String>,
    /// A resume.
    pub resume: bool,
    /// A cancel, with its reason.
    pub cancel: Option<String>,
    /// A rollback.
    pub rollback: Option<RollbackStarted>,
    /// Gates approved.
    pub approvals: BTreeSet<String>,
    /// Failed steps to skip.
    pub skips: BTreeSet<StepId>,
}

/// Where a step's forward run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Forward {
    /// Not started.
    Pending,
    /// An attempt is running (or, for a sleep or an approval, waiting).
    Running {
        /// The attempt.
        attempt: u32,
        /// Since when, Unix ms.
        since_ms: u64,
    },
    /// An attempt failed; another starts at `retry_at_ms`.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// When the next one may start, Unix ms.
        retry_at_ms: u64,
    },
    /// Done.
    Succeeded,
    /// Failed for good (until resumed).
    Failed,
    /// Stopped before its outcome was known.
    Aborted,
    /// Skipped by an operator.
    Skipped,
}

/// Where a step's compensation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Compensating {
    /// Not started (or not needed).
    Idle,
    /// An attempt is running.
    Running {
        /// The attempt.
        attempt: u32,
        /// Since when, Unix ms.
        since_ms: u64,
    },
    /// An attempt failed; another starts at `retry_at_ms`.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// When the next may start, Unix ms.
        retry_at_ms: u64,
    },
    /// Undone.
    Succeeded,
    /// Failed for good (until resumed): the workflow pauses.
    Failed,
    /// Skipped (irreversible step, operator override).
    Skipped,
}

/// One step's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepState {
    /// Its plan entry.
    pub spec: StepSpec,
    /// Its forward run.
    pub forward: Forward,
    /// Its compensation.
    pub compensation: Compensating,
    /// Forward attempts started, resumed ones included.
    pub attempts: u32,
    /// Attempts that count against the retry policy start after this one
    /// (a resume gives a failed step a fresh set).
    pub attempts_base: u32,
    /// Attempts re-run because a process stopped during them.
    pub resumes: u32,
    /// Compensation attempts started.
    pub compensation_attempts: u32,
    /// As `attempts_base`, for compensation attempts.
    pub compensation_attempts_base: u32,
    /// The latest error, forward or compensating.
    pub last_error: Option<StepError>,
    /// The output of the successful attempt.
    pub output: Option<Payload>,
    /// When it first started, Unix ms.
    pub first_started_ms: Option<u64>,
    /// When its forward run last settled (succeeded, failed, aborted), Unix ms.
    pub settled_ms: Option<u64>,
    /// The sequence number at which it last settled: compensations run in
    /// the reverse of this order.
    pub settled_seq: Option<u64>,
    /// Its failure has been acted on (paused, rolled back).
    pub failure_handled: bool,
    /// For a sleep: when it fires, Unix ms.
    pub fire_at_ms: Option<u64>,
}

impl StepState {
    fn new(spec: StepSpec) -> Self {
        Self {
            spec,
            forward: Forward::Pending,
            compensation: Compensating::Idle,
            attempts: 0,
            attempts_base: 0,
            resumes: 0,
            compensation_attempts: 0,
            compensation_attempts_base: 0,
            last_error: None,
            output: None,
            first_started_ms: None,
            settled_ms: None,
            settled_seq: None,
            failure_handled: false,
            fire_at_ms: None,
        }
    }

    /// Whether its forward run is done and not undone: succeeded (or
    /// skipped) and not compensated. Dependents may run after it.
    #[must_use]
    pub fn in_effect(&self) -> bool {
        matches!(self.forward, Forward::Succeeded | Forward::Skipped) && self.compensation == Compensating::Idle
    }

    /// Whether a rollback must run its compensation: it started at least once
    /// and declares something to undo, and that has not been done.
    #[must_use]
    pub fn needs_compensation(&self) -> bool {
        self.attempts > 0
            && !matches!(self.spec.compensation, Compensation::None)
            && !matches!(self.compensation, Compensating::Succeeded | Compensating::Skipped)
    }

    /// The retry policy of its compensation.
    #[must_use]
    pub fn compensation_retry(&self) -> RetryPolicy {
        match &self.spec.compensation {
            Compensation::Activity { retry, .. } => retry.clone(),
            _ => RetryPolicy::none(),
        }
    }
}

/// A workflow's whole state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowState {
    /// Its id.
    pub id: WorkflowId,
    /// The definition that planned it.
    pub definition: String,
    /// That definition's version.
    pub definition_version: u32,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The definition's input.
    pub input: Payload,
    /// Its steps, in plan order, added steps last.
    pub steps: Vec<StepState>,
    #[serde(skip)]
    index: BTreeMap<StepId, usize>,
    /// Group concurrency limits.
    pub group_limits: Vec<GroupLimit>,
    /// What a failure does.
    pub on_failure: FailurePolicy,
    /// How it ended, if it has.
    pub outcome: Option<Outcome>,
    /// Why it is paused, if it is.
    pub paused: Option<String>,
    /// A whole-workflow rollback, if one is running (or ran).
    pub rollback: Option<Rollback>,
    /// Groups rolled back, or rolling back, on their own.
    pub group_rollbacks: BTreeMap<String, GroupRollback>,
    /// Signals not yet acted on.
    pub requests: Requests,
    /// The sequence number the next event gets.
    pub next_seq: u64,
    /// When it started, Unix ms.
    pub created_ms: u64,
    /// When its last event was recorded, Unix ms.
    pub updated_ms: u64,
}

impl WorkflowState {
    /// Folds a whole history, oldest first.
    pub fn fold<'a>(id: WorkflowId, events: impl IntoIterator<Item = &'a RecordedEvent>) -> Result<Self, FoldError> {
        let mut events = events.into_iter();
        let first =
            events.next().ok_or_else(|| FoldError { seq: 0, kind: "none", why: "the history is empty".into() })?;
        let mut state = Self::start(id, first)?;
        for event in events {
            state.apply(event)?;
        }
        Ok(state)
    }

    /// The state after a history's first event, which must be `WorkflowStarted`.
    pub fn start(id: WorkflowId, first: &RecordedEvent) -> Result<Self, FoldError> {
        let error = |why: &str| FoldError { seq: first.seq, kind: first.event.kind().name(), why: why.into() };
        if first.seq != 0 {
            return Err(error("a history starts at sequence 0"));
        }
        let Event::WorkflowStarted(started) = &first.event else {
            return Err(error("the first event must be WorkflowStarted"));
        };
        started.plan.validate().map_err(|err| error(&format!("invalid plan: {err}")))?;
        let steps: Vec<StepState> = started.plan.steps.iter().cloned().map(StepState::new).collect();
        let index = steps.iter().enumerate().map(|(at, step)| (step.spec.id.clone(), at)).collect();
        Ok(Self {
            id,
            definition: started.definition.clone(),
            definition_version: started.definition_version,
            name: started.name.clone(),
            labels: started.labels.clone(),
            input: started.input.clone(),
            steps,
            index,
            group_limits: started.plan.group_limits.clone(),
            on_failure: started.plan.on_failure,
            outcome: None,
            paused: None,
            rollback: None,
            group_rollbacks: BTreeMap::new(),
            requests: Requests::default(),
            next_seq: 1,
            created_ms: first.at_ms,
            updated_ms: first.at_ms,
        })
    }

    /// The status the summary index records.
    #[must_use]
    pub fn status(&self) -> Status {
        match &self.outcome {
            Some(Outcome::Succeeded) => Status::Succeeded,
            Some(Outcome::Failed { .. }) => Status::Failed,
            Some(Outcome::RolledBack) => Status::RolledBack,
            Some(Outcome::Cancelled { .. }) => Status::Cancelled,
            None if self.paused.is_some() => Status::Paused,
            None if self.rollback.is_some() => Status::RollingBack,
            None => Status::Running,
        }
    }

    /// Whether nothing can ever happen to it again.
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(self.outcome, Some(Outcome::RolledBack | Outcome::Cancelled { .. }))
    }

    /// The step with this id.
    #[must_use]
    pub fn step(&self, id: &StepId) -> Option<&StepState> {
        self.index.get(id).map(|at| &self.steps[*at])
    }

    /// Whether `step` is inside a rollback that is running.
    #[must_use]
    pub fn in_rollback(&self, step: &StepState) -> bool {
        if self.rollback.is_some() && self.outcome.is_none() {
            return true;
        }
        step.spec
            .group
            .as_ref()
            .is_some_and(|group| matches!(self.group_rollbacks.get(group), Some(GroupRollback::RollingBack(_))))
    }

    /// The rollback settings that apply to `step`, if it is being rolled back.
    #[must_use]
    pub fn rollback_of(&self, step: &StepState) -> Option<&Rollback> {
        if let Some(rollback) = &self.rollback
            && self.outcome.is_none()
        {
            return Some(rollback);
        }
        match step.spec.group.as_ref().and_then(|group| self.group_rollbacks.get(group)) {
            Some(GroupRollback::RollingBack(rollback)) => Some(rollback),
            _ => None,
        }
    }

    /// Whether `signal` may be sent now; `Err` says why not.
    pub fn check_signal(&self, signal: &Signal) -> Result<(), String> {
        if self.is_final() {
            return Err(format!("workflow {} is {}; nothing more can happen to it", self.id, self.status()));
        }
        let status = self.status();
        match signal {
            Signal::Approve { gate } => {
                let waiting = self.waiting_gates();
                if waiting.iter().any(|waiting| waiting == gate) {
                    Ok(())
                } else if waiting.is_empty() {
                    Err(format!("workflow {} is not waiting for an approval", self.id))
                } else {
                    Err(format!("gate {gate} is not waiting for an approval; waiting: {}", waiting.join(", ")))
                }
            }
            Signal::Pause { .. } => match status {
                Status::Running | Status::RollingBack => Ok(()),
                other => Err(format!("workflow {} is {other}; only a running workflow can be paused", self.id)),
            },
            Signal::Resume => match status {
                Status::Paused => Ok(()),
                other => Err(format!("workflow {} is {other}, not paused", self.id)),
            },
            Signal::Cancel { .. } => match status {
                Status::Succeeded => Err(format!("workflow {} has succeeded; roll it back instead", self.id)),
                _ => Ok(()),
            },
            Signal::Rollback { scope, allow_irreversible, .. } => self.check_rollback(scope, *allow_irreversible),
            Signal::Skip { step } => match self.step(step).map(|state| &state.forward) {
                None => Err(format!("workflow {} has no step {step}", self.id)),
                Some(Forward::Failed) => Ok(()),
                Some(other) => Err(format!("step {step} is {other:?}, not failed; only a failed step can be skipped")),
            },
        }
    }

    fn check_rollback(&self, scope: &Scope, allow_irreversible: bool) -> Result<(), String> {
        if let Some(rollback) = &self.rollback
            && self.outcome.is_none()
        {
            return if allow_irreversible && !rollback.allow_irreversible {
                Ok(())
            } else {
                Err(format!("workflow {} is already rolling back", self.id))
            };
        }
        let Scope::Group(group) = scope else {
            return Ok(());
        };
        if !self.steps.iter().any(|step| step.spec.group.as_deref() == Some(group)) {
            let groups: BTreeSet<&str> = self.steps.iter().filter_map(|step| step.spec.group.as_deref()).collect();
            let known = groups.into_iter().collect::<Vec<_>>().join(", ");
            return Err(format!("workflow {} has no cluster (group) {group}; it has: {known}", self.id));
        }
        match self.group_rollbacks.get(group) {
            Some(GroupRollback::RolledBack) => Err(format!("{group} has already been rolled back")),
            Some(GroupRollback::RollingBack(rollback)) if !allow_irreversible || rollback.allow_irreversible => {
                Err(format!("{group} is already rolling back"))
            }
            _ => Ok(()),
        }
    }

    /// Gates of approval steps that are waiting now.
    #[must_use]
    pub fn waiting_gates(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|step| matches!(step.forward, Forward::Running { .. }))
            .filter_map(|step| match &step.spec.action {
                StepAction::Approval { gate } => Some(gate.clone()),
                _ => None,
            })
            .collect()
    }

    /// Applies one recorded event.
    pub fn apply(&mut self, recorded: &RecordedEvent) -> Result<(), FoldError> {
        let kind = recorded.event.kind().name();
        let error = |why: String| FoldError { seq: recorded.seq, kind, why };
        if recorded.seq != self.next_seq {
            return Err(error(format!("expected sequence {}", self.next_seq)));
        }
        if self.is_final() {
            return Err(error(format!("the workflow is already {}", self.status())));
        }
        self.apply_event(recorded).map_err(error)?;
        self.next_seq += 1;
        self.updated_ms = recorded.at_ms;
        Ok(())
    }

    fn apply_event(&mut self, recorded: &RecordedEvent) -> Result<(), String> {
        let (seq, at_ms) = (recorded.seq, recorded.at_ms);
        match &recorded.event {
            Event::WorkflowStarted(_) => Err("a workflow starts only once".into()),
            Event::StepStarted(e) => self.step_started(&e.step, e.attempt, e.resumed, at_ms),
            Event::StepSucceeded(e) => {
                let step = self.running_step(&e.step, e.attempt)?;
                step.forward = Forward::Succeeded;
                step.output = Some(e.output.clone());
                step.last_error = None;
                settle(step, seq, at_ms);
                Ok(())
            }
            Event::StepFailed(e) => {
                let workflow_id = self.id;
                let step = self.running_step(&e.step, e.attempt)?;
                let retry = step.spec.retry.clone();
                step.forward = match next_retry(
                    workflow_id,
                    step,
                    &retry,
                    e.attempt,
                    e.attempt.saturating_sub(step.attempts_base),
                    &e.error,
                    at_ms,
                ) {
                    Some(retry_at_ms) => Forward::Retrying { attempt: e.attempt, retry_at_ms },
                    None => Forward::Failed,
                };
                step.failure_handled = false;
                step.last_error = Some(e.error.clone());
                settle(step, seq, at_ms);
                Ok(())
            }
            Event::StepAborted(e) => {
                let step = self.running_step(&e.step, e.attempt)?;
                step.forward = Forward::Aborted;
                settle(step, seq, at_ms);
                Ok(())
            }
            Event::StepSkipped(e) => {
                self.requests.skips.remove(&e.step);
                let step = self.step_mut(&e.step)?;
                if !matches!(step.forward, Forward::Failed | Forward::Pending) {
                    return Err(format!("step {} is {:?}; only a failed step can be skipped", e.step, step.forward));
                }
                step.forward = Forward::Skipped;
                Ok(())
            }
            Event::StepsAdded(e) => self.steps_added(&e.steps, &e.dependencies),
            Event::TimerStarted(e) => {
                let step = self.step_mut(&e.step)?;
                if !matches!(step.spec.action, StepAction::Sleep { .. })
                    || !matches!(step.forward, Forward::Running { .. })
                {
                    return Err(format!("step {} is not a running sleep", e.step));
                }
                step.fire_at_ms = Some(e.fire_at_ms);
                Ok(())
            }
            Event::TimerFired(e) => {
                let step = self.step_mut(&e.step)?;
                if step.fire_at_ms.is_none() {
                    return Err(format!("step {} has no timer", e.step));
                }
                Ok(())
            }
            Event::SignalReceived(e) => {
                self.signal_received(&e.signal);
                Ok(())
            }
            Event::Paused(e) => {
                self.requests.pause = None;
                self.paused = Some(e.reason.clone());
                for step in &mut self.steps {
                    step.failure_handled = true;
                }
                Ok(())
            }
            Event::Resumed => {
                self.requests.resume = false;
                // Accepted without a pause too: a rollback signalled beside
                // the resume may have ended the pause before it was acted on.
                self.paused = None;
                self.resume_failed();
                Ok(())
            }
            Event::RollbackStarted(e) => self.rollback_started(e),
            Event::CompensationStarted(e) => self.compensation_started(&e.step, e.attempt, at_ms),
            Event::CompensationSucceeded(e) => {
                let step = self.compensating_step(&e.step, e.attempt)?;
                step.compensation = Compensating::Succeeded;
                Ok(())
            }
            Event::CompensationFailed(e) => {
                let workflow_id = self.id;
                let step = self.compensating_step(&e.step, e.attempt)?;
                let retry = step.compensation_retry();
                let used = e.attempt.saturating_sub(step.compensation_attempts_base);
                step.compensation = match next_retry(workflow_id, step, &retry, e.attempt, used, &e.error, at_ms) {
                    Some(retry_at_ms) => Compensating::Retrying { attempt: e.attempt, retry_at_ms },
                    None => Compensating::Failed,
                };
                step.last_error = Some(e.error.clone());
                Ok(())
            }
            Event::CompensationSkipped(e) => {
                let step = self.step_mut(&e.step)?;
                if !matches!(step.compensation, Compensating::Idle | Compensating::Failed) {
                    return Err(format!("compensation of {} is {:?}", e.step, step.compensation));
                }
                step.compensation = Compensating::Skipped;
                Ok(())
            }
            Event::GroupRolledBack(e) => match self.group_rollbacks.get_mut(&e.group) {
                Some(phase @ GroupRollback::RollingBack(_)) => {
                    *phase = GroupRollback::RolledBack;
                    Ok(())
                }
                _ => Err(format!("group {} is not rolling back", e.group)),
            },
            Event::WorkflowSucceeded => self.finish(Outcome::Succeeded),
            Event::WorkflowFailed(e) => self.finish(Outcome::Failed { reason: e.reason.clone() }),
            Event::WorkflowRolledBack => {
                if self.rollback.is_none() {
                    return Err("no rollback was started".into());
                }
                self.finish(Outcome::RolledBack)
            }
            Event::WorkflowCancelled(e) => {
                self.requests.cancel = None;
                self.finish(Outcome::Cancelled { reason: e.reason.clone() })
            }
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Result<(), String> {
        // Succeeded and Failed may still become Cancelled or RolledBack;
        // nothing becomes Succeeded or Failed twice.
        let again = matches!(outcome, Outcome::Succeeded | Outcome::Failed { .. });
        if self.outcome.is_some() && again {
            return Err(format!("the workflow already ended ({:?})", self.outcome));
        }
        self.outcome = Some(outcome);
        Ok(())
    }

    fn step_started(&mut self, id: &StepId, attempt: u32, resumed: bool, at_ms: u64) -> Result<(), String> {
        let step = self.step_mut(id)?;
        if attempt != step.attempts + 1 {
            return Err(format!("step {id} attempt {attempt} follows attempt {}", step.attempts));
        }
        let startable = match step.forward {
            Forward::Pending | Forward::Retrying { .. } => !resumed,
            Forward::Running { .. } => resumed,
            _ => false,
        };
        if !startable {
            return Err(format!("step {id} is {:?} and cannot start (resumed: {resumed})", step.forward));
        }
        step.attempts = attempt;
        step.resumes += u32::from(resumed);
        step.forward = Forward::Running { attempt, since_ms: at_ms };
        step.first_started_ms.get_or_insert(at_ms);
        Ok(())
    }

    fn compensation_started(&mut self, id: &StepId, attempt: u32, at_ms: u64) -> Result<(), String> {
        let in_rollback = self.step(id).is_some_and(|step| self.in_rollback(step));
        let step = self.step_mut(id)?;
        if !in_rollback {
            return Err(format!("step {id} is not being rolled back"));
        }
        if attempt != step.compensation_attempts + 1 {
            return Err(format!(
                "compensation of {id} attempt {attempt} follows attempt {}",
                step.compensation_attempts
            ));
        }
        if matches!(step.compensation, Compensating::Succeeded | Compensating::Skipped | Compensating::Failed) {
            return Err(format!("compensation of {id} is {:?}", step.compensation));
        }
        step.compensation_attempts = attempt;
        step.compensation = Compensating::Running { attempt, since_ms: at_ms };
        Ok(())
    }

    fn steps_added(&mut self, steps: &[StepSpec], dependencies: &[(StepId, StepId)]) -> Result<(), String> {
        let existing: BTreeSet<StepId> = self.index.keys().cloned().collect();
        validate_steps(steps, &existing).map_err(|err| err.to_string())?;
        let new_ids: BTreeSet<&StepId> = steps.iter().map(|step| &step.id).collect();
        for (dependent, dependency) in dependencies {
            let state = self.step(dependent).ok_or_else(|| format!("no step {dependent} to add a dependency to"))?;
            if state.forward != Forward::Pending || state.attempts > 0 {
                return Err(PlanError::NotPending(dependent.clone()).to_string());
            }
            if !new_ids.contains(dependency) {
                return Err(format!("added dependency {dependency} of {dependent} must be one of the added steps"));
            }
        }
        for spec in steps {
            self.index.insert(spec.id.clone(), self.steps.len());
            self.steps.push(StepState::new(spec.clone()));
        }
        for (dependent, dependency) in dependencies {
            let at = self.index[dependent];
            self.steps[at].spec.depends_on.push(dependency.clone());
        }
        Ok(())
    }

    fn signal_received(&mut self, signal: &Signal) {
        // A signal that does not apply any more (the state moved on since it
        // was checked) is kept in the history and otherwise ignored.
        if self.check_signal(signal).is_err() {
            return;
        }
        match signal {
            Signal::Approve { gate } => {
                self.requests.approvals.insert(gate.clone());
            }
            Signal::Pause { reason } => self.requests.pause = Some(reason.clone()),
            Signal::Resume => self.requests.resume = true,
            Signal::Cancel { reason } => self.requests.cancel = Some(reason.clone()),
            Signal::Rollback { scope, reason, allow_irreversible } => {
                self.requests.rollback = Some(RollbackStarted {
                    scope: scope.clone(),
                    reason: reason.clone(),
                    allow_irreversible: *allow_irreversible,
                });
            }
            Signal::Skip { step } => {
                self.requests.skips.insert(step.clone());
            }
        }
    }

    fn rollback_started(&mut self, started: &RollbackStarted) -> Result<(), String> {
        if matches!(self.outcome, Some(Outcome::RolledBack | Outcome::Cancelled { .. })) {
            return Err("the workflow has ended".into());
        }
        self.requests.rollback = None;
        self.paused = None;
        let rollback = Rollback { reason: started.reason.clone(), allow_irreversible: started.allow_irreversible };
        match &started.scope {
            Scope::All => {
                self.outcome = None;
                self.rollback = Some(rollback);
                for step in &mut self.steps {
                    step.failure_handled = true;
                }
            }
            Scope::Group(group) => {
                if matches!(self.group_rollbacks.get(group), Some(GroupRollback::RolledBack)) {
                    return Err(format!("group {group} has already rolled back"));
                }
                // A finished workflow that loses a group is no longer finished.
                self.outcome = None;
                self.group_rollbacks.insert(group.clone(), GroupRollback::RollingBack(rollback));
                for step in self.steps.iter_mut().filter(|step| step.spec.group.as_deref() == Some(group)) {
                    step.failure_handled = true;
                }
            }
        }
        Ok(())
    }

    /// A resume gives failed steps and failed compensations a fresh set of attempts.
    fn resume_failed(&mut self) {
        for step in &mut self.steps {
            if step.forward == Forward::Failed {
                step.forward = Forward::Pending;
                step.attempts_base = step.attempts;
                step.failure_handled = false;
            }
            if step.compensation == Compensating::Failed {
                step.compensation = Compensating::Idle;
                step.compensation_attempts_base = step.compensation_attempts;
            }
        }
    }

    fn step_mut(&mut self, id: &StepId) -> Result<&mut StepState, String> {
        let at = *self.index.get(id).ok_or_else(|| format!("no step {id} in the plan"))?;
        Ok(&mut self.steps[at])
    }

    fn running_step(&mut self, id: &StepId, attempt: u32) -> Result<&mut StepState, String> {
        let step = self.step_mut(id)?;
        match step.forward {
            Forward::Running { attempt: running, .. } if running == attempt => Ok(step),
            ref other => Err(format!("step {id} attempt {attempt} is not running (it is {other:?})")),
        }
    }

    fn compensating_step(&mut self, id: &StepId, attempt: u32) -> Result<&mut StepState, String> {
        let step = self.step_mut(id)?;
        match step.compensation {
            Compensating::Running { attempt: running, .. } if running == attempt => Ok(step),
            ref other => Err(format!("compensation of {id} attempt {attempt} is not running (it is {other:?})")),
        }
    }
}

fn settle(step: &mut StepState, seq: u64, at_ms: u64) {
    step.settled_seq = Some(seq);
    step.settled_ms = Some(at_ms);
}

/// When the next attempt may start, or `None` if the failure is final.
fn next_retry(
    workflow_id: WorkflowId,
    step: &StepState,
    retry: &RetryPolicy,
    attempt: u32,
    attempts_used: u32,
    error: &StepError,
    at_ms: u64,
) -> Option<u64> {
    let retryable = error.retryable && !retry.non_retryable_classes.iter().any(|class| class == &error.class);
    if !retryable || attempts_used >= retry.attempts_max {
        return None;
    }
    Some(at_ms + retry_delay_ms(retry, attempts_used, workflow_id, step.spec.id.as_str(), attempt))
}
