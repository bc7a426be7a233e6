//! The simulator with the real kubectl (`/usr/bin/kubectl`, 1.32): every
//! command of the seed procedure, `apply -f` client-side and server-side,
//! `rollout restart`/`status`, `label`, and `delete -l`. Each run gets its
//! own discovery cache. A machine without kubectl fails these tests with
//! a message saying how to install it; they are never skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use canaryflow_sim::{Fleet, FleetConfig, Revision, manifests_yaml};

/// The kubectl to run: `$CANARYFLOW_KUBECTL`, else `/usr/bin/kubectl`, else the one on PATH.
pub fn kubectl_path() -> PathBuf {
    let candidates =
        [std::env::var_os("CANARYFLOW_KUBECTL").map(PathBuf::from), Some(PathBuf::from("/usr/bin/kubectl"))];
    if let Some(found) = candidates.into_iter().flatten().find(|path| path.is_file()) {
        return found;
    }
    if let Ok(output) = std::process::Command::new("which").arg("kubectl").output()
        && output.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    }
    panic!(
        "kubectl is not installed, and these tests need the real one. Install kubectl 1.32: \
         curl -LO https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl && install -m 0755 kubectl /usr/local/bin/kubectl \
         (or apt-get install kubectl from the Kubernetes apt repository), or set CANARYFLOW_KUBECTL to its path"
    );
}

/// A kubectl session against one fleet: its kubeconfig and its own cache.
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    pub fn new(fleet: &Fleet) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        fleet.write_kubeconfig(&kubeconfig).expect("write kubeconfig");
        Self { kubeconfig, cache: dir.path().join("cache"), _dir: dir }
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.kubeconfig.with_file_name(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// Runs kubectl with `args`; returns (success, stdout, stderr).
    pub async fn run(&self, context: &str, args: &[&str]) -> (bool, String, String) {
        let mut command = std::process::Command::new(kubectl_path());
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--context")
            .arg(context)
            .args(args);
        command.env_remove("KUBECONFIG");
        let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("kubectl runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs kubectl and expects it to succeed; returns stdout.
    pub async fn ok(&self, context: &str, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(context, args).await;
        assert!(ok, "kubectl {} failed:\n{stdout}{stderr}", args.join(" "));
        stdout
    }
}

/// The rows of a kubectl table, each split on whitespace.
fn rows(output: &str) -> Vec<Vec<String>> {
    output.lines().skip(1).map(|line| line.split_whitespace().map(str::to_string).collect()).collect()
}

const APP: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
  namespace: test-ns
  labels: {app: demo}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
      - name: demo
        image: example/demo:1
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: demo
  namespace: test-ns
spec:
  selector: {app: demo}
  ports: [{port: 80, targetPort: 8080}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_procedure_with_the_real_kubectl() {
    let fleet = Fleet::start(FleetConfig { rollout_delay: Duration::from_millis(100), ..FleetConfig::default() })
        .await
        .expect("fleet");
    let kubectl = Kubectl::new(&fleet);
    let cluster = fleet.clusters()[0].name.clone();
    let c = cluster.as_str();

    // Before: one non-revisioned control plane.
    let pods = kubectl.ok(c, &["get", "pods", "-n", "istio-system", "-l", "app=istiod"]).await;
    assert!(pods.starts_with("NAME"), "{pods}");
    assert!(pods.lines().next().is_some_and(|header| header.contains("READY") && header.contains("STATUS")), "{pods}");
    let found = rows(&pods);
    assert_eq!(found.len(), 1, "{pods}");
    assert!(found[0][0].starts_with("istiod-") && found[0][1] == "1/1" && found[0][2] == "Running", "{pods}");
    let services = kubectl.ok(c, &["get", "svc", "-n", "istio-system", "-l", "app=istiod"]).await;
    assert_eq!(rows(&services).iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["istiod"]);
    assert!(services.contains("15010/TCP,15012/TCP,443/TCP,15014/TCP"), "{services}");
    let webhooks = kubectl.ok(c, &["get", "mutatingwebhookconfigurations"]).await;
    assert_eq!(rows(&webhooks), [["istio-sidecar-injector", "1", &rows(&webhooks)[0][2]]]);

    // Install the canary revision (server-side apply; it takes over the gateway in place).
    let manifests =
        kubectl.file("1-6-8.yaml", &manifests_yaml(&Revision::new("1-6-8", "1.6.8").expect("rev")).expect("yaml"));
    let applied =
        kubectl.ok(c, &["apply", "--server-side", "--force-conflicts", "-f", manifests.to_str().expect("path")]).await;
    assert!(applied.contains("deployment.apps/istiod-1-6-8 serverside-applied"), "{applied}");
    kubectl.ok(c, &["rollout", "status", "deployment/istiod-1-6-8", "-n", "istio-system", "--timeout=20s"]).await;
    let pods = kubectl.ok(c, &["get", "pods", "-n", "istio-system", "-l", "app=istiod"]).await;
    assert_eq!(rows(&pods).len(), 2, "{pods}");
    assert!(rows(&pods).iter().any(|r| r[0].starts_with("istiod-1-6-8-") && r[2] == "Running"), "{pods}");
    let services = kubectl.ok(c, &["get", "svc", "-n", "istio-system", "-l", "app=istiod"]).await;
    assert_eq!(rows(&services).iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["istiod", "istiod-1-6-8"]);
    let webhooks = kubectl.ok(c, &["get", "mutatingwebhookconfigurations"]).await;
    assert_eq!(
        rows(&webhooks).iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["istio-sidecar-injector", "istio-sidecar-injector-1-6-8"]
    );

    // An application, applied client-side: created, configured, unchanged.
    let namespace = kubectl.file("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: test-ns\n");
    kubectl.ok(c, &["apply", "-f", namespace.to_str().expect("path")]).await;
    kubectl.ok(c, &["label", "namespace", "test-ns", "istio-injection=enabled"]).await;
    // kubectl's typed generators send protobuf, which the simulator refuses plainly.
    let (ok, _, stderr) = kubectl.run(c, &["create", "namespace", "other"]).await;
    assert!(!ok && stderr.contains("does not read protobuf"), "{stderr}");
    let app = kubectl.file("app.yaml", &APP.replace("REPLICAS", "2"));
    let created = kubectl.ok(c, &["apply", "-f", app.to_str().expect("path")]).await;
    assert_eq!(created.trim(), "deployment.apps/demo created\nservice/demo created");
    kubectl.ok(c, &["rollout", "status", "deployment/demo", "-n", "test-ns", "--timeout=20s"]).await;
    let app = kubectl.file("app.yaml", &APP.replace("REPLICAS", "3"));
    let configured = kubectl.ok(c, &["apply", "-f", app.to_str().expect("path")]).await;
    assert_eq!(configured.trim(), "deployment.apps/demo configured\nservice/demo unchanged");
    kubectl.ok(c, &["rollout", "status", "deployment/demo", "-n", "test-ns", "--timeout=20s"]).await;
    let images =
        kubectl.ok(c, &["get", "pods", "-n", "test-ns", "-o", "jsonpath={.items[*].spec.containers[*].image}"]).await;
    assert_eq!(images.matches("proxyv2:1.6.5").count(), 3, "injected by the default revision: {images}");

    // Move it to the canary, as the procedure says.
    let (ok, stdout, _) =
        kubectl.run(c, &["label", "namespace", "test-ns", "istio-injection-", "istio.io/rev=1-6-8"]).await;
    assert!(ok && stdout.trim() == "namespace/test-ns unlabeled", "{stdout}");
    let restarted = kubectl.ok(c, &["rollout", "restart", "deployment", "-n", "test-ns"]).await;
    assert_eq!(restarted.trim(), "deployment.apps/demo restarted");
    kubectl.ok(c, &["rollout", "status", "deployment/demo", "-n", "test-ns", "--timeout=20s"]).await;
    let images =
        kubectl.ok(c, &["get", "pods", "-n", "test-ns", "-o", "jsonpath={.items[*].spec.containers[*].image}"]).await;
    assert_eq!(images.matches("proxyv2:1.6.8").count(), 3, "re-injected by 1-6-8: {images}");
    assert_eq!(images.matches("proxyv2:1.6.5").count(), 0, "{images}");
    let labels = kubectl
        .ok(c, &["get", "pods", "-n", "test-ns", "-o", "jsonpath={.items[*].metadata.labels.istio\\.io/rev}"])
        .await;
    assert_eq!(labels.split_whitespace().collect::<Vec<_>>(), ["1-6-8"; 3], "1.6 injectors still set the pod label");

    // Server-side apply of the application, then delete by label.
    let ssa = kubectl.ok(c, &["apply", "--server-side", "-f", app.to_str().expect("path")]).await;
    assert!(ssa.contains("deployment.apps/demo serverside-applied"), "{ssa}");
    let deleted = kubectl.ok(c, &["delete", "mutatingwebhookconfiguration", "-l", "istio.io/rev=1-6-8"]).await;
    assert!(
        deleted.contains(
            "mutatingwebhookconfiguration.admissionregistration.k8s.io \"istio-sidecar-injector-1-6-8\" deleted"
        ),
        "{deleted}"
    );
    let webhooks = kubectl.ok(c, &["get", "mutatingwebhookconfigurations"]).await;
    assert_eq!(rows(&webhooks).iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["istio-sidecar-injector"]);
    let (ok, _, stderr) = kubectl.run(c, &["get", "deployment", "nope", "-n", "test-ns"]).await;
    assert!(!ok && stderr.contains("Error from server (NotFound): deployments.apps \"nope\" not found"), "{stderr}");
}

#[test]
fn kubectl_is_installed() {
    // Fails (with install instructions) rather than letting the tests above pass vacuously.
    let path = kubectl_path();
    assert!(Path::new(&path).is_file());
}
