//! Plans: a workflow's steps as data, stored whole in its first event.
//!
//! Resumption never runs definition code again: the engine only reads the
//! plan from the log. A plan is checked once, by [`Plan::validate`], before
//! it is recorded.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::core::payload::Payload;

/// The most steps one workflow may hold (including steps added later).
pub const STEPS_COUNT_MAX: usize = 20_000;
/// The most dependencies one step may name.
pub const DEPENDENCIES_COUNT_MAX: usize = 4_096;
/// The longest step id, in bytes.
pub const STEP_ID_BYTES_MAX: usize = 200;
/// The most attempts a retry policy may allow.
pub const ATTEMPTS_MAX: u32 = 100;
/// The longest timeout or sleep a step may ask for: 30 days.
pub const DURATION_MS_MAX: u64 = 30 * 24 * 3600 * 1000;

const _: () = assert!(DEPENDENCIES_COUNT_MAX <= STEPS_COUNT_MAX);

/// A step's identity within its workflow, e.g. `prod-eu/move-namespace/shop`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StepId(String);

impl StepId {
    /// Makes a step id, checking its characters: ASCII letters, digits and `-_./:`.
    pub fn new(text: impl Into<String>) -> Result<Self, PlanError> {
        let text = text.into();
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':');
        if text.is_empty() || text.len() > STEP_ID_BYTES_MAX || !text.chars().all(valid_char) {
            return Err(PlanError::StepId(text));
        }
        Ok(Self(text))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a failed attempt is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts_max: u32,
    /// The delay before the second attempt.
    pub backoff_ms_initial: u64,
    /// The longest delay between attempts.
    pub backoff_ms_max: u64,
    /// Each delay is the previous one times this, in percent (200 doubles).
    pub backoff_multiplier_percent: u32,
    /// Error classes that are never retried.
    pub non_retryable_classes: Vec<String>,
}

impl RetryPolicy {
    /// One attempt only.
    #[must_use]
    pub fn none() -> Self {
        Self {
            attempts_max: 1,
            backoff_ms_initial: 0,
            backoff_ms_max: 0,
            backoff_multiplier_percent: 100,
            non_retryable_classes: Vec::new(),
        }
    }

    /// `attempts_max` attempts, doubling from `backoff_ms_initial` up to `backoff_ms_max`.
    #[must_use]
    pub fn exponential(attempts_max: u32, backoff_ms_initial: u64, backoff_ms_max: u64) -> Self {
        Self {
            attempts_max,
            backoff_ms_initial,
            backoff_ms_max,
            backoff_multiplier_percent: 200,
            non_retryable_classes: Vec::new(),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::exponential(5, 1_000, 60_000)
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepAction {
    /// Runs a registered activity with this input.
    Activity {
        /// The activity's registered name.
        name: String,
        /// Its input.
        input: Payload,
    },
    /// Waits, durably: the fire time is recorded when the step starts.
    Sleep {
        /// How long.
        duration_ms: u64,
    },
    /// Waits for an `approve` signal naming this gate.
    Approval {
        /// The gate's name (`wave-2`).
        gate: String,
    },
}

/// What undoes a step when the workflow (or its group) rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compensation {
    /// Nothing to undo: checks, waits, gates.
    None,
    /// Cannot be undone; a rollback stops here unless an operator allows skipping it.
    Irreversible,
    /// Runs this activity. It is given the forward step's input and output too.
    Activity {
        /// The activity's registered name.
        name: String,
        /// Its input.
        input: Payload,
        /// How it is retried.
        retry: RetryPolicy,
        /// Per-attempt timeout; 0 for none.
        timeout_ms: u64,
    },
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Unique within the workflow.
    pub id: StepId,
    /// A line for people ("install revision 1-6-8").
    pub title: String,
    /// The group it belongs to (a cluster): the unit of partial rollback and
    /// of group concurrency limits.
    pub group: Option<String>,
    /// What it does.
    pub action: StepAction,
    /// Steps that must succeed before it starts.
    pub depends_on: Vec<StepId>,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Per-attempt timeout; 0 for none.
    pub timeout_ms: u64,
    /// How it is undone.
    pub compensation: Compensation,
}

impl StepSpec {
    /// A step running activity `name`, with defaults: no group, no
    /// dependencies, the default retry policy, no timeout, no compensation.
    pub fn activity(id: &str, name: &str, input: Payload) -> Result<Self, PlanError> {
        Ok(Self {
            id: StepId::new(id)?,
            title: id.to_string(),
            group: None,
            action: StepAction::Activity { name: name.into(), input },
            depends_on: Vec::new(),
            retry: RetryPolicy::default(),
            timeout_ms: 0,
            compensation: Compensation::None,
        })
    }
}

/// At most `active_max` of `groups` may be in progress at once. A group is
/// in progress from the start of its first step until all of its steps
/// are done (or it has rolled back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLimit {
    /// A name for messages (`wave-2`).
    pub name: String,
    /// The groups it covers.
    pub groups: Vec<String>,
    /// How many may be in progress at once; at least 1.
    pub active_max: u32,
}

/// What happens when a step fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// Stop and wait for an operator: resume (retry), skip, or roll back.
    Pause,
    /// Roll the whole workflow back.
    RollbackAll,
    /// Roll back only the failed step's group; other groups go on. Steps
    /// that depend on the group are blocked, and the workflow ends failed.
    RollbackGroup,
}

/// A workflow's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Its steps, in the order they were planned.
    pub steps: Vec<StepSpec>,
    /// Concurrency limits over groups.
    pub group_limits: Vec<GroupLimit>,
    /// What a failure does.
    pub on_failure: FailurePolicy,
}

/// A plan that breaks a rule, with the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A step id is empty, too long, or has a character outside `[A-Za-z0-9-_./:]`.
    #[error("step id {0:?} must be 1 to 200 characters of A-Z a-z 0-9 - _ . / :")]
    StepId(String),
    /// Two steps share an id.
    #[error("step id {0} is used twice")]
    Duplicate(StepId),
    /// A dependency names no step.
    #[error("step {step} depends on {missing}, which is not in the plan")]
    UnknownDependency {
        /// The step.
        step: StepId,
        /// The dependency it names.
        missing: StepId,
    },
    /// The dependencies form a cycle through this step.
    #[error("step {0} depends on itself through its dependencies")]
    Cycle(StepId),
    /// A number or size is out of bounds.
    #[error("{0}")]
    Bounds(String),
    /// Steps may be added only before the steps that will depend on them start.
    #[error("step {0} has already started; it cannot gain dependencies")]
    NotPending(StepId),
}

impl Plan {
    /// Checks every rule a recorded plan must keep.
    pub fn validate(&self) -> Result<(), PlanError> {
        validate_steps(&self.steps, &BTreeSet::new())?;
        let groups: BTreeSet<&str> = self.steps.iter().filter_map(|step| step.group.as_deref()).collect();
        for limit in &self.group_limits {
            if limit.active_max == 0 {
                return Err(PlanError::Bounds(format!("group limit {}: active_max must be at least 1", limit.name)));
            }
            if let Some(unknown) = limit.groups.iter().find(|group| !groups.contains(group.as_str())) {
                return Err(PlanError::Bounds(format!(
                    "group limit {} names group {unknown}, which has no step",
                    limit.name
                )));
            }
        }
        Ok(())
    }
}

/// Checks `steps` (new ones, when `existing` holds the ids already planned):
/// ids, bounds, dependencies, and that there is no cycle.
pub(crate) fn validate_steps(steps: &[StepSpec], existing: &BTreeSet<StepId>) -> Result<(), PlanError> {
    if steps.len() + existing.len() > STEPS_COUNT_MAX {
        return Err(PlanError::Bounds(format!("a plan may hold at most {STEPS_COUNT_MAX} steps")));
    }
    let mut ids: BTreeSet<&StepId> = existing.iter().collect();
    for step in steps {
        StepId::new(step.id.as_str())?;
        if !ids.insert(&step.id) {
            return Err(PlanError::Duplicate(step.id.clone()));
        }
        check_step_bounds(step)?;
    }
    for step in steps {
        if let Some(missing) = step.depends_on.iter().find(|dep| !ids.contains(dep)) {
            return Err(PlanError::UnknownDependency { step: step.id.clone(), missing: missing.clone() });
        }
    }
    check_acyclic(steps)
}

fn check_step_bounds(step: &StepSpec) -> Result<(), PlanError> {
    let bounds = |why: String| Err(PlanError::Bounds(format!("step {}: {why}", step.id)));
    if step.depends_on.len() > DEPENDENCIES_COUNT_MAX {
        return bounds(format!("more than {DEPENDENCIES_COUNT_MAX} dependencies"));
    }
    if step.retry.attempts_max == 0 || step.retry.attempts_max > ATTEMPTS_MAX {
        return bounds(format!("attempts_max must be 1 to {ATTEMPTS_MAX}"));
    }
    if step.timeout_ms > DURATION_MS_MAX {
        return bounds(format!("timeout_ms over {DURATION_MS_MAX}"));
    }
    if let StepAction::Sleep { duration_ms } = step.action
        && duration_ms > DURATION_MS_MAX
    {
        return bounds(format!("sleep over {DURATION_MS_MAX} ms"));
    }
    if let Compensation::Activity { retry, timeout_ms, .. } = &step.compensation
        && (retry.attempts_max == 0 || retry.attempts_max > ATTEMPTS_MAX || *timeout_ms > DURATION_MS_MAX)
    {
        return bounds("compensation retry or timeout out of bounds".into());
    }
    Ok(())
}

/// Kahn's algorithm over the new steps (dependencies on existing steps are
/// already satisfied edges and cannot close a cycle).
fn check_acyclic(steps: &[StepSpec]) -> Result<(), PlanError> {
    let index: BTreeMap<&StepId, usize> = steps.iter().enumerate().map(|(at, step)| (&step.id, at)).collect();
    let mut waiting_on = vec![0usize; steps.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (at, step) in steps.iter().enumerate() {
        for dep in &step.depends_on {
            if let Some(&from) = index.get(dep) {
                waiting_on[at] += 1;
                dependents[from].push(at);
            }
        }
    }
    let mut ready: Vec<usize> = (0..steps.len()).filter(|at| waiting_on[*at] == 0).collect();
    let mut done = 0;
    while let Some(at) = ready.pop() {
        done += 1;
        for &next in &dependents[at] {
            waiting_on[next] -= 1;
            if waiting_on[next] == 0 {
                ready.push(next);
            }
        }
    }
    if done == steps.len() {
        return Ok(());
    }
    let stuck = waiting_on.iter().position(|count| *count > 0).expect("some step is stuck");
    Err(PlanError::Cycle(steps[stuck].id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, deps: &[&str]) -> StepSpec {
        let mut spec = StepSpec::activity(id, "noop", Payload::null()).expect("valid id");
        spec.depends_on = deps.iter().map(|dep| StepId::new(*dep).expect("id")).collect();
        spec
    }

    fn plan(steps: Vec<StepSpec>) -> Plan {
        Plan { steps, group_limits: Vec::new(), on_failure: FailurePolicy::Pause }
    }

    #[test]
    fn a_valid_graph_passes() {
        plan(vec![step("a", &[]), step("b", &["a"]), step("c", &["a", "b"])]).validate().expect("valid");
    }

    #[test]
    fn every_broken_rule_is_named() {
        assert_eq!(
            plan(vec![step("a", &[]), step("a", &[])]).validate(),
            Err(PlanError::Duplicate(StepId("a".into())))
        );
        assert!(matches!(plan(vec![step("a", &["zz"])]).validate(), Err(PlanError::UnknownDependency { .. })));
        assert!(matches!(plan(vec![step("a", &["b"]), step("b", &["a"])]).validate(), Err(PlanError::Cycle(_))));
        assert!(matches!(StepId::new("has space"), Err(PlanError::StepId(_))));
        assert!(matches!(StepId::new(""), Err(PlanError::StepId(_))));
        let mut zero = step("a", &[]);
        zero.retry.attempts_max = 0;
        assert!(matches!(plan(vec![zero]).validate(), Err(PlanError::Bounds(_))));
        let mut limited = plan(vec![step("a", &[])]);
        limited.group_limits.push(GroupLimit { name: "w".into(), groups: vec!["nope".into()], active_max: 1 });
        assert!(matches!(limited.validate(), Err(PlanError::Bounds(why)) if why.contains("nope")));
    }

    #[test]
    fn added_steps_may_depend_on_existing_ones() {
        let existing = BTreeSet::from([StepId::new("a").expect("id")]);
        validate_steps(&[step("b", &["a"])], &existing).expect("valid");
        assert!(matches!(validate_steps(&[step("a", &[])], &existing), Err(PlanError::Duplicate(_))));
    }
}
