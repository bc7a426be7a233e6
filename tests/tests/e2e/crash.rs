//! Durability, proven: a workflow (and a rollback) is killed at every event
//! boundary, before and after each append, then resumed by a new process;
//! it must end in the same state as an uninterrupted run, with every side
//! effect having happened exactly once, plus at most one idempotent re-run
//! under the same idempotency key.

use std::collections::BTreeMap;
use std::path::Path;

use canaryflow_engine::{Compensating, Forward, load_state};
use canaryflow_store::{ListFilter, OpenMode, Status, Store};
use canaryflow_tests::{STEPS, Scenario, read_effects};

use crate::support::crash_child;

/// Where a step ended, forward and compensating.
type Ends = BTreeMap<String, (Forward, Compensating)>;

fn final_state(data_dir: &Path) -> (Status, Ends, u64) {
    let store = Store::open(data_dir, OpenMode::Existing).expect("open store");
    let summaries = store.list(&ListFilter::default()).expect("list");
    assert_eq!(summaries.len(), 1, "one workflow");
    let state = load_state(&store, summaries[0].id, None).expect("state");
    let ends = state
        .steps
        .iter()
        .map(|step| {
            let forward = match step.forward {
                // An attempt number differs between runs; the phase must not.
                Forward::Running { .. } | Forward::Retrying { .. } => panic!("{} still in flight", step.spec.id),
                ref other => other.clone(),
            };
            (step.spec.id.to_string(), (forward, step.compensation.clone()))
        })
        .collect();
    (state.status(), ends, summaries[0].last_seq)
}

fn run_child(data_dir: &Path, effects: &Path, args: &[&str]) -> std::process::ExitStatus {
    let mut child = crash_child();
    child.arg(data_dir).arg(effects).args(args).stderr(std::process::Stdio::null());
    child.status().expect("spawn crash child")
}

/// An uninterrupted run: the reference.
fn reference(scenario: Scenario) -> (Status, Ends, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let effects = dir.path().join("effects");
    assert!(run_child(&dir.path().join("data"), &effects, &["start", scenario.name()]).success());
    final_state(&dir.path().join("data"))
}

fn crash_at_every_boundary(scenario: Scenario) {
    let (status, ends, last_seq) = reference(scenario);
    let expected = if scenario == Scenario::Forward { Status::Succeeded } else { Status::RolledBack };
    assert_eq!(status, expected, "the uninterrupted run");
    let mut crashes = 0;
    let mut reruns = 0;
    for point in ["after", "before"] {
        for seq in 0..=last_seq {
            let dir = tempfile::tempdir().expect("tempdir");
            let (data, effects) = (dir.path().join("data"), dir.path().join("effects"));
            let first = run_child(&data, &effects, &["start", scenario.name(), point, &seq.to_string()]);
            if !first.success() {
                crashes += 1;
            }
            if !data.join("CANARYFLOW").exists() {
                continue; // crashed before the workflow was even recorded
            }
            // Resume until done; each resume runs without failpoints.
            let resumed = run_child(&data, &effects, &["resume"]);
            assert!(resumed.success(), "{scenario:?}: resume after a crash {point} {seq} failed");
            if seq == 0 && point == "before" {
                continue; // nothing recorded, nothing to compare
            }
            let (status_now, ends_now, _) = final_state(&data);
            assert_eq!(status_now, status, "{scenario:?} crashed {point} {seq}: another end status");
            assert_eq!(ends_now, ends, "{scenario:?} crashed {point} {seq}: steps ended differently");
            reruns += check_effects(&effects, scenario, &format!("{scenario:?} crashed {point} {seq}"));
        }
    }
    assert!(crashes as u64 >= last_seq, "the failpoints fired ({crashes} crashes for {last_seq} boundaries)");
    // Crashing before an outcome is recorded must have made the engine re-run
    // side effects that had already happened: that path was exercised.
    assert!(reruns > 0, "no crash point led to an idempotent re-run");
}

/// Every forward step's effect happened once, or twice with the second a
/// resumed re-run under the same key; the same for compensations. Returns
/// how many effects ran twice.
fn check_effects(path: &Path, scenario: Scenario, context: &str) -> usize {
    let effects = read_effects(path);
    let mut reruns = 0;
    for action in ["do", "undo"] {
        for step in STEPS {
            let runs: Vec<_> = effects.iter().filter(|e| e.action == action && e.step == step).collect();
            let expected_min = match (scenario, action, step) {
                (_, "do", _) => 1,
                (Scenario::Rollback, "undo", "verify") | (Scenario::Forward, "undo", _) => 0,
                (Scenario::Rollback, "undo", _) => 1,
                _ => unreachable!(),
            };
            if expected_min == 0 {
                assert!(runs.is_empty(), "{context}: {action} {step} ran {} times, expected never", runs.len());
                continue;
            }
            // The failing step fails without retry: exactly one attempt, plus a re-run if a crash hid its outcome.
            assert!(
                !runs.is_empty() && runs.len() <= 2,
                "{context}: {action} {step} ran {} times: {runs:?}",
                runs.len()
            );
            assert!(
                runs.iter().all(|run| run.key == runs[0].key),
                "{context}: {action} {step} ran under different keys"
            );
            if runs.len() == 2 {
                assert!(
                    runs[1].resumed,
                    "{context}: the second run of {action} {step} was not a resumed re-run: {runs:?}"
                );
                reruns += 1;
            }
        }
    }
    reruns
}

#[test]
fn a_workflow_killed_at_every_event_boundary_resumes_to_the_same_end() {
    crash_at_every_boundary(Scenario::Forward);
}

#[test]
fn a_rollback_killed_at_every_event_boundary_resumes_to_the_same_end() {
    crash_at_every_boundary(Scenario::Rollback);
}
