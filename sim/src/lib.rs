//! A simulated fleet of Kubernetes clusters running Istio: real HTTP
//! servers that speak the Kubernetes REST API well enough for kube-rs and
//! kubectl, with controllers that behave like a cluster with Istio.
//!
//! It stands in for real clusters in canaryflow's tests, benchmarks and
//! demo, and shares no code with canaryflow's client side: it stores
//! objects as JSON, as an API server does, and knows Istio only from
//! `ISTIO-REFERENCE.md`.
//!
//! What it does:
//! - the API: discovery, get/list (label and field selectors, `limit`),
//!   create, replace, delete (also by label selector), patch (merge, JSON,
//!   strategic merge, server-side apply with field ownership), watch,
//!   `Status` errors, and `Table` answers for kubectl;
//! - controllers: workloads roll out when their template changes; new pods
//!   are injected as the webhook configurations present decide; proxies are
//!   ready only while their istiod is; Istio config is validated only while
//!   the validating webhook's Service has a live istiod;
//! - faults, per cluster, at start or while running.
//!
//! Start at [`Fleet::start`].
//!
//! ```no_run
//! # async fn run() -> Result<(), canaryflow_sim::FleetError> {
//! let fleet = canaryflow_sim::Fleet::start(canaryflow_sim::FleetConfig { clusters: 3, ..Default::default() }).await?;
//! std::fs::write("/tmp/kubeconfig", fleet.kubeconfig()).expect("write");
//! fleet.clusters()[1].faults.update(|faults| faults.down = true);
//! # Ok(()) }
//! ```

mod faults;
mod fleet;
mod istio;
mod kube;

pub use crate::faults::{FaultConfig, Faults};
pub use crate::fleet::{CLUSTERS_COUNT_MAX, ClusterHandle, Fleet, FleetConfig, FleetError};
pub use crate::istio::charts::{
    GatewayKind, Render, Revision, base, cni, control_plane, crds, discovery, gateway, manifests_yaml,
    manifests_yaml_for, operator, profile, revision_tag, to_yaml, ztunnel,
};
pub use crate::istio::installer::{Component, Installer, installed, objects_from_yaml};
pub use crate::kube::resources::KubeVersion;

#[cfg(test)]
mod fixtures;
