//! One workflow's driver: the loop that asks `decide`, records, runs
//! activities, and waits. It is the only writer of its workflow's history
//! while it lives.

use std::collections::HashMap;
use std::sync::Arc;

use canaryflow_store::Status;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::core::decide::{Command, decide, recover};
use crate::core::event::{
    CompensationFailed, CompensationStarted, CompensationSucceeded, Event, RecordedEvent, Signal, SignalReceived,
    StepAborted, StepFailed, StepStarted, StepSucceeded, StepsAdded,
};
use crate::core::payload::{Payload, find_secret};
use crate::core::plan::{Compensation, StepAction, StepId};
use crate::core::state::{Outcome, WorkflowState};
use crate::error::{Error, Result};
use crate::runtime::activity::{ActivityContext, ActivityError, ActivityOutput, Compensating};
use crate::runtime::engine::{EngineInner, Progress, RunOutcome, blocking};
use crate::runtime::journal;

/// Activity results waiting for the driver.
const RESULTS_COUNT_MAX: usize = 256;
/// Decisions in one tick before the driver concludes `decide` loops (a bug).
const DECISIONS_PER_TICK_MAX: usize = 100_000;

/// A message to a running driver.
pub(crate) enum Inbox {
    Signal { signal: Signal, by: String, reply: oneshot::Sender<Result<u64>> },
}

struct ActivityResult {
    step: StepId,
    attempt: u32,
    compensating: bool,
    outcome: Result<ActivityOutput, ActivityError>,
}

/// An attempt recorded as started, to run once its start is durable.
struct Launch {
    step: StepId,
    attempt: u32,
    resumed: bool,
    compensating: bool,
}

pub(crate) struct Driver {
    engine: Arc<EngineInner>,
    state: WorkflowState,
    inbox: mpsc::Receiver<Inbox>,
    results_sender: mpsc::Sender<ActivityResult>,
    results: mpsc::Receiver<ActivityResult>,
    /// Attempts running here, by (step, compensating).
    running: HashMap<(StepId, bool), (u32, AbortHandle)>,
    /// Applied to `state`, not yet durable.
    unrecorded: Vec<RecordedEvent>,
    launches: Vec<Launch>,
    replies: Vec<(oneshot::Sender<Result<u64>>, u64)>,
    /// The workflow's input, shared with every activity.
    input: std::sync::Arc<Payload>,
}

impl Driver {
    pub(crate) fn new(engine: Arc<EngineInner>, state: WorkflowState, inbox: mpsc::Receiver<Inbox>) -> Self {
        let (results_sender, results) = mpsc::channel(RESULTS_COUNT_MAX);
        let input = std::sync::Arc::new(state.input.clone());
        Self {
            input,
            engine,
            state,
            inbox,
            results_sender,
            results,
            running: HashMap::new(),
            unrecorded: Vec::new(),
            launches: Vec::new(),
            replies: Vec::new(),
        }
    }

    pub(crate) async fn drive(mut self) -> Result<RunOutcome> {
        let span = tracing::info_span!("workflow", id = %self.state.id, name = %self.state.name);
        async move {
            for command in recover(&self.state) {
                self.execute(command)?;
            }
            loop {
                let wake_at_ms = self.settle()?;
                self.flush().await?;
                if let Some(outcome) = self.finished() {
                    tracing::info!(status = %outcome.status, "workflow settled");
                    return Ok(outcome);
                }
                self.wait(wake_at_ms).await?;
            }
        }
        .instrument(span)
        .await
    }

    /// Asks `decide` and carries out its commands until it only says "wait".
    fn settle(&mut self) -> Result<Option<u64>> {
        for _ in 0..DECISIONS_PER_TICK_MAX {
            let decision = decide(&self.state, self.engine.clock.now_ms());
            if decision.commands.is_empty() {
                return Ok(decision.wake_at_ms);
            }
            for command in decision.commands {
                self.execute(command)?;
            }
        }
        panic!("decide gave commands {DECISIONS_PER_TICK_MAX} times in one tick: it does not converge");
    }

    fn execute(&mut self, command: Command) -> Result<()> {
        match command {
            Command::Record(event) => self.record(event),
            Command::Start { step, attempt, resumed } => {
                self.record(Event::StepStarted(StepStarted { step: step.clone(), attempt, resumed }))?;
                self.launches.push(Launch { step, attempt, resumed, compensating: false });
                Ok(())
            }
            Command::Compensate { step, attempt, resumed } => {
                self.record(Event::CompensationStarted(CompensationStarted { step: step.clone(), attempt, resumed }))?;
                self.launches.push(Launch { step, attempt, resumed, compensating: true });
                Ok(())
            }
            Command::Abort { step, attempt, reason } => {
                if let Some((_, handle)) = self.running.remove(&(step.clone(), false)) {
                    handle.abort();
                }
                self.launches.retain(|launch| launch.compensating || launch.step != step);
                tracing::info!(step = %step, attempt, %reason, "attempt aborted");
                self.record(Event::StepAborted(StepAborted { step, attempt, reason }))
            }
        }
    }

    fn record(&mut self, event: Event) -> Result<()> {
        let recorded = RecordedEvent { seq: self.state.next_seq, at_ms: self.engine.clock.now_ms(), event };
        self.state.apply(&recorded).map_err(|source| Error::Fold { workflow_id: self.state.id, source })?;
        self.unrecorded.push(recorded);
        Ok(())
    }

    /// Makes the recorded events durable, then starts the attempts they announce.
    async fn flush(&mut self) -> Result<()> {
        if !self.unrecorded.is_empty() {
            let events = std::mem::take(&mut self.unrecorded);
            let (first_seq, last_seq) = (events[0].seq, events[events.len() - 1].seq);
            let failpoints = self.engine.config.failpoints;
            if failpoints.crash_before_seq.is_some_and(|seq| (first_seq..=last_seq).contains(&seq)) {
                eprintln!("failpoint: aborting before recording sequence {first_seq}..={last_seq}");
                std::process::abort();
            }
            let (store, head) = (self.engine.store.clone(), journal::AppendHead::of(&self.state));
            let events = blocking(move || journal::append(&store, &head, &events).map(|()| events)).await?;
            if failpoints.crash_after_seq.is_some_and(|seq| (first_seq..=last_seq).contains(&seq)) {
                eprintln!("failpoint: aborting after recording sequence {first_seq}..={last_seq}");
                std::process::abort();
            }
            self.publish(events);
            for (reply, seq) in self.replies.drain(..) {
                let _ = reply.send(Ok(seq));
            }
        }
        for launch in std::mem::take(&mut self.launches) {
            self.launch(launch);
        }
        Ok(())
    }

    fn publish(&self, events: Vec<RecordedEvent>) {
        if self.engine.progress.receiver_count() == 0 {
            return;
        }
        let status = self.state.status();
        for recorded in events {
            let _ = self.engine.progress.send(Progress { workflow_id: self.state.id, recorded, status });
        }
    }

    fn launch(&mut self, launch: Launch) {
        let Launch { step, attempt, resumed, compensating } = launch;
        let spec = &self.state.step(&step).expect("a launched step is in the plan").spec;
        let (name, input, timeout_ms) = match (&spec.action, &spec.compensation, compensating) {
            (StepAction::Activity { name, input }, _, false) => (name.clone(), input.clone(), spec.timeout_ms),
            (_, Compensation::Activity { name, input, timeout_ms, .. }, true) => {
                (name.clone(), input.clone(), *timeout_ms)
            }
            _ => unreachable!("decide launches only activities and activity compensations"),
        };
        let step_state = self.state.step(&step).expect("present");
        let context = ActivityContext {
            workflow_id: self.state.id,
            step: step.clone(),
            group: spec.group.clone(),
            attempt,
            resumed,
            idempotency_key: if compensating {
                format!("{}/{step}/undo", self.state.id)
            } else {
                format!("{}/{step}", self.state.id)
            },
            compensating: compensating.then(|| Compensating {
                forward_input: match &spec.action {
                    StepAction::Activity { input, .. } => input.clone(),
                    _ => Payload::null(),
                },
                forward_output: step_state.output.clone(),
            }),
            workflow_input: self.input.clone(),
            dependency_outputs: spec
                .depends_on
                .iter()
                .filter_map(|dep| Some((dep.clone(), self.state.step(dep)?.output.clone()?)))
                .collect(),
        };
        let activity = self.engine.registry.get(&name);
        let span = tracing::info_span!("step", step = %step, attempt, compensating, resumed);
        let work = async move {
            let Some(activity) = activity else {
                return Err(ActivityError::fatal("unregistered", format!("no activity named {name} is registered")));
            };
            tracing::debug!("attempt started");
            let future = activity.run(context, input);
            if timeout_ms == 0 {
                return future.await;
            }
            match tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), future).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    Err(ActivityError::retryable("timeout", format!("the attempt timed out after {timeout_ms} ms")))
                }
            }
        }
        .instrument(span);
        let inner = tokio::spawn(work);
        let abort = inner.abort_handle();
        let sender = self.results_sender.clone();
        let step_for_result = step.clone();
        tokio::spawn(async move {
            let outcome = match inner.await {
                Ok(outcome) => outcome,
                Err(err) if err.is_panic() => Err(ActivityError::fatal("panic", "the activity panicked")),
                Err(_) => return, // aborted: the driver recorded why
            };
            let _ = sender.send(ActivityResult { step: step_for_result, attempt, compensating, outcome }).await;
        });
        self.running.insert((step, compensating), (attempt, abort));
    }

    /// The outcome to return, once there is nothing more to do for now.
    fn finished(&self) -> Option<RunOutcome> {
        let (status, reason) = match (&self.state.outcome, &self.state.paused) {
            (Some(Outcome::Failed { reason }), _) => (Status::Failed, Some(reason.clone())),
            (Some(Outcome::Cancelled { reason }), _) => (Status::Cancelled, Some(reason.clone())),
            (Some(Outcome::Succeeded), _) => (Status::Succeeded, None),
            (Some(Outcome::RolledBack), _) => (Status::RolledBack, None),
            (None, Some(reason)) if self.running.is_empty() => (Status::Paused, Some(reason.clone())),
            _ => return None,
        };
        Some(RunOutcome { id: self.state.id, status, reason })
    }

    async fn wait(&mut self, wake_at_ms: Option<u64>) -> Result<()> {
        let sleep = wake_at_ms.map(|at_ms| self.engine.clock.until(at_ms));
        tokio::select! {
            Some(result) = self.results.recv() => {
                self.on_result(result)?;
                // Results that arrived meanwhile go into the same decision
                // and the same append: one fsync for a burst of completions
                // (a wave's 400 namespace moves end within a second).
                for _ in 1..RESULTS_COUNT_MAX {
                    let Ok(result) = self.results.try_recv() else { break };
                    self.on_result(result)?;
                }
                Ok(())
            }
            Some(message) = self.inbox.recv() => self.on_message(message),
            () = async { tokio::time::sleep(sleep.unwrap_or_default()).await }, if sleep.is_some() => Ok(()),
        }
    }

    fn on_message(&mut self, message: Inbox) -> Result<()> {
        match message {
            Inbox::Signal { signal, by, reply } => {
                if let Err(why) = self.state.check_signal(&signal) {
                    let _ = reply.send(Err(Error::SignalRejected(why)));
                    return Ok(());
                }
                tracing::info!(signal = signal.name(), %by, "signal received");
                self.record(Event::SignalReceived(SignalReceived { signal, by }))?;
                self.replies.push((reply, self.state.next_seq - 1));
                Ok(())
            }
        }
    }

    fn on_result(&mut self, result: ActivityResult) -> Result<()> {
        let ActivityResult { step, attempt, compensating, outcome } = result;
        match self.running.get(&(step.clone(), compensating)) {
            Some((running, _)) if *running == attempt => {}
            _ => return Ok(()), // a result of an attempt that was aborted meanwhile
        }
        self.running.remove(&(step.clone(), compensating));
        let outcome = outcome.and_then(|output| self.check_output(&step, output));
        match (compensating, outcome) {
            (false, Ok(output)) => {
                if !output.add_steps.is_empty() || !output.add_dependencies.is_empty() {
                    let added =
                        StepsAdded { by: step.clone(), steps: output.add_steps, dependencies: output.add_dependencies };
                    self.record(Event::StepsAdded(added))?;
                }
                tracing::info!(step = %step, attempt, "step succeeded");
                self.record(Event::StepSucceeded(StepSucceeded { step, attempt, output: output.output }))
            }
            (false, Err(error)) => {
                tracing::warn!(step = %step, attempt, %error, "step attempt failed");
                self.record(Event::StepFailed(StepFailed { step, attempt, error: error.into_step_error() }))
            }
            (true, Ok(output)) => {
                tracing::info!(step = %step, attempt, "compensation succeeded");
                self.record(Event::CompensationSucceeded(CompensationSucceeded {
                    step,
                    attempt,
                    output: output.output,
                }))
            }
            (true, Err(error)) => {
                tracing::warn!(step = %step, attempt, %error, "compensation attempt failed");
                self.record(Event::CompensationFailed(CompensationFailed {
                    step,
                    attempt,
                    error: error.into_step_error(),
                }))
            }
        }
    }

    /// An output is refused if it carries a secret or extends the plan
    /// invalidly; the attempt then fails without retry, and nothing of the
    /// output is recorded.
    fn check_output(&self, step: &StepId, output: ActivityOutput) -> Result<ActivityOutput, ActivityError> {
        let added_payloads = output.add_steps.iter().flat_map(|spec| {
            let action = match &spec.action {
                StepAction::Activity { input, .. } => Some(input),
                _ => None,
            };
            let compensation = match &spec.compensation {
                Compensation::Activity { input, .. } => Some(input),
                _ => None,
            };
            action.into_iter().chain(compensation)
        });
        for payload in std::iter::once(&output.output).chain(added_payloads) {
            if let Some(path) = find_secret(payload) {
                let message = format!(
                    "the output of step {step} holds a credential at {path}; canaryflow does not record credentials"
                );
                return Err(ActivityError::fatal("secret", message));
            }
        }
        if output.add_steps.is_empty() && output.add_dependencies.is_empty() {
            return Ok(output);
        }
        let added = StepsAdded {
            by: step.clone(),
            steps: output.add_steps.clone(),
            dependencies: output.add_dependencies.clone(),
        };
        let trial = RecordedEvent { seq: self.state.next_seq, at_ms: 0, event: Event::StepsAdded(added) };
        if let Err(err) = self.state.clone().apply(&trial) {
            return Err(ActivityError::fatal(
                "invalid-plan",
                format!("step {step} tried to extend the plan: {}", err.why),
            ));
        }
        let unknown = output.add_steps.iter().find_map(|spec| {
            let name = match &spec.action {
                StepAction::Activity { name, .. } => Some(name),
                _ => None,
            };
            name.filter(|name| !self.engine.registry.contains(name))
        });
        if let Some(name) = unknown {
            return Err(ActivityError::fatal(
                "invalid-plan",
                format!("step {step} added a step using unregistered activity {name}"),
            ));
        }
        Ok(output)
    }
}
