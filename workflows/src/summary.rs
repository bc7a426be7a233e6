//! What an upgrade will do to each cluster, sorted by who owns each piece:
//! the revision's own objects (installed, and removed on rollback), what
//! is upgraded in place (gateways, the shared pieces the spec asks for,
//! the `default` tag), what is shared and left alone, and what needs an
//! operator (pods no restart moves). Pure: it reads what planning found.

use serde::Serialize;

use crate::inputs::{ClusterDiscovery, ServedKind};
use crate::manifests::Manifests;
use crate::spec::{SharedChoice, UpgradeSpec};

/// One cluster's part of an upgrade, for people and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    /// The cluster.
    pub cluster: String,
    /// The new revision's own objects (`Kind name`): installed, removed on rollback.
    pub revision: Vec<String>,
    /// Changed in place, put back on rollback (CRDs excepted: never deleted, never downgraded).
    pub in_place: Vec<String>,
    /// Shared by every revision and left alone.
    pub shared: Vec<String>,
    /// Pods no restart moves (`namespace/pod (owner)`): an operator replaces them.
    pub needs_operator: Vec<String>,
    /// The API version the upgrade uses for each kind on this cluster.
    pub kinds: Vec<ServedKind>,
}

fn names(objects: &[serde_json::Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!("{} {}", o["kind"].as_str().unwrap_or_default(), o["metadata"]["name"].as_str().unwrap_or_default())
        })
        .collect()
}

/// The summary of `cluster`'s part of the upgrade `spec` with `manifests`.
#[must_use]
pub fn summarize(spec: &UpgradeSpec, manifests: &Manifests, cluster: &ClusterDiscovery) -> ClusterSummary {
    let mut in_place: Vec<String> = cluster
        .gateways
        .iter()
        .map(|g| {
            let how = if g.injected { "relabelled, restarted" } else { "its own proxy, from the manifests" };
            format!("gateway {}/{}: {} -> {} ({how})", g.namespace, g.name, g.revision, spec.to)
        })
        .collect();
    let mut shared = manifests.shared.clone();
    let crds = manifests.crds.len();
    match (crds, spec.shared.crds) {
        (0, _) => {}
        (_, SharedChoice::Upgrade) => {
            in_place.push(format!("{crds} CRDs: applied before istiod, never deleted or downgraded"))
        }
        (_, SharedChoice::Keep) => shared.push(format!("{crds} CRDs (spec.shared.crds: keep)")),
    }
    for agent in &cluster.node_agents {
        let (carried, choice, field) = match agent.name.as_str() {
            "istio-cni-node" => (!manifests.cni.is_empty(), spec.shared.cni, "cni"),
            _ => (!manifests.ztunnel.is_empty(), spec.shared.ztunnel, "ztunnel"),
        };
        if carried && choice == SharedChoice::Upgrade {
            in_place
                .push(format!("DaemonSet {} ({}): upgraded in place, put back on rollback", agent.name, agent.image));
        } else {
            shared
                .push(format!("DaemonSet {} ({}): left as it is (spec.shared.{field}: keep)", agent.name, agent.image));
        }
    }
    for tag in &cluster.tags {
        let moved =
            (tag.name == "default" || spec.tag.as_deref() == Some(tag.name.as_str())) && tag.revision == spec.from.0;
        if moved {
            in_place.push(format!("tag {}: {} -> {}", tag.name, tag.revision, spec.to));
        } else {
            shared.push(format!("tag {} (points at {})", tag.name, tag.revision));
        }
    }
    if let Some(validator) = &cluster.default_validator {
        let calls = validator.pointer("/webhooks/0/clientConfig/service/name").and_then(|v| v.as_str()).unwrap_or("?");
        if calls == spec.from.istiod() {
            in_place.push(format!(
                "ValidatingWebhookConfiguration istiod-default-validator: {calls} -> {}",
                spec.to.istiod()
            ));
        } else {
            shared.push(format!("ValidatingWebhookConfiguration istiod-default-validator (calls {calls})"));
        }
    }
    shared.push("ConfigMap istio-ca-root-cert, Secret istio-ca-secret (istiod's CA root)".into());
    let needs_operator = cluster
        .namespaces
        .iter()
        .flat_map(|ns| ns.needs_operator.iter().map(move |pod| format!("{}/{} ({})", ns.name, pod.name, pod.owner)))
        .collect();
    ClusterSummary {
        cluster: cluster.cluster.name.clone(),
        revision: names(&manifests.control_plane),
        in_place,
        shared,
        needs_operator,
        kinds: cluster.kinds.clone(),
    }
}
