//! The base chart, shared by every revision: Istio's
//! CustomResourceDefinitions, the reader account, and (up to 1.10) the one
//! cluster-wide validating webhook hard-wired to Service `istiod`
//! (ISTIO-REFERENCE.md §1.4: the seed's bug). And the in-cluster operator,
//! which a cluster may run beside it.

use serde_json::{Value, json};

use super::discovery::validation_hook;
use super::{ISTIO_NAMESPACE, Render, labels, map, webhook_api};
use crate::istio::version::minor_of;

/// Istio's custom types as release `minor`'s base chart defines them:
/// (group, kind, plural, versions served, oldest first). `v1` came with 1.22;
/// the IstioOperator CRD left the base chart with the operator in 1.24.
fn custom_types(minor: u32) -> Vec<(&'static str, &'static str, &'static str, Vec<&'static str>)> {
    let ga = |mut versions: Vec<&'static str>| {
        if minor >= 22 {
            versions.push("v1");
        }
        versions
    };
    let mut types = vec![
        ("networking.istio.io", "VirtualService", "virtualservices", ga(vec!["v1alpha3", "v1beta1"])),
        ("networking.istio.io", "DestinationRule", "destinationrules", ga(vec!["v1alpha3", "v1beta1"])),
        ("networking.istio.io", "Gateway", "gateways", ga(vec!["v1alpha3", "v1beta1"])),
        ("networking.istio.io", "ServiceEntry", "serviceentries", ga(vec!["v1alpha3", "v1beta1"])),
        ("networking.istio.io", "Sidecar", "sidecars", ga(vec!["v1alpha3", "v1beta1"])),
        ("networking.istio.io", "WorkloadEntry", "workloadentries", ga(vec!["v1alpha3", "v1beta1"])),
        ("networking.istio.io", "EnvoyFilter", "envoyfilters", vec!["v1alpha3"]),
        ("security.istio.io", "AuthorizationPolicy", "authorizationpolicies", ga(vec!["v1beta1"])),
        ("security.istio.io", "PeerAuthentication", "peerauthentications", ga(vec!["v1beta1"])),
        ("security.istio.io", "RequestAuthentication", "requestauthentications", ga(vec!["v1beta1"])),
    ];
    if minor >= 8 {
        types.push(("networking.istio.io", "WorkloadGroup", "workloadgroups", ga(vec!["v1alpha3", "v1beta1"])));
    }
    if minor >= 12 {
        types.push(("telemetry.istio.io", "Telemetry", "telemetries", ga(vec!["v1alpha1"])));
        types.push(("extensions.istio.io", "WasmPlugin", "wasmplugins", vec!["v1alpha1"]));
    }
    if minor >= 13 {
        types.push(("networking.istio.io", "ProxyConfig", "proxyconfigs", vec!["v1beta1"]));
    }
    if minor <= 23 {
        types.push(("install.istio.io", "IstioOperator", "istiooperators", vec!["v1alpha1"]));
    }
    types
}

/// The CRD of one custom type.
fn crd(version: &str, group: &str, kind: &str, plural: &str, versions: &[&str]) -> Value {
    let api = if minor_of(version) <= 8 { "apiextensions.k8s.io/v1beta1" } else { "apiextensions.k8s.io/v1" };
    let storage = if versions.contains(&"v1") { "v1" } else { versions[0] };
    let served: Vec<Value> = versions
        .iter()
        .map(|name| json!({"name": name, "served": true, "storage": *name == storage, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}))
        .collect();
    let short: Vec<&str> = match plural {
        "virtualservices" => vec!["vs"],
        "destinationrules" => vec!["dr"],
        "gateways" => vec!["gw"],
        "serviceentries" => vec!["se"],
        "authorizationpolicies" => vec!["ap"],
        "peerauthentications" => vec!["pa"],
        "istiooperators" => vec!["iop", "io"],
        _ => vec![],
    };
    let singular = kind.to_lowercase();
    let own = map([("app", "istio-pilot"), ("chart", "istio"), ("heritage", "Tiller"), ("release", "istio")]);
    json!({"apiVersion": api, "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"), "labels": labels(own, version, "base", "istio-pilot")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": singular, "shortNames": short},
                 "versions": served}})
}

/// Istio's CustomResourceDefinitions as version `version`'s base chart has them.
#[must_use]
pub fn crds(version: &str) -> Vec<Value> {
    custom_types(minor_of(version))
        .into_iter()
        .map(|(group, kind, plural, versions)| crd(version, group, kind, plural, &versions))
        .collect()
}

/// The base chart: CRDs, the reader account, and (up to 1.10) the shared validator.
#[must_use]
pub fn base(version: &str, _render: &Render) -> Vec<Value> {
    let mut objects = crds(version);
    objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "istio-reader-service-account", "namespace": ISTIO_NAMESPACE,
                     "labels": labels(map([("app", "istio-reader"), ("release", "istio")]), version, "base", "istio-reader")}}));
    if minor_of(version) <= 10 {
        let own = map([("app", "istiod"), ("istio", "istiod"), ("release", "istio")]);
        objects.push(json!({"apiVersion": webhook_api(minor_of(version)), "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": format!("istiod-{ISTIO_NAMESPACE}"), "labels": labels(own, version, "base", "istiod")},
            "webhooks": [validation_hook("validation.istio.io", "istiod", None)]}));
    }
    objects
}

/// An in-cluster operator as `istioctl operator init` leaves it: its CRD,
/// its Deployment in `istio-operator`, and the IstioOperator it reconciles.
#[must_use]
pub fn operator(version: &str) -> Vec<Value> {
    let mut objects = vec![crd(version, "install.istio.io", "IstioOperator", "istiooperators", &["v1alpha1"])];
    objects.extend([
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-operator"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istio-operator", "namespace": "istio-operator"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istio-operator", "namespace": "istio-operator", "labels": {"name": "istio-operator"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"name": "istio-operator"}},
                "template": {"metadata": {"labels": {"name": "istio-operator"}},
                    "spec": {"serviceAccountName": "istio-operator", "containers": [{"name": "istio-operator",
                        "image": format!("docker.io/istio/operator:{version}"), "command": ["operator", "server"]}]}}}}),
        json!({"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
            "metadata": {"name": "installed-state", "namespace": ISTIO_NAMESPACE},
            "spec": {"profile": "default", "tag": version}}),
    ]);
    objects
}
