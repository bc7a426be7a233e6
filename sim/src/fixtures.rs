//! What the unit tests start from: a cluster with namespace `shop`, and
//! Deployment `web` as JSON.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{Cluster, WriteOptions};
use crate::faults::{FaultConfig, Faults};
use crate::resources;

/// A cluster named `name` (rollouts due at once, no faults) with namespace
/// `shop`, created by `writer`.
pub fn shop(name: &str, writer: &WriteOptions) -> Cluster {
    let cluster = Cluster::new(name, 0, Duration::ZERO, Arc::new(Faults::new(FaultConfig::default(), 1)));
    let namespaces = resources::find("", "v1", "namespaces").expect("served");
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
