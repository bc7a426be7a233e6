//! istiod, as the API server and the kubelet meet it: the program behind
//! every istiod Service. It answers the injector webhooks (`/inject`) and
//! the validating ones (`/validate`), and its proxies are ready while it
//! answers. Nothing here knows which revisions are "installed": the API
//! server calls whichever ready pod is behind a webhook's Service, and
//! that pod injects as its revision's injector ConfigMap says. The rules
//! come from ISTIO-REFERENCE.md §2.1 and §4.

use serde_json::{Value, json};

use crate::kube::object;
use crate::kube::state::{ReadinessGates, ServiceKey, State};
use crate::kube::webhooks::{Call, Programs};

use super::version::minor_of;

/// Where Istio's control plane lives.
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// Namespaces istiod never injects into (ISTIO-REFERENCE.md §4.2).
const IGNORED_NAMESPACES: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"];

/// The programs of a cluster running Istio: istiod behind its Services.
#[derive(Debug, Default)]
pub struct IstioPrograms;

impl Programs for IstioPrograms {
    fn admit(&self, state: &State, call: &Call<'_>, object: Value) -> Result<Value, String> {
        if !is_istiod(call.endpoint) {
            return Ok(object); // some other program: it accepts everything
        }
        let istiod = Istiod::of(state, call.endpoint);
        if call.path.starts_with("/inject") {
            if call.resource.plural != "pods" || call.operation != "CREATE" {
                return Ok(object);
            }
            return Ok(istiod.inject(state, object));
        }
        if call.path.starts_with("/validate") {
            return match config_problem(call.resource.plural, &object) {
                Some(why) => Err(format!("configuration is invalid: {why}")),
                None => Ok(object),
            };
        }
        Ok(object)
    }

    fn serve(&self, _: &State, _: &Value, _: u16, _: &str) -> Option<(u16, Value)> {
        None
    }
}

impl ReadinessGates for IstioPrograms {
    fn readiness_follows(&self, pod: &Value) -> Option<ServiceKey> {
        control_plane_of(pod)
    }
}

/// Whether a pod runs istiod (pilot-discovery).
fn is_istiod(pod: &Value) -> bool {
    object::label(pod, "app") == Some("istiod")
}

/// The istiod that answered, and how its revision injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Istiod {
    /// Its revision (`default` for a non-revisioned install).
    pub revision: String,
    /// The injector's values (`global.hub`, `global.tag`, ...), as its ConfigMap holds them.
    values: Value,
    /// Its image's tag, when the values name none.
    image_tag: String,
    /// Its image's registry path (`docker.io/istio`), when the values name none.
    image_hub: String,
}

impl Istiod {
    /// The istiod running in `pod`: its revision from the pod's
    /// `istio.io/rev` label, its injection from that revision's injector ConfigMap.
    #[must_use]
    pub fn of(state: &State, pod: &Value) -> Self {
        let revision = object::label(pod, "istio.io/rev").unwrap_or("default").to_string();
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
        let image = pod.pointer("/spec/containers/0/image").and_then(Value::as_str).unwrap_or("docker.io/istio/pilot");
        let (path, tag) = split_image(image);
        Self {
            revision,
            values,
            image_tag: tag.unwrap_or("unknown").to_string(),
            image_hub: path.rsplit_once('/').map_or(path, |(hub, _)| hub).to_string(),
        }
    }

    /// The minor version (`6` for 1.6.8), for version-dependent behaviour.
    #[must_use]
    pub fn minor(&self) -> u32 {
        minor_of(&self.tag())
    }

    fn value(&self, pointer: &str) -> Option<&str> {
        self.values.pointer(pointer).and_then(Value::as_str).filter(|text| !text.is_empty())
    }

    /// The Istio version its proxies run (`global.tag`).
    fn tag(&self) -> String {
        self.value("/global/tag").map_or_else(|| self.image_tag.clone(), str::to_string)
    }

    /// The proxy image its injection template fills in: `global.proxy.image`
    /// whole if it names a registry, else `<hub>/<image>:<tag>[-<variant>]`
    /// (the chart's `ProxyImage`).
    #[must_use]
    pub fn proxy_image(&self) -> String {
        let image = self.value("/global/proxy/image").unwrap_or("proxyv2");
        if image.contains('/') {
            return image.to_string();
        }
        let hub = self.value("/global/hub").map_or_else(|| self.image_hub.clone(), str::to_string);
        let variant = self.value("/global/variant").map(|v| format!("-{v}")).unwrap_or_default();
        format!("{hub}/{image}:{}{variant}", self.tag())
    }

    /// The address its proxies get their configuration from.
    #[must_use]
    pub fn discovery_address(&self) -> String {
        format!("{}.{ISTIO_NAMESPACE}.svc:15012", service_name(&self.revision))
    }

    /// The address its proxies get certificates from: `global.caAddress`
    /// when set (an external CA), else istiod itself.
    fn ca_address(&self) -> String {
        self.value("/global/caAddress").map_or_else(|| self.discovery_address(), str::to_string)
    }

    /// Injects `pod` unless it is injected already (istiod skips a pod with
    /// a sidecar status, which is why two matching webhooks inject once) or
    /// asks not to be.
    fn inject(&self, state: &State, pod: Value) -> Value {
        if object::annotation(&pod, "sidecar.istio.io/status").is_some() || !injection_required(&pod) {
            return pod;
        }
        let namespace_exists = state.get("", "namespaces", "", object::namespace(&pod)).is_some();
        if !namespace_exists {
            return pod;
        }
        if object::annotation(&pod, "inject.istio.io/templates") == Some("gateway") {
            return self.inject_gateway(pod);
        }
        self.inject_sidecar(pod)
    }

    fn proxy_env(&self) -> Value {
        let proxy_config = json!({ "discoveryAddress": self.discovery_address() }).to_string();
        json!([
            {"name": "CA_ADDR", "value": self.ca_address()},
            {"name": "PROXY_CONFIG", "value": proxy_config},
            {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"}
        ])
    }

    /// The sidecar template: an init container and the proxy beside the app.
    fn inject_sidecar(&self, mut pod: Value) -> Value {
        let image = self.proxy_image();
        let proxy = json!({
            "name": "istio-proxy",
            "image": image,
            "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
            "env": self.proxy_env(),
            "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}
        });
        let init = json!({"name": "istio-init", "image": image, "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337"]});
        let spec = pod.get_mut("spec").and_then(Value::as_object_mut).expect("admitted pods have a spec");
        push(spec, "initContainers", init);
        push(spec, "containers", proxy);
        self.mark(&mut pod, &["istio-init"], &["istio-proxy"]);
        pod
    }

    /// The gateway template: the Deployment brings its own `istio-proxy`
    /// container (`image: auto`), which the template completes.
    fn inject_gateway(&self, mut pod: Value) -> Value {
        let image = self.proxy_image();
        let env = self.proxy_env();
        for container in pod.pointer_mut("/spec/containers").and_then(Value::as_array_mut).into_iter().flatten() {
            if container["name"] != "istio-proxy" {
                continue;
            }
            if container.get("image").and_then(Value::as_str).is_none_or(|image| image == "auto") {
                container["image"] = json!(image);
            }
            let mut merged: Vec<Value> = container.get("env").and_then(Value::as_array).cloned().unwrap_or_default();
            for variable in env.as_array().into_iter().flatten() {
                merged.retain(|existing| existing["name"] != variable["name"]);
                merged.push(variable.clone());
            }
            container["env"] = Value::Array(merged);
        }
        self.mark(&mut pod, &[], &["istio-proxy"]);
        pod
    }

    /// The marks injection leaves, version by version: the `revision` field
    /// of `sidecar.istio.io/status` from 1.11, the `istio.io/rev` annotation
    /// from 1.18, the `istio.io/rev` pod label only in 1.6 to 1.10
    /// (ISTIO-REFERENCE.md §4.4).
    fn mark(&self, pod: &mut Value, init: &[&str], containers: &[&str]) {
        let mut status = json!({
            "initContainers": init,
            "containers": containers,
            "volumes": ["istio-envoy", "istio-data", "istio-podinfo", "istiod-ca-cert"],
            "imagePullSecrets": null
        });
        if self.minor() >= 11 {
            status["revision"] = json!(self.revision);
        }
        let annotations = object::metadata_map_mut(pod, "annotations");
        annotations.insert("sidecar.istio.io/status".into(), json!(status.to_string()));
        if self.minor() >= 18 {
            annotations.insert("istio.io/rev".into(), json!(self.revision));
        }
        let app = object::label(pod, "app").unwrap_or_else(|| object::name(pod)).to_string();
        let version = object::label(pod, "version").unwrap_or("latest").to_string();
        let labels = object::metadata_map_mut(pod, "labels");
        labels.insert("security.istio.io/tlsMode".into(), json!("istio"));
        labels.entry("service.istio.io/canonical-name").or_insert(json!(app));
        labels.entry("service.istio.io/canonical-revision").or_insert(json!(version));
        if (6..=10).contains(&self.minor()) {
            labels.insert("istio.io/rev".into(), json!(self.revision));
        }
    }
}

/// `istiod` for the default revision, `istiod-<rev>` otherwise.
#[must_use]
pub fn service_name(revision: &str) -> String {
    if revision == "default" { "istiod".into() } else { format!("istiod-{revision}") }
}

/// `registry:5000/istio/proxyv2:1.28.0-distroless@sha256:...` ->
/// (`registry:5000/istio/proxyv2`, Some(`1.28.0-distroless`)); a digest
/// alone has no tag.
#[must_use]
pub fn split_image(image: &str) -> (&str, Option<&str>) {
    let named = image.split_once('@').map_or(image, |(named, _)| named);
    let last_slash = named.rfind('/').map_or(0, |at| at + 1);
    match named[last_slash..].rfind(':') {
        Some(at) => (&named[..last_slash + at], Some(&named[last_slash + at + 1..])),
        None => (named, None),
    }
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

fn push(spec: &mut serde_json::Map<String, Value>, field: &str, item: Value) {
    let list = spec.entry(field).or_insert_with(|| json!([]));
    if let Some(items) = list.as_array_mut() {
        items.retain(|existing| existing.get("name") != item.get("name"));
        items.push(item);
    }
}

/// The istiod Service a pod's proxy gets its configuration from: the
/// `discoveryAddress` of its `PROXY_CONFIG`, else its `CA_ADDR` when that
/// names an istiod (a gateway Deployment writes it into its own template;
/// with `global.caAddress` set it names another CA and says nothing).
#[must_use]
pub fn control_plane_of(pod: &Value) -> Option<ServiceKey> {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array)?;
    let proxy = containers.iter().find(|c| c["name"] == "istio-proxy")?;
    let env = proxy.get("env").and_then(Value::as_array)?;
    let variable = |name: &str| env.iter().find(|e| e["name"] == name)?.get("value").and_then(Value::as_str);
    let discovery = variable("PROXY_CONFIG")
        .and_then(|config| serde_json::from_str::<Value>(config).ok())
        .and_then(|config| config.get("discoveryAddress").and_then(Value::as_str).map(str::to_string));
    let address = discovery.or_else(|| variable("CA_ADDR").map(str::to_string))?;
    let mut host = address.split(':').next()?.split('.');
    let (name, namespace) = (host.next()?, host.next().unwrap_or(ISTIO_NAMESPACE));
    (name == "istiod" || name.starts_with("istiod-")).then(|| (namespace.to_string(), name.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_at_their_tag_not_at_a_registry_port() {
        assert_eq!(split_image("docker.io/istio/proxyv2:1.28.0"), ("docker.io/istio/proxyv2", Some("1.28.0")));
        assert_eq!(
            split_image("registry.corp:5000/mesh/proxyv2:1.28.0-distroless"),
            ("registry.corp:5000/mesh/proxyv2", Some("1.28.0-distroless"))
        );
        assert_eq!(
            split_image("registry.corp:5000/mesh/proxyv2@sha256:abcd"),
            ("registry.corp:5000/mesh/proxyv2", None)
        );
        assert_eq!(split_image("proxyv2:1.6.8@sha256:abcd"), ("proxyv2", Some("1.6.8")));
    }

    #[test]
    fn a_proxy_follows_its_discovery_address_and_a_ca_address_only_when_it_is_istiod() {
        let pod = |env: Value| json!({"spec": {"containers": [{"name": "istio-proxy", "env": env}]}});
        let config = json!({"discoveryAddress": "istiod-1-28-0.istio-system.svc:15012"}).to_string();
        let external_ca = json!([{"name": "CA_ADDR", "value": "cert-manager-istio-csr.cert-manager.svc:443"},
                                 {"name": "PROXY_CONFIG", "value": config}]);
        assert_eq!(control_plane_of(&pod(external_ca)), Some(("istio-system".into(), "istiod-1-28-0".into())));
        let gateway = json!([{"name": "CA_ADDR", "value": "istiod.istio-system.svc:15012"}]);
        assert_eq!(control_plane_of(&pod(gateway)), Some(("istio-system".into(), "istiod".into())));
        let elsewhere = json!([{"name": "CA_ADDR", "value": "cert-manager-istio-csr.cert-manager.svc:443"}]);
        assert_eq!(control_plane_of(&pod(elsewhere)), None);
    }
}
