//! Talking to clusters through kube-rs: clients per cluster, errors sorted
//! into retryable and not, server-side apply of any object, waits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canaryflow_engine::ActivityError;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, WatchEvent};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiResource, Discovery, Scope};
use kube::{Client, Config, Resource};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::istio::PodView;
use crate::spec::ClusterRef;

/// The field manager canaryflow applies as.
pub const FIELD_MANAGER: &str = "canaryflow";

/// Clients kept at most: each holds a pool of connections (up to
/// [`REQUESTS_PER_CLUSTER_MAX`], with their buffers) and the cluster's API
/// discovery. A fleet upgrade works on about a wave's clusters at a time; a
/// client dropped from the cache is made again when needed (a few ms), and
/// steps still using it keep their own handle. Idle connections of finished
/// waves are memory: `bench fleet` (100 clusters) peaked at 156 to 175 MB
/// with 48 clients kept, at 134 and 137 MB with 24, in the same time.
pub const CLIENTS_CACHED_MAX: usize = 24;

/// Clients by cluster, made on first use and kept, the least recently
/// used dropped beyond [`CLIENTS_CACHED_MAX`].
#[derive(Default)]
pub struct Clusters {
    clients: Mutex<Cache>,
    kubeconfigs: Mutex<Kubeconfigs>,
}

/// Kubeconfig sources kept parsed at most.
const KUBECONFIGS_CACHED_MAX: usize = 16;

/// Parsed kubeconfigs by the files they came from, each with those files'
/// modification times and lengths: a fleet's kubeconfig names every
/// cluster, and parsing it again for every client made was a sixth of the
/// engine's CPU at a wave change. A file that changes is read again.
#[derive(Default)]
struct Kubeconfigs {
    parsed: HashMap<Vec<PathBuf>, (Vec<FileStamp>, Arc<Kubeconfig>)>,
}

/// What says a file is unchanged: its modification time and length.
type FileStamp = (std::time::SystemTime, u64);

impl Kubeconfigs {
    fn get(&self, files: &[PathBuf], stamps: &[FileStamp]) -> Option<Arc<Kubeconfig>> {
        self.parsed.get(files).filter(|(seen, _)| seen == stamps).map(|(_, parsed)| parsed.clone())
    }

    fn insert(&mut self, files: Vec<PathBuf>, stamps: Vec<FileStamp>, parsed: Arc<Kubeconfig>) {
        if self.parsed.len() >= KUBECONFIGS_CACHED_MAX && !self.parsed.contains_key(&files) {
            self.parsed.clear();
        }
        self.parsed.insert(files, (stamps, parsed));
        assert!(self.parsed.len() <= KUBECONFIGS_CACHED_MAX, "the kubeconfig cache is bounded");
    }
}

/// The files a cluster's kubeconfig comes from: the one given, else those
/// `$KUBECONFIG` lists, else `~/.kube/config` (as kube-rs reads them).
fn kubeconfig_files(cluster: &ClusterRef) -> Option<Vec<PathBuf>> {
    if let Some(path) = &cluster.kubeconfig {
        return Some(vec![path.clone()]);
    }
    match std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty()) {
        Some(value) => Some(std::env::split_paths(&value).filter(|path| !path.as_os_str().is_empty()).collect()),
        None => std::env::var_os("HOME").map(|home| vec![PathBuf::from(home).join(".kube").join("config")]),
    }
}

/// Where a cluster's kubeconfig comes from, for messages.
fn kubeconfig_source(cluster: &ClusterRef) -> String {
    cluster
        .kubeconfig
        .as_ref()
        .map_or_else(|| "$KUBECONFIG or ~/.kube/config".to_string(), |path| path.display().to_string())
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[derive(Default)]
struct Cache {
    by_cluster: HashMap<ClusterRef, (Arc<ClusterClient>, u64)>,
    uses: u64,
}

impl Cache {
    fn get(&mut self, cluster: &ClusterRef) -> Option<Arc<ClusterClient>> {
        self.uses += 1;
        let uses = self.uses;
        self.by_cluster.get_mut(cluster).map(|(client, used)| {
            *used = uses;
            client.clone()
        })
    }

    fn insert(&mut self, cluster: ClusterRef, client: Arc<ClusterClient>) {
        self.uses += 1;
        self.by_cluster.insert(cluster, (client, self.uses));
        while self.by_cluster.len() > CLIENTS_CACHED_MAX {
            let oldest = self.by_cluster.iter().min_by_key(|(_, (_, used))| *used).map(|(cluster, _)| cluster.clone());
            let Some(oldest) = oldest else { break };
            // Steps still using it hold their own handle; its connections
            // close when the last one is done.
            self.by_cluster.remove(&oldest);
        }
        assert!(self.by_cluster.len() <= CLIENTS_CACHED_MAX, "the client cache is bounded");
    }
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters").finish_non_exhaustive()
    }
}

/// One cluster's client, with its API discovery once made.
pub struct ClusterClient {
    /// The cluster.
    pub cluster: ClusterRef,
    /// The kube-rs client.
    pub client: Client,
    discovery: tokio::sync::Mutex<Option<Arc<Discovery>>>,
}

impl Clusters {
    /// The client of `cluster`, connecting on first use.
    pub async fn get(&self, cluster: &ClusterRef) -> Result<Arc<ClusterClient>, ActivityError> {
        if let Some(found) = self.clients.lock().expect("clients lock poisoned").get(cluster) {
            return Ok(found);
        }
        let kubeconfig = self.kubeconfig(cluster)?;
        let client = connect(cluster, kubeconfig).await?;
        let made =
            Arc::new(ClusterClient { cluster: cluster.clone(), client, discovery: tokio::sync::Mutex::new(None) });
        self.clients.lock().expect("clients lock poisoned").insert(cluster.clone(), made.clone());
        Ok(made)
    }

    /// The cluster's kubeconfig (the given file, else `$KUBECONFIG`, else
    /// `~/.kube/config`), parsed again only when its files changed.
    fn kubeconfig(&self, cluster: &ClusterRef) -> Result<Arc<Kubeconfig>, ActivityError> {
        let files = kubeconfig_files(cluster);
        let stamps: Option<Vec<FileStamp>> =
            files.as_ref().and_then(|files| files.iter().map(|path| file_stamp(path)).collect());
        if let (Some(files), Some(stamps)) = (&files, &stamps)
            && let Some(parsed) = self.kubeconfigs.lock().expect("kubeconfigs lock poisoned").get(files, stamps)
        {
            return Ok(parsed);
        }
        let kubeconfig = match &cluster.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        };
        let parsed = Arc::new(kubeconfig.map_err(|err| {
            ActivityError::fatal(
                "kubeconfig",
                format!("cluster {}: cannot read the kubeconfig ({}): {err}", cluster.name, kubeconfig_source(cluster)),
            )
        })?);
        if let (Some(files), Some(stamps)) = (files, stamps) {
            self.kubeconfigs.lock().expect("kubeconfigs lock poisoned").insert(files, stamps, parsed.clone());
        }
        Ok(parsed)
    }
}

/// Makes a client for the cluster's context in `kubeconfig`.
async fn connect(cluster: &ClusterRef, kubeconfig: Arc<Kubeconfig>) -> Result<Client, ActivityError> {
    let source = kubeconfig_source(cluster);
    if !kubeconfig.contexts.iter().any(|context| context.name == cluster.context) {
        let known: Vec<&str> = kubeconfig.contexts.iter().map(|context| context.name.as_str()).collect();
        return Err(ActivityError::fatal(
            "kubeconfig",
            format!(
                "cluster {}: context {:?} is not in the kubeconfig ({source}); it has: {}",
                cluster.name,
                cluster.context,
                known.join(", ")
            ),
        ));
    }
    let options = KubeConfigOptions { context: Some(cluster.context.clone()), ..KubeConfigOptions::default() };
    let mut config = Config::from_custom_kubeconfig(Arc::unwrap_or_clone(kubeconfig), &options)
        .await
        .map_err(|err| ActivityError::fatal("kubeconfig", format!("cluster {}: {err}", cluster.name)))?;
    no_trust_store_for_plain_http(&mut config);
    // An unreachable cluster should fail an attempt in seconds, not minutes.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|err| ActivityError::fatal("kubeconfig", format!("cluster {}: {err}", cluster.name)))?;
    Ok(builder.with_layer(&tower::limit::ConcurrencyLimitLayer::new(REQUESTS_PER_CLUSTER_MAX)).build())
}

/// A plain-http server (`kubectl proxy`, the simulator) never uses a trust
/// store, but kube-rs loads the system's, parsing every root certificate,
/// for each client made when the kubeconfig names no CA: a tenth of the
/// upgrade's CPU in `bench fleet`, most of it as each wave starts. An empty
/// one stands in.
fn no_trust_store_for_plain_http(config: &mut Config) {
    if config.cluster_url.scheme_str() == Some("http") && config.root_cert.is_none() && config.root_cert_file.is_none()
    {
        config.root_cert = Some(Vec::new());
    }
}

/// Requests in flight to one cluster at once, over all of its steps; more
/// wait their turn. Bounds the connections (and their buffers) an upgrade
/// holds per cluster, and the load it puts on an API server.
pub const REQUESTS_PER_CLUSTER_MAX: usize = 16;

/// Sorts a kube-rs error into retryable or not, saying what was being done.
#[must_use]
pub fn kube_error(doing: &str, err: kube::Error) -> ActivityError {
    match err {
        kube::Error::Api(status) => {
            let message = format!("{doing}: {} ({} {})", status.message, status.code, status.reason);
            match status.code {
                401 | 403 => ActivityError::fatal("forbidden", message),
                404 => ActivityError::fatal("not-found", message),
                409 => ActivityError::retryable("conflict", message),
                400 | 415 | 422 => ActivityError::fatal("invalid", message),
                _ => ActivityError::retryable("server", message),
            }
        }
        other => ActivityError::retryable("unavailable", format!("{doing}: {other}")),
    }
}

/// An object without what the server sets: fit to re-apply, or to record.
#[must_use]
pub fn clean(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "ownerReferences",
        ] {
            metadata.remove(field);
        }
        if let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            annotations.remove("deployment.kubernetes.io/revision");
        }
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        // The server allocates these; re-applying an old value can conflict.
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    object
}

/// `kind namespace/name` of an object, for messages.
#[must_use]
pub fn describe(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    match object.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

impl ClusterClient {
    /// The cluster's API discovery, made once (and again with `refresh`:
    /// a CRD applied since serves a kind the first one did not know).
    pub async fn discovery(&self, refresh: bool) -> Result<Arc<Discovery>, ActivityError> {
        let mut cached = self.discovery.lock().await;
        if let (Some(discovery), false) = (cached.as_ref(), refresh) {
            return Ok(discovery.clone());
        }
        let discovery =
            Discovery::new(self.client.clone()).run().await.map_err(|err| kube_error("API discovery", err))?;
        let discovery = Arc::new(discovery);
        *cached = Some(discovery.clone());
        Ok(discovery)
    }

    /// The resource `api_version` `kind` is served as, looking once more
    /// when the cluster did not serve it at the last look.
    pub async fn served(&self, api_version: &str, kind: &str) -> Result<Option<(ApiResource, Scope)>, ActivityError> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
        for refresh in [false, true] {
            let discovery = self.discovery(refresh).await?;
            if let Some((resource, capabilities)) = discovery.resolve_gvk(&gvk) {
                return Ok(Some((resource, capabilities.scope)));
            }
        }
        Ok(None)
    }

    /// The version of `group`'s `kind` the cluster prefers (`policy/v1beta1`
    /// PodDisruptionBudgets on Kubernetes 1.18, `policy/v1` on 1.32), if it
    /// serves the kind at all.
    pub async fn preferred(&self, group: &str, kind: &str) -> Result<Option<(ApiResource, Scope)>, ActivityError> {
        for refresh in [false, true] {
            let discovery = self.discovery(refresh).await?;
            let Some(api_group) = discovery.get(group) else { continue };
            let found = api_group
                .recommended_kind(kind)
                .or_else(|| api_group.resources_by_stability().into_iter().find(|(resource, _)| resource.kind == kind));
            if let Some((resource, capabilities)) = found {
                return Ok(Some((resource, capabilities.scope)));
            }
        }
        Ok(None)
    }

    /// The dynamic API for `object`'s kind, in its namespace if it has one.
    pub async fn api_for(&self, object: &Value) -> Result<Api<DynamicObject>, ActivityError> {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let (resource, scope) = self.served(api_version, kind).await?.ok_or_else(|| {
            ActivityError::fatal(
                "invalid",
                format!("cluster {} does not serve {api_version} {kind}", self.cluster.name),
            )
        })?;
        Ok(match (scope, object.pointer("/metadata/namespace").and_then(Value::as_str)) {
            (Scope::Namespaced, Some(namespace)) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            (Scope::Namespaced, None) => Api::default_namespaced_with(self.client.clone(), &resource),
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// The dynamic API of `resource`: in `namespace`, or across all of them.
    #[must_use]
    pub fn api_with(&self, resource: &ApiResource, scope: Scope, namespace: Option<&str>) -> Api<DynamicObject> {
        match (scope, namespace) {
            (Scope::Namespaced, Some(namespace)) => Api::namespaced_with(self.client.clone(), namespace, resource),
            (Scope::Namespaced, None) | (Scope::Cluster, _) => Api::all_with(self.client.clone(), resource),
        }
    }

    /// Server-side applies `object` as canaryflow (forcing ownership when
    /// asked: an upgrade takes over fields another installer set).
    pub async fn apply(&self, object: &Value, force: bool) -> Result<Value, ActivityError> {
        let api = self.api_for(object).await?;
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        let applied = api
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|err| kube_error(&format!("apply {}", describe(object)), err))?;
        serde_json::to_value(applied).map_err(|err| ActivityError::fatal("invalid", err.to_string()))
    }

    /// The live object with `object`'s kind, namespace and name, if it exists.
    pub async fn get_like(&self, object: &Value) -> Result<Option<Value>, ActivityError> {
        let api = self.api_for(object).await?;
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let found = api.get_opt(name).await.map_err(|err| kube_error(&format!("read {}", describe(object)), err))?;
        found
            .map(|found| serde_json::to_value(found).map_err(|err| ActivityError::fatal("invalid", err.to_string())))
            .transpose()
    }

    /// Deletes the object like `object`; a missing one is fine.
    pub async fn delete_like(&self, object: &Value) -> Result<bool, ActivityError> {
        let api = self.api_for(object).await?;
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(err) => Err(kube_error(&format!("delete {}", describe(object)), err)),
        }
    }
}

/// Polls `check` until it says done (`Ok(None)`), fails, or `timeout` passes.
/// `check` answers `Ok(Some(why_not))` while waiting; the last answer goes
/// into the timeout error.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, poll: Duration, mut check: F) -> Result<(), ActivityError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, ActivityError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(None) => return Ok(()),
            Ok(Some(why_not)) => why_not,
            Err(err) if err.retryable => err.message,
            Err(err) => return Err(err),
        };
        if Instant::now() >= deadline {
            return Err(ActivityError::fatal(
                "timeout",
                format!("{what}: not done after {} s: {last}", timeout.as_secs()),
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Whether a workload's rollout is done: `Ok(None)` done, `Ok(Some(why))`
/// still going, `Err` failed for good (the progress deadline passed).
pub fn rollout_done(kind: &str, workload: &Value) -> Result<Option<String>, ActivityError> {
    let name = workload.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    let number = |pointer: &str| workload.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
    let generation = number("/metadata/generation");
    let observed = number("/status/observedGeneration");
    if observed < generation {
        return Ok(Some(format!("{kind} {name}: the controller has not seen generation {generation} yet")));
    }
    let conditions = workload.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let condition = |kind: &str| conditions.iter().find(|c| c["type"] == kind);
    if let Some(progressing) = condition("Progressing")
        && progressing["status"] == "False"
        && progressing["reason"] == "ProgressDeadlineExceeded"
    {
        let message = progressing["message"].as_str().unwrap_or("progress deadline exceeded");
        return Err(ActivityError::fatal("rollout", format!("{kind} {name}: {message}")));
    }
    let failure = condition("ReplicaFailure")
        .filter(|c| c["status"] == "True")
        .and_then(|c| c["message"].as_str())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    let (wanted, updated, available) = match kind {
        "DaemonSet" => (
            number("/status/desiredNumberScheduled"),
            number("/status/updatedNumberScheduled"),
            number("/status/numberAvailable"),
        ),
        "StatefulSet" => (
            workload.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1),
            number("/status/updatedReplicas"),
            number("/status/readyReplicas"),
        ),
        _ => (
            workload.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1),
            number("/status/updatedReplicas"),
            number("/status/availableReplicas"),
        ),
    };
    if updated < wanted {
        return Ok(Some(format!("{kind} {name}: {updated} of {wanted} pods updated{failure}")));
    }
    if available < wanted {
        return Ok(Some(format!("{kind} {name}: {available} of {wanted} updated pods available{failure}")));
    }
    Ok(None)
}

/// Sends `request` through kube-rs and parses into `T` only the fields `T`
/// names: the rest of each object (a pod template, a sidecar's arguments)
/// is skipped unparsed. Polls and lists of large objects spend most of
/// their time parsing otherwise. `Ok(None)` when the object is not there.
pub async fn request_slim<T: DeserializeOwned>(
    client: &Client,
    request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    doing: &str,
) -> Result<Option<T>, ActivityError> {
    let request = request.map_err(|err| ActivityError::fatal("invalid", format!("{doing}: {err}")))?;
    match client.request::<T>(request).await {
        Ok(parsed) => Ok(Some(parsed)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(err) => Err(kube_error(doing, err)),
    }
}

/// The URL path of a namespace's workloads of `kind`.
fn workload_path(kind: &str, namespace: &str) -> String {
    match kind {
        "StatefulSet" => StatefulSet::url_path(&(), Some(namespace)),
        "DaemonSet" => DaemonSet::url_path(&(), Some(namespace)),
        _ => Deployment::url_path(&(), Some(namespace)),
    }
}

/// The fields of a workload that [`rollout_done`] reads.
#[derive(Clone, Deserialize, Serialize)]
struct RolloutView {
    #[serde(default)]
    metadata: RolloutMeta,
    #[serde(default)]
    spec: RolloutSpec,
    #[serde(default)]
    status: Value,
}

#[derive(Clone, Default, Deserialize, Serialize)]
struct RolloutMeta {
    name: Option<String>,
    generation: Option<i64>,
}

#[derive(Clone, Default, Deserialize, Serialize)]
struct RolloutSpec {
    replicas: Option<i64>,
}

/// A list of workloads, as [`wait_rollouts`] reads it.
#[derive(Deserialize)]
struct RolloutList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<RolloutView>,
}

#[derive(Default, Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

/// How long one watch of [`wait_rollouts`] stays open before a fresh list
/// and watch: under the client's read timeout (30 s), so that a quiet
/// watch is ended by the server, not cut by the client.
const WATCH_SECONDS_MAX: u64 = 25;

/// Workloads of one kind in one namespace, waited for by [`wait_rollouts`].
#[derive(Debug, Clone, Copy)]
pub struct Rollouts<'a> {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: &'a str,
    /// Their namespace.
    pub namespace: &'a str,
    /// Their names.
    pub names: &'a [String],
    /// Whether a workload that is not there (or goes) is done: yes for a
    /// namespace's workloads (nothing to wait for), no for istiod or a
    /// gateway (waited for until it is there and rolled out).
    pub gone_is_done: bool,
}

/// Waits until every rollout of `rollouts` is done (or its workload is
/// gone), as `kubectl rollout status` does: a list, then a watch from the
/// list's resourceVersion, so that a rollout's end is seen as the server
/// reports it, with no request per look. A watch that ends (its time is up,
/// 410 Gone, the server cut it off) is followed by a fresh list; a read
/// that fails for a retryable reason is tried again after `retry_pause`.
/// A failed rollout (its progress deadline passed) fails the wait at once;
/// `timeout` fails it with what was still awaited.
pub async fn wait_rollouts(
    client: &Client,
    rollouts: Rollouts<'_>,
    timeout: Duration,
    retry_pause: Duration,
) -> Result<(), ActivityError> {
    let Rollouts { kind, namespace, names, .. } = rollouts;
    let deadline = Instant::now() + timeout;
    // Why each workload is not done yet, by name.
    let mut pending: HashMap<String, String> =
        names.iter().map(|name| (name.clone(), format!("{kind} {name}: not read yet"))).collect();
    loop {
        let last_error = match list_and_watch(client, rollouts, &mut pending, deadline).await {
            Ok(()) => None,
            Err(err) if err.retryable => Some(err.message),
            Err(err) => return Err(err),
        };
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut waiting: Vec<&String> = pending.values().collect();
            waiting.sort();
            let why = last_error.as_ref().or(waiting.first().copied()).map_or("", String::as_str);
            return Err(ActivityError::fatal(
                "timeout",
                format!("rollouts in {namespace}: not done after {} s: {why}", timeout.as_secs()),
            ));
        }
        if last_error.is_some() {
            tokio::time::sleep(retry_pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}

/// One list and one watch of [`wait_rollouts`]; `Ok` when the watch ended
/// or nothing is pending any more.
async fn list_and_watch(
    client: &Client,
    rollouts: Rollouts<'_>,
    pending: &mut HashMap<String, String>,
    deadline: Instant,
) -> Result<(), ActivityError> {
    use futures::TryStreamExt;
    let Rollouts { kind, namespace, .. } = rollouts;
    let request = kube::core::Request::new(workload_path(kind, namespace));
    // One workload: only its own events, as kubectl's field selector does.
    let fields = match rollouts.names {
        [name] => Some(format!("metadata.name={name}")),
        _ => None,
    };
    let mut list_params = ListParams::default();
    list_params.field_selector.clone_from(&fields);
    let doing = format!("list {kind}s in {namespace}");
    let list: RolloutList = request_slim(client, request.list(&list_params), &doing)
        .await?
        .unwrap_or(RolloutList { metadata: ListMeta::default(), items: Vec::new() });
    let mut listed: HashMap<String, RolloutView> =
        list.items.into_iter().filter_map(|view| Some((view.metadata.name.clone()?, view))).collect();
    let names: Vec<String> = pending.keys().cloned().collect();
    for name in names {
        match listed.remove(&name) {
            Some(view) => note_rollout(kind, view, pending)?,
            None => note_gone(rollouts, &name, pending),
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    let seconds = deadline.saturating_duration_since(Instant::now()).as_secs().clamp(1, WATCH_SECONDS_MAX);
    let watch_params = kube::api::WatchParams {
        field_selector: fields,
        timeout: Some(u32::try_from(seconds).expect("at most WATCH_SECONDS_MAX")),
        bookmarks: true,
        ..kube::api::WatchParams::default()
    };
    let resource_version = list.metadata.resource_version.unwrap_or_else(|| "0".into());
    let doing = format!("watch {kind}s in {namespace}");
    let request = request
        .watch(&watch_params, &resource_version)
        .map_err(|err| ActivityError::fatal("invalid", format!("{doing}: {err}")))?;
    let events = client.request_events::<RolloutView>(request).await.map_err(|err| kube_error(&doing, err))?;
    futures::pin_mut!(events);
    while let Some(event) = events.try_next().await.map_err(|err| kube_error(&doing, err))? {
        match event {
            WatchEvent::Added(view) | WatchEvent::Modified(view) => note_rollout(kind, view, pending)?,
            WatchEvent::Deleted(view) => {
                if let Some(name) = &view.metadata.name {
                    note_gone(rollouts, name, pending);
                }
            }
            WatchEvent::Bookmark(_) => {}
            // 410: the list is too old to watch from; a fresh list follows.
            WatchEvent::Error(status) if status.code == 410 => return Ok(()),
            WatchEvent::Error(status) => {
                return Err(ActivityError::retryable(
                    "server",
                    format!("{doing}: {} ({})", status.message, status.code),
                ));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

/// Records that a pending workload is not there.
fn note_gone(rollouts: Rollouts<'_>, name: &str, pending: &mut HashMap<String, String>) {
    if rollouts.gone_is_done {
        pending.remove(name);
    } else if let Some(why) = pending.get_mut(name) {
        *why = format!("{} {name} does not exist", rollouts.kind);
    }
}

/// Records what one look at a pending workload says.
fn note_rollout(kind: &str, view: RolloutView, pending: &mut HashMap<String, String>) -> Result<(), ActivityError> {
    let Some(name) = view.metadata.name.clone() else { return Ok(()) };
    if !pending.contains_key(&name) {
        return Ok(());
    }
    match rollout_done(kind, &to_json(view))? {
        None => {
            pending.remove(&name);
        }
        Some(why) => {
            pending.insert(name, why);
        }
    }
    Ok(())
}

/// The names of a namespace's workloads of `kind`.
pub async fn workload_names(client: &Client, kind: &str, namespace: &str) -> Result<Vec<String>, ActivityError> {
    names_at(client, workload_path(kind, namespace), &format!("list {kind}s in {namespace}")).await
}

/// The names of every namespace.
pub async fn namespace_names(client: &Client) -> Result<Vec<String>, ActivityError> {
    names_at(client, k8s_openapi::api::core::v1::Namespace::url_path(&(), None), "list namespaces").await
}

/// The names of the objects of a collection (each parsed no further).
async fn names_at(client: &Client, url_path: String, doing: &str) -> Result<Vec<String>, ActivityError> {
    #[derive(Deserialize)]
    struct List {
        #[serde(default)]
        items: Vec<Named>,
    }
    #[derive(Deserialize)]
    struct Named {
        metadata: NameOnly,
    }
    #[derive(Deserialize)]
    struct NameOnly {
        name: Option<String>,
    }
    let request = kube::core::Request::new(url_path).list(&ListParams::default());
    let list: Option<List> = request_slim(client, request, doing).await?;
    Ok(list.map(|list| list.items).unwrap_or_default().into_iter().filter_map(|item| item.metadata.name).collect())
}

/// Strategic-merge-patches one workload; the reply is checked to be JSON
/// but not kept. `Ok(false)` when the workload is gone.
pub async fn patch_workload(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: &str,
    params: &PatchParams,
    patch: &Value,
) -> Result<bool, ActivityError> {
    let doing = format!("patch {kind} {namespace}/{name}");
    let request =
        kube::core::Request::new(workload_path(kind, namespace)).patch(name, params, &Patch::Strategic(patch));
    Ok(request_slim::<IgnoredAny>(client, request, &doing).await?.is_some())
}

/// Pods one list request asks for: a page, so that a cluster's pods are
/// never all in memory as JSON at once.
const PODS_PER_PAGE: u32 = 250;

/// The pods of `namespace` (or of every namespace), not being deleted, as
/// the upgrade reads them (see [`PodView`]).
pub async fn list_pods(client: &Client, namespace: Option<&str>) -> Result<Vec<PodView>, ActivityError> {
    let doing = format!("list pods in {}", namespace.unwrap_or("every namespace"));
    let mut pods = Vec::new();
    let mut continue_token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PODS_PER_PAGE);
        params.continue_token = continue_token.take();
        let request = kube::core::Request::new(k8s_openapi::api::core::v1::Pod::url_path(&(), namespace)).list(&params);
        let Some(page) = request_slim::<PodPage>(client, request, &doing).await? else { break };
        pods.extend(page.items.into_iter().filter(|pod| !pod.deleting()));
        match page.metadata.continue_token.filter(|token| !token.is_empty()) {
            Some(token) => continue_token = Some(token),
            None => break,
        }
    }
    Ok(pods)
}

#[derive(Deserialize)]
struct PodPage {
    #[serde(default)]
    metadata: PageMeta,
    #[serde(default)]
    items: Vec<PodView>,
}

#[derive(Default, Deserialize)]
struct PageMeta {
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

/// Serializes a typed object to JSON (it cannot fail for Kubernetes types).
pub fn to_json<T: serde::Serialize>(object: T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_workload_not_there_is_done_only_where_gone_is_done() {
        let names = ["web".to_string()];
        for (gone_is_done, left) in [(true, None), (false, Some("Deployment web does not exist"))] {
            let rollouts = Rollouts { kind: "Deployment", namespace: "shop", names: &names, gone_is_done };
            let mut pending = HashMap::from([("web".to_string(), "not read yet".to_string())]);
            note_gone(rollouts, "web", &mut pending);
            assert_eq!(pending.get("web").map(String::as_str), left, "gone_is_done: {gone_is_done}");
        }
    }

    #[test]
    fn only_a_plain_http_server_without_a_ca_goes_without_the_trust_store() {
        let mut http = Config::new("http://127.0.0.1:8001".parse().expect("uri"));
        no_trust_store_for_plain_http(&mut http);
        assert_eq!(http.root_cert, Some(Vec::new()));
        let mut https = Config::new("https://10.0.0.1:6443".parse().expect("uri"));
        no_trust_store_for_plain_http(&mut https);
        assert_eq!(https.root_cert, None, "https keeps the system's trust store");
        let mut with_ca = Config::new("http://127.0.0.1:8001".parse().expect("uri"));
        with_ca.root_cert = Some(vec![vec![1, 2, 3]]);
        no_trust_store_for_plain_http(&mut with_ca);
        assert_eq!(with_ca.root_cert, Some(vec![vec![1, 2, 3]]), "a CA given stays");
    }

    #[tokio::test]
    async fn the_client_cache_keeps_the_most_recently_used() {
        let config = Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let client = |name: &str| {
            let cluster = ClusterRef { name: name.into(), context: name.into(), kubeconfig: None };
            let client = Client::try_from(config.clone()).expect("client");
            (cluster.clone(), Arc::new(ClusterClient { cluster, client, discovery: tokio::sync::Mutex::new(None) }))
        };
        let mut cache = Cache::default();
        let (first, made) = client("first");
        cache.insert(first.clone(), made);
        for n in 0..CLIENTS_CACHED_MAX + 10 {
            let (cluster, made) = client(&format!("c{n}"));
            cache.insert(cluster, made);
            assert!(cache.get(&first).is_some(), "used all along, never the oldest");
        }
        assert_eq!(cache.by_cluster.len(), CLIENTS_CACHED_MAX);
        let dropped = ClusterRef { name: "c0".into(), context: "c0".into(), kubeconfig: None };
        assert!(cache.get(&dropped).is_none(), "the least recently used went first");
    }

    #[test]
    fn a_kubeconfig_is_parsed_once_and_again_when_its_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        let write = |contexts: &[&str]| {
            let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
            for name in contexts {
                text.push_str(&format!("- name: {name}\n  cluster:\n    server: http://127.0.0.1:9\n"));
            }
            text.push_str("contexts:\n");
            for name in contexts {
                text.push_str(&format!("- name: {name}\n  context:\n    cluster: {name}\n    user: u\n"));
            }
            text.push_str("users:\n- name: u\n  user: {}\n");
            std::fs::write(&path, text).expect("write kubeconfig");
        };
        let cluster = |context: &str| ClusterRef {
            name: context.into(),
            context: context.into(),
            kubeconfig: Some(path.clone()),
        };
        let clusters = Clusters::default();
        write(&["east"]);
        let first = clusters.kubeconfig(&cluster("east")).expect("parsed");
        let again = clusters.kubeconfig(&cluster("east")).expect("cached");
        assert!(Arc::ptr_eq(&first, &again), "an unchanged file is not parsed again");
        write(&["east", "west"]);
        let changed = clusters.kubeconfig(&cluster("west")).expect("parsed again");
        assert!(changed.contexts.iter().any(|context| context.name == "west"), "the new context is seen");
        std::fs::remove_file(&path).expect("remove");
        let err = clusters.kubeconfig(&cluster("east")).expect_err("a missing file is an error, not a stale copy");
        assert!(err.to_string().contains("cannot read the kubeconfig"), "{err}");
    }

    #[test]
    fn rollout_states_read_like_kubectl_rollout_status() {
        let deployment = |generation: i64, observed: i64, updated: i64, available: i64| {
            json!({"metadata": {"name": "web", "generation": generation}, "spec": {"replicas": 2},
                   "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available}})
        };
        assert!(rollout_done("Deployment", &deployment(2, 1, 2, 2)).expect("ok").is_some(), "not observed yet");
        assert!(rollout_done("Deployment", &deployment(2, 2, 1, 2)).expect("ok").is_some(), "not all updated");
        assert!(rollout_done("Deployment", &deployment(2, 2, 2, 1)).expect("ok").is_some(), "not all available");
        assert_eq!(rollout_done("Deployment", &deployment(2, 2, 2, 2)).expect("ok"), None);
        let mut stuck = deployment(2, 2, 0, 2);
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}]);
        assert!(rollout_done("Deployment", &stuck).is_err());
    }

    #[test]
    fn errors_are_sorted_by_what_a_retry_can_do() {
        let status = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                reason: "R".into(),
                ..Default::default()
            }))
        };
        assert!(!kube_error("x", status(403)).retryable);
        assert!(!kube_error("x", status(422)).retryable);
        assert!(kube_error("x", status(409)).retryable);
        assert!(kube_error("x", status(500)).retryable);
        assert!(kube_error("x", status(429)).retryable);
    }

    #[test]
    fn clean_objects_lose_what_the_server_set() {
        let cleaned = clean(
            json!({"kind": "Service", "metadata": {"name": "istiod", "uid": "u", "resourceVersion": "9", "managedFields": []},
                                   "spec": {"clusterIP": "10.0.0.1", "selector": {"app": "istiod"}}, "status": {}}),
        );
        assert_eq!(
            cleaned,
            json!({"kind": "Service", "metadata": {"name": "istiod"}, "spec": {"selector": {"app": "istiod"}}})
        );
    }
}
