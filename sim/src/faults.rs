//! Faults, per cluster, switchable at start and while running: latency,
//! error rates, dropped connections, the whole cluster down, rollouts that
//! never finish, pods that crash-loop, RBAC denials.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The faults of one cluster. Rates are per request, from 0.0 to 1.0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultConfig {
    /// Added to every API request, in milliseconds.
    pub latency_ms: u64,
    /// Share of requests answered 500.
    pub error_500_rate: f64,
    /// Share of requests answered 429 (with Retry-After).
    pub error_429_rate: f64,
    /// Share of writes answered 409 Conflict.
    pub error_409_rate: f64,
    /// Share of requests whose connection is dropped without an answer.
    pub drop_rate: f64,
    /// The cluster is down: every connection is dropped.
    pub down: bool,
    /// Workloads (`namespace/name`, or `*/name`) whose rollouts never finish.
    pub stuck_rollouts: Vec<String>,
    /// Workloads (`namespace/name`, or `*/name`) whose pods crash-loop.
    pub crash_looping: Vec<String>,
    /// SelfSubjectAccessReviews denied: `verb resource.group` (`create deployments.apps`), `*` for all.
    pub rbac_deny: Vec<String>,
}

/// A cluster's faults, shared by its server and its controller.
#[derive(Debug)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    /// xorshift state: seeded, so a run replays.
    random: AtomicU64,
}

impl Faults {
    /// Faults from `config`, with a seeded random source.
    #[must_use]
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        Self { config: Mutex::new(config), random: AtomicU64::new(seed | 1) }
    }

    /// The current configuration.
    #[must_use]
    pub fn get(&self) -> FaultConfig {
        self.lock().clone()
    }

    /// Replaces the configuration.
    pub fn set(&self, config: FaultConfig) {
        *self.lock() = config;
    }

    /// Changes the configuration in place.
    pub fn update(&self, change: impl FnOnce(&mut FaultConfig)) {
        change(&mut self.lock());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultConfig> {
        self.config.lock().expect("faults lock poisoned")
    }

    /// A number in [0, 1).
    pub fn roll(&self) -> f64 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether the workload's rollouts never finish.
    #[must_use]
    pub fn rollout_stuck(&self, namespace: &str, name: &str) -> bool {
        matches_workload(&self.lock().stuck_rollouts, namespace, name)
    }

    /// Whether the workload's pods crash-loop.
    #[must_use]
    pub fn crash_looping(&self, namespace: &str, name: &str) -> bool {
        matches_workload(&self.lock().crash_looping, namespace, name)
    }

    /// Whether an access review for `verb` on `resource.group` is denied.
    #[must_use]
    pub fn rbac_denies(&self, verb: &str, group: &str, resource: &str) -> bool {
        let qualified = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
        self.lock().rbac_deny.iter().any(|rule| rule == "*" || *rule == format!("{verb} {qualified}"))
    }
}

fn matches_workload(patterns: &[String], namespace: &str, name: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.split_once('/') {
        Some((ns, workload)) => (ns == "*" || ns == namespace) && (workload == "*" || workload == name),
        None => pattern == name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_rolls() {
        let faults = Faults::new(
            FaultConfig {
                stuck_rollouts: vec!["istio-system/istiod-1-6-8".into()],
                crash_looping: vec!["*/web".into()],
                rbac_deny: vec!["create deployments.apps".into()],
                ..FaultConfig::default()
            },
            42,
        );
        assert!(faults.rollout_stuck("istio-system", "istiod-1-6-8"));
        assert!(!faults.rollout_stuck("istio-system", "istiod"));
        assert!(faults.crash_looping("shop", "web"));
        assert!(faults.rbac_denies("create", "apps", "deployments"));
        assert!(!faults.rbac_denies("get", "apps", "deployments"));
        let rolls: Vec<f64> = (0..1000).map(|_| faults.roll()).collect();
        assert!(rolls.iter().all(|r| (0.0..1.0).contains(r)));
        let mean = rolls.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
