//! The upgrade through the command line: killed at every event boundary
//! and resumed by a new process; checked afterwards with the seed's own
//! kubectl commands; and refused, before anything is written, on every
//! kind of bad input.

use std::path::Path;

use canaryflow_sim::{FaultConfig, Revision, manifests_yaml};

use crate::sim_kubectl::Kubectl;
use crate::upgrade_support::{ClusterState, SpecOptions, cli, cluster_state, seed_fleet, setup};

/// The last sequence number of the only workflow in `data`.
async fn last_seq(data: &Path) -> u64 {
    let (_, stdout, _) = cli(data, &["list", "-o", "json"], &[]).await;
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    listed[0]["events"].as_u64().expect("events") - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_killed_at_every_event_boundary_resumes_to_the_same_cluster() {
    // The reference: an uninterrupted run.
    let reference = setup(seed_fleet(), &SpecOptions::default()).await;
    let data = reference.dir.path().join("data");
    let (output, _, stderr) =
        cli(&data, &["start", "-f", reference.spec.to_str().expect("path"), "--progress", "quiet"], &[]).await;
    assert!(output.status.success(), "{stderr}");
    let expected: ClusterState = cluster_state(&reference.client).await;
    let events = last_seq(&data).await;
    assert!(events > 20, "the upgrade recorded {events} events");

    let mut crashed = 0;
    for seq in 0..events {
        let run = setup(seed_fleet(), &SpecOptions::default()).await;
        let data = run.dir.path().join("data");
        let crash = [("CANARYFLOW_CRASH_AFTER_SEQ", seq.to_string())];
        let (output, _, _) =
            cli(&data, &["start", "-f", run.spec.to_str().expect("path"), "--progress", "quiet"], &crash).await;
        if !output.status.success() {
            crashed += 1;
        }
        let (output, stdout, stderr) = cli(&data, &["resume"], &[]).await;
        assert!(output.status.success(), "resume after a crash at sequence {seq}: {stdout}{stderr}");
        let (_, listed, _) = cli(&data, &["list", "-o", "json"], &[]).await;
        assert!(listed.contains("\"succeeded\""), "after a crash at {seq}: {listed}");
        assert_eq!(
            cluster_state(&run.client).await,
            expected,
            "killed after event {seq}, resumed: the cluster differs from an uninterrupted run"
        );
    }
    // A run's length varies by an event or two (parallel steps finishing in one batch or
    // two), so the last failpoints may lie past the end of a shorter run.
    assert!(crashed + 2 >= events, "only {crashed} of {events} runs were killed at their failpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_for_scripts_is_a_json_line_per_event_or_a_timed_line_per_step() {
    // JSON lines: one per recorded event, in order, none missing.
    let run = setup(seed_fleet(), &SpecOptions::default()).await;
    let data = run.dir.path().join("data");
    let (output, stdout, stderr) =
        cli(&data, &["start", "-f", run.spec.to_str().expect("path"), "--progress", "json"], &[]).await;
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    // First the workflow it started (its id before anything else), then its events.
    let (header, lines) = lines.split_first().expect("output");
    assert_eq!((header["name"].as_str(), header["steps"].as_u64().is_some()), (Some("test-upgrade"), true));
    let lines: Vec<&serde_json::Value> = lines.iter().filter(|line| line.get("seq").is_some()).collect();
    assert!(lines.iter().all(|line| line["workflow"] == header["workflow"]), "{stdout}");
    let seqs: Vec<u64> = lines.iter().map(|line| line["seq"].as_u64().expect("seq")).collect();
    // Event 0 records the plan; the header line stands for it.
    assert_eq!(seqs, (1..=last_seq(&data).await).collect::<Vec<_>>(), "every later event once, in order");
    let precheck = |kind: &str| {
        lines.iter().position(|l| l["kind"] == kind && l["step"].as_str().is_some_and(|s| s.ends_with("precheck")))
    };
    let started = precheck("StepStarted").expect("precheck started");
    let done = precheck("StepSucceeded").expect("precheck succeeded");
    assert!(started < done, "{stdout}");
    assert!(lines.iter().all(|line| line["at"].is_string() && line["status"].is_string()), "{stdout}");
    assert_eq!(lines.last().expect("lines")["kind"], "WorkflowSucceeded");
    assert_eq!(lines.last().expect("lines")["status"], "succeeded");

    // Plain: a line per step as it starts and as it ends, with the time it took.
    let run = setup(seed_fleet(), &SpecOptions::default()).await;
    let data = run.dir.path().join("data");
    let (output, stdout, stderr) =
        cli(&data, &["start", "-f", run.spec.to_str().expect("path"), "--progress", "plain"], &[]).await;
    assert!(output.status.success(), "{stderr}");
    let line = |step: &str, what: &str| {
        stdout.lines().find(|l| l.split_whitespace().nth(1).is_some_and(|s| s.ends_with(step)) && l.contains(what))
    };
    assert!(line("precheck", "started").is_some(), "{stdout}");
    let done = line("precheck", "done in ").unwrap_or_else(|| panic!("no timed end of precheck: {stdout}"));
    assert!(done.trim_end().ends_with('s'), "a duration: {done}");
    assert!(stdout.contains("upgrade succeeded"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upgrade_the_seed_checks_hold_with_the_real_kubectl() {
    let setup = setup(seed_fleet(), &SpecOptions::default()).await;
    let kubectl = Kubectl::new(&setup.fleet);
    let c = "prod-eu";
    let names = |output: &str| -> Vec<String> {
        output.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
    };
    assert_eq!(names(&kubectl.ok(c, &["get", "svc", "-n", "istio-system", "-l", "app=istiod"]).await), ["istiod"]);

    let data = setup.dir.path().join("data");
    let (output, stdout, stderr) = cli(&data, &["start", "-f", setup.spec.to_str().expect("path")], &[]).await;
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .next()
            .is_some_and(|line| line.starts_with("Workflow ") && line.contains(" started: test-upgrade")),
        "the id comes first: {stdout}"
    );

    // One istiod now, the new one; Service istiod was pointed at it (the
    // seed's validation workaround), so two Services select it.
    let pods = kubectl.ok(c, &["get", "pods", "-n", "istio-system", "-l", "app=istiod"]).await;
    let pods = names(&pods);
    assert_eq!(pods.len(), 1);
    assert!(pods[0].starts_with("istiod-1-6-8-"), "{pods:?}");
    assert_eq!(
        names(&kubectl.ok(c, &["get", "svc", "-n", "istio-system", "-l", "app=istiod"]).await),
        ["istiod", "istiod-1-6-8"]
    );
    let selectors = kubectl
        .ok(
            c,
            &[
                "get",
                "svc",
                "-n",
                "istio-system",
                "-l",
                "app=istiod",
                "-o",
                "jsonpath={.items[*].spec.selector.istio\\.io/rev}",
            ],
        )
        .await;
    assert_eq!(selectors.split_whitespace().collect::<Vec<_>>(), ["1-6-8", "1-6-8"]);
    assert_eq!(
        names(&kubectl.ok(c, &["get", "mutatingwebhookconfigurations"]).await),
        ["istio-sidecar-injector-1-6-8"]
    );
    for namespace in ["catalog", "payments", "shop"] {
        let labels = kubectl.ok(c, &["get", "namespace", namespace, "-o", "jsonpath={.metadata.labels}"]).await;
        assert!(
            labels.contains("\"istio.io/rev\":\"1-6-8\"") && !labels.contains("istio-injection"),
            "{namespace}: {labels}"
        );
        let images = kubectl
            .ok(c, &["get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].spec.containers[*].image}"])
            .await;
        assert_eq!(images.matches("proxyv2:1.6.8").count(), 4, "{namespace}: {images}");
        assert!(!images.contains("proxyv2:1.6.5"), "{namespace}: {images}");
    }
}

/// Runs `start` on a spec that must be refused; checks the message, the
/// exit status, and that no data directory was made.
async fn refused(spec: &Path, expected: &str) {
    let data = spec.with_file_name("never-made");
    let (output, stdout, stderr) = cli(&data, &["start", "-f", spec.to_str().expect("path")], &[]).await;
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains(expected), "stderr should say {expected:?}:\n{stderr}");
    assert!(!data.exists(), "a refused start wrote a data directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_and_bad_clusters_are_refused_before_anything_is_written() {
    let setup = setup(seed_fleet(), &SpecOptions::default()).await;
    let good = std::fs::read_to_string(&setup.spec).expect("spec");
    let spec = |text: String| {
        let path = setup.spec.with_file_name("bad.yaml");
        std::fs::write(&path, text).expect("write");
        path
    };
    refused(&spec("apiVersion: canaryflow.io/v1\nkind: [Upgrade\n".into()), "line 2").await;
    refused(
        &spec(good.replace("  onFailure: rollback", "  onFailure: rollback\n  retries: 3")),
        "unknown field `retries`",
    )
    .await;
    refused(&spec(good.replace("manifests: manifests.yaml", "manifests: missing.yaml")), "missing.yaml does not exist")
        .await;
    refused(&spec(good.replace("revision: 1-6-8, version", "revision: 1.6.8, version")), "use \"1-6-8\"").await;
    refused(&spec(good.replace("{revision: default}", "{revision: 1-6-8}")), "the same as spec.from.revision").await;
    let other = Revision::new("1-7-0", "1.7.0").expect("revision");
    std::fs::write(setup.spec.with_file_name("other.yaml"), manifests_yaml(&other).expect("yaml")).expect("write");
    refused(&spec(good.replace("manifests: manifests.yaml", "manifests: other.yaml")), "for revision 1-7-0, not 1-6-8")
        .await;
    refused(&spec(good.replace("{revision: default}", "{revision: 1-6-5}")), "revision 1-6-5 is not installed").await;
    refused(&spec(good.replace("istio-injection=enabled", "team=nobody")), "matches no namespace").await;
    refused(
        &spec(good.replace("context: prod-eu", "context: nowhere")),
        "context \"nowhere\" is not in the kubeconfig",
    )
    .await;

    let faults = setup.fleet.clusters()[0].faults.clone();
    faults.set(FaultConfig {
        rbac_deny: vec!["create deployments.apps".into(), "patch namespaces".into()],
        ..FaultConfig::default()
    });
    refused(&setup.spec, "missing permissions: create deployments.apps, patch namespaces").await;
    faults.set(FaultConfig { down: true, ..FaultConfig::default() });
    refused(&setup.spec, "unreachable").await;
    faults.set(FaultConfig::default());
}
