//! Transition by transition: each test drives the pure core through one
//! behaviour with the in-memory world of `testkit` and checks the events it
//! produced. Property tests at the end run random plans, outcomes, signals
//! and crashes.

use canaryflow_store::Status;

use crate::core::decide::{Command, decide, recover};
use crate::core::event::*;
use crate::core::payload::Payload;
use crate::core::plan::*;
use crate::core::state::{Compensating, Forward, RESUMES_COUNT_MAX, WorkflowState};
use crate::core::testkit::{Outcome, World, grouped, id, plan, step};

#[test]
fn a_linear_plan_runs_in_order_and_succeeds() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"]), step("c", &["b"])], FailurePolicy::Pause));
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
    let order: Vec<&str> = world.runs.iter().map(|(step, _, _)| step.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert_eq!(world.kinds().last(), Some(&"WorkflowSucceeded"));
    world.assert_refolds();
}

#[test]
fn independent_steps_start_together() {
    let mut world =
        World::new(plan(vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])], FailurePolicy::Pause));
    let decision = decide(&world.state, world.now_ms);
    let started: Vec<String> = decision
        .commands
        .iter()
        .filter_map(|command| match command {
            Command::Start { step, .. } => Some(step.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["a", "b"], "both roots start in one decision");
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
}

/// A blocker only an operator can mend pauses the workflow even where a
/// failure would roll everything back: nothing done is undone to get past it.
#[test]
fn a_failure_that_needs_an_operator_pauses_whatever_the_policy() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::RollbackAll));
    world.forward.insert(("b".into(), 1), Outcome::FailNeedsOperator);
    world.run(true);
    assert_eq!(world.state.status(), Status::Paused);
    assert!(world.compensated().is_empty(), "nothing was rolled back: {:?}", world.compensated());
    world.signal(Signal::Resume);
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded, "resumed, the step runs again and succeeds");
}

#[test]
fn a_retryable_failure_waits_its_backoff_then_retries() {
    let mut world = World::new(plan(vec![step("a", &[])], FailurePolicy::Pause));
    world.forward.insert(("a".into(), 1), Outcome::FailRetryable);
    world.run(false);
    let Forward::Retrying { retry_at_ms, .. } = world.state.step(&id("a")).expect("a").forward else {
        panic!("expected a retry wait, got {:?}", world.state.step(&id("a")).map(|s| &s.forward));
    };
    let decision = decide(&world.state, world.now_ms);
    assert!(decision.commands.is_empty(), "nothing starts before the backoff");
    assert_eq!(decision.wake_at_ms, Some(retry_at_ms));
    let failed_at = world.history.last().expect("event").at_ms;
    assert!((failed_at + 500..=failed_at + 1_000).contains(&retry_at_ms), "first backoff within [500, 1000] ms");
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
    assert_eq!(world.runs.len(), 2);
}

#[test]
fn attempts_run_out_then_the_policy_pauses_and_resume_gives_fresh_attempts() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::Pause));
    for attempt in 1..=3 {
        world.forward.insert(("a".into(), attempt), Outcome::FailRetryable);
    }
    world.run(true);
    assert_eq!(world.state.status(), Status::Paused);
    assert_eq!(world.state.step(&id("a")).expect("a").forward, Forward::Failed);
    assert!(world.state.paused.as_deref().is_some_and(|reason| reason.contains("step a failed")));
    assert_eq!(world.runs.len(), 3, "exactly attempts_max attempts");

    world.signal(Signal::Resume);
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded, "attempt 4 succeeds after the resume");
    world.assert_refolds();
}

#[test]
fn a_non_retryable_failure_is_final_at_once() {
    let mut world = World::new(plan(vec![step("a", &[])], FailurePolicy::Pause));
    world.forward.insert(("a".into(), 1), Outcome::FailFatal);
    world.run(true);
    assert_eq!(world.runs.len(), 1);
    assert_eq!(world.state.status(), Status::Paused);
}

#[test]
fn non_retryable_classes_stop_retries() {
    let mut spec = step("a", &[]);
    spec.retry.non_retryable_classes = vec!["test".into()];
    let mut world = World::new(plan(vec![spec], FailurePolicy::Pause));
    world.forward.insert(("a".into(), 1), Outcome::FailRetryable);
    world.run(true);
    assert_eq!(world.runs.len(), 1, "the class is listed as non-retryable");
}

#[test]
fn a_failure_rolls_everything_back_newest_first() {
    let mut world =
        World::new(plan(vec![step("a", &[]), step("b", &["a"]), step("c", &["b"])], FailurePolicy::RollbackAll));
    world.forward.insert(("c".into(), 1), Outcome::FailFatal);
    world.run(true);
    assert_eq!(world.state.status(), Status::RolledBack);
    assert_eq!(world.compensated(), ["c", "b", "a"], "the failed step is undone too: it may have half-happened");
    assert_eq!(world.kinds().last(), Some(&"WorkflowRolledBack"));
    world.assert_refolds();
}

#[test]
fn steps_without_compensation_or_never_started_are_not_compensated() {
    let mut check = step("check", &[]);
    check.compensation = Compensation::None;
    let mut world = World::new(plan(
        vec![check, step("a", &["check"]), step("b", &["a"]), step("later", &["b"])],
        FailurePolicy::RollbackAll,
    ));
    world.forward.insert(("b".into(), 1), Outcome::FailFatal);
    world.run(true);
    assert_eq!(world.compensated(), ["b", "a"]);
    assert!(world.runs.iter().all(|(step, _, _)| step != "later"));
}

#[test]
fn a_paused_workflow_takes_a_group_rollback_and_a_resume_sent_together() {
    // Found by the fleet tests: the rollback ended the pause before the
    // resume was acted on, and fold refused the Resumed that decide chose.
    let steps = vec![
        grouped("c1/install", "c1", &[]),
        grouped("c2/install", "c2", &[]),
        grouped("c2/move", "c2", &["c2/install"]),
        step("next-wave", &["c1/install", "c2/move"]),
    ];
    let mut world = World::new(plan(steps, FailurePolicy::Pause));
    world.forward.insert(("c2/move".into(), 1), Outcome::FailFatal);
    world.run(true);
    assert_eq!(world.state.status(), Status::Paused);
    world.signal(Signal::Rollback { scope: Scope::Group("c2".into()), reason: "op".into(), allow_irreversible: false });
    world.signal(Signal::Resume);
    world.run(true);
    assert_eq!(world.compensated(), ["c2/move", "c2/install"]);
    assert_eq!(world.state.status(), Status::Failed, "blocked by the rolled-back group");
    world.assert_refolds();
}

#[test]
fn a_group_rolls_back_alone_while_others_finish_and_the_workflow_fails() {
    let steps = vec![
        grouped("c1/install", "c1", &[]),
        grouped("c1/move", "c1", &["c1/install"]),
        grouped("c2/install", "c2", &[]),
        grouped("c2/move", "c2", &["c2/install"]),
        step("next-wave", &["c1/move", "c2/move"]),
    ];
    let mut world = World::new(plan(steps, FailurePolicy::RollbackGroup));
    world.forward.insert(("c2/move".into(), 1), Outcome::FailFatal);
    world.run(true);
    assert_eq!(world.compensated(), ["c2/move", "c2/install"]);
    let c1 = world.state.step(&id("c1/move")).expect("c1");
    assert_eq!(c1.forward, Forward::Succeeded, "the other group finished");
    assert_eq!(c1.compensation, Compensating::Idle, "and was not touched");
    assert!(world.runs.iter().all(|(step, _, _)| step != "next-wave"), "the next wave never started");
    assert_eq!(world.state.status(), Status::Failed);
    assert!(world.kinds().contains(&"GroupRolledBack"));

    // The operator then rolls back the rest.
    world.signal(Signal::Rollback { scope: Scope::All, reason: "give up".into(), allow_irreversible: false });
    world.run(true);
    assert_eq!(world.state.status(), Status::RolledBack);
    assert_eq!(world.compensated(), ["c2/move", "c2/install", "c1/move", "c1/install"]);
    world.assert_refolds();
}

#[test]
fn group_limits_cap_groups_in_progress() {
    let mut steps = Vec::new();
    for cluster in ["c1", "c2", "c3", "c4"] {
        steps.push(grouped(&format!("{cluster}/a"), cluster, &[]));
        steps.push(grouped(&format!("{cluster}/b"), cluster, &[&format!("{cluster}/a")]));
    }
    let mut plan = plan(steps, FailurePolicy::Pause);
    plan.group_limits.push(GroupLimit {
        name: "wave".into(),
        groups: vec!["c1".into(), "c2".into(), "c3".into(), "c4".into()],
        active_max: 2,
    });
    let mut world = World::new(plan);
    for cluster in ["c1", "c2", "c3", "c4"] {
        world.forward.insert((format!("{cluster}/a"), 1), Outcome::Hang);
    }
    world.run(true);
    let running = world.running();
    assert_eq!(running, ["c1/a", "c2/a"], "only two groups at once");
    world.complete("c1/a", Outcome::Succeed);
    world.run(true);
    let running = world.running();
    assert_eq!(running, ["c2/a", "c3/a"], "c1 finished (its b ran at once), so c3 took its slot; c4 waits");
    for cluster in ["c2", "c3", "c4"] {
        world.complete(&format!("{cluster}/a"), Outcome::Succeed);
        world.run(true);
    }
    assert_eq!(world.state.status(), Status::Succeeded);
}

#[test]
fn groups_waiting_on_a_gate_give_up_their_slots_and_take_them_back_after() {
    // Goal: 4 clusters, at most 2 at once, each verifying before a shared
    // gate and finishing after it. Without parking, clusters 1 and 2 would
    // hold both slots at the gate, and 3 and 4 could never start.
    let mut steps = Vec::new();
    let clusters = ["c1", "c2", "c3", "c4"];
    for cluster in clusters {
        steps.push(grouped(&format!("{cluster}/verify"), cluster, &[]));
    }
    let verifies: Vec<String> = clusters.iter().map(|c| format!("{c}/verify")).collect();
    let mut gate = step("gate", &verifies.iter().map(String::as_str).collect::<Vec<_>>());
    gate.compensation = Compensation::None;
    steps.push(gate);
    for cluster in clusters {
        steps.push(grouped(&format!("{cluster}/uninstall"), cluster, &[&format!("{cluster}/verify"), "gate"]));
    }
    let mut plan = plan(steps, FailurePolicy::Pause);
    plan.group_limits.push(GroupLimit {
        name: "wave".into(),
        groups: clusters.iter().map(|c| c.to_string()).collect(),
        active_max: 2,
    });
    let mut world = World::new(plan);
    for step in ["c1/uninstall", "c2/uninstall", "c3/uninstall", "c4/uninstall"] {
        world.forward.insert((step.into(), 1), Outcome::Hang);
    }
    world.run(true);
    let running = world.running();
    assert_eq!(running, ["c1/uninstall", "c2/uninstall"], "the gate passed, and only two clusters went on at once");
    // Through the whole run, no more than two clusters ever ran at once.
    let mut in_flight: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut most = 0;
    for recorded in &world.history {
        match &recorded.event {
            Event::StepStarted(e) => {
                in_flight.insert(e.step.as_str().split('/').next().unwrap_or_default().to_string());
            }
            Event::StepSucceeded(e) => {
                in_flight.remove(e.step.as_str().split('/').next().unwrap_or_default());
            }
            _ => {}
        }
        most = most.max(in_flight.iter().filter(|g| g.starts_with('c')).count());
    }
    assert!(most <= 2, "at most two clusters at once, saw {most}");
    for step in ["c1/uninstall", "c2/uninstall"] {
        world.complete(step, Outcome::Succeed);
        world.run(true);
    }
    for step in ["c3/uninstall", "c4/uninstall"] {
        world.complete(step, Outcome::Succeed);
        world.run(true);
    }
    assert_eq!(world.state.status(), Status::Succeeded);
}

#[test]
fn a_sleep_records_its_fire_time_and_fires_only_then() {
    let mut sleep = step("soak", &[]);
    sleep.action = StepAction::Sleep { duration_ms: 600_000 };
    sleep.compensation = Compensation::None;
    let mut world = World::new(plan(vec![sleep, step("after", &["soak"])], FailurePolicy::Pause));
    world.run(false);
    let fire_at = world.state.step(&id("soak")).expect("soak").fire_at_ms.expect("timer set");
    assert_eq!(fire_at, 1_000 + 600_000);
    assert_eq!(decide(&world.state, fire_at - 1).wake_at_ms, Some(fire_at));
    // A restart in the middle: the fire time comes from the log, not the restart.
    let mut restarted = WorkflowState::fold(world.id, &world.history).expect("fold");
    assert_eq!(restarted.step(&id("soak")).expect("soak").fire_at_ms, Some(fire_at));
    assert!(recover(&restarted).is_empty(), "a sleep has no side effect to re-run");
    restarted = world.state.clone();
    assert_eq!(restarted, world.state);
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
    let fired = world.history.iter().find(|r| r.event.kind() == EventKind::TimerFired).expect("fired");
    assert!(fired.at_ms >= fire_at);
}

#[test]
fn an_approval_waits_for_its_gate() {
    let mut gate = step("gate", &[]);
    gate.action = StepAction::Approval { gate: "wave-2".into() };
    gate.compensation = Compensation::None;
    let mut world = World::new(plan(vec![gate, step("after", &["gate"])], FailurePolicy::Pause));
    world.run(true);
    assert_eq!(world.state.status(), Status::Running);
    assert_eq!(world.state.waiting_gates(), ["wave-2"]);
    let wrong = Signal::Approve { gate: "wave-3".into() };
    assert!(world.state.check_signal(&wrong).expect_err("not waiting").contains("waiting: wave-2"));
    world.signal(Signal::Approve { gate: "wave-2".into() });
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
    assert!(world.state.check_signal(&Signal::Approve { gate: "wave-2".into() }).is_err(), "nothing waits any more");
}

#[test]
fn cancel_aborts_running_attempts_and_compensates_nothing() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::Pause));
    world.forward.insert(("b".into(), 1), Outcome::Hang);
    world.run(true);
    world.signal(Signal::Cancel { reason: "change freeze".into() });
    world.run(true);
    assert_eq!(world.state.status(), Status::Cancelled);
    assert!(world.compensated().is_empty());
    let kinds = world.kinds();
    assert_eq!(&kinds[kinds.len() - 2..], ["StepAborted", "WorkflowCancelled"]);
    assert!(world.state.check_signal(&Signal::Resume).is_err(), "nothing after a cancel");
}

#[test]
fn a_rollback_request_aborts_the_running_step_and_undoes_it_too() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::Pause));
    world.forward.insert(("b".into(), 1), Outcome::Hang);
    world.run(true);
    world.signal(Signal::Rollback { scope: Scope::All, reason: "operator".into(), allow_irreversible: false });
    world.run(true);
    assert_eq!(world.state.status(), Status::RolledBack);
    assert_eq!(world.compensated(), ["b", "a"], "b's outcome is unknown, so it is undone first");
}

#[test]
fn a_succeeded_workflow_can_still_be_rolled_back() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::Pause));
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
    world.signal(Signal::Rollback { scope: Scope::All, reason: "regression found".into(), allow_irreversible: false });
    world.run(true);
    assert_eq!(world.state.status(), Status::RolledBack);
    assert_eq!(world.compensated(), ["b", "a"]);
    world.assert_refolds();
}

#[test]
fn an_irreversible_step_stops_a_rollback_until_the_operator_allows_skipping_it() {
    let mut irreversible = step("b", &["a"]);
    irreversible.compensation = Compensation::Irreversible;
    let mut world = World::new(plan(vec![step("a", &[]), irreversible, step("c", &["b"])], FailurePolicy::RollbackAll));
    world.forward.insert(("c".into(), 1), Outcome::FailFatal);
    world.run(true);
    assert_eq!(world.state.status(), Status::Paused);
    assert!(world.state.paused.as_deref().is_some_and(|why| why.contains("--allow-irreversible")));
    assert_eq!(world.compensated(), ["c"]);

    let allow = Signal::Rollback { scope: Scope::All, reason: "skip it".into(), allow_irreversible: true };
    world.state.check_signal(&allow).expect("allowed while rolling back");
    world.signal(allow);
    world.run(true);
    assert_eq!(world.state.status(), Status::RolledBack);
    assert_eq!(world.compensated(), ["c", "a"]);
    assert!(world.kinds().contains(&"CompensationSkipped"));
}

#[test]
fn a_compensation_that_keeps_failing_pauses_and_resume_retries_it() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::RollbackAll));
    world.forward.insert(("b".into(), 1), Outcome::FailFatal);
    for attempt in 1..=3 {
        world.compensations.insert(("a".into(), attempt), Outcome::FailRetryable);
    }
    world.run(true);
    assert_eq!(world.state.status(), Status::Paused);
    assert!(world.state.paused.as_deref().is_some_and(|why| why.contains("compensation of a failed")));
    world.signal(Signal::Resume);
    world.run(true);
    assert_eq!(world.state.status(), Status::RolledBack);
    assert_eq!(world.compensated(), ["b", "a"]);
}

#[test]
fn pause_lets_running_steps_finish_and_starts_nothing_new() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::Pause));
    world.forward.insert(("a".into(), 1), Outcome::Hang);
    world.run(true);
    world.signal(Signal::Pause { reason: "lunch".into() });
    world.run(true);
    assert_eq!(world.state.status(), Status::Paused);
    world.complete("a", Outcome::Succeed);
    world.run(true);
    assert!(world.runs.iter().all(|(step, _, _)| step != "b"), "b did not start while paused");
    world.signal(Signal::Resume);
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
}

#[test]
fn skip_lets_dependents_of_a_failed_step_run() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::Pause));
    world.forward.insert(("a".into(), 1), Outcome::FailFatal);
    world.run(true);
    world.signal(Signal::Skip { step: id("a") });
    world.signal(Signal::Resume);
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
    assert_eq!(world.state.step(&id("a")).expect("a").forward, Forward::Skipped);
}

#[test]
fn recovery_reruns_an_attempt_left_without_outcome_with_a_new_attempt_number() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::Pause));
    world.forward.insert(("a".into(), 1), Outcome::Hang);
    world.run(true);
    // The process dies here; a new one folds the history and recovers.
    let mut state = WorkflowState::fold(world.id, &world.history).expect("fold");
    assert_eq!(recover(&state), [Command::Start { step: id("a"), attempt: 2, resumed: true }]);
    world.recover();
    world.run(true);
    assert_eq!(world.state.status(), Status::Succeeded);
    state = world.state.clone();
    assert_eq!(state.step(&id("a")).expect("a").resumes, 1);
}

#[test]
fn recovery_during_a_rollback_aborts_instead_of_rerunning() {
    let mut world = World::new(plan(vec![step("a", &[]), step("b", &["a"])], FailurePolicy::Pause));
    world.forward.insert(("b".into(), 1), Outcome::Hang);
    world.run(true);
    world.record(Event::RollbackStarted(RollbackStarted {
        scope: Scope::All,
        reason: "x".into(),
        allow_irreversible: false,
    }));
    let commands = recover(&world.state);
    assert!(
        matches!(commands.as_slice(), [Command::Abort { step, attempt: 1, .. }] if step.as_str() == "b"),
        "{commands:?}"
    );
}

#[test]
fn a_step_that_keeps_crashing_its_process_fails_after_the_resume_bound() {
    let mut world = World::new(plan(vec![step("a", &[])], FailurePolicy::Pause));
    for attempt in 1..=RESUMES_COUNT_MAX + 1 {
        world.forward.insert(("a".into(), attempt), Outcome::Hang);
    }
    world.run(true);
    for _ in 0..RESUMES_COUNT_MAX {
        world.recover();
    }
    world.recover();
    world.run(true);
    assert_eq!(world.state.step(&id("a")).expect("a").forward, Forward::Failed);
    assert_eq!(world.state.status(), Status::Paused);
}

#[test]
fn an_activity_may_add_steps_and_dependencies() {
    let mut world = World::new(plan(vec![step("discover", &[]), step("verify", &["discover"])], FailurePolicy::Pause));
    world.forward.insert(("discover".into(), 1), Outcome::Hang);
    world.run(true);
    let added = StepsAdded {
        by: id("discover"),
        steps: vec![step("move/ns1", &["discover"]), step("move/ns2", &["discover"])],
        dependencies: vec![(id("verify"), id("move/ns1")), (id("verify"), id("move/ns2"))],
    };
    world.record(Event::StepsAdded(added));
    world.complete("discover", Outcome::Succeed);
    world.run(true);
    let order: Vec<&str> = world.runs.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(order, ["discover", "move/ns1", "move/ns2", "verify"]);
    world.assert_refolds();
}

#[test]
fn invalid_histories_are_rejected_with_their_sequence_number() {
    let mut world = World::new(plan(vec![step("a", &[])], FailurePolicy::Pause));
    world.run(true);
    let after_end = RecordedEvent {
        seq: world.state.next_seq,
        at_ms: 9,
        event: Event::StepStarted(StepStarted { step: id("a"), attempt: 2, resumed: false }),
    };
    let err = world.state.clone().apply(&after_end).expect_err("a's attempt 2 cannot follow its success");
    assert_eq!(err.seq, world.state.next_seq);
    let wrong_seq = RecordedEvent { seq: 99, at_ms: 9, event: Event::Resumed };
    assert!(world.state.clone().apply(&wrong_seq).expect_err("gap").why.contains("expected sequence"));
    let unknown = RecordedEvent {
        seq: world.state.next_seq,
        at_ms: 9,
        event: Event::StepSucceeded(StepSucceeded { step: id("zz"), attempt: 1, output: Payload::null() }),
    };
    assert!(world.state.clone().apply(&unknown).expect_err("unknown step").why.contains("no step zz"));

    world.signal(Signal::Rollback { scope: Scope::All, reason: "r".into(), allow_irreversible: false });
    world.run(true);
    assert!(world.state.is_final());
    let after_final = RecordedEvent { seq: world.state.next_seq, at_ms: 9, event: Event::Resumed };
    assert!(world.state.clone().apply(&after_final).expect_err("final").why.contains("already rolled-back"));
}

#[test]
fn signals_that_do_not_apply_are_refused_by_check_and_ignored_by_fold() {
    let mut world = World::new(plan(vec![step("a", &[])], FailurePolicy::Pause));
    assert!(world.state.check_signal(&Signal::Resume).is_err(), "not paused");
    assert!(world.state.check_signal(&Signal::Skip { step: id("a") }).is_err(), "not failed");
    assert!(
        world
            .state
            .check_signal(&Signal::Rollback {
                scope: Scope::Group("nope".into()),
                reason: String::new(),
                allow_irreversible: false
            })
            .is_err()
    );
    let before = world.state.clone();
    world.signal(Signal::Resume);
    assert_eq!(world.state.requests, before.requests, "an inapplicable signal changes no request");
}

mod properties {
    //! Random plans, outcomes, signals and crashes: whatever happens, every
    //! history folds, folds the same way twice, and keeps the invariants.

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Poke {
        Crash,
        Pause,
        Resume,
        Rollback,
        RollbackGroup(usize),
        Cancel,
        Approve,
    }

    fn poke() -> impl Strategy<Value = Poke> {
        prop_oneof![
            3 => Just(Poke::Crash),
            1 => Just(Poke::Pause),
            2 => Just(Poke::Resume),
            1 => Just(Poke::Rollback),
            1 => (0usize..3).prop_map(Poke::RollbackGroup),
            1 => Just(Poke::Cancel),
            2 => Just(Poke::Approve),
        ]
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![6 => Just(Outcome::Succeed), 2 => Just(Outcome::FailRetryable), 1 => Just(Outcome::FailFatal), 1 => Just(Outcome::Hang)]
    }

    /// Three groups of three chained steps, then a gate and a final step.
    fn fleet_plan(policy: FailurePolicy) -> Plan {
        let mut steps = Vec::new();
        for group in 0..3 {
            for n in 0..3 {
                let name = format!("g{group}/s{n}");
                let deps: Vec<String> = if n == 0 { vec![] } else { vec![format!("g{group}/s{}", n - 1)] };
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                steps.push(grouped(&name, &format!("g{group}"), &deps));
            }
        }
        let mut gate = step("gate", &["g0/s2", "g1/s2", "g2/s2"]);
        gate.action = StepAction::Approval { gate: "final".into() };
        gate.compensation = Compensation::None;
        steps.push(gate);
        steps.push(step("last", &["gate"]));
        let mut plan = plan(steps, policy);
        plan.group_limits.push(GroupLimit {
            name: "wave".into(),
            groups: vec!["g0".into(), "g1".into(), "g2".into()],
            active_max: 2,
        });
        plan
    }

    fn policy() -> impl Strategy<Value = FailurePolicy> {
        prop_oneof![Just(FailurePolicy::Pause), Just(FailurePolicy::RollbackAll), Just(FailurePolicy::RollbackGroup)]
    }

    fn poke_world(world: &mut World, poke: &Poke) {
        let signal = match poke {
            Poke::Crash => {
                world.state = WorkflowState::fold(world.id, &world.history).expect("a crash-time history folds");
                world.recover();
                return;
            }
            Poke::Pause => Signal::Pause { reason: "p".into() },
            Poke::Resume => Signal::Resume,
            Poke::Rollback => Signal::Rollback { scope: Scope::All, reason: "r".into(), allow_irreversible: false },
            Poke::RollbackGroup(group) => Signal::Rollback {
                scope: Scope::Group(format!("g{group}")),
                reason: "r".into(),
                allow_irreversible: false,
            },
            Poke::Cancel => Signal::Cancel { reason: "c".into() },
            Poke::Approve => Signal::Approve { gate: "final".into() },
        };
        if world.state.check_signal(&signal).is_ok() {
            world.signal(signal);
        }
    }

    fn check_invariants(world: &World) {
        // Every prefix folds; the whole history folds to the same state twice.
        for end in 1..=world.history.len() {
            WorkflowState::fold(world.id, &world.history[..end]).expect("every prefix folds");
        }
        world.assert_refolds();
        // A step starts only after its dependencies succeeded.
        let mut succeeded = std::collections::BTreeSet::new();
        for recorded in &world.history {
            match &recorded.event {
                Event::StepSucceeded(e) => {
                    succeeded.insert(e.step.clone());
                }
                Event::StepStarted(e) if !e.resumed => {
                    let spec = &world.state.step(&e.step).expect("step").spec;
                    for dep in &spec.depends_on {
                        assert!(succeeded.contains(dep), "{} started before {dep} succeeded", e.step);
                    }
                }
                _ => {}
            }
        }
        // Within a group, compensations run newest first.
        for group in ["g0", "g1", "g2"] {
            let settled: Vec<u64> = world
                .compensated()
                .iter()
                .filter(|step| step.starts_with(group))
                .map(|step| world.state.step(&id(step)).expect("step").settled_seq.expect("settled"))
                .collect();
            assert!(settled.windows(2).all(|pair| pair[0] > pair[1]), "{group} compensated out of order: {settled:?}");
        }
        // Rolled back means every started step with something to undo was undone.
        if world.state.status() == Status::RolledBack {
            for step in &world.state.steps {
                assert!(!step.needs_compensation(), "{} rolled back without compensating", step.spec.id);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

        #[test]
        fn any_run_folds_and_keeps_its_invariants(
            policy in policy(),
            outcomes in proptest::collection::vec(outcome(), 60),
            pokes in proptest::collection::vec((0usize..12, poke()), 0..10),
        ) {
            let mut world = World::new(fleet_plan(policy));
            let names: Vec<String> = world.state.steps.iter().map(|s| s.spec.id.to_string()).collect();
            for (at, outcome) in outcomes.iter().enumerate() {
                let name = &names[at % names.len()];
                let attempt = (at / names.len()) as u32 + 1;
                world.forward.insert((name.clone(), attempt), *outcome);
                world.compensations.insert((name.clone(), attempt), if *outcome == Outcome::FailFatal { Outcome::FailRetryable } else { Outcome::Succeed });
            }
            world.run(true);
            for (batch, poke) in &pokes {
                poke_world(&mut world, poke);
                // Some signals arrive together, before anything acts on them.
                if batch % 3 == 0 {
                    continue;
                }
                world.run(true);
                // Hung activities eventually answer.
                let hanging: Vec<String> = world.hanging.keys().cloned().collect();
                for step in hanging {
                    if world.hanging.contains_key(&step) {
                        world.complete(&step, Outcome::Succeed);
                        world.run(true);
                    }
                }
            }
            check_invariants(&world);
        }
    }
}
