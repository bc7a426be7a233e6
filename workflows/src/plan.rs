//! The plan of an upgrade: from the spec and what discovery saw, every step
//! with its compensation, as data. Pure: no cluster is read here.
//!
//! Per cluster, in the seed procedure's order:
//!
//! ```text
//! precheck -> record -> [shared/crds] -> install -> wait-control-plane
//!   -> validation -> [shared/cni] -> [shared/ztunnel] -> gateways
//!   -> move/<ns> (one per namespace; or move-tag/<tag>) -> verify
//!   -> [wave gate: soak, health, approval]
//!   -> handover -> snapshot -> uninstall
//! ```
//!
//! `record` reads, before anything is written, every object the upgrade
//! will write: the install's rollback acts on that record (delete what did
//! not exist, put back what did), not on a guess. Shared pieces are
//! upgraded only in steps of their own, and only as `spec.shared` asks.
//!
//! A wave's next wave starts after its gate. `handover` (pointing
//! validation at the new revision) waits for the gate rather than coming
//! right after `validation` as DESIGN.md lists it: repointing Service
//! `istiod` early would also send the old default injector's calls, and
//! every not-yet-moved proxy, to the new revision before anyone decided so.

use canaryflow_engine::{
    Compensation, FailurePolicy, GroupLimit, Payload, Plan, PlanError, RetryPolicy, StepAction, StepId, StepSpec,
};
use serde::Serialize;

use crate::inputs::{
    ClusterDiscovery, GatewaysInput, HealthInput, InstallInput, MoveInput, MoveTagInput, NodeAgentInput, PrecheckInput,
    RecordInput, SnapshotInput, Target, UninstallInput, ValidationInput, VerifyInput, WaitInput,
};
use crate::spec::{OnFailure, SharedChoice, UpgradeSpec};

/// Which shared pieces the new revision's manifests carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    /// CRDs.
    pub crds: bool,
    /// The CNI node agent.
    pub cni: bool,
    /// ztunnel.
    pub ztunnel: bool,
}

/// Activity names.
pub mod activity {
    #![allow(missing_docs, reason = "the names say it")]
    pub const PRECHECK: &str = "istio.precheck";
    pub const RECORD: &str = "istio.record";
    pub const UPGRADE_CRDS: &str = "istio.upgrade-crds";
    pub const UPGRADE_NODE_AGENT: &str = "istio.upgrade-node-agent";
    pub const RESTORE_NODE_AGENT: &str = "istio.restore-node-agent";
    pub const INSTALL: &str = "istio.install";
    pub const REMOVE_INSTALLED: &str = "istio.remove-installed";
    pub const WAIT_CONTROL_PLANE: &str = "istio.wait-control-plane";
    pub const ENSURE_VALIDATION: &str = "istio.ensure-validation";
    pub const HANDOVER_VALIDATION: &str = "istio.handover-validation";
    pub const RESTORE_VALIDATION: &str = "istio.restore-validation";
    pub const UPGRADE_GATEWAYS: &str = "istio.upgrade-gateways";
    pub const RESTORE_GATEWAYS: &str = "istio.restore-gateways";
    pub const MOVE_NAMESPACE: &str = "istio.move-namespace";
    pub const RESTORE_NAMESPACE: &str = "istio.restore-namespace";
    pub const MOVE_TAG: &str = "istio.move-tag";
    pub const RESTORE_TAG: &str = "istio.restore-tag";
    pub const VERIFY: &str = "istio.verify-proxies";
    pub const HEALTH: &str = "istio.health";
    pub const SNAPSHOT: &str = "istio.snapshot-old";
    pub const UNINSTALL: &str = "istio.uninstall-old";
    pub const REINSTALL_OLD: &str = "istio.reinstall-old";
}

/// Retries for steps that need a cluster: transient errors (the cluster
/// unreachable, a 5xx, a conflict) are retried with backoff for about
/// `timeouts.unreachable`, so that a cluster that goes away for a while
/// delays the upgrade instead of failing it; errors that no retry can
/// mend (forbidden, invalid) fail at once.
fn changing(spec: &UpgradeSpec) -> RetryPolicy {
    retry_within(spec.unreachable_timeout_ms)
}

/// The exponential policy (1 s doubling, at most 30 s apart) whose waits
/// add up to at least `budget_ms`.
fn retry_within(budget_ms: u64) -> RetryPolicy {
    const INITIAL_MS: u64 = 1_000;
    const MAX_MS: u64 = 30_000;
    let (mut attempts, mut waited_ms, mut backoff_ms) = (1u32, 0u64, INITIAL_MS);
    while waited_ms < budget_ms && attempts < 1_000 {
        waited_ms += backoff_ms;
        backoff_ms = (backoff_ms * 2).min(MAX_MS);
        attempts += 1;
    }
    RetryPolicy::exponential(attempts.max(2), INITIAL_MS, MAX_MS)
}

/// Waits retry little: each attempt already waited its full timeout.
fn waiting() -> RetryPolicy {
    RetryPolicy::exponential(2, 1_000, 5_000)
}

fn undo(spec: &UpgradeSpec, name: &str, timeout_ms: u64) -> Compensation {
    Compensation::Activity { name: name.into(), input: Payload::null(), retry: changing(spec), timeout_ms }
}

fn payload<T: Serialize>(value: &T) -> Result<Payload, PlanError> {
    Payload::json(value).map_err(|err| PlanError::Bounds(format!("a step input does not serialize: {err}")))
}

/// Builds one step.
struct StepBuilder {
    spec: StepSpec,
}

impl StepBuilder {
    fn new(
        upgrade: &UpgradeSpec,
        id: &str,
        title: String,
        group: Option<&str>,
        activity: &str,
        input: Payload,
    ) -> Result<Self, PlanError> {
        let mut spec = StepSpec::activity(id, activity, input)?;
        spec.title = title;
        spec.group = group.map(str::to_string);
        spec.retry = changing(upgrade);
        Ok(Self { spec })
    }

    fn after(mut self, deps: &[String]) -> Result<Self, PlanError> {
        self.spec.depends_on = deps.iter().map(|d| StepId::new(d.as_str())).collect::<Result<_, _>>()?;
        Ok(self)
    }

    fn retry(mut self, retry: RetryPolicy) -> Self {
        self.spec.retry = retry;
        self
    }

    fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.spec.timeout_ms = timeout_ms;
        self
    }

    fn undo_with(mut self, compensation: Compensation) -> Self {
        self.spec.compensation = compensation;
        self
    }
}

/// The upgrade's plan.
pub fn build(spec: &UpgradeSpec, clusters: &[ClusterDiscovery], carried: Carried) -> Result<Plan, PlanError> {
    let mut steps: Vec<StepSpec> = Vec::new();
    let mut previous_gate: Option<String> = None;
    let mut group_limits = Vec::new();
    for (index, wave) in spec.waves.iter().enumerate() {
        let mut verifies = Vec::new();
        let mut wave_targets = Vec::new();
        let mut tails: Vec<(String, String, Target, &ClusterDiscovery)> = Vec::new();
        for name in &wave.clusters {
            let discovery = clusters
                .iter()
                .find(|d| &d.cluster.name == name)
                .ok_or_else(|| PlanError::Bounds(format!("no discovery for cluster {name}")))?;
            let target = Target {
                cluster: discovery.cluster.clone(),
                from: spec.from.clone(),
                to: spec.to.clone(),
                to_version: spec.to_version.clone(),
            };
            let verify = cluster_steps(spec, discovery, &target, previous_gate.as_deref(), carried, &mut steps)?;
            wave_targets
                .push((target.clone(), discovery.namespaces.iter().map(|n| n.name.clone()).collect::<Vec<_>>()));
            verifies.push(verify.clone());
            tails.push((name.clone(), verify, target, discovery));
        }
        let gate = gate_steps(spec, index, &verifies, wave_targets, &mut steps)?;
        for (name, verify, target, discovery) in tails {
            uninstall_steps(spec, &name, &[verify, gate.clone()], &target, discovery, &mut steps)?;
        }
        group_limits.push(GroupLimit {
            name: format!("wave-{}", index + 1),
            groups: wave.clusters.clone(),
            active_max: wave.max_parallel,
        });
        previous_gate = Some(gate);
    }
    let on_failure = match spec.on_failure {
        OnFailure::Pause => FailurePolicy::Pause,
        OnFailure::Rollback => FailurePolicy::RollbackAll,
        OnFailure::RollbackCluster => FailurePolicy::RollbackGroup,
    };
    let plan = Plan { steps, group_limits, on_failure };
    plan.validate()?;
    Ok(plan)
}

/// The steps of one cluster up to `verify`; returns the id of `verify`.
fn cluster_steps(
    spec: &UpgradeSpec,
    discovery: &ClusterDiscovery,
    target: &Target,
    after: Option<&str>,
    carried: Carried,
    steps: &mut Vec<StepSpec>,
) -> Result<String, PlanError> {
    let c = discovery.cluster.name.as_str();
    let id = |step: &str| format!("{c}/{step}");
    let (from, to) = (&spec.from, &spec.to);
    let precheck = PrecheckInput {
        target: target.clone(),
        namespaces: discovery.namespaces.iter().map(|n| n.name.clone()).collect(),
        from_version: discovery.from_version.clone(),
    };
    let first_deps: Vec<String> = after.map(|gate| vec![gate.to_string()]).unwrap_or_default();
    steps.push(
        StepBuilder::new(
            spec,
            &id("precheck"),
            format!("check {c}: {from} healthy, permissions, skew to {}", spec.to_version),
            Some(c),
            activity::PRECHECK,
            payload(&precheck)?,
        )?
        .after(&first_deps)?
        .timeout_ms(120_000)
        .spec,
    );
    steps.push(
        StepBuilder::new(
            spec,
            &id("record"),
            format!("record on {c} what the upgrade will write, as it is now"),
            Some(c),
            activity::RECORD,
            payload(&RecordInput { target: target.clone(), shared: spec.shared })?,
        )?
        .after(&[id("precheck")])?
        .timeout_ms(120_000)
        .spec,
    );
    let install =
        InstallInput { target: target.clone(), record_step: id("record"), timeout_ms: spec.rollout_timeout_ms };
    let mut before_install = id("record");
    if carried.crds && spec.shared.crds == SharedChoice::Upgrade {
        steps.push(
            StepBuilder::new(
                spec,
                &id("shared/crds"),
                format!("upgrade Istio's CRDs on {c} for {to} (shared: never deleted, never downgraded)"),
                Some(c),
                activity::UPGRADE_CRDS,
                payload(&install)?,
            )?
            .after(&[id("record")])?
            .timeout_ms(300_000)
            .spec,
        );
        before_install = id("shared/crds");
    }
    steps.push(
        StepBuilder::new(
            spec,
            &id("install"),
            format!("install revision {to} on {c} (server-side apply, labelled as istioctl labels)"),
            Some(c),
            activity::INSTALL,
            payload(&install)?,
        )?
        .after(&[before_install, id("record")])?
        .timeout_ms(300_000)
        .undo_with(undo(spec, activity::REMOVE_INSTALLED, 300_000))
        .spec,
    );
    let wait = WaitInput { target: target.clone(), timeout_ms: spec.control_plane_timeout_ms };
    steps.push(
        StepBuilder::new(
            spec,
            &id("wait-control-plane"),
            format!("wait for {} on {c}", to.istiod()),
            Some(c),
            activity::WAIT_CONTROL_PLANE,
            payload(&wait)?,
        )?
        .after(&[id("install")])?
        .retry(waiting())
        .timeout_ms(spec.control_plane_timeout_ms + 60_000)
        .spec,
    );
    let validation = ValidationInput {
        target: target.clone(),
        service_before: discovery.istiod_service.clone(),
        default_tag: None,
        default_validator: None,
        moved_namespaces: Vec::new(),
        timeout_ms: spec.rollout_timeout_ms,
    };
    steps.push(
        StepBuilder::new(
            spec,
            &id("validation"),
            format!("make sure a live revision serves config validation on {c}"),
            Some(c),
            activity::ENSURE_VALIDATION,
            payload(&validation)?,
        )?
        .after(&[id("wait-control-plane")])?
        .timeout_ms(120_000)
        .undo_with(undo(spec, activity::RESTORE_VALIDATION, 120_000))
        .spec,
    );
    let mut before_gateways = id("validation");
    for (agent, carries, choice) in
        [("cni", carried.cni, spec.shared.cni), ("ztunnel", carried.ztunnel, spec.shared.ztunnel)]
    {
        if !carries || choice != SharedChoice::Upgrade {
            continue;
        }
        let step = id(&format!("shared/{agent}"));
        let input = NodeAgentInput { install: install.clone(), agent: agent.into() };
        steps.push(
            StepBuilder::new(
                spec,
                &step,
                format!("upgrade the shared {agent} DaemonSet on {c} in place (as spec.shared.{agent} asks)"),
                Some(c),
                activity::UPGRADE_NODE_AGENT,
                payload(&input)?,
            )?
            .after(&[before_gateways, id("record")])?
            .timeout_ms(spec.rollout_timeout_ms + 120_000)
            .undo_with(undo(spec, activity::RESTORE_NODE_AGENT, spec.rollout_timeout_ms + 120_000))
            .spec,
        );
        before_gateways = step;
    }
    let gateways = GatewaysInput {
        target: target.clone(),
        record_step: id("record"),
        gateways: discovery.gateways.clone(),
        timeout_ms: spec.rollout_timeout_ms,
    };
    steps.push(
        StepBuilder::new(
            spec,
            &id("gateways"),
            format!("upgrade {} gateways on {c} in place to {to}", discovery.gateways.len()),
            Some(c),
            activity::UPGRADE_GATEWAYS,
            payload(&gateways)?,
        )?
        .after(&[before_gateways, id("record")])?
        .timeout_ms(spec.rollout_timeout_ms + 120_000)
        .undo_with(undo(spec, activity::RESTORE_GATEWAYS, spec.rollout_timeout_ms + 120_000))
        .spec,
    );
    let mut moves = Vec::new();
    match &spec.tag {
        Some(tag) => {
            let input = MoveTagInput {
                target: target.clone(),
                tag: tag.clone(),
                namespaces: discovery.namespaces.clone(),
                webhook_before: discovery.tag_webhook.clone(),
                timeout_ms: spec.rollout_timeout_ms,
            };
            let step = id(&format!("move-tag/{tag}"));
            steps.push(
                StepBuilder::new(
                    spec,
                    &step,
                    format!("point tag {tag} at {to} on {c} and restart its {} namespaces", discovery.namespaces.len()),
                    Some(c),
                    activity::MOVE_TAG,
                    payload(&input)?,
                )?
                .after(&[id("gateways")])?
                .timeout_ms(spec.rollout_timeout_ms + 120_000)
                .undo_with(undo(spec, activity::RESTORE_TAG, spec.rollout_timeout_ms + 120_000))
                .spec,
            );
            moves.push(step);
        }
        None => {
            for namespace in &discovery.namespaces {
                let step = id(&format!("move/{}", namespace.name));
                let input = MoveInput {
                    target: target.clone(),
                    namespace: namespace.clone(),
                    timeout_ms: spec.rollout_timeout_ms,
                };
                let title = format!(
                    "move namespace {} on {c} to {to} and restart its {} workloads",
                    namespace.name,
                    namespace.workloads.len()
                );
                steps.push(
                    StepBuilder::new(spec, &step, title, Some(c), activity::MOVE_NAMESPACE, payload(&input)?)?
                        .after(&[id("gateways")])?
                        .timeout_ms(spec.rollout_timeout_ms + 120_000)
                        .undo_with(undo(spec, activity::RESTORE_NAMESPACE, spec.rollout_timeout_ms + 120_000))
                        .spec,
                );
                moves.push(step);
            }
        }
    }
    let verify = VerifyInput {
        target: target.clone(),
        namespaces: discovery.namespaces.iter().map(|n| n.name.clone()).collect(),
    };
    steps.push(
        StepBuilder::new(
            spec,
            &id("verify"),
            format!("verify every moved pod on {c} runs a {to} proxy"),
            Some(c),
            activity::VERIFY,
            payload(&verify)?,
        )?
        .after(&moves)?
        .retry(RetryPolicy::exponential(4, 1_000, 10_000))
        .timeout_ms(120_000)
        .spec,
    );
    Ok(id("verify"))
}

/// A wave's gate: soak, then health, then approval; returns the last step's id.
fn gate_steps(
    spec: &UpgradeSpec,
    index: usize,
    verifies: &[String],
    targets: Vec<(Target, Vec<String>)>,
    steps: &mut Vec<StepSpec>,
) -> Result<String, PlanError> {
    let wave = &spec.waves[index];
    let prefix = format!("wave-{}", index + 1);
    let mut last = verifies.to_vec();
    if wave.soak_ms > 0 {
        let mut soak = StepBuilder::new(
            spec,
            &format!("{prefix}/soak"),
            format!("soak {} for {} s", prefix, wave.soak_ms / 1_000),
            None,
            activity::HEALTH,
            Payload::null(),
        )?
        .after(&last)?
        .spec;
        soak.action = StepAction::Sleep { duration_ms: wave.soak_ms };
        soak.retry = RetryPolicy::none();
        steps.push(soak);
        last = vec![format!("{prefix}/soak")];
    }
    let health = HealthInput { clusters: targets, restarts_max: wave.restarts_max };
    let mut deps = last.clone();
    deps.extend(verifies.iter().cloned());
    deps.dedup();
    steps.push(
        StepBuilder::new(
            spec,
            &format!("{prefix}/health"),
            format!("health of {prefix}: moved pods ready, on {}", spec.to),
            None,
            activity::HEALTH,
            payload(&health)?,
        )?
        .after(&deps)?
        .retry(RetryPolicy::exponential(4, 2_000, 15_000))
        .timeout_ms(120_000)
        .spec,
    );
    last = vec![format!("{prefix}/health")];
    if wave.approval {
        let mut approval = StepBuilder::new(
            spec,
            &format!("{prefix}/approval"),
            format!("approval of {prefix}"),
            None,
            activity::HEALTH,
            Payload::null(),
        )?
        .after(&last)?
        .spec;
        approval.action = StepAction::Approval { gate: prefix.clone() };
        approval.retry = RetryPolicy::none();
        steps.push(approval);
        last = vec![format!("{prefix}/approval")];
    }
    Ok(last.pop().expect("a gate has a last step"))
}

/// `handover`, `snapshot` and `uninstall` of one cluster.
fn uninstall_steps(
    spec: &UpgradeSpec,
    c: &str,
    after: &[String],
    target: &Target,
    discovery: &ClusterDiscovery,
    steps: &mut Vec<StepSpec>,
) -> Result<(), PlanError> {
    let id = |step: &str| format!("{c}/{step}");
    let from = &spec.from;
    let handover = ValidationInput {
        target: target.clone(),
        service_before: discovery.istiod_service.clone(),
        default_tag: discovery.tags.iter().find(|tag| tag.name == "default").cloned(),
        default_validator: discovery.default_validator.clone(),
        moved_namespaces: discovery.namespaces.iter().map(|n| n.name.clone()).collect(),
        timeout_ms: spec.rollout_timeout_ms,
    };
    steps.push(
        StepBuilder::new(
            spec,
            &id("handover"),
            format!("hand validation and the default tag on {c} to {} before {from} goes", spec.to),
            Some(c),
            activity::HANDOVER_VALIDATION,
            payload(&handover)?,
        )?
        .after(after)?
        .timeout_ms(spec.rollout_timeout_ms + 120_000)
        .undo_with(undo(spec, activity::RESTORE_VALIDATION, spec.rollout_timeout_ms + 120_000))
        .spec,
    );
    steps.push(
        StepBuilder::new(
            spec,
            &id("snapshot"),
            format!("check nothing on {c} still uses {from}, then record its objects (no Secrets)"),
            Some(c),
            activity::SNAPSHOT,
            payload(&SnapshotInput { target: target.clone(), installed: discovery.installed.clone() })?,
        )?
        .after(&[id("handover")])?
        .timeout_ms(120_000)
        .spec,
    );
    let uninstall = UninstallInput {
        target: target.clone(),
        snapshot_step: id("snapshot"),
        timeout_ms: spec.control_plane_timeout_ms,
    };
    steps.push(
        StepBuilder::new(
            spec,
            &id("uninstall"),
            format!("uninstall revision {from} from {c}"),
            Some(c),
            activity::UNINSTALL,
            payload(&uninstall)?,
        )?
        .after(&[id("snapshot")])?
        .timeout_ms(300_000)
        .undo_with(undo(spec, activity::REINSTALL_OLD, spec.control_plane_timeout_ms + 120_000))
        .spec,
    );
    Ok(())
}
