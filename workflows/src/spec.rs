//! The upgrade spec: `apiVersion: canaryflow.io/v1`, `kind: Upgrade`.
//!
//! [`UpgradeSpec::parse`] reads the YAML (unknown fields and wrong types are
//! refused by the parser, with line, column and a caret) and checks every
//! rule that needs no cluster, naming the field and its line. What it
//! returns is plain data, recorded in the workflow's first event.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// The spec's `apiVersion`.
pub const API_VERSION: &str = "canaryflow.io/v1";
/// The spec's `kind`.
pub const KIND: &str = "Upgrade";
/// The most clusters one upgrade may hold.
pub const CLUSTERS_COUNT_MAX: usize = 1_000;
/// The longest soak a wave may ask for: a week.
pub const SOAK_MS_MAX: u64 = 7 * 24 * 3_600 * 1_000;

/// A spec that breaks a rule: where, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {message}", line.map(|line| format!("line {line}: ")).unwrap_or_default())]
pub struct SpecError {
    /// The line of the offending value, when known.
    pub line: Option<u64>,
    /// The field's path (`spec.to.revision`).
    pub field: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

fn error<T>(spanned: &Spanned<T>, field: &str, message: impl Into<String>) -> SpecError {
    SpecError { line: Some(spanned.referenced.line()), field: field.into(), message: message.into() }
}

fn unplaced(field: &str, message: impl Into<String>) -> SpecError {
    SpecError { line: None, field: field.into(), message: message.into() }
}

// The document as written. Every field is spanned so that checks can name its line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: MetadataDocument,
    spec: SpecDocument,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataDocument {
    name: Spanned<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpecDocument {
    from: FromDocument,
    to: ToDocument,
    namespaces: Option<NamespacesDocument>,
    gateways: Option<GatewaysDocument>,
    tags: Option<TagsDocument>,
    shared: Option<SharedDocument>,
    clusters: Spanned<Vec<ClusterDocument>>,
    waves: Option<Spanned<Vec<WaveDocument>>>,
    on_failure: Option<Spanned<String>>,
    timeouts: Option<TimeoutsDocument>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromDocument {
    revision: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToDocument {
    revision: Spanned<String>,
    version: Spanned<String>,
    manifests: Spanned<String>,
    /// Namespaces besides istio-system the manifests may write to (a gateway's).
    namespaces: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedDocument {
    crds: Option<Spanned<String>>,
    cni: Option<Spanned<String>>,
    ztunnel: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacesDocument {
    selector: Option<Spanned<String>>,
    names: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewaysDocument {
    /// `namespace/name` of each gateway Deployment; empty means none.
    names: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsDocument {
    /// The revision tag the namespaces use (`prod-stable`): move it instead of relabelling.
    stable: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterDocument {
    name: Spanned<String>,
    context: Spanned<String>,
    kubeconfig: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WaveDocument {
    clusters: Spanned<Vec<String>>,
    max_parallel: Option<Spanned<u32>>,
    soak: Option<Spanned<String>>,
    approval: Option<Spanned<String>>,
    health: Option<HealthDocument>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HealthDocument {
    restarts_max: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TimeoutsDocument {
    control_plane: Option<Spanned<String>>,
    rollout: Option<Spanned<String>>,
    unreachable: Option<Spanned<String>>,
}

// The validated spec, as recorded.

/// A control-plane revision: `default` (non-revisioned) or a DNS-1123 label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionName(pub String);

impl RevisionName {
    /// Whether this is the non-revisioned install.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.0 == "default"
    }

    /// The revision's istiod Deployment and Service: `istiod` or `istiod-<rev>`.
    #[must_use]
    pub fn istiod(&self) -> String {
        if self.is_default() { "istiod".into() } else { format!("istiod-{}", self.0) }
    }

    /// Its injector webhook configuration.
    #[must_use]
    pub fn injector(&self) -> String {
        if self.is_default() { "istio-sidecar-injector".into() } else { format!("istio-sidecar-injector-{}", self.0) }
    }
}

impl std::fmt::Display for RevisionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which namespaces move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSelection {
    /// A label selector (`istio-injection=enabled`).
    pub selector: Option<String>,
    /// Names, in addition to what the selector matches.
    pub names: Vec<String>,
}

/// Where a cluster is and how to reach it. No credentials: a kubeconfig
/// path and a context name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterRef {
    /// Its name in this upgrade (also its group in the plan).
    pub name: String,
    /// The kubeconfig context.
    pub context: String,
    /// The kubeconfig file; `None` means `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

/// A wave of clusters and its gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// Its clusters, by name.
    pub clusters: Vec<String>,
    /// At most this many at once.
    pub max_parallel: u32,
    /// How long to soak after its clusters are verified, before the next wave.
    pub soak_ms: u64,
    /// Whether an operator must approve before the next wave.
    pub approval: bool,
    /// Most container restarts tolerated in moved pods at the gate; `None`: not checked.
    pub restarts_max: Option<u32>,
}

/// What to do with a shared piece the new revision's manifests carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedChoice {
    /// Apply the manifests' version (never delete, never downgrade).
    Upgrade,
    /// Leave the cluster's as it is.
    Keep,
}

/// `spec.shared`: which shared pieces an upgrade may change, each as an
/// explicit step of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPolicy {
    /// Istio's CRDs: applied before the new istiod when the manifests carry
    /// them (default), never deleted.
    pub crds: SharedChoice,
    /// The CNI node agent (`istio-cni-node`): kept unless asked.
    pub cni: SharedChoice,
    /// ztunnel: kept unless asked.
    pub ztunnel: SharedChoice,
}

impl Default for SharedPolicy {
    fn default() -> Self {
        Self { crds: SharedChoice::Upgrade, cni: SharedChoice::Keep, ztunnel: SharedChoice::Keep }
    }
}

/// What a failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnFailure {
    /// Stop and wait for an operator.
    Pause,
    /// Roll everything back.
    Rollback,
    /// Roll back the failed cluster only; the others in its wave finish; no later wave starts.
    RollbackCluster,
}

/// A validated upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeSpec {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The installed revision.
    pub from: RevisionName,
    /// The revision to install.
    pub to: RevisionName,
    /// Its Istio version (`1.6.8`).
    pub to_version: String,
    /// Where its rendered manifests are.
    pub manifests: PathBuf,
    /// Namespaces besides istio-system its manifests may write to.
    #[serde(default)]
    pub manifest_namespaces: Vec<String>,
    /// Which shared pieces it may change.
    #[serde(default)]
    pub shared: SharedPolicy,
    /// Which namespaces move.
    pub namespaces: NamespaceSelection,
    /// Gateways (`namespace/name`); `None`: every Deployment labelled `istio=ingressgateway` or `istio=egressgateway`.
    pub gateways: Option<Vec<String>>,
    /// The revision tag the namespaces use, for the tag flow.
    pub tag: Option<String>,
    /// The clusters.
    pub clusters: Vec<ClusterRef>,
    /// The waves, in order; every cluster is in exactly one.
    pub waves: Vec<Wave>,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// How long the new control plane may take to become available.
    pub control_plane_timeout_ms: u64,
    /// How long a workload's rollout may take.
    pub rollout_timeout_ms: u64,
    /// How long a cluster may stay unreachable (or answer with transient
    /// errors) before a step that needs it fails.
    pub unreachable_timeout_ms: u64,
}

impl UpgradeSpec {
    /// Reads and checks the spec in `path`.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| unplaced(&path.display().to_string(), format!("cannot read the spec: {err}")))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses and checks spec text; relative paths are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, SpecError> {
        let document: Document = serde_saphyr::from_str(text).map_err(|err| {
            let message = err.to_string();
            let line = message
                .split("line ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok());
            SpecError { line, field: "spec".into(), message: message.trim_start_matches("error: ").to_string() }
        })?;
        check_header(&document)?;
        let spec = &document.spec;
        let from = revision(&spec.from.revision, "spec.from.revision", true)?;
        let to = revision(&spec.to.revision, "spec.to.revision", false)?;
        if from == to {
            return Err(error(
                &spec.to.revision,
                "spec.to.revision",
                format!("is the same as spec.from.revision ({from}); a canary upgrade installs a new revision"),
            ));
        }
        let to_version = version(&spec.to.version)?;
        let manifests = resolve(base, &spec.to.manifests.value);
        if !manifests.is_file() {
            return Err(error(
                &spec.to.manifests,
                "spec.to.manifests",
                format!("{} does not exist or is not a file", manifests.display()),
            ));
        }
        let namespaces = namespaces(spec.namespaces.as_ref())?;
        let gateways = gateways(spec.gateways.as_ref())?;
        let tag = spec
            .tags
            .as_ref()
            .map(|tags| dns_label(&tags.stable, "spec.tags.stable").map(|()| tags.stable.value.clone()))
            .transpose()?;
        let manifest_namespaces = names_list(spec.to.namespaces.as_ref(), "spec.to.namespaces")?;
        let shared = shared(spec.shared.as_ref())?;
        let clusters = clusters(&spec.clusters, base)?;
        let waves = waves(spec.waves.as_ref(), &clusters)?;
        let on_failure = on_failure(spec.on_failure.as_ref())?;
        let timeouts = spec.timeouts.as_ref();
        let control_plane_timeout_ms =
            duration(timeouts.and_then(|t| t.control_plane.as_ref()), "spec.timeouts.controlPlane", 300_000)?;
        let rollout_timeout_ms = duration(timeouts.and_then(|t| t.rollout.as_ref()), "spec.timeouts.rollout", 600_000)?;
        let unreachable_timeout_ms =
            duration(timeouts.and_then(|t| t.unreachable.as_ref()), "spec.timeouts.unreachable", 300_000)?;
        Ok(Self {
            name: document.metadata.name.value.clone(),
            labels: document.metadata.labels.clone(),
            from,
            to,
            to_version,
            manifests,
            manifest_namespaces,
            shared,
            namespaces,
            gateways,
            tag,
            clusters,
            waves,
            on_failure,
            control_plane_timeout_ms,
            rollout_timeout_ms,
            unreachable_timeout_ms,
        })
    }

    /// The cluster named `name`.
    #[must_use]
    pub fn cluster(&self, name: &str) -> Option<&ClusterRef> {
        self.clusters.iter().find(|cluster| cluster.name == name)
    }
}

fn check_header(document: &Document) -> Result<(), SpecError> {
    if document.api_version.value != API_VERSION {
        return Err(error(
            &document.api_version,
            "apiVersion",
            format!("{:?} is not supported; expected {API_VERSION}", document.api_version.value),
        ));
    }
    if document.kind.value != KIND {
        return Err(error(
            &document.kind,
            "kind",
            format!("{:?} is not supported; expected {KIND}", document.kind.value),
        ));
    }
    let name = &document.metadata.name;
    if check_dns_subdomain(&name.value).is_err() {
        return Err(error(
            name,
            "metadata.name",
            format!("{:?} must be a DNS-1123 name (lowercase letters, digits, '-' and '.')", name.value),
        ));
    }
    Ok(())
}

/// A revision name: `default` (only for `from`), or a DNS-1123 label.
/// `1.6.8` is refused with the seed's rule: use `1-6-8`. An empty revision
/// is refused: Istio would silently upgrade in place (istio/istio#26940).
fn revision(spanned: &Spanned<String>, field: &str, default_allowed: bool) -> Result<RevisionName, SpecError> {
    let name = spanned.value.trim();
    if name.is_empty() {
        return Err(error(
            spanned,
            field,
            "is empty; an empty revision silently upgrades in place (istio/istio#26940): name a revision such as 1-6-8",
        ));
    }
    if name == "default" && !default_allowed {
        return Err(error(
            spanned,
            field,
            "cannot be \"default\": a canary upgrade installs a named revision (such as 1-6-8)",
        ));
    }
    if name.contains('.') {
        return Err(error(
            spanned,
            field,
            format!(
                "{name:?} is not a valid revision name: '.' is not allowed (revisions are DNS-1123 labels); use {:?}",
                name.replace('.', "-")
            ),
        ));
    }
    if check_dns_label(name).is_err() {
        return Err(error(
            spanned,
            field,
            format!(
                "{name:?} is not a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
            ),
        ));
    }
    Ok(RevisionName(name.to_string()))
}

fn version(spanned: &Spanned<String>) -> Result<String, SpecError> {
    let parts: Vec<&str> = spanned.value.trim_start_matches('v').split('.').collect();
    if parts.len() != 3 || parts.iter().any(|part| part.parse::<u32>().is_err()) {
        return Err(error(
            spanned,
            "spec.to.version",
            format!("{:?} is not an Istio version such as 1.6.8", spanned.value),
        ));
    }
    Ok(parts.join("."))
}

fn namespaces(document: Option<&NamespacesDocument>) -> Result<NamespaceSelection, SpecError> {
    let Some(document) = document else {
        return Err(unplaced(
            "spec.namespaces",
            "is required: a label selector (selector: istio-injection=enabled) and/or a list of names",
        ));
    };
    let selector = document.selector.as_ref().map(|selector| {
        check_selector(&selector.value)
            .map_err(|why| error(selector, "spec.namespaces.selector", why))
            .map(|()| selector.value.trim().to_string())
    });
    let selector = selector.transpose()?;
    let mut names = Vec::new();
    if let Some(listed) = &document.names {
        for name in &listed.value {
            if check_dns_label(name).is_err() {
                return Err(error(listed, "spec.namespaces.names", format!("{name:?} is not a namespace name")));
            }
            if names.contains(name) {
                return Err(error(listed, "spec.namespaces.names", format!("{name} is listed twice")));
            }
            names.push(name.clone());
        }
    }
    if selector.is_none() && names.is_empty() {
        return Err(unplaced("spec.namespaces", "names no namespace: give a selector and/or names"));
    }
    Ok(NamespaceSelection { selector, names })
}

fn names_list(document: Option<&Spanned<Vec<String>>>, field: &str) -> Result<Vec<String>, SpecError> {
    let Some(listed) = document else { return Ok(Vec::new()) };
    let mut names: Vec<String> = Vec::new();
    for name in &listed.value {
        if check_dns_label(name).is_err() {
            return Err(error(listed, field, format!("{name:?} is not a namespace name")));
        }
        if names.contains(name) {
            return Err(error(listed, field, format!("{name} is listed twice")));
        }
        names.push(name.clone());
    }
    Ok(names)
}

fn shared(document: Option<&SharedDocument>) -> Result<SharedPolicy, SpecError> {
    let choice = |spanned: Option<&Spanned<String>>, field: &str, default: SharedChoice| match spanned {
        None => Ok(default),
        Some(spanned) => match spanned.value.as_str() {
            "upgrade" => Ok(SharedChoice::Upgrade),
            "keep" => Ok(SharedChoice::Keep),
            other => Err(error(spanned, field, format!("{other:?} must be \"upgrade\" or \"keep\""))),
        },
    };
    let defaults = SharedPolicy::default();
    let Some(document) = document else { return Ok(defaults) };
    Ok(SharedPolicy {
        crds: choice(document.crds.as_ref(), "spec.shared.crds", defaults.crds)?,
        cni: choice(document.cni.as_ref(), "spec.shared.cni", defaults.cni)?,
        ztunnel: choice(document.ztunnel.as_ref(), "spec.shared.ztunnel", defaults.ztunnel)?,
    })
}

fn gateways(document: Option<&GatewaysDocument>) -> Result<Option<Vec<String>>, SpecError> {
    let Some(names) = document.and_then(|document| document.names.as_ref()) else { return Ok(None) };
    for name in &names.value {
        let valid =
            name.split_once('/').is_some_and(|(ns, gw)| check_dns_label(ns).is_ok() && check_dns_subdomain(gw).is_ok());
        if !valid {
            return Err(error(
                names,
                "spec.gateways.names",
                format!("{name:?} must be namespace/name of a gateway Deployment"),
            ));
        }
    }
    Ok(Some(names.value.clone()))
}

fn clusters(document: &Spanned<Vec<ClusterDocument>>, base: &Path) -> Result<Vec<ClusterRef>, SpecError> {
    if document.value.is_empty() {
        return Err(error(document, "spec.clusters", "lists no cluster"));
    }
    if document.value.len() > CLUSTERS_COUNT_MAX {
        return Err(error(
            document,
            "spec.clusters",
            format!("lists {} clusters; at most {CLUSTERS_COUNT_MAX}", document.value.len()),
        ));
    }
    let mut out: Vec<ClusterRef> = Vec::new();
    for (index, cluster) in document.value.iter().enumerate() {
        let field = format!("spec.clusters[{index}]");
        dns_label(&cluster.name, &format!("{field}.name"))?;
        if out.iter().any(|seen| seen.name == cluster.name.value) {
            return Err(error(
                &cluster.name,
                &format!("{field}.name"),
                format!("cluster {} is listed twice", cluster.name.value),
            ));
        }
        if cluster.context.value.trim().is_empty() {
            return Err(error(&cluster.context, &format!("{field}.context"), "is empty"));
        }
        let kubeconfig = cluster.kubeconfig.as_ref().map(|path| resolve(base, &path.value));
        if let (Some(path), Some(spanned)) = (&kubeconfig, &cluster.kubeconfig)
            && !path.is_file()
        {
            return Err(error(spanned, &format!("{field}.kubeconfig"), format!("{} does not exist", path.display())));
        }
        out.push(ClusterRef { name: cluster.name.value.clone(), context: cluster.context.value.clone(), kubeconfig });
    }
    Ok(out)
}

fn waves(document: Option<&Spanned<Vec<WaveDocument>>>, clusters: &[ClusterRef]) -> Result<Vec<Wave>, SpecError> {
    let Some(document) = document else {
        let all: Vec<String> = clusters.iter().map(|c| c.name.clone()).collect();
        let max_parallel = u32::try_from(all.len()).unwrap_or(u32::MAX);
        return Ok(vec![Wave { clusters: all, max_parallel, soak_ms: 0, approval: false, restarts_max: None }]);
    };
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for (index, wave) in document.value.iter().enumerate() {
        let field = format!("spec.waves[{index}]");
        if wave.clusters.value.is_empty() {
            return Err(error(&wave.clusters, &format!("{field}.clusters"), "lists no cluster"));
        }
        for name in &wave.clusters.value {
            if !clusters.iter().any(|cluster| &cluster.name == name) {
                return Err(error(
                    &wave.clusters,
                    &format!("{field}.clusters"),
                    format!("names cluster {name:?}, which spec.clusters does not list"),
                ));
            }
            if !seen.insert(name) {
                return Err(error(
                    &wave.clusters,
                    &format!("{field}.clusters"),
                    format!("cluster {name} is in more than one wave"),
                ));
            }
        }
        let max_parallel = match &wave.max_parallel {
            Some(spanned) if spanned.value == 0 => {
                return Err(error(spanned, &format!("{field}.maxParallel"), "must be at least 1"));
            }
            Some(spanned) => spanned.value,
            None => u32::try_from(wave.clusters.value.len()).unwrap_or(u32::MAX),
        };
        let soak_ms = duration(wave.soak.as_ref(), &format!("{field}.soak"), 0)?;
        if soak_ms > SOAK_MS_MAX {
            return Err(error(
                wave.soak.as_ref().expect("a soak was parsed"),
                &format!("{field}.soak"),
                "is longer than a week",
            ));
        }
        let approval = match &wave.approval {
            None => false,
            Some(spanned) => match spanned.value.as_str() {
                "required" => true,
                "none" => false,
                other => {
                    return Err(error(
                        spanned,
                        &format!("{field}.approval"),
                        format!("{other:?} must be \"required\" or \"none\""),
                    ));
                }
            },
        };
        let restarts_max = wave.health.as_ref().and_then(|h| h.restarts_max.as_ref()).map(|spanned| spanned.value);
        out.push(Wave { clusters: wave.clusters.value.clone(), max_parallel, soak_ms, approval, restarts_max });
    }
    if let Some(missing) = clusters.iter().find(|cluster| !seen.contains(cluster.name.as_str())) {
        return Err(error(document, "spec.waves", format!("cluster {} is in no wave", missing.name)));
    }
    Ok(out)
}

fn on_failure(spanned: Option<&Spanned<String>>) -> Result<OnFailure, SpecError> {
    match spanned.map(|s| s.value.as_str()) {
        None | Some("pause") => Ok(OnFailure::Pause),
        Some("rollback") => Ok(OnFailure::Rollback),
        Some("rollback-cluster") => Ok(OnFailure::RollbackCluster),
        Some(other) => {
            let spanned = spanned.expect("matched a value");
            Err(error(
                spanned,
                "spec.onFailure",
                format!("{other:?} must be \"pause\", \"rollback\" or \"rollback-cluster\""),
            ))
        }
    }
}

/// A duration such as `10m`, `90s`, `1h30m`, in milliseconds.
fn duration(spanned: Option<&Spanned<String>>, field: &str, default_ms: u64) -> Result<u64, SpecError> {
    let Some(spanned) = spanned else { return Ok(default_ms) };
    parse_duration_ms(&spanned.value).ok_or_else(|| {
        error(spanned, field, format!("{:?} is not a duration such as 500ms, 90s, 10m or 1h30m", spanned.value))
    })
}

/// Parses `500ms`, `90s`, `10m`, `2h`, `1h30m`.
#[must_use]
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, length) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        total = total.checked_add(number.checked_mul(unit_ms)?)?;
        rest = &rest[length..];
    }
    Some(total)
}

fn dns_label(spanned: &Spanned<String>, field: &str) -> Result<(), SpecError> {
    check_dns_label(&spanned.value).map_err(|why| error(spanned, field, format!("{:?} {why}", spanned.value)))
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let expanded = match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    };
    if expanded.is_absolute() { expanded } else { base.join(expanded) }
}

/// A DNS-1123 label.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = !name.is_empty()
        && name.len() <= 63
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid { Ok(()) } else { Err("is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)".into()) }
}

fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 || name.split('.').any(|part| check_dns_label(part).is_err()) {
        return Err("is not a DNS-1123 subdomain".into());
    }
    Ok(())
}

/// A label selector in query form: `a=b,c!=d,e in (f,g),!h,i`.
fn check_selector(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("is empty".into());
    }
    let mut depth = 0;
    let mut parts = Vec::new();
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    for part in parts.into_iter().map(str::trim) {
        let key = part
            .split(['=', '!', ' '])
            .find(|piece| !piece.is_empty())
            .ok_or_else(|| format!("{part:?} is not a label requirement"))?;
        let valid_key = key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        let shape = part.contains("!=")
            || part.contains('=')
            || part.contains(" in ")
            || part.contains(" notin ")
            || !part.contains(' ');
        if !valid_key || !shape {
            return Err(format!(
                "{part:?} is not a label requirement (key=value, key!=value, key in (a,b), key, !key)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "apiVersion: canaryflow.io/v1
kind: Upgrade
metadata: {name: istio-1-6-8}
spec:
  from: {revision: default}
  to: {revision: 1-6-8, version: 1.6.8, manifests: manifests.yaml}
  namespaces: {selector: istio-injection=enabled}
  clusters:
    - {name: canary-eu, context: canary-eu}
    - {name: prod-eu, context: prod-eu}
  waves:
    - {clusters: [canary-eu], soak: 10m}
    - {clusters: [prod-eu], maxParallel: 2, approval: required}
  onFailure: rollback
";

    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("manifests.yaml"), "---\n").expect("write");
        dir
    }

    fn parse(text: &str) -> Result<UpgradeSpec, SpecError> {
        let dir = base();
        UpgradeSpec::parse(text, dir.path())
    }

    #[test]
    fn the_design_example_parses() {
        let spec = parse(SPEC).expect("valid");
        assert_eq!((spec.from.0.as_str(), spec.to.0.as_str(), spec.to_version.as_str()), ("default", "1-6-8", "1.6.8"));
        assert_eq!(spec.waves.len(), 2);
        assert_eq!(spec.waves[0].soak_ms, 600_000);
        assert!(spec.waves[1].approval);
        assert_eq!(spec.on_failure, OnFailure::Rollback);
        assert_eq!(spec.namespaces.selector.as_deref(), Some("istio-injection=enabled"));
        assert_eq!(spec.shared, SharedPolicy::default(), "CRDs upgraded, the node agents kept");
        let asked = parse(
            &SPEC.replace("  onFailure: rollback", "  onFailure: rollback\n  shared: {cni: upgrade, crds: keep}"),
        )
        .expect("valid");
        assert_eq!(
            (asked.shared.crds, asked.shared.cni, asked.shared.ztunnel),
            (SharedChoice::Keep, SharedChoice::Upgrade, SharedChoice::Keep)
        );
    }

    fn rejected(from: &str, to: &str) -> SpecError {
        parse(&SPEC.replace(from, to)).expect_err("rejected")
    }

    #[test]
    fn every_rule_names_its_field_and_line() {
        let dotted = rejected("{revision: 1-6-8,", "{revision: 1.6.8,");
        assert_eq!((dotted.line, dotted.field.as_str()), (Some(6), "spec.to.revision"));
        assert!(dotted.message.contains("use \"1-6-8\""), "{dotted}");
        assert!(rejected("{revision: 1-6-8,", "{revision: \"\",").message.contains("26940"));
        assert!(rejected("{revision: 1-6-8,", "{revision: default,").message.contains("cannot be \"default\""));
        assert!(rejected("{revision: default}", "{revision: 1-6-8}").message.contains("same as spec.from.revision"));
        assert!(rejected("version: 1.6.8", "version: 1.6").message.contains("not an Istio version"));
        assert!(rejected("manifests: manifests.yaml", "manifests: nope.yaml").message.contains("does not exist"));
        assert!(
            rejected("{name: prod-eu, context: prod-eu}", "{name: canary-eu, context: prod-eu}")
                .message
                .contains("listed twice")
        );
        assert!(rejected("[prod-eu], maxParallel: 2", "[prod-us], maxParallel: 2").message.contains("\"prod-us\""));
        assert!(
            rejected("[prod-eu], maxParallel: 2", "[canary-eu], maxParallel: 2").message.contains("more than one wave")
        );
        assert_eq!(rejected("maxParallel: 2", "maxParallel: 0").field, "spec.waves[1].maxParallel");
        assert!(rejected("soak: 10m", "soak: ten").message.contains("not a duration"));
        assert!(rejected("onFailure: rollback", "onFailure: panic").message.contains("\"pause\""));
        let shared = rejected("  onFailure: rollback", "  onFailure: rollback\n  shared: {cni: replace}");
        assert_eq!((shared.field.as_str(), shared.line), ("spec.shared.cni", Some(15)));
        assert!(shared.message.contains("\"upgrade\" or \"keep\""), "{shared}");
        assert!(rejected("kind: Upgrade", "kind: Downgrade").message.contains("expected Upgrade"));
        let orphan = parse(&SPEC.replace("    - {clusters: [prod-eu], maxParallel: 2, approval: required}\n", ""))
            .expect_err("orphan");
        assert!(orphan.message.contains("prod-eu is in no wave"), "{orphan}");
    }

    #[test]
    fn unknown_fields_and_malformed_yaml_are_refused_with_their_line() {
        let unknown = rejected("  onFailure: rollback", "  onFailure: rollback\n  retries: 3");
        assert_eq!(unknown.line, Some(15));
        assert!(unknown.message.contains("unknown field `retries`"), "{unknown}");
        let malformed = parse("apiVersion: canaryflow.io/v1\nkind: [Upgrade\n").expect_err("malformed");
        assert!(malformed.line.is_some(), "{malformed}");
    }

    #[test]
    fn durations_read_like_go_durations() {
        assert_eq!(parse_duration_ms("10m"), Some(600_000));
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("10"), None);
        assert_eq!(parse_duration_ms("m"), None);
    }
}
