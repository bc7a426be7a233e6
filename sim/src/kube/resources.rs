//! The resource types the simulated API server serves, as discovery lists them.

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
}

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr, [$($short:expr),*]) => {
        ResourceType {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            create_only: false,
        }
    };
}

/// Every resource type served.
pub const RESOURCES: &[ResourceType] = &[
    resource!("", "v1", "Namespace", "namespaces", "namespace", false, ["ns"]),
    resource!("", "v1", "Pod", "pods", "pod", true, ["po"]),
    resource!("", "v1", "Service", "services", "service", true, ["svc"]),
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", true, ["cm"]),
    resource!("", "v1", "Secret", "secrets", "secret", true, []),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, ["sa"]),
    resource!("apps", "v1", "Deployment", "deployments", "deployment", true, ["deploy"]),
    resource!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, ["sts"]),
    resource!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, ["ds"]),
    resource!(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        false,
        []
    ),
    resource!(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        false,
        []
    ),
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, []),
    resource!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, []),
    resource!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, []),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, []),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        []
    ),
    resource!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, ["pdb"]),
    resource!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        ["hpa"]
    ),
    resource!("networking.istio.io", "v1beta1", "VirtualService", "virtualservices", "virtualservice", true, ["vs"]),
    resource!("networking.istio.io", "v1beta1", "DestinationRule", "destinationrules", "destinationrule", true, ["dr"]),
    resource!("networking.istio.io", "v1alpha3", "VirtualService", "virtualservices", "virtualservice", true, ["vs"]),
    resource!(
        "networking.istio.io",
        "v1alpha3",
        "DestinationRule",
        "destinationrules",
        "destinationrule",
        true,
        ["dr"]
    ),
    ResourceType {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        namespaced: false,
        short_names: &[],
        create_only: true,
    },
];

/// The resource type at `group`/`version`/`plural`.
#[must_use]
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The preferred (first listed) resource type of `kind` in `group`.
#[must_use]
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

/// The groups and their versions, in discovery order; the first version is preferred.
#[must_use]
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for resource in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(group, _)| *group == resource.group) {
            Some((_, versions)) if !versions.contains(&resource.version) => versions.push(resource.version),
            Some(_) => {}
            None => out.push((resource.group, vec![resource.version])),
        }
    }
    out
}
