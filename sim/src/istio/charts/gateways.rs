//! The gateways chart as istioctl renders it (components `IngressGateways`
//! and `EgressGateways`): a Deployment whose own template carries the
//! proxy, with the image and the control plane's address written in (it is
//! not injected), its Service and account.

use serde_json::{Value, json};

use super::{ISTIO_NAMESPACE, Render, Revision, labels, map};

/// Ingress or egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    /// `istio: ingressgateway`, component `IngressGateways`.
    Ingress,
    /// `istio: egressgateway`, component `EgressGateways`.
    Egress,
}

impl GatewayKind {
    fn istio(self) -> &'static str {
        match self {
            Self::Ingress => "ingressgateway",
            Self::Egress => "egressgateway",
        }
    }

    fn component(self) -> &'static str {
        match self {
            Self::Ingress => "IngressGateways",
            Self::Egress => "EgressGateways",
        }
    }

    fn chart(self) -> &'static str {
        match self {
            Self::Ingress => "istio-ingress",
            Self::Egress => "istio-egress",
        }
    }

    fn app(self) -> &'static str {
        match self {
            Self::Ingress => "istio-ingressgateway",
            Self::Egress => "istio-egressgateway",
        }
    }
}

/// Gateway `name` of revision `rev`: its account, Deployment and Service.
///
/// 1.6 gateways carry no revision or component label (ISTIO-REFERENCE.md
/// §9); later ones carry both, and from 1.26 the owner too. Every gateway
/// of a kind shares its `app` and `istio` labels (and so its selector),
/// whatever its name.
#[must_use]
pub fn gateway(kind: GatewayKind, name: &str, rev: &Revision, render: &Render) -> Vec<Value> {
    let version = rev.version.as_str();
    let mut own = map([("app", kind.app()), ("istio", kind.istio()), ("release", "istio")]);
    if rev.minor() >= 7 {
        own["istio.io/rev"] = json!(rev.name);
        own["operator.istio.io/component"] = json!(kind.component());
    }
    if rev.minor() >= 26 {
        own["install.operator.istio.io/owning-resource"] = json!("unknown");
    }
    let object_labels = labels(own.clone(), version, kind.chart(), kind.app());
    let mut deployment_labels = object_labels.clone();
    if rev.minor() >= 24 {
        deployment_labels["istio.io/dataplane-mode"] = json!("none");
    }
    let account = format!("{name}-service-account");
    let selector = map([("app", kind.app()), ("istio", kind.istio())]);
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": ISTIO_NAMESPACE, "labels": object_labels.clone()}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ISTIO_NAMESPACE, "labels": deployment_labels},
            "spec": {"selector": {"matchLabels": selector},
                "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
                "template": template(kind, name, rev, render, own)}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ISTIO_NAMESPACE, "labels": object_labels.clone()},
            "spec": {"type": if kind == GatewayKind::Ingress { "LoadBalancer" } else { "ClusterIP" }, "selector": selector,
                     "ports": ports(kind)}}),
    ];
    if let Some((min, cpu, memory)) = render.gateway_autoscale {
        let target = |resource: &str, percent: u32| json!({"type": "Resource", "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}}});
        let mut metrics = vec![target("cpu", cpu)];
        metrics.extend(memory.map(|percent| target("memory", percent)));
        objects.push(json!({"apiVersion": render.autoscaling_api(rev.minor()), "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ISTIO_NAMESPACE, "labels": object_labels},
            "spec": {"maxReplicas": 5, "minReplicas": min, "metrics": metrics,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}}}));
    }
    if render.gateway_pdb {
        objects.push(json!({"apiVersion": render.pdb_api(rev.minor()), "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ISTIO_NAMESPACE, "labels": object_labels},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}}));
    }
    objects
}

fn template(kind: GatewayKind, name: &str, rev: &Revision, render: &Render, own: Value) -> Value {
    let mut template_labels = own;
    template_labels["chart"] = json!("gateways");
    template_labels["heritage"] = json!("Tiller");
    template_labels["service.istio.io/canonical-name"] = json!(name);
    template_labels["service.istio.io/canonical-revision"] = json!("latest");
    template_labels["sidecar.istio.io/inject"] = json!("false");
    if rev.minor() >= 24 {
        template_labels["istio.io/dataplane-mode"] = json!("none");
    }
    let template_labels = labels(template_labels, &rev.version, kind.chart(), kind.app());
    let mut annotations = json!({"prometheus.io/path": "/stats/prometheus", "prometheus.io/port": "15020", "prometheus.io/scrape": "true", "sidecar.istio.io/inject": "false"});
    if rev.minor() >= 18 {
        annotations["istio.io/rev"] = json!(rev.name);
    }
    let variant = if render.variant.is_empty() { String::new() } else { format!("-{}", render.variant) };
    let ca_address = if render.ca_address.is_empty() {
        format!("{}.{ISTIO_NAMESPACE}.svc:15012", rev.istiod())
    } else {
        render.ca_address.clone()
    };
    json!({"metadata": {"labels": template_labels, "annotations": annotations},
        "spec": {"serviceAccountName": format!("{name}-service-account"), "containers": [{
            "name": "istio-proxy", "image": format!("{}/proxyv2:{}{variant}", render.hub, rev.version),
            "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
            "ports": [{"containerPort": 15021, "protocol": "TCP"}, {"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 8443, "protocol": "TCP"}],
            "env": [{"name": "PILOT_CERT_PROVIDER", "value": "istiod"}, {"name": "CA_ADDR", "value": ca_address},
                    {"name": "ISTIO_META_WORKLOAD_NAME", "value": name}],
            "volumeMounts": [{"mountPath": "/etc/istio/config", "name": "config-volume"}]
        }],
        "volumes": [{"name": "config-volume", "configMap": {"name": format!("istio{}", rev.suffix()), "optional": true}}]}})
}

fn ports(kind: GatewayKind) -> Value {
    match kind {
        GatewayKind::Ingress => json!([
            {"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
            {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]),
        GatewayKind::Egress => json!([
            {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]),
    }
}
