//! The injection rules of ISTIO-REFERENCE.md §4, as a table: namespace
//! labels x pod labels x webhooks present -> the revision that injects, or
//! none. Each case creates a pod through the same admission as the API.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::faults::{FaultConfig, Faults};
use crate::istio::charts::{self as istio, GatewayKind, Render, Revision};
use crate::istio::istiod::{IstioPrograms, control_plane_of};
use crate::kube::cluster::{Cluster, WriteOptions};
use crate::kube::controller;
use crate::kube::resources::{self, KubeVersion};

fn create(cluster: &Cluster, object: Value) -> Result<Value, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let resource = cluster
        .resources
        .by_api_version(api_version, object["kind"].as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("{group} {api_version} is served"));
    let namespace = crate::kube::object::namespace(&object).to_string();
    let options = WriteOptions { manager: "test".into(), ..WriteOptions::default() };
    cluster.create(resource, &namespace, object, &options).map_err(|err| err.message)
}

/// A cluster with these revisions installed (the first is the base) and these tags.
fn cluster(revisions: &[(&str, &str)], tags: &[(&str, &str)]) -> Cluster {
    let faults = Arc::new(Faults::new(FaultConfig::default(), 1));
    let minor = crate::istio::version::minor_of(revisions[0].1);
    let kube = KubeVersion { minor: crate::istio::version::kubernetes_supported(minor).1.min(32) };
    let cluster = Cluster::new("table", 0, Duration::ZERO, faults, Arc::new(IstioPrograms), kube);
    for name in ["kube-system", "default", "istio-system"] {
        create(&cluster, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
            .expect("namespace");
    }
    let render = Render::for_kube(kube);
    for object in istio::base(revisions[0].1, &render) {
        create(&cluster, object).expect("base");
    }
    for (name, version) in revisions {
        let revision = Revision::new(name, version).expect("revision");
        let mut objects = istio::discovery(&revision, &render);
        objects.extend(istio::gateway(GatewayKind::Ingress, "istio-ingressgateway", &revision, &render));
        for object in objects {
            // The gateway is one object that each revision upgrades in place:
            // a later revision's copy is an update, not a new object.
            match create(&cluster, object) {
                Err(why) if why.contains("istio-ingressgateway") && why.contains("already exists") => {}
                other => {
                    other.expect("control plane");
                }
            }
        }
    }
    for (tag, target) in tags {
        let version = revisions.iter().find(|(name, _)| name == target).expect("target installed").1;
        for object in istio::revision_tag(tag, &Revision::new(target, version).expect("revision")) {
            create(&cluster, object).expect("tag");
        }
    }
    let mut state = cluster.lock();
    controller::settle_now(&cluster, &mut state);
    state.start_recording();
    drop(state);
    cluster
}

/// Creates a pod in a fresh namespace; returns the revision that injected it.
fn injected(
    cluster: &Cluster,
    case: usize,
    namespace: &str,
    namespace_labels: Value,
    pod_labels: Value,
    pod_annotations: Value,
    host_network: bool,
) -> Result<Option<String>, String> {
    let namespace = if namespace.is_empty() { format!("case-{case}") } else { namespace.to_string() };
    if cluster.lock().get("", "namespaces", "", &namespace).is_none() {
        create(
            cluster,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": namespace_labels}}),
        )?;
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{case}"), "namespace": namespace, "labels": pod_labels, "annotations": pod_annotations},
        "spec": {"hostNetwork": host_network, "containers": [{"name": "app", "image": "app:1"}]}});
    let created = create(cluster, pod)?;
    Ok(control_plane_of(&created).map(|(_, service)| {
        if service == "istiod" { "default".to_string() } else { service.trim_start_matches("istiod-").to_string() }
    }))
}

type Case = (&'static str, Value, Value, Value, bool, Option<&'static str>);

fn run_table(cluster: &Cluster, cases: Vec<Case>) {
    for (number, (why, ns, pod_labels, pod_annotations, host_network, expected)) in cases.into_iter().enumerate() {
        let namespace = if why.contains("kube-system") { "kube-system" } else { "" };
        let got = injected(cluster, number, namespace, ns, pod_labels, pod_annotations, host_network)
            .unwrap_or_else(|err| panic!("case {number} ({why}): {err}"));
        assert_eq!(got.as_deref(), expected, "case {number}: {why}");
    }
}

#[test]
fn injection_table_for_revision_webhooks_of_1_10_and_later() {
    let cluster = cluster(&[("default", "1.10.0"), ("canary", "1.11.0")], &[("prod-stable", "canary")]);
    let none = json!({});
    run_table(
        &cluster,
        vec![
            (
                "istio-injection=enabled: the default revision",
                json!({"istio-injection": "enabled"}),
                none.clone(),
                none.clone(),
                false,
                Some("default"),
            ),
            (
                "istio-injection takes precedence over istio.io/rev",
                json!({"istio-injection": "enabled", "istio.io/rev": "canary"}),
                none.clone(),
                none.clone(),
                false,
                Some("default"),
            ),
            (
                "istio-injection=disabled: no webhook matches",
                json!({"istio-injection": "disabled", "istio.io/rev": "canary"}),
                none.clone(),
                none.clone(),
                false,
                None,
            ),
            (
                "namespace istio.io/rev picks the revision",
                json!({"istio.io/rev": "canary"}),
                none.clone(),
                none.clone(),
                false,
                Some("canary"),
            ),
            (
                "the namespace label wins over the pod's (istio#48317)",
                json!({"istio.io/rev": "canary"}),
                json!({"istio.io/rev": "default"}),
                none.clone(),
                false,
                Some("canary"),
            ),
            (
                "sidecar.istio.io/inject=false label excludes the pod",
                json!({"istio.io/rev": "canary"}),
                json!({"sidecar.istio.io/inject": "false"}),
                none.clone(),
                false,
                None,
            ),
            (
                "no namespace label: the pod's istio.io/rev",
                none.clone(),
                json!({"istio.io/rev": "canary"}),
                none.clone(),
                false,
                Some("canary"),
            ),
            (
                "no namespace label: inject=true means the default",
                none.clone(),
                json!({"sidecar.istio.io/inject": "true"}),
                none.clone(),
                false,
                Some("default"),
            ),
            ("no labels anywhere: no injection", none.clone(), none.clone(), none.clone(), false, None),
            (
                "a revision tag injects for its revision",
                json!({"istio.io/rev": "prod-stable"}),
                none.clone(),
                none.clone(),
                false,
                Some("canary"),
            ),
            (
                "istio.io/rev=default selects the default revision",
                json!({"istio.io/rev": "default"}),
                none.clone(),
                none.clone(),
                false,
                Some("default"),
            ),
            (
                "the inject=false annotation is istiod's stage-2 no",
                json!({"istio-injection": "enabled"}),
                none.clone(),
                json!({"sidecar.istio.io/inject": "false"}),
                false,
                None,
            ),
            (
                "hostNetwork pods are never injected",
                json!({"istio-injection": "enabled"}),
                none.clone(),
                none.clone(),
                true,
                None,
            ),
            ("kube-system is ignored", json!({"istio-injection": "enabled"}), none.clone(), none.clone(), false, None),
            (
                "a revision with no webhook injects nothing",
                json!({"istio.io/rev": "1-99-0"}),
                none.clone(),
                none.clone(),
                false,
                None,
            ),
        ],
    );
}

#[test]
fn injection_table_for_the_single_webhook_of_1_6() {
    let cluster = cluster(&[("default", "1.6.5"), ("1-6-8", "1.6.8")], &[]);
    let none = json!({});
    run_table(
        &cluster,
        vec![
            (
                "istio-injection=enabled: the default revision",
                json!({"istio-injection": "enabled"}),
                none.clone(),
                none.clone(),
                false,
                Some("default"),
            ),
            (
                "istio-injection takes precedence",
                json!({"istio-injection": "enabled", "istio.io/rev": "1-6-8"}),
                none.clone(),
                none.clone(),
                false,
                Some("default"),
            ),
            (
                "namespace istio.io/rev",
                json!({"istio.io/rev": "1-6-8"}),
                none.clone(),
                none.clone(),
                false,
                Some("1-6-8"),
            ),
            (
                "1.6 has no object-selector webhooks: a pod label alone does nothing",
                none.clone(),
                json!({"istio.io/rev": "1-6-8"}),
                none.clone(),
                false,
                None,
            ),
            (
                "nor does inject=true without a namespace label",
                none.clone(),
                json!({"sidecar.istio.io/inject": "true"}),
                none.clone(),
                false,
                None,
            ),
            (
                "inject=false label excludes",
                json!({"istio.io/rev": "1-6-8"}),
                json!({"sidecar.istio.io/inject": "false"}),
                none.clone(),
                false,
                None,
            ),
        ],
    );
}

#[test]
fn what_a_webhook_does_when_its_revision_is_gone_or_down() {
    let cluster = cluster(&[("default", "1.10.0"), ("canary", "1.11.0")], &[]);
    // The webhook is deleted: nothing matches, the pod runs without a sidecar.
    let mut state = cluster.lock();
    let webhooks = resources::builtin("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations");
    cluster.remove(&mut state, webhooks, "", "istio-sidecar-injector-canary");
    drop(state);
    let got =
        injected(&cluster, 1, "", json!({"istio.io/rev": "canary"}), json!({}), json!({}), false).expect("created");
    assert_eq!(got, None);

    // The webhook exists but its istiod is down: failurePolicy Fail refuses the pod.
    let cluster = self::cluster(&[("default", "1.10.0"), ("canary", "1.11.0")], &[]);
    let mut state = cluster.lock();
    let deployments = resources::builtin("apps", "v1", "deployments");
    cluster.remove(&mut state, deployments, "istio-system", "istiod-canary");
    drop(state);
    let err =
        injected(&cluster, 2, "", json!({"istio.io/rev": "canary"}), json!({}), json!({}), false).expect_err("refused");
    assert!(
        err.contains("failed calling webhook \"rev.namespace.sidecar-injector.istio.io\"")
            && err.contains("no endpoints available for service \"istiod-canary\""),
        "{err}"
    );
}

#[test]
fn the_marks_of_injection_follow_the_version() {
    for (version, status_revision, annotation, label) in
        [("1.6.8", false, false, true), ("1.11.0", true, false, false), ("1.20.0", true, true, false)]
    {
        let name = format!("v{}", version.replace('.', "-"));
        let cluster = cluster(&[(name.as_str(), version)], &[]);
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app", "labels": {"istio.io/rev": name}}});
        create(&cluster, namespace).expect("namespace");
        let pod = create(&cluster, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "app"}, "spec": {"containers": [{"name": "a", "image": "a"}]}})).expect("pod");
        let status: Value = serde_json::from_str(
            pod["metadata"]["annotations"]["sidecar.istio.io/status"].as_str().expect("status annotation"),
        )
        .expect("json");
        assert_eq!(status.get("revision").is_some(), status_revision, "{version}: revision in sidecar.istio.io/status");
        assert_eq!(
            pod["metadata"]["annotations"].get("istio.io/rev").is_some(),
            annotation,
            "{version}: istio.io/rev annotation"
        );
        assert_eq!(pod["metadata"]["labels"].get("istio.io/rev").is_some(), label, "{version}: istio.io/rev pod label");
        let proxy = pod["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .find(|c| c["name"] == "istio-proxy")
            .expect("proxy");
        assert_eq!(proxy["image"], json!(format!("docker.io/istio/proxyv2:{version}")));
    }
}

/// When an istiod comes or goes, the controller looks at the workloads
/// whose proxies talk to it, not at every workload: a new revision coming
/// up changes no running pod, and the old one going away takes its
/// proxies' readiness with it.
#[test]
fn an_istiod_coming_or_going_marks_only_the_workloads_of_its_proxies() {
    let cluster = cluster(&[("default", "1.10.0")], &[]);
    for (namespace, labels) in [("shop", json!({"istio-injection": "enabled"})), ("plain", json!({}))] {
        create(
            &cluster,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}),
        )
        .expect("namespace");
        create(&cluster, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}}))
        .expect("deployment");
    }
    let mut state = cluster.lock();
    controller::reconcile_pending(&cluster, &mut state, std::time::Instant::now());
    assert!(state.controller.dirty.is_empty());
    let web = |namespace: &str| ("deployments", namespace.to_string(), "web".to_string());
    state.mark_followers_of(&[("istio-system".to_string(), "istiod-canary".to_string())]);
    assert!(
        state.controller.dirty.is_empty(),
        "no proxy talks to a new revision's istiod: {:?}",
        state.controller.dirty
    );
    state.mark_followers_of(&[("istio-system".to_string(), "istiod".to_string())]);
    assert!(state.controller.dirty.contains(&web("shop")), "shop's proxies talk to istiod");
    assert!(!state.controller.dirty.contains(&web("plain")), "plain has no proxy");
    controller::reconcile_pending(&cluster, &mut state, std::time::Instant::now());

    // The old istiod goes: shop's pods lose their readiness, plain's keep theirs.
    let deployments = resources::builtin("apps", "v1", "deployments");
    cluster.remove(&mut state, deployments, "istio-system", "istiod");
    controller::reconcile_pending(&cluster, &mut state, std::time::Instant::now());
    let ready = |namespace: &str| {
        state.in_namespace("", "pods", namespace).map(crate::kube::state::pod_ready).collect::<Vec<_>>()
    };
    assert_eq!(ready("shop"), [false]);
    assert_eq!(ready("plain"), [true]);
}

/// A workload's pods are brought in line with what their readiness
/// follows (the istiods up, the crash fault) when that changes; a look at
/// the workload that finds it unchanged writes nothing.
#[test]
fn pod_readiness_follows_the_crash_fault_and_the_istiod_and_nothing_else() {
    let cluster = cluster(&[("default", "1.10.0")], &[]);
    create(
        &cluster,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}),
    )
    .expect("namespace");
    create(&cluster, crate::fixtures::web(2, "v1")).expect("deployment");
    let mut state = cluster.lock();
    let look_again = |state: &mut crate::kube::state::State| {
        state.mark_all_workloads();
        controller::reconcile_pending(&cluster, state, std::time::Instant::now());
    };
    look_again(&mut state);
    let ready = |state: &crate::kube::state::State| {
        state.in_namespace("", "pods", "shop").map(crate::kube::state::pod_ready).collect::<Vec<_>>()
    };
    assert_eq!(ready(&state), [true, true]);
    let written = state.resource_version();
    look_again(&mut state);
    assert_eq!(state.resource_version(), written, "nothing changed, nothing written");

    cluster.faults.update(|config| config.crash_looping = vec!["shop/web".into()]);
    look_again(&mut state);
    assert_eq!(ready(&state), [false, false], "crash-looping");
    cluster.faults.update(|config| config.crash_looping.clear());
    look_again(&mut state);
    assert_eq!(ready(&state), [true, true], "no longer crash-looping");

    let deployments = resources::builtin("apps", "v1", "deployments");
    cluster.remove(&mut state, deployments, "istio-system", "istiod");
    controller::reconcile_pending(&cluster, &mut state, std::time::Instant::now());
    assert_eq!(ready(&state), [false, false], "their istiod is gone");
}

/// A gateway's pods coming and going in its rollout connect or disconnect
/// no proxy: no workload is marked for the controller because of them.
#[test]
fn a_gateway_rolling_out_marks_no_workload() {
    let cluster = cluster(&[("default", "1.10.0")], &[]);
    let deployments = resources::builtin("apps", "v1", "deployments");
    let gateway_pods = |state: &crate::kube::state::State| {
        let mut names: Vec<String> = state
            .in_namespace("", "pods", crate::istio::istiod::ISTIO_NAMESPACE)
            .filter(|pod| crate::kube::object::label(pod, "istio") == Some("ingressgateway"))
            .map(|pod| crate::kube::object::name(pod).to_string())
            .collect();
        names.sort();
        names
    };
    let (before, marked_before) = {
        let state = cluster.lock();
        (gateway_pods(&state), state.controller.all_marked_count)
    };
    assert!(!before.is_empty(), "the seed runs a gateway");
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"restarted": "1"}}}}});
    let options = WriteOptions { manager: "test".into(), ..WriteOptions::default() };
    cluster
        .patch(
            deployments,
            crate::istio::istiod::ISTIO_NAMESPACE,
            "istio-ingressgateway",
            crate::kube::cluster::PatchType::Strategic,
            &restart,
            &options,
        )
        .expect("restart");
    let mut state = cluster.lock();
    controller::reconcile_pending(&cluster, &mut state, std::time::Instant::now());
    let after = gateway_pods(&state);
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|pod| !before.contains(pod)), "the gateway's pods were replaced: {before:?} -> {after:?}");
    assert_eq!(state.controller.all_marked_count, marked_before, "and no workload was marked for it");
}
