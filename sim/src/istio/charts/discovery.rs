//! The istio-discovery chart: istiod of one revision, with its account,
//! RBAC, ConfigMaps, Service, webhooks, and autoscaling.

use serde_json::{Value, json};

use super::{ISTIO_NAMESPACE, Render, Revision, expression, labels, map, webhook_api};

/// Everything the istio-discovery chart renders for `rev`.
#[must_use]
pub fn discovery(rev: &Revision, render: &Render) -> Vec<Value> {
    let mut objects = identity(rev);
    objects.extend(configuration(rev, render));
    objects.push(deployment(rev, render));
    objects.push(service(rev));
    objects.push(injector(rev));
    if rev.minor() >= 11 {
        objects.push(validator(rev));
    }
    if let Some(hpa) = autoscaler(rev, render) {
        objects.push(hpa);
    }
    if render.pilot_pdb {
        objects.push(disruption_budget(rev, render));
    }
    objects
}

/// `app` and `release` only: the RBAC and account templates set no
/// revision or component label (ISTIO-REFERENCE.md §9).
fn plain(app: &str, version: &str, name: &str) -> Value {
    labels(map([("app", app), ("release", "istio")]), version, "istiod", name)
}

/// The labels of Pilot's own objects: revision and component, and from 1.26 the owner.
fn pilot(rev: &Revision, extra: &[(&str, &str)]) -> Value {
    let mut own =
        map([("istio.io/rev", rev.name.as_str()), ("operator.istio.io/component", "Pilot"), ("release", "istio")]);
    if rev.minor() >= 26 {
        own["install.operator.istio.io/owning-resource"] = json!("unknown");
    }
    for (key, value) in extra {
        own[*key] = json!(value);
    }
    labels(own, &rev.version, "istiod", "istiod")
}

fn identity(rev: &Revision) -> Vec<Value> {
    let (s, v) = (rev.suffix(), rev.version.as_str());
    let istiod = rev.istiod();
    let clusterrole = format!("istiod-clusterrole{s}-{ISTIO_NAMESPACE}");
    let gateway_controller = format!("istiod-gateway-controller{s}-{ISTIO_NAMESPACE}");
    let reader = format!("istio-reader-clusterrole{s}-{ISTIO_NAMESPACE}");
    let subject = |name: &str| json!([{"kind": "ServiceAccount", "name": name, "namespace": ISTIO_NAMESPACE}]);
    let role_ref =
        |kind: &str, name: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name});
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": plain("istiod", v, "istiod")}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": reader, "labels": plain("istio-reader", v, "istio-reader")},
            "rules": [{"apiGroups": ["config.istio.io", "security.istio.io", "networking.istio.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": clusterrole, "labels": plain("istiod", v, "istiod")},
            "rules": [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update", "patch"]},
                      {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update"]},
                      {"apiGroups": ["networking.istio.io", "security.istio.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]}),
    ];
    if rev.minor() >= 12 {
        objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": gateway_controller, "labels": plain("istiod", v, "istiod")},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "watch", "list", "update", "patch", "create", "delete"]}]}));
    }
    objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": reader, "labels": plain("istio-reader", v, "istio-reader")},
        "roleRef": role_ref("ClusterRole", &reader), "subjects": subject("istio-reader-service-account")}));
    objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": clusterrole, "labels": plain("istiod", v, "istiod")},
        "roleRef": role_ref("ClusterRole", &clusterrole), "subjects": subject(&istiod)}));
    if rev.minor() >= 12 {
        objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": gateway_controller, "labels": plain("istiod", v, "istiod")},
            "roleRef": role_ref("ClusterRole", &gateway_controller), "subjects": subject(&istiod)}));
    }
    objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": plain("istiod", v, "istiod")},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "watch", "list", "update", "delete"]}]}));
    objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": plain("istiod", v, "istiod")},
        "roleRef": role_ref("Role", &istiod), "subjects": subject(&istiod)}));
    objects
}

/// The mesh config, the injector's values and templates, and (from 1.19) the values dump.
fn configuration(rev: &Revision, render: &Render) -> Vec<Value> {
    let s = rev.suffix();
    let istiod = rev.istiod();
    let mut global = json!({"hub": render.hub, "tag": rev.version, "istioNamespace": ISTIO_NAMESPACE,
                            "proxy": {"image": "proxyv2"}});
    if !render.variant.is_empty() {
        global["variant"] = json!(render.variant);
    }
    if !render.ca_address.is_empty() {
        global["caAddress"] = json!(render.ca_address);
    }
    let values = json!({"global": global, "revision": if rev.is_default() { "" } else { rev.name.as_str() }});
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("istio{s}"), "namespace": ISTIO_NAMESPACE, "labels": pilot(rev, &[])},
            "data": {"mesh": format!("defaultConfig:\n  discoveryAddress: {istiod}.{ISTIO_NAMESPACE}.svc:15012\nrootNamespace: {ISTIO_NAMESPACE}\ntrustDomain: cluster.local\n"),
                     "meshNetworks": "networks: {}"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("istio-sidecar-injector{s}"), "namespace": ISTIO_NAMESPACE, "labels": pilot(rev, &[])},
            "data": {"values": values.to_string(),
                     "config": "policy: enabled\nalwaysInjectSelector: []\nneverInjectSelector: []\ntemplates:\n  sidecar: |\n    # the sidecar template\n  gateway: |\n    # the gateway template\n"}}),
    ];
    if rev.minor() >= 19 {
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("values{s}"), "namespace": ISTIO_NAMESPACE, "labels": pilot(rev, &[]),
                         "annotations": {"kubernetes.io/description": "This ConfigMap contains the Helm values used during chart rendering. This ConfigMap is rendered for debugging purposes and external tooling; modifying these values has no effect."}},
            "data": {"merged-values": values.to_string(), "original-values": values.to_string()}}));
    }
    objects
}

/// The Deployment's selector: `istio: pilot` for the default revision,
/// `app` and `istio.io/rev` for another ("this avoids default deployment picking the canary").
fn selector(rev: &Revision) -> Value {
    if rev.is_default() {
        map([("istio", "pilot")])
    } else {
        map([("app", "istiod"), ("istio.io/rev", rev.name.as_str())])
    }
}

fn deployment(rev: &Revision, render: &Render) -> Value {
    let istiod = rev.istiod();
    let variant = if render.variant.is_empty() { String::new() } else { format!("-{}", render.variant) };
    let mut template_labels = map([
        ("app", "istiod"),
        ("istio.io/rev", rev.name.as_str()),
        ("sidecar.istio.io/inject", "false"),
        ("operator.istio.io/component", "Pilot"),
        ("istio", if rev.is_default() { "pilot" } else { "istiod" }),
        ("istio.io/dataplane-mode", "none"),
    ]);
    if rev.minor() >= 26 {
        template_labels["install.operator.istio.io/owning-resource"] = json!("unknown");
    }
    let template_labels = super::labels(template_labels, &rev.version, "istiod", "istiod");
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": istiod, "namespace": ISTIO_NAMESPACE, "labels": pilot(rev, &[("app", "istiod"), ("istio", "pilot")])},
    "spec": {
        "selector": {"matchLabels": selector(rev)},
        "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
        "template": {
            "metadata": {"labels": template_labels,
                         "annotations": {"prometheus.io/port": "15014", "prometheus.io/scrape": "true", "sidecar.istio.io/inject": "false"}},
            "spec": {"serviceAccountName": istiod,
                "tolerations": [{"key": "cni.istio.io/not-ready", "operator": "Exists"}],
                "containers": [{
                    "name": "discovery", "image": format!("{}/pilot:{}{variant}", render.hub, rev.version),
                    "args": ["discovery", "--monitoringAddr=:15014", "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                    "ports": [{"containerPort": 8080, "name": "http-debug", "protocol": "TCP"},
                              {"containerPort": 15010, "name": "grpc-xds", "protocol": "TCP"},
                              {"containerPort": 15012, "name": "tls-xds", "protocol": "TCP"},
                              {"containerPort": 15017, "name": "https-webhooks", "protocol": "TCP"},
                              {"containerPort": 15014, "name": "http-monitoring", "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5},
                    "env": [{"name": "REVISION", "value": rev.name}, {"name": "PILOT_CERT_PROVIDER", "value": "istiod"}],
                    "volumeMounts": [{"mountPath": "/etc/cacerts", "name": "cacerts", "readOnly": true},
                                     {"mountPath": "/var/run/secrets/tokens", "name": "istio-token", "readOnly": true}]
                }],
                "volumes": [
                    {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                    {"name": "cacerts", "secret": {"optional": true, "secretName": "cacerts"}}
                ]}
        }
    }})
}

fn service(rev: &Revision) -> Value {
    let mut ports = vec![
        json!({"name": "grpc-xds", "port": 15010, "protocol": "TCP"}),
        json!({"name": "https-dns", "port": 15012, "protocol": "TCP"}),
        json!({"name": "https-webhook", "port": 443, "protocol": "TCP", "targetPort": 15017}),
        json!({"name": "http-monitoring", "port": 15014, "protocol": "TCP"}),
    ];
    // The 1.6 chart also served DNS (53/UDP, 853); 1.7 kept 853; both gone from 1.8.
    if rev.minor() == 6 {
        ports.push(json!({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 15053}));
    }
    if rev.minor() <= 7 {
        ports.push(json!({"name": "dns-tls", "port": 853, "protocol": "TCP", "targetPort": 15053}));
    }
    let selector = if rev.is_default() {
        map([("app", "istiod"), ("istio", "pilot")])
    } else {
        map([("app", "istiod"), ("istio.io/rev", rev.name.as_str())])
    };
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": rev.istiod(), "namespace": ISTIO_NAMESPACE, "labels": pilot(rev, &[("app", "istiod"), ("istio", "pilot")])},
        "spec": {"ports": ports, "selector": selector}})
}

/// One injector webhook: pods on CREATE, to `service`'s `/inject`.
fn injection_hook(name: &str, service: &str, namespace_selector: Value, object_selector: Value) -> Value {
    json!({
        "name": name,
        "clientConfig": {"service": {"name": service, "namespace": ISTIO_NAMESPACE, "path": "/inject", "port": 443}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "reinvocationPolicy": "Never",
        "namespaceSelector": namespace_selector,
        "objectSelector": object_selector,
    })
}

/// The injector webhooks that select `selects` (a revision, or a tag) and
/// call `service`; `with_default` adds the default revision's (or the
/// `default` tag's) `namespace.`/`object.` webhooks (ISTIO-REFERENCE.md §2.1).
pub(super) fn injector_hooks(minor: u32, selects: &str, service: &str, with_default: bool) -> Value {
    let not_disabled = json!({"matchExpressions": [expression("sidecar.istio.io/inject", "NotIn", &["false"])]});
    if minor <= 9 {
        let namespace_selector = if with_default {
            json!({"matchLabels": {"istio-injection": "enabled"}})
        } else {
            json!({"matchExpressions": [expression("istio-injection", "DoesNotExist", &[]), expression("istio.io/rev", "In", &[selects])]})
        };
        let name = if minor <= 8 { "sidecar-injector.istio.io" } else { "namespace.sidecar-injector.istio.io" };
        let mut hooks = vec![injection_hook(name, service, namespace_selector, not_disabled)];
        if minor == 9 && with_default {
            hooks.push(injection_hook(
                "object.sidecar-injector.istio.io",
                service,
                json!({"matchExpressions": [expression("istio-injection", "DoesNotExist", &[]), expression("istio.io/rev", "DoesNotExist", &[])]}),
                json!({"matchExpressions": [expression("sidecar.istio.io/inject", "In", &["true"]), expression("istio.io/rev", "DoesNotExist", &[])]}),
            ));
        }
        return Value::Array(hooks);
    }
    let mut hooks = vec![
        injection_hook(
            "rev.namespace.sidecar-injector.istio.io",
            service,
            json!({"matchExpressions": [expression("istio.io/rev", "In", &[selects]), expression("istio-injection", "DoesNotExist", &[])]}),
            not_disabled.clone(),
        ),
        injection_hook(
            "rev.object.sidecar-injector.istio.io",
            service,
            json!({"matchExpressions": [expression("istio.io/rev", "DoesNotExist", &[]), expression("istio-injection", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [expression("sidecar.istio.io/inject", "NotIn", &["false"]), expression("istio.io/rev", "In", &[selects])]}),
        ),
    ];
    if with_default {
        hooks.push(injection_hook(
            "namespace.sidecar-injector.istio.io",
            service,
            json!({"matchExpressions": [expression("istio-injection", "In", &["enabled"])]}),
            not_disabled,
        ));
        hooks.push(injection_hook(
            "object.sidecar-injector.istio.io",
            service,
            json!({"matchExpressions": [expression("istio-injection", "DoesNotExist", &[]), expression("istio.io/rev", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [expression("sidecar.istio.io/inject", "In", &["true"]), expression("istio.io/rev", "DoesNotExist", &[])]}),
        ));
    }
    Value::Array(hooks)
}

fn injector(rev: &Revision) -> Value {
    let hooks = injector_hooks(rev.minor(), &rev.name, &rev.istiod(), rev.is_default());
    json!({"apiVersion": webhook_api(rev.minor()), "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": format!("istio-sidecar-injector{}", rev.suffix()), "labels": pilot(rev, &[("app", "sidecar-injector")])},
        "webhooks": hooks})
}

/// One validating webhook: Istio's config groups on CREATE and UPDATE, to `service`'s `/validate`.
pub(super) fn validation_hook(name: &str, service: &str, object_selector: Option<Value>) -> Value {
    let mut hook = json!({
        "name": name,
        "clientConfig": {"service": {"name": service, "namespace": ISTIO_NAMESPACE, "path": "/validate"}},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"],
                   "apiVersions": ["*"], "resources": ["*"]}],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let Some(selector) = object_selector {
        hook["objectSelector"] = selector;
    }
    hook
}

/// The per-revision validator of 1.11+: it validates config labelled for its revision.
fn validator(rev: &Revision) -> Value {
    let name = format!("istio-validator{}-{ISTIO_NAMESPACE}", rev.suffix());
    let selector = json!({"matchExpressions": [expression("istio.io/rev", "In", &[rev.name.as_str()])]});
    let own = map([("app", "istiod"), ("istio", "istiod"), ("istio.io/rev", rev.name.as_str()), ("release", "istio")]);
    json!({"apiVersion": webhook_api(rev.minor()), "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": labels(own, &rev.version, "istiod", "istiod")},
        "webhooks": [validation_hook("rev.validation.istio.io", &rev.istiod(), Some(selector))]})
}

fn autoscaler(rev: &Revision, render: &Render) -> Option<Value> {
    let (min, cpu, memory) = render.pilot_autoscale?;
    let target = |resource: &str, percent: u32| json!({"type": "Resource", "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}}});
    let mut metrics = vec![target("cpu", cpu)];
    metrics.extend(memory.map(|percent| target("memory", percent)));
    Some(json!({"apiVersion": render.autoscaling_api(rev.minor()), "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": rev.istiod(), "namespace": ISTIO_NAMESPACE, "labels": pilot(rev, &[("app", "istiod")])},
        "spec": {"maxReplicas": 5, "minReplicas": min, "metrics": metrics,
                 "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": rev.istiod()}}}))
}

fn disruption_budget(rev: &Revision, render: &Render) -> Value {
    let selector = if rev.is_default() {
        map([("app", "istiod"), ("istio", "pilot")])
    } else {
        map([("app", "istiod"), ("istio.io/rev", rev.name.as_str())])
    };
    json!({"apiVersion": render.pdb_api(rev.minor()), "kind": "PodDisruptionBudget",
        "metadata": {"name": rev.istiod(), "namespace": ISTIO_NAMESPACE, "labels": pilot(rev, &[("app", "istiod"), ("istio", "pilot")])},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}})
}
