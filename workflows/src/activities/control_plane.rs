//! The control plane: check the cluster again when the upgrade reaches it,
//! and wait for the new istiod.

use std::sync::Arc;
use std::time::Duration;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::{Value, json};

use super::{Env, manifests, output};
use crate::inputs::{PrecheckInput, WaitInput};
use crate::istio::ISTIO_NAMESPACE;
use crate::kube_ops::{self, ClusterClient, kube_error, namespace_names, wait_for};
use crate::prechecks::{check_no_operator, check_permissions, check_revisions, check_skew};

/// Re-checks at run time what planning checked: the cluster may have changed since.
pub(super) async fn precheck(
    env: Arc<Env>,
    context: ActivityContext,
    input: PrecheckInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    // Independent reads, at once: the next wave's install waits on them.
    let upgrade = manifests(&context)?;
    let written: Vec<&Value> = upgrade.control_plane.iter().chain(&upgrade.gateways).collect();
    let (from_version, (), (), existing) = futures::future::try_join4(
        check_revisions(&client, &input.target.from, &input.target.to),
        check_permissions(&client, &written),
        check_no_operator(&client),
        namespace_names(&client.client),
    )
    .await?;
    if from_version != input.from_version {
        let (from, planned) = (&input.target.from, &input.from_version);
        return Err(ActivityError::fatal(
            "precondition",
            format!("revision {from} now runs Istio {from_version}, not {planned} as planned: plan again"),
        ));
    }
    check_skew(&from_version, &input.target.to_version)?;
    if let Some(gone) = input.namespaces.iter().find(|name| !existing.contains(name)) {
        return Err(ActivityError::fatal(
            "precondition",
            format!("namespace {gone} was planned to move, but no longer exists: plan again"),
        ));
    }
    output(&json!({"from_version": from_version, "namespaces": input.namespaces.len()}))
}

/// Waits until the new revision's istiod is available, with its Service and injector webhook.
pub(super) async fn wait(
    env: Arc<Env>,
    _context: ActivityContext,
    input: WaitInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let to = &input.target.to;
    let (istiod, injector) = (to.istiod(), to.injector());
    let services: Api<Service> = Api::namespaced(client.client.clone(), ISTIO_NAMESPACE);
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.client.clone());
    // The Deployment's rollout, watched; then its Service and webhook.
    wait_istiod(&env, &client, &istiod, input.timeout_ms).await?;
    wait_for(
        &format!("revision {to}'s control plane"),
        Duration::from_millis(input.timeout_ms),
        env.settings.poll,
        || async {
            let Some(service) =
                services.get_opt(&istiod).await.map_err(|err| kube_error(&format!("read Service {istiod}"), err))?
            else {
                return Ok(Some(format!("Service {istiod} does not exist")));
            };
            let ports: Vec<i32> =
                service.spec.and_then(|s| s.ports).unwrap_or_default().iter().map(|p| p.port).collect();
            if !ports.contains(&15012) || !ports.contains(&443) {
                return Ok(Some(format!("Service {istiod} does not serve ports 15012 and 443 (it has {ports:?})")));
            }
            if webhooks.get_opt(&injector).await.map_err(|err| kube_error(&format!("read {injector}"), err))?.is_none()
            {
                return Ok(Some(format!("injector webhook {injector} does not exist")));
            }
            Ok(None)
        },
    )
    .await?;
    output(&json!({"istiod": istiod, "available": true}))
}

/// Waits until Deployment `istiod` is there and rolled out (watched).
pub(super) async fn wait_istiod(
    env: &Env,
    client: &ClusterClient,
    istiod: &str,
    timeout_ms: u64,
) -> Result<(), ActivityError> {
    let names = [istiod.to_string()];
    let rollout =
        kube_ops::Rollouts { kind: "Deployment", namespace: ISTIO_NAMESPACE, names: &names, gone_is_done: false };
    kube_ops::wait_rollouts(&client.client, rollout, Duration::from_millis(timeout_ms), env.settings.poll).await
}
