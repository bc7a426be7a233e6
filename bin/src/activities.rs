//! Every activity this binary can run, registered by name. Resuming a
//! workflow needs the activities its plan names, whichever command started it.

use std::time::Duration;

use canaryflow_engine::{Payload, Registry};

/// The no-op activity of `bench engine`.
pub const BENCH_NOOP: &str = "bench.noop";

/// How often the upgrade's waits look again: `$CANARYFLOW_POLL_MS`, else 1 s.
fn poll() -> Duration {
    let ms = std::env::var("CANARYFLOW_POLL_MS").ok().and_then(|ms| ms.parse().ok()).unwrap_or(1_000u64);
    Duration::from_millis(ms.clamp(10, 60_000))
}

/// The registry of every activity canaryflow knows.
pub fn registry() -> Registry {
    registry_polling_every(poll())
}

/// [`registry`], with the upgrade's waits looking again every `poll`.
pub fn registry_polling_every(poll: Duration) -> Registry {
    let mut registry = Registry::new();
    registry.register_fn(BENCH_NOOP, |_context, _input| async { Ok(Payload::null()) });
    canaryflow_workflows::register_all(&mut registry, canaryflow_workflows::Settings { poll });
    registry
}
