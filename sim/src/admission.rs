//! Admission as a cluster with Istio does it: mutating webhooks inject
//! sidecars into new pods, validating webhooks check Istio config.
//!
//! Nothing here knows which revisions are "installed": it reads the webhook
//! configurations present, calls the Service each webhook names, and that
//! Service answers only if a ready istiod pod is behind it. The istiod
//! that answers injects as its revision's injector ConfigMap says. The
//! rules come from ISTIO-REFERENCE.md §2.1 and §4.

use serde_json::{Value, json};

use crate::cluster::State;
use crate::object;
use crate::selector::LabelSelector;
use crate::status::ApiError;

/// Namespaces istiod never injects into (ISTIO-REFERENCE.md §4.2).
const IGNORED_NAMESPACES: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"];
pub(crate) const ISTIO_NAMESPACE: &str = "istio-system";

/// The istiod that answered a webhook call, and how it injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Istiod {
    /// Its revision (`default` for a non-revisioned install).
    pub revision: String,
    /// Image hub (`docker.io/istio`).
    pub hub: String,
    /// Proxy image tag: the Istio version (`1.6.8`).
    pub tag: String,
}

impl Istiod {
    /// The minor version (`6` for 1.6.8), for version-dependent behaviour.
    #[must_use]
    pub fn minor(&self) -> u32 {
        minor_of(&self.tag)
    }

    /// The address its proxies connect to.
    #[must_use]
    pub fn discovery_address(&self) -> String {
        format!("{}.{ISTIO_NAMESPACE}.svc:15012", service_name(&self.revision))
    }
}

/// `1.6.8` -> 6.
#[must_use]
pub fn minor_of(version: &str) -> u32 {
    version.split('.').nth(1).and_then(|minor| minor.parse().ok()).unwrap_or(0)
}

/// `istiod` for the default revision, `istiod-<rev>` otherwise.
#[must_use]
pub fn service_name(revision: &str) -> String {
    if revision == "default" { "istiod".into() } else { format!("istiod-{revision}") }
}

/// Ready pods behind Service `namespace/name`: its endpoints.
#[must_use]
pub fn endpoints<'a>(state: &'a State, namespace: &'a str, name: &str) -> Vec<&'a Value> {
    let Some(service) = state.get("", "services", namespace, name) else { return Vec::new() };
    let Some(selector) = service.pointer("/spec/selector").and_then(Value::as_object).filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    state
        .in_namespace("", "pods", namespace)
        .filter(|pod| selector.iter().all(|(key, value)| object::labels(pod).and_then(|l| l.get(key)) == Some(value)))
        .filter(|pod| pod_ready(pod))
        .collect()
}

/// The istiod Services of the istio namespace ([`service_name`] of some
/// revision) with a ready pod behind them: what every proxy's readiness
/// depends on. A gateway's Service is not one: its pods coming and going
/// in a rollout connect or disconnect no proxy.
#[must_use]
pub fn connected_services(state: &State) -> Vec<String> {
    state
        .in_namespace("", "services", ISTIO_NAMESPACE)
        .map(object::name)
        .filter(|name| *name == "istiod" || name.starts_with("istiod-"))
        .filter(|name| !endpoints(state, ISTIO_NAMESPACE, name).is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a pod reports Ready.
#[must_use]
pub fn pod_ready(pod: &Value) -> bool {
    pod.get("status")
        .and_then(|status| status.get("conditions"))
        .and_then(Value::as_array)
        .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The istiod answering on Service `namespace/name`, if any pod is ready behind it.
#[must_use]
pub fn istiod_behind(state: &State, namespace: &str, name: &str) -> Option<Istiod> {
    let pod = endpoints(state, namespace, name).into_iter().next()?;
    let revision = object::label(pod, "istio.io/rev").unwrap_or("default").to_string();
    Some(istiod_of_revision(state, &revision, pod))
}

/// How revision `revision` injects: its injector ConfigMap's values, else
/// the istiod pod's own image tag.
fn istiod_of_revision(state: &State, revision: &str, pod: &Value) -> Istiod {
    let config_map = if revision == "default" {
        "istio-sidecar-injector".to_string()
    } else {
        format!("istio-sidecar-injector-{revision}")
    };
    let values: Value = state
        .get("", "configmaps", ISTIO_NAMESPACE, &config_map)
        .and_then(|cm| cm.pointer("/data/values"))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    let image =
        pod.pointer("/spec/containers/0/image").and_then(Value::as_str).unwrap_or("docker.io/istio/pilot:unknown");
    let (image_hub, image_tag) = image.rsplit_once(':').unwrap_or((image, "unknown"));
    let hub = values
        .pointer("/global/hub")
        .and_then(Value::as_str)
        .map_or_else(|| image_hub.trim_end_matches("/pilot").to_string(), str::to_string);
    let tag = values.pointer("/global/tag").and_then(Value::as_str).unwrap_or(image_tag).to_string();
    Istiod { revision: revision.to_string(), hub, tag }
}

/// Whether a webhook's `rules` cover `operation` on `group`/`resource`.
fn rules_match(webhook: &Value, group: &str, resource: &str, operation: &str) -> bool {
    let listed = |rule: &Value, field: &str, wanted: &str| {
        rule.get(field)
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().any(|item| item == "*" || item == wanted))
    };
    webhook.get("rules").and_then(Value::as_array).into_iter().flatten().any(|rule| {
        listed(rule, "operations", operation) && listed(rule, "apiGroups", group) && listed(rule, "resources", resource)
    })
}

/// Whether a webhook's namespace and object selectors match.
fn selectors_match(webhook: &Value, namespace: Option<&Value>, object: &Value) -> Result<bool, ApiError> {
    let parse =
        |field: &str| LabelSelector::from_json(webhook.get(field).unwrap_or(&Value::Null)).map_err(ApiError::internal);
    let namespace_labels = namespace.and_then(object::labels);
    Ok(parse("namespaceSelector")?.matches(namespace_labels)
        && parse("objectSelector")?.matches(object::labels(object)))
}

/// Webhook configurations of a kind, by name order (the order the API server calls them).
fn configurations<'a>(state: &'a State, plural: &str) -> Vec<&'a Value> {
    let mut out: Vec<&Value> = state.all("admissionregistration.k8s.io", plural).collect();
    out.sort_by(|a, b| object::name(a).cmp(object::name(b)));
    out
}

fn unreachable_webhook(webhook: &Value) -> ApiError {
    let name = webhook.get("name").and_then(Value::as_str).unwrap_or_default();
    let service = webhook.pointer("/clientConfig/service/name").and_then(Value::as_str).unwrap_or_default();
    let namespace =
        webhook.pointer("/clientConfig/service/namespace").and_then(Value::as_str).unwrap_or(ISTIO_NAMESPACE);
    let path = webhook.pointer("/clientConfig/service/path").and_then(Value::as_str).unwrap_or("/");
    ApiError::internal(format!(
        "failed calling webhook \"{name}\": failed to call webhook: Post \"https://{service}.{namespace}.svc:443{path}?timeout=10s\": no endpoints available for service \"{service}\""
    ))
}

/// Runs the mutating webhooks on a new pod. A pod already injected is left
/// alone (istiod skips it), which is why two matching webhooks inject once.
pub fn admit_pod(state: &State, pod: Value) -> Result<Value, ApiError> {
    if object::annotation(&pod, "sidecar.istio.io/status").is_some() {
        return Ok(pod);
    }
    let namespace = state.get("", "namespaces", "", object::namespace(&pod));
    for configuration in configurations(state, "mutatingwebhookconfigurations") {
        for webhook in configuration.get("webhooks").and_then(Value::as_array).into_iter().flatten() {
            if !rules_match(webhook, "", "pods", "CREATE") || !selectors_match(webhook, namespace, &pod)? {
                continue;
            }
            let service_namespace =
                webhook.pointer("/clientConfig/service/namespace").and_then(Value::as_str).unwrap_or(ISTIO_NAMESPACE);
            let service = webhook.pointer("/clientConfig/service/name").and_then(Value::as_str).unwrap_or_default();
            match istiod_behind(state, service_namespace, service) {
                Some(istiod) if injection_required(&pod) => return Ok(inject(pod, &istiod)),
                Some(_) => return Ok(pod),
                None if webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") => {}
                None => return Err(unreachable_webhook(webhook)),
            }
        }
    }
    Ok(pod)
}

/// istiod's `injectRequired` (ISTIO-REFERENCE.md §4.2), with the default policy `enabled`.
fn injection_required(pod: &Value) -> bool {
    if pod.pointer("/spec/hostNetwork") == Some(&json!(true)) || IGNORED_NAMESPACES.contains(&object::namespace(pod)) {
        return false;
    }
    let choice =
        object::label(pod, "sidecar.istio.io/inject").or_else(|| object::annotation(pod, "sidecar.istio.io/inject"));
    !matches!(choice.map(str::to_ascii_lowercase).as_deref(), Some("false" | "n" | "no" | "off"))
}

/// Adds the sidecar as revision `istiod` injects it, version by version:
/// the `revision` field of `sidecar.istio.io/status` from 1.11, the
/// `istio.io/rev` annotation from 1.18, the `istio.io/rev` pod label only
/// in 1.6 to 1.10 (ISTIO-REFERENCE.md §4.4).
#[must_use]
pub fn inject(mut pod: Value, istiod: &Istiod) -> Value {
    let image = format!("{}/proxyv2:{}", istiod.hub, istiod.tag);
    let discovery = istiod.discovery_address();
    let proxy_config = json!({ "discoveryAddress": discovery }).to_string();
    let proxy = json!({
        "name": "istio-proxy",
        "image": image,
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
        "env": [
            {"name": "CA_ADDR", "value": discovery},
            {"name": "PROXY_CONFIG", "value": proxy_config},
            {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"}
        ],
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}
    });
    let init = json!({"name": "istio-init", "image": image, "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337"]});
    let spec = pod.get_mut("spec").and_then(Value::as_object_mut).expect("admitted pods have a spec");
    push(spec, "initContainers", init);
    push(spec, "containers", proxy);
    let mut status = json!({
        "initContainers": ["istio-init"],
        "containers": ["istio-proxy"],
        "volumes": ["istio-envoy", "istio-data", "istio-podinfo", "istiod-ca-cert"],
        "imagePullSecrets": null
    });
    if istiod.minor() >= 11 {
        status["revision"] = json!(istiod.revision);
    }
    let annotations = object::metadata_map_mut(&mut pod, "annotations");
    annotations.insert("sidecar.istio.io/status".into(), json!(status.to_string()));
    if istiod.minor() >= 18 {
        annotations.insert("istio.io/rev".into(), json!(istiod.revision));
    }
    let app = object::label(&pod, "app").unwrap_or_else(|| object::name(&pod)).to_string();
    let version = object::label(&pod, "version").unwrap_or("latest").to_string();
    let labels = object::metadata_map_mut(&mut pod, "labels");
    labels.insert("security.istio.io/tlsMode".into(), json!("istio"));
    labels.insert("service.istio.io/canonical-name".into(), json!(app));
    labels.insert("service.istio.io/canonical-revision".into(), json!(version));
    if (6..=10).contains(&istiod.minor()) {
        labels.insert("istio.io/rev".into(), json!(istiod.revision));
    }
    pod
}

fn push(spec: &mut serde_json::Map<String, Value>, field: &str, item: Value) {
    let list = spec.entry(field).or_insert_with(|| json!([]));
    if let Some(items) = list.as_array_mut() {
        items.retain(|existing| existing.get("name") != item.get("name"));
        items.push(item);
    }
}

/// The Service an injected (or gateway) pod's proxy connects to, from its
/// `CA_ADDR`: `istiod-1-6-8` for `istiod-1-6-8.istio-system.svc:15012`.
#[must_use]
pub fn proxy_service(pod: &Value) -> Option<&str> {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array)?;
    let proxy = containers.iter().find(|c| c["name"] == "istio-proxy")?;
    let env = proxy.get("env").and_then(Value::as_array)?;
    let address = env.iter().find(|e| e["name"] == "CA_ADDR")?.get("value").and_then(Value::as_str)?;
    address.split('.').next()
}

/// A gateway pod (`istio: ingressgateway`/`egressgateway`) runs the proxy
/// of the revision its `istio.io/rev` label names, or the default one: the
/// gateway injection template fills in `image: auto` and the control-plane
/// address.
#[must_use]
pub fn gateway_pod(state: &State, mut pod: Value) -> Value {
    let revision = object::label(&pod, "istio.io/rev").unwrap_or("default").to_string();
    let service = service_name(&revision);
    let istiod = match istiod_behind(state, ISTIO_NAMESPACE, &service) {
        Some(istiod) => istiod,
        None => match state.get("apps", "deployments", ISTIO_NAMESPACE, &service) {
            // Not ready: the pod is still made; it will not become ready.
            Some(deployment) => {
                let template = deployment.pointer("/spec/template").cloned().unwrap_or(Value::Null);
                istiod_of_revision(state, &revision, &template)
            }
            None => return pod,
        },
    };
    let discovery = istiod.discovery_address();
    if let Some(containers) = pod.pointer_mut("/spec/containers").and_then(Value::as_array_mut) {
        for container in containers.iter_mut().filter(|c| c["name"] == "istio-proxy") {
            if container.get("image").and_then(Value::as_str).is_none_or(|image| image == "auto") {
                container["image"] = json!(format!("{}/proxyv2:{}", istiod.hub, istiod.tag));
            }
            let env =
                container.as_object_mut().expect("a container is an object").entry("env").or_insert_with(|| json!([]));
            if let Some(env) = env.as_array_mut() {
                env.retain(|e| e["name"] != "CA_ADDR");
                env.push(json!({"name": "CA_ADDR", "value": discovery}));
            }
        }
    }
    pod
}

/// Whether a workload template is an Istio gateway's.
#[must_use]
pub fn is_gateway_template(template: &Value) -> bool {
    matches!(
        template.pointer("/metadata/labels/istio").and_then(Value::as_str),
        Some("ingressgateway" | "egressgateway")
    )
}

/// Runs the validating webhooks on Istio config (`networking.istio.io`).
pub fn validate_istio_config(state: &State, resource: &str, object: &Value, operation: &str) -> Result<(), ApiError> {
    let namespace = state.get("", "namespaces", "", object::namespace(object));
    for configuration in configurations(state, "validatingwebhookconfigurations") {
        for webhook in configuration.get("webhooks").and_then(Value::as_array).into_iter().flatten() {
            if !rules_match(webhook, "networking.istio.io", resource, operation)
                || !selectors_match(webhook, namespace, object)?
            {
                continue;
            }
            let service_namespace =
                webhook.pointer("/clientConfig/service/namespace").and_then(Value::as_str).unwrap_or(ISTIO_NAMESPACE);
            let service = webhook.pointer("/clientConfig/service/name").and_then(Value::as_str).unwrap_or_default();
            if istiod_behind(state, service_namespace, service).is_none() {
                if webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
                    continue;
                }
                return Err(unreachable_webhook(webhook));
            }
            if let Some(why) = config_problem(resource, object) {
                let name = webhook.get("name").and_then(Value::as_str).unwrap_or("validation.istio.io");
                return Err(ApiError::bad_request(format!(
                    "admission webhook \"{name}\" denied the request: configuration is invalid: {why}"
                )));
            }
        }
    }
    Ok(())
}

/// The checks istiod makes that the simulator knows.
fn config_problem(resource: &str, object: &Value) -> Option<&'static str> {
    match resource {
        "virtualservices" => {
            let hosts = object.pointer("/spec/hosts").and_then(Value::as_array);
            hosts.is_none_or(Vec::is_empty).then_some("virtual service must have at least one host")
        }
        "destinationrules" => {
            let host = object.pointer("/spec/host").and_then(Value::as_str);
            host.is_none_or(str::is_empty).then_some("host must be a valid FQDN or wildcard")
        }
        _ => None,
    }
}
