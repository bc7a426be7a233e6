//! The Istio revision-based ("canary") control-plane upgrade, as durable
//! workflows on `canaryflow-engine`, driving clusters through kube-rs.
//!
//! A platform engineer gives an upgrade spec ([`UpgradeSpec`]) and
//! kubeconfig contexts; [`prepare`] parses it, reads the rendered manifests
//! and looks at every cluster (read-only); [`Prepared::workflow`] turns
//! that into a plan of steps with compensations ([`plan::build`]), for the
//! engine to run with the activities [`register_all`] provides.
//!
//! What it leaves out: running anything (the engine does), rendering
//! manifests (istioctl or helm does), and credentials (clusters are named
//! by kubeconfig path and context; nothing secret reaches the log).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let prepared = canaryflow_workflows::prepare("upgrade.yaml".as_ref()).await?;
//! let workflow = prepared.workflow()?; // a canaryflow_engine::NewWorkflow
//! # Ok(()) }
//! ```

mod activities;
mod discovery;
mod inputs;
mod istio;
mod kube_ops;
mod manifests;
pub mod ownership;
pub mod plan;
mod prechecks;
mod records;
mod spec;
mod summary;

use std::collections::BTreeMap;
use std::path::Path;

use canaryflow_engine::{Compensation, NewWorkflow, Payload, StepSpec};

pub use crate::activities::{ACTIVITIES, Settings, register_all};
pub use crate::discovery::{DiscoveryError, written};
pub use crate::inputs::*;
pub use crate::istio::{Injection, PodView, image_version, injected_by, uninstall_selector};
pub use crate::manifests::Manifests;
pub use crate::prechecks::SKEW_MINORS_MAX;
pub use crate::records::installed_objects;
pub use crate::spec::*;
pub use crate::summary::{ClusterSummary, summarize};

/// Why an upgrade cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The spec (or its manifests) breaks a rule.
    #[error("{path}: {error}")]
    Spec {
        /// The spec file.
        path: String,
        /// What is wrong.
        #[source]
        error: SpecError,
    },
    /// One or more clusters cannot be upgraded as specified.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Clusters(Vec<DiscoveryError>),
    /// The plan could not be made.
    #[error("planning: {0}")]
    Plan(#[from] canaryflow_engine::PlanError),
}

/// A checked spec, its manifests, and what each cluster looks like.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The spec.
    pub spec: UpgradeSpec,
    /// The manifests.
    pub manifests: Manifests,
    /// What discovery saw, per cluster, in spec order.
    pub clusters: Vec<ClusterDiscovery>,
}

/// Parses `spec_path`, reads the manifests, and reads every cluster. Writes nothing anywhere.
pub async fn prepare(spec_path: &Path) -> Result<Prepared, PrepareError> {
    let spec_error = |error| PrepareError::Spec { path: spec_path.display().to_string(), error };
    let spec = UpgradeSpec::load(spec_path).map_err(spec_error)?;
    let manifests =
        Manifests::load(&spec.manifests, &spec.to, &spec.to_version, &spec.manifest_namespaces).map_err(spec_error)?;
    let clusters = kube_ops::Clusters::default();
    let mut found = discovery::discover(&clusters, &spec, &manifests).await.map_err(PrepareError::Clusters)?;
    found.sort_by_key(|d| spec.clusters.iter().position(|c| c.name == d.cluster.name));
    Ok(Prepared { spec, manifests, clusters: found })
}

impl Prepared {
    /// Attaches what earlier canaryflow upgrades recorded of the revision
    /// this one removes: `history` gives a workflow's events by its id,
    /// when this data directory holds it.
    pub fn attach_install_records(&mut self, history: impl Fn(&str) -> Option<Vec<canaryflow_engine::RecordedEvent>>) {
        for cluster in &mut self.clusters {
            let Some(events) = cluster.installed_by.as_deref().and_then(&history) else { continue };
            cluster.installed = installed_objects(&events, &cluster.cluster, &self.spec.from);
        }
    }

    /// Each cluster's part of the upgrade, sorted by who owns each piece.
    #[must_use]
    pub fn summaries(&self) -> Vec<ClusterSummary> {
        self.clusters.iter().map(|cluster| summarize(&self.spec, &self.manifests, cluster)).collect()
    }

    /// The workflow to start: its plan, and the input every step may read.
    pub fn workflow(&self) -> Result<NewWorkflow, PrepareError> {
        let carried = plan::Carried {
            crds: !self.manifests.crds.is_empty(),
            cni: !self.manifests.cni.is_empty(),
            ztunnel: !self.manifests.ztunnel.is_empty(),
        };
        let plan = plan::build(&self.spec, &self.clusters, carried)?;
        let input = UpgradeInput {
            spec: self.spec.clone(),
            control_plane: self.manifests.control_plane.clone(),
            gateways: self.manifests.gateways.clone(),
            crds: self.manifests.crds.clone(),
            cni: self.manifests.cni.clone(),
            ztunnel: self.manifests.ztunnel.clone(),
            clusters: self.clusters.clone(),
        };
        let input = Payload::json(&input)
            .map_err(|err| canaryflow_engine::PlanError::Bounds(format!("the upgrade input: {err}")))?;
        let mut labels = self.spec.labels.clone();
        labels.insert("canaryflow.io/kind".into(), "istio-upgrade".into());
        labels.insert("canaryflow.io/to".into(), self.spec.to.0.clone());
        if let [single] = self.spec.clusters.as_slice() {
            labels.insert("canaryflow.io/cluster".into(), single.name.clone());
        }
        Ok(NewWorkflow {
            definition: DEFINITION.into(),
            definition_version: DEFINITION_VERSION,
            name: self.spec.name.clone(),
            labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            input,
            plan,
        })
    }
}

/// What a step's compensation does, for people.
#[must_use]
pub fn compensation_of(step: &StepSpec) -> String {
    use crate::plan::activity;
    let activity_name = match &step.action {
        canaryflow_engine::StepAction::Activity { name, .. } => name.as_str(),
        _ => "",
    };
    match &step.compensation {
        Compensation::None if activity_name == activity::UPGRADE_CRDS => {
            "kept: CRDs are never deleted or downgraded (a newer CRD serves every revision)".into()
        }
        Compensation::None => "nothing to undo".into(),
        Compensation::Irreversible => "cannot be undone".into(),
        Compensation::Activity { name, .. } => match name.as_str() {
            activity::REMOVE_INSTALLED => "delete what it created, put back what it changed (from the record)".into(),
            activity::RESTORE_NODE_AGENT => "put the recorded DaemonSet back and wait until it runs".into(),
            activity::RESTORE_VALIDATION => {
                "restore what served validation and injection before, then restart what moved".into()
            }
            activity::RESTORE_GATEWAYS => "put the old gateways back and wait until they run".into(),
            activity::RESTORE_NAMESPACE => "restore the namespace's labels, then restart its workloads".into(),
            activity::RESTORE_TAG => "point the tag back, then restart its namespaces".into(),
            activity::REINSTALL_OLD => "re-apply the recorded objects of the old revision".into(),
            other => format!("run {other}"),
        },
    }
}
