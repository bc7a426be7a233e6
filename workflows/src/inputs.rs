//! What the plan records for each step, and what each step records when it
//! succeeds: the data between the plan builder and the activities.
//!
//! Every forward step that changes a cluster records, before and after, what
//! its compensation needs. Plan-time copies (from discovery) ride in the
//! input too, for the compensation of a step cut off before its output was
//! recorded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{ClusterRef, RevisionName, SharedPolicy, UpgradeSpec};

/// The definition name of the upgrade workflow.
pub const DEFINITION: &str = "istio-canary-upgrade";
/// Its version: bump when the plan's shape changes.
pub const DEFINITION_VERSION: u32 = 1;

/// The workflow's input: the spec, the manifests, and what discovery saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeInput {
    /// The validated spec.
    pub spec: UpgradeSpec,
    /// The new revision's control-plane objects, in apply order.
    pub control_plane: Vec<Value>,
    /// The new revision's gateway objects.
    pub gateways: Vec<Value>,
    /// Istio's CRDs as the manifests carry them.
    #[serde(default)]
    pub crds: Vec<Value>,
    /// The CNI node agent's objects as the manifests carry them.
    #[serde(default)]
    pub cni: Vec<Value>,
    /// ztunnel's objects as the manifests carry them.
    #[serde(default)]
    pub ztunnel: Vec<Value>,
    /// What each cluster looked like when the upgrade was planned.
    pub clusters: Vec<ClusterDiscovery>,
}

/// One object, by kind and name: what a record or a message names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Empty for a cluster-scoped object.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    /// The reference of `object`.
    #[must_use]
    pub fn of(object: &Value) -> Self {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
        Self {
            api_version: text("/apiVersion"),
            kind: text("/kind"),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
        }
    }

    /// A JSON object with only what names it: for reads and deletes.
    #[must_use]
    pub fn probe(&self) -> Value {
        let mut metadata = serde_json::json!({"name": self.name});
        if !self.namespace.is_empty() {
            metadata["namespace"] = serde_json::json!(self.namespace);
        }
        serde_json::json!({"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata})
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The labels that decide injection, as a namespace had them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectionLabels {
    /// `istio-injection`.
    pub istio_injection: Option<String>,
    /// `istio.io/rev`.
    pub istio_rev: Option<String>,
}

impl InjectionLabels {
    /// The injection labels of `namespace` (a Namespace as JSON).
    #[must_use]
    pub fn of(namespace: &serde_json::Value) -> Self {
        let label = |key: &str| {
            namespace
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(key))
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        Self { istio_injection: label("istio-injection"), istio_rev: label("istio.io/rev") }
    }
}

/// A pod that no rollout restarts (a Job's, a CronJob's, a bare pod, one
/// of another controller): an operator must replace it to move it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnmanagedPod {
    /// Its name.
    pub name: String,
    /// What owns it (`Job/backup-29`, or `none`).
    pub owner: String,
}

/// A Deployment, StatefulSet or DaemonSet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// A namespace that moves, and what is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    /// Its name.
    pub name: String,
    /// Its injection labels before the upgrade.
    pub labels: InjectionLabels,
    /// Its workloads.
    pub workloads: Vec<WorkloadRef>,
    /// Its resourceVersion when planned. The move's relabel names it as a
    /// precondition (`kubectl label --resource-version`): while nothing
    /// changed since, the labels are known without reading them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Pods with a proxy that no restart moves: reported, never waited on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_operator: Vec<UnmanagedPod>,
}

/// A gateway Deployment and how it was before the upgrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayPlan {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The revision it runs.
    pub revision: String,
    /// The Deployment, cleaned of server fields: what the compensation re-applies.
    pub snapshot: Value,
    /// Injected (Helm's gateway chart, `inject.istio.io/templates: gateway`)
    /// rather than carrying its own proxy (istioctl's): it moves as the
    /// injection labels say, by a restart.
    #[serde(default)]
    pub injected: bool,
}

/// A revision tag: its injector webhook configuration and the revision it points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagPlan {
    /// The tag (`default`, `prod-stable`).
    pub name: String,
    /// The revision it points at.
    pub revision: String,
    /// Its MutatingWebhookConfiguration, cleaned.
    pub webhook: Value,
}

/// A kind and the API version the upgrade uses for it on one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServedKind {
    /// `policy/PodDisruptionBudget`, `Service`.
    pub kind: String,
    /// `policy/v1beta1`.
    pub api_version: String,
}

/// A node agent (`istio-cni-node`, `ztunnel`) as planning saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAgentPlan {
    /// The DaemonSet's name.
    pub name: String,
    /// Its uid: the same object after the upgrade unless asked to upgrade it.
    pub uid: String,
    /// Its image.
    pub image: String,
}

/// What planning saw in one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDiscovery {
    /// The cluster.
    pub cluster: ClusterRef,
    /// Its Kubernetes version (`v1.32.4`).
    pub kubernetes_version: String,
    /// The Istio version of the installed revision.
    pub from_version: String,
    /// The namespaces that move.
    pub namespaces: Vec<NamespacePlan>,
    /// The gateways.
    pub gateways: Vec<GatewayPlan>,
    /// Service `istio-system/istiod` as it was (cleaned), if it existed.
    pub istiod_service: Option<Value>,
    /// The tag's webhook configuration as it was (cleaned), for the tag flow.
    pub tag_webhook: Option<Value>,
    /// The revision tags, with the revisions they point at.
    #[serde(default)]
    pub tags: Vec<TagPlan>,
    /// `istiod-default-validator` as it was (cleaned), if there is one.
    #[serde(default)]
    pub default_validator: Option<Value>,
    /// The node agents present (CNI, ztunnel).
    #[serde(default)]
    pub node_agents: Vec<NodeAgentPlan>,
    /// Which API version of each kind the upgrade uses here, as the cluster serves them.
    #[serde(default)]
    pub kinds: Vec<ServedKind>,
    /// The canaryflow workflow that installed the old revision here, if one did
    /// (its istiod's `canaryflow.io/workflow` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_by: Option<String>,
    /// What that workflow's install recorded it created: the uninstall acts on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed: Vec<ObjectRef>,
}

/// Who and what every step of one cluster is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The cluster.
    pub cluster: ClusterRef,
    /// The installed revision.
    pub from: RevisionName,
    /// The revision being installed.
    pub to: RevisionName,
    /// Its Istio version.
    pub to_version: String,
}

/// `precheck`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrecheckInput {
    /// The cluster and revisions.
    pub target: Target,
    /// The namespaces planned to move (the cluster must still have them).
    pub namespaces: Vec<String>,
    /// The Istio version planned from.
    pub from_version: String,
}

/// `record`: the objects the install, the gateways and the shared
/// upgrades will write (from the workflow input), read before any is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordInput {
    /// The cluster and revisions.
    pub target: Target,
    /// Which shared pieces the upgrade writes.
    pub shared: SharedPolicy,
}

/// One object as it was before the upgrade wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorState {
    /// The object.
    pub object: ObjectRef,
    /// It as it was (cleaned of server fields), or `None` if it did not
    /// exist. CRDs are recorded as existing or not only: they are never
    /// put back (a newer CRD serves every revision; an older one could
    /// strand config written in a version it does not serve).
    pub before: Option<Value>,
    /// Whether it existed.
    pub existed: bool,
}

/// What `record` read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordOutput {
    /// Every object the upgrade will write, as it was.
    pub objects: Vec<PriorState>,
}

/// `install` and the shared upgrades: the objects come from the workflow
/// input, their prior state from `record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallInput {
    /// The cluster and revisions.
    pub target: Target,
    /// The `record` step, whose output its compensation acts on.
    #[serde(default)]
    pub record_step: String,
    /// How long a rollout may take (a node agent's).
    #[serde(default)]
    pub timeout_ms: u64,
}

/// `shared/cni`, `shared/ztunnel`: upgrade a node agent in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAgentInput {
    /// The cluster, the record, the rollout timeout.
    pub install: InstallInput,
    /// `cni` or `ztunnel`.
    pub agent: String,
}

/// What `install` (or a shared upgrade) changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstallOutput {
    /// `kind namespace/name` of each object applied.
    pub applied: Vec<String>,
    /// Those of them that did not exist before.
    #[serde(default)]
    pub created: Vec<ObjectRef>,
    /// Those that existed, and were changed.
    #[serde(default)]
    pub changed: Vec<ObjectRef>,
}

/// `wait-control-plane`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitInput {
    /// The cluster and revisions.
    pub target: Target,
    /// How long to wait.
    pub timeout_ms: u64,
}

/// `validation` and `handover`: Service `istiod`, the base chart's
/// validating webhook's target; for `handover` also the `default` tag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationInput {
    /// The cluster and revisions.
    pub target: Target,
    /// Service `istiod` as planning saw it.
    pub service_before: Option<Value>,
    /// The `default` tag as planning saw it (1.12+).
    #[serde(default)]
    pub default_tag: Option<TagPlan>,
    /// `istiod-default-validator` as planning saw it.
    #[serde(default)]
    pub default_validator: Option<Value>,
    /// Namespaces the upgrade moves itself (their workloads are not
    /// restarted again when the default tag moves).
    #[serde(default)]
    pub moved_namespaces: Vec<String>,
    /// How long a rollout may take.
    #[serde(default)]
    pub timeout_ms: u64,
}

/// What `validation` or `handover` changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValidationOutput {
    /// What was done, for people.
    pub action: String,
    /// Objects changed, as they were just before (the compensation re-applies them).
    pub objects_before: Vec<Value>,
    /// Objects created (the compensation deletes them).
    pub created: Vec<Value>,
    /// Workloads restarted so that what the default tag injects follows
    /// it, by namespace (the compensation restarts them again).
    #[serde(default)]
    pub restarted: BTreeMap<String, Vec<WorkloadRef>>,
}

/// `gateways`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewaysInput {
    /// The cluster and revisions.
    pub target: Target,
    /// The `record` step, whose output the compensation puts the gateways' objects back from.
    #[serde(default)]
    pub record_step: String,
    /// The gateways, as planning saw them.
    pub gateways: Vec<GatewayPlan>,
    /// How long a gateway's rollout may take.
    pub timeout_ms: u64,
}

/// What `gateways` upgraded, with each gateway as it was just before.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewaysOutput {
    /// The gateways, their snapshots taken just before the upgrade.
    pub gateways: Vec<GatewayPlan>,
}

/// `move/<namespace>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveInput {
    /// The cluster and revisions.
    pub target: Target,
    /// The namespace, its labels and workloads as planning saw them.
    pub namespace: NamespacePlan,
    /// How long a rollout may take.
    pub timeout_ms: u64,
}

/// What `move/<namespace>` changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MoveOutput {
    /// The labels just before the move.
    pub labels_before: InjectionLabels,
    /// The workloads restarted.
    pub restarted: Vec<WorkloadRef>,
}

/// `move-tag`: point the tag at the new revision, restart its namespaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveTagInput {
    /// The cluster and revisions.
    pub target: Target,
    /// The tag.
    pub tag: String,
    /// Its namespaces.
    pub namespaces: Vec<NamespacePlan>,
    /// The tag's webhook configuration as planning saw it.
    pub webhook_before: Option<Value>,
    /// How long a rollout may take.
    pub timeout_ms: u64,
}

/// What `move-tag` changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MoveTagOutput {
    /// The tag's webhook configuration just before.
    pub webhook_before: Option<Value>,
}

/// `verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyInput {
    /// The cluster and revisions.
    pub target: Target,
    /// The namespaces moved.
    pub namespaces: Vec<String>,
}

/// What `verify` saw: per pod, its container restarts (the health gate's baseline).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyOutput {
    /// Pods checked.
    pub pods: usize,
    /// Restarts per `namespace/pod`.
    pub restarts: BTreeMap<String, u64>,
    /// Pods no restart moves, still on another revision: an operator must
    /// replace them (`namespace/pod (owner)`). They block the uninstall.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_operator: Vec<String>,
}

/// A wave's health gate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthInput {
    /// The wave's clusters and their moved namespaces.
    pub clusters: Vec<(Target, Vec<String>)>,
    /// Most container restarts tolerated per pod since `verify`.
    pub restarts_max: Option<u32>,
}

/// `snapshot`: read the old revision's objects into the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInput {
    /// The cluster and revisions.
    pub target: Target,
    /// What the workflow that installed the old revision recorded it created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed: Vec<ObjectRef>,
}

/// The old revision's objects, cleaned, in uninstall order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotOutput {
    /// The objects the uninstall will delete.
    pub objects: Vec<Value>,
    /// Secrets that match the uninstall rules but are left in place.
    pub secrets_left: Vec<String>,
}

/// `uninstall`: deletes what the snapshot step recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UninstallInput {
    /// The cluster and revisions.
    pub target: Target,
    /// The snapshot step, whose output lists the objects.
    pub snapshot_step: String,
    /// How long the old control plane may take to come back on rollback.
    pub timeout_ms: u64,
}

/// What `uninstall` deleted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UninstallOutput {
    /// `kind namespace/name` of each object deleted.
    pub deleted: Vec<String>,
}
