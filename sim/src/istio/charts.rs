//! Istio's objects, as a given version installs them: the control plane of
//! a revision (what `istioctl manifest generate --set revision=R` renders),
//! the shared base, and the seed a simulated cluster starts with.
//!
//! Names, labels and selectors follow ISTIO-REFERENCE.md §2, version by
//! version: the injector webhooks of 1.6-1.8 (one webhook), 1.9 (namespace,
//! object) and 1.10+ (rev.namespace, rev.object); the shared validating
//! webhook `istiod-istio-system` of the base chart up to 1.10, and the
//! per-revision `istio-validator-<rev>-istio-system` from 1.11.

use serde_json::{Value, json};

use super::version::minor_of;

/// Where Istio lives.
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// The image hub of the rendered objects.
pub const HUB: &str = "docker.io/istio";

/// A control-plane revision: `default` (non-revisioned) or a DNS-1123 label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// `default`, or a name like `1-6-8`.
    pub name: String,
    /// The Istio version, like `1.6.8`.
    pub version: String,
}

impl Revision {
    /// A revision, checking its name (DNS-1123 label; `1.6.8` is refused with the fix).
    pub fn new(name: &str, version: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err(
                "the revision name is empty; an empty revision would be a non-revisioned install (say `default`)"
                    .into(),
            );
        }
        if let Err(why) = crate::kube::object::check_dns_label(name) {
            let hint = if name.contains('.') { format!("; use {:?}", name.replace('.', "-")) } else { String::new() };
            return Err(format!("revision {name:?} is not a DNS-1123 label{hint}: {why}"));
        }
        let parts: Vec<&str> = version.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|part| part.parse::<u32>().is_err()) {
            return Err(format!("version {version:?} is not MAJOR.MINOR.PATCH (like 1.6.8)"));
        }
        Ok(Self { name: name.into(), version: version.into() })
    }

    /// Whether it is the non-revisioned install.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.name == "default"
    }

    /// `""` or `-1-6-8`: what revisioned object names carry.
    #[must_use]
    pub fn suffix(&self) -> String {
        if self.is_default() { String::new() } else { format!("-{}", self.name) }
    }

    /// The minor version.
    #[must_use]
    pub fn minor(&self) -> u32 {
        minor_of(&self.version)
    }

    fn labels(&self, component: &str) -> Value {
        json!({
            "istio.io/rev": self.name,
            "operator.istio.io/component": component,
            "operator.istio.io/version": self.version,
            "install.operator.istio.io/owning-resource": "unknown",
            "release": "istio",
        })
    }
}

fn with(mut labels: Value, extra: Value) -> Value {
    if let (Some(labels), Some(extra)) = (labels.as_object_mut(), extra.as_object()) {
        labels.extend(extra.clone());
    }
    labels
}

/// The objects of revision `rev`: istiod and its Service, ConfigMaps,
/// webhooks, RBAC, PDB and HPA, and the ingress gateway (which a revision
/// install upgrades in place).
#[must_use]
pub fn control_plane(rev: &Revision) -> Vec<Value> {
    let s = rev.suffix();
    let istiod = format!("istiod{s}");
    let pilot = rev.labels("Pilot");
    let selector =
        if rev.is_default() { json!({"istio": "pilot"}) } else { json!({"app": "istiod", "istio.io/rev": rev.name}) };
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": with(pilot.clone(), json!({"app": "istiod"}))}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": format!("istiod-clusterrole{s}-{ISTIO_NAMESPACE}"), "labels": with(pilot.clone(), json!({"app": "istiod"}))},
            "rules": [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update", "patch"]},
                      {"apiGroups": ["networking.istio.io", "security.istio.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("istiod-clusterrole{s}-{ISTIO_NAMESPACE}"), "labels": with(pilot.clone(), json!({"app": "istiod"}))},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("istiod-clusterrole{s}-{ISTIO_NAMESPACE}")},
            "subjects": [{"kind": "ServiceAccount", "name": istiod, "namespace": ISTIO_NAMESPACE}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": with(pilot.clone(), json!({"app": "istiod"}))},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "list", "watch", "update"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": with(pilot.clone(), json!({"app": "istiod"}))},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": istiod},
            "subjects": [{"kind": "ServiceAccount", "name": istiod, "namespace": ISTIO_NAMESPACE}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("istio{s}"), "namespace": ISTIO_NAMESPACE, "labels": pilot.clone()},
            "data": {"mesh": format!("defaultConfig:\n  discoveryAddress: {istiod}.{ISTIO_NAMESPACE}.svc:15012\nrootNamespace: {ISTIO_NAMESPACE}\n"), "meshNetworks": "networks: {}\n"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("istio-sidecar-injector{s}"), "namespace": ISTIO_NAMESPACE, "labels": pilot.clone()},
        "data": {
            "values": json!({"global": {"hub": HUB, "tag": rev.version, "istioNamespace": ISTIO_NAMESPACE}, "revision": if rev.is_default() { "" } else { rev.name.as_str() }}).to_string(),
            "config": "policy: enabled\nalwaysInjectSelector: []\nneverInjectSelector: []\ntemplates:\n  sidecar: |\n    # the sidecar template\n  gateway: |\n    # the gateway template\n"
        }}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": with(pilot.clone(), json!({"app": "istiod", "istio": "pilot", "app.kubernetes.io/name": "istiod"}))},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {
                    "app": "istiod", "istio.io/rev": rev.name, "sidecar.istio.io/inject": "false",
                    "istio": if rev.is_default() { "pilot" } else { "istiod" }, "istio.io/dataplane-mode": "none"
                }},
                "spec": {"serviceAccountName": istiod, "containers": [{
                    "name": "discovery", "image": format!("{HUB}/pilot:{}", rev.version),
                    "args": ["discovery", "--monitoringAddr=:15014", "--domain", "cluster.local"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 15010, "protocol": "TCP"}, {"containerPort": 15017, "protocol": "TCP"}],
                    "env": [{"name": "REVISION", "value": rev.name}]
                }]}
            }
        }}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": with(pilot.clone(), json!({"app": "istiod", "istio": "pilot"}))},
            "spec": {"ports": service_ports(rev), "selector": if rev.is_default() { json!({"app": "istiod", "istio": "pilot"}) } else { json!({"app": "istiod", "istio.io/rev": rev.name}) }}}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": format!("istio-sidecar-injector{s}"), "labels": with(pilot.clone(), json!({"app": "sidecar-injector"}))},
            "webhooks": injector_webhooks(rev, &rev.name, &istiod)}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": with(pilot.clone(), json!({"app": "istiod"}))},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}}),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": with(pilot.clone(), json!({"app": "istiod"}))},
            "spec": {"maxReplicas": 5, "minReplicas": 1, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": istiod},
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    ];
    if rev.minor() >= 11 {
        objects.push(revision_validator(rev));
    }
    objects.extend(ingress_gateway(rev));
    objects
}

fn service_ports(rev: &Revision) -> Value {
    let mut ports = vec![
        json!({"name": "grpc-xds", "port": 15010, "protocol": "TCP", "targetPort": 15010}),
        json!({"name": "https-dns", "port": 15012, "protocol": "TCP", "targetPort": 15012}),
        json!({"name": "https-webhook", "port": 443, "protocol": "TCP", "targetPort": 15017}),
        json!({"name": "http-monitoring", "port": 15014, "protocol": "TCP", "targetPort": 15014}),
    ];
    // The 1.6 chart also served DNS (53/UDP, 853); 1.7 kept 853; both gone from 1.8.
    if rev.minor() == 6 {
        ports.push(json!({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 15053}));
    }
    if rev.minor() <= 7 {
        ports.push(json!({"name": "dns-tls", "port": 853, "protocol": "TCP", "targetPort": 15053}));
    }
    Value::Array(ports)
}

fn webhook(name: &str, service: &str, namespace_selector: Value, object_selector: Value) -> Value {
    json!({
        "name": name,
        "clientConfig": {"service": {"name": service, "namespace": ISTIO_NAMESPACE, "path": "/inject", "port": 443}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1beta1", "v1"],
        "reinvocationPolicy": "Never",
        "namespaceSelector": namespace_selector,
        "objectSelector": object_selector,
    })
}

fn expression(key: &str, operator: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": operator})
    } else {
        json!({"key": key, "operator": operator, "values": values})
    }
}

/// The injector webhooks of revision `rev` (or of tag `selects`, which
/// matches `istio.io/rev=<selects>` and calls `service`).
fn injector_webhooks(rev: &Revision, selects: &str, service: &str) -> Value {
    let not_disabled = json!({"matchExpressions": [expression("sidecar.istio.io/inject", "NotIn", &["false"])]});
    if rev.minor() <= 9 {
        let namespace_selector = if rev.is_default() && selects == "default" {
            json!({"matchLabels": {"istio-injection": "enabled"}})
        } else {
            json!({"matchExpressions": [expression("istio-injection", "DoesNotExist", &[]), expression("istio.io/rev", "In", &[selects])]})
        };
        let name = if rev.minor() <= 8 { "sidecar-injector.istio.io" } else { "namespace.sidecar-injector.istio.io" };
        let mut hooks = vec![webhook(name, service, namespace_selector, not_disabled.clone())];
        if rev.minor() == 9 && rev.is_default() {
            hooks.push(webhook(
                "object.sidecar-injector.istio.io",
                service,
                json!({"matchExpressions": [expression("istio-injection", "DoesNotExist", &[]), expression("istio.io/rev", "DoesNotExist", &[])]}),
                json!({"matchExpressions": [expression("sidecar.istio.io/inject", "In", &["true"]), expression("istio.io/rev", "DoesNotExist", &[])]}),
            ));
        }
        return Value::Array(hooks);
    }
    let mut hooks = vec![
        webhook(
            "rev.namespace.sidecar-injector.istio.io",
            service,
            json!({"matchExpressions": [expression("istio.io/rev", "In", &[selects]), expression("istio-injection", "DoesNotExist", &[])]}),
            not_disabled.clone(),
        ),
        webhook(
            "rev.object.sidecar-injector.istio.io",
            service,
            json!({"matchExpressions": [expression("istio.io/rev", "DoesNotExist", &[]), expression("istio-injection", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [expression("sidecar.istio.io/inject", "NotIn", &["false"]), expression("istio.io/rev", "In", &[selects])]}),
        ),
    ];
    if selects == "default" {
        hooks.push(webhook(
            "namespace.sidecar-injector.istio.io",
            service,
            json!({"matchExpressions": [expression("istio-injection", "In", &["enabled"])]}),
            not_disabled,
        ));
        hooks.push(webhook(
            "object.sidecar-injector.istio.io",
            service,
            json!({"matchExpressions": [expression("istio-injection", "DoesNotExist", &[]), expression("istio.io/rev", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [expression("sidecar.istio.io/inject", "In", &["true"]), expression("istio.io/rev", "DoesNotExist", &[])]}),
        ));
    }
    Value::Array(hooks)
}

fn validation_webhook(name: &str, service: &str, object_selector: Value, failure_policy: &str) -> Value {
    json!({
        "name": name,
        "clientConfig": {"service": {"name": service, "namespace": ISTIO_NAMESPACE, "path": "/validate", "port": 443}},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"], "apiVersions": ["*"], "resources": ["*"]}],
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1beta1", "v1"],
        "objectSelector": object_selector,
    })
}

/// The per-revision validator of 1.11+.
fn revision_validator(rev: &Revision) -> Value {
    let name = if rev.is_default() {
        format!("istio-validator-{ISTIO_NAMESPACE}")
    } else {
        format!("istio-validator-{}-{ISTIO_NAMESPACE}", rev.name)
    };
    let object_selector = json!({"matchExpressions": [expression("istio.io/rev", "In", &[rev.name.as_str()])]});
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": with(rev.labels("Pilot"), json!({"app": "istiod", "istio": "istiod"}))},
        "webhooks": [validation_webhook("rev.validation.istio.io", &format!("istiod{}", rev.suffix()), object_selector, "Ignore")]})
}

/// The ingress gateway as revision `rev` installs it: its Deployment runs
/// the revision's proxy and names it in `istio.io/rev`.
fn ingress_gateway(rev: &Revision) -> Vec<Value> {
    let labels = with(rev.labels("IngressGateways"), json!({"app": "istio-ingressgateway", "istio": "ingressgateway"}));
    let selector = json!({"app": "istio-ingressgateway", "istio": "ingressgateway"});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istio-ingressgateway-service-account", "namespace": ISTIO_NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istio-ingressgateway", "namespace": ISTIO_NAMESPACE, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": {"app": "istio-ingressgateway", "istio": "ingressgateway", "istio.io/rev": rev.name, "sidecar.istio.io/inject": "false"},
                                      "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {"serviceAccountName": "istio-ingressgateway-service-account", "containers": [{
                    "name": "istio-proxy", "image": format!("{HUB}/proxyv2:{}", rev.version),
                    "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 8443, "protocol": "TCP"}, {"containerPort": 15021, "protocol": "TCP"}],
                    "env": [{"name": "CA_ADDR", "value": format!("istiod{}.{ISTIO_NAMESPACE}.svc:15012", rev.suffix())}]
                }]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istio-ingressgateway", "namespace": ISTIO_NAMESPACE, "labels": labels},
            "spec": {"type": "LoadBalancer", "selector": selector, "ports": [
                {"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
                {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]}}),
    ]
}

/// The shared base: the namespace, the reader account, the CA secret, and
/// (up to 1.10) the one cluster-wide validating webhook, hard-wired to
/// Service `istiod` (ISTIO-REFERENCE.md §1.4: the seed's bug).
#[must_use]
pub fn base(version: &str) -> Vec<Value> {
    let base_labels = json!({"operator.istio.io/component": "Base", "release": "istio", "install.operator.istio.io/owning-resource": "unknown"});
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ISTIO_NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istio-reader-service-account", "namespace": ISTIO_NAMESPACE, "labels": with(base_labels.clone(), json!({"app": "istio-reader"}))}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root", "metadata": {"name": "istio-ca-secret", "namespace": ISTIO_NAMESPACE},
               "data": {"ca-cert.pem": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t", "ca-key.pem": "c2ltdWxhdGVkLWNhLWtleQ=="}}),
    ];
    if minor_of(version) <= 10 {
        objects.push(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": format!("istiod-{ISTIO_NAMESPACE}"), "labels": with(base_labels, json!({"app": "istiod", "istio": "istiod"}))},
            "webhooks": [validation_webhook("validation.istio.io", "istiod", json!({}), "Ignore")]}));
    }
    objects
}

/// A revision tag's injector webhook (`istio-revision-tag-<tag>`), as
/// `istioctl tag generate <tag> --revision <rev>` renders it.
#[must_use]
pub fn revision_tag(tag: &str, rev: &Revision) -> Value {
    let labels = json!({"app": "sidecar-injector", "istio.io/rev": rev.name, "istio.io/tag": tag});
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": format!("istio-revision-tag-{tag}"), "labels": labels},
        "webhooks": injector_webhooks(rev, tag, &format!("istiod{}", rev.suffix()))})
}

/// The rendered manifests of revision `rev` as multi-document YAML.
pub fn manifests_yaml(rev: &Revision) -> Result<String, String> {
    let objects = control_plane(rev);
    let mut out = String::new();
    for object in &objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object).map_err(|err| err.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_names_are_checked_with_the_seeds_rule() {
        assert!(Revision::new("1-6-8", "1.6.8").is_ok());
        let dotted = Revision::new("1.6.8", "1.6.8").expect_err("dots");
        assert!(dotted.contains("use \"1-6-8\""), "{dotted}");
        assert!(Revision::new("", "1.6.8").expect_err("empty").contains("empty"));
        assert!(Revision::new("canary", "1.6").is_err());
    }

    #[test]
    fn objects_are_named_and_labelled_per_the_reference() {
        let rev = Revision::new("1-6-8", "1.6.8").expect("rev");
        let objects = control_plane(&rev);
        let named = |kind: &str, name: &str| {
            objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).cloned()
        };
        let deployment = named("Deployment", "istiod-1-6-8").expect("istiod-1-6-8");
        assert_eq!(deployment["spec"]["selector"]["matchLabels"], json!({"app": "istiod", "istio.io/rev": "1-6-8"}));
        assert_eq!(deployment["spec"]["template"]["metadata"]["labels"]["istio"], "istiod");
        let service = named("Service", "istiod-1-6-8").expect("service");
        let ports: Vec<u64> =
            service["spec"]["ports"].as_array().expect("ports").iter().filter_map(|p| p["port"].as_u64()).collect();
        assert_eq!(ports, [15010, 15012, 443, 15014, 53, 853], "1.6 still served DNS");
        let webhook = named("MutatingWebhookConfiguration", "istio-sidecar-injector-1-6-8").expect("mwc");
        assert_eq!(webhook["webhooks"].as_array().map(Vec::len), Some(1), "1.6 has one injector webhook");
        assert!(objects.iter().all(|o| o["metadata"]["labels"]["istio.io/rev"] == "1-6-8"));
        assert!(
            named("ValidatingWebhookConfiguration", "istio-validator-1-6-8-istio-system").is_none(),
            "no per-revision validator before 1.11"
        );

        let modern = control_plane(&Revision::new("1-20-0", "1.20.0").expect("rev"));
        let webhook = modern.iter().find(|o| o["kind"] == "MutatingWebhookConfiguration").expect("mwc");
        let names: Vec<&str> =
            webhook["webhooks"].as_array().expect("hooks").iter().filter_map(|h| h["name"].as_str()).collect();
        assert_eq!(names, ["rev.namespace.sidecar-injector.istio.io", "rev.object.sidecar-injector.istio.io"]);
        assert!(modern.iter().any(|o| o["metadata"]["name"] == "istio-validator-1-20-0-istio-system"));
    }

    #[test]
    fn manifests_render_as_yaml_that_reads_back() {
        let yaml = manifests_yaml(&Revision::new("1-6-8", "1.6.8").expect("rev")).expect("yaml");
        assert!(yaml.starts_with("---\n"));
        let documents: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("parses");
        assert_eq!(documents.len(), control_plane(&Revision::new("1-6-8", "1.6.8").expect("rev")).len());
        assert!(documents.iter().any(|d| d["metadata"]["name"] == "istiod-1-6-8"));
    }
}
