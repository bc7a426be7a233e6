//! Reading each cluster before anything is recorded: is it reachable, may
//! it be upgraded (see [`crate::prechecks`]), which namespaces, workloads
//! and gateways move, which tags and shared pieces are there, and which
//! version of each kind it serves. Read-only.

use std::collections::BTreeSet;
use std::sync::Arc;

use canaryflow_engine::ActivityError;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::activities::WORKFLOW_ANNOTATION;
use crate::inputs::{
    ClusterDiscovery, GatewayPlan, InjectionLabels, NamespacePlan, NodeAgentPlan, TagPlan, UnmanagedPod, WorkloadRef,
};
use crate::istio::{ISTIO_NAMESPACE, gateway_revision, injected_by};
use crate::kube_ops::{ClusterClient, Clusters, clean, kube_error, list_pods, to_json, workload_names};
use crate::manifests::Manifests;
use crate::prechecks;
use crate::spec::{ClusterRef, RevisionName, UpgradeSpec};

/// Namespaces never moved, whatever a selector says.
const SYSTEM_NAMESPACES: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", ISTIO_NAMESPACE];

/// Why a cluster cannot be upgraded as planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster {cluster} (context {context}): {message}")]
pub struct DiscoveryError {
    /// The cluster.
    pub cluster: String,
    /// Its context.
    pub context: String,
    /// What is wrong.
    pub message: String,
}

/// Clusters read at once while planning: a fleet of a hundred read all at
/// once holds every cluster's workloads in memory together.
const DISCOVERY_CLUSTERS_AT_ONCE: usize = 8;

/// Reads every cluster of `spec`, a few at a time; fails on the first
/// problem found in each, and reports all clusters that have one.
pub async fn discover(
    clusters: &Clusters,
    spec: &UpgradeSpec,
    manifests: &Manifests,
) -> Result<Vec<ClusterDiscovery>, Vec<DiscoveryError>> {
    let mut tasks = Vec::new();
    for cluster in &spec.clusters {
        tasks.push(async move {
            let client = clusters.get(cluster).await.map_err(|err| fail(cluster, err.message))?;
            discover_one(&client, spec, manifests).await.map_err(|err| fail(cluster, err.message))
        });
    }
    let results: Vec<_> = futures::stream::iter(tasks).buffered(DISCOVERY_CLUSTERS_AT_ONCE).collect().await;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(discovery) => found.push(discovery),
            Err(err) => errors.push(err),
        }
    }
    if errors.is_empty() { Ok(found) } else { Err(errors) }
}

fn fail(cluster: &ClusterRef, message: String) -> DiscoveryError {
    DiscoveryError { cluster: cluster.name.clone(), context: cluster.context.clone(), message }
}

/// What an upgrade of this cluster writes: the revision's objects and
/// gateways, and the shared pieces the spec asks to upgrade.
#[must_use]
pub fn written<'a>(spec: &UpgradeSpec, manifests: &'a Manifests) -> Vec<&'a Value> {
    use crate::spec::SharedChoice::Upgrade;
    let mut objects: Vec<&Value> = manifests.control_plane.iter().chain(&manifests.gateways).collect();
    if spec.shared.crds == Upgrade {
        objects.extend(&manifests.crds);
    }
    if spec.shared.cni == Upgrade {
        objects.extend(&manifests.cni);
    }
    if spec.shared.ztunnel == Upgrade {
        objects.extend(&manifests.ztunnel);
    }
    objects
}

async fn discover_one(
    client: &Arc<ClusterClient>,
    spec: &UpgradeSpec,
    manifests: &Manifests,
) -> Result<ClusterDiscovery, ActivityError> {
    let kube = &client.client;
    let version = kube
        .apiserver_version()
        .await
        .map_err(|err| ActivityError::retryable("unavailable", format!("unreachable: {err}")))?;
    let cluster = client.cluster.name.as_str();
    let written = written(spec, manifests);
    prechecks::check_kubernetes(&version.git_version, &spec.to_version, cluster)?;
    let unserved = prechecks::unserved_kinds(client, &written).await?;
    if !unserved.is_empty() {
        let minor = spec.to_version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
        let (oldest, newest) = prechecks::kubernetes_supported(minor);
        return Err(ActivityError::fatal(
            "precondition",
            format!(
                "cluster {cluster} (Kubernetes {}) does not serve {}, which the manifests of Istio {} use (Istio {} supports Kubernetes 1.{oldest} to 1.{newest})",
                version.git_version,
                unserved.join(", "),
                spec.to_version,
                spec.to_version,
            ),
        ));
    }
    prechecks::check_no_operator(client).await?;
    let from_version = prechecks::check_revisions(client, &spec.from, &spec.to).await?;
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), ISTIO_NAMESPACE);
    let installed_by = deployments
        .get_opt(&spec.from.istiod())
        .await
        .map_err(|err| kube_error(&format!("read Deployment {}", spec.from.istiod()), err))?
        .and_then(|d| d.metadata.annotations)
        .and_then(|annotations| annotations.get(WORKFLOW_ANNOTATION).cloned());
    prechecks::check_skew(&from_version, &spec.to_version)?;
    prechecks::check_permissions(client, &written).await?;
    let namespaces = namespaces(client, spec).await?;
    let gateways = gateways(client, spec, manifests, &namespaces).await?;
    let services: Api<Service> = Api::namespaced(kube.clone(), ISTIO_NAMESPACE);
    let istiod_service = services
        .get_opt("istiod")
        .await
        .map_err(|err| kube_error("read Service istiod", err))?
        .map(|s| clean(to_json(s)));
    let tags = tags(client).await?;
    let tag_webhook = match &spec.tag {
        Some(tag) => Some(tag_webhook(&tags, tag, &spec.from)?),
        None => None,
    };
    let validators: Api<ValidatingWebhookConfiguration> = Api::all(kube.clone());
    let default_validator = validators
        .get_opt("istiod-default-validator")
        .await
        .map_err(|err| kube_error("read istiod-default-validator", err))?
        .map(|v| typed(clean(to_json(v)), "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"));
    Ok(ClusterDiscovery {
        cluster: client.cluster.clone(),
        kubernetes_version: version.git_version,
        from_version,
        namespaces,
        gateways,
        istiod_service,
        tag_webhook,
        tags,
        default_validator,
        node_agents: node_agents(client).await?,
        kinds: prechecks::kinds_used(client, &written).await?,
        installed_by,
        installed: Vec::new(),
    })
}

fn typed(mut object: Value, api_version: &str, kind: &str) -> Value {
    object["apiVersion"] = serde_json::json!(api_version);
    object["kind"] = serde_json::json!(kind);
    object
}

/// The revision tags: every injector webhook configuration labelled `istio.io/tag`.
async fn tags(client: &ClusterClient) -> Result<Vec<TagPlan>, ActivityError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.client.clone());
    let found = api
        .list(&ListParams::default().labels("istio.io/tag"))
        .await
        .map_err(|err| kube_error("list revision tags", err))?;
    let mut tags: Vec<TagPlan> = found
        .items
        .into_iter()
        .map(|webhook| {
            let value =
                typed(clean(to_json(webhook)), "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration");
            let label = |key: &str| {
                value
                    .pointer(&format!("/metadata/labels/{key}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            TagPlan { name: label("istio.io~1tag"), revision: label("istio.io~1rev"), webhook: value }
        })
        .collect();
    tags.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tags)
}

/// The node agents present: `istio-cni-node`, `ztunnel`.
async fn node_agents(client: &ClusterClient) -> Result<Vec<NodeAgentPlan>, ActivityError> {
    let api: Api<DaemonSet> = Api::namespaced(client.client.clone(), ISTIO_NAMESPACE);
    let mut found = Vec::new();
    for name in ["istio-cni-node", "ztunnel"] {
        if let Some(daemonset) =
            api.get_opt(name).await.map_err(|err| kube_error(&format!("read DaemonSet {name}"), err))?
        {
            let value = to_json(daemonset);
            found.push(NodeAgentPlan {
                name: name.into(),
                uid: value.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().into(),
                image: value
                    .pointer("/spec/template/spec/containers/0/image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
            });
        }
    }
    Ok(found)
}

/// The namespaces that move, with their workloads.
async fn namespaces(client: &ClusterClient, spec: &UpgradeSpec) -> Result<Vec<NamespacePlan>, ActivityError> {
    let api: Api<Namespace> = Api::all(client.client.clone());
    let mut found: Vec<Value> = Vec::new();
    if let Some(selector) = &spec.namespaces.selector {
        let listed = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|err| kube_error("list namespaces", err))?;
        found.extend(listed.items.into_iter().map(to_json));
    }
    for name in &spec.namespaces.names {
        match api.get_opt(name).await.map_err(|err| kube_error(&format!("read namespace {name}"), err))? {
            Some(namespace) => found.push(to_json(namespace)),
            None => {
                return Err(ActivityError::fatal(
                    "precondition",
                    format!("namespace {name} (spec.namespaces.names) does not exist"),
                ));
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for namespace in found {
        let name = namespace.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if SYSTEM_NAMESPACES.contains(&name.as_str()) || !seen.insert(name.clone()) {
            continue;
        }
        let workloads = workloads(client, &name).await?;
        let resource_version =
            namespace.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
        let needs_operator = unmanaged_pods(client, &name).await?;
        out.push(NamespacePlan {
            name,
            labels: InjectionLabels::of(&namespace),
            workloads,
            resource_version,
            needs_operator,
        });
    }
    if out.is_empty() {
        let what = match (&spec.namespaces.selector, spec.namespaces.names.is_empty()) {
            (Some(selector), _) => format!("selector {selector:?}"),
            (None, _) => "spec.namespaces".to_string(),
        };
        return Err(ActivityError::fatal("precondition", format!("{what} matches no namespace to move")));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The running pods with a proxy in `namespace` that no rollout restarts:
/// a Job's (a CronJob's runs through one), a bare pod, another controller's.
pub async fn unmanaged_pods(client: &ClusterClient, namespace: &str) -> Result<Vec<UnmanagedPod>, ActivityError> {
    let mut found: Vec<UnmanagedPod> = list_pods(&client.client, Some(namespace))
        .await?
        .into_iter()
        .filter(|pod| pod.running() && injected_by(pod).is_some())
        .filter_map(|pod| {
            let owner = match pod.owner() {
                Some(("ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet", _)) => return None,
                Some((kind, name)) => format!("{kind}/{name}"),
                None => "none".to_string(),
            };
            Some(UnmanagedPod { name: pod.name().to_string(), owner })
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The Deployments, StatefulSets and DaemonSets of a namespace.
pub async fn workloads(client: &ClusterClient, namespace: &str) -> Result<Vec<WorkloadRef>, ActivityError> {
    const KINDS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];
    let lists =
        futures::future::try_join_all(KINDS.map(|kind| workload_names(&client.client, kind, namespace))).await?;
    let mut out: Vec<WorkloadRef> = KINDS
        .into_iter()
        .zip(lists)
        .flat_map(|(kind, names)| names.into_iter().map(move |name| WorkloadRef { kind: kind.into(), name }))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether a gateway Deployment is injected (Helm's gateway chart: the
/// `gateway` injection template fills in its `image: auto` proxy) rather
/// than carrying its own proxy (istioctl's gateways).
fn injected_gateway(deployment: &Value) -> bool {
    let template = deployment.pointer("/spec/template");
    let annotation = template
        .and_then(|t| t.pointer("/metadata/annotations/inject.istio.io~1templates"))
        .and_then(Value::as_str)
        .is_some_and(|templates| templates.split(',').any(|t| t.trim() == "gateway"));
    let auto = template
        .and_then(|t| t.pointer("/spec/containers"))
        .and_then(Value::as_array)
        .is_some_and(|containers| containers.iter().any(|c| c["name"] == "istio-proxy" && c["image"] == "auto"));
    annotation || auto
}

/// Whether a Deployment is an Istio gateway: `istio: ingressgateway`,
/// `egressgateway` (istioctl), `ingress`, `egress` (Helm), or injected with
/// the gateway template.
fn is_gateway(deployment: &Value) -> bool {
    let istio = deployment.pointer("/spec/template/metadata/labels/istio").and_then(Value::as_str);
    matches!(istio, Some("ingressgateway" | "egressgateway" | "ingress" | "egress")) || injected_gateway(deployment)
}

/// The gateways the `gateways` step upgrades: istioctl's (their own proxy;
/// the new revision's manifests must render each one that runs the old
/// revision, or it would be left behind), and injected ones the namespace
/// labels do not move, that name the old revision themselves (set
/// `istio.io/rev` on their template, as Istio's gateway docs do). An
/// injected gateway in a moved namespace moves with it, like any workload;
/// one injected through the `default` tag moves when the tag does.
async fn gateways(
    client: &ClusterClient,
    spec: &UpgradeSpec,
    manifests: &Manifests,
    moved: &[NamespacePlan],
) -> Result<Vec<GatewayPlan>, ActivityError> {
    let mut deployments: Vec<Value> = Vec::new();
    match &spec.gateways {
        Some(names) => {
            for name in names {
                let (namespace, gateway) = name.split_once('/').expect("checked by the spec");
                let api: Api<Deployment> = Api::namespaced(client.client.clone(), namespace);
                match api.get_opt(gateway).await.map_err(|err| kube_error(&format!("read gateway {name}"), err))? {
                    Some(found) => deployments.push(to_json(found)),
                    None => {
                        return Err(ActivityError::fatal(
                            "precondition",
                            format!("gateway {name} (spec.gateways.names) does not exist"),
                        ));
                    }
                }
            }
        }
        None => {
            let api: Api<Deployment> = Api::all(client.client.clone());
            let all = api.list(&ListParams::default()).await.map_err(|err| kube_error("list gateways", err))?.items;
            deployments = all.into_iter().map(to_json).filter(is_gateway).collect();
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.client.clone());
    let mut out = Vec::new();
    for value in deployments {
        let text = |pointer: &str| value.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
        let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
        let revision = gateway_revision(&value);
        let injected = injected_gateway(&value);
        let rendered = manifests.gateways.iter().any(|o| {
            o["kind"] == "Deployment"
                && o["metadata"]["name"] == name.as_str()
                && o["metadata"]["namespace"] == namespace.as_str()
        });
        if !injected {
            if !rendered && revision == spec.from.0 {
                return Err(ActivityError::fatal(
                    "precondition",
                    format!(
                        "gateway {namespace}/{name} carries its own proxy of revision {} and the manifests do not render it: render the gateways with the new revision (istioctl manifest generate includes them), or it would be left on {} and block its uninstall",
                        spec.from, spec.from
                    ),
                ));
            }
            if rendered {
                out.push(GatewayPlan { namespace, name, revision, snapshot: clean(value), injected });
            }
            continue;
        }
        if moved.iter().any(|plan| plan.name == namespace) {
            continue; // moves with its namespace
        }
        let labels = namespaces
            .get_opt(&namespace)
            .await
            .map_err(|err| kube_error(&format!("read namespace {namespace}"), err))?
            .map(|ns| InjectionLabels::of(&to_json(ns)))
            .unwrap_or_default();
        let template_revision = value.pointer("/spec/template/metadata/labels/istio.io~1rev").and_then(Value::as_str);
        match (&labels.istio_injection, &labels.istio_rev) {
            (None, Some(namespace_revision)) if *namespace_revision == spec.from.0 => {
                return Err(ActivityError::fatal(
                    "precondition",
                    format!(
                        "gateway {namespace}/{name} is injected through namespace {namespace}'s istio.io/rev={}: add {namespace} to spec.namespaces so that it moves",
                        spec.from
                    ),
                ));
            }
            (None, None) if template_revision == Some(spec.from.0.as_str()) => {
                out.push(GatewayPlan { namespace, name, revision, snapshot: clean(value), injected });
            }
            _ => {} // injected through the default tag, or already elsewhere
        }
    }
    Ok(out)
}

/// The tag's webhook configuration; it must point at the old revision.
fn tag_webhook(tags: &[TagPlan], tag: &str, from: &RevisionName) -> Result<Value, ActivityError> {
    let Some(found) = tags.iter().find(|t| t.name == tag) else {
        return Err(ActivityError::fatal(
            "precondition",
            format!("revision tag {tag} does not exist (no MutatingWebhookConfiguration istio-revision-tag-{tag})"),
        ));
    };
    if found.revision != from.0 {
        return Err(ActivityError::fatal(
            "precondition",
            format!("revision tag {tag} points at {:?}, not at {from}", found.revision),
        ));
    }
    Ok(found.webhook.clone())
}
