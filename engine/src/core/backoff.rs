//! Retry delays: exponential backoff with jitter, deterministic.
//!
//! The jitter spreads retries of many workflows apart, but it is derived
//! from the workflow id, the step id and the attempt instead of a random
//! number, so that folding a history always computes the same retry time
//! (the fold stays pure, and a restart keeps the original schedule).

use canaryflow_store::WorkflowId;

use crate::core::plan::RetryPolicy;

/// The delay after the `attempts_used`-th failed attempt (1 = after the first).
///
/// Without jitter the delays are `initial`, `initial * m`, `initial * m^2`, ...
/// capped at `max`; with it, each is drawn from `[delay/2, delay]`.
#[must_use]
pub fn retry_delay_ms(
    policy: &RetryPolicy,
    attempts_used: u32,
    workflow_id: WorkflowId,
    step: &str,
    attempt: u32,
) -> u64 {
    assert!(attempts_used >= 1, "a delay follows a failed attempt");
    let mut delay = policy.backoff_ms_initial;
    for _ in 1..attempts_used {
        delay = delay.saturating_mul(u64::from(policy.backoff_multiplier_percent)) / 100;
        if delay >= policy.backoff_ms_max {
            break;
        }
    }
    let delay = delay.min(policy.backoff_ms_max.max(policy.backoff_ms_initial));
    let half = delay / 2;
    let jitter = fnv1a(workflow_id.as_bytes(), step.as_bytes(), attempt) % (delay - half + 1);
    half + jitter
}

/// FNV-1a over the workflow id, the step id and the attempt.
fn fnv1a(id: &[u8], step: &[u8], attempt: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.iter().chain(step).chain(&attempt.to_be_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_within_bounds_and_are_repeatable() {
        let policy = RetryPolicy::exponential(10, 1_000, 30_000);
        let id = WorkflowId::from_u128(42);
        let mut previous_max = 0;
        for used in 1..=9 {
            let delay = retry_delay_ms(&policy, used, id, "s", used);
            let nominal = (1_000u64 << (used - 1)).min(30_000);
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "attempt {used}: {delay} outside [{}, {nominal}]",
                nominal / 2
            );
            assert_eq!(delay, retry_delay_ms(&policy, used, id, "s", used), "deterministic");
            assert!(nominal >= previous_max);
            previous_max = nominal;
        }
    }

    #[test]
    fn jitter_differs_between_workflows() {
        let policy = RetryPolicy::exponential(3, 10_000, 10_000);
        let delays: std::collections::BTreeSet<u64> =
            (0..20).map(|n| retry_delay_ms(&policy, 1, WorkflowId::from_u128(n), "s", 1)).collect();
        assert!(delays.len() > 10, "jitter spreads retries: {delays:?}");
    }

    #[test]
    fn zero_backoff_is_zero() {
        assert_eq!(retry_delay_ms(&RetryPolicy::none(), 1, WorkflowId::from_u128(1), "s", 1), 0);
    }
}
