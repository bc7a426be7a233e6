//! A synchronous, in-memory runtime for testing the pure core: it carries
//! out `decide`'s commands at once, with activity outcomes scripted per
//! (step, attempt), and advances a fake clock to each wake-up time.

use std::collections::BTreeMap;

use canaryflow_store::WorkflowId;

use crate::core::decide::{Command, decide, recover};
use crate::core::event::*;
use crate::core::payload::Payload;
use crate::core::plan::*;
use crate::core::state::WorkflowState;

/// What an attempt does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeed,
    FailRetryable,
    FailFatal,
    /// Fails with a blocker only an operator can mend.
    FailNeedsOperator,
    /// Stays running until aborted (a hung activity).
    Hang,
}

pub struct World {
    pub id: WorkflowId,
    pub state: WorkflowState,
    pub history: Vec<RecordedEvent>,
    pub now_ms: u64,
    /// Scripted outcomes; anything unscripted succeeds.
    pub forward: BTreeMap<(String, u32), Outcome>,
    pub compensations: BTreeMap<(String, u32), Outcome>,
    /// Attempts started, in order, as (step, attempt, compensating).
    pub runs: Vec<(String, u32, bool)>,
    /// Activities still running (Hang), by step.
    pub hanging: BTreeMap<String, (u32, bool)>,
}

pub fn id(text: &str) -> StepId {
    StepId::new(text).expect("step id")
}

pub fn step(name: &str, deps: &[&str]) -> StepSpec {
    let mut spec = StepSpec::activity(name, "test", Payload::null()).expect("step");
    spec.depends_on = deps.iter().map(|dep| id(dep)).collect();
    spec.retry = RetryPolicy::exponential(3, 1_000, 10_000);
    spec.compensation = Compensation::Activity {
        name: "undo".into(),
        input: Payload::null(),
        retry: RetryPolicy::exponential(3, 500, 5_000),
        timeout_ms: 0,
    };
    spec
}

pub fn grouped(name: &str, group: &str, deps: &[&str]) -> StepSpec {
    let mut spec = step(name, deps);
    spec.group = Some(group.into());
    spec
}

pub fn plan(steps: Vec<StepSpec>, on_failure: FailurePolicy) -> Plan {
    Plan { steps, group_limits: Vec::new(), on_failure }
}

impl World {
    pub fn new(plan: Plan) -> Self {
        let id = WorkflowId::from_u128(7);
        let started = WorkflowStarted {
            definition: "test".into(),
            definition_version: 1,
            name: "test".into(),
            labels: BTreeMap::new(),
            input: Payload::null(),
            plan,
        };
        let first = RecordedEvent { seq: 0, at_ms: 1_000, event: Event::WorkflowStarted(Box::new(started)) };
        let state = WorkflowState::start(id, &first).expect("valid start");
        Self {
            id,
            state,
            history: vec![first],
            now_ms: 1_000,
            forward: BTreeMap::new(),
            compensations: BTreeMap::new(),
            runs: Vec::new(),
            hanging: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, event: Event) {
        let recorded = RecordedEvent { seq: self.state.next_seq, at_ms: self.now_ms, event };
        self.state.apply(&recorded).unwrap_or_else(|err| panic!("the core produced an invalid event: {err}"));
        self.history.push(recorded);
    }

    pub fn signal(&mut self, signal: Signal) {
        self.record(Event::SignalReceived(SignalReceived { signal, by: "tester".into() }));
    }

    /// Runs decide/execute until the decision is to wait for an outside
    /// event (an approval, a hung activity) or for nothing at all. Advances
    /// the clock to wake-up times when `advance_clock`.
    pub fn run(&mut self, advance_clock: bool) {
        for _ in 0..100_000 {
            let decision = decide(&self.state, self.now_ms);
            if decision.commands.is_empty() {
                match decision.wake_at_ms {
                    Some(at) if advance_clock => {
                        assert!(at > self.now_ms, "woken for a time already past: {at} <= {}", self.now_ms);
                        self.now_ms = at;
                        continue;
                    }
                    _ => return,
                }
            }
            for command in decision.commands {
                self.execute(command);
            }
            self.now_ms += 1;
        }
        panic!("the workflow did not settle in 100000 decisions");
    }

    /// What a new process does first.
    pub fn recover(&mut self) {
        self.hanging.clear();
        for command in recover(&self.state) {
            self.execute(command);
        }
    }

    pub fn execute(&mut self, command: Command) {
        match command {
            Command::Record(event) => self.record(event),
            Command::Start { step, attempt, resumed } => {
                self.record(Event::StepStarted(StepStarted { step: step.clone(), attempt, resumed }));
                self.runs.push((step.to_string(), attempt, false));
                let outcome = self.forward.get(&(step.to_string(), attempt)).copied().unwrap_or(Outcome::Succeed);
                self.finish_forward(step, attempt, outcome);
            }
            Command::Compensate { step, attempt, resumed } => {
                self.record(Event::CompensationStarted(CompensationStarted { step: step.clone(), attempt, resumed }));
                self.runs.push((step.to_string(), attempt, true));
                let outcome = self.compensations.get(&(step.to_string(), attempt)).copied().unwrap_or(Outcome::Succeed);
                self.finish_compensation(step, attempt, outcome);
            }
            Command::Abort { step, attempt, reason } => {
                self.hanging.remove(step.as_str());
                self.record(Event::StepAborted(StepAborted { step, attempt, reason }));
            }
        }
    }

    fn finish_forward(&mut self, step: StepId, attempt: u32, outcome: Outcome) {
        let error = |retryable| StepError {
            message: format!("scripted failure of {step}#{attempt}"),
            class: "test".into(),
            retryable,
        };
        match outcome {
            Outcome::Succeed => {
                let output = Payload::json(&format!("{step}#{attempt}")).expect("json");
                self.record(Event::StepSucceeded(StepSucceeded { step, attempt, output }));
            }
            Outcome::FailRetryable => {
                self.record(Event::StepFailed(StepFailed { step: step.clone(), attempt, error: error(true) }))
            }
            Outcome::FailFatal => {
                self.record(Event::StepFailed(StepFailed { step: step.clone(), attempt, error: error(false) }))
            }
            Outcome::FailNeedsOperator => {
                let error = StepError { class: NEEDS_OPERATOR.into(), ..error(false) };
                self.record(Event::StepFailed(StepFailed { step: step.clone(), attempt, error }));
            }
            Outcome::Hang => {
                self.hanging.insert(step.to_string(), (attempt, false));
            }
        }
    }

    fn finish_compensation(&mut self, step: StepId, attempt: u32, outcome: Outcome) {
        let error = |retryable| StepError {
            message: format!("scripted undo failure of {step}#{attempt}"),
            class: "test".into(),
            retryable,
        };
        match outcome {
            Outcome::Succeed => self.record(Event::CompensationSucceeded(CompensationSucceeded {
                step,
                attempt,
                output: Payload::null(),
            })),
            Outcome::FailRetryable => {
                self.record(Event::CompensationFailed(CompensationFailed {
                    step: step.clone(),
                    attempt,
                    error: error(true),
                }));
            }
            Outcome::FailFatal | Outcome::FailNeedsOperator | Outcome::Hang => {
                self.record(Event::CompensationFailed(CompensationFailed {
                    step: step.clone(),
                    attempt,
                    error: error(false),
                }));
            }
        }
    }

    /// Completes a hung forward attempt.
    pub fn complete(&mut self, step: &str, outcome: Outcome) {
        let (attempt, _) = self.hanging.remove(step).expect("the step is hanging");
        self.finish_forward(id(step), attempt, outcome);
    }

    /// The steps with a forward attempt running, in plan order.
    pub fn running(&self) -> Vec<&str> {
        let running =
            self.state.steps.iter().filter(|s| matches!(s.forward, crate::core::state::Forward::Running { .. }));
        running.map(|s| s.spec.id.as_str()).collect()
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.history.iter().map(|recorded| recorded.event.kind().name()).collect()
    }

    /// The steps whose compensation succeeded, in order.
    pub fn compensated(&self) -> Vec<String> {
        self.history
            .iter()
            .filter_map(|recorded| match &recorded.event {
                Event::CompensationSucceeded(e) => Some(e.step.to_string()),
                _ => None,
            })
            .collect()
    }

    /// Folding the whole history again gives the same state.
    pub fn assert_refolds(&self) {
        let again = WorkflowState::fold(self.id, &self.history).expect("the history folds");
        assert_eq!(again, self.state, "folding the history again gives another state");
    }
}
