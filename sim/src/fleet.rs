//! A fleet of simulated clusters on loopback ports, and its kubeconfig.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::faults::{FaultConfig, Faults};
use crate::istio::charts::{self, GatewayKind, Render, Revision};
use crate::istio::installer::{self, Installer};
use crate::istio::istiod::{ISTIO_NAMESPACE, IstioPrograms};
use crate::kube::cluster::{Cluster, WriteOptions};
use crate::kube::controller;
use crate::kube::resources::KubeVersion;

/// Workload names seeded into each namespace, in order (then numbered).
const APP_NAMES: [&str; 10] =
    ["web", "api", "worker", "cart", "auth", "search", "orders", "billing", "mailer", "cache"];
/// Namespace names seeded, in order (then numbered).
const NAMESPACE_NAMES: [&str; 8] =
    ["shop", "payments", "catalog", "checkout", "accounts", "shipping", "reviews", "ads"];
/// The most clusters one fleet may hold.
pub const CLUSTERS_COUNT_MAX: usize = 1_000;

/// What a fleet looks like.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// How many clusters.
    pub clusters: usize,
    /// Their names (kubeconfig contexts); `cluster-<i>` when empty.
    pub names: Vec<String>,
    /// Application namespaces per cluster.
    pub namespaces: usize,
    /// Deployments per namespace.
    pub deployments: usize,
    /// Replicas per deployment.
    pub replicas: usize,
    /// The installed control plane's revision: `default` for a non-revisioned install.
    pub revision: String,
    /// Its Istio version.
    pub version: String,
    /// How long a rollout takes before its new pods start.
    pub rollout_delay: Duration,
    /// Added to every API request.
    pub api_latency: Duration,
    /// Faults every cluster starts with.
    pub faults: FaultConfig,
    /// Seeds the faults' random numbers (each cluster adds its index).
    pub seed: u64,
    /// A revision tag to create for the installed revision; namespaces are
    /// then labelled `istio.io/rev=<tag>` (the stable-tag flow).
    pub namespace_tag: Option<String>,
    /// The clusters' Kubernetes release; `None`: what the Istio version
    /// ran on (1.18 for Istio up to 1.8, else 1.32).
    pub kube_version: Option<KubeVersion>,
    /// Who installed Istio: istioctl (owner labels on everything) or Helm.
    pub installer: Installer,
    /// Values of the installed revision's charts (hub, variant, CA address, autoscaling).
    pub render: Render,
    /// The istio CNI node agent (DaemonSet `istio-cni-node`).
    pub cni: bool,
    /// ztunnel (DaemonSet `ztunnel`).
    pub ztunnel: bool,
    /// An in-cluster operator (`istio-operator` reconciling an IstioOperator).
    pub operator: bool,
    /// Rendered objects to install (as `installer` would) in place of the
    /// simulator's own rendering of `revision` and `version`: real
    /// generated output, for one (`canaryflow sim --install FILE`).
    pub install: Vec<Vec<Value>>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            clusters: 1,
            names: Vec::new(),
            namespaces: 3,
            deployments: 2,
            replicas: 2,
            revision: "default".into(),
            version: "1.6.5".into(),
            rollout_delay: Duration::from_millis(500),
            api_latency: Duration::ZERO,
            faults: FaultConfig::default(),
            seed: 1,
            namespace_tag: None,
            kube_version: None,
            installer: Installer::Istioctl,
            render: Render::default(),
            cni: false,
            ztunnel: false,
            operator: false,
            install: Vec::new(),
        }
    }
}

/// Why a fleet did not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The configuration is not possible.
    #[error("{0}")]
    Config(String),
    /// A loopback port could not be bound.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// Seeding a cluster failed (a bug in the seed).
    #[error("seeding cluster {cluster}: {why}")]
    Seed {
        /// The cluster.
        cluster: String,
        /// What went wrong.
        why: String,
    },
}

/// One running cluster.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    /// Its name and kubeconfig context.
    pub name: String,
    /// Its API server, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its faults, switchable while it runs (also at `<url>/sim/faults`).
    pub faults: Arc<Faults>,
    /// The Kubernetes release it serves.
    pub kube: KubeVersion,
}

/// A running fleet. Dropping it stops every cluster.
#[derive(Debug)]
pub struct Fleet {
    clusters: Vec<ClusterHandle>,
    kubeconfig: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Fleet {
    /// Starts `config.clusters` clusters, each seeded and serving.
    pub async fn start(config: FleetConfig) -> Result<Self, FleetError> {
        check(&config)?;
        // Files to install say which revision and version they hold.
        let (revision_name, version) = match config.install.first() {
            Some(file) => {
                (installer::revision_of(file), installer::version_of(file).unwrap_or_else(|| config.version.clone()))
            }
            None => (config.revision.clone(), config.version.clone()),
        };
        let revision = Revision::new(&revision_name, &version).map_err(FleetError::Config)?;
        let names: Vec<String> = if config.names.is_empty() {
            (0..config.clusters).map(|i| format!("cluster-{i}")).collect()
        } else {
            config.names.clone()
        };
        let mut listeners = Vec::with_capacity(names.len());
        for _ in &names {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.map_err(FleetError::Bind)?);
        }
        // Seeded on the runtime's own threads, a cluster per task, as many
        // at once as there are workers (nothing else runs yet). Not on
        // blocking threads: the allocator gives each thread an arena of its
        // own and reuses freed memory only within its arena, so objects
        // seeded elsewhere were freed, as rollouts replaced them, where no
        // worker allocates again, and every rollout took fresh memory.
        let mut seeding = tokio::task::JoinSet::new();
        for (index, name) in names.iter().enumerate() {
            let mut faults = config.faults.clone();
            faults.latency_ms =
                faults.latency_ms.max(u64::try_from(config.api_latency.as_millis()).unwrap_or(u64::MAX));
            let faults = Arc::new(Faults::new(faults, config.seed.wrapping_add(index as u64 + 1)));
            // Istio 1.6 ran on Kubernetes 1.15 to 1.18: its charts use APIs later releases removed.
            let kube = config.kube_version.unwrap_or_else(|| crate::istio::version::kubernetes_for(&revision.version));
            let cluster =
                Arc::new(Cluster::new(name, index, config.rollout_delay, faults, Arc::new(IstioPrograms), kube));
            let (config, revision) = (config.clone(), revision.clone());
            seeding.spawn(async move { seed(&cluster, &config, &revision).map(|()| (index, cluster)) });
        }
        let mut clusters: Vec<Option<Arc<Cluster>>> = vec![None; names.len()];
        while let Some(joined) = seeding.join_next().await {
            let (index, cluster) =
                joined.map_err(|err| FleetError::Seed { cluster: "?".into(), why: err.to_string() })??;
            clusters[index] = Some(cluster);
        }
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        for (cluster, listener) in clusters.into_iter().map(|c| c.expect("every cluster was seeded")).zip(listeners) {
            let port = listener.local_addr().map_err(FleetError::Bind)?.port();
            handles.push(ClusterHandle {
                name: cluster.name.clone(),
                url: format!("http://127.0.0.1:{port}"),
                faults: cluster.faults.clone(),
                kube: cluster.resources.version,
            });
            tasks.push(tokio::spawn(controller::run(cluster.clone())));
            let listener = FaultyListener { inner: listener, faults: cluster.faults.clone() };
            let app = crate::kube::api::router(cluster);
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
        }
        let kubeconfig = kubeconfig(&handles);
        Ok(Self { clusters: handles, kubeconfig, tasks })
    }

    /// The clusters, in order.
    #[must_use]
    pub fn clusters(&self) -> &[ClusterHandle] {
        &self.clusters
    }

    /// The cluster named `name`.
    #[must_use]
    pub fn cluster(&self, name: &str) -> Option<&ClusterHandle> {
        self.clusters.iter().find(|cluster| cluster.name == name)
    }

    /// A kubeconfig with one context per cluster (the first is current).
    #[must_use]
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, &self.kubeconfig)
    }
}

fn check(config: &FleetConfig) -> Result<(), FleetError> {
    if config.clusters == 0 || config.clusters > CLUSTERS_COUNT_MAX {
        return Err(FleetError::Config(format!("clusters must be 1 to {CLUSTERS_COUNT_MAX}, not {}", config.clusters)));
    }
    if !config.names.is_empty() && config.names.len() != config.clusters {
        return Err(FleetError::Config(format!("{} names given for {} clusters", config.names.len(), config.clusters)));
    }
    for name in &config.names {
        crate::kube::object::check_dns_label(name)
            .map_err(|why| FleetError::Config(format!("cluster name {name:?}: {why}")))?;
    }
    if let Some(tag) = &config.namespace_tag {
        crate::kube::object::check_dns_label(tag).map_err(|why| FleetError::Config(format!("tag {tag:?}: {why}")))?;
    }
    if config.namespaces > 1_000 || config.deployments > 1_000 || config.replicas > 100 {
        return Err(FleetError::Config("at most 1000 namespaces, 1000 deployments per namespace, 100 replicas".into()));
    }
    Ok(())
}

/// The name of the `index`-th item of `names`, numbered past the end.
fn nth_name(names: &[&str], index: usize) -> String {
    let base = names[index % names.len()];
    if index < names.len() { base.to_string() } else { format!("{base}-{}", index / names.len()) }
}

/// Seeds a cluster before it serves: system namespaces, Istio installed and
/// running as its installer leaves it, application namespaces of injected
/// workloads.
fn seed(cluster: &Cluster, config: &FleetConfig, revision: &Revision) -> Result<(), FleetError> {
    let fail = |why: String| FleetError::Seed { cluster: cluster.name.clone(), why };
    let options = WriteOptions { manager: "istioctl".into(), ..WriteOptions::default() };
    let mut objects: Vec<Value> = ["default", "kube-system", "kube-public", "kube-node-lease", ISTIO_NAMESPACE]
        .map(|name| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .to_vec();
    objects.extend(istio_install(config, revision, cluster.resources.version));
    if let Some(tag) = &config.namespace_tag {
        objects.extend(charts::revision_tag(tag, revision));
    }
    let injection = match (&config.namespace_tag, revision.is_default()) {
        (Some(tag), _) => json!({"istio.io/rev": tag}),
        (None, true) => json!({"istio-injection": "enabled"}),
        (None, false) => json!({"istio.io/rev": revision.name}),
    };
    let mut app_namespaces = Vec::new();
    for n in 0..config.namespaces {
        let namespace = nth_name(&NAMESPACE_NAMES, n);
        objects.push(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": injection}}),
        );
        for d in 0..config.deployments {
            objects.extend(app(&namespace, &nth_name(&APP_NAMES, d), config.replicas));
        }
        app_namespaces.push(namespace);
    }
    for namespace in app_namespaces.iter().map(String::as_str).chain(["default", ISTIO_NAMESPACE]) {
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert", "namespace": namespace},
                            "data": {"root-cert.pem": "-----BEGIN CERTIFICATE-----\nsimulated\n-----END CERTIFICATE-----\n"}}));
    }
    // Written by istiod at its start, not by the installer: its self-signed CA.
    objects.push(json!({"apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root", "metadata": {"name": "istio-ca-secret", "namespace": ISTIO_NAMESPACE},
           "data": {"ca-cert.pem": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t", "ca-key.pem": "c2ltdWxhdGVkLWNhLWtleQ=="}}));
    for object in objects {
        create(cluster, object, &options).map_err(fail)?;
    }
    let mut state = cluster.lock();
    controller::settle_now(cluster, &mut state);
    state.start_recording();
    Ok(())
}

/// Istio as the installer leaves it: the files given, or the simulator's
/// rendering of `revision` (base, control plane, gateway, then the node
/// agents asked for), labelled by the installer; the base's CRDs when the
/// files carry none (`istioctl install` always installs the base); from
/// 1.12 the `default` tag istioctl deploys on a first install; and the
/// in-cluster operator when asked.
fn istio_install(config: &FleetConfig, revision: &Revision, kube: KubeVersion) -> Vec<Value> {
    let mut render = config.render.clone();
    render.kube = kube;
    let mut revision = revision.clone();
    let mut objects = Vec::new();
    if config.install.is_empty() {
        let version = revision.version.as_str();
        objects.extend(installer::installed(config.installer, charts::base(version, &render), &revision.name, version));
        objects.extend(installer::installed(
            config.installer,
            charts::discovery(&revision, &render),
            &revision.name,
            version,
        ));
        let gateway = charts::gateway(GatewayKind::Ingress, "istio-ingressgateway", &revision, &render);
        objects.extend(installer::installed(config.installer, gateway, &revision.name, version));
    } else {
        for file in &config.install {
            let file_revision = installer::revision_of(file);
            let file_version = installer::version_of(file).unwrap_or_else(|| revision.version.clone());
            objects.extend(installer::installed(config.installer, file.clone(), &file_revision, &file_version));
            if let Ok(found) = Revision::new(&file_revision, &file_version) {
                revision = found;
            }
        }
        if !objects.iter().any(|o| o["kind"] == "CustomResourceDefinition") {
            let base: Vec<Value> = charts::base(&revision.version, &render)
                .into_iter()
                .filter(|o| {
                    !objects
                        .iter()
                        .any(|have| have["kind"] == o["kind"] && have["metadata"]["name"] == o["metadata"]["name"])
                })
                .collect();
            objects.extend(installer::installed(config.installer, base, &revision.name, &revision.version));
        }
    }
    let version = revision.version.clone();
    if config.cni {
        objects.extend(installer::installed(config.installer, charts::cni(&version, "default"), "default", &version));
    }
    if config.ztunnel {
        objects.extend(installer::installed(config.installer, charts::ztunnel(&version), "default", &version));
    }
    // CRDs first: what they define must be served before objects of their kinds.
    objects.sort_by_key(|o| o["kind"] != "CustomResourceDefinition");
    if revision.minor() >= 12 && config.installer == Installer::Istioctl {
        if revision.is_default() {
            for object in objects.iter_mut().filter(|o| o["kind"] == "MutatingWebhookConfiguration") {
                if crate::kube::object::name(object) == "istio-sidecar-injector" {
                    installer::deactivate_default_injector(object);
                }
            }
        }
        objects.extend(installer::installed_default_tag(charts::revision_tag("default", &revision), &version));
    }
    if config.operator {
        objects.extend(charts::operator(&version));
    }
    objects
}

fn create(cluster: &Cluster, object: Value, options: &WriteOptions) -> Result<(), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = cluster
        .resources
        .by_api_version(api_version, kind)
        .ok_or_else(|| format!("the cluster does not serve {api_version} {kind}"))?;
    let namespace = crate::kube::object::namespace(&object).to_string();
    cluster.create(resource, &namespace, object, options).map(|_| ()).map_err(|err| err.to_string())
}

/// An application: a Deployment and its Service.
fn app(namespace: &str, name: &str, replicas: usize) -> Vec<Value> {
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name, "version": "v1"}},
                    "spec": {"containers": [{"name": name, "image": format!("registry.example.com/{name}:1.0"), "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
    ]
}

fn kubeconfig(clusters: &[ClusterHandle]) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": clusters.first().map(|c| c.name.clone()).unwrap_or_default(),
        "clusters": clusters.iter().map(|c| json!({"name": c.name, "cluster": {"server": c.url}})).collect::<Vec<_>>(),
        "users": [{"name": "sim-admin", "user": {}}],
        "contexts": clusters.iter().map(|c| json!({"name": c.name, "context": {"cluster": c.name, "user": "sim-admin", "namespace": "default"}})).collect::<Vec<_>>(),
    });
    serde_saphyr::to_string(&config).unwrap_or_else(|_| config.to_string())
}

/// Accepts connections, dropping them while the cluster is down.
struct FaultyListener {
    inner: TcpListener,
    faults: Arc<Faults>,
}

impl axum::serve::Listener for FaultyListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) if self.faults.get().down => drop(stream),
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, address);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
