//! What belongs to a revision, and what every revision shares, decided by
//! kind and name as Istio's charts define them, and by labels where they
//! are present (ISTIO-REFERENCE.md §2 and §9).
//!
//! Generated output leaves a revision's ServiceAccount, Role, RoleBinding
//! and ClusterRole(Binding)s without `istio.io/rev` (istioctl labels them
//! when it applies; Helm never does), so "no revision label" does not mean
//! "shared": those objects carry the revision in their names
//! (`istiod-<rev>`, `istiod-clusterrole-<rev>-istio-system`). What is
//! shared has fixed names whatever the revision: the CRDs, the base
//! chart's objects, the node agents `istio-cni-node` and `ztunnel`, the
//! revision tags and `istiod-default-validator`, `istio-ca-root-cert` and
//! `istio-ca-secret`. Pure: no cluster is read here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::istio::ISTIO_NAMESPACE;

/// A piece every revision shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Shared {
    /// Istio's CustomResourceDefinitions (and the Gateway API's).
    Crds,
    /// The base chart: the reader account, the shared validator of 1.6-1.10.
    Base,
    /// The CNI node agent: DaemonSet `istio-cni-node` and what it runs with.
    Cni,
    /// ztunnel: DaemonSet `ztunnel` and what it runs with.
    Ztunnel,
    /// Revision tags (`istio-revision-tag-*`) and `istiod-default-validator`.
    Tags,
    /// What istiod writes for every revision: `istio-ca-root-cert`, `istio-ca-secret`.
    CaRoot,
}

impl Shared {
    /// For people: what the piece is.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::Crds => "CRDs",
            Self::Base => "base",
            Self::Cni => "CNI node agent",
            Self::Ztunnel => "ztunnel",
            Self::Tags => "revision tags",
            Self::CaRoot => "CA root",
        }
    }
}

/// Who an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The revision's own: installed with it, removed with it.
    Revision,
    /// An istioctl gateway (components `IngressGateways`, `EgressGateways`):
    /// one Deployment every revision upgrades in place.
    Gateway,
    /// Shared by every revision: never deleted by a revision's uninstall.
    Shared(Shared),
}

/// The `operator.istio.io/component` istioctl gives an object of `role`.
#[must_use]
pub fn component_of(role: Role, object: &Value) -> &'static str {
    match role {
        Role::Revision => "Pilot",
        Role::Gateway if text(object, "/metadata/labels/istio").is_some_and(|istio| istio.starts_with("egress")) => {
            "EgressGateways"
        }
        Role::Gateway => "IngressGateways",
        Role::Shared(Shared::Cni) => "Cni",
        Role::Shared(Shared::Ztunnel) => "Ztunnel",
        Role::Shared(_) => "Base",
    }
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/labels").and_then(|labels| labels.get(key)).and_then(Value::as_str)
}

/// `kind`, `metadata.name`.
fn kind_name(object: &Value) -> (&str, &str) {
    (text(object, "/kind").unwrap_or_default(), text(object, "/metadata/name").unwrap_or_default())
}

/// The shared piece `object` is, by kind and name (and component label).
#[must_use]
pub fn shared_piece(object: &Value) -> Option<Shared> {
    let (kind, name) = kind_name(object);
    match label(object, "operator.istio.io/component") {
        Some("Cni") => return Some(Shared::Cni),
        Some("Ztunnel") => return Some(Shared::Ztunnel),
        Some("Base") => return Some(Shared::Base),
        _ => {}
    }
    if kind == "CustomResourceDefinition" {
        return Some(Shared::Crds);
    }
    if name.starts_with("istio-cni") || label(object, "k8s-app") == Some("istio-cni-node") {
        return Some(Shared::Cni);
    }
    if name == "ztunnel" || label(object, "app") == Some("ztunnel") {
        return Some(Shared::Ztunnel);
    }
    if name.starts_with("istio-revision-tag-")
        || name == "istiod-default-validator"
        || label(object, "istio.io/tag").is_some()
    {
        return Some(Shared::Tags);
    }
    if matches!(name, "istio-ca-root-cert" | "istio-ca-secret") {
        return Some(Shared::CaRoot);
    }
    // The reader account, and the unrevisioned reader role that binds it
    // (remote clusters' secrets read through it, whichever revision runs).
    let base_names =
        ["istio-reader-service-account", "istio-reader-clusterrole-istio-system", "istio-reader-istio-system"];
    if base_names.contains(&name)
        || (kind == "ValidatingWebhookConfiguration" && name == format!("istiod-{ISTIO_NAMESPACE}"))
    {
        return Some(Shared::Base);
    }
    None
}

/// Whether `object` is an istioctl gateway's (a Deployment with its own
/// proxy, its Service, account, RBAC, autoscaling).
#[must_use]
pub fn is_gateway(object: &Value) -> bool {
    if matches!(label(object, "operator.istio.io/component"), Some("IngressGateways" | "EgressGateways")) {
        return true;
    }
    let (_, name) = kind_name(object);
    matches!(label(object, "istio"), Some("ingressgateway" | "egressgateway"))
        || name.starts_with("istio-ingressgateway")
        || name.starts_with("istio-egressgateway")
}

/// Whether `name` carries revision `revision` as the charts put it: as its
/// suffix (`istiod-1-28-0`) or before the namespace
/// (`istiod-clusterrole-1-28-0-istio-system`).
#[must_use]
pub fn named_for(name: &str, revision: &str) -> bool {
    name.ends_with(&format!("-{revision}")) || name.contains(&format!("-{revision}-"))
}

/// The names the charts give the default (non-revisioned) revision's own
/// objects, by kind. `istio-reader-*` objects without a revision in their
/// names are left out: the reader account they bind is the base chart's,
/// shared (remote clusters' secrets read through it).
fn default_revision_names(kind: &str) -> &'static [&'static str] {
    match kind {
        "Deployment"
        | "Service"
        | "ServiceAccount"
        | "Role"
        | "RoleBinding"
        | "HorizontalPodAutoscaler"
        | "PodDisruptionBudget"
        | "NetworkPolicy" => &["istiod"],
        "ConfigMap" => &["istio", "istio-sidecar-injector", "values", "pilot-jwks-extra-cacerts"],
        "MutatingWebhookConfiguration" => &["istio-sidecar-injector"],
        "ValidatingWebhookConfiguration" => &["istio-validator-istio-system"],
        "ClusterRole" | "ClusterRoleBinding" => &[
            "istiod-clusterrole-istio-system",
            "istiod-gateway-controller-istio-system",
            "istiod-istio-system",
            "istiod-waypoint-controller-istio-system",
        ],
        _ => &[],
    }
}

/// Whether `object` (a live object, labelled or not) is revision
/// `revision`'s own by the charts' names, or by istioctl's labels. Shared
/// pieces and gateways never are.
#[must_use]
pub fn belongs_to(object: &Value, revision: &str) -> bool {
    if shared_piece(object).is_some() || is_gateway(object) {
        return false;
    }
    let (kind, name) = kind_name(object);
    if let Some(labelled) = label(object, "istio.io/rev") {
        return labelled == revision && !(revision != "default" && name == "istiod" && kind == "Service");
    }
    if revision == "default" {
        return default_revision_names(kind).contains(&name);
    }
    named_for(name, revision)
}

/// Why a rendered object cannot be installed as revision `to`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It has nothing of Istio about it.
    NotIstio,
    /// It is labelled for another revision.
    OtherRevision(String),
    /// It is Istio's, but rendered without the revision (a default install's name).
    Unrevisioned,
}

/// Who a rendered object of revision `to`'s manifests belongs to.
pub fn classify(object: &Value, to: &str) -> Result<Role, Refusal> {
    if let Some(piece) = shared_piece(object) {
        return Ok(Role::Shared(piece));
    }
    if let Some(labelled) = label(object, "istio.io/rev")
        && labelled != to
    {
        return Err(Refusal::OtherRevision(labelled.to_string()));
    }
    if is_gateway(object) {
        return Ok(Role::Gateway);
    }
    let (kind, name) = kind_name(object);
    if label(object, "istio.io/rev") == Some(to) || named_for(name, to) {
        return Ok(Role::Revision);
    }
    if kind == "Namespace" {
        return Ok(Role::Revision);
    }
    if looks_like_istio(object) {
        return Err(Refusal::Unrevisioned);
    }
    Err(Refusal::NotIstio)
}

/// Whether anything about an object says Istio: its chart's labels, or an `istio` name.
fn looks_like_istio(object: &Value) -> bool {
    let (_, name) = kind_name(object);
    label(object, "app.kubernetes.io/part-of") == Some("istio")
        || label(object, "release") == Some("istio")
        || label(object, "operator.istio.io/component").is_some()
        || name.starts_with("istio")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(kind: &str, name: &str, labels: Value) -> Value {
        json!({"kind": kind, "metadata": {"name": name, "labels": labels}})
    }

    #[test]
    fn unlabelled_rbac_of_a_revision_is_its_own_by_name() {
        let plain = json!({"app": "istiod", "release": "istio"});
        for (kind, name) in [
            ("ServiceAccount", "istiod-1-28-0"),
            ("Role", "istiod-1-28-0"),
            ("ClusterRole", "istiod-clusterrole-1-28-0-istio-system"),
            ("ClusterRoleBinding", "istio-reader-clusterrole-1-28-0-istio-system"),
        ] {
            assert_eq!(classify(&object(kind, name, plain.clone()), "1-28-0"), Ok(Role::Revision), "{kind} {name}");
            assert!(belongs_to(&object(kind, name, plain.clone()), "1-28-0"), "{kind} {name}");
            assert!(!belongs_to(&object(kind, name, plain.clone()), "1-27-0"), "{kind} {name}");
        }
        let default_sa = object("ServiceAccount", "istiod", plain.clone());
        assert_eq!(classify(&default_sa, "1-28-0"), Err(Refusal::Unrevisioned));
        assert!(belongs_to(&default_sa, "default"));
        assert!(!belongs_to(&object("ClusterRole", "istio-reader-clusterrole-istio-system", plain), "default"));
    }

    #[test]
    fn node_agents_tags_crds_and_the_base_are_shared_whatever_their_labels() {
        let installed = |component: &str| json!({"istio.io/rev": "default", "operator.istio.io/component": component});
        let cases = [
            (object("DaemonSet", "istio-cni-node", installed("Cni")), Shared::Cni),
            (object("DaemonSet", "ztunnel", json!({})), Shared::Ztunnel),
            (object("CustomResourceDefinition", "virtualservices.networking.istio.io", json!({})), Shared::Crds),
            (
                object(
                    "MutatingWebhookConfiguration",
                    "istio-revision-tag-default",
                    json!({"istio.io/rev": "default"}),
                ),
                Shared::Tags,
            ),
            (object("ValidatingWebhookConfiguration", "istiod-default-validator", json!({})), Shared::Tags),
            (object("ServiceAccount", "istio-reader-service-account", json!({})), Shared::Base),
            (object("ConfigMap", "istio-ca-root-cert", json!({})), Shared::CaRoot),
        ];
        for (object, piece) in cases {
            assert_eq!(shared_piece(&object), Some(piece), "{object}");
            assert!(!belongs_to(&object, "default"), "{object}: never a revision's to delete");
        }
    }

    #[test]
    fn manifests_for_another_revision_or_not_istio_are_refused() {
        let other = object("Deployment", "istiod-1-27-0", json!({"istio.io/rev": "1-27-0"}));
        assert_eq!(classify(&other, "1-28-0"), Err(Refusal::OtherRevision("1-27-0".into())));
        let nginx = object("Deployment", "nginx", json!({"app": "nginx"}));
        assert_eq!(classify(&nginx, "1-28-0"), Err(Refusal::NotIstio));
        let gateway = object("Deployment", "istio-ingressgateway", json!({"istio": "ingressgateway"}));
        assert_eq!(classify(&gateway, "1-28-0"), Ok(Role::Gateway));
    }

    #[test]
    fn service_istiod_pointed_at_a_revision_is_not_that_revisions_to_delete() {
        let workaround = object("Service", "istiod", json!({"istio.io/rev": "1-6-8", "app": "istiod"}));
        assert!(!belongs_to(&workaround, "1-6-8"), "the seed's validation workaround outlives the revision");
        assert!(belongs_to(&object("Service", "istiod", json!({"istio.io/rev": "default"})), "default"));
    }
}
