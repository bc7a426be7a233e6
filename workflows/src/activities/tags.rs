//! Revision tags: the stable-tag flow (point a tag at the new revision and
//! restart its namespaces, as `istioctl tag set <tag> --revision <to>
//! --overwrite` then `kubectl rollout restart` do), and the `default` tag
//! the hand-over moves before the old revision goes (1.12+: it injects
//! `istio-injection=enabled` namespaces and `sidecar.istio.io/inject=true`
//! pods), restarting what it injected.

use std::collections::BTreeMap;
use std::sync::Arc;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::Api;
use serde_json::{Value, json};

use super::namespaces::{restart, wait_rollouts};
use super::{Env, forward_output, output};
use crate::discovery::workloads;
use crate::inputs::{MoveTagInput, MoveTagOutput, Target, ValidationInput, ValidationOutput, WorkloadRef};
use crate::istio::{ISTIO_NAMESPACE, injected_by};
use crate::kube_ops::{ClusterClient, clean, kube_error, list_pods, to_json};

/// Points the revision tag at the new revision (what `istioctl tag set
/// <tag> --revision <to> --overwrite` does) and restarts its namespaces.
pub(super) async fn move_tag(
    env: Arc<Env>,
    context: ActivityContext,
    input: MoveTagInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.client.clone());
    let name = format!("istio-revision-tag-{}", input.tag);
    let Some(live) = api.get_opt(&name).await.map_err(|err| kube_error(&format!("read {name}"), err))? else {
        return Err(ActivityError::fatal("precondition", format!("revision tag {} no longer exists", input.tag)));
    };
    let live = webhook_typed(clean(to_json(live)));
    let points_at =
        live.pointer("/metadata/labels/istio.io~1rev").and_then(Value::as_str).unwrap_or_default().to_string();
    let webhook_before = if points_at == input.target.to.0 { input.webhook_before.clone() } else { Some(live.clone()) };
    client.apply(&retarget(live, &input.target.to.0, &input.target.to.istiod()), true).await?;
    for namespace in &input.namespaces {
        let current = workloads(&client, &namespace.name).await?;
        restart(&client, &namespace.name, &current, &context.idempotency_key).await?;
        wait_rollouts(&env, &client, &namespace.name, &current, input.timeout_ms).await?;
    }
    output(&MoveTagOutput { webhook_before })
}

/// Undoes `move_tag`: the tag back on the old revision, then the restarts.
pub(super) async fn restore_tag(
    env: Arc<Env>,
    context: ActivityContext,
    input: MoveTagInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let before = forward_output::<MoveTagOutput>(&context)
        .and_then(|r| r.webhook_before)
        .or_else(|| input.webhook_before.clone());
    match before {
        Some(before) => {
            client.apply(&before, true).await?;
        }
        None => {
            let api: Api<MutatingWebhookConfiguration> = Api::all(client.client.clone());
            let name = format!("istio-revision-tag-{}", input.tag);
            if let Some(live) = api.get_opt(&name).await.map_err(|err| kube_error(&format!("read {name}"), err))? {
                client
                    .apply(
                        &retarget(
                            webhook_typed(clean(to_json(live))),
                            &input.target.from.0,
                            &input.target.from.istiod(),
                        ),
                        true,
                    )
                    .await?;
            }
        }
    }
    for namespace in &input.namespaces {
        let current = workloads(&client, &namespace.name).await?;
        restart(&client, &namespace.name, &current, &context.idempotency_key).await?;
        wait_rollouts(&env, &client, &namespace.name, &current, input.timeout_ms).await?;
    }
    output(&json!({"tag": input.tag, "revision": input.target.from}))
}

fn webhook_typed(mut object: Value) -> Value {
    object["apiVersion"] = json!("admissionregistration.k8s.io/v1");
    object["kind"] = json!("MutatingWebhookConfiguration");
    object
}

/// A tag webhook configuration pointed at `revision`, served by `service`.
fn retarget(mut webhook: Value, revision: &str, service: &str) -> Value {
    webhook["metadata"]["labels"]["istio.io/rev"] = json!(revision);
    for hook in webhook.get_mut("webhooks").and_then(Value::as_array_mut).into_iter().flatten() {
        hook["clientConfig"]["service"]["name"] = json!(service);
    }
    webhook
}

/// Points the `default` tag at the new revision if it points at the old
/// one, recording it as it was; returns whether it did.
pub(super) async fn move_default_tag(
    client: &ClusterClient,
    target: &Target,
    result: &mut ValidationOutput,
) -> Result<bool, ActivityError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.client.clone());
    let name = "istio-revision-tag-default";
    let Some(live) = api.get_opt(name).await.map_err(|err| kube_error(&format!("read {name}"), err))? else {
        return Ok(false);
    };
    let live = webhook_typed(clean(to_json(live)));
    let points_at = live.pointer("/metadata/labels/istio.io~1rev").and_then(Value::as_str).unwrap_or_default();
    if points_at != target.from.0 {
        return Ok(false);
    }
    result.objects_before.push(live.clone());
    client.apply(&retarget(live, &target.to.0, &target.to.istiod()), true).await?;
    Ok(true)
}

/// Restarts the workloads whose pods the old revision injected through the
/// `default` tag, in the namespaces the upgrade does not move itself:
/// `istio-injection=enabled` ones, `istio.io/rev=default` ones, and
/// unlabelled ones whose pods ask for injection. Returns them by namespace.
pub(super) async fn restart_default_injected(
    env: &Env,
    client: &Arc<ClusterClient>,
    input: &ValidationInput,
    token: &str,
) -> Result<BTreeMap<String, Vec<WorkloadRef>>, ActivityError> {
    let from = input.target.from.0.as_str();
    let mut namespaces: Vec<String> = list_pods(&client.client, None)
        .await?
        .into_iter()
        .filter(|pod| {
            pod.namespace() != ISTIO_NAMESPACE && !input.moved_namespaces.iter().any(|n| n == pod.namespace())
        })
        .filter(|pod| injected_by(pod).and_then(|i| i.revision).as_deref() == Some(from))
        .map(|pod| pod.namespace().to_string())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let mut restarted = BTreeMap::new();
    for namespace in namespaces {
        let found = workloads(client, &namespace).await?;
        let done = restart(client, &namespace, &found, token).await?;
        wait_rollouts(env, client, &namespace, &done, input.timeout_ms).await?;
        restarted.insert(namespace, done);
    }
    Ok(restarted)
}
