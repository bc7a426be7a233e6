//! The node-level components: the CNI plugin's and ztunnel's DaemonSets.
//! One of each per cluster, with fixed names, whatever the number of
//! control-plane revisions: shared by every pod on every node
//! (ISTIO-REFERENCE.md §9).

use serde_json::{Value, json};

use super::{ISTIO_NAMESPACE, labels, map};

/// The istio-cni chart: account, config, DaemonSet `istio-cni-node`.
/// The DaemonSet carries the installing revision (`default` unless the
/// chart is given one) and component `Cni`.
#[must_use]
pub fn cni(version: &str, revision: &str) -> Vec<Value> {
    let own = map([
        ("install.operator.istio.io/owning-resource", "unknown"),
        ("istio.io/rev", revision),
        ("k8s-app", "istio-cni-node"),
        ("operator.istio.io/component", "Cni"),
        ("release", "istio"),
    ]);
    let template_labels = labels(
        map([("istio.io/dataplane-mode", "none"), ("k8s-app", "istio-cni-node"), ("sidecar.istio.io/inject", "false")]),
        version,
        "cni",
        "istio-cni",
    );
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "istio-cni", "namespace": ISTIO_NAMESPACE, "labels": labels(map([("app", "istio-cni"), ("release", "istio")]), version, "cni", "istio-cni")}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio-cni-config", "namespace": ISTIO_NAMESPACE, "labels": labels(map([("app", "istio-cni"), ("release", "istio")]), version, "cni", "istio-cni")},
            "data": {"CURRENT_AGENT_VERSION": version, "AMBIENT_ENABLED": "false"}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "istio-cni-node", "namespace": ISTIO_NAMESPACE, "labels": labels(own, version, "cni", "istio-cni")},
            "spec": {"selector": {"matchLabels": {"k8s-app": "istio-cni-node"}},
                "updateStrategy": {"rollingUpdate": {"maxUnavailable": 1}, "type": "RollingUpdate"},
                "template": {"metadata": {"labels": template_labels,
                        "annotations": {"sidecar.istio.io/inject": "false", "prometheus.io/scrape": "true", "prometheus.io/port": "15014"}},
                    "spec": {"serviceAccountName": "istio-cni", "priorityClassName": "system-node-critical",
                        "containers": [{"name": "install-cni", "image": format!("docker.io/istio/install-cni:{version}"),
                            "command": ["install-cni"], "envFrom": [{"configMapRef": {"name": "istio-cni-config"}}]}]}}}}),
    ]
}

/// The ztunnel chart: account and DaemonSet `ztunnel`. Its DaemonSet
/// carries only Helm's labels (the golden file `ztunnel.golden.yaml`: no
/// revision, no component); the installer adds its own.
#[must_use]
pub fn ztunnel(version: &str) -> Vec<Value> {
    let template_labels = labels(
        map([("app", "ztunnel"), ("istio.io/dataplane-mode", "none"), ("sidecar.istio.io/inject", "false")]),
        version,
        "ztunnel",
        "ztunnel",
    );
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "ztunnel", "namespace": ISTIO_NAMESPACE, "labels": labels(json!({}), version, "ztunnel", "ztunnel")}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "ztunnel", "namespace": ISTIO_NAMESPACE, "labels": labels(json!({}), version, "ztunnel", "ztunnel"), "annotations": {}},
            "spec": {"selector": {"matchLabels": {"app": "ztunnel"}},
                "updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}, "type": "RollingUpdate"},
                "template": {"metadata": {"labels": template_labels,
                        "annotations": {"sidecar.istio.io/inject": "false", "prometheus.io/scrape": "true", "prometheus.io/port": "15020"}},
                    "spec": {"serviceAccountName": "ztunnel", "priorityClassName": "system-node-critical",
                        "containers": [{"name": "istio-proxy", "image": format!("docker.io/istio/ztunnel:{version}-distroless"),
                            "args": ["proxy", "ztunnel"],
                            "env": [{"name": "CA_ADDRESS", "value": format!("istiod.{ISTIO_NAMESPACE}.svc:15012")},
                                    {"name": "XDS_ADDRESS", "value": format!("istiod.{ISTIO_NAMESPACE}.svc:15012")}]}]}}}}),
    ]
}
