//! Events: everything that happens to a workflow, in the order it happened.
//!
//! Each variant has a stable kind number ([`Event::kind`]) and its own
//! schema version; see `codec` for how they are stored and upcast.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::payload::Payload;
use crate::core::plan::{Plan, StepId, StepSpec};

/// What a rollback covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// The whole workflow.
    All,
    /// One group's steps (a cluster).
    Group(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("the whole workflow"),
            Self::Group(group) => write!(f, "group {group}"),
        }
    }
}

/// A request from outside the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// Lets the approval step of `gate` pass.
    Approve {
        /// The gate (`wave-2`).
        gate: String,
    },
    /// Starts nothing new until resumed.
    Pause {
        /// Why.
        reason: String,
    },
    /// Goes on after a pause; failed steps get a fresh set of attempts.
    Resume,
    /// Stops for good without compensating.
    Cancel {
        /// Why.
        reason: String,
    },
    /// Compensates what was done, newest first.
    Rollback {
        /// What to roll back.
        scope: Scope,
        /// Why.
        reason: String,
        /// Skip compensations of irreversible steps instead of stopping at them.
        allow_irreversible: bool,
    },
    /// Treats a failed step as done, so that its dependents may run.
    Skip {
        /// The step.
        step: StepId,
    },
}

impl Signal {
    /// The signal's name, as on the command line.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Approve { .. } => "approve",
            Self::Pause { .. } => "pause",
            Self::Resume => "resume",
            Self::Cancel { .. } => "cancel",
            Self::Rollback { .. } => "rollback",
            Self::Skip { .. } => "skip",
        }
    }
}

/// The error class of a failure only an operator can mend (a blocker the
/// step names): the workflow pauses, whatever its failure policy, rather
/// than roll back everything done to get past it.
pub const NEEDS_OPERATOR: &str = "needs-operator";

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// What happened, for people.
    pub message: String,
    /// A class for retry rules (`timeout`, `conflict`, `not-found`, ...).
    pub class: String,
    /// Whether another attempt may help.
    pub retryable: bool,
}

/// The first event of every workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowStarted {
    /// The definition that made the plan (`istio-canary-upgrade`).
    pub definition: String,
    /// Its version.
    pub definition_version: u32,
    /// A human name.
    pub name: String,
    /// Labels to filter by.
    pub labels: BTreeMap<String, String>,
    /// The definition's input (the upgrade spec).
    pub input: Payload,
    /// The plan, whole.
    pub plan: Plan,
}

/// An attempt of a step is about to run (durable before its side effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStarted {
    /// The step.
    pub step: StepId,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// This attempt re-runs one that a stopped process left without outcome.
    pub resumed: bool,
}

/// An attempt succeeded (durable before any dependent starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSucceeded {
    /// The step.
    pub step: StepId,
    /// The attempt.
    pub attempt: u32,
    /// Its output.
    pub output: Payload,
}

/// An attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailed {
    /// The step.
    pub step: StepId,
    /// The attempt.
    pub attempt: u32,
    /// Why.
    pub error: StepError,
}

/// An attempt was stopped before its outcome was known (rollback, cancel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepAborted {
    /// The step.
    pub step: StepId,
    /// The attempt.
    pub attempt: u32,
    /// Why.
    pub reason: String,
}

/// An operator skipped a failed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSkipped {
    /// The step.
    pub step: StepId,
    /// Why.
    pub reason: String,
}

/// An activity extended the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepsAdded {
    /// The step whose activity added them.
    pub by: StepId,
    /// The new steps.
    pub steps: Vec<StepSpec>,
    /// New dependencies of not-yet-started steps on new steps: (dependent, dependency).
    pub dependencies: Vec<(StepId, StepId)>,
}

/// A sleep step's timer is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerStarted {
    /// The step.
    pub step: StepId,
    /// When it fires, Unix ms.
    pub fire_at_ms: u64,
}

/// A sleep step's timer fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerFired {
    /// The step.
    pub step: StepId,
}

/// A signal arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalReceived {
    /// The signal.
    pub signal: Signal,
    /// Who sent it (a user name), for the audit trail.
    pub by: String,
}

/// The workflow stopped starting new work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// Why.
    pub reason: String,
}

/// A rollback began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackStarted {
    /// What it covers.
    pub scope: Scope,
    /// Why.
    pub reason: String,
    /// Whether irreversible steps are skipped rather than stopped at.
    pub allow_irreversible: bool,
}

/// A compensation attempt is about to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationStarted {
    /// The step being undone.
    pub step: StepId,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Re-runs an attempt left without outcome by a stopped process.
    pub resumed: bool,
}

/// A compensation attempt succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationSucceeded {
    /// The step undone.
    pub step: StepId,
    /// The attempt.
    pub attempt: u32,
    /// Its output.
    pub output: Payload,
}

/// A compensation attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationFailed {
    /// The step.
    pub step: StepId,
    /// The attempt.
    pub attempt: u32,
    /// Why.
    pub error: StepError,
}

/// A compensation was skipped (an irreversible step, by operator override).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationSkipped {
    /// The step.
    pub step: StepId,
    /// Why.
    pub reason: String,
}

/// A group finished rolling back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRolledBack {
    /// The group.
    pub group: String,
}

/// The workflow cannot go on without an operator (blocked by rolled-back groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowFailed {
    /// Why.
    pub reason: String,
}

/// The workflow was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowCancelled {
    /// Why.
    pub reason: String,
}

/// Something that happened to a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs, reason = "each variant carries a documented struct of the same name")]
pub enum Event {
    WorkflowStarted(Box<WorkflowStarted>),
    StepStarted(StepStarted),
    StepSucceeded(StepSucceeded),
    StepFailed(StepFailed),
    StepAborted(StepAborted),
    StepSkipped(StepSkipped),
    StepsAdded(StepsAdded),
    TimerStarted(TimerStarted),
    TimerFired(TimerFired),
    SignalReceived(SignalReceived),
    Paused(Paused),
    Resumed,
    RollbackStarted(RollbackStarted),
    CompensationStarted(CompensationStarted),
    CompensationSucceeded(CompensationSucceeded),
    CompensationFailed(CompensationFailed),
    CompensationSkipped(CompensationSkipped),
    GroupRolledBack(GroupRolledBack),
    WorkflowSucceeded,
    WorkflowFailed(WorkflowFailed),
    WorkflowRolledBack,
    WorkflowCancelled(WorkflowCancelled),
}

/// A stored event's kind number. Numbers are never reused.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[allow(missing_docs, reason = "one per Event variant, same names")]
pub enum EventKind {
    WorkflowStarted = 1,
    StepStarted = 2,
    StepSucceeded = 3,
    StepFailed = 4,
    StepAborted = 5,
    StepSkipped = 6,
    StepsAdded = 7,
    TimerStarted = 8,
    TimerFired = 9,
    SignalReceived = 10,
    Paused = 11,
    Resumed = 12,
    RollbackStarted = 13,
    CompensationStarted = 14,
    CompensationSucceeded = 15,
    CompensationFailed = 16,
    CompensationSkipped = 17,
    GroupRolledBack = 18,
    WorkflowSucceeded = 19,
    WorkflowFailed = 20,
    WorkflowRolledBack = 21,
    WorkflowCancelled = 22,
}

impl EventKind {
    /// Every kind, in number order.
    pub const ALL: [EventKind; 22] = [
        Self::WorkflowStarted,
        Self::StepStarted,
        Self::StepSucceeded,
        Self::StepFailed,
        Self::StepAborted,
        Self::StepSkipped,
        Self::StepsAdded,
        Self::TimerStarted,
        Self::TimerFired,
        Self::SignalReceived,
        Self::Paused,
        Self::Resumed,
        Self::RollbackStarted,
        Self::CompensationStarted,
        Self::CompensationSucceeded,
        Self::CompensationFailed,
        Self::CompensationSkipped,
        Self::GroupRolledBack,
        Self::WorkflowSucceeded,
        Self::WorkflowFailed,
        Self::WorkflowRolledBack,
        Self::WorkflowCancelled,
    ];

    /// The kind with this number.
    #[must_use]
    pub fn from_u16(number: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| *kind as u16 == number)
    }

    /// The kind's name, as in `history` output and filters.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::WorkflowStarted => "WorkflowStarted",
            Self::StepStarted => "StepStarted",
            Self::StepSucceeded => "StepSucceeded",
            Self::StepFailed => "StepFailed",
            Self::StepAborted => "StepAborted",
            Self::StepSkipped => "StepSkipped",
            Self::StepsAdded => "StepsAdded",
            Self::TimerStarted => "TimerStarted",
            Self::TimerFired => "TimerFired",
            Self::SignalReceived => "SignalReceived",
            Self::Paused => "Paused",
            Self::Resumed => "Resumed",
            Self::RollbackStarted => "RollbackStarted",
            Self::CompensationStarted => "CompensationStarted",
            Self::CompensationSucceeded => "CompensationSucceeded",
            Self::CompensationFailed => "CompensationFailed",
            Self::CompensationSkipped => "CompensationSkipped",
            Self::GroupRolledBack => "GroupRolledBack",
            Self::WorkflowSucceeded => "WorkflowSucceeded",
            Self::WorkflowFailed => "WorkflowFailed",
            Self::WorkflowRolledBack => "WorkflowRolledBack",
            Self::WorkflowCancelled => "WorkflowCancelled",
        }
    }

    /// The kind with this name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name().eq_ignore_ascii_case(name))
    }
}

impl Event {
    /// This event's kind.
    #[must_use]
    pub fn kind(&self) -> EventKind {
        match self {
            Self::WorkflowStarted(_) => EventKind::WorkflowStarted,
            Self::StepStarted(_) => EventKind::StepStarted,
            Self::StepSucceeded(_) => EventKind::StepSucceeded,
            Self::StepFailed(_) => EventKind::StepFailed,
            Self::StepAborted(_) => EventKind::StepAborted,
            Self::StepSkipped(_) => EventKind::StepSkipped,
            Self::StepsAdded(_) => EventKind::StepsAdded,
            Self::TimerStarted(_) => EventKind::TimerStarted,
            Self::TimerFired(_) => EventKind::TimerFired,
            Self::SignalReceived(_) => EventKind::SignalReceived,
            Self::Paused(_) => EventKind::Paused,
            Self::Resumed => EventKind::Resumed,
            Self::RollbackStarted(_) => EventKind::RollbackStarted,
            Self::CompensationStarted(_) => EventKind::CompensationStarted,
            Self::CompensationSucceeded(_) => EventKind::CompensationSucceeded,
            Self::CompensationFailed(_) => EventKind::CompensationFailed,
            Self::CompensationSkipped(_) => EventKind::CompensationSkipped,
            Self::GroupRolledBack(_) => EventKind::GroupRolledBack,
            Self::WorkflowSucceeded => EventKind::WorkflowSucceeded,
            Self::WorkflowFailed(_) => EventKind::WorkflowFailed,
            Self::WorkflowRolledBack => EventKind::WorkflowRolledBack,
            Self::WorkflowCancelled(_) => EventKind::WorkflowCancelled,
        }
    }

    /// The step this event is about, if any.
    #[must_use]
    pub fn step(&self) -> Option<&StepId> {
        match self {
            Self::StepStarted(e) => Some(&e.step),
            Self::StepSucceeded(e) => Some(&e.step),
            Self::StepFailed(e) => Some(&e.step),
            Self::StepAborted(e) => Some(&e.step),
            Self::StepSkipped(e) => Some(&e.step),
            Self::StepsAdded(e) => Some(&e.by),
            Self::TimerStarted(e) => Some(&e.step),
            Self::TimerFired(e) => Some(&e.step),
            Self::CompensationStarted(e) => Some(&e.step),
            Self::CompensationSucceeded(e) => Some(&e.step),
            Self::CompensationFailed(e) => Some(&e.step),
            Self::CompensationSkipped(e) => Some(&e.step),
            _ => None,
        }
    }

    /// Every payload the event carries (for the secret check).
    #[must_use]
    pub fn payloads(&self) -> Vec<&Payload> {
        match self {
            Self::WorkflowStarted(started) => {
                let mut out = vec![&started.input];
                for step in &started.plan.steps {
                    out.extend(step_payloads(step));
                }
                out
            }
            Self::StepSucceeded(e) => vec![&e.output],
            Self::CompensationSucceeded(e) => vec![&e.output],
            Self::StepsAdded(e) => e.steps.iter().flat_map(step_payloads).collect(),
            _ => Vec::new(),
        }
    }
}

fn step_payloads(step: &StepSpec) -> Vec<&Payload> {
    let mut out = Vec::new();
    if let crate::core::plan::StepAction::Activity { input, .. } = &step.action {
        out.push(input);
    }
    if let crate::core::plan::Compensation::Activity { input, .. } = &step.compensation {
        out.push(input);
    }
    out
}

/// An event as read from the log: where and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Its sequence number in the workflow's history.
    pub seq: u64,
    /// When it was recorded, Unix ms.
    pub at_ms: u64,
    /// The event.
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_numbers_and_names_round_trip() {
        for (position, kind) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as u16, position as u16 + 1, "kind numbers are dense and stable");
            assert_eq!(EventKind::from_u16(kind as u16), Some(kind));
            assert_eq!(EventKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(EventKind::from_u16(0), None);
        assert_eq!(EventKind::from_u16(23), None);
    }
}
