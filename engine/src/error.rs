//! The engine's one error type.

use canaryflow_store::WorkflowId;

use crate::codec::CodecError;
use crate::core::plan::PlanError;
use crate::core::state::FoldError;

/// The result of an engine operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed (I/O, corruption, a conflict). See its variants.
    #[error(transparent)]
    Store(#[from] canaryflow_store::Error),
    /// A record of workflow `workflow_id` at `seq` does not decode.
    #[error("workflow {workflow_id}, sequence {seq}: {source}")]
    Codec {
        /// The workflow.
        workflow_id: WorkflowId,
        /// The record.
        seq: u64,
        /// What is wrong with it.
        #[source]
        source: CodecError,
    },
    /// A history breaks the state machine's rules (a bug, or a damaged log).
    #[error("workflow {workflow_id}: {source}")]
    Fold {
        /// The workflow.
        workflow_id: WorkflowId,
        /// The event that does not fit.
        #[source]
        source: FoldError,
    },
    /// A plan breaks a rule.
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    /// A signal does not apply to the workflow's current state.
    #[error("{0}")]
    SignalRejected(String),
    /// A payload would carry a secret into the log.
    #[error("refusing to record a secret: {0}")]
    Secret(String),
    /// Something else the caller asked for is not possible.
    #[error("{0}")]
    Invalid(String),
}
