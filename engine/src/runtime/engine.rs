//! The engine: starts workflows, drives them, takes signals.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canaryflow_store::{ListFilter, NewRecord, Status, Store, SummaryFields, WorkflowId};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

use crate::codec;
use crate::core::event::{Event, RecordedEvent, Signal, SignalReceived, WorkflowStarted};
use crate::core::payload::{Payload, find_secret};
use crate::core::plan::{Compensation, Plan, StepAction};
use crate::core::state::WorkflowState;
use crate::error::{Error, Result};
use crate::runtime::activity::Registry;
use crate::runtime::driver::{Driver, Inbox};
use crate::runtime::journal;

/// Signals waiting for a driver, per workflow.
pub(crate) const INBOX_COUNT_MAX: usize = 64;
/// Progress notices kept for slow subscribers before they lag.
const PROGRESS_COUNT_MAX: usize = 4_096;

/// Testing aids: abort the process at a chosen point of the history.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failpoints {
    /// Abort right after the append holding this sequence number is durable.
    pub crash_after_seq: Option<u64>,
    /// Abort right before appending a batch that would hold this sequence number.
    pub crash_before_seq: Option<u64>,
}

/// How an engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Workflows driven at once; more wait for a slot.
    pub workflows_running_max: usize,
    /// Who signals come from, for the audit trail.
    pub actor: String,
    /// Crash points, for tests and `demo --crash-after`.
    pub failpoints: Failpoints,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { workflows_running_max: 1_024, actor: "canaryflow".into(), failpoints: Failpoints::default() }
    }
}

/// A workflow to start: exactly what its first event records.
pub type NewWorkflow = WorkflowStarted;

impl NewWorkflow {
    /// A workflow of `definition` version 1, named `name`, with no labels and no input.
    #[must_use]
    pub fn new(definition: &str, name: &str, plan: Plan) -> Self {
        Self {
            definition: definition.into(),
            definition_version: 1,
            name: name.into(),
            labels: BTreeMap::new(),
            input: Payload::null(),
            plan,
        }
    }
}

/// Where a workflow stood when [`Engine::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The workflow.
    pub id: WorkflowId,
    /// Its status: succeeded, failed, rolled back, cancelled or paused.
    pub status: Status,
    /// Why it paused or failed, if it did.
    pub reason: Option<String>,
}

/// A recorded event, as it happens, for progress displays.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The workflow.
    pub workflow_id: WorkflowId,
    /// The event and where it was recorded.
    pub recorded: RecordedEvent,
    /// The workflow's status after it.
    pub status: Status,
}

/// The clock: wall time at start plus tokio's monotonic time since, so that
/// tests with paused tokio time move it too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_wall_ms: u64,
    base: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        let base_wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        Self { base_wall_ms, base: tokio::time::Instant::now() }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.base_wall_ms + u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn until(&self, at_ms: u64) -> Duration {
        Duration::from_millis(at_ms.saturating_sub(self.now_ms()))
    }
}

/// The durable workflow runtime. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

#[derive(Debug)]
pub(crate) struct EngineInner {
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    pub(crate) config: EngineConfig,
    pub(crate) clock: Clock,
    pub(crate) drivers: Mutex<HashMap<WorkflowId, mpsc::Sender<Inbox>>>,
    pub(crate) progress: broadcast::Sender<Progress>,
    slots: Arc<Semaphore>,
}

impl Engine {
    /// An engine over `store`, running `registry`'s activities.
    #[must_use]
    pub fn new(store: Store, registry: Registry, config: EngineConfig) -> Self {
        assert!(config.workflows_running_max > 0, "at least one workflow at a time");
        let slots = Arc::new(Semaphore::new(config.workflows_running_max));
        let (progress, _) = broadcast::channel(PROGRESS_COUNT_MAX);
        let inner = EngineInner {
            store,
            registry,
            config,
            clock: Clock::new(),
            drivers: Mutex::new(HashMap::new()),
            progress,
            slots,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The store it records into.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Its activities.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Progress notices of every workflow this engine drives.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    /// The time the engine uses, Unix ms.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Checks and records a new workflow; it does not run it (see [`Engine::run`]).
    pub async fn start(&self, new: NewWorkflow) -> Result<WorkflowId> {
        new.plan.validate()?;
        self.check_activities(&new.plan)?;
        let id = WorkflowId::new_v7();
        let started = Event::WorkflowStarted(Box::new(new));
        for payload in started.payloads() {
            if let Some(path) = find_secret(payload) {
                return Err(Error::Secret(format!("the workflow's input or plan holds a credential at {path}")));
            }
        }
        let recorded = RecordedEvent { seq: 0, at_ms: self.now_ms(), event: started };
        let state = WorkflowState::start(id, &recorded).map_err(|source| Error::Fold { workflow_id: id, source })?;
        let (kind, kind_version, payload) = codec::encode(&recorded.event);
        let record = NewRecord { kind, kind_version, at_ms: recorded.at_ms, payload };
        let fields = SummaryFields { name: state.name.clone(), status: state.status(), labels: state.labels.clone() };
        let store = self.inner.store.clone();
        blocking(move || store.append(id, 0, &[record], &fields).map_err(Error::from)).await?;
        tracing::info!(workflow = %id, name = %state.name, steps = state.steps.len(), "workflow started");
        Ok(id)
    }

    fn check_activities(&self, plan: &Plan) -> Result<()> {
        for step in &plan.steps {
            let names = [
                match &step.action {
                    StepAction::Activity { name, .. } => Some(name),
                    _ => None,
                },
                match &step.compensation {
                    Compensation::Activity { name, .. } => Some(name),
                    _ => None,
                },
            ];
            if let Some(missing) = names.into_iter().flatten().find(|name| !self.inner.registry.contains(name)) {
                return Err(Error::Invalid(format!(
                    "step {} uses activity {missing}, which is not registered",
                    step.id
                )));
            }
        }
        Ok(())
    }

    /// Drives workflow `id` until it succeeds, fails, rolls back, is
    /// cancelled or pauses. Waits on timers and approvals on the way.
    pub async fn run(&self, id: WorkflowId) -> Result<RunOutcome> {
        let _slot = self.inner.slots.clone().acquire_owned().await.expect("the engine never closes its semaphore");
        let (sender, inbox) = mpsc::channel(INBOX_COUNT_MAX);
        {
            let mut drivers = self.inner.drivers.lock().expect("driver map lock poisoned");
            if drivers.contains_key(&id) {
                return Err(Error::Invalid(format!("workflow {id} is already running in this process")));
            }
            drivers.insert(id, sender);
        }
        let result = async {
            let state = self.load_state(id).await?;
            Driver::new(self.inner.clone(), state, inbox).drive().await
        }
        .await;
        self.inner.drivers.lock().expect("driver map lock poisoned").remove(&id);
        result
    }

    /// Drives every workflow that is running or rolling back, concurrently
    /// (up to `workflows_running_max` at once), until each settles.
    pub async fn run_unfinished(&self) -> Result<Vec<(WorkflowId, Result<RunOutcome>)>> {
        let filter = ListFilter { statuses: vec![Status::Running, Status::RollingBack], ..ListFilter::default() };
        let store = self.inner.store.clone();
        let summaries = blocking(move || store.list(&filter).map_err(Error::from)).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for summary in summaries {
            let engine = self.clone();
            tasks.spawn(async move { (summary.id, engine.run(summary.id).await) });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            out.push(joined.map_err(|err| Error::Invalid(format!("a workflow driver panicked: {err}")))?);
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Sends `signal` to workflow `id`: to its driver if this process runs
    /// it, else straight into its history. Refused, with nothing recorded,
    /// when it does not apply now. Returns the signal's sequence number.
    pub async fn signal(&self, id: WorkflowId, signal: Signal) -> Result<u64> {
        let by = self.inner.config.actor.clone();
        self.signal_by(id, signal, by).await
    }

    /// [`Engine::signal`] on behalf of `by` (who asked, as recorded in the
    /// history): for requests relayed from another process.
    pub async fn signal_by(&self, id: WorkflowId, signal: Signal, by: String) -> Result<u64> {
        let sender = self.inner.drivers.lock().expect("driver map lock poisoned").get(&id).cloned();
        if let Some(sender) = sender {
            let (reply, answer) = oneshot::channel();
            let message = Inbox::Signal { signal: signal.clone(), by: by.clone(), reply };
            if sender.send(message).await.is_ok()
                && let Ok(answer) = answer.await
            {
                return answer;
            }
            // The driver ended meanwhile: no one else writes now.
        }
        let store = self.inner.store.clone();
        let at_ms = self.now_ms();
        blocking(move || {
            let mut state = journal::load_state(&store, id, None)?;
            state.check_signal(&signal).map_err(Error::SignalRejected)?;
            let recorded = RecordedEvent {
                seq: state.next_seq,
                at_ms,
                event: Event::SignalReceived(SignalReceived { signal, by }),
            };
            state.apply(&recorded).map_err(|source| Error::Fold { workflow_id: id, source })?;
            journal::append(&store, &journal::AppendHead::of(&state), std::slice::from_ref(&recorded))?;
            Ok(recorded.seq)
        })
        .await
    }

    /// Workflow `id`'s current state, folded from its history.
    pub async fn load_state(&self, id: WorkflowId) -> Result<WorkflowState> {
        let store = self.inner.store.clone();
        blocking(move || journal::load_state(&store, id, None)).await
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|err| Error::Invalid(format!("a store task failed: {err}")))?
}
