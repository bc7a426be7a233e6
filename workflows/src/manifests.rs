//! The rendered objects of the new revision (what `istioctl manifest
//! generate --set revision=R` or `helm template` prints), checked and sorted.

use std::path::Path;

use serde_json::Value;

use crate::istio::{ISTIO_NAMESPACE, image_version};
use crate::ownership::{self, Refusal, Role, Shared};
use crate::spec::{RevisionName, SpecError};

/// Kinds in the stages they are applied in, each stage in order: namespaces
/// first; identities, configuration and Services next; then what runs, so
/// that its rollout starts as early as it can with all it needs already
/// there; then what guards it; the webhooks that send traffic to it last.
/// An install applies a stage's objects together, stages one after another.
const APPLY_STAGES: [&[&str]; 5] = [
    &["Namespace", "CustomResourceDefinition"],
    &["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "Service"],
    &["Deployment", "DaemonSet"],
    &["PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"],
    &["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"],
];

/// Every kind of [`APPLY_STAGES`], in apply order.
fn apply_order() -> impl Iterator<Item = &'static str> {
    APPLY_STAGES.iter().flat_map(|stage| stage.iter().copied())
}

/// The manifests of the revision being installed, sorted by who they belong to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manifests {
    /// The revision's own objects, in apply order: `install` applies them.
    pub control_plane: Vec<Value>,
    /// istioctl gateways: upgraded in place by `gateways`.
    pub gateways: Vec<Value>,
    /// Istio's CRDs: applied before istiod when `spec.shared.crds` is `upgrade`.
    pub crds: Vec<Value>,
    /// The CNI node agent's objects: applied only when `spec.shared.cni` is `upgrade`.
    pub cni: Vec<Value>,
    /// ztunnel's objects: applied only when `spec.shared.ztunnel` is `upgrade`.
    pub ztunnel: Vec<Value>,
    /// Other shared objects, left alone (`Kind name`): the base, tags, the CA root.
    pub shared: Vec<String>,
}

fn field_error(path: &Path, message: String) -> SpecError {
    SpecError { line: None, field: format!("spec.to.manifests ({})", path.display()), message }
}

impl Manifests {
    /// Reads `path` and checks it holds revision `to`, version `version`,
    /// writing only to istio-system and `namespaces`.
    pub fn load(path: &Path, to: &RevisionName, version: &str, namespaces: &[String]) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|err| field_error(path, format!("cannot read: {err}")))?;
        Self::parse(&text, to, version, namespaces).map_err(|message| field_error(path, message))
    }

    /// Parses and checks manifest text.
    pub fn parse(text: &str, to: &RevisionName, version: &str, namespaces: &[String]) -> Result<Self, String> {
        let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|err| format!("not YAML: {err}"))?;
        check_revision_labels(&documents, to)?;
        let mut manifests = Self::default();
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
            if let Some(namespace) = object.pointer("/metadata/namespace").and_then(Value::as_str)
                && namespace != ISTIO_NAMESPACE
                && !namespaces.iter().any(|allowed| allowed == namespace)
            {
                return Err(format!(
                    "{kind} {name} is in namespace {namespace}: Istio's objects go to {ISTIO_NAMESPACE}; list {namespace} in spec.to.namespaces if it is meant"
                ));
            }
            manifests.sort_in(object, &kind, &name, to)?;
        }
        manifests.check_istiod(to, version)?;
        for objects in
            [&mut manifests.control_plane, &mut manifests.gateways, &mut manifests.cni, &mut manifests.ztunnel]
        {
            objects.sort_by_key(order_of);
        }
        Ok(manifests)
    }

    /// Puts `object` where it belongs, or says why it belongs nowhere.
    fn sort_in(&mut self, object: Value, kind: &str, name: &str, to: &RevisionName) -> Result<(), String> {
        let role = ownership::classify(&object, &to.0).map_err(|refusal| match refusal {
            Refusal::NotIstio => format!(
                "{kind} {name} is not part of Istio: these manifests hold something Istio's installer does not render"
            ),
            Refusal::OtherRevision(found) => format!(
                "{kind} {name} is labelled istio.io/rev={found}: these manifests mix revisions (expected {to} throughout)"
            ),
            Refusal::Unrevisioned => format!(
                "{kind} {name} carries no revision in its name or labels: are the manifests rendered with --set revision={to}?"
            ),
        })?;
        match role {
            Role::Revision => self.control_plane.push(object),
            Role::Gateway => self.gateways.push(object),
            Role::Shared(Shared::Crds) => self.crds.push(object),
            Role::Shared(Shared::Cni) => self.cni.push(object),
            Role::Shared(Shared::Ztunnel) => self.ztunnel.push(object),
            Role::Shared(_) => self.shared.push(format!("{kind} {name}")),
        }
        Ok(())
    }

    /// The manifests must install the revision's istiod, of `version`.
    fn check_istiod(&self, to: &RevisionName, version: &str) -> Result<(), String> {
        let istiod = to.istiod();
        let Some(deployment) = self.control_plane.iter().find(|o| {
            o["kind"] == "Deployment" && o.pointer("/metadata/name").and_then(Value::as_str) == Some(istiod.as_str())
        }) else {
            return Err(format!("they install no Deployment {istiod}: are they rendered with --set revision={to}?"));
        };
        let containers = deployment.pointer("/spec/template/spec/containers").and_then(Value::as_array);
        let discovery = containers
            .and_then(|containers| containers.iter().find(|c| c["name"] == "discovery").or(containers.first()));
        let image = discovery.and_then(|c| c.get("image")).and_then(Value::as_str).unwrap_or_default();
        if let Some(found) = image_version(image)
            && found != version
        {
            return Err(format!("{istiod} runs {image}, but spec.to.version is {version}"));
        }
        Ok(())
    }

    /// Every object the revision's install and gateways apply.
    #[must_use]
    pub fn all(&self) -> Vec<Value> {
        self.control_plane.iter().chain(&self.gateways).cloned().collect()
    }
}

/// The revision labels of all documents must name `to`: manifests of
/// another revision are refused as such, a mix as a mix.
fn check_revision_labels(documents: &[Value], to: &RevisionName) -> Result<(), String> {
    // Shared pieces carry whichever revision installed them: not the revision's.
    let labelled: Vec<(&Value, &str)> = documents
        .iter()
        .filter(|doc| ownership::shared_piece(doc).is_none())
        .filter_map(|doc| Some((doc, doc.pointer("/metadata/labels/istio.io~1rev")?.as_str()?)))
        .collect();
    let Some((other, found)) = labelled.iter().find(|(_, revision)| *revision != to.0) else { return Ok(()) };
    let what = |doc: &Value| {
        let text = |pointer: &str| doc.pointer(pointer).and_then(Value::as_str).unwrap_or("?");
        format!("{} {}", text("/kind"), text("/metadata/name"))
    };
    if labelled.iter().any(|(_, revision)| *revision == to.0) {
        return Err(format!(
            "{} is labelled istio.io/rev={found}: these manifests mix revisions (expected {to} throughout)",
            what(other)
        ));
    }
    Err(format!("{} is labelled istio.io/rev={found}: these manifests are for revision {found}, not {to}", what(other)))
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
spec: {{template: {{spec: {{containers: [{{name: discovery, image: 'registry.corp:5000/istio/pilot:{image_tag}-distroless'}}]}}}}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: istiod-{rev}, namespace: istio-system, labels: {{app: istiod, release: istio}}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: istiod-clusterrole-{rev}-istio-system, labels: {{app: istiod, release: istio}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: istio-ingressgateway, namespace: istio-system, labels: {{istio.io/rev: {rev}, operator.istio.io/component: IngressGateways}}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: ztunnel, namespace: istio-system}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: istio-reader-service-account, namespace: istio-system}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: virtualservices.networking.istio.io}}
"
        )
    }

    fn parse(text: &str) -> Result<Manifests, String> {
        Manifests::parse(text, &RevisionName("1-28-0".into()), "1.28.0", &[])
    }

    #[test]
    fn objects_are_sorted_by_owner_and_the_unlabelled_rbac_is_the_revisions() {
        let parsed = parse(&manifests("1-28-0", "1.28.0")).expect("valid");
        let kinds: Vec<&str> = parsed.control_plane.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "ClusterRole", "Deployment", "MutatingWebhookConfiguration"],
            "webhooks last"
        );
        assert_eq!(parsed.gateways.len(), 1);
        assert_eq!((parsed.crds.len(), parsed.ztunnel.len(), parsed.cni.len()), (1, 1, 0));
        assert_eq!(parsed.shared, ["ServiceAccount istio-reader-service-account"]);
    }

    #[test]
    fn manifests_for_another_revision_or_version_are_refused() {
        let other = parse(&manifests("1-27-0", "1.27.0")).expect_err("other revision");
        assert!(other.contains("istio.io/rev=1-27-0") && other.contains("for revision 1-27-0, not 1-28-0"), "{other}");
        let mixed = manifests("1-28-0", "1.28.0").replace(
            "name: istio-ingressgateway, namespace: istio-system, labels: {istio.io/rev: 1-28-0",
            "name: istio-ingressgateway, namespace: istio-system, labels: {istio.io/rev: 1-27-0",
        );
        let mixed = parse(&mixed).expect_err("mixed");
        assert!(mixed.contains("Deployment istio-ingressgateway") && mixed.contains("mix revisions"), "{mixed}");
        let version = parse(&manifests("1-28-0", "1.28.1")).expect_err("other version");
        assert!(version.contains("spec.to.version is 1.28.0"), "{version}");
        let secret = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: ca}\n").expect_err("secret");
        assert!(secret.contains("never records Secrets"), "{secret}");
        assert!(parse("a: [b").expect_err("yaml").contains("not YAML"));
        let nginx = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nginx, namespace: istio-system}\n";
        assert!(parse(nginx).expect_err("not istio").contains("Deployment nginx is not part of Istio"));
        let unrevisioned = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: istiod, namespace: istio-system, labels: {app: istiod, release: istio}}\n";
        assert!(parse(unrevisioned).expect_err("default render").contains("--set revision=1-28-0"));
        let elsewhere = manifests("1-28-0", "1.28.0")
            .replace("name: istiod-1-28-0, namespace: istio-system", "name: istiod-1-28-0, namespace: mesh");
        let refused = parse(&elsewhere).expect_err("another namespace");
        assert!(refused.contains("in namespace mesh") && refused.contains("spec.to.namespaces"), "{refused}");
        let allowed = Manifests::parse(&elsewhere, &RevisionName("1-28-0".into()), "1.28.0", &["mesh".into()]);
        assert!(allowed.is_ok(), "a namespace the spec lists is allowed: {allowed:?}");
        let without_istiod = manifests("1-28-0", "1.28.0").replace(
            "kind: Deployment\nmetadata: {name: istiod-1-28-0",
            "kind: Service\nmetadata: {name: istiod-1-28-0",
        );
        assert!(parse(&without_istiod).expect_err("no istiod").contains("no Deployment istiod-1-28-0"));
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
