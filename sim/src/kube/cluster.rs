//! One simulated cluster: its objects, their versions, and every write.
//!
//! Objects are stored as JSON, as a real API server stores them (it knows
//! schemas; this one knows only what it checks). Every write goes through
//! validation and admission, gets the next `resourceVersion`, and becomes a
//! watch event kept in a bounded history.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::admission;
use super::apply::{self, ApplyError};
use super::object;
use super::patch;
use super::resources::{self, KubeVersion, ResourceType, Surface};
use super::selector::{FieldSelector, LabelSelector};
use super::state::{State, owner_of};
use super::status::ApiError;
use super::validate;
use super::watch::{EventType, WatchEvent, WatchStart, Watchers};
use super::webhooks::Programs;
use super::written::ItemsWritten;
use crate::faults::Faults;

/// How a write is made.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The field manager (`fieldManager`, or derived from the user agent).
    pub manager: String,
    /// `dryRun=All`: check and answer, store nothing.
    pub dry_run: bool,
    /// `force=true` on an apply.
    pub force: bool,
}

/// The kinds of patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`.
    Apply,
}

/// A list, with what a paging client needs.
#[derive(Debug)]
pub struct ListPage {
    /// The objects, shared with the store: a list copies nothing under the
    /// lock, and its answer is written straight from them.
    pub items: Vec<Arc<Value>>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// The token for the next page, if there is one.
    pub continue_token: Option<String>,
    /// How many objects are left after this page.
    pub remaining: usize,
}

/// One simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Its name (the kubeconfig context).
    pub name: String,
    state: Mutex<State>,
    events: Watchers,
    /// The JSON of list items as last written.
    pub items_written: ItemsWritten,
    /// What runs behind its Services.
    pub programs: Arc<dyn Programs>,
    /// The resource types it serves.
    pub resources: Surface,
    /// Its faults, switchable while it runs.
    pub faults: Arc<Faults>,
    /// How long a rollout takes before its new pods start.
    pub rollout_delay: Duration,
    /// Wakes the controller.
    pub wake: Notify,
}

impl Cluster {
    /// An empty cluster.
    #[must_use]
    pub fn new(
        name: &str,
        index: usize,
        rollout_delay: Duration,
        faults: Arc<Faults>,
        programs: Arc<dyn Programs>,
        kube_version: KubeVersion,
    ) -> Self {
        let events = Watchers::default();
        let state = State::new(index, programs.clone());
        Self {
            name: name.into(),
            state: Mutex::new(state),
            events,
            items_written: ItemsWritten::default(),
            programs,
            resources: Surface::new(kube_version),
            faults,
            rollout_delay,
            wake: Notify::new(),
        }
    }

    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("cluster state lock poisoned")
    }

    /// The open watches, which every write is handed to.
    #[must_use]
    pub fn events(&self) -> &Watchers {
        &self.events
    }

    /// Unix seconds now.
    #[must_use]
    pub fn now_seconds(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// `GET` one object, shared: copied only if it lacks its kind and apiVersion.
    pub fn get(&self, resource: &ResourceType, namespace: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let object = {
            let state = self.lock();
            let found = state.get_shared(resource.group, resource.plural, namespace, name);
            Arc::clone(found.ok_or_else(|| ApiError::not_found(resource, name))?)
        };
        Ok(stamped(object, resource))
    }

    /// `GET` a collection (one namespace, or all with `None`).
    pub fn list(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        after: Option<&str>,
    ) -> ListPage {
        let state = self.lock();
        let after = after.and_then(|token| token.split_once('/')).map(|(ns, name)| (ns.to_string(), name.to_string()));
        let matching: Vec<(&(String, String), &Arc<Value>)> = state
            .store(resource.group, resource.plural)
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| ns == wanted))
            .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
            .filter(|(_, object)| labels.matches(object::labels(object)) && fields.matches(object))
            .collect();
        let take = limit.filter(|limit| *limit > 0).unwrap_or(usize::MAX).min(matching.len());
        let continue_token = (take < matching.len()).then(|| {
            let (ns, name) = matching[take - 1].0;
            format!("{ns}/{name}")
        });
        let items = matching[..take].iter().map(|(_, object)| Arc::clone(object)).collect();
        ListPage { items, resource_version: state.resource_version(), continue_token, remaining: matching.len() - take }
    }

    /// `POST`: create.
    pub fn create(
        &self,
        resource: &ResourceType,
        namespace: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let mut object = normalize(&self.resources, resource, namespace, body, None)?;
        if object::name(&object).is_empty() {
            let prefix = object.pointer("/metadata/generateName").and_then(Value::as_str).map(str::to_string);
            let Some(prefix) = prefix else {
                return Err(ApiError::invalid(
                    resource,
                    "",
                    &[("metadata.name".into(), "Required value: name or generateName is required".into())],
                ));
            };
            let suffix = state.next_number();
            object::metadata_mut(&mut object).insert("name".into(), json!(format!("{prefix}{}", short_suffix(suffix))));
        }
        let name = object::name(&object).to_string();
        if state.get(resource.group, resource.plural, namespace, &name).is_some() {
            return Err(ApiError::already_exists(resource, &name));
        }
        self.check_namespace(&state, resource, namespace)?;
        validate::check(resource, &object, None)?;
        object = admission::admit(&state, self.programs.as_ref(), resource, object, "CREATE")?;
        self.initialize(&mut state, &mut object, resource);
        apply::record_update(None, &mut object, &options.manager, &object::rfc3339(self.now_seconds()));
        if is_definition(resource) {
            resources::check_definition(&object).map_err(|why| invalid_definition(resource, &name, why))?;
        }
        if !options.dry_run {
            if is_definition(resource) {
                self.resources.define(&object).map_err(|why| invalid_definition(resource, &name, why))?;
            }
            state.commit(&self.events, resource, Some(object.clone()), (namespace.to_string(), name.clone()));
            if resource.storage_key() == ("", "namespaces") {
                self.create_default_account(&mut state, &name);
            }
            object::metadata_mut(&mut object)
                .insert("resourceVersion".into(), json!(state.resource_version().to_string()));
            self.wake.notify_one();
        }
        stamp(&mut object, resource);
        Ok(object)
    }

    /// `PUT`: replace.
    pub fn replace(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut state = self.lock();
        let old = state
            .get_shared(resource.group, resource.plural, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let object = normalize(&self.resources, resource, namespace, body, Some(name))?;
        if let Some(expected) = object::resource_version(&object)
            && Some(expected) != object::resource_version(&old)
        {
            return Err(ApiError::conflict(resource, name));
        }
        self.update(&mut state, resource, &old, object, options)
    }

    /// `PATCH`; returns the object and whether it was created (an apply of a new object).
    pub fn patch(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        kind: PatchType,
        body: &Value,
        options: &WriteOptions,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        let mut state = self.lock();
        let old = state.get_shared(resource.group, resource.plural, namespace, name).cloned();
        let now = object::rfc3339(self.now_seconds());
        let Some(old) = old else {
            if kind != PatchType::Apply {
                return Err(ApiError::not_found(resource, name));
            }
            drop(state);
            let applied = self.apply_new(resource, namespace, name, body, options, &now)?;
            return Ok((Arc::new(applied), true));
        };
        let patched = match kind {
            PatchType::Merge => patch::merge(&old, body),
            PatchType::Strategic => patch::strategic(patch_base(&old, body, !options.manager.is_empty()), body)
                .map_err(ApiError::bad_request)?,
            PatchType::Json => patch::json_patch(&old, body)
                .map_err(|why| ApiError::invalid(resource, name, &[("patch".into(), why)]))?,
            PatchType::Apply => {
                check_apply_body(&self.resources, resource, namespace, name, body)?;
                apply::apply(Some(&old), body, &options.manager, options.force, &now)
                    .map_err(|err| apply_error(resource, name, err))?
            }
        };
        if let Some(expected) =
            body.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|rv| rv.parse::<u64>().ok())
            && kind != PatchType::Json
            && Some(expected) != object::resource_version(&old)
        {
            return Err(ApiError::conflict(resource, name));
        }
        let patched = normalize(&self.resources, resource, namespace, patched, Some(name))?;
        let mut options = options.clone();
        if kind == PatchType::Apply {
            options.manager = String::new(); // the apply recorded its own ownership
        }
        self.update(&mut state, resource, &old, patched, &options).map(|object| (object, false))
    }

    fn apply_new(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        body: &Value,
        options: &WriteOptions,
        now: &str,
    ) -> Result<Value, ApiError> {
        check_apply_body(&self.resources, resource, namespace, name, body)?;
        let applied = apply::apply(None, body, &options.manager, options.force, now)
            .map_err(|err| apply_error(resource, name, err))?;
        let mut create = WriteOptions { manager: String::new(), ..options.clone() };
        create.dry_run = options.dry_run;
        let mut created = self.create(resource, namespace, applied.clone(), &create)?;
        // `create` recorded no ownership (empty manager): keep the apply's.
        if let Some(fields) = applied.pointer("/metadata/managedFields") {
            object::metadata_mut(&mut created).insert("managedFields".into(), fields.clone());
            if !options.dry_run {
                let mut state = self.lock();
                if let Some(stored) = state.object_mut(resource, namespace, name) {
                    object::metadata_mut(Arc::make_mut(stored)).insert("managedFields".into(), fields.clone());
                }
            }
        }
        Ok(created)
    }

    fn update(
        &self,
        state: &mut State,
        resource: &ResourceType,
        old: &Arc<Value>,
        object: Value,
        options: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let name = object::name(old).to_string();
        let namespace = object::namespace(old).to_string();
        validate::check(resource, &object, Some(old))?;
        let mut object = admission::admit(state, self.programs.as_ref(), resource, object, "UPDATE")?;
        if is_definition(resource) {
            resources::check_definition(&object).map_err(|why| invalid_definition(resource, &name, why))?;
        }
        // Identity and status belong to the server.
        for field in ["uid", "creationTimestamp", "generation"] {
            match old.pointer(&format!("/metadata/{field}")) {
                Some(value) => {
                    object::metadata_mut(&mut object).insert(field.into(), value.clone());
                }
                None => {
                    object::metadata_mut(&mut object).remove(field);
                }
            }
        }
        if let Some(status) = old.get("status") {
            object["status"] = status.clone();
        }
        if !same_spec(&object, old) && old.pointer("/metadata/generation").is_some() {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_u64).unwrap_or(1) + 1;
            object::metadata_mut(&mut object).insert("generation".into(), json!(generation));
        }
        if !options.manager.is_empty() {
            apply::record_update(Some(old), &mut object, &options.manager, &object::rfc3339(self.now_seconds()));
        }
        if options.dry_run {
            stamp(&mut object, resource);
            return Ok(Arc::new(object));
        }
        if object == **old {
            return Ok(stamped(Arc::clone(old), resource));
        }
        if is_definition(resource) {
            self.resources.define(&object).map_err(|why| invalid_definition(resource, &name, why))?;
        }
        let key = (namespace, name);
        state.commit(&self.events, resource, Some(object), key.clone());
        self.wake.notify_one();
        // The answer is the object as stored: shared, not copied.
        let stored = state.get_shared(resource.group, resource.plural, &key.0, &key.1);
        Ok(stamped(Arc::clone(stored.expect("an object just committed is stored")), resource))
    }

    /// `DELETE` one object. Deleting a namespace deletes what is in it;
    /// deleting a workload deletes its pods.
    pub fn delete(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let mut object = state
            .get(resource.group, resource.plural, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        if !dry_run {
            self.remove(&mut state, resource, namespace, name);
            self.wake.notify_one();
        }
        stamp(&mut object, resource);
        Ok(object)
    }

    /// `DELETE` a collection, by selectors.
    pub fn delete_collection(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        dry_run: bool,
    ) -> Vec<Arc<Value>> {
        let doomed = self.list(resource, namespace, labels, fields, None, None).items;
        if dry_run {
            return doomed;
        }
        let mut state = self.lock();
        for object in &doomed {
            self.remove(&mut state, resource, object::namespace(object), object::name(object));
        }
        self.wake.notify_one();
        doomed
    }

    /// The serviceaccount controller's part: every namespace has account `default`.
    fn create_default_account(&self, state: &mut State, namespace: &str) {
        let accounts = resources::builtin("", "v1", "serviceaccounts");
        if state.get("", "serviceaccounts", namespace, "default").is_some() {
            return;
        }
        let mut account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}});
        self.initialize(state, &mut account, accounts);
        state.commit(&self.events, accounts, Some(account), (namespace.to_string(), "default".into()));
    }

    /// Removes an object and what depends on it.
    pub fn remove(&self, state: &mut State, resource: &ResourceType, namespace: &str, name: &str) {
        if is_definition(resource) {
            // Its custom objects go with it, and their type is no longer served.
            for defined in self.resources.defined_by(name).into_iter().take(1) {
                let doomed: Vec<(String, String)> = state
                    .all(defined.group, defined.plural)
                    .map(|o| (object::namespace(o).to_string(), object::name(o).to_string()))
                    .collect();
                for key in doomed {
                    state.commit(&self.events, defined, None, key);
                }
            }
            self.resources.undefine(name);
        }
        if resource.plural == "namespaces" {
            let namespaced: Vec<&'static ResourceType> =
                self.resources.all().into_iter().filter(|r| r.namespaced && !r.create_only).collect();
            for inner in namespaced {
                let names: Vec<String> =
                    state.in_namespace(inner.group, inner.plural, name).map(|o| object::name(o).to_string()).collect();
                for inner_name in names {
                    state.commit(&self.events, inner, None, (name.to_string(), inner_name));
                }
            }
        }
        if matches!(resource.plural, "deployments" | "statefulsets" | "daemonsets") {
            let pods = resources::builtin("", "v1", "pods");
            let owned: Vec<String> = state
                .in_namespace("", "pods", namespace)
                .filter(|pod| {
                    owner_of(pod).is_some_and(|(plural, _, owner)| plural == resource.plural && owner == name)
                })
                .map(|pod| object::name(pod).to_string())
                .collect();
            for pod in owned {
                state.commit(&self.events, pods, None, (namespace.to_string(), pod));
            }
        }
        state.commit(&self.events, resource, None, (namespace.to_string(), name.to_string()));
    }

    /// Starts a watch: the events to send first, and the live feed.
    /// `from` None or 0: every current object as ADDED. Otherwise the
    /// events after `from`, or 410 if they are no longer kept.
    pub fn watch(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        from: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let state = self.lock();
        let receiver = self.events.subscribe(resource.storage_key(), namespace)?;
        let initial = match from.filter(|rv| *rv > 0) {
            None => state
                .store(resource.group, resource.plural)
                .into_iter()
                .flat_map(|objects| objects.values())
                .filter(|object| namespace.is_none_or(|ns| object::namespace(object) == ns))
                .map(|object| {
                    Arc::new(WatchEvent {
                        resource_version: object::resource_version(object).unwrap_or(0),
                        resource: resource.storage_key(),
                        kind: EventType::Added,
                        object: object.clone(),
                        old: None,
                    })
                })
                .collect(),
            Some(rv) => state.history.since(rv).ok_or_else(|| ApiError::gone(rv))?,
        };
        Ok((initial, receiver))
    }

    fn check_namespace(&self, state: &State, resource: &ResourceType, namespace: &str) -> Result<(), ApiError> {
        if resource.namespaced && state.get("", "namespaces", "", namespace).is_none() {
            let namespaces = resources::builtin("", "v1", "namespaces");
            return Err(ApiError::not_found(namespaces, namespace));
        }
        Ok(())
    }

    /// Server-set fields of a new object.
    fn initialize(&self, state: &mut State, object: &mut Value, resource: &ResourceType) {
        let uid = state.new_uid();
        let created = object::rfc3339(self.now_seconds());
        let has_spec = object.get("spec").is_some();
        let metadata = object::metadata_mut(object);
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("creationTimestamp".into(), json!(created));
        if has_spec && resource.plural != "pods" {
            metadata.insert("generation".into(), json!(1));
        }
        match resource.plural {
            "namespaces" => {
                object["status"] = json!({"phase": "Active"});
            }
            "pods" if object.get("status").is_none_or(|status| status.get("phase").is_none()) => {
                let number = state.next_number();
                object["status"] = pod_status(state.index, number, true, &created, object);
            }
            // The API server's defaulting: a Deployment or StatefulSet
            // that names no replicas (one an autoscaler scales) runs one.
            "deployments" | "statefulsets" if object.pointer("/spec/replicas").is_none() => {
                if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("replicas".into(), json!(1));
                }
            }
            "services" if object.pointer("/spec/clusterIP").is_none() => {
                let number = state.next_number();
                if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert(
                        "clusterIP".into(),
                        json!(format!("10.96.{}.{}", (number / 250) % 250, number % 250 + 1)),
                    );
                    spec.entry("type").or_insert(json!("ClusterIP"));
                }
            }
            _ => {}
        }
    }

    /// Answers a SelfSubjectAccessReview from the cluster's RBAC denials.
    #[must_use]
    pub fn access_review(&self, body: &Value) -> Value {
        let attributes = body.pointer("/spec/resourceAttributes").cloned().unwrap_or(Value::Null);
        let text = |field: &str| attributes.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
        let (verb, group, resource) = (text("verb"), text("group"), text("resource"));
        let denied = self.faults.rbac_denies(&verb, &group, &resource);
        let mut review = body.clone();
        review["apiVersion"] = json!("authorization.k8s.io/v1");
        review["kind"] = json!("SelfSubjectAccessReview");
        review["status"] = if denied {
            json!({"allowed": false, "denied": true, "reason": format!("RBAC: {verb} {resource}.{group} is not allowed (simulated)")})
        } else {
            json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"cluster-admin\" (simulated)"})
        };
        review
    }
}

/// A pod's status: Running, Ready or not.
#[must_use]
pub fn pod_status(cluster: usize, number: u64, ready: bool, started: &str, pod: &Value) -> Value {
    let flag = if ready { "True" } else { "False" };
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c["name"], "image": c["image"], "ready": ready, "restartCount": 0, "started": true, "state": {"running": {"startedAt": started}}}))
        .collect();
    json!({
        "phase": "Running",
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": flag},
            {"type": "ContainersReady", "status": flag},
            {"type": "PodScheduled", "status": "True"}
        ],
        "containerStatuses": containers,
        "hostIP": format!("192.168.{}.{}", cluster % 250, number % 2 + 10),
        "podIP": format!("10.{}.{}.{}", 100 + cluster % 100, (number / 250) % 250, number % 250 + 1),
        "startTime": started
    })
}

/// Five characters from a number, like a generated name suffix.
#[must_use]
pub fn short_suffix(number: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = number.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A copy of `old` for a patch to merge into, without what the update
/// takes from `old` again in any case: its status (always kept), and its
/// managed fields when the write records ownership from `old`'s and the
/// patch does not set them. A restart's patch then copies neither to
/// throw it away.
fn patch_base(old: &Value, body: &Value, records_ownership: bool) -> Value {
    let Value::Object(fields) = old else { return old.clone() };
    let drop_managed_fields = records_ownership && body.pointer("/metadata/managedFields").is_none();
    let base = fields
        .iter()
        .filter(|(field, _)| field.as_str() != "status")
        .map(|(field, value)| match value {
            Value::Object(metadata) if field == "metadata" && drop_managed_fields => {
                let kept = metadata.iter().filter(|(key, _)| key.as_str() != "managedFields");
                (field.clone(), Value::Object(kept.map(|(key, value)| (key.clone(), value.clone())).collect()))
            }
            _ => (field.clone(), value.clone()),
        })
        .collect();
    Value::Object(base)
}

/// Whether two objects agree in everything but metadata and status (and
/// kind and apiVersion): a change there bumps `generation`.
fn same_spec(a: &Value, b: &Value) -> bool {
    fn spec(object: &Value) -> impl Iterator<Item = (&String, &Value)> {
        const NOT_SPEC: [&str; 4] = ["metadata", "status", "kind", "apiVersion"];
        object.as_object().into_iter().flatten().filter(|(field, _)| !NOT_SPEC.contains(&field.as_str()))
    }
    spec(a).count() == spec(b).count() && spec(a).all(|(field, value)| b.get(field) == Some(value))
}

/// `object` as `resource` names it; copied only if it names itself otherwise
/// (stored through another version of the same kind).
fn stamped(object: Arc<Value>, resource: &ResourceType) -> Arc<Value> {
    let version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    if version == Some(resource.api_version().as_str()) && kind == Some(resource.kind) {
        return object;
    }
    let mut object = Arc::unwrap_or_clone(object);
    stamp(&mut object, resource);
    Arc::new(object)
}

/// Whether `resource` is CustomResourceDefinitions.
fn is_definition(resource: &ResourceType) -> bool {
    resource.storage_key() == ("apiextensions.k8s.io", "customresourcedefinitions")
}

fn invalid_definition(resource: &ResourceType, name: &str, why: String) -> ApiError {
    ApiError::invalid(resource, name, &[("spec".into(), why)])
}

/// Sets kind and apiVersion as the request's resource names them.
fn stamp(object: &mut Value, resource: &ResourceType) {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(resource.api_version()));
        map.insert("kind".into(), json!(resource.kind));
    }
}

/// Checks a request body against the URL it came to, and makes it whole.
fn normalize(
    surface: &Surface,
    resource: &ResourceType,
    namespace: &str,
    body: Value,
    name: Option<&str>,
) -> Result<Value, ApiError> {
    let Value::Object(_) = body else {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    };
    let mut object = body;
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != resource.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    if let Some(version) = object.get("apiVersion").and_then(Value::as_str)
        && surface.all().iter().all(|r| r.api_version() != version || r.kind != resource.kind)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    let body_namespace = object::namespace(&object).to_string();
    if resource.namespaced {
        if !body_namespace.is_empty() && body_namespace != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        object::metadata_mut(&mut object).insert("namespace".into(), json!(namespace));
    } else {
        object::metadata_mut(&mut object).remove("namespace");
    }
    if let Some(name) = name {
        let body_name = object::name(&object);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        object::metadata_mut(&mut object).insert("name".into(), json!(name));
    }
    if resource.plural == "namespaces" {
        // Every namespace carries its own name as a label (Kubernetes 1.21+).
        let name = object::name(&object).to_string();
        if !name.is_empty() {
            object::metadata_map_mut(&mut object, "labels").insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    stamp(&mut object, resource);
    Ok(object)
}

fn check_apply_body(
    surface: &Surface,
    resource: &ResourceType,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<(), ApiError> {
    if body.get("kind").is_none() || body.get("apiVersion").is_none() {
        return Err(ApiError::bad_request("an apply patch must name its apiVersion and kind"));
    }
    normalize(surface, resource, namespace, body.clone(), Some(name)).map(|_| ())
}

fn apply_error(resource: &ResourceType, name: &str, err: ApplyError) -> ApiError {
    match err {
        ApplyError::Conflicts(conflicts) => ApiError::apply_conflict(resource, name, &conflicts),
        ApplyError::Invalid(why) => ApiError::invalid(resource, name, &[("patch".into(), why)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strategic-merge patch changes what it names and keeps the rest:
    /// the stored status, and every manager's ownership beside the
    /// patcher's (the patch merges into a copy without either).
    #[test]
    fn a_strategic_patch_keeps_the_status_and_records_ownership_beside_the_others() {
        let seed = WriteOptions { manager: "seed".into(), ..WriteOptions::default() };
        let cluster = crate::fixtures::shop("patch", &seed);
        let deployments = resources::builtin("apps", "v1", "deployments");
        cluster.create(deployments, "shop", crate::fixtures::web(2, "v1"), &seed).expect("create");
        super::super::controller::reconcile_pending(&cluster, &mut cluster.lock(), std::time::Instant::now());
        let before = cluster.lock().get("apps", "deployments", "shop", "web").cloned().expect("stored");
        assert!(before.get("status").is_some_and(|status| status["replicas"] == 2), "the controller wrote a status");

        let restart = json!({"spec": {"template": {"metadata": {"annotations": {"restarted": "1"}}}},
            "status": {"replicas": 99}});
        let restarter = WriteOptions { manager: "restarter".into(), ..WriteOptions::default() };
        let (patched, _) =
            cluster.patch(deployments, "shop", "web", PatchType::Strategic, &restart, &restarter).expect("patch");
        assert_eq!(patched.pointer("/spec/template/metadata/annotations/restarted"), Some(&json!("1")));
        assert_eq!(patched.get("status"), before.get("status"), "status is the server's, not the patch's");
        let managers: Vec<&str> = patched
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["manager"].as_str())
            .collect();
        assert_eq!(managers, ["seed", "restarter"], "the patcher's entry beside the seed's");
        let stored = cluster.lock().get("apps", "deployments", "shop", "web").cloned().expect("stored");
        assert_eq!(&stored, patched.as_ref(), "the answer is what is stored");

        // A write that records no ownership keeps every entry as it was.
        let again = json!({"spec": {"template": {"metadata": {"annotations": {"restarted": "2"}}}}});
        let (unrecorded, _) = cluster
            .patch(deployments, "shop", "web", PatchType::Strategic, &again, &WriteOptions::default())
            .expect("patch");
        assert_eq!(unrecorded.pointer("/metadata/managedFields"), patched.pointer("/metadata/managedFields"));
    }
}
