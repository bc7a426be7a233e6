//! The runtime on a real store: activities run, fail, time out, panic,
//! extend the plan; signals arrive; secrets are refused; many workflows run
//! at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canaryflow_engine::{
    ActivityError, ActivityOutput, Compensation, Engine, EngineConfig, Error, FailurePolicy, NewWorkflow, Payload,
    Plan, Registry, RetryPolicy, Scope, Signal, StepAction, StepId, StepSpec, load_history,
};
use canaryflow_store::{OpenMode, Status, Store};

fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), OpenMode::CreateIfMissing).expect("store")
}

fn step(id: &str, activity: &str, deps: &[&str]) -> StepSpec {
    let mut spec = StepSpec::activity(id, activity, Payload::json(&id).expect("json")).expect("step");
    spec.depends_on = deps.iter().map(|dep| StepId::new(*dep).expect("id")).collect();
    spec.retry = RetryPolicy::exponential(3, 5, 20);
    spec.compensation = Compensation::Activity {
        name: "undo".into(),
        input: Payload::null(),
        retry: RetryPolicy::exponential(3, 5, 20),
        timeout_ms: 0,
    };
    spec
}

fn plan(steps: Vec<StepSpec>, on_failure: FailurePolicy) -> Plan {
    Plan { steps, group_limits: Vec::new(), on_failure }
}

/// A registry whose activities log what they did.
fn registry(log: &Arc<Mutex<Vec<String>>>) -> Registry {
    let mut registry = Registry::new();
    let ok_log = log.clone();
    registry.register_fn("ok", move |ctx, _input| {
        let log = ok_log.clone();
        async move {
            log.lock().expect("log").push(format!("do {}", ctx.step));
            Ok(Payload::json(&format!("done {}", ctx.step)).expect("json"))
        }
    });
    let undo_log = log.clone();
    registry.register_fn("undo", move |ctx, _input| {
        let log = undo_log.clone();
        async move {
            let forward = ctx.compensating.expect("a compensation knows its forward step").forward_output;
            log.lock().expect("log").push(format!(
                "undo {} after {}",
                ctx.step,
                forward.map(|p| p.to_value()).unwrap_or_default()
            ));
            Ok(Payload::null())
        }
    });
    registry
        .register_fn("fail", |_ctx, _input| async { Err::<Payload, _>(ActivityError::fatal("test", "always fails")) });
    registry.register_fn("slow", |_ctx, _input| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Payload::null())
    });
    registry
}

#[tokio::test]
async fn a_workflow_runs_to_success_and_its_history_is_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new(store(&dir), registry(&log), EngineConfig::default());
    let id = engine
        .start(NewWorkflow::new(
            "test",
            "linear",
            plan(vec![step("a", "ok", &[]), step("b", "ok", &["a"])], FailurePolicy::Pause),
        ))
        .await
        .expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(*log.lock().expect("log"), ["do a", "do b"]);
    let kinds: Vec<&str> =
        load_history(engine.store(), id, None).expect("history").iter().map(|r| r.event.kind().name()).collect();
    assert_eq!(
        kinds,
        ["WorkflowStarted", "StepStarted", "StepSucceeded", "StepStarted", "StepSucceeded", "WorkflowSucceeded"]
    );
    assert_eq!(engine.store().require_summary(id).expect("summary").status, Status::Succeeded);
}

#[tokio::test]
async fn retries_then_timeouts_then_rollback_by_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut registry = registry(&log);
    let calls = Arc::new(AtomicU32::new(0));
    let flaky_calls = calls.clone();
    registry.register_fn("flaky", move |_ctx, _input| {
        let calls = flaky_calls.clone();
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ActivityError::retryable("unavailable", "503"))
            } else {
                Ok(Payload::null())
            }
        }
    });
    let engine = Engine::new(store(&dir), registry, EngineConfig::default());
    let mut slow = step("slow", "slow", &["flaky"]);
    slow.timeout_ms = 50;
    let steps = vec![step("a", "ok", &[]), step("flaky", "flaky", &["a"]), slow];
    let id = engine
        .start(NewWorkflow::new("test", "retries", plan(steps, FailurePolicy::RollbackAll)))
        .await
        .expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::RolledBack);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "flaky succeeded on its third attempt");
    let history = load_history(engine.store(), id, None).expect("history");
    let timeouts = history
        .iter()
        .filter(|r| matches!(&r.event, canaryflow_engine::Event::StepFailed(e) if e.error.class == "timeout"))
        .count();
    assert_eq!(timeouts, 3, "slow timed out on each of its 3 attempts");
    let undone: Vec<String> =
        log.lock().expect("log").iter().filter(|line| line.starts_with("undo")).cloned().collect();
    assert_eq!(undone, ["undo slow after null", "undo flaky after null", "undo a after \"done a\""]);
}

#[tokio::test]
async fn approvals_and_rollback_arrive_as_signals_while_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new(store(&dir), registry(&log), EngineConfig::default());
    let mut gate = step("gate", "ok", &["a"]);
    gate.action = StepAction::Approval { gate: "wave-2".into() };
    gate.compensation = Compensation::None;
    let id = engine
        .start(NewWorkflow::new(
            "test",
            "gated",
            plan(vec![step("a", "ok", &[]), gate, step("b", "ok", &["gate"])], FailurePolicy::Pause),
        ))
        .await
        .expect("start");
    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(id).await }
    });
    // Not waiting yet for wave-3; wave-2 once a has run.
    let rejected = loop {
        match engine.signal(id, Signal::Approve { gate: "wave-3".into() }).await {
            Err(Error::SignalRejected(why)) if why.contains("waiting: wave-2") => break why,
            Err(Error::SignalRejected(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(rejected.contains("wave-3"));
    let before = engine.store().require_summary(id).expect("summary").last_seq;
    engine.signal(id, Signal::Approve { gate: "wave-2".into() }).await.expect("approved");
    let outcome = runner.await.expect("join").expect("run");
    assert_eq!(outcome.status, Status::Succeeded);
    assert!(engine.store().require_summary(id).expect("summary").last_seq > before);

    // Afterwards, with no driver, signals go straight to the log.
    engine
        .signal(id, Signal::Rollback { scope: Scope::All, reason: "test".into(), allow_irreversible: false })
        .await
        .expect("rollback recorded");
    let outcome = engine.run(id).await.expect("rollback runs");
    assert_eq!(outcome.status, Status::RolledBack);
    let last_seq = engine.store().require_summary(id).expect("summary").last_seq;
    let refused = engine.signal(id, Signal::Resume).await.expect_err("nothing after a rollback");
    assert!(matches!(refused, Error::SignalRejected(_)), "{refused}");
    assert_eq!(
        engine.store().require_summary(id).expect("summary").last_seq,
        last_seq,
        "a refused signal appends nothing"
    );
}

#[tokio::test]
async fn a_secret_in_an_output_fails_the_step_and_never_reaches_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut registry = registry(&log);
    registry.register_fn("leaky", |_ctx, _input| async {
        Ok(Payload::json(&serde_json::json!({"kubeconfig": {"users": [{"user": {"token": "SUPER-SECRET-TOKEN-42"}}]}}))
            .expect("json"))
    });
    let engine = Engine::new(store(&dir), registry, EngineConfig::default());
    let id = engine
        .start(NewWorkflow::new("test", "leaky", plan(vec![step("leak", "leaky", &[])], FailurePolicy::Pause)))
        .await
        .expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Paused);
    assert!(outcome.reason.expect("reason").contains("credential at $.kubeconfig.users[0].user.token"));
    drop(engine);
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).expect("read");
        assert!(!bytes.windows(21).any(|w| w == b"SUPER-SECRET-TOKEN-42"), "the secret reached {}", entry.display());
    }

    // A secret in the input is refused before anything is recorded.
    let log = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new(
        Store::open(dir.path(), OpenMode::Existing).expect("reopen"),
        registry_with_log(&log),
        EngineConfig::default(),
    );
    let mut new = NewWorkflow::new("test", "input", plan(vec![step("a", "ok", &[])], FailurePolicy::Pause));
    new.input = Payload::json(&serde_json::json!({"password": "hunter2"})).expect("json");
    let before = engine.store().list(&Default::default()).expect("list").len();
    assert!(matches!(engine.start(new).await, Err(Error::Secret(_))));
    assert_eq!(engine.store().list(&Default::default()).expect("list").len(), before);
}

fn registry_with_log(log: &Arc<Mutex<Vec<String>>>) -> Registry {
    registry(log)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

#[tokio::test]
async fn an_activity_extends_the_plan_and_a_panic_is_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut registry = registry(&log);
    registry.register_fn("discover", |_ctx, _input| async {
        let steps = vec![step("move/ns1", "ok", &["discover"]), step("move/ns2", "ok", &["discover"])];
        let dependencies = vec![
            (StepId::new("verify").expect("id"), StepId::new("move/ns1").expect("id")),
            (StepId::new("verify").expect("id"), StepId::new("move/ns2").expect("id")),
        ];
        Ok(ActivityOutput { output: Payload::null(), add_steps: steps, add_dependencies: dependencies })
    });
    registry.register_fn("boom", |_ctx, _input| async {
        if true {
            panic!("boom");
        }
        Ok(Payload::null())
    });
    let engine = Engine::new(store(&dir), registry, EngineConfig::default());
    let steps = vec![step("discover", "discover", &[]), step("verify", "ok", &["discover"])];
    let id = engine.start(NewWorkflow::new("test", "extend", plan(steps, FailurePolicy::Pause))).await.expect("start");
    assert_eq!(engine.run(id).await.expect("run").status, Status::Succeeded);
    let order = log.lock().expect("log").clone();
    assert_eq!(order.last().map(String::as_str), Some("do verify"), "verify waited for the added steps: {order:?}");
    assert_eq!(order.len(), 3);

    let id = engine
        .start(NewWorkflow::new("test", "panics", plan(vec![step("p", "boom", &[])], FailurePolicy::Pause)))
        .await
        .expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Paused);
    assert!(outcome.reason.expect("reason").contains("panicked"));
}

#[tokio::test]
async fn unregistered_activities_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::new(store(&dir), Registry::new(), EngineConfig::default());
    let err = engine
        .start(NewWorkflow::new("test", "x", plan(vec![step("a", "nope", &[])], FailurePolicy::Pause)))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("activity nope"), "{err}");
    assert!(engine.store().list(&Default::default()).expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_workflows_run_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new(store(&dir), registry(&log), EngineConfig::default());
    let mut ids = Vec::new();
    for n in 0..300 {
        let steps =
            vec![step("a", "ok", &[]), step("b", "ok", &["a"]), step("c", "ok", &["a"]), step("d", "ok", &["b", "c"])];
        ids.push(
            engine
                .start(NewWorkflow::new("test", &format!("w{n}"), plan(steps, FailurePolicy::Pause)))
                .await
                .expect("start"),
        );
    }
    let results = engine.run_unfinished().await.expect("run all");
    assert_eq!(results.len(), 300);
    for (id, result) in results {
        assert_eq!(result.expect("run").status, Status::Succeeded, "{id}");
    }
    assert_eq!(log.lock().expect("log").len(), 1200);
    let flushes = engine.store().flush_count();
    assert!(flushes < 300 * 4, "group commit shared flushes: {flushes}");
}
