//! Fleet gates through the command line, with real processes killed and
//! restarted: an approval that waits for `approve` across a restart (sent
//! through the control socket of the process running the upgrade), a soak
//! timer that fires at its original time after a restart, signals refused
//! with nothing appended, and bad fleet specs refused before anything runs.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::canaryflow;
use crate::upgrade_support::{Setup, SpecOptions, cli, setup};

fn two_clusters() -> canaryflow_sim::FleetConfig {
    canaryflow_sim::FleetConfig {
        clusters: 2,
        names: vec!["canary".into(), "prod".into()],
        namespaces: 2,
        deployments: 1,
        replicas: 1,
        rollout_delay: Duration::from_millis(40),
        ..canaryflow_sim::FleetConfig::default()
    }
}

/// `canaryflow ARGS` running in the background.
fn spawn(data: &Path, args: &[&str]) -> Child {
    canaryflow(data)
        .args(args)
        .env("CANARYFLOW_POLL_MS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

async fn json(data: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let (output, stdout, stderr) = cli(data, &args, &[]).await;
    assert!(output.status.success(), "{args:?}: {stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("{args:?} printed no JSON ({err}): {stdout}"))
}

/// Polls until `check` returns something; panics after 30 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The id of the only workflow, once there is one (read through the
/// running process's control socket).
async fn only_workflow(data: &Path) -> String {
    eventually("the workflow to be recorded", async || {
        if !data.join("CANARYFLOW").exists() {
            return None;
        }
        let (output, stdout, _) = cli(data, &["list", "-o", "json"], &[]).await;
        let listed: Value = serde_json::from_str(&stdout).ok().filter(|_| output.status.success())?;
        listed.get(0)?.get("id")?.as_str().map(str::to_string)
    })
    .await
}

async fn waits_for_approval(data: &Path, id: &str, gate: &str) -> bool {
    let (output, stdout, _) = cli(data, &["status", id, "-o", "json"], &[]).await;
    let Ok(status) = serde_json::from_str::<Value>(&stdout) else { return false };
    output.status.success()
        && status["waiting"]
            .as_array()
            .is_some_and(|waiting| waiting.iter().any(|w| w["step"] == format!("{gate}/approval")))
}

async fn cluster_state_in_status(data: &Path, id: &str, wave: usize, cluster: usize) -> String {
    let status = json(data, &["status", id]).await;
    status["waves"][wave]["clusters"][cluster]["state"].as_str().expect("a cluster state").to_string()
}

async fn events(data: &Path, id: &str) -> u64 {
    json(data, &["status", id]).await["events"].as_u64().expect("events")
}

fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not finish in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_gate_waits_for_approve_across_a_restart() {
    let extra = "  waves:
    - {clusters: [canary], approval: required}
    - {clusters: [prod]}
";
    let Setup { fleet: _fleet, dir, spec, .. } =
        setup(two_clusters(), &SpecOptions { extra, ..SpecOptions::default() }).await;
    let data = dir.path().join("data");
    let mut start = spawn(&data, &["start", "-f", spec.to_str().expect("path"), "--progress", "quiet"]);
    let id = only_workflow(&data).await;
    eventually("the approval gate", async || waits_for_approval(&data, &id, "wave-1").await.then_some(())).await;

    // A signal that does not apply is refused, with nothing appended.
    let before = events(&data, &id).await;
    let (output, _, stderr) = cli(&data, &["approve", &id, "--wave", "2"], &[]).await;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("gate wave-2 is not waiting for an approval; waiting: wave-1"), "{stderr}");
    let (output, _, stderr) = cli(&data, &["approve", &id, "--wave", "0"], &[]).await;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(events(&data, &id).await, before, "a refused signal appended nothing");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster_state_in_status(&data, &id, 1, 0).await, "pending", "the next wave waits for the gate");

    // Killed while it waits; a new process waits again.
    start.kill().expect("kill -9");
    start.wait().expect("reap");
    let resume = spawn(&data, &["resume", &id, "--progress", "quiet"]);
    // The new process serves the control socket once it holds the log.
    eventually("the gate after the restart", async || {
        let serving = std::os::unix::net::UnixStream::connect(data.join("control.sock")).is_ok();
        (serving && waits_for_approval(&data, &id, "wave-1").await).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster_state_in_status(&data, &id, 1, 0).await, "pending", "still waiting after the restart");

    let (output, stdout, stderr) = cli(&data, &["approve", &id], &[]).await;
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("approved wave-1") && stdout.contains("process running it"), "{stdout}");
    let status = tokio::task::spawn_blocking(move || wait_exit(resume)).await.expect("join");
    assert!(status.success(), "resume ended with {status}");

    let status = json(&data, &["status", &id]).await;
    assert_eq!(status["status"], "succeeded");
    let signals = json(&data, &["history", &id, "--kind", "SignalReceived"]).await;
    assert_eq!(signals.as_array().map(Vec::len), Some(1), "one approval recorded: {signals}");
    let approved_at = signals[0]["seq"].as_u64().expect("seq");
    let history = json(&data, &["history", &id, "--step", "prod/"]).await;
    let prod_started = history[0]["seq"].as_u64().expect("seq");
    assert!(prod_started > approved_at, "prod started at #{prod_started}, before the approval at #{approved_at}");

    let (output, _, stderr) = cli(&data, &["approve", &id], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("is not waiting for an approval"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_interrupted_by_a_restart_fires_at_its_original_time() {
    let extra = "  waves:
    - {clusters: [canary], soak: 3s}
    - {clusters: [prod]}
";
    let Setup { fleet: _fleet, dir, spec, .. } =
        setup(two_clusters(), &SpecOptions { extra, ..SpecOptions::default() }).await;
    let data = dir.path().join("data");
    let mut start = spawn(&data, &["start", "-f", spec.to_str().expect("path"), "--progress", "quiet"]);
    let id = only_workflow(&data).await;
    let fire_at_ms = eventually("the soak timer", async || {
        let (_, stdout, _) = cli(&data, &["history", &id, "--kind", "TimerStarted", "-o", "json"], &[]).await;
        let timers: Value = serde_json::from_str(&stdout).ok()?;
        timers.get(0)?["event"]["TimerStarted"]["fire_at_ms"].as_u64()
    })
    .await;
    // `status` names the timer and when it fires (UTC, to the second).
    let status = json(&data, &["status", &id]).await;
    let timer = status["waiting"]
        .as_array()
        .and_then(|waiting| waiting.iter().find(|w| w["what"] == "timer"))
        .unwrap_or_else(|| panic!("no timer in {status}"))
        .clone();
    assert!(timer["step"].as_str().is_some_and(|step| step.starts_with("wave-1/")), "{timer}");
    let seconds = fire_at_ms / 1_000;
    let clock = format!("T{:02}:{:02}:{:02}Z", seconds / 3_600 % 24, seconds / 60 % 60, seconds % 60);
    assert!(timer["until"].as_str().is_some_and(|until| until.ends_with(&clock)), "{timer} (fires at {clock})");
    start.kill().expect("kill -9");
    start.wait().expect("reap");
    let killed_at = Instant::now();

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (output, stdout, stderr) = cli(&data, &["resume", &id, "--progress", "quiet"], &[]).await;
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(killed_at.elapsed() >= Duration::from_millis(1_500));

    let timers = json(&data, &["history", &id, "--kind", "TimerStarted,TimerFired"]).await;
    let timers = timers.as_array().expect("events");
    assert_eq!(timers.len(), 2, "one timer, started once and fired once: {timers:?}");
    let fired_at_ms = timers[1]["at_ms"].as_u64().expect("at_ms");
    assert!(fired_at_ms >= fire_at_ms, "fired {} ms early", fire_at_ms - fired_at_ms);
    // A soak started over after the restart would fire 1.5 s later or more.
    assert!(fired_at_ms < fire_at_ms + 1_000, "fired {} ms after its time", fired_at_ms - fire_at_ms);
    assert_eq!(json(&data, &["status", &id]).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fleet_specs_are_refused_before_anything_is_written() {
    let extra = "  waves:
    - {clusters: [canary]}
    - {clusters: [prod], maxParallel: 1}
";
    let setup = setup(two_clusters(), &SpecOptions { extra, ..SpecOptions::default() }).await;
    let good = std::fs::read_to_string(&setup.spec).expect("spec");
    let cases = [
        (
            good.replace(
                "    - {name: prod, context: prod, kubeconfig: kubeconfig}",
                "    - {name: prod, context: prod, kubeconfig: kubeconfig}\n    - {name: prod, context: prod, kubeconfig: kubeconfig}",
            ),
            "cluster prod is listed twice",
        ),
        (good.replace("[prod], maxParallel", "[prod, nowhere], maxParallel"), "nowhere"),
        (good.replace("    - {clusters: [prod], maxParallel: 1}\n", ""), "cluster prod is in no wave"),
        (good.replace("maxParallel: 1", "maxParallel: 0"), "spec.waves[1].maxParallel"),
        (good.replace("context: prod,", "context: elsewhere,"), "context \"elsewhere\" is not in the kubeconfig"),
    ];
    for (text, expected) in cases {
        let path = setup.spec.with_file_name("bad.yaml");
        std::fs::write(&path, &text).expect("write");
        let data = setup.dir.path().join("never-made");
        let (output, stdout, stderr) = cli(&data, &["start", "-f", path.to_str().expect("path")], &[]).await;
        assert_eq!(output.status.code(), Some(1), "{expected}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "stderr should say {expected:?}:\n{stderr}\nspec:\n{text}");
        assert!(!data.exists(), "a refused start wrote a data directory");
    }

    // Signals for workflows that are not there, or not running.
    let data = setup.dir.path().join("data");
    let (output, _, stderr) = cli(&data, &["approve", "01a22481-c6ca-71c1-9e54-f1038ae579fd"], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("no canaryflow data directory"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_rollback_reach_the_process_running_the_upgrade() {
    let extra = "  waves:
    - {clusters: [canary], approval: required}
    - {clusters: [prod]}
";
    let setup = setup(two_clusters(), &SpecOptions { extra, ..SpecOptions::default() }).await;
    let canary = crate::sim_kube::client(&setup.fleet, "canary").await;
    let before = crate::upgrade_support::cluster_state(&canary).await;
    let data = setup.dir.path().join("data");
    let start = spawn(&data, &["start", "-f", setup.spec.to_str().expect("path"), "--progress", "quiet"]);
    let id = only_workflow(&data).await;
    eventually("the approval gate", async || waits_for_approval(&data, &id, "wave-1").await.then_some(())).await;

    let (output, stdout, stderr) = cli(&data, &["pause", &id, "--reason", "change freeze"], &[]).await;
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("process running it"), "relayed to the running process: {stdout}");
    eventually("the pause", async || (json(&data, &["status", &id]).await["status"] == "paused").then_some(())).await;
    let (output, _, stderr) = cli(&data, &["pause", &id], &[]).await;
    assert_eq!(output.status.code(), Some(1), "a paused workflow cannot be paused again");
    assert!(stderr.contains("only a running workflow can be paused"), "{stderr}");

    // The rollback runs in the process that holds the log; this one waits for it.
    let (output, stdout, stderr) = cli(&data, &["rollback", &id], &[]).await;
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("rolled-back"), "{stdout}");
    let status = tokio::task::spawn_blocking(move || wait_exit(start)).await.expect("join");
    assert!(!status.success(), "the upgrade process ends with the rollback, not a success: {status}");
    assert_eq!(crate::upgrade_support::cluster_state(&canary).await, before, "the canary is back as it was");
}
