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
/// by API version. Secrets are listed by istioctl, but canaryflow never
/// records a Secret, so it never deletes one it could not put back.
pub const UNINSTALL_KINDS: [(&str, &str); 14] = [
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("v1", "Secret"),
];

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

/// Who injected `pod`, or `None` if it has no Istio proxy.
///
/// The revision comes from, in order: the `revision` field of
/// `sidecar.istio.io/status` (1.11+), the `istio.io/rev` annotation
/// (1.18+), then the control-plane address the proxy was given
/// (`CA_ADDR`, or `discoveryAddress` in `PROXY_CONFIG`): `istiod-<rev>` is
/// revision `<rev>`, plain `istiod` the default. Never the `istio.io/rev`
/// pod label: Istio stopped setting it in 1.11, and a user may set it.
#[must_use]
pub fn injected_by(pod: &Value) -> Option<Injection> {
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|field| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array))
        .flatten();
    let proxy = containers.into_iter().find(|c| c["name"] == "istio-proxy")?;
    let proxy_version =
        proxy["image"].as_str().and_then(|image| image.rsplit_once(':')).map(|(_, tag)| tag.to_string());
    let annotations = pod.pointer("/metadata/annotations");
    let status_revision = annotations
        .and_then(|a| a.get("sidecar.istio.io/status"))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|status| status.get("revision").and_then(Value::as_str).map(str::to_string));
    if let Some(revision) = status_revision {
        return Some(Injection { revision: Some(revision), proxy_version, evidence: "sidecar.istio.io/status".into() });
    }
    if let Some(revision) = annotations.and_then(|a| a.get("istio.io/rev")).and_then(Value::as_str) {
        return Some(Injection {
            revision: Some(revision.to_string()),
            proxy_version,
            evidence: "istio.io/rev annotation".into(),
        });
    }
    let env = proxy.get("env").and_then(Value::as_array).cloned().unwrap_or_default();
    let value =
        |name: &str| env.iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str()).map(str::to_string);
    let address = value("CA_ADDR").or_else(|| {
        value("PROXY_CONFIG")
            .and_then(|config| serde_json::from_str::<Value>(&config).ok())
            .and_then(|config| config.get("discoveryAddress").and_then(Value::as_str).map(str::to_string))
    });
    let revision = address.as_deref().and_then(|address| address.split('.').next()).map(|service| {
        match service.strip_prefix("istiod-") {
            Some(revision) => revision.to_string(),
            None => "default".to_string(),
        }
    });
    Some(Injection { revision, proxy_version, evidence: "control-plane address".into() })
}

/// The revision a gateway Deployment's template names (`istio.io/rev`), `default` when none.
#[must_use]
pub fn gateway_revision(deployment: &Value) -> String {
    deployment
        .pointer("/spec/template/metadata/labels/istio.io~1rev")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(annotations: Value, env: Value, image: &str) -> Value {
        json!({"metadata": {"annotations": annotations, "labels": {"istio.io/rev": "a-lie"}},
               "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "istio-proxy", "image": image, "env": env}]}})
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
        assert_eq!(injected_by(&json!({"spec": {"containers": [{"name": "app"}]}})), None, "no proxy, no injection");
    }
}
