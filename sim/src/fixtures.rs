//! What the unit tests start from: a bare API server (no programs behind
//! its Services) with namespace `shop`, and Deployment `web` as JSON.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::faults::{FaultConfig, Faults};
use crate::kube::cluster::{Cluster, WriteOptions};
use crate::kube::resources;
use crate::kube::resources::KubeVersion;
use crate::kube::state::{ReadinessGates, ServiceKey, State};
use crate::kube::webhooks::{Call, Programs};

/// A cluster named `name` (rollouts due at once, no faults) with namespace
/// `shop`, created by `writer`.
pub fn shop(name: &str, writer: &WriteOptions) -> Cluster {
    let faults = Arc::new(Faults::new(FaultConfig::default(), 1));
    let cluster = Cluster::new(name, 0, Duration::ZERO, faults, Arc::new(NoPrograms), KubeVersion::default());
    let namespaces = resources::builtin("", "v1", "namespaces");
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    cluster.create(namespaces, "", namespace, writer).expect("namespace");
    cluster
}

/// Deployment `shop/web`: `replicas` pods labelled `app: web` and `version`.
pub fn web(replicas: u64, version: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "version": version}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}})
}

/// No programs: every webhook call is a pod that accepts anything, no
/// readiness follows a Service, and nothing answers through the proxy.
#[derive(Debug, Default)]
pub struct NoPrograms;

impl ReadinessGates for NoPrograms {
    fn readiness_follows(&self, _: &Value) -> Option<ServiceKey> {
        None
    }
}

impl Programs for NoPrograms {
    fn admit(&self, _: &State, _: &Call<'_>, object: Value) -> Result<Value, String> {
        Ok(object)
    }

    fn serve(&self, _: &State, _: &Value, _: u16, _: &str) -> Option<(u16, Value)> {
        None
    }
}
