//! Every activity this binary can run, registered by name. Resuming a
//! workflow needs the activities its plan names, whichever command started it.

use canaryflow_engine::{Payload, Registry};

/// The no-op activity of `bench engine`.
pub const BENCH_NOOP: &str = "bench.noop";

/// The registry of every activity canaryflow knows.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_fn(BENCH_NOOP, |_context, _input| async { Ok(Payload::null()) });
    registry
}
