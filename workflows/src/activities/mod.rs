//! The upgrade's activities: each idempotent, each given what it needs in
//! its input, each recording in its output what its compensation needs.

mod control_plane;
mod gateways;
mod install;
mod namespaces;
mod tags;
mod uninstall;
mod validation;

pub use self::install::WORKFLOW_ANNOTATION;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput, Payload, Registry};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kube_ops::Clusters;
use crate::plan::activity;

/// How activities behave, set by whoever runs them (not recorded).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a wait looks again where it does not watch (an istiod's
    /// Service and webhook, a gateway's pods), and the pause before a
    /// failed read is tried again. Rollouts are watched, not polled.
    pub poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { poll: Duration::from_secs(1) }
    }
}

/// What every activity shares: cluster clients and settings.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) clusters: Clusters,
    pub(crate) settings: Settings,
}

type Run<T> = fn(
    Arc<Env>,
    ActivityContext,
    T,
) -> std::pin::Pin<Box<dyn Future<Output = Result<ActivityOutput, ActivityError>> + Send>>;

fn register<T: DeserializeOwned + Send + 'static>(registry: &mut Registry, env: &Arc<Env>, name: &str, run: Run<T>) {
    let env = env.clone();
    registry.register_fn(name, move |context: ActivityContext, input: Payload| {
        let env = env.clone();
        async move {
            // A compensation reads its forward step's input.
            let source = context.compensating.as_ref().map_or(&input, |c| &c.forward_input).clone();
            let input: T = decode(&source)?;
            run(env, context, input).await
        }
    });
}

/// Registers every upgrade activity in `registry`.
pub fn register_all(registry: &mut Registry, settings: Settings) {
    let env = Arc::new(Env { clusters: Clusters::default(), settings });
    register(registry, &env, activity::PRECHECK, |env, context, input| {
        Box::pin(control_plane::precheck(env, context, input))
    });
    register(registry, &env, activity::RECORD, |env, context, input| Box::pin(install::record(env, context, input)));
    register(registry, &env, activity::UPGRADE_CRDS, |env, context, input| {
        Box::pin(install::upgrade_crds(env, context, input))
    });
    register(registry, &env, activity::INSTALL, |env, context, input| Box::pin(install::install(env, context, input)));
    register(registry, &env, activity::REMOVE_INSTALLED, |env, context, input| {
        Box::pin(install::remove_installed(env, context, input))
    });
    register(registry, &env, activity::UPGRADE_NODE_AGENT, |env, context, input| {
        Box::pin(install::upgrade_node_agent(env, context, input))
    });
    register(registry, &env, activity::RESTORE_NODE_AGENT, |env, context, input| {
        Box::pin(install::restore_node_agent(env, context, input))
    });
    register(registry, &env, activity::WAIT_CONTROL_PLANE, |env, context, input| {
        Box::pin(control_plane::wait(env, context, input))
    });
    register(registry, &env, activity::SNAPSHOT, |env, context, input| {
        Box::pin(uninstall::snapshot(env, context, input))
    });
    register(registry, &env, activity::UNINSTALL, |env, context, input| {
        Box::pin(uninstall::uninstall(env, context, input))
    });
    register(registry, &env, activity::REINSTALL_OLD, |env, context, input| {
        Box::pin(uninstall::reinstall(env, context, input))
    });
    register(registry, &env, activity::ENSURE_VALIDATION, |env, context, input| {
        Box::pin(validation::ensure(env, context, input))
    });
    register(registry, &env, activity::HANDOVER_VALIDATION, |env, context, input| {
        Box::pin(validation::handover(env, context, input))
    });
    register(registry, &env, activity::RESTORE_VALIDATION, |env, context, input| {
        Box::pin(validation::restore(env, context, input))
    });
    register(registry, &env, activity::UPGRADE_GATEWAYS, |env, context, input| {
        Box::pin(gateways::upgrade(env, context, input))
    });
    register(registry, &env, activity::RESTORE_GATEWAYS, |env, context, input| {
        Box::pin(gateways::restore(env, context, input))
    });
    register(registry, &env, activity::MOVE_NAMESPACE, |env, context, input| {
        Box::pin(namespaces::move_namespace(env, context, input))
    });
    register(registry, &env, activity::RESTORE_NAMESPACE, |env, context, input| {
        Box::pin(namespaces::restore_namespace(env, context, input))
    });
    register(registry, &env, activity::MOVE_TAG, |env, context, input| Box::pin(tags::move_tag(env, context, input)));
    register(registry, &env, activity::RESTORE_TAG, |env, context, input| {
        Box::pin(tags::restore_tag(env, context, input))
    });
    register(registry, &env, activity::VERIFY, |env, context, input| Box::pin(namespaces::verify(env, context, input)));
    register(registry, &env, activity::HEALTH, |env, context, input| Box::pin(namespaces::health(env, context, input)));
}

/// Every activity name registered by [`register_all`].
pub const ACTIVITIES: [&str; 22] = [
    activity::PRECHECK,
    activity::RECORD,
    activity::UPGRADE_CRDS,
    activity::UPGRADE_NODE_AGENT,
    activity::RESTORE_NODE_AGENT,
    activity::INSTALL,
    activity::REMOVE_INSTALLED,
    activity::WAIT_CONTROL_PLANE,
    activity::SNAPSHOT,
    activity::UNINSTALL,
    activity::REINSTALL_OLD,
    activity::ENSURE_VALIDATION,
    activity::HANDOVER_VALIDATION,
    activity::RESTORE_VALIDATION,
    activity::UPGRADE_GATEWAYS,
    activity::RESTORE_GATEWAYS,
    activity::MOVE_NAMESPACE,
    activity::RESTORE_NAMESPACE,
    activity::MOVE_TAG,
    activity::RESTORE_TAG,
    activity::VERIFY,
    activity::HEALTH,
];

fn decode<T: DeserializeOwned>(payload: &Payload) -> Result<T, ActivityError> {
    payload.decode().map_err(|err| ActivityError::fatal("invalid", format!("step input does not decode: {err}")))
}

fn output<T: Serialize>(value: &T) -> Result<ActivityOutput, ActivityError> {
    Payload::json(value)
        .map(ActivityOutput::from)
        .map_err(|err| ActivityError::fatal("invalid", format!("step output does not encode: {err}")))
}

/// The forward step's recorded output, for a compensation (if it has one).
fn forward_output<T: DeserializeOwned>(context: &ActivityContext) -> Option<T> {
    context.compensating.as_ref()?.forward_output.as_ref()?.decode().ok()
}

/// The new revision's objects, from the workflow's input.
#[derive(serde::Deserialize)]
struct Manifests {
    control_plane: Vec<serde_json::Value>,
    gateways: Vec<serde_json::Value>,
    #[serde(default)]
    crds: Vec<serde_json::Value>,
    #[serde(default)]
    cni: Vec<serde_json::Value>,
    #[serde(default)]
    ztunnel: Vec<serde_json::Value>,
}

/// The manifests of the workflow's input. Only they are decoded: the input
/// also holds what planning saw in every cluster of the fleet, and a wave of
/// installs decoding all of it at once would hold it many times over.
fn manifests(context: &ActivityContext) -> Result<Manifests, ActivityError> {
    decode(&context.workflow_input)
}
