//! A cluster's objects as stored: every write goes through
//! [`State::commit`], which gives it the next resourceVersion, keeps the
//! indexes (pods by owner, readiness of followed Services), tells the
//! controller what changed, and records the watch event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::object;
use super::resources::ResourceType;
use super::watch::{EventType, History, WatchEvent, Watchers};

/// A Service: (namespace, name).
pub type ServiceKey = (String, String);

/// What a pod's readiness follows beyond its own containers: a sidecar is
/// ready while its control plane answers. The API server knows no such
/// rule; the programs a cluster runs bring theirs.
pub trait ReadinessGates: Send + Sync + std::fmt::Debug {
    /// The Service whose endpoints `pod`'s readiness follows, if any.
    fn readiness_follows(&self, pod: &Value) -> Option<ServiceKey>;
}

/// Objects of one resource, by (namespace, name). Shared, so that a watch
/// event, a list, or the controller holds an object without copying it;
/// a write stores a new one.
pub(super) type Objects = BTreeMap<(String, String), Arc<Value>>;

/// A workload the controller keeps rolled out: (plural, namespace, name).
pub type WorkloadKey = (&'static str, String, String);

/// A rollout in progress.
#[derive(Debug, Clone, Copy)]
pub struct Rollout {
    /// When it started.
    pub started: Instant,
    /// When its new pods may start.
    pub due: Instant,
    /// The generation it rolls out.
    pub generation: u64,
}

/// The controller's memory, kept beside the objects.
#[derive(Debug, Default)]
pub struct ControllerState {
    /// Rollouts in progress.
    pub rollouts: HashMap<WorkloadKey, Rollout>,
    /// Workloads to look at on the next pass.
    pub dirty: BTreeSet<WorkloadKey>,
    /// Workloads to look at again at a given time.
    pub due: BTreeMap<Instant, BTreeSet<WorkloadKey>>,
    /// Each workload's template hash, by (uid, generation).
    pub template_hashes: HashMap<WorkloadKey, (String, u64, String)>,
    /// How many times workloads were marked from outside a look (every
    /// workload, or the pods following a Service whose endpoints came or
    /// went): a reconcile during which this moves is looked at again.
    pub all_marked_count: u64,
}

/// A cluster's objects and history.
#[derive(Debug)]
pub struct State {
    objects: HashMap<(&'static str, &'static str), Objects>,
    resource_version: u64,
    /// The latest watch events.
    pub(super) history: History,
    counter: u64,
    /// Whether writes become watch events (not while seeding).
    recording: bool,
    /// The cluster's number in its fleet (for ids and IPs).
    pub index: usize,
    /// What pods' readiness follows.
    gates: Arc<dyn ReadinessGates>,
    /// Services some pod's readiness follows, with how many pods follow
    /// each: their endpoints are kept in `connected` as they change.
    followed: BTreeMap<ServiceKey, usize>,
    /// The followed Services with a ready pod behind them: every
    /// following pod's readiness is looked up here.
    connected: BTreeSet<ServiceKey>,
    /// Pods by the workload that controls them, kept as pods are written:
    /// a look at a workload reads its own pods, not its namespace's.
    pods_by_owner: HashMap<WorkloadKey, BTreeSet<String>>,
    /// The controller's memory.
    pub controller: ControllerState,
}

impl State {
    /// An empty state for cluster number `index`, whose pods' readiness follows `gates`.
    #[must_use]
    pub fn new(index: usize, gates: Arc<dyn ReadinessGates>) -> Self {
        Self {
            objects: HashMap::new(),
            resource_version: 0,
            history: History::default(),
            counter: 0,
            recording: false,
            index,
            gates,
            followed: BTreeMap::new(),
            connected: BTreeSet::new(),
            pods_by_owner: HashMap::new(),
            controller: ControllerState::default(),
        }
    }

    /// Every object of a resource.
    pub fn all(&self, group: &str, plural: &str) -> impl Iterator<Item = &Value> {
        self.store(group, plural).into_iter().flat_map(BTreeMap::values).map(Arc::as_ref)
    }

    /// Objects of a resource in one namespace.
    pub fn in_namespace<'a>(
        &'a self,
        group: &str,
        plural: &str,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        let range = (namespace.to_string(), String::new())..(format!("{namespace}\u{0}"), String::new());
        self.store(group, plural)
            .into_iter()
            .flat_map(move |objects| objects.range(range.clone()).map(|(_, object)| object.as_ref()))
    }

    /// Whether Service `service` has a ready pod behind it (kept for the
    /// Services pods follow, looked up for others).
    #[must_use]
    pub fn connected(&self, service: &ServiceKey) -> bool {
        if self.followed.contains_key(service) {
            return self.connected.contains(service);
        }
        !endpoints(self, &service.0, &service.1).is_empty()
    }

    /// Whether a pod's readiness gate holds: a pod that follows no Service
    /// is ready; one that does (a sidecar and its control plane) is ready
    /// while that Service has a ready pod behind it.
    #[must_use]
    pub fn readiness_holds(&self, pod: &Value) -> bool {
        self.gates.readiness_follows(pod).is_none_or(|service| self.connected(&service))
    }

    /// One object.
    #[must_use]
    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.get_shared(group, plural, namespace, name).map(Arc::as_ref)
    }

    /// One object, shared: held without a copy while the state changes.
    #[must_use]
    pub fn get_shared(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<&Arc<Value>> {
        self.store(group, plural)?.get(&(namespace.to_string(), name.to_string()))
    }

    /// The pods `owner` controls (by its first owner reference), by name.
    pub fn pods_of(&self, owner: &WorkloadKey) -> impl Iterator<Item = &Value> {
        let (_, namespace, _) = owner;
        self.pods_by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .map(move |name| self.get("", "pods", namespace, name).expect("indexed pods are stored"))
    }

    /// A stored object, to change in place without a new resourceVersion
    /// (what an apply records of its own ownership as it creates).
    pub(super) fn object_mut(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<&mut Arc<Value>> {
        self.objects.get_mut(&resource.storage_key())?.get_mut(&(namespace.to_string(), name.to_string()))
    }

    pub(super) fn store(&self, group: &str, plural: &str) -> Option<&Objects> {
        self.objects.iter().find(|((g, p), _)| *g == group && *p == plural).map(|(_, objects)| objects)
    }

    /// A fresh number, for uids, generated names and IPs.
    pub fn next_number(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A uid that looks like one.
    pub fn new_uid(&mut self) -> String {
        let number = self.next_number();
        format!("{:08x}-5a1e-4000-8000-{number:012x}", self.index)
    }

    /// The current resourceVersion.
    #[must_use]
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Stores (or, with `None`, removes) an object and records the event.
    /// Everything that writes goes through here.
    pub fn commit(&mut self, events: &Watchers, resource: &ResourceType, new: Option<Value>, key: (String, String)) {
        self.resource_version += 1;
        let rv = json!(self.resource_version.to_string());
        let recording = self.recording;
        // A pod that follows a Service is ready while that Service has a
        // ready pod behind it: only a change of which followed Services
        // have one sends the controller over their followers.
        let endpoints_may_change = matches!(resource.storage_key(), ("", "services" | "pods"))
            && self.followed.keys().any(|(namespace, _)| *namespace == key.0);
        let store = self.objects.entry(resource.storage_key()).or_default();
        let (kind, facts, event_object, old) = match new {
            Some(mut object) => {
                object::metadata_mut(&mut object).insert("resourceVersion".into(), rv);
                let facts = Facts::of(&object);
                let object = Arc::new(object);
                let event_object = recording.then(|| Arc::clone(&object));
                let old = store.insert(key, object);
                (if old.is_some() { EventType::Modified } else { EventType::Added }, facts, event_object, old)
            }
            None => {
                let Some(mut removed) = store.remove(&key) else { return };
                // A deletion has a resourceVersion of its own; copies the
                // object only if a watch event still holds it.
                object::metadata_mut(Arc::make_mut(&mut removed)).insert("resourceVersion".into(), rv);
                (EventType::Deleted, Facts::of(&removed), Some(removed), None)
            }
        };
        if resource.storage_key() == ("", "pods") {
            self.index_pod(kind, &facts, old.as_deref(), event_object.as_deref());
        }
        self.note_change(resource, &facts);
        if endpoints_may_change {
            self.refresh_connected();
        }
        if let (true, Some(object)) = (recording, event_object) {
            let event = Arc::new(WatchEvent {
                resource_version: self.resource_version,
                resource: resource.storage_key(),
                kind,
                object,
                old,
            });
            self.history.push(event.clone());
            events.send(&event);
        }
    }

    /// Keeps the pod indexes: its owner, and the Service it follows.
    fn index_pod(&mut self, kind: EventType, facts: &Facts, old: Option<&Value>, new: Option<&Value>) {
        let owner_before = match kind {
            EventType::Added => None,
            EventType::Modified => old.and_then(owner_of),
            EventType::Deleted => facts.owner.clone(),
        };
        let owner_after = if kind == EventType::Deleted { None } else { facts.owner.clone() };
        self.index_owner(&facts.name, owner_before, owner_after);
        let follows_before = match kind {
            EventType::Added => None,
            EventType::Modified => old.and_then(|pod| self.gates.readiness_follows(pod)),
            EventType::Deleted => new.and_then(|pod| self.gates.readiness_follows(pod)),
        };
        let follows_after = match kind {
            EventType::Deleted => None,
            _ => self.stored_pod(&facts.namespace, &facts.name).and_then(|pod| self.gates.readiness_follows(pod)),
        };
        if follows_before == follows_after {
            return;
        }
        if let Some(service) = follows_before
            && let Some(count) = self.followed.get_mut(&service)
        {
            *count -= 1;
            if *count == 0 {
                self.followed.remove(&service);
                self.connected.remove(&service);
            }
        }
        if let Some(service) = follows_after {
            let newly = !self.followed.contains_key(&service);
            *self.followed.entry(service.clone()).or_default() += 1;
            if newly && !endpoints(self, &service.0, &service.1).is_empty() {
                self.connected.insert(service);
            }
        }
    }

    fn stored_pod(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.get("", "pods", namespace, name)
    }

    /// Looks again at which followed Services have a ready pod; marks the
    /// followers of those that changed.
    fn refresh_connected(&mut self) {
        let connected: BTreeSet<ServiceKey> = self
            .followed
            .keys()
            .filter(|(namespace, name)| !endpoints(self, namespace, name).is_empty())
            .cloned()
            .collect();
        if connected == self.connected {
            return;
        }
        let changed: Vec<ServiceKey> = connected.symmetric_difference(&self.connected).cloned().collect();
        self.connected = connected;
        if self.recording {
            self.mark_followers_of(&changed);
        }
    }

    /// Moves pod `name` in `pods_by_owner` from one owner to another.
    fn index_owner(&mut self, name: &str, before: Option<WorkloadKey>, after: Option<WorkloadKey>) {
        if before == after {
            return;
        }
        if let Some(before) = before
            && let Some(names) = self.pods_by_owner.get_mut(&before)
        {
            names.remove(name);
            if names.is_empty() {
                self.pods_by_owner.remove(&before);
            }
        }
        if let Some(after) = after {
            self.pods_by_owner.entry(after).or_default().insert(name.to_string());
        }
    }

    /// Tells the controller what a change means for workloads.
    fn note_change(&mut self, resource: &ResourceType, facts: &Facts) {
        match resource.plural {
            "deployments" | "statefulsets" | "daemonsets" => {
                self.controller.dirty.insert((resource.plural, facts.namespace.clone(), facts.name.clone()));
            }
            "pods" => {
                if let Some(owner) = &facts.owner {
                    self.controller.dirty.insert(owner.clone());
                }
            }
            _ => {}
        }
    }

    /// Marks for the controller the workloads whose pods follow one of
    /// `services` (their readiness follows its endpoints), and every
    /// rollout in progress (one whose admission failed, its webhook's
    /// Service without endpoints, tries again). Every other workload's pods
    /// stay as they are: a Service gaining endpoints that no pod follows
    /// yet, or losing them once every follower has left, sends the
    /// controller over no workload.
    pub(crate) fn mark_followers_of(&mut self, services: &[ServiceKey]) {
        self.controller.all_marked_count += 1;
        let gates = Arc::clone(&self.gates);
        let mut marked: Vec<WorkloadKey> = self
            .all("", "pods")
            .filter(|pod| gates.readiness_follows(pod).is_some_and(|service| services.contains(&service)))
            .filter_map(owner_of)
            .collect();
        marked.extend(self.controller.rollouts.keys().cloned());
        self.controller.dirty.extend(marked);
    }

    /// Marks every workload for the controller.
    pub fn mark_all_workloads(&mut self) {
        self.controller.all_marked_count += 1;
        for plural in ["deployments", "statefulsets", "daemonsets"] {
            let keys: Vec<WorkloadKey> = self
                .store("apps", plural)
                .into_iter()
                .flat_map(BTreeMap::keys)
                .map(|(ns, name)| (plural, ns.clone(), name.clone()))
                .collect();
            self.controller.dirty.extend(keys);
        }
    }

    /// Starts recording watch events: seeding records none, so watches
    /// start from the seeded state.
    pub fn start_recording(&mut self) {
        self.history.restart_at(self.resource_version);
        self.recording = true;
    }
}

/// What the controller needs to know of a changed object.
#[derive(Debug)]
struct Facts {
    namespace: String,
    name: String,
    owner: Option<WorkloadKey>,
}

impl Facts {
    fn of(object: &Value) -> Self {
        Self {
            namespace: object::namespace(object).to_string(),
            name: object::name(object).to_string(),
            owner: owner_of(object),
        }
    }
}

/// The workload that owns a pod, from its owner reference.
#[must_use]
pub fn owner_of(pod: &Value) -> Option<WorkloadKey> {
    let owner = pod.pointer("/metadata/ownerReferences")?.as_array()?.first()?;
    let plural = match owner.get("kind")?.as_str()? {
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        _ => return None,
    };
    Some((plural, object::namespace(pod).to_string(), owner.get("name")?.as_str()?.to_string()))
}

/// Ready pods behind Service `namespace/name`: its endpoints.
#[must_use]
pub fn endpoints<'a>(state: &'a State, namespace: &'a str, name: &str) -> Vec<&'a Value> {
    let Some(service) = state.get("", "services", namespace, name) else { return Vec::new() };
    let Some(selector) = service.pointer("/spec/selector").and_then(Value::as_object).filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    state
        .in_namespace("", "pods", namespace)
        .filter(|pod| selector.iter().all(|(key, value)| object::labels(pod).and_then(|l| l.get(key)) == Some(value)))
        .filter(|pod| pod_ready(pod))
        .collect()
}

/// Whether a pod reports Ready.
#[must_use]
pub fn pod_ready(pod: &Value) -> bool {
    pod.get("status")
        .and_then(|status| status.get("conditions"))
        .and_then(Value::as_array)
        .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}
