//! The imperative shell: records events, runs activities on tokio, waits.

mod activity;
mod driver;
mod engine;
mod journal;

pub use activity::{
    Activity, ActivityContext, ActivityError, ActivityFuture, ActivityOutput, Compensating as CompensationContext,
    Registry,
};
pub use engine::{Engine, EngineConfig, Failpoints, NewWorkflow, Progress, RunOutcome};
pub use journal::{decode_record, load_history, load_state};
