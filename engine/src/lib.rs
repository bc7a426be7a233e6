//! A durable, event-sourced workflow engine: a workflow is a plan of steps,
//! and everything that happens to it is recorded in the event log before it
//! takes effect, so it resumes exactly where it stopped.
//!
//! The crate has two halves:
//!
//! - a pure core ([`WorkflowState::fold`] and [`decide`]) that turns a
//!   history into a state and a state into commands, without I/O;
//! - a runtime ([`Engine`]) that records events in a
//!   [`canaryflow_store::Store`], runs activities on tokio, and feeds their
//!   outcomes back as events.
//!
//! What it does not do: know what an activity means. Activities are
//! registered by name in a [`Registry`]; the Istio ones live in
//! `canaryflow-workflows`.
//!
//! The durability protocol (DESIGN.md): `StepStarted` is durable before an
//! activity runs; `StepSucceeded` is durable before any dependent starts;
//! a process that takes up a workflow re-runs attempts left without an
//! outcome, handing each the same idempotency key.
//!
//! ```no_run
//! use canaryflow_engine::{Engine, EngineConfig, NewWorkflow, Payload, Plan, FailurePolicy, Registry, StepSpec};
//! use canaryflow_store::{OpenMode, Store};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("/tmp/canaryflow".as_ref(), OpenMode::CreateIfMissing)?;
//! let mut registry = Registry::new();
//! registry.register_fn("noop", |_ctx, _input| async { Ok(Payload::null()) });
//! let engine = Engine::new(store, registry, EngineConfig::default());
//! let plan = Plan { steps: vec![StepSpec::activity("a", "noop", Payload::null())?], group_limits: vec![], on_failure: FailurePolicy::Pause };
//! let id = engine.start(NewWorkflow::new("example", "demo", plan)).await?;
//! let outcome = engine.run(id).await?;
//! println!("{id}: {}", outcome.status);
//! # Ok(()) }
//! ```

mod codec;
mod core;
mod error;
mod runtime;

pub use crate::codec::{CURRENT_VERSION, CodecError};
pub use crate::core::backoff::retry_delay_ms;
pub use crate::core::decide::{Command, Decision, decide, recover};
pub use crate::core::event::*;
pub use crate::core::payload::{PAYLOAD_BYTES_MAX, Payload, PayloadError, find_secret};
pub use crate::core::plan::*;
pub use crate::core::state::*;
pub use crate::error::{Error, Result};
pub use crate::runtime::*;
