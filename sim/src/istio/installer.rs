//! How an installer leaves rendered objects on a cluster: `istioctl
//! install` adds owner labels to everything it applies (its charts' own
//! labels say nothing of the revision on RBAC and accounts); Helm adds
//! none (ISTIO-REFERENCE.md §9, istioctl's `getOwnerLabels`).

use serde_json::{Value, json};

use crate::kube::object;

/// Who installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Installer {
    /// `istioctl install`: owner labels on everything.
    #[default]
    Istioctl,
    /// `helm install`: the charts' labels only.
    Helm,
}

/// The IstioOperator name istioctl records as the owner when given none.
pub const OWNER: &str = "installed-state";

/// Istio's install components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// CRDs and the base chart's shared objects.
    Base,
    /// istiod.
    Pilot,
    /// Ingress gateways.
    IngressGateways,
    /// Egress gateways.
    EgressGateways,
    /// The CNI node agent.
    Cni,
    /// ztunnel.
    Ztunnel,
}

impl Component {
    /// As `operator.istio.io/component` names it.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Base => "Base",
            Self::Pilot => "Pilot",
            Self::IngressGateways => "IngressGateways",
            Self::EgressGateways => "EgressGateways",
            Self::Cni => "Cni",
            Self::Ztunnel => "Ztunnel",
        }
    }

    /// The component of a rendered object: its own label when it has one,
    /// else the chart its kind and name come from.
    #[must_use]
    pub fn of(object: &Value) -> Self {
        match object::label(object, "operator.istio.io/component") {
            Some("Base") => return Self::Base,
            Some("Pilot") => return Self::Pilot,
            Some("IngressGateways") => return Self::IngressGateways,
            Some("EgressGateways") => return Self::EgressGateways,
            Some("Cni") => return Self::Cni,
            Some("Ztunnel") => return Self::Ztunnel,
            _ => {}
        }
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = object::name(object);
        match (kind, name) {
            ("CustomResourceDefinition", _) | (_, "istio-reader-service-account" | "istiod-istio-system") => Self::Base,
            (_, name) if name.starts_with("istio-cni") => Self::Cni,
            (_, "ztunnel") => Self::Ztunnel,
            (_, name) if name.starts_with("istio-ingressgateway") => Self::IngressGateways,
            (_, name) if name.starts_with("istio-egressgateway") => Self::EgressGateways,
            _ => Self::Pilot,
        }
    }
}

/// `objects` as `installer` leaves them for revision `revision` of
/// `version`: with istioctl's owner labels, or as rendered.
#[must_use]
pub fn installed(installer: Installer, objects: Vec<Value>, revision: &str, version: &str) -> Vec<Value> {
    if installer == Installer::Helm {
        return objects;
    }
    objects
        .into_iter()
        .map(|mut object| {
            let component = Component::of(&object);
            let labels = object::metadata_map_mut(&mut object, "labels");
            labels.insert("operator.istio.io/managed".into(), json!("Reconcile"));
            labels.insert("operator.istio.io/version".into(), json!(version));
            labels.insert("install.operator.istio.io/owning-resource".into(), json!(OWNER));
            labels.insert("install.operator.istio.io/owning-resource-namespace".into(), json!("istio-system"));
            labels.insert("istio.io/rev".into(), json!(revision));
            labels.insert("operator.istio.io/component".into(), json!(component.label()));
            object
        })
        .collect()
}

/// The default tag as `istioctl install` deploys it: owner labels without
/// a component, and marked so that uninstall does not prune it.
#[must_use]
pub fn installed_default_tag(objects: Vec<Value>, version: &str) -> Vec<Value> {
    objects
        .into_iter()
        .map(|mut object| {
            let labels = object::metadata_map_mut(&mut object, "labels");
            labels.insert("operator.istio.io/managed".into(), json!("Reconcile"));
            labels.insert("operator.istio.io/version".into(), json!(version));
            labels.insert("install.operator.istio.io/owning-resource".into(), json!(OWNER));
            labels.insert("install.operator.istio.io/owning-resource-namespace".into(), json!("istio-system"));
            labels.insert("install.operator.istio.io/owning-resource-not-pruned".into(), json!("true"));
            object
        })
        .collect()
}

/// What `istioctl tag set default` does to the non-tag injector of the
/// `default` revision: its webhooks never match again, so that the tag
/// alone injects (`DeactivateIstioInjectionWebhook`).
pub fn deactivate_default_injector(injector: &mut Value) {
    let never = json!({"matchLabels": {"istio.io/deactivated": "never-match"}});
    for hook in injector.get_mut("webhooks").and_then(Value::as_array_mut).into_iter().flatten() {
        hook["namespaceSelector"] = never.clone();
        hook["objectSelector"] = never.clone();
    }
}

/// The revision a file of rendered objects installs: the `istio.io/rev`
/// of its injector webhook configuration or istiod, `default` when none.
#[must_use]
pub fn revision_of(objects: &[Value]) -> String {
    objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("MutatingWebhookConfiguration" | "Deployment")))
        .find_map(|o| object::label(o, "istio.io/rev").map(str::to_string))
        .unwrap_or_else(|| "default".into())
}

/// The Istio version a file of rendered objects installs: its istiod's image tag.
#[must_use]
pub fn version_of(objects: &[Value]) -> Option<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" && object::label(o, "app") == Some("istiod"))
        .find_map(|o| o.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str))
        .and_then(|image| super::istiod::split_image(image).1)
        .map(|tag| tag.split('-').next().unwrap_or(tag).to_string())
}

/// The objects of a file of rendered manifests (multi-document YAML), each
/// checked to be a Kubernetes object.
pub fn objects_from_yaml(text: &str) -> Result<Vec<Value>, String> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|err| format!("not YAML: {err}"))?;
    let objects: Vec<Value> = documents.into_iter().filter(|d| !d.is_null()).collect();
    for (index, object) in objects.iter().enumerate() {
        let has = |field: &str| object.get(field).and_then(Value::as_str).is_some_and(|t| !t.is_empty());
        if !has("apiVersion") || !has("kind") || object::name(object).is_empty() {
            return Err(format!("document {index} is not a Kubernetes object (no apiVersion, kind or metadata.name)"));
        }
    }
    Ok(objects)
}
