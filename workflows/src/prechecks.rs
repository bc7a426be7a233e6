//! The rules a cluster must meet before an upgrade starts, and again when
//! its precheck step runs: the old revision installed and healthy, the new
//! one absent, the versions within reach of each other and of the
//! cluster's Kubernetes, every kind the upgrade uses served, every
//! permission it needs granted, no in-cluster operator to fight. Read-only.

use std::collections::{BTreeMap, BTreeSet};

use canaryflow_engine::ActivityError;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;

use crate::inputs::ServedKind;
use crate::istio::{ISTIO_NAMESPACE, UNINSTALL_KINDS, image_version};
use crate::kube_ops::{ClusterClient, kube_error, to_json};
use crate::spec::RevisionName;

/// How far apart the two revisions' minor versions may be (ISTIO-REFERENCE.md §5).
pub const SKEW_MINORS_MAX: u32 = 2;

fn precondition(message: String) -> ActivityError {
    ActivityError::fatal("precondition", message)
}

/// The old revision must be installed and available, the new one absent.
/// Returns the old revision's Istio version: its istiod image's tag, or
/// (an image named by digest) the version istioctl labelled it with, or
/// its injector's `global.tag`.
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
        return Err(precondition(format!(
            "revision {from} is not installed: there is no Deployment {ISTIO_NAMESPACE}/{istiod}"
        )));
    };
    let available = old.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    if available < 1 {
        return Err(precondition(format!(
            "revision {from} is not healthy: Deployment {istiod} has no available replica"
        )));
    }
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.client.clone());
    let labelled = webhooks
        .list(&ListParams::default().labels(&format!("istio.io/rev={from}")))
        .await
        .map_err(|err| kube_error("list injector webhooks", err))?;
    if labelled.items.is_empty() {
        return Err(precondition(format!(
            "revision {from} has no injector webhook (no MutatingWebhookConfiguration labelled istio.io/rev={from})"
        )));
    }
    let new = to.istiod();
    if deployments.get_opt(&new).await.map_err(|err| kube_error(&format!("read Deployment {new}"), err))?.is_some() {
        return Err(precondition(format!(
            "revision {to} is already installed (Deployment {ISTIO_NAMESPACE}/{new} exists)"
        )));
    }
    let old = to_json(old);
    let image = old
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .and_then(|containers| containers.iter().find(|c| c["name"] == "discovery").or(containers.first()))
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(version) = image_version(&image) {
        return Ok(version);
    }
    if let Some(version) = old.pointer("/metadata/labels/operator.istio.io~1version").and_then(Value::as_str) {
        return Ok(version.to_string());
    }
    let injector =
        if from.is_default() { "istio-sidecar-injector".into() } else { format!("istio-sidecar-injector-{from}") };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.client.clone(), ISTIO_NAMESPACE);
    let values = config_maps
        .get_opt(&injector)
        .await
        .map_err(|err| kube_error(&format!("read ConfigMap {injector}"), err))?
        .and_then(|cm| cm.data)
        .and_then(|data| data.get("values").cloned())
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    values
        .as_ref()
        .and_then(|values| values.pointer("/global/tag"))
        .and_then(Value::as_str)
        .and_then(|tag| image_version(&format!("proxyv2:{tag}")))
        .ok_or_else(|| {
            precondition(format!(
                "cannot tell revision {from}'s Istio version: its image {image:?} has no version tag, and neither its labels nor {injector} name one"
            ))
        })
}

fn minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// At most two minor versions apart, same major (ISTIO-REFERENCE.md §5).
pub fn check_skew(from_version: &str, to_version: &str) -> Result<(), ActivityError> {
    let (Some((from_major, from_minor)), Some((to_major, to_minor))) = (minor(from_version), minor(to_version)) else {
        return Err(precondition(format!("cannot compare versions {from_version} and {to_version}")));
    };
    if from_major != to_major || from_minor.abs_diff(to_minor) > SKEW_MINORS_MAX {
        return Err(precondition(format!(
            "Istio {from_version} to {to_version} skips more than {SKEW_MINORS_MAX} minor versions; revision-based upgrades support at most {SKEW_MINORS_MAX}"
        )));
    }
    Ok(())
}

/// The Kubernetes releases (1.x minors, oldest and newest) Istio 1.`minor`
/// supports, as istio.io's support status table lists them
/// (`data/compatibility/supportStatus.yml`; 1.6-1.8 from the 1.7 docs'
/// "Supported Releases"). canaryflow keeps its own copy: it shares nothing
/// with the simulator.
#[must_use]
pub fn kubernetes_supported(minor: u32) -> (u32, u32) {
    match minor {
        0..=6 => (15, 18),
        7 => (16, 18),
        8 => (16, 19),
        9 => (17, 20),
        10 => (18, 21),
        11 | 12 => (19, 22),
        13 => (20, 23),
        14 => (21, 24),
        15 | 16 => (22, 25),
        17 => (23, 26),
        18 => (24, 27),
        19 => (25, 28),
        20 => (25, 29),
        21 => (26, 29),
        22 | 23 => (27, 30),
        24 => (28, 31),
        25 => (29, 32),
        26 | 27 => (29, 33),
        28 => (30, 34),
        29 => (31, 35),
        _ => (32, 36),
    }
}

/// The cluster's Kubernetes must be one Istio `to_version` runs on: not
/// older than the oldest it supports (what `istioctl x precheck` checks),
/// and its manifests' kinds served (checked by [`unserved_kinds`], which
/// is what a too-new cluster fails).
pub fn check_kubernetes(kubernetes_version: &str, to_version: &str, cluster: &str) -> Result<(), ActivityError> {
    let (Some((_, kube_minor)), Some((_, istio_minor))) =
        (minor(kubernetes_version.trim_start_matches('v')), minor(to_version))
    else {
        return Ok(());
    };
    let (oldest, newest) = kubernetes_supported(istio_minor);
    if kube_minor < oldest {
        return Err(precondition(format!(
            "cluster {cluster} runs Kubernetes 1.{kube_minor}, older than Istio {to_version} supports (Kubernetes 1.{oldest} to 1.{newest})"
        )));
    }
    Ok(())
}

/// The kinds of `objects` (manifests) the cluster does not serve, as
/// `apiVersion Kind` each.
pub async fn unserved_kinds(client: &ClusterClient, objects: &[&Value]) -> Result<Vec<String>, ActivityError> {
    let mut kinds: BTreeSet<(String, String)> = BTreeSet::new();
    for object in objects {
        let text = |field: &str| object.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
        kinds.insert((text("apiVersion"), text("kind")));
    }
    let mut unserved = Vec::new();
    for (api_version, kind) in kinds {
        if client.served(&api_version, &kind).await?.is_none() {
            unserved.push(format!("{api_version} {kind}"));
        }
    }
    Ok(unserved)
}

/// Which API version of each kind the upgrade reads, writes or deletes
/// on this cluster: the manifests' own, and the cluster's preferred for
/// what the upgrade finds there.
pub async fn kinds_used(client: &ClusterClient, objects: &[&Value]) -> Result<Vec<ServedKind>, ActivityError> {
    let mut used = BTreeMap::new();
    for object in objects {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        used.insert(qualified(group, kind), api_version.to_string());
    }
    let found = [("", "Namespace"), ("", "Pod"), ("apps", "StatefulSet")];
    for (group, kind) in UNINSTALL_KINDS.iter().chain(&found) {
        let key = qualified(group, kind);
        if used.contains_key(&key) {
            continue;
        }
        if let Some((resource, _)) = client.preferred(group, kind).await? {
            used.insert(key, resource.api_version.clone());
        }
    }
    Ok(used.into_iter().map(|(kind, api_version)| ServedKind { kind, api_version }).collect())
}

fn qualified(group: &str, kind: &str) -> String {
    if group.is_empty() { kind.to_string() } else { format!("{group}/{kind}") }
}

/// Refuses a cluster where an in-cluster Istio operator reconciles an
/// IstioOperator: it re-creates what the upgrade removes (istio/istio#35139).
pub async fn check_no_operator(client: &ClusterClient) -> Result<(), ActivityError> {
    let Some((resource, scope)) = client.preferred("install.istio.io", "IstioOperator").await? else { return Ok(()) };
    let operators = client
        .api_with(&resource, scope, None)
        .list(&ListParams::default())
        .await
        .map_err(|err| kube_error("list IstioOperators", err))?;
    if operators.items.is_empty() {
        return Ok(());
    }
    let deployments: Api<Deployment> = Api::all(client.client.clone());
    let running: Vec<String> = deployments
        .list(&ListParams::default())
        .await
        .map_err(|err| kube_error("list Deployments", err))?
        .items
        .into_iter()
        .map(to_json)
        .filter(|d| d.pointer("/metadata/name").and_then(Value::as_str) == Some("istio-operator"))
        .filter(|d| d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) > 0)
        .map(|d| {
            format!("{}/istio-operator", d.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default())
        })
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    let reconciled: Vec<String> = operators
        .items
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect();
    Err(precondition(format!(
        "an in-cluster Istio operator runs here (Deployment {}, reconciling IstioOperator {}): it would re-create what the upgrade removes. Remove the operator first (`istioctl operator remove`, which leaves the installed control plane running), then plan again",
        running.join(", "),
        reconciled.join(", ")
    )))
}

/// A permission the upgrade needs: (verb, group, resource plural, in istio-system or cluster-wide).
type Permission = (String, String, String, bool);

/// Every verb on every resource the upgrade will use: server-side apply
/// (create and patch) and delete for what the manifests hold (a rollback
/// deletes what the install made), list and delete for what `istioctl
/// uninstall --revision` removes, patch for namespaces and workloads,
/// watch for rollouts.
pub async fn permissions_needed(client: &ClusterClient, objects: &[&Value]) -> Result<Vec<Permission>, ActivityError> {
    let mut needed: BTreeSet<Permission> = BTreeSet::new();
    let mut add = |verbs: &[&str], group: &str, plural: &str, namespaced: bool| {
        for verb in verbs {
            needed.insert(((*verb).to_string(), group.to_string(), plural.to_string(), namespaced));
        }
    };
    for object in objects {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        if let Some((resource, scope)) = client.served(api_version, kind).await? {
            let namespaced = scope == kube::discovery::Scope::Namespaced;
            add(&["get", "create", "patch", "delete"], &resource.group, &resource.plural, namespaced);
        }
    }
    for (group, kind) in UNINSTALL_KINDS {
        if let Some((resource, scope)) = client.preferred(group, kind).await? {
            let namespaced = scope == kube::discovery::Scope::Namespaced;
            add(&["list", "delete"], &resource.group, &resource.plural, namespaced);
        }
    }
    add(&["list", "patch"], "", "namespaces", false);
    add(&["list"], "", "pods", false);
    for plural in ["deployments", "statefulsets", "daemonsets"] {
        add(&["list", "watch", "patch"], "apps", plural, false);
    }
    for plural in ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"] {
        add(&["get", "list", "create", "patch", "delete"], "admissionregistration.k8s.io", plural, false);
    }
    add(&["get", "create", "patch", "delete"], "", "services", true);
    add(&["list"], "apiextensions.k8s.io", "customresourcedefinitions", false);
    Ok(needed.into_iter().collect())
}

/// `verb resource.group`, if the cluster denies it.
async fn denied_permission(
    reviews: Api<SelfSubjectAccessReview>,
    (verb, group, resource, namespaced): Permission,
) -> Result<Option<String>, ActivityError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.clone()),
                group: Some(group.clone()),
                resource: Some(resource.clone()),
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
    let qualified = if group.is_empty() { resource } else { format!("{resource}.{group}") };
    Ok(Some(format!("{verb} {qualified}")))
}

/// Access reviews one check sends at once.
const REVIEWS_AT_ONCE: usize = 8;

/// Checks every permission the upgrade needs; names every one denied.
pub async fn check_permissions(client: &ClusterClient, objects: &[&Value]) -> Result<(), ActivityError> {
    let needed = permissions_needed(client, objects).await?;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.client.clone());
    // A few reviews at a time, answers in the order asked.
    let asked = needed.into_iter().map(|permission| denied_permission(reviews.clone(), permission));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_1_6_does_not_run_on_a_kubernetes_older_than_it_supports() {
        assert!(check_kubernetes("v1.18.20", "1.6.8", "prod").is_ok());
        let old = check_kubernetes("v1.14.10", "1.6.8", "prod").expect_err("too old");
        assert!(old.message.contains("Kubernetes 1.14") && old.message.contains("1.15 to 1.18"), "{}", old.message);
        assert!(check_kubernetes("v1.32.4", "1.28.0", "prod").is_ok());
    }

    #[test]
    fn skew_is_two_minors_at_most() {
        assert!(check_skew("1.26.0", "1.28.1").is_ok());
        assert!(check_skew("1.25.0", "1.28.1").is_err());
        assert!(check_skew("1.6.5", "2.0.0").is_err());
    }
}
