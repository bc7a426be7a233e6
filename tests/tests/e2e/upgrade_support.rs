//! Shared by the upgrade tests: a simulated cluster with a spec and
//! manifests on disk, an engine that runs the upgrade, and a comparable
//! picture of everything an upgrade changes in a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use canaryflow_engine::{Engine, EngineConfig, Registry};
use canaryflow_sim::{Fleet, FleetConfig, Revision, manifests_yaml};
use canaryflow_store::{OpenMode, Store};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

use crate::sim_kube::client;
use crate::support::canaryflow;

/// A simulated fleet with an upgrade spec ready to run.
pub struct Setup {
    pub fleet: Fleet,
    pub dir: tempfile::TempDir,
    pub spec: PathBuf,
    pub client: Client,
}

/// What the spec says beyond the defaults.
#[derive(Clone)]
pub struct SpecOptions {
    pub from: &'static str,
    pub to: &'static str,
    pub version: &'static str,
    pub namespaces: &'static str,
    pub extra: &'static str,
    pub on_failure: &'static str,
    pub control_plane_timeout: &'static str,
    /// The manifests to install; `None`: the simulator's rendering of `to`.
    pub manifests: Option<String>,
}

impl Default for SpecOptions {
    fn default() -> Self {
        Self {
            from: "default",
            to: "1-6-8",
            version: "1.6.8",
            namespaces: "{selector: istio-injection=enabled}",
            extra: "",
            on_failure: "rollback",
            control_plane_timeout: "20s",
            manifests: None,
        }
    }
}

/// A fleet like the seed's: Istio 1.6.5 non-revisioned, three namespaces
/// of two deployments, a gateway; and a spec to 1-6-8.
pub fn seed_fleet() -> FleetConfig {
    FleetConfig {
        names: vec!["prod-eu".into()],
        namespaces: 3,
        deployments: 2,
        replicas: 2,
        rollout_delay: Duration::from_millis(40),
        ..FleetConfig::default()
    }
}

pub async fn setup(config: FleetConfig, options: &SpecOptions) -> Setup {
    let fleet = Fleet::start(config).await.expect("fleet");
    let dir = tempfile::tempdir().expect("tempdir");
    fleet.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
    let revision = Revision::new(options.to, options.version).expect("revision");
    let manifests = match &options.manifests {
        Some(text) => text.clone(),
        None => manifests_yaml(&revision).expect("manifests"),
    };
    std::fs::write(dir.path().join("manifests.yaml"), manifests).expect("write manifests");
    let clusters: Vec<String> = fleet
        .clusters()
        .iter()
        .map(|c| format!("    - {{name: {0}, context: {0}, kubeconfig: kubeconfig}}", c.name))
        .collect();
    let spec = format!(
        "apiVersion: canaryflow.io/v1
kind: Upgrade
metadata: {{name: test-upgrade}}
spec:
  from: {{revision: {from}}}
  to: {{revision: {to}, version: {version}, manifests: manifests.yaml}}
  namespaces: {namespaces}
  clusters:
{clusters}
  onFailure: {on_failure}
  timeouts: {{controlPlane: {timeout}, rollout: 20s}}
{extra}",
        from = options.from,
        to = options.to,
        version = options.version,
        namespaces = options.namespaces,
        clusters = clusters.join("\n"),
        on_failure = options.on_failure,
        timeout = options.control_plane_timeout,
        extra = options.extra,
    );
    let spec_path = dir.path().join("upgrade.yaml");
    std::fs::write(&spec_path, spec).expect("write spec");
    let client = client(&fleet, &fleet.clusters()[0].name).await;
    Setup { fleet, dir, spec: spec_path, client }
}

/// An engine on a fresh data directory in `dir`, with the upgrade's activities.
pub fn engine(dir: &Path) -> Engine {
    engine_polling(dir, Duration::from_millis(20))
}

/// [`engine`], with waits that look again every `poll`.
pub fn engine_polling(dir: &Path, poll: Duration) -> Engine {
    let store = Store::open(&dir.join("data"), OpenMode::CreateIfMissing).expect("store");
    let mut registry = Registry::new();
    canaryflow_workflows::register_all(&mut registry, canaryflow_workflows::Settings { poll });
    Engine::new(store, registry, EngineConfig::default())
}

/// A pod's injecting revision and proxy version.
pub type PodMarks = (Option<String>, Option<String>);

/// Everything an upgrade changes, or must leave as it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    /// Application namespaces: (istio-injection, istio.io/rev).
    pub namespaces: BTreeMap<String, (Option<String>, Option<String>)>,
    /// Injector webhook configurations: name -> istio.io/rev.
    pub injectors: BTreeMap<String, Option<String>>,
    /// Validating webhook configurations.
    pub validators: BTreeSet<String>,
    /// Deployments: namespace/name -> (template istio.io/rev, images).
    pub deployments: BTreeMap<String, (Option<String>, Vec<String>)>,
    /// istio-system Services: name -> selector.
    pub services: BTreeMap<String, BTreeMap<String, String>>,
    /// Per namespace: each pod's injecting revision and proxy version, sorted.
    pub pods: BTreeMap<String, Vec<PodMarks>>,
    /// Whether an invalid VirtualService is refused.
    pub validation_served: bool,
}

pub async fn cluster_state(client: &Client) -> ClusterState {
    let mut state = ClusterState {
        namespaces: BTreeMap::new(),
        injectors: BTreeMap::new(),
        validators: BTreeSet::new(),
        deployments: BTreeMap::new(),
        services: BTreeMap::new(),
        pods: BTreeMap::new(),
        validation_served: false,
    };
    let system = ["default", "kube-system", "kube-public", "kube-node-lease", "istio-system"];
    for namespace in Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await.expect("namespaces") {
        let name = namespace.metadata.name.clone().expect("name");
        let labels = namespace.metadata.labels.unwrap_or_default();
        if !system.contains(&name.as_str()) {
            state
                .namespaces
                .insert(name.clone(), (labels.get("istio-injection").cloned(), labels.get("istio.io/rev").cloned()));
        }
        let mut pods: Vec<PodMarks> = Api::<Pod>::namespaced(client.clone(), &name)
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .into_iter()
            .filter_map(|pod| {
                let view = canaryflow_workflows::PodView::from_json(&serde_json::to_value(pod).expect("json"));
                canaryflow_workflows::injected_by(&view.expect("a pod"))
            })
            .map(|injection| (injection.revision, injection.proxy_version))
            .collect();
        pods.sort();
        if !pods.is_empty() {
            state.pods.insert(name, pods);
        }
    }
    for webhook in
        Api::<MutatingWebhookConfiguration>::all(client.clone()).list(&ListParams::default()).await.expect("mwc")
    {
        state.injectors.insert(
            webhook.metadata.name.clone().expect("name"),
            webhook.metadata.labels.unwrap_or_default().get("istio.io/rev").cloned(),
        );
    }
    for webhook in
        Api::<ValidatingWebhookConfiguration>::all(client.clone()).list(&ListParams::default()).await.expect("vwc")
    {
        state.validators.insert(webhook.metadata.name.expect("name"));
    }
    for deployment in Api::<Deployment>::all(client.clone()).list(&ListParams::default()).await.expect("deployments") {
        let key = format!(
            "{}/{}",
            deployment.metadata.namespace.clone().unwrap_or_default(),
            deployment.metadata.name.clone().unwrap_or_default()
        );
        let template = deployment.spec.map(|s| s.template).unwrap_or_default();
        let revision = template.metadata.and_then(|m| m.labels).and_then(|l| l.get("istio.io/rev").cloned());
        let images =
            template.spec.map(|s| s.containers.into_iter().filter_map(|c| c.image).collect()).unwrap_or_default();
        state.deployments.insert(key, (revision, images));
    }
    for service in
        Api::<Service>::namespaced(client.clone(), "istio-system").list(&ListParams::default()).await.expect("services")
    {
        let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
        state.services.insert(service.metadata.name.expect("name"), selector.into_iter().collect());
    }
    state.validation_served = validation_served(client).await;
    state
}

/// Dry-runs an invalid VirtualService: refused means validation is served.
pub async fn validation_served(client: &Client) -> bool {
    let resource = kube::discovery::ApiResource {
        group: "networking.istio.io".into(),
        version: "v1beta1".into(),
        api_version: "networking.istio.io/v1beta1".into(),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    };
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let object: kube::core::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": "probe"}, "spec": {"hosts": []}
    }))
    .expect("object");
    let outcome = api.create(&PostParams { dry_run: true, ..PostParams::default() }, &object).await;
    matches!(outcome, Err(kube::Error::Api(status)) if status.message.contains("admission webhook"))
}

/// The pods' injecting revisions in every application namespace, flattened.
pub fn revisions(state: &ClusterState) -> BTreeSet<Option<String>> {
    state
        .pods
        .iter()
        .filter(|(ns, _)| !["istio-system"].contains(&ns.as_str()))
        .flat_map(|(_, pods)| pods.iter().map(|(rev, _)| rev.clone()))
        .collect()
}

/// Runs the CLI off the async threads (the simulator serves on them).
pub async fn cli(data: &Path, args: &[&str], env: &[(&str, String)]) -> (Output, String, String) {
    let mut command = canaryflow(data);
    command.args(args).env("CANARYFLOW_POLL_MS", "20");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("spawn");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}
