//! The HTTP face of a cluster: the Kubernetes REST API, discovery, watch
//! streams, the faults, and an admin endpoint under `/sim/`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use super::cluster::{Cluster, PatchType, WriteOptions};
use super::object;
use super::resources::{self, ResourceType, Surface};
use super::selector::{FieldSelector, LabelSelector};
use super::state::endpoints;
use super::status::ApiError;
use super::table;
use super::watch::{EventType, WatchEvent};
use super::written::ItemsWritten;
use crate::faults::FaultConfig;

/// Watch events queued per stream before the stream is cut off.
const WATCH_STREAM_COUNT_MAX: usize = 1_024;
/// How often a watch sends a bookmark when asked to.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);
/// The longest watch when the client does not say.
const WATCH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1_800);

/// The router of one cluster.
pub fn router(cluster: Arc<Cluster>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(cluster)
}

type Params = HashMap<String, String>;

async fn handle(
    State(cluster): State<Arc<Cluster>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let params: Params = Query::<Params>::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    if let Some(rest) = path.strip_prefix("/sim/") {
        return admin(&cluster, &method, rest, &body);
    }
    let faults = cluster.faults.get();
    if faults.down || (faults.drop_rate > 0.0 && cluster.faults.roll() < faults.drop_rate) {
        return dropped();
    }
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.error_500_rate > 0.0 && cluster.faults.roll() < faults.error_500_rate {
        return error(&ApiError::internal("simulated server error"));
    }
    if faults.error_429_rate > 0.0 && cluster.faults.roll() < faults.error_429_rate {
        let mut response = error(&ApiError::too_many_requests());
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    }
    let write = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    if write && faults.error_409_rate > 0.0 && cluster.faults.roll() < faults.error_409_rate {
        let resource = resources::builtin("", "v1", "pods");
        return error(&ApiError::conflict(resource, "simulated"));
    }
    let request = Request { cluster: &cluster, method: &method, params: &params, headers: &headers, body: &body };
    match request.dispatch(&path) {
        Ok(response) => response,
        Err(err) => error(&err),
    }
}

/// An answer whose body fails at once: hyper closes the connection, and
/// the client sees it dropped.
fn dropped() -> Response {
    let failing =
        tokio_stream::once(Err::<Bytes, std::io::Error>(std::io::Error::other("simulated dropped connection")));
    Response::new(Body::from_stream(failing))
}

fn error(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], err.body().to_string()).into_response()
}

/// A typed list's answer, written straight from the stored objects: its
/// items carry no kind or apiVersion, as the API server writes them. Each
/// item's JSON is kept (see [`ItemsWritten`]): a list read again writes
/// what did not change by copying it.
fn list_response(written: &ItemsWritten, resource: &ResourceType, metadata: &Value, items: &[Arc<Value>]) -> Response {
    let mut body = Vec::with_capacity(256 + items.len() * 1_024);
    body.extend_from_slice(b"{\"kind\":");
    let head = serde_json::to_writer(&mut body, &format!("{}List", resource.kind))
        .and_then(|()| {
            body.extend_from_slice(b",\"apiVersion\":");
            serde_json::to_writer(&mut body, &resource.api_version())
        })
        .and_then(|()| {
            body.extend_from_slice(b",\"metadata\":");
            serde_json::to_writer(&mut body, metadata)
        });
    if let Err(err) = head {
        return error(&ApiError::internal(err.to_string()));
    }
    body.extend_from_slice(b",\"items\":[");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        written.write(item, &mut body);
    }
    body.extend_from_slice(b"]}");
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A stored object with its kind and apiVersion first, whether or not it
/// holds them.
struct Typed<'a> {
    object: &'a Value,
    api_version: &'a str,
    kind: &'a str,
}

impl Serialize for Typed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Value::Object(fields) = self.object else { return self.object.serialize(serializer) };
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("apiVersion", self.api_version)?;
        map.serialize_entry("kind", self.kind)?;
        for (key, value) in fields.iter().filter(|(key, _)| !matches!(key.as_str(), "kind" | "apiVersion")) {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// One line of a watch stream.
struct WatchLine<'a> {
    event_type: &'a str,
    object: Typed<'a>,
}

impl Serialize for WatchLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("type", self.event_type)?;
        map.serialize_entry("object", &self.object)?;
        map.end()
    }
}

fn json_response(code: StatusCode, value: &(impl Serialize + ?Sized)) -> Response {
    // `to_vec` writes bytes straight out; `to_string` goes through `fmt`.
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn admin(cluster: &Cluster, method: &Method, rest: &str, body: &[u8]) -> Response {
    match (method, rest) {
        (&Method::GET, "faults") => json_response(StatusCode::OK, &json!(cluster.faults.get())),
        (&Method::PUT, "faults") => match serde_json::from_slice::<FaultConfig>(body) {
            Ok(config) => {
                cluster.faults.set(config);
                cluster.lock().mark_all_workloads();
                cluster.wake.notify_one();
                json_response(StatusCode::OK, &json!(cluster.faults.get()))
            }
            Err(err) => error(&ApiError::bad_request(format!("faults: {err}"))),
        },
        (&Method::GET, "info") => {
            let state = cluster.lock();
            json_response(StatusCode::OK, &json!({"name": cluster.name, "resourceVersion": state.resource_version()}))
        }
        _ => error(&ApiError::no_such_resource()),
    }
}

struct Request<'a> {
    cluster: &'a Cluster,
    method: &'a Method,
    params: &'a Params,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// What a resource path names.
enum Target<'a> {
    Collection { namespace: Option<&'a str> },
    Object { namespace: &'a str, name: &'a str, subresource: Option<&'a str> },
}

impl Request<'_> {
    fn dispatch(&self, path: &str) -> Result<Response, ApiError> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["version"] => Ok(json_response(StatusCode::OK, &version(&self.cluster.resources))),
            ["healthz" | "livez" | "readyz"] => Ok((StatusCode::OK, "ok").into_response()),
            ["openapi", "v2"] => {
                // An empty protobuf document: kubectl apply then skips client-side validation.
                Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], Vec::new()).into_response())
            }
            ["api"] => Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            )),
            ["apis"] => Ok(json_response(StatusCode::OK, &group_list(&self.cluster.resources))),
            ["api", "v1"] => Ok(json_response(StatusCode::OK, &resource_list(&self.cluster.resources, "", "v1"))),
            ["apis", group, version]
                if self.cluster.resources.groups().iter().any(|(g, vs)| g == group && vs.contains(version)) =>
            {
                Ok(json_response(StatusCode::OK, &resource_list(&self.cluster.resources, group, version)))
            }
            ["api", "v1", "namespaces", namespace, "services", service, "proxy", path @ ..] => {
                self.service_proxy(namespace, service, path)
            }
            ["api", "v1", rest @ ..] => self.resource("", "v1", rest),
            ["apis", group, version, rest @ ..] => self.resource(group, version, rest),
            _ => Err(ApiError::no_such_resource()),
        }
    }

    /// The API server's proxy to a Service (`NAME[:PORT]`): a ready pod
    /// behind it answers, with what the program it runs serves there.
    fn service_proxy(&self, namespace: &str, service: &str, path: &[&str]) -> Result<Response, ApiError> {
        let (name, port) = match service.split_once(':') {
            Some((name, port)) => {
                let port = port.parse::<u16>().map_err(|_| ApiError::bad_request(format!("invalid port {port:?}")))?;
                (name, port)
            }
            None => (service, 80),
        };
        let path = format!("/{}", path.join("/"));
        let state = self.cluster.lock();
        let services = resources::builtin("", "v1", "services");
        if state.get("", "services", namespace, name).is_none() {
            return Err(ApiError::not_found(services, name));
        }
        let Some(endpoint) = endpoints(&state, namespace, name).into_iter().next() else {
            return Err(ApiError::service_unavailable(format!("no endpoints available for service \"{name}\"")));
        };
        match self.cluster.programs.serve(&state, endpoint, port, &path) {
            Some((code, body)) => Ok(json_response(StatusCode::from_u16(code).unwrap_or(StatusCode::OK), &body)),
            None => Err(ApiError::service_unavailable(format!(
                "error trying to reach service: dial tcp {}:{port}: connect: connection refused",
                endpoint.pointer("/status/podIP").and_then(Value::as_str).unwrap_or_default()
            ))),
        }
    }

    fn resource(&self, group: &str, version: &str, rest: &[&str]) -> Result<Response, ApiError> {
        let (resource, target) = match rest {
            ["namespaces", namespace, plural, tail @ ..]
                if self.cluster.resources.find(group, version, plural).is_some_and(|r| r.namespaced) =>
            {
                let resource = self.cluster.resources.find(group, version, plural).expect("checked");
                match tail {
                    [] => (resource, Target::Collection { namespace: Some(namespace) }),
                    [name] => (resource, Target::Object { namespace, name, subresource: None }),
                    [name, sub] => (resource, Target::Object { namespace, name, subresource: Some(sub) }),
                    _ => return Err(ApiError::no_such_resource()),
                }
            }
            [plural, tail @ ..] => {
                let resource =
                    self.cluster.resources.find(group, version, plural).ok_or_else(ApiError::no_such_resource)?;
                match tail {
                    [] => (resource, Target::Collection { namespace: None }),
                    [name] if !resource.namespaced => {
                        (resource, Target::Object { namespace: "", name, subresource: None })
                    }
                    [name, sub] if !resource.namespaced => {
                        (resource, Target::Object { namespace: "", name, subresource: Some(sub) })
                    }
                    _ => return Err(ApiError::no_such_resource()),
                }
            }
            [] => return Err(ApiError::no_such_resource()),
        };
        if resource.create_only {
            return match (self.method, &target) {
                (&Method::POST, Target::Collection { .. }) => {
                    Ok(json_response(StatusCode::CREATED, &self.cluster.access_review(&self.json_body()?)))
                }
                _ => Err(ApiError::method_not_allowed()),
            };
        }
        match target {
            Target::Collection { namespace } => self.collection(resource, namespace),
            Target::Object { namespace, name, subresource } => self.object(resource, namespace, name, subresource),
        }
    }

    fn collection(&self, resource: &ResourceType, namespace: Option<&str>) -> Result<Response, ApiError> {
        let labels =
            LabelSelector::parse(self.param("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        let fields =
            FieldSelector::parse(self.param("fieldSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        match *self.method {
            Method::GET if matches!(self.param("watch"), Some("true" | "1")) => {
                self.watch(resource, namespace, labels, fields)
            }
            Method::GET => {
                let limit = self
                    .param("limit")
                    .map(|l| {
                        l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("limit {l:?} is not a number")))
                    })
                    .transpose()?;
                let page = self.cluster.list(resource, namespace, &labels, &fields, limit, self.param("continue"));
                if self.wants_table() {
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::table(
                            resource.plural,
                            page.items.iter().map(AsRef::as_ref),
                            page.resource_version,
                            self.cluster.now_seconds(),
                            true,
                        ),
                    ));
                }
                let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
                if let Some(token) = page.continue_token {
                    metadata["continue"] = json!(token);
                    metadata["remainingItemCount"] = json!(page.remaining);
                }
                Ok(list_response(&self.cluster.items_written, resource, &metadata, &page.items))
            }
            Method::POST => {
                let namespace =
                    namespace.or((!resource.namespaced).then_some("")).ok_or_else(ApiError::method_not_allowed)?;
                let created = self.cluster.create(resource, namespace, self.json_body()?, &self.options(false)?)?;
                Ok(json_response(StatusCode::CREATED, &created))
            }
            Method::DELETE => {
                let deleted = self.cluster.delete_collection(resource, namespace, &labels, &fields, self.dry_run());
                Ok(list_response(&self.cluster.items_written, resource, &json!({}), &deleted))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn object(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
    ) -> Result<Response, ApiError> {
        match subresource {
            None => {}
            Some("status") if *self.method == Method::GET => {
                let object = self.cluster.get(resource, namespace, name)?;
                return Ok(json_response(StatusCode::OK, object.as_ref()));
            }
            Some(_) => return Err(ApiError::method_not_allowed()),
        }
        match *self.method {
            Method::GET => {
                let object = self.cluster.get(resource, namespace, name)?;
                if self.wants_table() {
                    let rv = crate::kube::object::resource_version(&object).unwrap_or(0);
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::table(resource.plural, [object.as_ref()], rv, self.cluster.now_seconds(), true),
                    ));
                }
                Ok(json_response(StatusCode::OK, object.as_ref()))
            }
            Method::PUT => Ok(json_response(
                StatusCode::OK,
                &*self.cluster.replace(resource, namespace, name, self.json_body()?, &self.options(false)?)?,
            )),
            Method::PATCH => {
                let kind = self.patch_type()?;
                let body = if kind == PatchType::Apply { self.yaml_body()? } else { self.json_body()? };
                let (object, created) = self.cluster.patch(
                    resource,
                    namespace,
                    name,
                    kind,
                    &body,
                    &self.options(kind == PatchType::Apply)?,
                )?;
                Ok(json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, object.as_ref()))
            }
            Method::DELETE => {
                Ok(json_response(StatusCode::OK, &self.cluster.delete(resource, namespace, name, self.dry_run())?))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn watch(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> Result<Response, ApiError> {
        let from = self
            .param("resourceVersion")
            .map(|rv| {
                rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("resourceVersion {rv:?} is not valid")))
            })
            .transpose()?;
        let timeout = self
            .param("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(WATCH_TIMEOUT_DEFAULT, Duration::from_secs);
        let bookmarks = self.param("allowWatchBookmarks") == Some("true");
        let (initial, mut live) = match self.cluster.watch(resource, namespace, from) {
            Ok(started) => started,
            Err(gone) if gone.code == 410 => {
                // A real server answers 200 and one ERROR event.
                let line = format!("{}\n", json!({"type": "ERROR", "object": gone.body()}));
                return Ok(json_response(StatusCode::OK, &Value::Null).map(|_| Body::from(line)));
            }
            Err(err) => return Err(err),
        };
        let filter =
            WatchFilter { storage: resource.storage_key(), namespace: namespace.map(str::to_string), labels, fields };
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(WATCH_STREAM_COUNT_MAX);
        let (table, plural, api_version, kind) =
            (self.wants_table(), resource.plural, resource.api_version(), resource.kind);
        let faults = self.cluster.faults.clone();
        let now = self.cluster.now_seconds();
        tokio::spawn(async move {
            let mut headers = true;
            let mut last_rv = from.unwrap_or(0);
            let encode = |event_type: &str, object: &Value, headers: bool| -> Bytes {
                let mut line = if table {
                    let mut object = object.clone();
                    object["apiVersion"] = json!(api_version);
                    object["kind"] = json!(kind);
                    let table = table::table(plural, [&object], 0, now, headers);
                    serde_json::to_vec(&json!({"type": event_type, "object": table})).unwrap_or_default()
                } else {
                    // Written straight from the stored object, not a copy of it.
                    let object = Typed { object, api_version: &api_version, kind };
                    serde_json::to_vec(&WatchLine { event_type, object }).unwrap_or_default()
                };
                line.push(b'\n');
                Bytes::from(line)
            };
            for event in initial {
                if let Some((event_type, object)) = filter.view(&event) {
                    last_rv = last_rv.max(event.resource_version);
                    if sender.send(Ok(encode(event_type, object, headers))).await.is_err() {
                        return;
                    }
                    headers = false;
                }
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut ticks = tokio::time::interval(Duration::from_millis(500));
            let mut since_bookmark = Duration::ZERO;
            loop {
                tokio::select! {
                    () = &mut deadline => return,
                    _ = ticks.tick() => {
                        if faults.get().down {
                            let _ = sender.send(Err(std::io::Error::other("simulated cluster down"))).await;
                            return;
                        }
                        since_bookmark += Duration::from_millis(500);
                        if bookmarks && since_bookmark >= BOOKMARK_INTERVAL {
                            since_bookmark = Duration::ZERO;
                            let bookmark = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_rv.to_string()}}});
                            if sender.send(Ok(Bytes::from(format!("{bookmark}\n")))).await.is_err() {
                                return;
                            }
                        }
                    }
                    received = live.recv() => match received {
                        Some(event) => {
                            last_rv = last_rv.max(event.resource_version);
                            if let Some((event_type, object)) = filter.view(&event)
                                && sender.send(Ok(encode(event_type, object, headers))).await.is_err()
                            {
                                return;
                            }
                            headers = false;
                        }
                        // Too slow to keep up, or the cluster is gone: end the stream; the client relists.
                        None => return,
                    },
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }

    fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("as=Table"))
    }

    fn options(&self, apply: bool) -> Result<WriteOptions, ApiError> {
        let manager = match self.param("fieldManager") {
            Some(manager) => manager.to_string(),
            None if apply => return Err(ApiError::bad_request("PATCH: fieldManager is required for apply requests")),
            None => {
                let agent =
                    self.headers.get(header::USER_AGENT).and_then(|agent| agent.to_str().ok()).unwrap_or("unknown");
                agent.split('/').next().unwrap_or("unknown").to_string()
            }
        };
        Ok(WriteOptions { manager, dry_run: self.dry_run(), force: self.param("force") == Some("true") })
    }

    fn patch_type(&self) -> Result<PatchType, ApiError> {
        let content_type =
            self.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }

    /// A create or replace body: JSON, or YAML when it says so. Protobuf
    /// (what kubectl's typed `create <kind>` generators send) is not served.
    fn json_body(&self) -> Result<Value, ApiError> {
        let content_type =
            self.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("application/json");
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/vnd.kubernetes.protobuf" => Err(ApiError::unsupported_media_type_for_body(media)),
            "application/yaml" => self.yaml_body(),
            _ => serde_json::from_slice(self.body).map_err(|err| {
                ApiError::bad_request(format!("the body of the request could not be decoded as JSON: {err}"))
            }),
        }
    }

    /// An apply body: YAML, or JSON (which kubectl and kube-rs send).
    fn yaml_body(&self) -> Result<Value, ApiError> {
        if let Ok(value) = serde_json::from_slice(self.body) {
            return Ok(value);
        }
        let text = std::str::from_utf8(self.body).map_err(|_| ApiError::bad_request("the apply patch is not UTF-8"))?;
        serde_saphyr::from_str(text)
            .map_err(|err| ApiError::bad_request(format!("the apply patch is neither JSON nor YAML: {err}")))
    }
}

/// Which events a watch passes on, and as what.
struct WatchFilter {
    storage: (&'static str, &'static str),
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    /// The event as this watch sees it: an object that starts matching its
    /// selectors is ADDED, one that stops matching is DELETED.
    fn view<'a>(&self, event: &'a WatchEvent) -> Option<(&'static str, &'a Value)> {
        if event.resource != self.storage
            || self.namespace.as_deref().is_some_and(|ns| object::namespace(&event.object) != ns)
        {
            return None;
        }
        let matches = |object: &Value| self.labels.matches(object::labels(object)) && self.fields.matches(object);
        let now = matches(&event.object);
        let before = event.old.as_deref().is_some_and(matches);
        match (event.kind, before, now) {
            (EventType::Modified, true, true) => Some(("MODIFIED", &event.object)),
            (EventType::Modified, false, true) | (EventType::Added, _, true) => Some(("ADDED", &event.object)),
            (EventType::Modified, true, false) | (EventType::Deleted, _, true) => Some(("DELETED", &event.object)),
            _ => None,
        }
    }
}

fn version(surface: &Surface) -> Value {
    let minor = surface.version.minor;
    json!({
        "major": "1", "minor": minor.to_string(), "gitVersion": surface.version.git_version(),
        "gitCommit": "59526cd4867447956156ae3a602fcbac5c8ab9b2", "gitTreeState": "clean", "buildDate": "2025-04-22T16:02:27Z",
        "goVersion": if minor >= 30 { "go1.23.6" } else { "go1.13.15" }, "compiler": "gc", "platform": "linux/amd64"
    })
}

fn group_list(surface: &Surface) -> Value {
    let groups: Vec<Value> = surface
        .groups()
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> =
                versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
            json!({"name": group, "versions": versions.clone(), "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(surface: &Surface, group: &str, version: &str) -> Value {
    let mut entries = Vec::new();
    for resource in surface.all().into_iter().filter(|r| r.group == group && r.version == version) {
        entries.push(json!({
            "name": resource.plural, "singularName": resource.singular, "namespaced": resource.namespaced,
            "kind": resource.kind, "verbs": resource.verbs(), "shortNames": resource.short_names,
        }));
        if !resource.create_only {
            entries.push(json!({"name": format!("{}/status", resource.plural), "singularName": "", "namespaced": resource.namespaced, "kind": resource.kind, "verbs": ["get"]}));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries})
}
