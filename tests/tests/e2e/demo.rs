//! `canaryflow demo` as a user runs it: its fleet in a process of its own,
//! an upgrade killed midway by `--crash-after` and finished by `--resume`,
//! or rolled back by `--rollback`, against the same, still running fleet.

use std::path::Path;
use std::process::Output;

use crate::support::canaryflow;

async fn demo(dir: &Path, args: &[&str]) -> (Output, String, String) {
    let mut command = canaryflow(&dir.join("data"));
    command.arg("demo").arg("--dir").arg(dir).args(args).args(["--progress", "plain"]);
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("spawn");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

fn fleet_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("fleet.pid")).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_killed_midway_leaves_its_fleet_standing_and_resumes_to_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().join("demo");
    let (output, stdout, stderr) = demo(&dir, &["--crash-after", "30"]).await;
    assert!(!output.status.success(), "--crash-after aborts: {stdout}{stderr}");
    assert!(stderr.contains("failpoint: aborting after recording sequence"), "{stderr}");
    let pid = fleet_pid(&dir).expect("the fleet's pid");
    assert!(alive(pid), "the fleet outlives the killed upgrade");

    let (output, stdout, stderr) = demo(&dir, &["--resume"]).await;
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("started again (attempt 2, after a restart)"), "{stdout}");
    assert!(stdout.contains(" succeeded"), "{stdout}");
    assert!(stdout.contains("The simulated fleet is stopped."), "{stdout}");
    assert!(!alive(pid), "the demo stops its fleet after a success");

    let (output, _, stderr) = demo(&dir, &["--resume"]).await;
    assert_eq!(output.status.code(), Some(1), "nothing left to resume: {stderr}");
    assert!(stderr.contains("not running any more"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_killed_midway_rolls_back_against_the_same_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().join("demo");
    let (output, _, _) = demo(&dir, &["--crash-after", "45"]).await;
    assert!(!output.status.success());
    let (output, stdout, stderr) = demo(&dir, &["--rollback"]).await;
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(" rolled-back"), "{stdout}");
    assert!(stdout.contains("undone"), "{stdout}");
    let (output, stdout, _) = demo(&dir, &["--stop"]).await;
    assert!(output.status.success());
    assert!(stdout.contains("not running"), "the rollback stopped the fleet already: {stdout}");

    // A folder that is not the demo's is never emptied.
    let foreign = tempfile::tempdir().expect("tempdir");
    std::fs::write(foreign.path().join("precious.txt"), "keep").expect("write");
    let (output, _, stderr) = demo(foreign.path(), &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("is not a canaryflow demo folder"), "{stderr}");
    assert!(foreign.path().join("precious.txt").exists());
}
