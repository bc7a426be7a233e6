//! Activities: the named pieces of work that steps run.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use canaryflow_store::WorkflowId;

use crate::core::event::StepError;
use crate::core::payload::Payload;
use crate::core::plan::{StepId, StepSpec};

/// What an activity returns.
pub type ActivityFuture = Pin<Box<dyn Future<Output = Result<ActivityOutput, ActivityError>> + Send>>;

/// A unit of work a step can run. It must be idempotent: the engine runs an
/// attempt again when a process stopped before recording its outcome, with
/// the same [`ActivityContext::idempotency_key`].
pub trait Activity: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, context: ActivityContext, input: Payload) -> ActivityFuture;
}

/// What an attempt knows about itself.
#[derive(Debug, Clone)]
pub struct ActivityContext {
    /// The workflow.
    pub workflow_id: WorkflowId,
    /// The step.
    pub step: StepId,
    /// The step's group (its cluster).
    pub group: Option<String>,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Whether this attempt re-runs one a stopped process left unfinished.
    pub resumed: bool,
    /// The same for every attempt of this step (forward or compensating):
    /// `<workflow id>/<step id>` forward, `<workflow id>/<step id>/undo` compensating.
    pub idempotency_key: String,
    /// Set when this is a compensation: what the forward step was given and returned.
    pub compensating: Option<Compensating>,
    /// The workflow's input (its definition's input, recorded when it started): data
    /// every step may need, kept once in the log rather than in each step's input.
    pub workflow_input: std::sync::Arc<Payload>,
    /// The recorded outputs of the steps this step depends on (those that have one).
    pub dependency_outputs: BTreeMap<StepId, Payload>,
}

/// What a compensation knows of the step it undoes.
#[derive(Debug, Clone)]
pub struct Compensating {
    /// The forward step's input.
    pub forward_input: Payload,
    /// The forward step's output, if it succeeded.
    pub forward_output: Option<Payload>,
}

/// An activity's result.
#[derive(Debug, Clone, Default)]
pub struct ActivityOutput {
    /// Recorded as the step's output.
    pub output: Payload,
    /// Steps to add to the plan (recorded as `StepsAdded` before the step's success).
    pub add_steps: Vec<StepSpec>,
    /// New dependencies of not-yet-started steps on added ones: (dependent, dependency).
    pub add_dependencies: Vec<(StepId, StepId)>,
}

impl From<Payload> for ActivityOutput {
    fn from(output: Payload) -> Self {
        Self { output, ..Self::default() }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityError {
    /// What happened.
    pub message: String,
    /// A class for retry rules.
    pub class: String,
    /// Whether another attempt may help.
    pub retryable: bool,
}

impl ActivityError {
    /// A failure that another attempt may cure (a timeout, a 500, a conflict).
    pub fn retryable(class: &str, message: impl Into<String>) -> Self {
        Self { message: message.into(), class: class.into(), retryable: true }
    }

    /// A failure that no retry will cure (bad input, a missing permission).
    pub fn fatal(class: &str, message: impl Into<String>) -> Self {
        Self { message: message.into(), class: class.into(), retryable: false }
    }

    /// A blocker only an operator can mend: the workflow pauses with it
    /// named, whatever its failure policy (see [`crate::NEEDS_OPERATOR`]).
    pub fn needs_operator(message: impl Into<String>) -> Self {
        Self::fatal(crate::core::event::NEEDS_OPERATOR, message)
    }

    pub(crate) fn into_step_error(self) -> StepError {
        StepError { message: self.message, class: self.class, retryable: self.retryable }
    }
}

impl std::fmt::Display for ActivityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.class)
    }
}

/// Activities by name.
#[derive(Clone, Default)]
pub struct Registry {
    activities: BTreeMap<String, Arc<dyn Activity>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("activities", &self.activities.keys().collect::<Vec<_>>()).finish()
    }
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `activity` under `name`, replacing any earlier one.
    pub fn register(&mut self, name: &str, activity: impl Activity) {
        self.activities.insert(name.to_string(), Arc::new(activity));
    }

    /// Registers an async function as an activity.
    pub fn register_fn<F, Fut, T>(&mut self, name: &str, function: F)
    where
        F: Fn(ActivityContext, Payload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, ActivityError>> + Send + 'static,
        T: Into<ActivityOutput>,
    {
        self.register(name, FnActivity(function));
    }

    /// The activity registered under `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<Arc<dyn Activity>> {
        self.activities.get(name).cloned()
    }

    /// Whether `name` is registered.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.activities.contains_key(name)
    }
}

struct FnActivity<F>(F);

impl<F, Fut, T> Activity for FnActivity<F>
where
    F: Fn(ActivityContext, Payload) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, ActivityError>> + Send + 'static,
    T: Into<ActivityOutput>,
{
    fn run(&self, context: ActivityContext, input: Payload) -> ActivityFuture {
        let future = (self.0)(context, input);
        Box::pin(async move { future.await.map(Into::into) })
    }
}
