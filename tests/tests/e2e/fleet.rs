//! Fleet upgrades on simulated fleets, through kube-rs over HTTP: waves
//! and their concurrency caps read back from the log, each failure policy
//! with one failing cluster, and a cluster that goes away for a while.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use canaryflow_engine::{Engine, Event, RecordedEvent, Scope, Signal, WorkflowState, load_history};
use canaryflow_sim::{FaultConfig, Fleet, FleetConfig};
use canaryflow_store::{Status, WorkflowId};

use crate::sim_kube::client;
use crate::upgrade_support::{ClusterState, SpecOptions, cluster_state, engine, revisions, setup};

/// A small fleet of clusters named `names`: two namespaces of one deployment each.
fn fleet_of(names: &[&str]) -> FleetConfig {
    FleetConfig {
        clusters: names.len(),
        names: names.iter().map(|n| (*n).to_string()).collect(),
        namespaces: 2,
        deployments: 1,
        replicas: 1,
        rollout_delay: Duration::from_millis(40),
        ..FleetConfig::default()
    }
}

async fn states(fleet: &Fleet) -> BTreeMap<String, ClusterState> {
    let mut out = BTreeMap::new();
    for cluster in fleet.clusters() {
        out.insert(cluster.name.clone(), cluster_state(&client(fleet, &cluster.name).await).await);
    }
    out
}

/// The group (cluster) of each step, from the plan in the first event.
fn groups(history: &[RecordedEvent]) -> BTreeMap<String, Option<String>> {
    let Event::WorkflowStarted(started) = &history[0].event else { panic!("the history starts with WorkflowStarted") };
    started.plan.steps.iter().map(|step| (step.id.to_string(), step.group.clone())).collect()
}

/// For each event, the clusters that had a step running right after it.
fn clusters_running(history: &[RecordedEvent]) -> Vec<BTreeSet<String>> {
    let group_of = groups(history);
    let mut running: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for recorded in history {
        match &recorded.event {
            Event::StepStarted(e) => {
                if let Some(Some(group)) = group_of.get(e.step.as_str()) {
                    running.insert(e.step.to_string(), group.clone());
                }
            }
            Event::StepSucceeded(e) => {
                running.remove(e.step.as_str());
            }
            Event::StepFailed(e) => {
                running.remove(e.step.as_str());
            }
            Event::StepAborted(e) => {
                running.remove(e.step.as_str());
            }
            _ => {}
        }
        out.push(running.values().cloned().collect());
    }
    out
}

fn first_started(history: &[RecordedEvent], prefix: &str) -> Option<u64> {
    history.iter().find_map(|r| match &r.event {
        Event::StepStarted(e) if e.step.as_str().starts_with(prefix) => Some(r.seq),
        _ => None,
    })
}

fn last_succeeded(history: &[RecordedEvent], prefix: &str) -> Option<u64> {
    history
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepSucceeded(e) if e.step.as_str().starts_with(prefix) => Some(r.seq),
            _ => None,
        })
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_waves_over_six_clusters_keep_to_max_parallel_and_wait_for_their_gates() {
    let names = ["c1", "c2", "c3", "c4", "c5", "c6"];
    let waves: [&[&str]; 3] = [&["c1"], &["c2", "c3", "c4"], &["c5", "c6"]];
    let extra = "  waves:
    - {clusters: [c1], soak: 300ms}
    - {clusters: [c2, c3, c4], maxParallel: 2}
    - {clusters: [c5, c6], maxParallel: 2, soak: 200ms}
";
    let setup = setup(fleet_of(&names), &SpecOptions { extra, ..SpecOptions::default() }).await;
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");

    let history = load_history(engine.store(), id, None).expect("history");
    let running = clusters_running(&history);
    for (index, wave) in waves.iter().enumerate() {
        let most = running.iter().map(|now| now.iter().filter(|c| wave.contains(&c.as_str())).count()).max();
        let most = most.expect("events");
        assert!(most <= 2, "wave {} had {most} clusters in progress at once", index + 1);
        if wave.len() > 1 {
            assert_eq!(most, 2, "wave {} ran its clusters two at a time", index + 1);
        }
    }
    for (index, wave) in waves.iter().enumerate().skip(1) {
        let gate_passed = last_succeeded(&history, &format!("wave-{index}/")).expect("the gate passed");
        for cluster in *wave {
            let started = first_started(&history, &format!("{cluster}/")).expect("the cluster started");
            assert!(
                started > gate_passed,
                "{cluster} started at event #{started}, before the gate of wave {index} passed at #{gate_passed}"
            );
        }
    }
    for (name, state) in states(&setup.fleet).await {
        assert_eq!(revisions(&state), BTreeSet::from([Some("1-6-8".to_string())]), "{name}: every pod on 1-6-8");
        assert!(state.validation_served, "{name}: validation served");
    }
}

/// Four clusters in three waves; `bad` (in the second) gets an istiod that
/// never becomes ready.
async fn one_failing_cluster(on_failure: &'static str) -> (crate::upgrade_support::Setup, Engine, WorkflowId) {
    let extra = "  waves:
    - {clusters: [a]}
    - {clusters: [b, bad], maxParallel: 2}
    - {clusters: [d]}
";
    let options = SpecOptions { extra, on_failure, control_plane_timeout: "1s", ..SpecOptions::default() };
    let setup = setup(fleet_of(&["a", "b", "bad", "d"]), &options).await;
    setup
        .fleet
        .cluster("bad")
        .expect("bad")
        .faults
        .set(FaultConfig { stuck_rollouts: vec!["istio-system/istiod-1-6-8".into()], ..FaultConfig::default() });
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    (setup, engine, id)
}

fn on_new(state: &ClusterState) -> bool {
    revisions(state) == BTreeSet::from([Some("1-6-8".to_string())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cluster_rolls_back_alone_and_the_next_wave_never_starts() {
    let (setup, engine, id) = one_failing_cluster("rollback-cluster").await;
    let before = states(&setup.fleet).await;
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert!(outcome.reason.as_deref().is_some_and(|r| r.contains("rolled back: bad")), "{outcome:?}");

    let after = states(&setup.fleet).await;
    assert_eq!(after["bad"], before["bad"], "the failed cluster is back as it was");
    assert!(on_new(&after["a"]) && on_new(&after["b"]), "a (earlier wave) and b (same wave) finished their moves");
    assert_eq!(after["d"], before["d"], "the next wave did not touch d");
    let history = load_history(engine.store(), id, None).expect("history");
    assert_eq!(first_started(&history, "d/"), None, "no step of d ever started");
    let state = WorkflowState::fold(id, &history).expect("fold");
    assert!(state.group_rollbacks.contains_key("bad") && state.group_rollbacks.len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cluster_rolls_the_whole_fleet_back_by_policy() {
    let (setup, engine, id) = one_failing_cluster("rollback").await;
    let before = states(&setup.fleet).await;
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::RolledBack, "{outcome:?}");
    assert_eq!(states(&setup.fleet).await, before, "every cluster is back as it was, the finished wave too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cluster_pauses_the_fleet_until_the_operator_rolls_that_cluster_back() {
    let (setup, engine, id) = one_failing_cluster("pause").await;
    let before = states(&setup.fleet).await;
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Paused, "{outcome:?}");
    assert!(outcome.reason.as_deref().is_some_and(|r| r.contains("bad/wait-control-plane")), "{outcome:?}");
    let history = load_history(engine.store(), id, None).expect("history");
    assert_eq!(first_started(&history, "d/"), None, "the next wave waits");

    // The operator's decision: roll back the failed cluster only.
    let rollback =
        Signal::Rollback { scope: Scope::Group("bad".into()), reason: "operator".into(), allow_irreversible: false };
    engine.signal(id, rollback).await.expect("signal");
    engine.signal(id, Signal::Resume).await.expect("resume");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Failed, "blocked by the rolled-back cluster: {outcome:?}");
    let after = states(&setup.fleet).await;
    assert_eq!(after["bad"], before["bad"], "the failed cluster is back as it was");
    assert!(on_new(&after["b"]), "the other cluster of the wave finished its moves");
    assert_eq!(after["d"], before["d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_goes_away_for_a_while_is_waited_for_not_failed() {
    let extra = "  waves:
    - {clusters: [steady, flaky], maxParallel: 2}
";
    let setup = setup(fleet_of(&["steady", "flaky"]), &SpecOptions { extra, ..SpecOptions::default() }).await;
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");

    let faults = setup.fleet.cluster("flaky").expect("flaky").faults.clone();
    faults.set(FaultConfig { down: true, ..FaultConfig::default() });
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        faults.set(FaultConfig::default());
    });
    let outcome = engine.run(id).await.expect("run");
    back.await.expect("join");
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");

    let history = load_history(engine.store(), id, None).expect("history");
    let failures: Vec<&str> = history
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepFailed(e) if e.step.as_str().starts_with("flaky/") => {
                assert!(e.error.retryable, "an unreachable cluster is a retryable error: {:?}", e.error);
                Some(e.error.class.as_str())
            }
            _ => None,
        })
        .collect();
    assert!(!failures.is_empty(), "the outage was seen and retried");
    assert!(failures.iter().all(|class| *class == "unavailable"), "{failures:?}");
    for (name, state) in states(&setup.fleet).await {
        assert!(on_new(&state), "{name}: every pod on 1-6-8");
    }
}
