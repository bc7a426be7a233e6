//! Gateways: upgraded in place to the new revision (ISTIO-REFERENCE.md
//! §1.3), and on rollback put back on the old one and seen running before
//! anything else is undone (the seed's warning: the old gateway must be up
//! before the canary is uninstalled; reverse order makes it so).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::install::{labelled, the_record, undo_one};
use super::{Env, forward_output, manifests, output};
use crate::inputs::{GatewayPlan, GatewaysInput, GatewaysOutput, ObjectRef};
use crate::istio::{PodView, gateway_revision, injected_by};
use crate::kube_ops::{self, ClusterClient, FIELD_MANAGER, clean, kube_error, rollout_done, to_json, wait_for};
use crate::ownership;

/// Upgrades every gateway: with the new revision's gateway manifests when
/// they render it, else by setting `istio.io/rev` on its pod template.
pub(super) async fn upgrade(
    env: Arc<Env>,
    context: ActivityContext,
    input: GatewaysInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let manifests = manifests(&context)?.gateways;
    let to = &input.target.to;
    let mut result = GatewaysOutput::default();
    let mut applied_namespaces: Vec<String> = Vec::new();
    for planned in &input.gateways {
        let deployments: Api<Deployment> = Api::namespaced(client.client.clone(), &planned.namespace);
        let Some(live) = deployments
            .get_opt(&planned.name)
            .await
            .map_err(|err| kube_error(&format!("read gateway {}", planned.name), err))?
        else {
            continue;
        };
        let live = to_json(live);
        // A re-run after a crash finds the gateway already moved: keep the planned snapshot.
        let snapshot = if gateway_revision(&live) == to.0 && planned.revision != to.0 {
            planned.clone()
        } else {
            GatewayPlan { snapshot: typed(clean(live.clone())), revision: gateway_revision(&live), ..planned.clone() }
        };
        result.gateways.push(snapshot);
        let rendered = manifests.iter().any(|o| {
            o["kind"] == "Deployment"
                && o["metadata"]["name"] == planned.name.as_str()
                && o["metadata"]["namespace"] == planned.namespace.as_str()
        });
        if rendered {
            if !applied_namespaces.contains(&planned.namespace) {
                for object in manifests.iter().filter(|o| o["metadata"]["namespace"] == planned.namespace.as_str()) {
                    let component = ownership::component_of(ownership::Role::Gateway, object);
                    client.apply(&labelled(object.clone(), &input.target, component, &context), true).await?;
                }
                applied_namespaces.push(planned.namespace.clone());
            }
        } else {
            let relabel = json!({"metadata": {"labels": {"istio.io/rev": to.0}}, "spec": {"template": {"metadata": {"labels": {"istio.io/rev": to.0}}}}});
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
            deployments
                .patch(&planned.name, &params, &Patch::Merge(&relabel))
                .await
                .map_err(|err| kube_error(&format!("relabel gateway {}", planned.name), err))?;
        }
    }
    for gateway in &result.gateways {
        wait_for_gateway(&env, &client, gateway, &to.0, Some(&input.target.to_version), input.timeout_ms).await?;
    }
    output(&result)
}

/// Puts every gateway back as it was, and waits until each runs the old revision again.
pub(super) async fn restore(
    env: Arc<Env>,
    context: ActivityContext,
    input: GatewaysInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let gateways =
        forward_output::<GatewaysOutput>(&context).map_or(input.gateways.clone(), |recorded| recorded.gateways);
    // What the manifests rendered goes back as the record has it (the
    // gateway's Service and account too); an injected gateway's template
    // goes back as its snapshot.
    let record = if input.record_step.is_empty() { None } else { Some(the_record(&context, &input.record_step)?) };
    let manifests = manifests(&context)?.gateways;
    let mut restored_namespaces: Vec<&str> = Vec::new();
    for gateway in &gateways {
        let rendered: Vec<&Value> =
            manifests.iter().filter(|o| o["metadata"]["namespace"] == gateway.namespace.as_str()).collect();
        match &record {
            Some(record) if !gateway.injected && !rendered.is_empty() => {
                if restored_namespaces.contains(&gateway.namespace.as_str()) {
                    continue;
                }
                for object in rendered.iter().rev() {
                    let reference = ObjectRef::of(object);
                    let prior = record.objects.iter().find(|prior| prior.object == reference);
                    undo_one(&client, &context, &input.target, &reference, prior).await?;
                }
                restored_namespaces.push(&gateway.namespace);
            }
            _ => {
                client.apply(&gateway.snapshot, true).await?;
            }
        }
    }
    for gateway in &gateways {
        wait_for_gateway(&env, &client, gateway, &gateway.revision, None, input.timeout_ms).await?;
    }
    output(
        &json!({"restored": gateways.iter().map(|g| format!("{}/{} on {}", g.namespace, g.name, g.revision)).collect::<Vec<_>>()}),
    )
}

fn typed(mut object: Value) -> Value {
    object["apiVersion"] = json!("apps/v1");
    object["kind"] = json!("Deployment");
    object
}

/// Waits until a gateway's rollout is done and its pods are ready on `revision`.
async fn wait_for_gateway(
    env: &Env,
    client: &ClusterClient,
    gateway: &GatewayPlan,
    revision: &str,
    version: Option<&str>,
    timeout_ms: u64,
) -> Result<(), ActivityError> {
    let deployments: Api<Deployment> = Api::namespaced(client.client.clone(), &gateway.namespace);
    let pods: Api<Pod> = Api::namespaced(client.client.clone(), &gateway.namespace);
    let what = format!("gateway {}/{} on revision {revision}", gateway.namespace, gateway.name);
    // The rollout first, watched; then its pods, again until they are all on `revision`.
    let names = [gateway.name.clone()];
    let rollout =
        kube_ops::Rollouts { kind: "Deployment", namespace: &gateway.namespace, names: &names, gone_is_done: false };
    kube_ops::wait_rollouts(&client.client, rollout, Duration::from_millis(timeout_ms), env.settings.poll).await?;
    wait_for(&what, Duration::from_millis(timeout_ms), env.settings.poll, || async {
        let Some(deployment) = deployments
            .get_opt(&gateway.name)
            .await
            .map_err(|err| kube_error(&format!("read gateway {}", gateway.name), err))?
        else {
            return Ok(Some("the gateway Deployment is gone".to_string()));
        };
        let deployment = to_json(deployment);
        if let Some(why) = rollout_done("Deployment", &deployment)? {
            return Ok(Some(why));
        }
        let selector: BTreeMap<String, String> =
            serde_json::from_value(deployment.pointer("/spec/selector/matchLabels").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let found = pods
            .list(&ListParams::default().labels(&labels.join(",")))
            .await
            .map_err(|err| kube_error("list gateway pods", err))?;
        for pod in found.items.into_iter().filter_map(|pod| PodView::from_json(&to_json(pod))) {
            let name = pod.name();
            let injection = injected_by(&pod);
            let on = injection.as_ref().and_then(|i| i.revision.clone()).unwrap_or_default();
            if on != revision {
                return Ok(Some(format!("gateway pod {name} runs revision {on:?}")));
            }
            if let Some(version) = version
                && injection.and_then(|i| i.proxy_version).as_deref() != Some(version)
            {
                return Ok(Some(format!("gateway pod {name} does not run proxy {version} yet")));
            }
        }
        Ok(None)
    })
    .await
}
