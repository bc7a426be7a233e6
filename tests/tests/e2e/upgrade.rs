//! The Istio canary upgrade on a simulated cluster, through kube-rs over
//! HTTP: the whole upgrade, the tag flow, a rollback after each step in
//! turn, and an istiod that never becomes ready.

use std::collections::BTreeSet;
use std::time::Duration;

use canaryflow_engine::{Event, Scope, Signal};
use canaryflow_sim::{FaultConfig, FleetConfig};
use canaryflow_store::Status;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::upgrade_support::{
    ClusterState, SpecOptions, cluster_state, engine, engine_polling, revisions, seed_fleet, setup,
};

fn some(text: &str) -> Option<String> {
    Some(text.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_upgrade_moves_namespaces_gateway_and_validation_then_removes_the_old_revision() {
    let setup = setup(seed_fleet(), &SpecOptions::default()).await;
    let before = cluster_state(&setup.client).await;
    assert_eq!(revisions(&before), BTreeSet::from([some("default")]));
    assert!(before.validation_served);

    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    assert_eq!(prepared.clusters[0].namespaces.len(), 3);
    assert_eq!(prepared.clusters[0].gateways.len(), 1);
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");

    let after = cluster_state(&setup.client).await;
    for (namespace, labels) in &after.namespaces {
        assert_eq!(labels, &(None, some("1-6-8")), "namespace {namespace}: istio-injection removed, istio.io/rev set");
    }
    assert_eq!(revisions(&after), BTreeSet::from([some("1-6-8")]), "every pod injected by 1-6-8");
    assert!(
        after.pods.values().flatten().all(|(_, version)| version.as_deref() == Some("1.6.8")),
        "every proxy is 1.6.8"
    );
    assert_eq!(
        after.injectors.keys().collect::<Vec<_>>(),
        ["istio-sidecar-injector-1-6-8"],
        "the old injector is gone"
    );
    assert!(!after.deployments.contains_key("istio-system/istiod"), "the old istiod is gone");
    // 1.6 gateways carry no revision label: their own proxy moved in place.
    assert_eq!(
        after.deployments["istio-system/istio-ingressgateway"].1,
        ["docker.io/istio/proxyv2:1.6.8"],
        "the gateway moved in place"
    );
    assert_eq!(
        after.services["istiod"].get("istio.io/rev").map(String::as_str),
        Some("1-6-8"),
        "Service istiod now points at 1-6-8 (the seed's workaround)"
    );
    assert!(after.validators.contains("istiod-istio-system"), "the shared base webhook stays");
    assert!(after.validation_served, "validation is still served, by 1-6-8");
    let history = canaryflow_engine::load_history(engine.store(), id, None).expect("history");
    assert!(history.iter().any(|r| matches!(&r.event, Event::StepSucceeded(s) if s.step.as_str() == "prod-eu/snapshot" && !s.output.as_str().contains("\"Secret\""))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_flow_moves_the_tag_not_the_namespace_labels() {
    let config = FleetConfig {
        revision: "1-10-0".into(),
        version: "1.10.0".into(),
        namespace_tag: Some("prod-stable".into()),
        ..seed_fleet()
    };
    let options = SpecOptions {
        from: "1-10-0",
        to: "1-11-0",
        version: "1.11.0",
        namespaces: "{selector: istio.io/rev=prod-stable}",
        extra: "  tags: {stable: prod-stable}\n",
        ..SpecOptions::default()
    };
    let setup = setup(config, &options).await;
    let before = cluster_state(&setup.client).await;
    assert!(!before.validation_served, "a revisioned first install leaves validation broken (the seed's bug)");
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    assert_eq!(engine.run(id).await.expect("run").status, Status::Succeeded);
    let after = cluster_state(&setup.client).await;
    assert_eq!(after.namespaces, before.namespaces, "no namespace was relabelled");
    assert_eq!(
        after.injectors.get("istio-revision-tag-prod-stable"),
        Some(&some("1-11-0")),
        "the tag points at the new revision"
    );
    assert_eq!(revisions(&after), BTreeSet::from([some("1-11-0")]));
    assert!(!after.deployments.contains_key("istio-system/istiod-1-10-0"));
    assert!(after.validation_served, "and the validation step fixed validation on the way");
}

/// Workloads change between planning and the move: one made since is
/// restarted onto the new revision too, one deleted since is not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_restarts_a_workload_made_since_planning_and_skips_one_deleted() {
    let setup = setup(seed_fleet(), &SpecOptions::default()).await;
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let namespace = prepared.clusters[0].namespaces[0].clone();
    let planned: Vec<String> = namespace.workloads.iter().map(|w| w.name.clone()).collect();
    assert_eq!(planned.len(), 2, "{planned:?}");
    let deployments: Api<Deployment> = Api::namespaced(setup.client.clone(), &namespace.name);
    deployments.delete(&planned[0], &DeleteParams::default()).await.expect("delete");
    let late: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "late-app", "labels": {"app": "late-app"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "late-app"}},
            "template": {"metadata": {"labels": {"app": "late-app"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/late-app:1.0"}]}}}
    }))
    .expect("deployment");
    deployments.create(&PostParams::default(), &late).await.expect("create");
    // Its pods run the old revision before the upgrade starts.
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), &namespace.name);
    let late_pods = ListParams::default().labels("app=late-app");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = pods.list(&late_pods).await.expect("pods");
        if listed.items.len() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "late-app never got its pods");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(revisions(&cluster_state(&setup.client).await), BTreeSet::from([some("default")]));

    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");

    let after = cluster_state(&setup.client).await;
    assert_eq!(
        after.pods[&namespace.name],
        vec![(some("1-6-8"), some("1.6.8")); 4],
        "late-app's pods and the remaining planned workload's are on 1-6-8"
    );
    let history = canaryflow_engine::load_history(engine.store(), id, None).expect("history");
    let step = format!("prod-eu/move/{}", namespace.name);
    let output = history
        .iter()
        .find_map(|r| match &r.event {
            Event::StepSucceeded(s) if s.step.as_str() == step => Some(s.output.as_str().to_string()),
            _ => None,
        })
        .expect("the move succeeded");
    assert!(output.contains("late-app"), "{output}");
    assert!(output.contains(&planned[1]) && !output.contains(&format!("\"{}\"", planned[0])), "{output}");
}

/// A namespace relabelled between planning and the move: the move's
/// relabel, made on the condition that nothing changed since planning,
/// is refused, so the move reads the namespace and records the labels it
/// had then (which a rollback puts back), not those planning saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_changed_since_planning_records_the_labels_it_had_at_the_move() {
    let setup = setup(seed_fleet(), &SpecOptions::default()).await;
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let namespace = prepared.clusters[0].namespaces[0].clone();
    assert_eq!(namespace.labels.istio_injection.as_deref(), Some("enabled"), "{namespace:?}");
    assert!(namespace.resource_version.is_some(), "planning records the namespace's resourceVersion");
    let namespaces: Api<Namespace> = Api::all(setup.client.clone());
    let relabel = serde_json::json!({"metadata": {"labels": {"istio-injection": null, "istio.io/rev": "default"}}});
    namespaces.patch(&namespace.name, &PatchParams::default(), &Patch::Merge(&relabel)).await.expect("relabel");

    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");

    let history = canaryflow_engine::load_history(engine.store(), id, None).expect("history");
    let step = format!("prod-eu/move/{}", namespace.name);
    let output: serde_json::Value = history
        .iter()
        .find_map(|r| match &r.event {
            Event::StepSucceeded(s) if s.step.as_str() == step => serde_json::from_str(s.output.as_str()).ok(),
            _ => None,
        })
        .expect("the move succeeded");
    assert_eq!(
        output["labels_before"],
        serde_json::json!({"istio_injection": null, "istio_rev": "default"}),
        "{output}"
    );
    let moved = namespaces.get(&namespace.name).await.expect("namespace");
    let labels = moved.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("istio.io/rev").map(String::as_str), Some("1-6-8"), "{labels:?}");
    assert!(!labels.contains_key("istio-injection"), "{labels:?}");
}

/// Every rollout wait (istiod, the gateway, each namespace's workloads)
/// sees its rollout end as the cluster reports it, by watch: with waits
/// that would look again only after a minute, the upgrade still takes
/// about its rollouts' time. One poll anywhere would take a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_waits_watch_and_do_not_wait_for_the_next_poll() {
    let setup = setup(seed_fleet(), &SpecOptions::default()).await;
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine_polling(setup.dir.path(), Duration::from_secs(60));
    let started = tokio::time::Instant::now();
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}: a wait polled", started.elapsed());
    assert_eq!(revisions(&cluster_state(&setup.client).await), BTreeSet::from([some("1-6-8")]));
}

/// Runs an upgrade and requests a rollback as soon as `step` succeeds;
/// returns the cluster as it was before, and as it is after.
async fn rollback_after(step: &str) -> (ClusterState, ClusterState, Status) {
    let setup = setup(seed_fleet(), &SpecOptions::default()).await;
    let before = cluster_state(&setup.client).await;
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let mut notices = engine.subscribe();
    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(id).await }
    });
    loop {
        let notice =
            tokio::time::timeout(Duration::from_secs(30), notices.recv()).await.expect("progress").expect("open");
        if matches!(&notice.recorded.event, Event::StepSucceeded(done) if done.step.as_str() == step) {
            break;
        }
    }
    let signal =
        Signal::Rollback { scope: Scope::All, reason: format!("test: after {step}"), allow_irreversible: false };
    engine.signal(id, signal).await.expect("rollback accepted");
    let mut outcome = runner.await.expect("join").expect("run");
    if outcome.status == Status::Succeeded {
        // It finished before the signal arrived: the signal is in its history,
        // and running it again carries out the rollback (as `canaryflow rollback` does).
        outcome = engine.run(id).await.expect("rollback run");
    }
    (before, cluster_state(&setup.client).await, outcome.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_after_each_step_in_turn_puts_the_cluster_back_as_it_was() {
    let steps = [
        "prod-eu/precheck",
        "prod-eu/install",
        "prod-eu/wait-control-plane",
        "prod-eu/validation",
        "prod-eu/gateways",
        "prod-eu/move/catalog",
        "prod-eu/verify",
        "wave-1/health",
        "prod-eu/handover",
        "prod-eu/snapshot",
        "prod-eu/uninstall",
    ];
    for step in steps {
        let (before, after, status) = rollback_after(step).await;
        assert_eq!(status, Status::RolledBack, "after {step}");
        assert_eq!(after, before, "after a rollback requested when {step} succeeded, the cluster differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istiod_that_never_becomes_ready_times_out_and_rolls_back_by_policy() {
    let mut config = seed_fleet();
    config.faults = FaultConfig { stuck_rollouts: vec!["istio-system/istiod-1-6-8".into()], ..FaultConfig::default() };
    let setup = setup(config, &SpecOptions { control_plane_timeout: "1s", ..SpecOptions::default() }).await;
    let before = cluster_state(&setup.client).await;
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::RolledBack);
    let history = canaryflow_engine::load_history(engine.store(), id, None).expect("history");
    let timed_out = history.iter().any(|r| matches!(&r.event, Event::StepFailed(f) if f.step.as_str() == "prod-eu/wait-control-plane" && f.error.class == "timeout"));
    assert!(timed_out, "the wait failed on its timeout");
    assert!(history.iter().any(|r| matches!(&r.event, Event::RollbackStarted(_))), "and the policy rolled back");
    assert_eq!(cluster_state(&setup.client).await, before);
}
