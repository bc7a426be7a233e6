//! Runs the crash-test workflow with failpoints, for the crash tests.
//!
//! `crash-child DATA_DIR EFFECTS_FILE (start SCENARIO | resume) [after SEQ | before SEQ]`
//!
//! `start` records a new workflow and runs it; `resume` runs every
//! unfinished one. `after SEQ` aborts the process right after the append
//! holding SEQ is durable; `before SEQ` right before it. Each activity
//! appends one line to EFFECTS_FILE (and syncs it) before it returns, so
//! the file shows every side effect that happened, crashed or not.

use std::io::Write;
use std::path::PathBuf;

use canaryflow_engine::{
    ActivityContext, ActivityError, Engine, EngineConfig, Failpoints, NewWorkflow, Payload, Registry,
};
use canaryflow_store::{OpenMode, Store};
use canaryflow_tests::{Scenario, crash_plan};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (data_dir, effects) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let (start, rest) = match args[2].as_str() {
        "start" => {
            (Some(Scenario::parse(&args[3]).ok_or_else(|| anyhow::anyhow!("scenario {}", args[3]))?), &args[4..])
        }
        "resume" => (None, &args[3..]),
        other => anyhow::bail!("unknown mode {other}"),
    };
    let mut failpoints = Failpoints::default();
    match rest {
        [point, seq] if point == "after" => failpoints.crash_after_seq = Some(seq.parse()?),
        [point, seq] if point == "before" => failpoints.crash_before_seq = Some(seq.parse()?),
        [] => {}
        other => anyhow::bail!("unknown failpoint {other:?}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let store = Store::open(&data_dir, OpenMode::CreateIfMissing)?;
        let engine = Engine::new(store, registry(effects), EngineConfig { failpoints, ..EngineConfig::default() });
        if let Some(scenario) = start {
            let id = engine.start(NewWorkflow::new("crash-test", scenario.name(), crash_plan(scenario))).await?;
            engine.run(id).await?;
        } else {
            for (id, result) in engine.run_unfinished().await? {
                result.map_err(|err| anyhow::anyhow!("{id}: {err}"))?;
            }
        }
        Ok(())
    })
}

fn registry(effects: PathBuf) -> Registry {
    let mut registry = Registry::new();
    for (name, action, fails) in [("effect", "do", false), ("effect.fail", "do", true), ("effect.undo", "undo", false)]
    {
        let effects = effects.clone();
        registry.register_fn(name, move |context: ActivityContext, _input| {
            let effects = effects.clone();
            async move {
                record(&effects, action, &context).map_err(|err| ActivityError::retryable("io", err.to_string()))?;
                if fails {
                    return Err(ActivityError::fatal("test", "this step always fails"));
                }
                Ok(Payload::json(&format!("{action} {}", context.step)).expect("json"))
            }
        });
    }
    registry
}

/// Activities run in parallel: one line, one write, under one lock.
static EFFECTS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn record(path: &std::path::Path, action: &str, context: &ActivityContext) -> std::io::Result<()> {
    let resumed = if context.resumed { "resumed" } else { "fresh" };
    let line = format!("{action} {} {} {} {resumed}\n", context.step, context.idempotency_key, context.attempt);
    let _guard = EFFECTS_LOCK.lock().map_err(|_| std::io::Error::other("effects lock poisoned"))?;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_all()
}
