//! Helpers for canaryflow's end-to-end tests: the crash-test workflow that
//! `crash-child` runs, and what the tests read back.
//!
//! The tests themselves are in `tests/`, one binary, one module per area.

use canaryflow_engine::{Compensation, FailurePolicy, Payload, Plan, RetryPolicy, StepId, StepSpec};

/// Which run the crash child makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every step succeeds.
    Forward,
    /// The last step fails for good, and the plan rolls everything back.
    Rollback,
}

impl Scenario {
    /// Its command-line name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Rollback => "rollback",
        }
    }

    /// Parses [`Scenario::name`].
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Forward, Self::Rollback].into_iter().find(|scenario| scenario.name() == text)
    }
}

/// The steps of the crash-test plan: `install`, then `move-a` and `move-b`
/// in parallel, then `verify`, then `finish` (which fails in the rollback
/// scenario). Every step but `verify` has a compensation.
pub const STEPS: [&str; 5] = ["install", "move-a", "move-b", "verify", "finish"];

/// The crash-test plan.
///
/// # Panics
/// Never: the ids are valid.
#[must_use]
pub fn crash_plan(scenario: Scenario) -> Plan {
    let deps: [&[&str]; 5] = [&[], &["install"], &["install"], &["move-a", "move-b"], &["verify"]];
    let steps = STEPS
        .iter()
        .zip(deps)
        .map(|(name, deps)| {
            let activity = if *name == "finish" && scenario == Scenario::Rollback { "effect.fail" } else { "effect" };
            let mut spec = StepSpec::activity(name, activity, Payload::json(name).expect("json")).expect("valid step");
            spec.depends_on = deps.iter().map(|dep| StepId::new(*dep).expect("valid id")).collect();
            spec.retry = RetryPolicy::exponential(2, 1, 5);
            spec.compensation = if *name == "verify" {
                Compensation::None
            } else {
                Compensation::Activity {
                    name: "effect.undo".into(),
                    input: Payload::null(),
                    retry: RetryPolicy::exponential(2, 1, 5),
                    timeout_ms: 0,
                }
            };
            spec
        })
        .collect();
    Plan { steps, group_limits: Vec::new(), on_failure: FailurePolicy::RollbackAll }
}

/// One line of the effects file: what ran, under which idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// `do` or `undo`.
    pub action: String,
    /// The step.
    pub step: String,
    /// The idempotency key the engine handed the activity.
    pub key: String,
    /// The attempt number.
    pub attempt: u32,
    /// Whether the attempt re-ran one left unfinished by a crash.
    pub resumed: bool,
}

/// Reads the effects file written by the crash child.
///
/// # Panics
/// If a line is not in the format the child writes.
#[must_use]
pub fn read_effects(path: &std::path::Path) -> Vec<Effect> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 5, "effects line {line:?}");
            Effect {
                action: fields[0].into(),
                step: fields[1].into(),
                key: fields[2].into(),
                attempt: fields[3].parse().expect("attempt"),
                resumed: fields[4] == "resumed",
            }
        })
        .collect()
}
