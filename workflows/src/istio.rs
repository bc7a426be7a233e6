//! What canaryflow knows of Istio, from ISTIO-REFERENCE.md: which revision
//! injected a pod, and what `istioctl uninstall --revision` removes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where Istio's control plane lives.
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// `operator.istio.io/component` values `istioctl uninstall --revision`
/// removes (ISTIO-REFERENCE.md §2.2). Base and unknown components stay.
pub const UNINSTALL_COMPONENTS: [&str; 5] = ["Pilot", "IngressGateways", "EgressGateways", "Cni", "Ztunnel"];

/// Kinds `istioctl uninstall --revision` lists, in the order canaryflow
/// deletes them (webhooks first, so that nothing calls a vanishing istiod),
/// by API group: the version is the one each cluster prefers, found by
/// discovery. Secrets are listed by istioctl, but canaryflow never records
/// a Secret, so it never deletes one it could not put back; Pods go with
/// their Deployment.
pub const UNINSTALL_KINDS: [(&str, &str); 15] = [
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("apps", "Deployment"),
    ("apps", "DaemonSet"),
    ("", "Service"),
    ("", "ConfigMap"),
    ("", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "Role"),
    ("policy", "PodDisruptionBudget"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("networking.istio.io", "EnvoyFilter"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("", "Secret"),
];

/// An image's Istio version: its tag without a variant (`-distroless`,
/// `-debug`), when it has one (`registry:5000/istio/proxyv2:1.28.0-distroless`
/// is 1.28.0; `proxyv2@sha256:...` has none).
#[must_use]
pub fn image_version(image: &str) -> Option<String> {
    let named = image.split_once('@').map_or(image, |(named, _)| named);
    let last = named.rsplit('/').next().unwrap_or(named);
    let (_, tag) = last.rsplit_once(':')?;
    let tag = tag.strip_suffix("-distroless").or_else(|| tag.strip_suffix("-debug")).unwrap_or(tag);
    let numbers = tag.split_once('-').map_or(tag, |(numbers, _)| numbers);
    let valid = numbers.split('.').count() == 3 && numbers.split('.').all(|part| part.parse::<u32>().is_ok());
    valid.then(|| tag.to_string())
}

/// The label selector of `istioctl uninstall --revision <revision>`.
#[must_use]
pub fn uninstall_selector(revision: &str) -> String {
    format!("istio.io/rev={revision},operator.istio.io/component in ({})", UNINSTALL_COMPONENTS.join(","))
}

/// What a pod says about who injected its proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injection {
    /// The injecting revision, from the best evidence there is.
    pub revision: Option<String>,
    /// The proxy image's tag (the Istio version).
    pub proxy_version: Option<String>,
    /// Which evidence named the revision.
    pub evidence: String,
}

/// What the upgrade reads of a pod: name, namespace, annotations,
/// containers (name, image, env), readiness and restarts. It is parsed
/// straight from the API's JSON; the rest of a pod (volumes, most of its
/// spec, its managed fields), which is most of an injected pod, is skipped
/// unparsed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodView {
    #[serde(default)]
    metadata: PodMeta,
    #[serde(default)]
    spec: PodSpecView,
    #[serde(default)]
    status: PodStatusView,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    deletion_timestamp: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    owner_references: Vec<OwnerView>,
}

#[derive(Debug, Clone, Deserialize)]
struct OwnerView {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    controller: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecView {
    #[serde(default)]
    containers: Vec<ContainerView>,
    #[serde(default)]
    init_containers: Vec<ContainerView>,
}

#[derive(Debug, Clone, Deserialize)]
struct ContainerView {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    env: Vec<EnvView>,
}

#[derive(Debug, Clone, Deserialize)]
struct EnvView {
    name: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatusView {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    conditions: Vec<ConditionView>,
    #[serde(default)]
    container_statuses: Vec<ContainerStatusView>,
}

#[derive(Debug, Clone, Deserialize)]
struct ConditionView {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatusView {
    #[serde(default)]
    restart_count: u64,
}

impl PodView {
    /// The view of a pod already parsed as JSON (or `None` if it is not one).
    #[must_use]
    pub fn from_json(pod: &Value) -> Option<Self> {
        Self::deserialize(pod).ok()
    }

    /// The pod's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The pod's namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.metadata.namespace
    }

    /// Whether the pod is being deleted (it has a deletion timestamp).
    #[must_use]
    pub fn deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether the pod reports the `Ready` condition.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.status.conditions.iter().any(|c| c.kind == "Ready" && c.status == "True")
    }

    /// One of its labels.
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.get(key).map(String::as_str)
    }

    /// Whether its labels say it is a gateway's (`istio: ingressgateway`, ...).
    #[must_use]
    pub fn labels_say_gateway(&self) -> bool {
        matches!(self.label("istio"), Some("ingressgateway" | "egressgateway" | "ingress" | "egress"))
    }

    /// Whether the pod still runs (or will): not Succeeded, not Failed.
    #[must_use]
    pub fn running(&self) -> bool {
        !matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    /// Its controller (`kind`, `name`), from its owner references.
    #[must_use]
    pub fn owner(&self) -> Option<(&str, &str)> {
        let references = &self.metadata.owner_references;
        references
            .iter()
            .find(|owner| owner.controller == Some(true))
            .or_else(|| references.first())
            .map(|owner| (owner.kind.as_str(), owner.name.as_str()))
    }

    /// Restarts of all its containers.
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.status.container_statuses.iter().map(|s| s.restart_count).sum()
    }
}

/// The part of `sidecar.istio.io/status` that names the revision.
#[derive(Deserialize)]
struct SidecarStatus {
    #[serde(default)]
    revision: Option<String>,
}

/// istiod's address in a proxy's `PROXY_CONFIG`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyConfig {
    #[serde(default)]
    discovery_address: Option<String>,
}

/// Who injected `pod`, or `None` if it has no Istio proxy.
///
/// The revision comes from, in order: the `revision` field of
/// `sidecar.istio.io/status` (1.11+), the `istio.io/rev` annotation
/// (1.18+), then the control-plane address the proxy was given
/// (`discoveryAddress` in `PROXY_CONFIG`, else `CA_ADDR` when it names an
/// istiod): `istiod-<rev>` is revision `<rev>`, plain `istiod` the default. Never the `istio.io/rev`
/// pod label: Istio stopped setting it in 1.11, and a user may set it.
#[must_use]
pub fn injected_by(pod: &PodView) -> Option<Injection> {
    let mut containers = pod.spec.containers.iter().chain(&pod.spec.init_containers);
    let proxy = containers.find(|c| c.name == "istio-proxy")?;
    let proxy_version = image_version(&proxy.image);
    let annotations = &pod.metadata.annotations;
    let status_revision = annotations
        .get("sidecar.istio.io/status")
        .and_then(|text| serde_json::from_str::<SidecarStatus>(text).ok())
        .and_then(|status| status.revision);
    if let Some(revision) = status_revision {
        return Some(Injection { revision: Some(revision), proxy_version, evidence: "sidecar.istio.io/status".into() });
    }
    if let Some(revision) = annotations.get("istio.io/rev") {
        return Some(Injection {
            revision: Some(revision.clone()),
            proxy_version,
            evidence: "istio.io/rev annotation".into(),
        });
    }
    let value = |name: &str| proxy.env.iter().find(|e| e.name == name).and_then(|e| e.value.as_deref());
    let istiod = |address: &str| {
        let service = address.split(['.', ':']).next().unwrap_or_default();
        (service == "istiod" || service.starts_with("istiod-")).then(|| service.to_string())
    };
    // The discovery address first: with `global.caAddress` set, CA_ADDR
    // names another CA and says nothing of the control plane.
    let service = value("PROXY_CONFIG")
        .and_then(|config| serde_json::from_str::<ProxyConfig>(config).ok())
        .and_then(|config| config.discovery_address)
        .and_then(|address| istiod(&address))
        .or_else(|| value("CA_ADDR").and_then(istiod));
    let revision = service.map(|service| match service.strip_prefix("istiod-") {
        Some(revision) => revision.to_string(),
        None => "default".to_string(),
    });
    Some(Injection { revision, proxy_version, evidence: "control-plane address".into() })
}

/// The revision a gateway Deployment runs: what its template's
/// `istio.io/rev` names, else (1.6 gateways carry no revision label) the
/// istiod its own proxy's `CA_ADDR` names; `default` when neither does.
#[must_use]
pub fn gateway_revision(deployment: &Value) -> String {
    if let Some(revision) = deployment.pointer("/spec/template/metadata/labels/istio.io~1rev").and_then(Value::as_str) {
        return revision.to_string();
    }
    let containers = deployment.pointer("/spec/template/spec/containers").and_then(Value::as_array);
    let address = containers
        .and_then(|containers| containers.iter().find(|c| c["name"] == "istio-proxy"))
        .and_then(|proxy| proxy.get("env").and_then(Value::as_array))
        .and_then(|env| env.iter().find(|e| e["name"] == "CA_ADDR"))
        .and_then(|e| e.get("value").and_then(Value::as_str));
    match address.and_then(|address| address.split(['.', ':']).next()) {
        Some(service) if service.starts_with("istiod-") => service.trim_start_matches("istiod-").to_string(),
        _ => "default".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(annotations: Value, env: Value, image: &str) -> PodView {
        view(&json!({"metadata": {"annotations": annotations, "labels": {"istio.io/rev": "a-lie"}},
               "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "istio-proxy", "image": image, "env": env}]}}))
    }

    fn view(pod: &Value) -> PodView {
        PodView::from_json(pod).expect("a pod")
    }

    #[test]
    fn the_best_evidence_names_the_revision_and_the_label_never_does() {
        let status = pod(
            json!({"sidecar.istio.io/status": "{\"revision\":\"1-20-0\"}"}),
            json!([]),
            "docker.io/istio/proxyv2:1.20.0",
        );
        assert_eq!(injected_by(&status).and_then(|i| i.revision).as_deref(), Some("1-20-0"));
        let annotated =
            pod(json!({"sidecar.istio.io/status": "{}", "istio.io/rev": "canary"}), json!([]), "proxyv2:1.18.0");
        assert_eq!(injected_by(&annotated).and_then(|i| i.revision).as_deref(), Some("canary"));
        let old = pod(
            json!({"sidecar.istio.io/status": "{}"}),
            json!([{"name": "CA_ADDR", "value": "istiod-1-6-8.istio-system.svc:15012"}]),
            "docker.io/istio/proxyv2:1.6.8",
        );
        let injection = injected_by(&old).expect("injected");
        assert_eq!((injection.revision.as_deref(), injection.proxy_version.as_deref()), (Some("1-6-8"), Some("1.6.8")));
        let default = pod(
            json!({}),
            json!([{"name": "PROXY_CONFIG", "value": "{\"discoveryAddress\":\"istiod.istio-system.svc:15012\"}"}]),
            "proxyv2:1.6.5",
        );
        assert_eq!(injected_by(&default).and_then(|i| i.revision).as_deref(), Some("default"));
        assert_eq!(
            injected_by(&view(&json!({"spec": {"containers": [{"name": "app"}]}}))),
            None,
            "no proxy, no injection"
        );
    }

    /// Issue 15, point 5: images as real installs name them, and a CA of
    /// one's own (`global.caAddress`).
    #[test]
    fn r15_real_images_and_an_external_ca_name_the_right_revision_and_version() {
        assert_eq!(image_version("registry.corp:5000/mesh/proxyv2:1.28.0-distroless").as_deref(), Some("1.28.0"));
        assert_eq!(image_version("docker.io/istio/proxyv2:1.28.0-debug").as_deref(), Some("1.28.0"));
        assert_eq!(image_version("gcr.io/istio-release/proxyv2:1.28.0@sha256:0123abcd").as_deref(), Some("1.28.0"));
        assert_eq!(image_version("registry.corp:5000/mesh/proxyv2@sha256:0123abcd"), None, "a digest names no version");
        assert_eq!(image_version("docker.io/istio/proxyv2:latest"), None);
        assert_eq!(image_version("docker.io/istio/proxyv2:1.28.0-rc.1").as_deref(), Some("1.28.0-rc.1"));
        let config = json!({"discoveryAddress": "istiod-1-28-0.istio-system.svc:15012"}).to_string();
        let external_ca = pod(
            json!({"sidecar.istio.io/status": "{}"}),
            json!([{"name": "CA_ADDR", "value": "cert-manager-istio-csr.cert-manager.svc:443"},
                   {"name": "PROXY_CONFIG", "value": config}]),
            "registry.corp:5000/mesh/proxyv2:1.28.0-distroless",
        );
        let injection = injected_by(&external_ca).expect("injected");
        assert_eq!(
            (injection.revision.as_deref(), injection.proxy_version.as_deref()),
            (Some("1-28-0"), Some("1.28.0"))
        );
    }

    #[test]
    fn a_pod_view_reads_readiness_restarts_and_deletion_and_skips_the_rest() {
        let pod = view(&json!({
            "metadata": {"name": "web-1", "namespace": "shop", "deletionTimestamp": "2026-11-29T00:00:00Z",
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"volumes": [{"name": "istio-envoy", "emptyDir": {}}], "containers": [{"name": "web"}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "ContainersReady", "status": "False"}, {"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "web", "restartCount": 2}, {"name": "istio-proxy", "restartCount": 3}]}
        }));
        assert_eq!((pod.name(), pod.namespace()), ("web-1", "shop"));
        assert!(pod.ready() && pod.deleting());
        assert_eq!(pod.restarts(), 5);
        let fresh = view(
            &json!({"metadata": {"name": "web-2"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        assert!(!fresh.ready() && !fresh.deleting());
        assert_eq!(fresh.restarts(), 0);
        assert!(PodView::from_json(&json!({"metadata": {"name": 7}})).is_none(), "a malformed pod is no pod");
    }
}
