//! What Istio's charts render, version by version: the objects of a
//! control-plane revision (`istioctl manifest generate --set revision=R`,
//! or `helm template istiod`), its gateways, the shared base, the
//! node-level CNI and ztunnel DaemonSets, and revision tags.
//!
//! Labels are exactly what the templates set, no more and no less: the
//! installer adds its own when it applies ([`super::installer`]). Names,
//! labels, selectors and API versions follow ISTIO-REFERENCE.md §2 and the
//! charts themselves (istio/istio `manifests/charts`, sail-operator
//! `resources/<version>/charts`):
//! - one injector webhook in 1.6-1.8, `namespace.`/`object.` in 1.9,
//!   `rev.namespace.`/`rev.object.` from 1.10;
//! - the shared validating webhook `istiod-istio-system` of the base chart
//!   up to 1.10, a validator per revision from 1.11, the default tag and
//!   `istiod-default-validator` from 1.12;
//! - Helm's standard labels (`app.kubernetes.io/*`, `helm.sh/chart`) from
//!   1.24 (present in the 1.24.0 chart, absent from 1.21.6's), and
//!   `install.operator.istio.io/owning-resource: unknown` on Pilot's
//!   objects from 1.26 (absent from 1.24.0's Deployment, present in the
//!   current golden files) [INFERRED boundary];
//! - API versions as each chart picks them for the cluster it renders for
//!   (`autoscaling/v2` from Kubernetes 1.23, `policy/v1` from 1.21).

mod base;
mod discovery;
mod gateways;
mod node;
mod tags;

use serde_json::{Map, Value, json};

pub use self::base::{base, crds, operator};
pub use self::discovery::discovery;
pub use self::gateways::{GatewayKind, gateway};
pub use self::node::{cni, ztunnel};
pub use self::tags::revision_tag;
use super::version::minor_of;
use crate::kube::resources::KubeVersion;

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

    /// Its istiod Deployment and Service: `istiod` or `istiod-<rev>`.
    #[must_use]
    pub fn istiod(&self) -> String {
        format!("istiod{}", self.suffix())
    }
}

/// What a render is for: the chart's version and the cluster's Kubernetes
/// (charts pick API versions by what the cluster serves), and the values
/// that change what the simulator's tests look at.
#[derive(Debug, Clone)]
pub struct Render {
    /// The Kubernetes release the objects are rendered for.
    pub kube: KubeVersion,
    /// Image hub (`global.hub`).
    pub hub: String,
    /// Image variant (`global.variant`: `distroless`, `debug`); empty for none.
    pub variant: String,
    /// An external CA's address (`global.caAddress`); empty for istiod's own.
    pub ca_address: String,
    /// istiod's HorizontalPodAutoscaler: (minReplicas, cpu %, memory %), or none.
    pub pilot_autoscale: Option<(u32, u32, Option<u32>)>,
    /// istiod's PodDisruptionBudget (`maxUnavailable: 1`).
    pub pilot_pdb: bool,
    /// Each gateway's HorizontalPodAutoscaler: (minReplicas, cpu %, memory %), or none.
    pub gateway_autoscale: Option<(u32, u32, Option<u32>)>,
    /// Each gateway's PodDisruptionBudget (`maxUnavailable: 1`).
    pub gateway_pdb: bool,
}

impl Default for Render {
    fn default() -> Self {
        Self {
            kube: KubeVersion::default(),
            hub: HUB.into(),
            variant: String::new(),
            ca_address: String::new(),
            pilot_autoscale: Some((1, 80, None)),
            pilot_pdb: false,
            gateway_autoscale: None,
            gateway_pdb: false,
        }
    }
}

impl Render {
    /// For a cluster of `kube`, with the charts' defaults.
    #[must_use]
    pub fn for_kube(kube: KubeVersion) -> Self {
        Self { kube, ..Self::default() }
    }

    /// The HorizontalPodAutoscaler API the chart of `minor` picks.
    fn autoscaling_api(&self, minor: u32) -> &'static str {
        if minor <= 10 {
            "autoscaling/v2beta1"
        } else if self.kube.minor >= 23 {
            "autoscaling/v2"
        } else {
            "autoscaling/v2beta2"
        }
    }

    /// The PodDisruptionBudget API the chart of `minor` picks.
    fn pdb_api(&self, minor: u32) -> &'static str {
        if minor >= 12 && self.kube.minor >= 21 { "policy/v1" } else { "policy/v1beta1" }
    }
}

/// The webhook configuration API a chart of `minor` writes.
fn webhook_api(minor: u32) -> &'static str {
    if minor <= 8 { "admissionregistration.k8s.io/v1beta1" } else { "admissionregistration.k8s.io/v1" }
}

/// Labels as a template lists them: its own, then Helm's standard ones
/// (from 1.24) for chart `chart` and `app.kubernetes.io/name` `name`.
fn labels(own: Value, version: &str, chart: &str, name: &str) -> Value {
    let mut out: Map<String, Value> = own.as_object().cloned().unwrap_or_default();
    if minor_of(version) >= 24 {
        for (key, value) in [
            ("app.kubernetes.io/instance", "istio".to_string()),
            ("app.kubernetes.io/managed-by", "Helm".to_string()),
            ("app.kubernetes.io/name", name.to_string()),
            ("app.kubernetes.io/part-of", "istio".to_string()),
            ("app.kubernetes.io/version", version.to_string()),
            ("helm.sh/chart", format!("{chart}-{version}")),
        ] {
            out.insert(key.into(), json!(value));
        }
    }
    Value::Object(out)
}

/// `key: value` pairs as a JSON map.
fn map<const N: usize>(pairs: [(&str, &str); N]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect())
}

/// A selector requirement.
fn expression(key: &str, operator: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": operator})
    } else {
        json!({"key": key, "operator": operator, "values": values})
    }
}

/// The whole install of a profile, as `istioctl manifest generate` prints
/// it: the base (CRDs and shared objects), the revision's control plane,
/// and its ingress gateway.
#[must_use]
pub fn profile(revision: &Revision, render: &Render) -> Vec<Value> {
    let mut objects = base(&revision.version, render);
    objects.extend(discovery(revision, render));
    objects.extend(gateway(GatewayKind::Ingress, "istio-ingressgateway", revision, render));
    objects
}

/// The rendered objects of `objects` as multi-document YAML.
pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object).map_err(|err| err.to_string())?);
    }
    Ok(out)
}

/// What `istioctl manifest generate --set revision=R` prints for revision
/// `rev`: the base (CRDs and shared objects), its control plane and its
/// ingress gateway, rendered for the Kubernetes that version ran on.
pub fn manifests_yaml(rev: &Revision) -> Result<String, String> {
    manifests_yaml_for(rev, &Render::for_kube(super::version::kubernetes_for(&rev.version)))
}

/// [`manifests_yaml`], rendered as `render` says (for another cluster's Kubernetes, say).
pub fn manifests_yaml_for(rev: &Revision, render: &Render) -> Result<String, String> {
    to_yaml(&profile(rev, render))
}

/// The control plane of `rev` and its ingress gateway (for tests).
#[must_use]
pub fn control_plane(rev: &Revision) -> Vec<Value> {
    let render = Render::default();
    let mut objects = discovery(rev, &render);
    objects.extend(gateway(GatewayKind::Ingress, "istio-ingressgateway", rev, &render));
    objects
}
