//! The simulator through kube-rs, over HTTP, as canaryflow reaches a real
//! cluster: every verb, watch, server-side apply, errors, discovery,
//! rollouts, injection, validation and faults.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

use canaryflow_sim::{FaultConfig, Fleet, FleetConfig};

pub async fn client(fleet: &Fleet, context: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(fleet.kubeconfig()).expect("kubeconfig parses");
    let options = KubeConfigOptions { context: Some(context.into()), ..KubeConfigOptions::default() };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await.expect("config");
    Client::try_from(config).expect("client")
}

pub async fn fleet(config: FleetConfig) -> (Fleet, Client) {
    let fleet = Fleet::start(config).await.expect("fleet starts");
    let name = fleet.clusters()[0].name.clone();
    let client = client(&fleet, &name).await;
    (fleet, client)
}

fn quick() -> FleetConfig {
    FleetConfig { rollout_delay: Duration::from_millis(50), ..FleetConfig::default() }
}

fn api_error(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone(), status.message.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

/// Polls `check` until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// The names of the pods `selector` picks.
async fn pod_names(pods: &Api<Pod>, selector: &str) -> Vec<String> {
    let listed = pods.list(&ListParams::default().labels(selector)).await.expect("pods").items;
    listed.into_iter().filter_map(|p| p.metadata.name).collect()
}

async fn raw(client: &Client, method: &str, path: &str, content_type: &str, body: &str, accept: &str) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .header("Accept", accept)
        .body(body.as_bytes().to_vec())
        .expect("request");
    let response = client.send(request.map(kube::client::Body::from)).await.expect("sent");
    let code = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn get_list_selectors_and_paging() {
    let (_fleet, client) = fleet(quick()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let all = pods.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 4, "2 deployments x 2 replicas");
    assert!(all.metadata.resource_version.is_some(), "lists carry a resourceVersion");
    let web = pods.list(&ListParams::default().labels("app=web")).await.expect("label selector");
    assert_eq!(web.items.len(), 2);
    let name = web.items[0].metadata.name.clone().expect("name");
    let one = pods.list(&ListParams::default().fields(&format!("metadata.name={name}"))).await.expect("field selector");
    assert_eq!(one.items.len(), 1);
    let first = pods.list(&ListParams::default().limit(3)).await.expect("page 1");
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = pods.list(&ListParams::default().limit(3).continue_token(&token)).await.expect("page 2");
    assert_eq!(second.items.len(), 1);
    let got = pods.get(&name).await.expect("get");
    assert_eq!(got.metadata.name.as_deref(), Some(name.as_str()));
    let all_namespaces: Api<Pod> = Api::all(client.clone());
    assert!(all_namespaces.list(&ListParams::default().labels("app=istiod")).await.expect("all").items.len() == 1);
    let (code, reason, message) = api_error(pods.get("nope").await.expect_err("missing"));
    assert_eq!((code, reason.as_str(), message.as_str()), (404, "NotFound", "pods \"nope\" not found"));
    let deployments: Api<Deployment> = Api::namespaced(client, "shop");
    let (_, _, message) = api_error(deployments.get("nope").await.expect_err("missing"));
    assert_eq!(message, "deployments.apps \"nope\" not found");
}

#[tokio::test]
async fn create_replace_conflict_and_delete() {
    let (_fleet, client) = fleet(quick()).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings", "labels": {"tier": "x"}}, "data": {"a": "1"}}))
            .expect("cm");
    let created = maps.create(&PostParams::default(), &map).await.expect("create");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let (code, reason, _) = api_error(maps.create(&PostParams::default(), &map).await.expect_err("exists"));
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let mut stale = created.clone();
    let mut current = created.clone();
    current.data = Some([("a".to_string(), "2".to_string())].into());
    maps.replace("settings", &PostParams::default(), &current).await.expect("replace");
    stale.data = Some([("a".to_string(), "3".to_string())].into());
    let (code, reason, message) =
        api_error(maps.replace("settings", &PostParams::default(), &stale).await.expect_err("stale"));
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.contains("the object has been modified"), "{message}");

    for n in 0..3 {
        let extra: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("extra-{n}"), "labels": {"tier": "x"}}}))
                .expect("cm");
        maps.create(&PostParams::default(), &extra).await.expect("create");
    }
    maps.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=x"))
        .await
        .expect("delete collection");
    assert!(maps.list(&ListParams::default().labels("tier=x")).await.expect("list").items.is_empty());
    let (code, _, _) = api_error(maps.delete("settings", &DeleteParams::default()).await.expect_err("already gone"));
    assert_eq!(code, 404);

    let bad: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "Not_A_Name"}})).expect("cm");
    let (code, reason, message) = api_error(maps.create(&PostParams::default(), &bad).await.expect_err("invalid"));
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("metadata.name"), "{message}");
    let elsewhere: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm");
    let (code, _, message) = api_error(
        Api::<ConfigMap>::namespaced(client, "nowhere")
            .create(&PostParams::default(), &elsewhere)
            .await
            .expect_err("no ns"),
    );
    assert_eq!(code, 404);
    assert_eq!(message, "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn every_patch_type_and_server_side_apply() {
    let (_fleet, client) = fleet(quick()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let merge = json!({"metadata": {"labels": {"istio-injection": null, "istio.io/rev": "canary"}}});
    let patched = namespaces.patch("shop", &PatchParams::default(), &Patch::Merge(&merge)).await.expect("merge");
    let labels = patched.metadata.labels.expect("labels");
    assert_eq!(labels.get("istio.io/rev").map(String::as_str), Some("canary"));
    assert!(!labels.contains_key("istio-injection"));

    let operations: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/annotations", "value": {"owner": "mesh"}}]))
            .expect("ops");
    let patched =
        namespaces.patch("shop", &PatchParams::default(), &Patch::<()>::Json(operations)).await.expect("json patch");
    assert_eq!(patched.metadata.annotations.expect("annotations").get("owner").map(String::as_str), Some("mesh"));

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let config = |labels: Value, data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "labels": labels}, "data": data});
    let params = PatchParams::apply("canaryflow");
    let created = maps
        .patch("applied", &params, &Patch::Apply(config(json!({"a": "1", "b": "2"}), json!({"k": "v"}))))
        .await
        .expect("apply creates");
    assert_eq!(created.metadata.managed_fields.expect("managed")[0].manager.as_deref(), Some("canaryflow"));
    let updated = maps
        .patch("applied", &params, &Patch::Apply(config(json!({"a": "1"}), json!({"k": "v"}))))
        .await
        .expect("apply updates");
    assert!(!updated.metadata.labels.expect("labels").contains_key("b"), "a label no longer applied is removed");
    let other = PatchParams::apply("someone-else");
    let (code, reason, message) = api_error(
        maps.patch("applied", &other, &Patch::Apply(config(json!({"a": "9"}), json!({})))).await.expect_err("conflict"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.contains("conflict with \"canaryflow\""), "{message}");
    let forced = maps
        .patch("applied", &other.force(), &Patch::Apply(config(json!({"a": "9"}), json!({}))))
        .await
        .expect("forced");
    assert_eq!(forced.metadata.labels.expect("labels").get("a").map(String::as_str), Some("9"));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-28T21:36:34Z"}}}}});
    let before = deployments.get("web").await.expect("web").metadata.generation.expect("generation");
    let restarted =
        deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&restart)).await.expect("strategic");
    assert_eq!(restarted.metadata.generation, Some(before + 1), "a template change bumps the generation");
    let (code, body) =
        raw(&client, "PATCH", "/api/v1/namespaces/shop/configmaps/applied", "text/plain", "{}", "application/json")
            .await;
    assert_eq!((code, body["reason"].as_str()), (415, Some("UnsupportedMediaType")));
}

#[tokio::test]
async fn a_template_change_rolls_out_with_a_real_status() {
    let (_fleet, client) =
        fleet(FleetConfig { rollout_delay: Duration::from_millis(300), ..FleetConfig::default() }).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let old = pod_names(&pods, "app=web").await;
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"restarted": "1"}}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&restart)).await.expect("restart");
    let during = deployments.get("web").await.expect("web");
    let status = during.status.expect("status");
    assert_eq!(status.observed_generation, during.metadata.generation, "the new generation is observed at once");
    assert_eq!(status.updated_replicas.unwrap_or(0), 0, "no new pod before the rollout delay");
    eventually(Duration::from_secs(5), "the rollout", || {
        let deployments = deployments.clone();
        async move {
            let status = deployments.get("web").await.ok().and_then(|d| d.status);
            status.is_some_and(|s| s.updated_replicas == Some(2) && s.available_replicas == Some(2))
        }
    })
    .await;
    let done = deployments.get("web").await.expect("web").status.expect("status");
    let progressing =
        done.conditions.expect("conditions").into_iter().find(|c| c.type_ == "Progressing").expect("Progressing");
    assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetAvailable"));
    let new = pod_names(&pods, "app=web").await;
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|name| !old.contains(name)), "every pod was replaced");
}

/// The simulator compares specs without copying them and remembers each
/// template's hash per (uid, generation): a label change must not look
/// like a new spec, and a workload re-created under the same name must roll
/// out its own template, not the hash its predecessor left behind.
#[tokio::test]
async fn generation_follows_the_spec_and_a_recreated_workload_rolls_out_its_own_template() {
    let (_fleet, client) =
        fleet(FleetConfig { rollout_delay: Duration::from_millis(200), ..FleetConfig::default() }).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let hashes = || async {
        let listed = pods.list(&ListParams::default().labels("app=web")).await.expect("pods").items;
        listed
            .into_iter()
            .map(|pod| pod.metadata.labels.unwrap_or_default()["pod-template-hash"].clone())
            .collect::<Vec<_>>()
    };
    let before = deployments.get("web").await.expect("web");
    let old_hashes = hashes().await;
    assert!(!old_hashes.is_empty(), "web runs pods");

    let label = json!({"metadata": {"labels": {"team": "checkout"}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(&label)).await.expect("label");
    assert_eq!(deployments.get("web").await.expect("web").metadata.generation, before.metadata.generation);
    let api_generation = deployments.get("api").await.expect("api").metadata.generation;
    let replicas = json!({"spec": {"replicas": 3}});
    deployments.patch("api", &PatchParams::default(), &Patch::Merge(&replicas)).await.expect("scale");
    let scaled = deployments.get("api").await.expect("api").metadata.generation;
    assert_eq!(scaled, api_generation.map(|g| g + 1), "a spec change is a new generation");

    // `web` goes at generation 1, and its successor starts at 1: only the uid tells them apart.
    deployments.delete("web", &DeleteParams::default()).await.expect("delete");
    let mut again = Deployment { spec: before.spec.clone(), ..Deployment::default() };
    again.metadata = kube::api::ObjectMeta {
        name: before.metadata.name.clone(),
        labels: before.metadata.labels.clone(),
        ..kube::api::ObjectMeta::default()
    };
    let template = &mut again.spec.as_mut().expect("spec").template;
    template.metadata.get_or_insert_default().annotations.get_or_insert_default().insert("edition".into(), "2".into());
    deployments.create(&PostParams::default(), &again).await.expect("re-create");
    eventually(Duration::from_secs(5), "the re-created web's own pods", || async {
        let listed = pods.list(&ListParams::default().labels("app=web")).await.expect("pods").items;
        let annotated = |pod: &Pod| pod.metadata.annotations.as_ref().and_then(|a| a.get("edition")).is_some();
        listed.len() == 2 && listed.iter().all(annotated)
    })
    .await;
    let new_hashes = hashes().await;
    assert!(new_hashes.iter().all(|hash| !old_hashes.contains(hash)), "{new_hashes:?} vs {old_hashes:?}");
}

#[tokio::test]
async fn watch_streams_events_from_a_resource_version() {
    let (_fleet, client) = fleet(quick()).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let list = maps.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let mut stream = maps.watch(&WatchParams::default().timeout(10), &rv).await.expect("watch").boxed();
    let map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "watched"}})).expect("cm");
    maps.create(&PostParams::default(), &map).await.expect("create");
    maps.patch("watched", &PatchParams::default(), &Patch::Merge(json!({"data": {"x": "1"}}))).await.expect("patch");
    maps.delete("watched", &DeleteParams::default()).await.expect("delete");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("event")
        {
            WatchEvent::Added(m) => seen.push(("ADDED", m.metadata.name)),
            WatchEvent::Modified(m) => seen.push(("MODIFIED", m.metadata.name)),
            WatchEvent::Deleted(m) => seen.push(("DELETED", m.metadata.name)),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(err) => panic!("watch error {err:?}"),
        }
    }
    let name = Some("watched".to_string());
    assert_eq!(seen, [("ADDED", name.clone()), ("MODIFIED", name.clone()), ("DELETED", name)]);

    // kube-runtime's watcher (list, then watch with bookmarks) sees a rollout's pods come and go.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let mut events = kube::runtime::watcher(pods, kube::runtime::watcher::Config::default().labels("app=api")).boxed();
    let deployments: Api<Deployment> = Api::namespaced(client, "shop");
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"restarted": "watch"}}}}});
    let mut restarted = false;
    let (mut applied, mut deleted) = (0, 0);
    while deleted < 2 || applied < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        match event {
            kube::runtime::watcher::Event::InitDone if !restarted => {
                deployments.patch("api", &PatchParams::default(), &Patch::Strategic(&restart)).await.expect("restart");
                restarted = true;
            }
            kube::runtime::watcher::Event::Apply(_) if restarted => applied += 1,
            kube::runtime::watcher::Event::Delete(_) => deleted += 1,
            _ => {}
        }
    }
}

#[tokio::test]
async fn discovery_tables_and_malformed_requests() {
    let (_fleet, client) = fleet(quick()).await;
    let discovery = kube::Discovery::new(client.clone()).run().await.expect("discovery");
    let kinds: Vec<String> =
        discovery.groups().flat_map(|group| group.recommended_resources().into_iter().map(|(r, _)| r.kind)).collect();
    for kind in [
        "Pod",
        "Deployment",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Lease",
        "Secret",
        "ServiceAccount",
        "DaemonSet",
        "StatefulSet",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing from discovery: {kinds:?}");
    }
    let table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (code, table) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/istio-system/pods?labelSelector=app%3Distiod",
        "application/json",
        "",
        table_accept,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().expect("columns").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(&columns[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(table["rows"][0]["cells"][1], "1/1");
    assert_eq!(table["rows"][0]["cells"][2], "Running");

    let (code, body) =
        raw(&client, "POST", "/api/v1/namespaces/shop/configmaps", "application/json", "{not json", "application/json")
            .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, body) =
        raw(&client, "GET", "/apis/example.com/v1/widgets", "application/json", "", "application/json").await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    let (code, body) =
        raw(&client, "GET", "/api/v1/pods?labelSelector=a%20b%20c", "application/json", "", "application/json").await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    assert!(body["message"].as_str().is_some_and(|m| m.contains("unable to parse requirement")), "{body}");
    let (code, body) =
        raw(&client, "POST", "/api/v1/namespaces/shop/pods/some-pod", "application/json", "{}", "application/json")
            .await;
    assert_eq!((code, body["reason"].as_str()), (405, Some("MethodNotAllowed")));
    let (code, body) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/shop/configmaps/istio-ca-root-cert",
        "application/apply-patch+yaml",
        "a: [b",
        "application/json",
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")), "{body}");
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        r#"{"metadata":{"name":"1.6.8"}}"#,
        "application/json",
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    let (code, review) = raw(
        &client,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "application/json",
        r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"create","group":"apps","resource":"deployments","namespace":"istio-system"}}}"#,
        "application/json",
    )
    .await;
    assert_eq!((code, review["status"]["allowed"].as_bool()), (201, Some(true)));
}

#[tokio::test]
async fn faults_switch_on_and_off_while_running() {
    let (fleet, client) = fleet(quick()).await;
    let faults = fleet.clusters()[0].faults.clone();
    // kube-rs retries 429, 503 and 504 by itself; to see each fault as it
    // is served, this client does not.
    let kubeconfig = Kubeconfig::from_yaml(fleet.kubeconfig()).expect("kubeconfig");
    let options = KubeConfigOptions { context: Some(fleet.clusters()[0].name.clone()), ..KubeConfigOptions::default() };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options).await.expect("config");
    config.default_retry = false;
    let maps: Api<ConfigMap> = Api::namespaced(Client::try_from(config).expect("client"), "shop");

    faults.update(|f| f.latency_ms = 150);
    let started = Instant::now();
    maps.list(&ListParams::default()).await.expect("slow but fine");
    assert!(started.elapsed() >= Duration::from_millis(150), "latency added");
    faults.set(FaultConfig { error_500_rate: 1.0, ..FaultConfig::default() });
    assert_eq!(api_error(maps.list(&ListParams::default()).await.expect_err("500")).0, 500);
    faults.set(FaultConfig { error_429_rate: 1.0, ..FaultConfig::default() });
    assert_eq!(api_error(maps.list(&ListParams::default()).await.expect_err("429")).1, "TooManyRequests");
    // With its retries on, kube-rs rides out a cluster that throttles half the time.
    faults.set(FaultConfig { error_429_rate: 0.5, ..FaultConfig::default() });
    let retrying: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    for _ in 0..2 {
        retrying.list(&ListParams::default()).await.expect("retried past the 429s");
    }
    faults.set(FaultConfig { error_409_rate: 1.0, ..FaultConfig::default() });
    maps.list(&ListParams::default()).await.expect("reads pass");
    let map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "w"}})).expect("cm");
    assert_eq!(api_error(maps.create(&PostParams::default(), &map).await.expect_err("409")).0, 409);
    faults.set(FaultConfig { down: true, ..FaultConfig::default() });
    let down = maps.list(&ListParams::default()).await.expect_err("down");
    assert!(!matches!(down, kube::Error::Api(_)), "a down cluster drops connections, it does not answer: {down}");
    faults.set(FaultConfig { drop_rate: 1.0, ..FaultConfig::default() });
    assert!(maps.list(&ListParams::default()).await.is_err());
    faults.set(FaultConfig::default());
    eventually(Duration::from_secs(5), "the cluster to answer again", || {
        let maps = maps.clone();
        async move { maps.list(&ListParams::default()).await.is_ok() }
    })
    .await;

    // The admin endpoint does the same over HTTP.
    let (code, _) = raw(
        &client,
        "PUT",
        "/sim/faults",
        "application/json",
        r#"{"stuckRollouts": ["shop/web"], "crashLooping": ["shop/api"]}"#,
        "application/json",
    )
    .await;
    assert_eq!(code, 200);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"restarted": "stuck"}}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&restart)).await.expect("restart");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let web = deployments.get("web").await.expect("web").status.expect("status");
    assert_eq!(web.updated_replicas.unwrap_or(0), 0, "a stuck rollout never replaces its pods");
    let pods: Api<Pod> = Api::namespaced(client, "shop");
    eventually(Duration::from_secs(5), "crash-looping api pods", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=api")).await.expect("pods");
            list.items.iter().all(|pod| {
                let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
                statuses.iter().any(|s| {
                    s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
                })
            })
        }
    })
    .await;
    let api = deployments.get("api").await.expect("api").status.expect("status");
    assert_eq!(api.ready_replicas.unwrap_or(0), 0, "crash-looping pods are not ready");
}

#[tokio::test]
async fn injection_follows_the_webhooks_present() {
    let (_fleet, client) = fleet(quick()).await;
    let manifests: Vec<Value> = serde_saphyr::from_multiple(
        &canaryflow_sim::manifests_yaml(&canaryflow_sim::Revision::new("1-6-8", "1.6.8").expect("rev")).expect("yaml"),
    )
    .expect("parse");
    apply_all(&client, &manifests).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    eventually(Duration::from_secs(5), "istiod-1-6-8 available", || {
        let deployments = deployments.clone();
        async move {
            deployments.get("istiod-1-6-8").await.ok().and_then(|d| d.status).and_then(|s| s.available_replicas)
                == Some(1)
        }
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pod = |name: &str| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}),
        )
        .expect("pod")
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let image = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == "istio-proxy"))
            .and_then(|c| c.image.clone())
    };

    let injected = pods.create(&PostParams::default(), &pod("by-default")).await.expect("create");
    assert_eq!(
        image(&injected).as_deref(),
        Some("docker.io/istio/proxyv2:1.6.5"),
        "istio-injection=enabled: the default revision"
    );
    namespaces
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"istio.io/rev": "1-6-8"}}})),
        )
        .await
        .expect("label");
    let injected = pods.create(&PostParams::default(), &pod("both-labels")).await.expect("create");
    assert_eq!(
        image(&injected).as_deref(),
        Some("docker.io/istio/proxyv2:1.6.5"),
        "istio-injection wins over istio.io/rev"
    );
    namespaces
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"istio-injection": null}}})),
        )
        .await
        .expect("label");
    let injected = pods.create(&PostParams::default(), &pod("moved")).await.expect("create");
    assert_eq!(image(&injected).as_deref(), Some("docker.io/istio/proxyv2:1.6.8"));
    let env = injected
        .spec
        .expect("spec")
        .containers
        .into_iter()
        .find(|c| c.name == "istio-proxy")
        .and_then(|c| c.env)
        .expect("env");
    assert!(
        env.iter().any(|e| e.name == "CA_ADDR" && e.value.as_deref() == Some("istiod-1-6-8.istio-system.svc:15012"))
    );

    deployments
        .patch("istiod-1-6-8", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .expect("scale istiod down");
    eventually(Duration::from_secs(5), "istiod-1-6-8 gone", || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get("istiod-1-6-8")
                .await
                .ok()
                .and_then(|d| d.status)
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                == 0
        }
    })
    .await;
    let (code, _, message) =
        api_error(pods.create(&PostParams::default(), &pod("no-istiod")).await.expect_err("failurePolicy Fail"));
    assert_eq!(code, 500);
    assert!(message.contains("no endpoints available for service \"istiod-1-6-8\""), "{message}");

    let webhooks: Api<kube::core::DynamicObject> = Api::all_with(
        client,
        &kube::discovery::ApiResource::erase::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>(
            &(),
        ),
    );
    webhooks.delete("istio-sidecar-injector-1-6-8", &DeleteParams::default()).await.expect("delete webhook");
    let plain = pods.create(&PostParams::default(), &pod("no-webhook")).await.expect("create");
    assert_eq!(image(&plain), None, "no webhook, no injection");
}

#[tokio::test]
async fn validation_is_served_only_while_its_service_has_a_live_istiod() {
    let (_fleet, client) = fleet(quick()).await;
    let manifests: Vec<Value> = serde_saphyr::from_multiple(
        &canaryflow_sim::manifests_yaml(&canaryflow_sim::Revision::new("1-6-8", "1.6.8").expect("rev")).expect("yaml"),
    )
    .expect("parse");
    apply_all(&client, &manifests).await;
    let invalid = r#"{"apiVersion":"networking.istio.io/v1beta1","kind":"VirtualService","metadata":{"name":"bad"},"spec":{"hosts":[]}}"#;
    let path = "/apis/networking.istio.io/v1beta1/namespaces/shop/virtualservices?dryRun=All";
    let (code, body) = raw(&client, "POST", path, "application/json", invalid, "application/json").await;
    assert_eq!(code, 400, "the default istiod validates: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("admission webhook \"validation.istio.io\" denied the request")),
        "{body}"
    );

    // The seed's bug: remove the non-revisioned istiod, and the base webhook
    // (hard-wired to Service `istiod`) has nothing behind it: fail-open.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    deployments.delete("istiod", &DeleteParams::default()).await.expect("delete istiod");
    let (code, _) = raw(&client, "POST", path, "application/json", invalid, "application/json").await;
    assert_eq!(code, 201, "invalid config slips through");

    // The documented workaround: Service `istiod` pointed at the revision
    // that should validate (a copy of istiod-1-6-8 under the old name).
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "istio-system");
    let canary = services.get("istiod-1-6-8").await.expect("istiod-1-6-8");
    let selector = canary.spec.as_ref().and_then(|spec| spec.selector.clone()).expect("selector");
    let ports = canary.spec.as_ref().and_then(|spec| spec.ports.clone()).expect("ports");
    let workaround = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istiod", "namespace": "istio-system"}, "spec": {"selector": selector, "ports": ports}});
    services
        .patch("istiod", &PatchParams::apply("canaryflow").force(), &Patch::Apply(&workaround))
        .await
        .expect("workaround");
    eventually(Duration::from_secs(5), "validation served by 1-6-8", || {
        let client = client.clone();
        async move { raw(&client, "POST", path, "application/json", invalid, "application/json").await.0 == 400 }
    })
    .await;
}

async fn apply_all(client: &Client, objects: &[Value]) {
    let discovery = kube::Discovery::new(client.clone()).run().await.expect("discovery");
    for object in objects {
        let object: kube::core::DynamicObject = serde_json::from_value(object.clone()).expect("object");
        let gvk = kube::core::GroupVersionKind::try_from(object.types.as_ref().expect("types")).expect("gvk");
        let (resource, capabilities) = discovery.resolve_gvk(&gvk).expect("known kind");
        let api: Api<kube::core::DynamicObject> = match (capabilities.scope, object.metadata.namespace.as_deref()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        let name = object.metadata.name.clone().expect("name");
        api.patch(&name, &PatchParams::apply("canaryflow").force(), &Patch::Apply(&object)).await.expect("apply");
    }
}

#[tokio::test]
async fn every_workload_kind_rolls_out_and_the_gateway_follows_its_revision() {
    let (_fleet, client) = fleet(quick()).await;
    let apps = json!([
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"},
         "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                  "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "shop"},
         "spec": {"selector": {"matchLabels": {"app": "agent"}},
                  "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}}},
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader", "namespace": "shop"}, "spec": {"holderIdentity": "a"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token", "namespace": "shop"}, "type": "Opaque", "data": {"k": "dg=="}}
    ]);
    apply_all(&client, apps.as_array().expect("array")).await;
    let statefulsets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), "shop");
    let daemonsets: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(client.clone(), "shop");
    eventually(Duration::from_secs(5), "the StatefulSet and the DaemonSet ready", || {
        let (statefulsets, daemonsets) = (statefulsets.clone(), daemonsets.clone());
        async move {
            let sts = statefulsets.get("db").await.ok().and_then(|s| s.status).and_then(|s| s.ready_replicas);
            let ds = daemonsets
                .get("agent")
                .await
                .ok()
                .and_then(|d| d.status)
                .map(|s| (s.desired_number_scheduled, s.number_ready));
            sts == Some(2) && ds == Some((2, 2))
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let names = pod_names(&pods, "app=db").await;
    assert_eq!(names, ["db-0", "db-1"], "StatefulSet pods are numbered");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "shop");
    assert_eq!(leases.get("leader").await.expect("lease").spec.and_then(|s| s.holder_identity).as_deref(), Some("a"));

    // The gateway runs the proxy of the revision its Deployment names.
    let gateway_image = |pods: Vec<Pod>| -> Vec<String> {
        pods.into_iter()
            .filter_map(|p| p.spec)
            .flat_map(|s| s.containers)
            .filter(|c| c.name == "istio-proxy")
            .filter_map(|c| c.image)
            .collect()
    };
    let system: Api<Pod> = Api::namespaced(client.clone(), "istio-system");
    let images =
        gateway_image(system.list(&ListParams::default().labels("istio=ingressgateway")).await.expect("pods").items);
    assert_eq!(images, ["docker.io/istio/proxyv2:1.6.5"]);
    let manifests: Vec<Value> = serde_saphyr::from_multiple(
        &canaryflow_sim::manifests_yaml(&canaryflow_sim::Revision::new("1-6-8", "1.6.8").expect("rev")).expect("yaml"),
    )
    .expect("parse");
    apply_all(&client, &manifests).await;
    eventually(Duration::from_secs(5), "the gateway upgraded in place to 1.6.8", || {
        let system = system.clone();
        async move {
            let pods = system.list(&ListParams::default().labels("istio=ingressgateway")).await.expect("pods").items;
            let ready = pods.iter().all(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            ready && gateway_image(pods) == ["docker.io/istio/proxyv2:1.6.8"]
        }
    })
    .await;
}

/// What a real cluster refuses, the simulator refuses: a pod whose
/// ServiceAccount does not exist is not created, and its Deployment says
/// so (`ReplicaFailure`, `FailedCreate`); once the account exists, the
/// pods come. Every namespace gets its `default` account on creation.
#[tokio::test]
async fn a_pod_whose_service_account_is_missing_is_refused_and_its_deployment_says_so() {
    let (_fleet, client) = fleet(quick()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "accounts"}})).expect("ns");
    namespaces.create(&PostParams::default(), &ns).await.expect("namespace");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), "accounts");
    assert!(accounts.get_opt("default").await.expect("read").is_some(), "the serviceaccount controller made `default`");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "accounts");
    let app: Deployment = serde_json::from_value(json!({"metadata": {"name": "app"},
        "spec": {"selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}},
                "spec": {"serviceAccountName": "runner", "containers": [{"name": "app", "image": "app:1"}]}}}}))
    .expect("deployment");
    deployments.create(&PostParams::default(), &app).await.expect("created");
    assert_eq!(
        deployments.get("app").await.expect("read").spec.and_then(|s| s.replicas),
        Some(1),
        "the API server defaults replicas to 1"
    );
    eventually(Duration::from_secs(5), "FailedCreate", || async {
        let conditions = deployments.get("app").await.ok().and_then(|d| d.status).and_then(|s| s.conditions);
        conditions.into_iter().flatten().any(|c| {
            c.type_ == "ReplicaFailure"
                && c.reason.as_deref() == Some("FailedCreate")
                && c.message.as_deref().is_some_and(|m| m.contains("serviceaccount \"runner\" not found"))
        })
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "accounts");
    assert!(pod_names(&pods, "app=app").await.is_empty(), "no pod without its account");
    let runner: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "runner"}})).expect("account");
    accounts.create(&PostParams::default(), &runner).await.expect("account");
    eventually(Duration::from_secs(5), "the pod once the account exists", || async {
        pod_names(&pods, "app=app").await.len() == 1
    })
    .await;
    let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "bare"},
        "spec": {"serviceAccountName": "missing", "containers": [{"name": "c", "image": "c:1"}]}}))
    .expect("pod");
    let (code, reason, message) = api_error(pods.create(&PostParams::default(), &bare).await.expect_err("refused"));
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert!(message.contains("error looking up service account accounts/missing"), "{message}");
}
