//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! Every write records which manager owns which fields. An apply by manager
//! M merges M's configuration into the object, removes the fields M applied
//! before and no longer applies (unless another manager owns them too), and
//! is refused with a conflict when it would change a field another manager
//! owns, unless forced. Field sets are kept in the `FieldsV1` form a real
//! API server writes, so kubectl's own edits of `managedFields` work.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::patch::{is_atomic_map, is_primitive_set, merge_key, strategic};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// A map key.
    Field(String),
    /// A list item, by its merge key, as compact JSON (`{"name":"istio-proxy"}`).
    Key(String),
    /// A list item by position.
    Index(usize),
    /// A member of a set of primitives, as JSON.
    Member(String),
}

impl Step {
    /// This step as a key of a `fieldsV1` tree (`f:name`, `k:{..}`, `i:0`, `v:..`).
    fn fields_v1_key(&self) -> String {
        match self {
            Step::Field(name) => format!("f:{name}"),
            Step::Key(item) => format!("k:{item}"),
            Step::Index(at) => format!("i:{at}"),
            Step::Member(member) => format!("v:{member}"),
        }
    }
}

type Path = Vec<Step>;
type FieldSet = BTreeSet<Path>;

/// Top-level and metadata fields that no manager owns.
const UNOWNED_METADATA: [&str; 9] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
];

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    fields: FieldSet,
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// Fields owned by other managers would change: (manager, field).
    Conflicts(Vec<(String, String)>),
    /// The configuration cannot be merged.
    Invalid(String),
}

/// Applies `config` for `manager` to `live` (None: the object is new).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    time: &str,
) -> Result<Value, ApplyError> {
    let mut object = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries = read_entries(&object);
    let applied = owned_paths(config);
    let api_version = config.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    let is_mine = |entry: &Entry| entry.manager == manager && entry.operation == "Apply";

    let mut conflicts = Vec::new();
    let mut conflicting = FieldSet::new();
    for entry in entries.iter().filter(|entry| !is_mine(entry)) {
        for path in entry.fields.intersection(&applied) {
            if get(&object, path) != get(config, path) {
                conflicts.push((entry.manager.clone(), dotted(path)));
                conflicting.insert(path.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for entry in entries.iter_mut().filter(|entry| !is_mine(entry)) {
        entry.fields.retain(|path| !conflicting.contains(path));
    }
    let previous: FieldSet =
        entries.iter().filter(|entry| is_mine(entry)).flat_map(|entry| entry.fields.clone()).collect();
    let others: FieldSet =
        entries.iter().filter(|entry| !is_mine(entry)).flat_map(|entry| entry.fields.clone()).collect();
    for path in previous.iter().filter(|path| !applied.contains(*path) && !others.contains(*path)) {
        remove(&mut object, path);
    }
    let mut merged = strategic(object, &strip_identity(config)).map_err(ApplyError::Invalid)?;
    entries.retain(|entry| !is_mine(entry));
    entries.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version,
        time: time.into(),
        fields: applied,
    });
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// Records an ordinary write (create, update, patch) by `manager`: it owns
/// every field it changed, and other managers lose those.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, time: &str) {
    // Only the fields that differ are looked at, and only the entries that
    // own one of them (or are the writer's) are parsed and written again:
    // a restart changes one annotation of a large object.
    let changed = differing_paths(new, old, &|this, other| this != other);
    let gone = old.map_or_else(FieldSet::new, |old| differing_paths(old, Some(new), &|_, other| other.is_none()));
    let recorded: Vec<Value> = old
        .and_then(|old| old.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_writers = |entry: &Value| entry["manager"] == manager && entry["operation"] == "Update";
    let mut entries: Vec<Value> = Vec::with_capacity(recorded.len() + 1);
    let mut writers_found = false;
    for raw in recorded {
        let writers = is_writers(&raw);
        writers_found |= writers;
        let touched = (!changed.is_empty() || !gone.is_empty())
            && (writers || changed.iter().chain(&gone).any(|path| owns(&raw, path)));
        if !touched {
            if entry_has_fields(&raw) {
                entries.push(raw);
            }
            continue;
        }
        let mut entry = read_entry(&raw);
        entry.fields.retain(|path| !changed.contains(path) && !gone.contains(path));
        if writers {
            entry.fields.extend(changed.iter().cloned());
            entry.time = time.into();
        }
        if !entry.fields.is_empty() {
            entries.push(render_entry(&entry));
        }
    }
    if !writers_found && !changed.is_empty() {
        let api_version = new.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        let entry = Entry {
            manager: manager.into(),
            operation: "Update".into(),
            api_version,
            time: time.into(),
            fields: changed,
        };
        entries.push(render_entry(&entry));
    }
    set_managed_fields(new, entries);
}

/// The paths `this` sets that a manager can own and for which `keep(value
/// in this, value in other)` holds; subtrees equal in both are skipped.
fn differing_paths(
    this: &Value,
    other: Option<&Value>,
    keep: &dyn Fn(Option<&Value>, Option<&Value>) -> bool,
) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = this.as_object() else { return out };
    for (key, value) in map {
        let other_value = other.and_then(|other| other.get(key));
        match key.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for (field, child) in value.as_object().into_iter().flatten() {
                    if !UNOWNED_METADATA.contains(&field.as_str()) {
                        let path = vec![Step::Field("metadata".into()), Step::Field(field.clone())];
                        let other_child = other_value.and_then(|m| m.get(field));
                        differing(child, Some(child), other_child, field, path, keep, &mut out);
                    }
                }
            }
            _ => differing(value, Some(value), other_value, key, vec![Step::Field(key.clone())], keep, &mut out),
        }
    }
    out
}

/// The owned paths under `path` of `shape` (a map's fields, a keyed list's
/// items and their fields, a set's members; anything else is one leaf),
/// keeping a path when `keep` holds for the values found at it in this
/// object (`here`) and in the other (`there`). Subtrees equal in both are
/// skipped whole.
#[allow(clippy::too_many_arguments, reason = "a recursion's state")]
fn differing(
    shape: &Value,
    here: Option<&Value>,
    there: Option<&Value>,
    field: &str,
    path: Path,
    keep: &dyn Fn(Option<&Value>, Option<&Value>) -> bool,
    out: &mut FieldSet,
) {
    if here.is_some() && here == there {
        return;
    }
    match shape {
        Value::Object(map) if !map.is_empty() && !is_atomic_map(field) => {
            for (key, child) in map {
                let mut next = path.clone();
                next.push(Step::Field(key.clone()));
                let (here, there) = (here.and_then(|h| h.get(key)), there.and_then(|t| t.get(key)));
                differing(child, here, there, key, next, keep, out);
            }
        }
        Value::Array(items) if is_primitive_set(field) => {
            for item in items {
                let member = item.to_string();
                if keep(member_in(here, &member), member_in(there, &member)) {
                    let mut next = path.clone();
                    next.push(Step::Member(member.clone()));
                    out.insert(next);
                }
            }
        }
        Value::Array(items) => {
            match merge_key(field, items).filter(|key| items.iter().all(|i| i.get(*key).is_some())) {
                Some(key) if !items.is_empty() => {
                    for item in items {
                        let id = json!({ key: item[key] }).to_string();
                        let (item_here, item_there) = (item_in(here, &id), item_in(there, &id));
                        let mut next = path.clone();
                        next.push(Step::Key(id.clone()));
                        if item_here.is_some() && item_here == item_there {
                            continue;
                        }
                        if keep(item_here, item_there) {
                            out.insert(next.clone());
                        }
                        for (child_key, child) in item.as_object().into_iter().flatten() {
                            let mut child_path = next.clone();
                            child_path.push(Step::Field(child_key.clone()));
                            let (here, there) =
                                (item_here.and_then(|h| h.get(child_key)), item_there.and_then(|t| t.get(child_key)));
                            differing(child, here, there, child_key, child_path, keep, out);
                        }
                    }
                }
                _ => {
                    if keep(here, there) {
                        out.insert(path);
                    }
                }
            }
        }
        _ => {
            if keep(here, there) {
                out.insert(path);
            }
        }
    }
}

/// The config without the fields that identify the object (and none that a manager owns).
fn strip_identity(config: &Value) -> Value {
    let mut config = config.clone();
    if let Some(map) = config.as_object_mut() {
        map.remove("status");
    }
    config
}

/// Every field `object` sets that a manager can own.
fn owned_paths(object: &Value) -> FieldSet {
    differing_paths(object, None, &|_, _| true)
}

/// The member of a primitive set written `member` (as JSON), as `get` finds it.
fn member_in<'a>(list: Option<&'a Value>, member: &str) -> Option<&'a Value> {
    let wanted: Value = serde_json::from_str(member).ok()?;
    list?.as_array()?.iter().find(|item| **item == wanted)
}

/// The item of a keyed list identified by `id`, as `get` finds it.
fn item_in<'a>(list: Option<&'a Value>, id: &str) -> Option<&'a Value> {
    find_item(list?.as_array()?, id).map(|(_, item)| item)
}

fn find_item<'a>(items: &'a [Value], key: &str) -> Option<(usize, &'a Value)> {
    let wanted: Map<String, Value> = serde_json::from_str(key).ok()?;
    items.iter().enumerate().find(|(_, item)| wanted.iter().all(|(k, v)| item.get(k) == Some(v)))
}

fn get<'a>(value: &'a Value, path: &Path) -> Option<&'a Value> {
    let mut current = value;
    for step in path {
        current = match step {
            Step::Field(name) => current.get(name)?,
            Step::Key(key) => find_item(current.as_array()?, key)?.1,
            Step::Index(at) => current.get(*at)?,
            Step::Member(member) => current.as_array()?.iter().find(|item| item.to_string() == *member)?,
        };
    }
    Some(current)
}

fn remove(value: &mut Value, path: &Path) {
    let Some((last, parent_path)) = path.split_last() else { return };
    let mut parent = value;
    for step in parent_path {
        let next = match step {
            Step::Field(name) => parent.get_mut(name),
            Step::Key(key) => {
                let at = parent.as_array().and_then(|items| find_item(items, key)).map(|(at, _)| at);
                at.and_then(|at| parent.get_mut(at))
            }
            Step::Index(at) => parent.get_mut(*at),
            Step::Member(_) => None,
        };
        let Some(next) = next else { return };
        parent = next;
    }
    match last {
        Step::Field(name) => {
            if let Some(map) = parent.as_object_mut() {
                map.remove(name);
            }
        }
        Step::Key(key) => {
            if let Some(at) = parent.as_array().and_then(|items| find_item(items, key)).map(|(at, _)| at) {
                parent.as_array_mut().expect("checked array").remove(at);
            }
        }
        Step::Index(at) => {
            if let Some(items) = parent.as_array_mut()
                && *at < items.len()
            {
                items.remove(*at);
            }
        }
        Step::Member(member) => {
            if let Some(items) = parent.as_array_mut() {
                items.retain(|item| item.to_string().as_str() != member.as_str());
            }
        }
    }
}

/// `.spec.replicas`, `.spec.template.spec.containers[name="web"].image`: for conflict messages.
fn dotted(path: &Path) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Step::Key(key) => {
                let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", inner.join(",")));
            }
            Step::Index(at) => out.push_str(&format!("[{at}]")),
            Step::Member(member) => out.push_str(&format!("[={member}]")),
        }
    }
    out
}

fn read_entries(object: &Value) -> Vec<Entry> {
    let Some(entries) = object.pointer("/metadata/managedFields").and_then(Value::as_array) else { return Vec::new() };
    entries.iter().map(read_entry).collect()
}

fn read_entry(entry: &Value) -> Entry {
    let text = |field: &str| entry.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut fields = FieldSet::new();
    if let Some(tree) = entry.get("fieldsV1") {
        parse_fields(tree, &Vec::new(), &mut fields);
    }
    Entry {
        manager: text("manager"),
        operation: text("operation"),
        api_version: text("apiVersion"),
        time: text("time"),
        fields,
    }
}

/// Whether a `managedFields` entry owns exactly `path` (without parsing it).
fn owns(entry: &Value, path: &Path) -> bool {
    let mut node = entry.get("fieldsV1");
    for step in path {
        node = node.and_then(|n| n.get(step.fields_v1_key()));
    }
    node.and_then(Value::as_object).is_some_and(|map| map.is_empty() || map.contains_key("."))
}

/// Whether an entry owns any field (an entry that owns none is dropped).
fn entry_has_fields(entry: &Value) -> bool {
    entry.get("fieldsV1").and_then(Value::as_object).is_some_and(|fields| !fields.is_empty())
}

fn parse_fields(tree: &Value, path: &Path, out: &mut FieldSet) {
    let Some(map) = tree.as_object() else { return };
    if map.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (key, child) in map {
        if key == "." {
            out.insert(path.clone());
            continue;
        }
        let step = if let Some(name) = key.strip_prefix("f:") {
            Step::Field(name.into())
        } else if let Some(item) = key.strip_prefix("k:") {
            Step::Key(item.into())
        } else if let Some(at) = key.strip_prefix("i:").and_then(|at| at.parse().ok()) {
            Step::Index(at)
        } else if let Some(member) = key.strip_prefix("v:") {
            Step::Member(member.into())
        } else {
            continue;
        };
        let mut next = path.clone();
        next.push(step);
        parse_fields(child, &next, out);
    }
}

fn render_fields(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for step in path {
            node = node
                .entry(step.fields_v1_key())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("field trees hold objects");
        }
        // Paths are sorted, so a path's children (if any) come right after it.
        let after = (std::ops::Bound::Excluded(path), std::ops::Bound::Unbounded);
        let has_children = fields.range::<Path, _>(after).next().is_some_and(|next| next.starts_with(path));
        if has_children {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

fn render_entry(entry: &Entry) -> Value {
    json!({
        "manager": entry.manager,
        "operation": entry.operation,
        "apiVersion": entry.api_version,
        "time": entry.time,
        "fieldsType": "FieldsV1",
        "fieldsV1": render_fields(&entry.fields),
    })
}

fn write_entries(object: &mut Value, entries: &[Entry]) {
    let rendered = entries.iter().filter(|entry| !entry.fields.is_empty()).map(render_entry).collect();
    set_managed_fields(object, rendered);
}

/// Sets `metadata.managedFields` to `entries` (rendered), or removes it when there are none.
fn set_managed_fields(object: &mut Value, entries: Vec<Value>) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            metadata.remove("managedFields");
        } else {
            metadata.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(replicas: u32, image: &str, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": labels},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}
        })
    }

    #[test]
    fn applying_creates_then_removes_what_is_no_longer_applied() {
        let first = apply(None, &config(2, "web:1", json!({"app": "web", "old": "x"})), "canaryflow", false, "t")
            .expect("create");
        assert_eq!(first.pointer("/metadata/labels/old"), Some(&json!("x")));
        let fields = &first["metadata"]["managedFields"][0];
        assert_eq!(fields["manager"], "canaryflow");
        assert_eq!(fields["operation"], "Apply");
        assert!(
            fields.pointer("/fieldsV1/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:image").is_some(),
            "{fields}"
        );
        let second =
            apply(Some(&first), &config(2, "web:2", json!({"app": "web"})), "canaryflow", false, "t").expect("update");
        assert_eq!(second.pointer("/metadata/labels/old"), None, "a label no longer applied is removed");
        assert_eq!(second.pointer("/spec/template/spec/containers/0/image"), Some(&json!("web:2")));
    }

    #[test]
    fn another_managers_field_conflicts_unless_forced() {
        let mut live =
            apply(None, &config(2, "web:1", json!({"app": "web"})), "canaryflow", false, "t").expect("create");
        let before = live.clone();
        live["spec"]["replicas"] = json!(5);
        record_update(Some(&before), &mut live, "hpa-controller", "t");
        let err = apply(Some(&live), &config(2, "web:1", json!({"app": "web"})), "canaryflow", false, "t")
            .expect_err("conflict");
        assert_eq!(err, ApplyError::Conflicts(vec![("hpa-controller".into(), ".spec.replicas".into())]));
        let forced =
            apply(Some(&live), &config(2, "web:1", json!({"app": "web"})), "canaryflow", true, "t").expect("forced");
        assert_eq!(forced["spec"]["replicas"], 2);
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(managers, ["canaryflow"], "the forced field changed hands and the emptied entry is gone");
    }

    #[test]
    fn a_field_shared_with_another_manager_survives_when_no_longer_applied() {
        let live =
            apply(None, &config(2, "web:1", json!({"app": "web", "team": "a"})), "first", false, "t").expect("create");
        let shared = apply(Some(&live), &config(2, "web:1", json!({"app": "web", "team": "a"})), "second", false, "t")
            .expect("same values");
        let dropped =
            apply(Some(&shared), &config(2, "web:1", json!({"app": "web"})), "first", false, "t").expect("drop team");
        assert_eq!(dropped.pointer("/metadata/labels/team"), Some(&json!("a")), "second still applies it");
    }

    #[test]
    fn fields_v1_round_trips() {
        let object = apply(None, &config(1, "web:1", json!({"app": "web"})), "m", false, "t").expect("create");
        let entries = read_entries(&object);
        let mut again = object.clone();
        write_entries(&mut again, &entries);
        assert_eq!(again, object);
    }
}

#[cfg(test)]
mod record_update_tests {
    //! `record_update` looks only at what differs; these pin it to the plain
    //! definition (every owned path of both objects compared, every entry
    //! parsed and written again) over many edits. The owned paths come from
    //! the same walk, unpruned; the `apply` tests above pin its paths.

    use super::*;

    /// The definition `record_update` must agree with.
    fn reference(old: Option<&Value>, new: &mut Value, manager: &str, time: &str) {
        let mut entries = old.map(read_entries).unwrap_or_default();
        let changed: FieldSet = owned_paths(new)
            .into_iter()
            .filter(|path| old.is_none_or(|old| get(old, path) != get(new, path)))
            .collect();
        let gone: FieldSet =
            old.map(owned_paths).unwrap_or_default().into_iter().filter(|path| get(new, path).is_none()).collect();
        if !changed.is_empty() || !gone.is_empty() {
            for entry in &mut entries {
                entry.fields.retain(|path| !changed.contains(path) && !gone.contains(path));
            }
            let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
            match entries.iter_mut().find(|entry| entry.manager == manager && entry.operation == "Update") {
                Some(entry) => {
                    entry.fields.extend(changed);
                    entry.time = time.into();
                }
                None if !changed.is_empty() => entries.push(Entry {
                    manager: manager.into(),
                    operation: "Update".into(),
                    api_version,
                    time: time.into(),
                    fields: changed,
                }),
                None => {}
            }
        }
        write_entries(new, &entries);
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "annotations": {"a": "1"},
                         "finalizers": ["x", "y"]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [
                                      {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}],
                                       "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                                      {"name": "side", "image": "side:1", "args": ["--x", "--y"]}],
                                           "volumes": [{"name": "v", "emptyDir": {}}]}}}
        })
    }

    /// A writer (field manager) and its change.
    type Edit = (&'static str, fn(&mut Value));

    /// Edits as different writers make them, each applied to the previous result.
    fn edits() -> Vec<Edit> {
        vec![
            ("kubectl-rollout", |d| d["spec"]["template"]["metadata"]["annotations"] = json!({"restartedAt": "t1"})),
            ("canaryflow", |d| d["spec"]["template"]["metadata"]["annotations"]["canaryflow.io/restart"] = json!("k")),
            ("hpa", |d| d["spec"]["replicas"] = json!(5)),
            ("kubectl-edit", |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2")),
            ("kubectl-edit", |d| {
                d["spec"]["template"]["spec"]["containers"][0]["env"]
                    .as_array_mut()
                    .expect("env")
                    .push(json!({"name": "C", "value": "3"}));
            }),
            ("other", |d| {
                d["spec"]["template"]["spec"]["containers"].as_array_mut().expect("containers").remove(1);
            }),
            ("other", |d| {
                d["metadata"]["labels"].as_object_mut().expect("labels").remove("app");
            }),
            ("kubectl-label", |d| d["metadata"]["labels"]["istio.io/rev"] = json!("1-6-8")),
            ("finalizer", |d| d["metadata"]["finalizers"] = json!(["y", "z"])),
            ("selector", |d| d["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}})),
            ("canaryflow", |d| d["spec"]["template"]["metadata"]["annotations"]["canaryflow.io/restart"] = json!("k2")),
            ("kubectl-edit", |d| d["spec"]["template"]["spec"]["containers"][0]["env"] = json!([])),
            ("nothing", |_| {}),
            ("other", |d| {
                d["spec"].as_object_mut().expect("spec").remove("template");
            }),
        ]
    }

    #[test]
    fn record_update_agrees_with_the_plain_definition_over_a_run_of_edits() {
        let mut fast = deployment();
        record_update(None, &mut fast, "creator", "t0");
        let mut plain = deployment();
        reference(None, &mut plain, "creator", "t0");
        assert_eq!(fast, plain, "on create");
        for (at, (manager, edit)) in edits().into_iter().enumerate() {
            let time = format!("t{}", at + 1);
            let (before_fast, before_plain) = (fast.clone(), plain.clone());
            edit(&mut fast);
            edit(&mut plain);
            record_update(Some(&before_fast), &mut fast, manager, &time);
            reference(Some(&before_plain), &mut plain, manager, &time);
            assert_eq!(fast, plain, "after edit {at} by {manager}");
        }
        let managers: Vec<&str> = fast["metadata"]["managedFields"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        // The template went last, and with it every field of the restarters and editors.
        assert_eq!(managers, ["creator", "hpa", "other", "kubectl-label", "finalizer", "selector"]);
    }

    #[test]
    fn record_update_agrees_with_the_plain_definition_for_every_single_edit() {
        for (at, (manager, edit)) in edits().into_iter().enumerate() {
            let mut base = deployment();
            record_update(None, &mut base, "creator", "t0");
            let (mut fast, mut plain) = (base.clone(), base.clone());
            edit(&mut fast);
            edit(&mut plain);
            record_update(Some(&base), &mut fast, manager, "t1");
            reference(Some(&base), &mut plain, manager, "t1");
            assert_eq!(fast, plain, "edit {at} by {manager}");
        }
    }
}
