//! The rendered objects of the new revision (what `istioctl manifest
//! generate --set revision=R` or `helm template` prints), checked and sorted.

use std::path::Path;

use serde_json::Value;

use crate::spec::{RevisionName, SpecError};

/// Components whose objects are gateways: the gateways step handles them.
const GATEWAY_COMPONENTS: [&str; 2] = ["IngressGateways", "EgressGateways"];

/// Kinds in the stages they are applied in, each stage in order: namespaces
/// first; identities, configuration and Services next; then what runs, so
/// that its rollout starts as early as it can with all it needs already
/// there; then what guards it; the webhooks that send traffic to it last.
/// An install applies a stage's objects together, stages one after another.
const APPLY_STAGES: [&[&str]; 5] = [
    &["Namespace"],
    &["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "Service"],
    &["Deployment", "DaemonSet"],
    &["PodDisruptionBudget", "HorizontalPodAutoscaler"],
    &["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"],
];

/// Every kind of [`APPLY_STAGES`], in apply order.
fn apply_order() -> impl Iterator<Item = &'static str> {
    APPLY_STAGES.iter().flat_map(|stage| stage.iter().copied())
}

/// The manifests of the revision being installed.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// Objects of the revision's control plane (labelled `istio.io/rev=<to>`), in apply order.
    pub control_plane: Vec<Value>,
    /// Gateway objects (upgraded in place by the gateways step).
    pub gateways: Vec<Value>,
    /// Objects left alone: shared ones without a revision label (CRDs, the base chart).
    pub shared: Vec<String>,
}

fn field_error(path: &Path, message: String) -> SpecError {
    SpecError { line: None, field: format!("spec.to.manifests ({})", path.display()), message }
}

impl Manifests {
    /// Reads `path` and checks it holds revision `to`, version `version`.
    pub fn load(path: &Path, to: &RevisionName, version: &str) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|err| field_error(path, format!("cannot read: {err}")))?;
        Self::parse(&text, to, version).map_err(|message| field_error(path, message))
    }

    /// Parses and checks manifest text.
    pub fn parse(text: &str, to: &RevisionName, version: &str) -> Result<Self, String> {
        let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|err| format!("not YAML: {err}"))?;
        let mut control_plane = Vec::new();
        let mut gateways = Vec::new();
        let mut shared = Vec::new();
        for (index, object) in documents.into_iter().filter(|doc| !doc.is_null()).enumerate() {
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            if kind.is_empty() || name.is_empty() || object.get("apiVersion").and_then(Value::as_str).is_none() {
                return Err(format!(
                    "document {index} is not a Kubernetes object (no apiVersion, kind or metadata.name)"
                ));
            }
            if kind == "Secret" {
                return Err(format!(
                    "document {index} is Secret {name}: canaryflow never records Secrets, so it does not install them"
                ));
            }
            let labels = object.pointer("/metadata/labels");
            let revision = labels.and_then(|l| l.get("istio.io/rev")).and_then(Value::as_str);
            let component =
                labels.and_then(|l| l.get("operator.istio.io/component")).and_then(Value::as_str).unwrap_or_default();
            match revision {
                Some(found) if found != to.0 => {
                    return Err(format!(
                        "{kind} {name} is labelled istio.io/rev={found}: these manifests are for revision {found}, not {to}"
                    ));
                }
                Some(_) if GATEWAY_COMPONENTS.contains(&component) => gateways.push(object),
                Some(_) => control_plane.push(object),
                None => shared.push(format!("{kind}/{name}")),
            }
        }
        let istiod = to.istiod();
        let Some(deployment) = control_plane.iter().find(|o| {
            o["kind"] == "Deployment" && o.pointer("/metadata/name").and_then(Value::as_str) == Some(istiod.as_str())
        }) else {
            return Err(format!("they install no Deployment {istiod}: are they rendered with --set revision={to}?"));
        };
        let image =
            deployment.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or_default();
        if let Some((_, tag)) = image.rsplit_once(':')
            && tag != version
        {
            return Err(format!("{istiod} runs {image}, but spec.to.version is {version}"));
        }
        control_plane.sort_by_key(order_of);
        gateways.sort_by_key(order_of);
        Ok(Self { control_plane, gateways, shared })
    }

    /// Every object, control plane then gateways.
    #[must_use]
    pub fn all(&self) -> Vec<Value> {
        self.control_plane.iter().chain(&self.gateways).cloned().collect()
    }
}

/// The stage of [`APPLY_STAGES`] in which `object` is applied; an unknown
/// kind goes last.
#[must_use]
pub fn apply_stage(object: &Value) -> usize {
    let kind = kind_of(object);
    APPLY_STAGES.iter().position(|stage| stage.contains(&kind)).unwrap_or(APPLY_STAGES.len())
}

fn order_of(object: &Value) -> usize {
    let kind = kind_of(object);
    apply_order().position(|k| k == kind).unwrap_or_else(|| apply_order().count())
}

fn kind_of(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(rev: &str, image_tag: &str) -> String {
        format!(
            "---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: istio-sidecar-injector-{rev}, labels: {{istio.io/rev: {rev}, operator.istio.io/component: Pilot}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: istiod-{rev}, namespace: istio-system, labels: {{istio.io/rev: {rev}, operator.istio.io/component: Pilot}}}}
spec: {{template: {{spec: {{containers: [{{name: discovery, image: 'docker.io/istio/pilot:{image_tag}'}}]}}}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: istio-ingressgateway, namespace: istio-system, labels: {{istio.io/rev: {rev}, operator.istio.io/component: IngressGateways}}}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: virtualservices.networking.istio.io}}
"
        )
    }

    #[test]
    fn objects_are_split_and_ordered() {
        let to = RevisionName("1-6-8".into());
        let parsed = Manifests::parse(&manifests("1-6-8", "1.6.8"), &to, "1.6.8").expect("valid");
        let kinds: Vec<&str> = parsed.control_plane.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(kinds, ["Deployment", "MutatingWebhookConfiguration"], "webhooks last");
        assert_eq!(parsed.gateways.len(), 1);
        assert_eq!(parsed.shared, ["CustomResourceDefinition/virtualservices.networking.istio.io"]);
    }

    #[test]
    fn manifests_for_another_revision_or_version_are_refused() {
        let to = RevisionName("1-6-8".into());
        let other = Manifests::parse(&manifests("1-7-0", "1.7.0"), &to, "1.6.8").expect_err("other revision");
        assert!(other.contains("for revision 1-7-0, not 1-6-8"), "{other}");
        let version = Manifests::parse(&manifests("1-6-8", "1.6.9"), &to, "1.6.8").expect_err("other version");
        assert!(version.contains("spec.to.version is 1.6.8"), "{version}");
        let secret =
            Manifests::parse("apiVersion: v1\nkind: Secret\nmetadata: {name: ca}\n", &to, "1.6.8").expect_err("secret");
        assert!(secret.contains("never records Secrets"), "{secret}");
        assert!(Manifests::parse("a: [b", &to, "1.6.8").expect_err("yaml").contains("not YAML"));
    }

    #[test]
    fn stages_follow_the_apply_order_and_put_what_runs_after_what_it_needs() {
        let stage = |kind: &str| apply_stage(&serde_json::json!({"kind": kind}));
        let stages: Vec<usize> = apply_order().map(stage).collect();
        assert!(stages.windows(2).all(|pair| pair[0] <= pair[1]), "stages never go back: {stages:?}");
        assert!(stage("Namespace") < stage("ServiceAccount"));
        assert!(stage("ConfigMap") < stage("Deployment") && stage("Service") < stage("Deployment"));
        assert!(stage("Deployment") < stage("MutatingWebhookConfiguration"));
        assert_eq!(stage("SomethingNew"), 5, "an unknown kind goes last");
    }
}
