//! The three patch formats of the Kubernetes API (server-side apply is in
//! `apply`): JSON merge patch (RFC 7386), JSON patch (RFC 6902), and
//! strategic merge patch, with the directives kubectl sends.

use serde_json::{Map, Value};

/// RFC 7386: objects merge, `null` deletes, everything else replaces.
#[must_use]
pub fn merge(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else { return patch.clone() };
    let mut out = target.as_object().cloned().unwrap_or_default();
    for (key, value) in patch {
        if value.is_null() {
            out.remove(key);
        } else {
            let merged = merge(out.get(key).unwrap_or(&Value::Null), value);
            out.insert(key.clone(), merged);
        }
    }
    Value::Object(out)
}

/// RFC 6902. Applies every operation or none.
pub fn json_patch(target: &Value, operations: &Value) -> Result<Value, String> {
    let operations = operations.as_array().ok_or("a JSON patch must be an array of operations")?;
    let mut doc = target.clone();
    for (index, operation) in operations.iter().enumerate() {
        apply_operation(&mut doc, operation).map_err(|why| format!("operation {index}: {why}"))?;
    }
    Ok(doc)
}

fn apply_operation(doc: &mut Value, operation: &Value) -> Result<(), String> {
    let op = operation.get("op").and_then(Value::as_str).ok_or("missing \"op\"")?;
    let path = operation.get("path").and_then(Value::as_str).ok_or("missing \"path\"")?;
    let value = || operation.get("value").cloned().ok_or_else(|| format!("{op} needs a \"value\""));
    let from = || operation.get("from").and_then(Value::as_str).ok_or_else(|| format!("{op} needs a \"from\""));
    match op {
        "add" => add(doc, path, value()?),
        "remove" => remove(doc, path).map(|_| ()),
        "replace" => {
            remove(doc, path)?;
            add(doc, path, value()?)
        }
        "move" => {
            let moved = remove(doc, from()?)?;
            add(doc, path, moved)
        }
        "copy" => {
            let copied = doc.pointer(from()?).cloned().ok_or("\"from\" does not exist")?;
            add(doc, path, copied)
        }
        "test" => {
            let found = doc.pointer(path).ok_or_else(|| format!("{path} does not exist"))?;
            if *found == value()? { Ok(()) } else { Err(format!("test failed at {path}")) }
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    if path.is_empty() {
        return Err("the whole document cannot be the target".into());
    }
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| format!("{path:?} is not a JSON pointer"))?;
    Ok((parent.to_string(), unescape(last)))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    let container = doc.pointer_mut(&parent).ok_or_else(|| format!("{parent:?} does not exist"))?;
    match container {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) if last == "-" => {
            items.push(value);
            Ok(())
        }
        Value::Array(items) => {
            let at: usize = last.parse().map_err(|_| format!("{last:?} is not an index"))?;
            if at > items.len() {
                return Err(format!("index {at} is past the end"));
            }
            items.insert(at, value);
            Ok(())
        }
        _ => Err(format!("{parent:?} is not an object or array")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let container = doc.pointer_mut(&parent).ok_or_else(|| format!("{parent:?} does not exist"))?;
    match container {
        Value::Object(map) => map.remove(&last).ok_or_else(|| format!("{path} does not exist")),
        Value::Array(items) => {
            let at: usize = last.parse().map_err(|_| format!("{last:?} is not an index"))?;
            if at >= items.len() {
                return Err(format!("{path} does not exist"));
            }
            Ok(items.remove(at))
        }
        _ => Err(format!("{parent:?} is not an object or array")),
    }
}

/// The key that identifies items of the list under `field`, when the list
/// merges by key (the `patchMergeKey` of the Kubernetes types). `None`
/// means the list is replaced whole, or is a set of primitives.
#[must_use]
pub fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "webhooks" => "name",
        "volumeMounts" | "volumeDevices" => "mountPath",
        "conditions" => "type",
        "hostAliases" => "ip",
        // Container ports merge by containerPort, Service ports by port.
        "ports" if items.iter().any(|item| item.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    };
    Some(key)
}

/// Whether the map under `field` is atomic (`+mapType=atomic` or
/// `+structType=atomic` in the Kubernetes types): a patch or an apply
/// replaces it whole. Service and workload selectors, node selectors.
#[must_use]
pub fn is_atomic_map(field: &str) -> bool {
    matches!(field, "selector" | "nodeSelector" | "namespaceSelector" | "objectSelector")
}

/// Whether the list under `field` is a set of primitives merged by value.
#[must_use]
pub fn is_primitive_set(field: &str) -> bool {
    field == "finalizers"
}

/// A strategic merge patch, as the API server applies one. Takes the
/// target by value and merges into it in place: the caller copies what it
/// must keep (copying at every level made a restart's one-annotation patch
/// cost a deep copy per level).
pub fn strategic(mut target: Value, patch: &Value) -> Result<Value, String> {
    strategic_into(&mut target, patch)?;
    Ok(target)
}

/// Merges `patch` into `target`, in place.
fn strategic_into(target: &mut Value, patch: &Value) -> Result<(), String> {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => strategic_map(target, patch),
        (target, patch) => {
            *target = strip_directives(patch);
            Ok(())
        }
    }
}

fn strategic_map(out: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *out = strip_directives(&Value::Object(patch.clone())).as_object().cloned().unwrap_or_default();
            return Ok(());
        }
        Some("delete") => {
            out.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch directive $patch: {other}")),
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|key, _| keep.contains(&key.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(doomed)) = (out.get_mut(field), value.as_array()) {
                items.retain(|item| !doomed.contains(item));
            }
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        match (out.get_mut(key), value) {
            (Some(Value::Object(current)), Value::Object(change)) if !is_atomic_map(key) => {
                strategic_map(current, change)?;
            }
            (Some(Value::Array(current)), Value::Array(change)) => {
                let merged = strategic_list(key, std::mem::take(current), change)?;
                *current = merged;
            }
            (None, Value::Array(change)) => {
                out.insert(key.clone(), Value::Array(strategic_list(key, Vec::new(), change)?));
            }
            (_, change) => {
                out.insert(key.clone(), strip_directives(change));
            }
        }
    }
    for (key, order) in patch.iter().filter_map(|(key, value)| Some((key.strip_prefix("$setElementOrder/")?, value))) {
        if let (Some(Value::Array(items)), Some(order)) = (out.get_mut(key), order.as_array()) {
            reorder(key, items, order);
        }
    }
    Ok(())
}

fn strategic_list(field: &str, current: Vec<Value>, change: &[Value]) -> Result<Vec<Value>, String> {
    if change.iter().any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Ok(change.iter().filter(|item| item.get("$patch").is_none()).map(strip_directives).collect());
    }
    if is_primitive_set(field) {
        let mut out = current;
        for item in change {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return Ok(out);
    }
    let Some(key) = merge_key(field, if change.is_empty() { &current } else { change }) else {
        return Ok(change.iter().map(strip_directives).collect());
    };
    let mut out = current;
    for item in change {
        let id = item.get(key).ok_or_else(|| format!("an item of {field} has no merge key {key:?}"))?;
        let position = out.iter().position(|existing| existing.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(at), true) => {
                out.remove(at);
            }
            (None, true) => {}
            (Some(at), false) => strategic_into(&mut out[at], item)?,
            (None, false) => out.push(strip_directives(item)),
        }
    }
    Ok(out)
}

/// Orders `items` as `order` lists them (by merge key); items not listed keep their place at the end.
fn reorder(field: &str, items: &mut Vec<Value>, order: &[Value]) {
    let Some(key) = merge_key(field, items) else { return };
    let mut ordered: Vec<Value> = Vec::with_capacity(items.len());
    for wanted in order {
        if let Some(at) = items.iter().position(|item| item.get(key) == wanted.get(key)) {
            ordered.push(items.remove(at));
        }
    }
    ordered.append(items);
    *items = ordered;
}

/// A patch value with its `$` directives removed, as stored.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), strip_directives(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_is_rfc_7386() {
        let target = json!({"metadata": {"labels": {"istio-injection": "enabled", "team": "a"}}, "spec": [1]});
        let patched = merge(
            &target,
            &json!({"metadata": {"labels": {"istio-injection": null, "istio.io/rev": "canary"}}, "spec": [2]}),
        );
        assert_eq!(patched, json!({"metadata": {"labels": {"team": "a", "istio.io/rev": "canary"}}, "spec": [2]}));
        assert_eq!(merge(&target, &json!({})), target, "kubectl sends {{}} when nothing changes");
    }

    #[test]
    fn json_patch_is_rfc_6902_and_all_or_nothing() {
        let target = json!({"metadata": {"labels": {"a/b": "x"}}, "items": [1, 2]});
        let patched = json_patch(
            &target,
            &json!([
                {"op": "replace", "path": "/metadata/labels/a~1b", "value": "y"},
                {"op": "add", "path": "/items/-", "value": 3},
                {"op": "remove", "path": "/items/0"},
                {"op": "test", "path": "/items/0", "value": 2}
            ]),
        )
        .expect("applies");
        assert_eq!(patched, json!({"metadata": {"labels": {"a/b": "y"}}, "items": [2, 3]}));
        assert!(json_patch(&target, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&target, &json!([{"op": "test", "path": "/items/0", "value": 9}])).is_err());
    }

    #[test]
    fn strategic_merge_handles_what_kubectl_sends() {
        let deployment = json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]}, {"name": "log", "image": "log:1"}]
        }}}});
        // kubectl rollout restart: a nested annotation.
        let restarted = strategic(deployment.clone(), &json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-28T21:36:34Z"}}}}})).expect("patch");
        assert_eq!(restarted.pointer("/spec/template/metadata/labels/app"), Some(&json!("web")), "maps merge");
        assert!(restarted.pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt").is_some());
        // kubectl apply (3-way): containers merge by name, with an element order.
        let applied = strategic(
            deployment.clone(),
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "log"}, {"name": "web"}],
                "containers": [{"name": "web", "image": "web:2"}]
            }}}}),
        )
        .expect("patch");
        let containers =
            applied.pointer("/spec/template/spec/containers").expect("containers").as_array().expect("array");
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["name"], "log", "$setElementOrder reorders");
        assert_eq!(containers[1]["image"], "web:2");
        assert_eq!(containers[1]["ports"], json!([{"containerPort": 80}]), "untouched fields of a merged item stay");
        // Deleting an item, replacing a map, dropping a key, retaining keys.
        let pruned = strategic(
            deployment.clone(),
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "$patch": "delete"}]}}}}),
        )
        .expect("patch");
        assert_eq!(pruned.pointer("/spec/template/spec/containers").and_then(Value::as_array).map(Vec::len), Some(1));
        let replaced =
            strategic(json!({"a": {"x": 1, "y": 2}}), &json!({"a": {"$patch": "replace", "z": 3}})).expect("patch");
        assert_eq!(replaced, json!({"a": {"z": 3}}));
        let retained = strategic(
            json!({"s": {"type": "Recreate", "rollingUpdate": {}}}),
            &json!({"s": {"$retainKeys": ["type"], "type": "Recreate"}}),
        )
        .expect("patch");
        assert_eq!(retained, json!({"s": {"type": "Recreate"}}));
        let finalizers =
            strategic(json!({"f": ["a", "b"]}), &json!({"$deleteFromPrimitiveList/f": ["a"]})).expect("patch");
        assert_eq!(finalizers, json!({"f": ["b"]}));
    }
}

#[cfg(test)]
mod atomic_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_service_selector_is_replaced_whole() {
        let live = json!({"spec": {"selector": {"app": "istiod", "istio": "pilot"}, "ports": [{"port": 443}]}});
        let patched =
            strategic(live, &json!({"spec": {"selector": {"app": "istiod", "istio.io/rev": "1-6-8"}}})).expect("patch");
        assert_eq!(patched["spec"]["selector"], json!({"app": "istiod", "istio.io/rev": "1-6-8"}));
        assert_eq!(patched["spec"]["ports"], json!([{"port": 443}]));
    }
}
