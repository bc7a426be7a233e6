//! The resource types a cluster serves, as discovery lists them: the
//! built-in kinds of its Kubernetes version, and the kinds its
//! CustomResourceDefinitions define while they exist.
//!
//! Versions come and go with Kubernetes releases: `policy/v1` arrived in
//! 1.21 and `policy/v1beta1` went in 1.25, `autoscaling/v2` arrived in
//! 1.23, the `v1beta1` webhooks and CRDs went in 1.22. A request for a kind
//! or version the cluster does not serve gets the real 404.

use std::collections::HashSet;
use std::sync::{Mutex, RwLock};

use serde_json::Value;

/// One resource type: where it lives and what it is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name, as in URLs.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Whether it is only ever created (SelfSubjectAccessReview), never stored.
    pub create_only: bool,
    /// The Kubernetes 1.x minor versions that serve it, first and last.
    pub served: (u32, u32),
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    #[must_use]
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `deployments.apps`, or `pods` for the core group: the name in error messages.
    #[must_use]
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The key objects of this type are stored under: the same for every
    /// version of a group (v1alpha3 and v1beta1 VirtualServices are one store).
    #[must_use]
    pub fn storage_key(&self) -> (&'static str, &'static str) {
        (self.group, self.plural)
    }

    /// Verbs as discovery lists them.
    #[must_use]
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only { vec!["create"] } else { VERBS.to_vec() }
    }

    fn served_by(&self, minor: u32) -> bool {
        (self.served.0..=self.served.1).contains(&minor)
    }
}

/// Every Kubernetes release up to now serves it.
const ALWAYS: (u32, u32) = (0, u32::MAX);

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr, [$($short:expr),*], $served:expr) => {
        ResourceType {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            create_only: false,
            served: $served,
        }
    };
}

const ADMISSION: &str = "admissionregistration.k8s.io";
const RBAC: &str = "rbac.authorization.k8s.io";
const CRDS: &str = "apiextensions.k8s.io";

/// Every built-in resource type, each group's versions in the order of
/// preference (the first one a release serves is the one it prefers).
pub const BUILTIN: &[ResourceType] = &[
    resource!("", "v1", "Namespace", "namespaces", "namespace", false, ["ns"], ALWAYS),
    resource!("", "v1", "Pod", "pods", "pod", true, ["po"], ALWAYS),
    resource!("", "v1", "Service", "services", "service", true, ["svc"], ALWAYS),
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", true, ["cm"], ALWAYS),
    resource!("", "v1", "Secret", "secrets", "secret", true, [], ALWAYS),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, ["sa"], ALWAYS),
    resource!("apps", "v1", "Deployment", "deployments", "deployment", true, ["deploy"], ALWAYS),
    resource!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, ["sts"], ALWAYS),
    resource!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, ["ds"], ALWAYS),
    resource!("batch", "v1", "Job", "jobs", "job", true, [], ALWAYS),
    resource!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, ["cj"], (21, u32::MAX)),
    resource!("batch", "v1beta1", "CronJob", "cronjobs", "cronjob", true, ["cj"], (0, 24)),
    resource!(
        ADMISSION,
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        false,
        [],
        (16, u32::MAX)
    ),
    resource!(
        ADMISSION,
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        false,
        [],
        (16, u32::MAX)
    ),
    resource!(
        ADMISSION,
        "v1beta1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        false,
        [],
        (0, 21)
    ),
    resource!(
        ADMISSION,
        "v1beta1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        false,
        [],
        (0, 21)
    ),
    resource!(
        CRDS,
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        ["crd", "crds"],
        (16, u32::MAX)
    ),
    resource!(
        CRDS,
        "v1beta1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        ["crd", "crds"],
        (0, 21)
    ),
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, [], ALWAYS),
    resource!(RBAC, "v1", "Role", "roles", "role", true, [], ALWAYS),
    resource!(RBAC, "v1", "RoleBinding", "rolebindings", "rolebinding", true, [], ALWAYS),
    resource!(RBAC, "v1", "ClusterRole", "clusterroles", "clusterrole", false, [], ALWAYS),
    resource!(RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, [], ALWAYS),
    resource!(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        ["pdb"],
        (21, u32::MAX)
    ),
    resource!(
        "policy",
        "v1beta1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        ["pdb"],
        (0, 24)
    ),
    resource!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        ["hpa"],
        (23, u32::MAX)
    ),
    resource!(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        ["hpa"],
        ALWAYS
    ),
    resource!(
        "autoscaling",
        "v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        ["hpa"],
        (12, 25)
    ),
    resource!(
        "autoscaling",
        "v2beta1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        ["hpa"],
        (0, 24)
    ),
    resource!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, ["netpol"], ALWAYS),
    ResourceType {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        namespaced: false,
        short_names: &[],
        create_only: true,
        served: ALWAYS,
    },
];

/// CustomResourceDefinitions one cluster may define at once, versions
/// counted apart (Istio's base chart defines 15, with up to three versions each).
pub const CUSTOM_TYPES_COUNT_MAX: usize = 512;

/// The built-in resource type at `group`/`version`/`plural`, whatever the
/// release: for what the API server itself writes (pods, workloads).
///
/// # Panics
/// If there is none: a programming error.
#[must_use]
pub fn builtin(group: &str, version: &str, plural: &str) -> &'static ResourceType {
    BUILTIN
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .unwrap_or_else(|| panic!("{plural}.{group}/{version} is a built-in type"))
}

/// A Kubernetes release: `1.32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeVersion {
    /// The minor version.
    pub minor: u32,
}

impl KubeVersion {
    /// Reads `1.18` or `v1.18.20`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.trim_start_matches('v').split('.');
        match (parts.next(), parts.next().map(str::parse::<u32>)) {
            (Some("1"), Some(Ok(minor))) if (16..=40).contains(&minor) => Ok(Self { minor }),
            _ => Err(format!(
                "Kubernetes version {text:?} is not one the simulator serves (1.16 to 1.40, like 1.18 or 1.32)"
            )),
        }
    }

    /// What `/version` says.
    #[must_use]
    pub fn git_version(&self) -> String {
        format!("v1.{}.{}", self.minor, if self.minor >= 30 { 4 } else { 20 })
    }
}

impl Default for KubeVersion {
    fn default() -> Self {
        Self { minor: 32 }
    }
}

/// What one cluster serves: its release's built-in types and the types its
/// CustomResourceDefinitions define.
#[derive(Debug)]
pub struct Surface {
    /// The release.
    pub version: KubeVersion,
    custom: RwLock<Vec<&'static ResourceType>>,
}

impl Surface {
    /// The surface of a release with no CustomResourceDefinitions.
    #[must_use]
    pub fn new(version: KubeVersion) -> Self {
        Self { version, custom: RwLock::new(Vec::new()) }
    }

    /// Every type served, built-in first.
    #[must_use]
    pub fn all(&self) -> Vec<&'static ResourceType> {
        let minor = self.version.minor;
        let mut out: Vec<&'static ResourceType> = BUILTIN.iter().filter(|r| r.served_by(minor)).collect();
        out.extend(self.custom.read().expect("surface lock poisoned").iter().copied());
        out
    }

    /// The type served at `group`/`version`/`plural`.
    #[must_use]
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        self.all().into_iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The type of `api_version` (`apps/v1`) and `kind`.
    #[must_use]
    pub fn by_api_version(&self, api_version: &str, kind: &str) -> Option<&'static ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.all().into_iter().find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// The groups and their versions, in discovery order; the first version is preferred.
    #[must_use]
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for resource in self.all().into_iter().filter(|r| !r.group.is_empty()) {
            match out.iter_mut().find(|(group, _)| *group == resource.group) {
                Some((_, versions)) if !versions.contains(&resource.version) => versions.push(resource.version),
                Some(_) => {}
                None => out.push((resource.group, vec![resource.version])),
            }
        }
        out
    }

    /// Serves the types `crd` (a CustomResourceDefinition) defines, in
    /// place of what it defined before.
    pub fn define(&self, crd: &Value) -> Result<(), String> {
        let defined = custom_types(crd)?;
        let mut custom = self.custom.write().expect("surface lock poisoned");
        let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        custom.retain(|r| r.qualified() != name);
        if custom.len() + defined.len() > CUSTOM_TYPES_COUNT_MAX {
            return Err(format!("more than {CUSTOM_TYPES_COUNT_MAX} custom resource types"));
        }
        custom.extend(defined);
        Ok(())
    }

    /// Stops serving what CustomResourceDefinition `name` defined.
    pub fn undefine(&self, name: &str) {
        self.custom.write().expect("surface lock poisoned").retain(|r| r.qualified() != name);
    }

    /// The custom types CustomResourceDefinition `name` defines.
    #[must_use]
    pub fn defined_by(&self, name: &str) -> Vec<&'static ResourceType> {
        self.custom.read().expect("surface lock poisoned").iter().copied().filter(|r| r.qualified() == name).collect()
    }
}

/// Whether `crd` defines custom types the simulator can serve.
pub fn check_definition(crd: &Value) -> Result<(), String> {
    custom_types(crd).map(|_| ())
}

/// The served versions of a CustomResourceDefinition as resource types,
/// the preferred (highest priority, as Kubernetes orders versions) first.
fn custom_types(crd: &Value) -> Result<Vec<&'static ResourceType>, String> {
    let text = |pointer: &str| crd.pointer(pointer).and_then(Value::as_str).filter(|t| !t.is_empty());
    let group = text("/spec/group").ok_or("spec.group: Required value")?;
    let kind = text("/spec/names/kind").ok_or("spec.names.kind: Required value")?;
    let plural = text("/spec/names/plural").ok_or("spec.names.plural: Required value")?;
    let singular = text("/spec/names/singular").map_or_else(|| kind.to_lowercase(), str::to_string);
    let namespaced = text("/spec/scope") != Some("Cluster");
    let short: Vec<&'static str> = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(intern)
        .collect();
    let short: &'static [&'static str] = intern_list(short);
    let mut versions: Vec<&str> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    if versions.is_empty() {
        // apiextensions.k8s.io/v1beta1 named one version in spec.version.
        versions.extend(text("/spec/version"));
    }
    if versions.is_empty() {
        return Err("spec.versions: Required value: must have exactly one version marked as storage version".into());
    }
    versions.sort_by_key(|version| std::cmp::Reverse(version_priority(version)));
    Ok(versions
        .into_iter()
        .map(|version| {
            let made = ResourceType {
                group: intern(group),
                version: intern(version),
                kind: intern(kind),
                plural: intern(plural),
                singular: intern(&singular),
                namespaced,
                short_names: short,
                create_only: false,
                served: ALWAYS,
            };
            intern_type(made)
        })
        .collect())
}

/// How Kubernetes ranks versions: GA over beta over alpha, higher numbers first.
fn version_priority(version: &str) -> (u32, u32, u32) {
    let rest = version.trim_start_matches('v');
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stage, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        (0, 0)
    };
    (stage, major, minor)
}

/// Names of custom types, kept for the life of the process: each distinct
/// name once (a CRD defined again costs nothing), bounded by what a
/// simulated fleet's CRDs can name.
fn intern(text: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().expect("names lock poisoned");
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(found) = names.get(text) {
        return found;
    }
    let leaked: &'static str = Box::leak(text.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

fn intern_list(items: Vec<&'static str>) -> &'static [&'static str] {
    static LISTS: Mutex<Vec<&'static [&'static str]>> = Mutex::new(Vec::new());
    let mut lists = LISTS.lock().expect("lists lock poisoned");
    if let Some(found) = lists.iter().find(|list| **list == items.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(items.into_boxed_slice());
    lists.push(leaked);
    leaked
}

fn intern_type(made: ResourceType) -> &'static ResourceType {
    static TYPES: Mutex<Vec<&'static ResourceType>> = Mutex::new(Vec::new());
    let mut types = TYPES.lock().expect("types lock poisoned");
    if let Some(found) = types.iter().find(|known| ***known == made) {
        return found;
    }
    let leaked: &'static ResourceType = Box::leak(Box::new(made));
    types.push(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_release_serves_its_own_versions() {
        let old = Surface::new(KubeVersion::parse("1.18").expect("version"));
        assert!(old.find("policy", "v1beta1", "poddisruptionbudgets").is_some());
        assert!(old.find("policy", "v1", "poddisruptionbudgets").is_none(), "policy/v1 arrived in 1.21");
        assert!(old.find("autoscaling", "v2", "horizontalpodautoscalers").is_none(), "autoscaling/v2 arrived in 1.23");
        assert!(old.find(ADMISSION, "v1beta1", "mutatingwebhookconfigurations").is_some());
        let groups = old.groups();
        let autoscaling = groups.iter().find(|(g, _)| *g == "autoscaling").expect("autoscaling");
        assert_eq!(autoscaling.1, ["v1", "v2beta2", "v2beta1"], "1.18 prefers autoscaling/v1");
        let new = Surface::new(KubeVersion::default());
        assert!(new.find(ADMISSION, "v1beta1", "mutatingwebhookconfigurations").is_none(), "gone in 1.22");
        assert_eq!(new.groups().iter().find(|(g, _)| *g == "autoscaling").map(|(_, v)| v[0]), Some("v2"));
        assert!(KubeVersion::parse("2.0").is_err());
    }

    #[test]
    fn a_crd_serves_its_versions_while_it_exists() {
        let surface = Surface::new(KubeVersion::default());
        let crd = json!({"metadata": {"name": "virtualservices.networking.istio.io"},
            "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                "names": {"kind": "VirtualService", "plural": "virtualservices", "singular": "virtualservice", "shortNames": ["vs"]},
                "versions": [{"name": "v1alpha3", "served": true}, {"name": "v1", "served": true}, {"name": "v1beta1", "served": true}]}});
        surface.define(&crd).expect("defined");
        let versions: Vec<&str> =
            surface.all().into_iter().filter(|r| r.kind == "VirtualService").map(|r| r.version).collect();
        assert_eq!(versions, ["v1", "v1beta1", "v1alpha3"], "preferred first");
        surface.define(&crd).expect("defined again");
        assert_eq!(surface.defined_by("virtualservices.networking.istio.io").len(), 3, "no duplicates");
        surface.undefine("virtualservices.networking.istio.io");
        assert!(surface.find("networking.istio.io", "v1", "virtualservices").is_none());
    }
}
