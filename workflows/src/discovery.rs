//! Reading each cluster before anything is recorded: is it reachable, is the
//! old revision there and healthy, may canaryflow do what it must, which
//! namespaces, workloads and gateways move. Read-only.

use std::collections::BTreeSet;
use std::sync::Arc;

use canaryflow_engine::ActivityError;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;

use crate::inputs::{ClusterDiscovery, GatewayPlan, InjectionLabels, NamespacePlan, WorkloadRef};
use crate::istio::{ISTIO_NAMESPACE, gateway_revision};
use crate::kube_ops::{ClusterClient, Clusters, clean, kube_error, to_json, workload_names};
use crate::spec::{ClusterRef, RevisionName, UpgradeSpec};

/// Namespaces never moved, whatever a selector says.
const SYSTEM_NAMESPACES: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", ISTIO_NAMESPACE];
/// How far apart the two revisions' minor versions may be (ISTIO-REFERENCE.md §5).
pub const SKEW_MINORS_MAX: u32 = 2;

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
pub async fn discover(clusters: &Clusters, spec: &UpgradeSpec) -> Result<Vec<ClusterDiscovery>, Vec<DiscoveryError>> {
    let mut tasks = Vec::new();
    for cluster in &spec.clusters {
        tasks.push(async move {
            let client = clusters.get(cluster).await.map_err(|err| fail(cluster, err.message))?;
            discover_one(&client, spec).await.map_err(|err| fail(cluster, err.message))
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

async fn discover_one(client: &Arc<ClusterClient>, spec: &UpgradeSpec) -> Result<ClusterDiscovery, ActivityError> {
    let kube = &client.client;
    let version = kube
        .apiserver_version()
        .await
        .map_err(|err| ActivityError::retryable("unavailable", format!("unreachable: {err}")))?;
    let from_version = check_revisions(client, &spec.from, &spec.to).await?;
    check_skew(&from_version, &spec.to_version)?;
    check_permissions(client).await?;
    let namespaces = namespaces(client, spec).await?;
    let gateways = gateways(client, spec).await?;
    let services: Api<Service> = Api::namespaced(kube.clone(), ISTIO_NAMESPACE);
    let istiod_service = services
        .get_opt("istiod")
        .await
        .map_err(|err| kube_error("read Service istiod", err))?
        .map(|s| clean(to_json(s)));
    let tag_webhook = match &spec.tag {
        Some(tag) => Some(tag_webhook(client, tag, &spec.from).await?),
        None => None,
    };
    Ok(ClusterDiscovery {
        cluster: client.cluster.clone(),
        kubernetes_version: version.git_version,
        from_version,
        namespaces,
        gateways,
        istiod_service,
        tag_webhook,
    })
}

/// The old revision must be installed and available, the new one absent.
/// Returns the old revision's Istio version (its istiod image tag).
pub async fn check_revisions(
    client: &ClusterClient,
    from: &RevisionName,
    to: &RevisionName,
) -> Result<String, ActivityError> {
    let deployments: Api<Deployment> = Api::namespaced(client.client.clone(), ISTIO_NAMESPACE);
    let istiod = from.istiod();
    let Some(old) =
        deployments.get_opt(&istiod).await.map_err(|err| kube_error(&format!("read Deployment {istiod}"), err))?
    else {
        return Err(ActivityError::fatal(
            "precondition",
            format!("revision {from} is not installed: there is no Deployment {ISTIO_NAMESPACE}/{istiod}"),
        ));
    };
    let available = old.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    if available < 1 {
        return Err(ActivityError::fatal(
            "precondition",
            format!("revision {from} is not healthy: Deployment {istiod} has no available replica"),
        ));
    }
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.client.clone());
    let labelled = webhooks
        .list(&ListParams::default().labels(&format!("istio.io/rev={from}")))
        .await
        .map_err(|err| kube_error("list injector webhooks", err))?;
    if labelled.items.is_empty() {
        return Err(ActivityError::fatal(
            "precondition",
            format!(
                "revision {from} has no injector webhook (no MutatingWebhookConfiguration labelled istio.io/rev={from})"
            ),
        ));
    }
    let new = to.istiod();
    if deployments.get_opt(&new).await.map_err(|err| kube_error(&format!("read Deployment {new}"), err))?.is_some() {
        return Err(ActivityError::fatal(
            "precondition",
            format!("revision {to} is already installed (Deployment {ISTIO_NAMESPACE}/{new} exists)"),
        ));
    }
    let image = old
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let version = image.rsplit_once(':').map(|(_, tag)| tag.to_string()).unwrap_or_default();
    if version.split('.').count() != 3 {
        return Err(ActivityError::fatal(
            "precondition",
            format!("cannot tell revision {from}'s Istio version from its image {image:?}"),
        ));
    }
    Ok(version)
}

/// At most two minor versions apart, same major (ISTIO-REFERENCE.md §5).
pub fn check_skew(from_version: &str, to_version: &str) -> Result<(), ActivityError> {
    let parse = |version: &str| -> Option<(u32, u32)> {
        let mut parts = version.split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    let (Some((from_major, from_minor)), Some((to_major, to_minor))) = (parse(from_version), parse(to_version)) else {
        return Err(ActivityError::fatal(
            "precondition",
            format!("cannot compare versions {from_version} and {to_version}"),
        ));
    };
    if from_major != to_major || from_minor.abs_diff(to_minor) > SKEW_MINORS_MAX {
        return Err(ActivityError::fatal(
            "precondition",
            format!(
                "Istio {from_version} to {to_version} skips more than {SKEW_MINORS_MAX} minor versions; revision-based upgrades support at most {SKEW_MINORS_MAX}"
            ),
        ));
    }
    Ok(())
}

/// What canaryflow must be allowed to do (SelfSubjectAccessReview), as
/// `istioctl x precheck` checks.
const PERMISSIONS: [(&str, &str, &str, bool); 16] = [
    ("create", "apps", "deployments", true),
    ("patch", "apps", "deployments", true),
    ("delete", "apps", "deployments", true),
    ("create", "", "services", true),
    ("delete", "", "services", true),
    ("create", "", "configmaps", true),
    ("create", "", "serviceaccounts", true),
    ("create", "rbac.authorization.k8s.io", "roles", true),
    ("create", "rbac.authorization.k8s.io", "rolebindings", true),
    ("create", "rbac.authorization.k8s.io", "clusterroles", false),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", false),
    ("create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", false),
    ("delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", false),
    ("create", "admissionregistration.k8s.io", "validatingwebhookconfigurations", false),
    ("patch", "", "namespaces", false),
    ("list", "", "pods", false),
];

/// `verb group/resource`, if the cluster denies it.
async fn denied_permission(
    reviews: Api<SelfSubjectAccessReview>,
    (verb, group, resource, namespaced): (&str, &str, &str, bool),
) -> Result<Option<String>, ActivityError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespaced.then(|| ISTIO_NAMESPACE.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .map_err(|err| kube_error("SelfSubjectAccessReview", err))?;
    if answer.status.as_ref().is_some_and(|s| s.allowed) {
        return Ok(None);
    }
    let qualified = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
    Ok(Some(format!("{verb} {qualified}")))
}

/// Access reviews one check sends at once.
const REVIEWS_AT_ONCE: usize = 8;

/// Checks every permission in [`PERMISSIONS`]; names every one denied.
pub async fn check_permissions(client: &ClusterClient) -> Result<(), ActivityError> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.client.clone());
    // A few reviews at a time, answers in the order asked.
    let asked = PERMISSIONS.map(|permission| denied_permission(reviews.clone(), permission));
    let answers: Vec<Option<String>> = futures::stream::iter(asked).buffered(REVIEWS_AT_ONCE).try_collect().await?;
    let denied: Vec<String> = answers.into_iter().flatten().collect();
    if denied.is_empty() {
        return Ok(());
    }
    Err(ActivityError::fatal(
        "forbidden",
        format!("missing permissions: {} (checked with SelfSubjectAccessReview)", denied.join(", ")),
    ))
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
        out.push(NamespacePlan { name, labels: InjectionLabels::of(&namespace), workloads, resource_version });
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

/// The gateways: as listed, or every Deployment labelled `istio=ingressgateway|egressgateway`.
async fn gateways(client: &ClusterClient, spec: &UpgradeSpec) -> Result<Vec<GatewayPlan>, ActivityError> {
    let mut deployments: Vec<Deployment> = Vec::new();
    match &spec.gateways {
        Some(names) => {
            for name in names {
                let (namespace, gateway) = name.split_once('/').expect("checked by the spec");
                let api: Api<Deployment> = Api::namespaced(client.client.clone(), namespace);
                match api.get_opt(gateway).await.map_err(|err| kube_error(&format!("read gateway {name}"), err))? {
                    Some(found) => deployments.push(found),
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
            let params = ListParams::default().labels("istio in (ingressgateway,egressgateway)");
            deployments = api.list(&params).await.map_err(|err| kube_error("list gateways", err))?.items;
        }
    }
    Ok(deployments
        .into_iter()
        .map(|deployment| {
            let value = to_json(deployment);
            GatewayPlan {
                namespace: value.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string(),
                name: value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
                revision: gateway_revision(&value),
                snapshot: clean(value),
            }
        })
        .collect())
}

/// The tag's webhook configuration; it must point at the old revision.
async fn tag_webhook(client: &ClusterClient, tag: &str, from: &RevisionName) -> Result<Value, ActivityError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.client.clone());
    let name = format!("istio-revision-tag-{tag}");
    let Some(webhook) = api.get_opt(&name).await.map_err(|err| kube_error(&format!("read {name}"), err))? else {
        return Err(ActivityError::fatal(
            "precondition",
            format!("revision tag {tag} does not exist (no MutatingWebhookConfiguration {name})"),
        ));
    };
    let value = to_json(webhook);
    let points_at = value.pointer("/metadata/labels/istio.io~1rev").and_then(Value::as_str).unwrap_or_default();
    if points_at != from.0 {
        return Err(ActivityError::fatal(
            "precondition",
            format!("revision tag {tag} points at {points_at:?}, not at {from}"),
        ));
    }
    Ok(clean(value))
}
