//! The upgrade fed what Istio's real installer generates, on clusters
//! installed as `istioctl install` leaves them (owner labels, the
//! `default` tag and validator, CRDs; on request CNI and ztunnel): the
//! whole upgrade, a rollback after each step, the shared node agents left
//! exactly as they were, the default tag's injection handed over, and a
//! revision still in use refused at uninstall with the blocker named.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use canaryflow_engine::{Event, Scope, Signal};
use canaryflow_sim::{FleetConfig, Installer};
use canaryflow_store::Status;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::real_install::{default_install, revision_manifests};
use crate::upgrade_support::{ClusterState, SpecOptions, cli, cluster_state, engine, revisions, setup};

const FROM: &str = "1.27.0";
const TO: &str = "1.28.0";

fn some(text: &str) -> Option<String> {
    Some(text.to_string())
}

/// A cluster of Istio 1.27.0 installed by istioctl from real generated
/// output (non-revisioned, so with the `default` tag), two namespaces of
/// injected workloads.
fn real_fleet() -> FleetConfig {
    FleetConfig {
        names: vec!["prod-eu".into()],
        namespaces: 2,
        deployments: 2,
        replicas: 2,
        version: FROM.into(),
        rollout_delay: Duration::from_millis(40),
        install: vec![default_install(FROM)],
        ..FleetConfig::default()
    }
}

fn real_spec() -> SpecOptions {
    SpecOptions {
        to: "1-28-0",
        version: TO,
        manifests: Some(revision_manifests("1-28-0", TO)),
        ..SpecOptions::default()
    }
}

/// One object as the checks see it: its `istio.io/rev`, component and
/// `istio.io/tag` labels, and the Services its webhooks call.
type Marks = (Option<String>, Option<String>, Option<String>, Vec<String>);

/// Everything of Istio's on the cluster, as the checks need it: each
/// object's revision, component and tag labels, and where its webhooks
/// send calls; each node agent's uid and template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Picture {
    objects: BTreeMap<String, Marks>,
    agents: BTreeMap<String, (String, String)>,
    cluster: ClusterState,
}

const KINDS: [(&str, &str, bool); 13] = [
    ("apps/v1", "Deployment", true),
    ("apps/v1", "DaemonSet", true),
    ("v1", "Service", true),
    ("v1", "ServiceAccount", true),
    ("v1", "ConfigMap", true),
    ("rbac.authorization.k8s.io/v1", "Role", true),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", true),
    ("autoscaling/v2", "HorizontalPodAutoscaler", true),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", false),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", false),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", false),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", false),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", false),
];

async fn picture(client: &Client) -> Picture {
    let mut objects = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for (api_version, kind, namespaced) in KINDS {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
        let plural = format!("{}s", kind.to_lowercase()).replace("policys", "policies");
        let resource = kube::discovery::ApiResource::from_gvk_with_plural(&gvk, &plural);
        let api: Api<kube::core::DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), "istio-system", &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        for object in api.list(&ListParams::default()).await.expect("list").items {
            let value = serde_json::to_value(&object).expect("json");
            let name = object.metadata.name.clone().unwrap_or_default();
            if name == "istio-ca-root-cert" || name == "kube-root-ca.crt" || name == "default" {
                continue;
            }
            let label = |key: &str| object.metadata.labels.as_ref().and_then(|l| l.get(key)).cloned();
            let services: Vec<String> = value
                .get("webhooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|hook| {
                    hook.pointer("/clientConfig/service/name").and_then(Value::as_str).map(str::to_string)
                })
                .collect();
            objects.insert(
                format!("{kind} {name}"),
                (label("istio.io/rev"), label("operator.istio.io/component"), label("istio.io/tag"), services),
            );
            if kind == "DaemonSet" {
                let template = value.pointer("/spec/template").cloned().unwrap_or(Value::Null).to_string();
                agents.insert(name, (object.metadata.uid.clone().unwrap_or_default(), template));
            }
        }
    }
    Picture { objects, agents, cluster: cluster_state(client).await }
}

/// The objects of a picture, by kind and name.
fn names(picture: &Picture) -> BTreeSet<String> {
    picture.objects.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_generated_output_upgrades_a_real_install_and_leaves_nothing_of_the_old_revision() {
    let setup = setup(real_fleet(), &real_spec()).await;
    let before = picture(&setup.client).await;
    assert_eq!(revisions(&before.cluster), BTreeSet::from([some("default")]));
    assert!(before.cluster.validation_served, "the default validator validates");
    assert!(
        before.objects.contains_key("ServiceAccount istiod"),
        "istioctl applied the unlabelled RBAC with its labels"
    );
    assert_eq!(before.objects["ServiceAccount istiod"].0, some("default"));

    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");

    let after = picture(&setup.client).await;
    assert_eq!(revisions(&after.cluster), BTreeSet::from([some("1-28-0")]), "every pod on the new revision");
    assert!(
        after.cluster.pods.values().flatten().all(|(_, version)| version.as_deref() == Some(TO)),
        "{:?}",
        after.cluster.pods
    );
    assert!(after.cluster.validation_served, "validation is served, by 1-28-0");
    for gone in [
        "Deployment istiod",
        "Service istiod",
        "ServiceAccount istiod",
        "Role istiod",
        "RoleBinding istiod",
        "HorizontalPodAutoscaler istiod",
        "ConfigMap istio",
        "ConfigMap istio-sidecar-injector",
        "ConfigMap values",
        "ClusterRole istiod-clusterrole-istio-system",
        "ClusterRoleBinding istiod-gateway-controller-istio-system",
        "MutatingWebhookConfiguration istio-sidecar-injector",
        "ValidatingWebhookConfiguration istio-validator-istio-system",
    ] {
        assert!(!after.objects.contains_key(gone), "{gone} of the old revision is left");
    }
    for (installed, rev) in [
        ("ServiceAccount istiod-1-28-0", "1-28-0"),
        ("ClusterRole istiod-clusterrole-1-28-0-istio-system", "1-28-0"),
        ("Deployment istiod-1-28-0", "1-28-0"),
    ] {
        let (label, component, _, _) = &after.objects[installed];
        assert_eq!(
            (label.as_deref(), component.as_deref()),
            (Some(rev), Some("Pilot")),
            "{installed} labelled as istioctl labels"
        );
    }
    for shared in
        ["ServiceAccount istio-reader-service-account", "CustomResourceDefinition virtualservices.networking.istio.io"]
    {
        assert!(after.objects.contains_key(shared), "shared {shared} is kept");
    }
    let tag = &after.objects["MutatingWebhookConfiguration istio-revision-tag-default"];
    assert_eq!((tag.0.as_deref(), tag.3.iter().all(|s| s == "istiod-1-28-0")), (Some("1-28-0"), true), "{tag:?}");
    let validator = &after.objects["ValidatingWebhookConfiguration istiod-default-validator"];
    assert!(validator.3.iter().all(|s| s == "istiod-1-28-0"), "{validator:?}");
    let gateway = &after.cluster.deployments["istio-system/istio-ingressgateway"];
    assert_eq!(gateway.1, [format!("registry.istio.io/testing/proxyv2:{TO}")], "{gateway:?}");
}

/// Runs the real upgrade, requests a rollback as soon as `step` succeeds.
async fn rollback_after(config: FleetConfig, options: &SpecOptions, step: &str) -> (Picture, Picture, Status) {
    let setup = setup(config, options).await;
    let before = picture(&setup.client).await;
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
        outcome = engine.run(id).await.expect("rollback run");
    }
    (before, picture(&setup.client).await, outcome.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_generated_output_rolls_back_after_each_step_to_the_cluster_it_found() {
    let steps = [
        "prod-eu/precheck",
        "prod-eu/record",
        "prod-eu/shared/crds",
        "prod-eu/install",
        "prod-eu/wait-control-plane",
        "prod-eu/validation",
        "prod-eu/gateways",
        "prod-eu/move/payments",
        "prod-eu/verify",
        "wave-1/health",
        "prod-eu/handover",
        "prod-eu/snapshot",
        "prod-eu/uninstall",
    ];
    for step in steps {
        let (before, after, status) = rollback_after(real_fleet(), &real_spec(), step).await;
        assert_eq!(status, Status::RolledBack, "after {step}");
        assert_eq!(after.cluster, before.cluster, "after a rollback requested when {step} succeeded");
        assert_eq!(names(&after), names(&before), "after a rollback requested when {step} succeeded: objects");
        let labels = |p: &Picture| {
            p.objects
                .iter()
                .map(|(k, v)| (k.clone(), (v.0.clone(), v.1.clone(), v.3.clone())))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            labels(&after),
            labels(&before),
            "after a rollback requested when {step} succeeded: labels and webhooks"
        );
    }
}

/// The node agents are shared: an upgrade, and its rollback, leave them
/// the same objects (same uid, same template) unless the spec asks to
/// upgrade them; then they are upgraded in place, and put back on rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_and_ztunnel_stay_the_same_objects_unless_asked_to_upgrade() {
    let with_agents = || FleetConfig { cni: true, ztunnel: true, ..real_fleet() };
    let mut manifests = revision_manifests("1-28-0", TO);
    for object in canaryflow_sim::cni(TO, "1-28-0").into_iter().chain(canaryflow_sim::ztunnel(TO)) {
        manifests.push_str(&canaryflow_sim::to_yaml(&[object]).expect("yaml"));
    }
    let options = SpecOptions { manifests: Some(manifests.clone()), ..real_spec() };
    let kept = setup(with_agents(), &options).await;
    let before = picture(&kept.client).await;
    assert_eq!(before.agents.keys().collect::<Vec<_>>(), ["istio-cni-node", "ztunnel"]);
    let prepared = canaryflow_workflows::prepare(&kept.spec).await.expect("prepared");
    assert!(prepared.manifests.cni.len() + prepared.manifests.ztunnel.len() >= 2, "the manifests carry the agents");
    let runner = engine(kept.dir.path());
    let id = runner.start(prepared.workflow().expect("workflow")).await.expect("start");
    assert_eq!(runner.run(id).await.expect("run").status, Status::Succeeded);
    assert_eq!(picture(&kept.client).await.agents, before.agents, "kept: same uid, same template, after the upgrade");

    let (before, after, status) = rollback_after(with_agents(), &options, "prod-eu/uninstall").await;
    assert_eq!(status, Status::RolledBack);
    assert_eq!(after.agents, before.agents, "kept: same uid, same template, after the rollback");

    // Asked to upgrade the CNI agent: upgraded in place (same uid, new image), put back on rollback.
    let asked = SpecOptions { extra: "  shared: {cni: upgrade}\n", ..options.clone() };
    let setup = setup(with_agents(), &asked).await;
    let before = picture(&setup.client).await;
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    assert_eq!(engine.run(id).await.expect("run").status, Status::Succeeded);
    let after = picture(&setup.client).await;
    assert_eq!(
        after.agents["istio-cni-node"].0, before.agents["istio-cni-node"].0,
        "upgraded in place: the same object"
    );
    assert!(
        after.agents["istio-cni-node"].1.contains(&format!("install-cni:{TO}")),
        "{:?}",
        after.agents["istio-cni-node"]
    );
    assert_eq!(after.agents["ztunnel"], before.agents["ztunnel"], "ztunnel was not asked for");
    assert_eq!(
        after.objects["DaemonSet istio-cni-node"].0,
        some("default"),
        "its revision label stays: no uninstall takes it"
    );
    let (before, after, status) = rollback_after(with_agents(), &asked, "prod-eu/shared/cni").await;
    assert_eq!(status, Status::RolledBack);
    assert_eq!(after.agents["istio-cni-node"].1, before.agents["istio-cni-node"].1, "the CNI agent is put back");
}

/// Creates a bare pod in `namespace` (labelled `labels`) and returns the revision that injected it.
async fn injected_now(client: &Client, namespace: &str, name: &str, labels: Value) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}))
    .expect("pod");
    let created = pods.create(&PostParams::default(), &pod).await.expect("pod created");
    pods.delete(name, &DeleteParams::default()).await.expect("pod deleted");
    let view = canaryflow_workflows::PodView::from_json(&serde_json::to_value(created).expect("json")).expect("view");
    canaryflow_workflows::injected_by(&view).and_then(|injection| injection.revision)
}

/// Since 1.12 the `default` tag injects `istio-injection=enabled`
/// namespaces and `sidecar.istio.io/inject=true` pods: after the upgrade
/// the new revision does (the tag moved, what it had injected restarted),
/// after a rollback the old one does again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_tag_hands_its_injection_to_the_new_revision_and_back() {
    let options = SpecOptions { namespaces: "{names: [shop]}", ..real_spec() };
    let setup = setup(real_fleet(), &options).await;
    let namespaces: Api<Namespace> = Api::all(setup.client.clone());
    let plain: Namespace = serde_json::from_value(json!({"metadata": {"name": "plain"}})).expect("namespace");
    namespaces.create(&PostParams::default(), &plain).await.expect("plain");
    let check = |client: Client| async move {
        (
            injected_now(&client, "payments", "probe-enabled", json!({})).await,
            injected_now(&client, "plain", "probe-inject", json!({"sidecar.istio.io/inject": "true"})).await,
        )
    };
    assert_eq!(
        check(setup.client.clone()).await,
        (some("default"), some("default")),
        "before: the default tag injects default"
    );

    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");
    assert_eq!(check(setup.client.clone()).await, (some("1-28-0"), some("1-28-0")), "after: the tag moved to 1-28-0");
    let state = cluster_state(&setup.client).await;
    assert_eq!(state.namespaces["payments"], (some("enabled"), None), "payments was not relabelled: the tag moved");
    assert_eq!(revisions(&state), BTreeSet::from([some("1-28-0")]), "what the tag injected was restarted onto 1-28-0");

    let signal = Signal::Rollback { scope: Scope::All, reason: "test".into(), allow_irreversible: false };
    engine.signal(id, signal).await.expect("rollback accepted");
    assert_eq!(engine.run(id).await.expect("rollback").status, Status::RolledBack);
    assert_eq!(check(setup.client.clone()).await, (some("default"), some("default")), "after rollback: default again");
    assert_eq!(revisions(&cluster_state(&setup.client).await), BTreeSet::from([some("default")]));
}

/// A pod no restart moves (a bare pod) in a moved namespace: verify names
/// it as needing an operator, and the uninstall refuses while it runs the
/// old revision's proxy, pausing with it named; replaced, the upgrade
/// finishes on resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_still_in_use_pauses_the_uninstall_with_the_blocker_named() {
    let setup = setup(real_fleet(), &real_spec()).await;
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), "shop");
    let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "debug-shell"},
        "spec": {"containers": [{"name": "shell", "image": "registry.example.com/shell:1"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &bare).await.expect("bare pod");
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let shop = prepared.clusters[0].namespaces.iter().find(|n| n.name == "shop").expect("shop");
    assert_eq!(shop.needs_operator.len(), 1, "planning names the pod no restart moves: {shop:?}");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    let outcome = engine.run(id).await.expect("run");
    assert_eq!(outcome.status, Status::Paused, "paused, not rolled back: {outcome:?}");
    let history = canaryflow_engine::load_history(engine.store(), id, None).expect("history");
    let blocked = history.iter().find_map(|r| match &r.event {
        Event::StepFailed(failed) if failed.step.as_str() == "prod-eu/snapshot" => Some(failed.error.message.clone()),
        _ => None,
    });
    let blocked = blocked.expect("the snapshot refused");
    let verified = history.iter().find_map(|r| match &r.event {
        Event::StepSucceeded(done) if done.step.as_str() == "prod-eu/verify" => Some(done.output.to_value()),
        _ => None,
    });
    let verified = verified.expect("verify succeeded: the pod is reported, not waited on");
    assert_eq!(verified["needs_operator"], json!(["shop/debug-shell (none)"]), "{verified}");
    assert!(blocked.contains("shop/debug-shell") && blocked.contains("still in use"), "{blocked}");
    assert!(
        picture(&setup.client).await.objects.contains_key("Deployment istiod"),
        "nothing of the old revision was deleted"
    );

    pods.delete("debug-shell", &DeleteParams::default()).await.expect("replaced by an operator");
    engine.signal(id, Signal::Resume).await.expect("resume");
    assert_eq!(engine.run(id).await.expect("run").status, Status::Succeeded);
    assert!(!picture(&setup.client).await.objects.contains_key("Deployment istiod"));
}

/// Bad manifests are refused before anything is written, each naming the object and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_real_manifests_are_refused_naming_the_object() {
    let real = revision_manifests("1-28-0", TO);
    let cases: [(String, &str); 3] = [
        (
            format!(
                "{real}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: nginx, namespace: istio-system}}\n"
            ),
            "Deployment nginx is not part of Istio",
        ),
        (format!("{real}{}", revision_manifests("1-27-0", FROM)), "these manifests mix revisions"),
        (real.replacen("namespace: istio-system", "namespace: mesh", 1), "spec.to.namespaces"),
    ];
    for (manifests, expected) in cases {
        let options = SpecOptions { manifests: Some(manifests), ..real_spec() };
        let setup = setup(real_fleet(), &options).await;
        let refused = canaryflow_workflows::prepare(&setup.spec).await.expect_err("refused");
        assert!(refused.to_string().contains(expected), "{expected}: {refused}");
    }
    let without_istiod: String = serde_saphyr::from_multiple::<Value>(&real)
        .expect("yaml")
        .into_iter()
        .filter(|o| !(o["kind"] == "Deployment" && o["metadata"]["name"] == "istiod-1-28-0"))
        .map(|o| canaryflow_sim::to_yaml(&[o]).expect("yaml"))
        .collect();
    let setup = setup(real_fleet(), &SpecOptions { manifests: Some(without_istiod), ..real_spec() }).await;
    let refused = canaryflow_workflows::prepare(&setup.spec).await.expect_err("no istiod");
    assert!(refused.to_string().contains("no Deployment istiod-1-28-0"), "{refused}");
}

/// A cluster whose Istio an in-cluster operator reconciles is refused at
/// planning, naming the operator and the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_cluster_operator_is_refused_with_the_way_out() {
    let setup = setup(FleetConfig { operator: true, ..real_fleet() }, &real_spec()).await;
    let refused = canaryflow_workflows::prepare(&setup.spec).await.expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("istio-operator/istio-operator") && message.contains("istio-system/installed-state"),
        "{message}"
    );
    assert!(message.contains("istioctl operator remove"), "{message}");
}

/// The same spec on a current pair of releases rendered by the simulator
/// (helm-installed this time: no owner labels at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_install_of_1_27_upgrades_to_1_28() {
    let config = FleetConfig {
        names: vec!["prod-eu".into()],
        namespaces: 2,
        deployments: 2,
        revision: "1-27-0".into(),
        version: FROM.into(),
        installer: Installer::Helm,
        rollout_delay: Duration::from_millis(40),
        ..FleetConfig::default()
    };
    let options = SpecOptions {
        from: "1-27-0",
        to: "1-28-0",
        version: TO,
        namespaces: "{selector: istio.io/rev=1-27-0}",
        ..SpecOptions::default()
    };
    let setup = setup(config, &options).await;
    let before = picture(&setup.client).await;
    assert_eq!(before.objects["ServiceAccount istiod-1-27-0"].0, None, "Helm labels no account with its revision");
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    assert_eq!(engine.run(id).await.expect("run").status, Status::Succeeded);
    let after = picture(&setup.client).await;
    assert_eq!(revisions(&after.cluster), BTreeSet::from([some("1-28-0")]));
    let left: Vec<&String> = after.objects.keys().filter(|k| k.contains("1-27-0")).collect();
    assert!(left.is_empty(), "nothing of 1-27-0 is left, labelled or not: {left:?}");
}

/// The last sequence number of the only workflow in `data`.
async fn last_seq(data: &std::path::Path) -> u64 {
    let (_, stdout, _) = cli(data, &["list", "-o", "json"], &[]).await;
    let listed: Value = serde_json::from_str(&stdout).expect("json");
    listed[0]["events"].as_u64().expect("events") - 1
}

/// The real upgrade through the command line, killed after every event in
/// turn and resumed by a new process: each run ends in the cluster an
/// uninterrupted run leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_generated_output_killed_at_every_event_boundary_resumes_to_the_same_cluster() {
    let reference = setup(real_fleet(), &real_spec()).await;
    let data = reference.dir.path().join("data");
    let spec = reference.spec.to_str().expect("path").to_string();
    let (output, _, stderr) = cli(&data, &["start", "-f", &spec, "--progress", "quiet"], &[]).await;
    assert!(output.status.success(), "{stderr}");
    let expected = picture(&reference.client).await;
    let events = last_seq(&data).await;
    assert!(events > 20, "the upgrade recorded {events} events");

    let mut crashed = 0;
    for seq in 0..events {
        let run = setup(real_fleet(), &real_spec()).await;
        let data = run.dir.path().join("data");
        let spec = run.spec.to_str().expect("path").to_string();
        let crash = [("CANARYFLOW_CRASH_AFTER_SEQ", seq.to_string())];
        let (output, _, _) = cli(&data, &["start", "-f", &spec, "--progress", "quiet"], &crash).await;
        if !output.status.success() {
            crashed += 1;
        }
        let (output, stdout, stderr) = cli(&data, &["resume"], &[]).await;
        assert!(output.status.success(), "resume after a crash at sequence {seq}: {stdout}{stderr}");
        let got = picture(&run.client).await;
        assert_eq!(got.cluster, expected.cluster, "killed after event {seq}, resumed: the cluster differs");
        assert_eq!(names(&got), names(&expected), "killed after event {seq}, resumed: Istio's objects differ");
    }
    assert!(crashed + 2 >= events, "only {crashed} of {events} runs were killed at their failpoint");
}

/// A revision canaryflow installed is later removed as its install
/// recorded: the second upgrade's snapshot step carries the first one's
/// record of what it created, and nothing of that revision is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_canaryflow_installed_is_removed_as_its_record_says() {
    let first = setup(real_fleet(), &real_spec()).await;
    let data = first.dir.path().join("data");
    let spec = first.spec.to_str().expect("path").to_string();
    let (output, _, stderr) = cli(&data, &["start", "-f", &spec, "--progress", "quiet"], &[]).await;
    assert!(output.status.success(), "{stderr}");

    // Then 1-28-0 to 1-29-0, in the same data directory.
    let second_spec = first.dir.path().join("second.yaml");
    std::fs::write(first.dir.path().join("second-manifests.yaml"), revision_manifests("1-29-0", "1.29.0"))
        .expect("write");
    let text = std::fs::read_to_string(&first.spec)
        .expect("spec")
        .replace("from: {revision: default}", "from: {revision: 1-28-0}")
        .replace(
            "to: {revision: 1-28-0, version: 1.28.0, manifests: manifests.yaml}",
            "to: {revision: 1-29-0, version: 1.29.0, manifests: second-manifests.yaml}",
        )
        .replace("{selector: istio-injection=enabled}", "{selector: istio.io/rev=1-28-0}")
        .replace("name: test-upgrade", "name: second-upgrade");
    std::fs::write(&second_spec, text).expect("write");
    let (output, stdout, stderr) =
        cli(&data, &["start", "-f", second_spec.to_str().expect("path"), "--progress", "quiet"], &[]).await;
    assert!(output.status.success(), "{stdout}{stderr}");
    let (_, listed, _) = cli(&data, &["list", "-o", "json"], &[]).await;
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let second = listed.as_array().expect("list").iter().find(|w| w["name"] == "second-upgrade").expect("second");
    let id = second["id"].as_str().expect("id");
    let (_, history, _) = cli(&data, &["history", id, "-o", "json"], &[]).await;
    assert!(
        history.contains("\"installed\": [") && history.contains("istiod-1-28-0"),
        "the snapshot carries the record: {}",
        &history[..history.len().min(3000)]
    );
    let after = picture(&first.client).await;
    let left: Vec<&String> = after.objects.keys().filter(|k| k.contains("1-28-0")).collect();
    assert!(left.is_empty(), "nothing of 1-28-0 is left: {left:?}");
    assert_eq!(revisions(&after.cluster), BTreeSet::from([some("1-29-0")]));
}

/// The permission check covers every verb on every resource the upgrade
/// uses, deletes included (a rollback deletes what the install made, the
/// uninstall what the old revision had): each one denied is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_the_upgrade_uses_is_checked_deletes_included() {
    let denied = [
        "delete clusterroles.rbac.authorization.k8s.io",
        "delete mutatingwebhookconfigurations.admissionregistration.k8s.io",
        "delete envoyfilters.networking.istio.io",
        "patch customresourcedefinitions.apiextensions.k8s.io",
        "watch deployments.apps",
    ];
    let faults =
        canaryflow_sim::FaultConfig { rbac_deny: denied.iter().map(|d| d.to_string()).collect(), ..Default::default() };
    let setup = setup(FleetConfig { faults, ..real_fleet() }, &real_spec()).await;
    let refused = canaryflow_workflows::prepare(&setup.spec).await.expect_err("refused").to_string();
    for permission in denied {
        assert!(refused.contains(permission), "{permission} is named: {refused}");
    }
}

/// A Helm gateway (injected with the `gateway` template, `image: auto`) in
/// a moved namespace moves with it like any workload: restarted, injected
/// by the new revision; it is not one the gateways step upgrades in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_gateway_moves_with_its_namespace() {
    let setup = setup(real_fleet(), &real_spec()).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(setup.client.clone(), "shop");
    let gateway: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "istio-ingress", "labels": {"app": "istio-ingress", "istio": "ingress"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istio-ingress", "istio": "ingress"}},
            "template": {"metadata": {"labels": {"app": "istio-ingress", "istio": "ingress", "sidecar.istio.io/inject": "true"},
                                      "annotations": {"inject.istio.io/templates": "gateway"}},
                "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]}}}
    }))
    .expect("gateway");
    deployments.create(&PostParams::default(), &gateway).await.expect("helm gateway");
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), "shop");
    let gateway_revision = || async {
        let listed = pods.list(&ListParams::default().labels("istio=ingress")).await.expect("pods").items;
        listed
            .into_iter()
            .filter_map(|pod| canaryflow_workflows::PodView::from_json(&serde_json::to_value(pod).expect("json")))
            .filter_map(|pod| canaryflow_workflows::injected_by(&pod))
            .map(|injection| (injection.revision, injection.proxy_version))
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gateway_revision().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the Helm gateway never got its injected proxy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gateway_revision().await, [(some("default"), some(FROM))]);
    let prepared = canaryflow_workflows::prepare(&setup.spec).await.expect("prepared");
    assert!(prepared.clusters[0].gateways.iter().all(|g| g.name != "istio-ingress"), "not an in-place gateway");
    let engine = engine(setup.dir.path());
    let id = engine.start(prepared.workflow().expect("workflow")).await.expect("start");
    assert_eq!(engine.run(id).await.expect("run").status, Status::Succeeded);
    assert_eq!(gateway_revision().await, [(some("1-28-0"), some(TO))], "moved with its namespace");
}
