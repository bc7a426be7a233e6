//! `Table` responses, so that `kubectl get` prints the columns a real
//! cluster's would (READY, STATUS, ...).

use serde_json::{Value, json};

use super::object;

/// A column: its name and whether it shows only with `-o wide`.
type Column = (&'static str, &'static str, u8);

fn columns(plural: &str) -> Vec<Column> {
    match plural {
        "pods" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        "services" => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "deployments" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        "statefulsets" => vec![("Name", "string", 0), ("Ready", "string", 0), ("Age", "string", 0)],
        "daemonsets" => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        "namespaces" => vec![("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
        "mutatingwebhookconfigurations" | "validatingwebhookconfigurations" => {
            vec![("Name", "string", 0), ("Webhooks", "integer", 0), ("Age", "string", 0)]
        }
        "configmaps" => vec![("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
        "secrets" => vec![("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
        _ => vec![("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn age(object: &Value, now: u64) -> String {
    let created = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(object::parse_rfc3339)
        .unwrap_or(now);
    object::age(now.saturating_sub(created))
}

fn number(object: &Value, pointer: &str) -> u64 {
    object.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

fn cells(plural: &str, object: &Value, now: u64) -> Vec<Value> {
    let name = json!(object::name(object));
    let age = json!(age(object, now));
    match plural {
        "pods" => {
            let statuses =
                object.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
            let total = object.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: u64 = statuses.iter().filter_map(|s| s["restartCount"].as_u64()).sum();
            let waiting = statuses.iter().find_map(|s| s.pointer("/state/waiting/reason").and_then(Value::as_str));
            let status =
                waiting.or_else(|| object.pointer("/status/phase").and_then(Value::as_str)).unwrap_or("Pending");
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts),
                age,
                object["status"]["podIP"].clone(),
                object["spec"]["nodeName"].clone(),
            ]
        }
        "services" => {
            let ports: Vec<String> = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                .collect();
            let external =
                if object.pointer("/spec/type") == Some(&json!("LoadBalancer")) { "<pending>" } else { "<none>" };
            let selector: Vec<String> = object
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            vec![
                name,
                object.pointer("/spec/type").cloned().unwrap_or(json!("ClusterIP")),
                object.pointer("/spec/clusterIP").cloned().unwrap_or(json!("None")),
                json!(external),
                json!(ports.join(",")),
                age,
                json!(if selector.is_empty() { "<none>".to_string() } else { selector.join(",") }),
            ]
        }
        "deployments" => {
            let containers: Vec<&Value> = object
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
            let images: Vec<&str> = containers.iter().filter_map(|c| c["image"].as_str()).collect();
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    number(object, "/status/readyReplicas"),
                    object.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1)
                )),
                json!(number(object, "/status/updatedReplicas")),
                json!(number(object, "/status/availableReplicas")),
                age,
                json!(names.join(",")),
                json!(images.join(",")),
            ]
        }
        "statefulsets" => vec![
            name,
            json!(format!("{}/{}", number(object, "/status/readyReplicas"), number(object, "/spec/replicas"))),
            age,
        ],
        "daemonsets" => vec![
            name,
            json!(number(object, "/status/desiredNumberScheduled")),
            json!(number(object, "/status/currentNumberScheduled")),
            json!(number(object, "/status/numberReady")),
            json!(number(object, "/status/updatedNumberScheduled")),
            json!(number(object, "/status/numberAvailable")),
            age,
        ],
        "namespaces" => vec![name, object.pointer("/status/phase").cloned().unwrap_or(json!("Active")), age],
        "mutatingwebhookconfigurations" | "validatingwebhookconfigurations" => {
            vec![name, json!(object.get("webhooks").and_then(Value::as_array).map_or(0, Vec::len)), age]
        }
        "configmaps" => {
            vec![name, json!(object.get("data").and_then(Value::as_object).map_or(0, serde_json::Map::len)), age]
        }
        "secrets" => vec![
            name,
            object.get("type").cloned().unwrap_or(json!("Opaque")),
            json!(object.get("data").and_then(Value::as_object).map_or(0, serde_json::Map::len)),
            age,
        ],
        _ => vec![name, age],
    }
}

/// A `Table` of `objects` of `plural`; `headers` false leaves out the
/// column definitions (watch events after the first).
#[must_use]
pub fn table<'a>(
    plural: &str,
    objects: impl IntoIterator<Item = &'a Value>,
    resource_version: u64,
    now: u64,
    headers: bool,
) -> Value {
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|object| {
            let metadata = object.get("metadata").cloned().unwrap_or(Value::Null);
            json!({
                "cells": cells(plural, object, now),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}
            })
        })
        .collect();
    let mut table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version.to_string()}, "rows": rows});
    if headers {
        table["columnDefinitions"] = columns(plural)
            .into_iter()
            .map(|(name, kind, priority)| {
                let format = if name == "Name" { "name" } else { "" };
                json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
            })
            .collect();
    }
    table
}
