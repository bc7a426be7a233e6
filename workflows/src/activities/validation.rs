//! Config validation: keep it served by a live revision, through the
//! upgrade and after the old revision is gone (ISTIO-REFERENCE.md §1.4).
//!
//! Up to 1.10 the base chart's one validating webhook calls Service
//! `istiod`, which only a non-revisioned install has. The seed's workaround
//! is to point Service `istiod` at the revision that should validate: a
//! copy of `istiod-<rev>` under the old name. From 1.12 the `default`
//! revision tag injects `istio-injection=enabled` namespaces and
//! `sidecar.istio.io/inject=true` pods, and `istiod-default-validator`
//! validates unlabelled config; moving both is what `istioctl tag set
//! default --revision <to> --overwrite` does, and what the hand-over does
//! before the old revision goes, restarting what the tag injects.

use std::sync::Arc;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use super::namespaces::{restart, wait_rollouts};
use super::{Env, forward_output, output, tags};
use crate::inputs::{Target, ValidationInput, ValidationOutput};
use crate::istio::ISTIO_NAMESPACE;
use crate::kube_ops::{ClusterClient, clean, describe, kube_error, to_json};

const DEFAULT_VALIDATOR: &str = "istiod-default-validator";

/// Makes sure validation is served now; fixes it if it is not (a
/// revisioned first install leaves Service `istiod` missing).
pub(super) async fn ensure(
    env: Arc<Env>,
    _context: ActivityContext,
    input: ValidationInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let mut result = ValidationOutput::default();
    if base_webhook_calls_istiod(&client).await? {
        if service_has_live_istiod(&client, "istiod").await? {
            result.action = "validation is served through Service istiod".into();
        } else {
            point_istiod_service_at(&client, &input.target, &mut result).await?;
            result.action = format!("Service istiod had no live istiod behind it: pointed it at {}", input.target.to);
        }
    } else {
        result.action = "validation is served by per-revision validators".into();
    }
    confirm_served(&client, &input.target).await?;
    output(&result)
}

/// Before the old revision goes: whatever serves validation or injection
/// through it now is pointed at the new revision, and what the default tag
/// injected is restarted onto it.
pub(super) async fn handover(
    env: Arc<Env>,
    context: ActivityContext,
    input: ValidationInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let mut result = ValidationOutput::default();
    let mut actions = Vec::new();
    if base_webhook_calls_istiod(&client).await? {
        let services: Api<Service> = Api::namespaced(client.client.clone(), ISTIO_NAMESPACE);
        let live = services.get_opt("istiod").await.map_err(|err| kube_error("read Service istiod", err))?.map(to_json);
        let owner = live
            .as_ref()
            .and_then(|s| s.pointer("/metadata/labels/istio.io~1rev"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if live.is_none() || owner == input.target.from.0 {
            point_istiod_service_at(&client, &input.target, &mut result).await?;
            actions.push(format!("pointed Service istiod at {}", input.target.to));
        }
    }
    if move_default_validator(&client, &input.target, &mut result).await? {
        actions.push(format!("pointed {DEFAULT_VALIDATOR} at {}", input.target.to));
    }
    if tags::move_default_tag(&client, &input.target, &mut result).await? {
        actions.push(format!("pointed the default tag at {}", input.target.to));
    }
    if let Some(tag) = &input.default_tag
        && tag.revision == input.target.from.0
    {
        let restarted = tags::restart_default_injected(&env, &client, &input, &context.idempotency_key).await?;
        if !restarted.is_empty() {
            actions.push(format!("restarted what the default tag injects in {} namespaces", restarted.len()));
        }
        result.restarted = restarted;
    }
    result.action = if actions.is_empty() {
        "validation and injection do not depend on the old revision".into()
    } else {
        actions.join("; ")
    };
    confirm_served(&client, &input.target).await?;
    output(&result)
}

/// Undoes `validation` or `handover`: re-applies what they changed, deletes what they created.
pub(super) async fn restore(
    env: Arc<Env>,
    context: ActivityContext,
    input: ValidationInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let to = input.target.to.0.as_str();
    let ours = |object: &Value| object.pointer("/metadata/labels/istio.io~1rev").and_then(Value::as_str) == Some(to);
    let mut done = Vec::new();
    match forward_output::<ValidationOutput>(&context) {
        Some(recorded) => {
            for created in &recorded.created {
                if client.get_like(created).await?.as_ref().is_some_and(ours) && client.delete_like(created).await? {
                    done.push(format!("deleted {}", describe(created)));
                }
            }
            for before in &recorded.objects_before {
                client.apply(before, true).await?;
                done.push(format!("restored {}", describe(before)));
            }
            for (namespace, workloads) in &recorded.restarted {
                restart(&client, namespace, workloads, &context.idempotency_key).await?;
                wait_rollouts(&env, &client, namespace, workloads, input.timeout_ms).await?;
                done.push(format!("restarted {} workloads in {namespace}", workloads.len()));
            }
        }
        None => {
            // Cut off before recording: compare with what planning saw.
            let probe = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istiod", "namespace": ISTIO_NAMESPACE}});
            let live = client.get_like(&probe).await?;
            match (&input.service_before, live) {
                (Some(before), Some(live)) if ours(&live) && !ours(before) => {
                    client.apply(before, true).await?;
                    done.push("restored Service istiod".to_string());
                }
                (None, Some(live)) if ours(&live) => {
                    client.delete_like(&probe).await?;
                    done.push("deleted Service istiod".to_string());
                }
                _ => {}
            }
        }
    }
    output(&json!({"done": done}))
}

/// Whether the base chart's shared validating webhook (`istiod-istio-system`,
/// up to 1.10) calls Service `istio-system/istiod`. From 1.11 each revision
/// validates through its own; the default tag's validator is moved with it.
async fn base_webhook_calls_istiod(client: &ClusterClient) -> Result<bool, ActivityError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.client.clone());
    let name = format!("istiod-{ISTIO_NAMESPACE}");
    let Some(base) = api.get_opt(&name).await.map_err(|err| kube_error(&format!("read {name}"), err))? else {
        return Ok(false);
    };
    Ok(base.webhooks.iter().flatten().any(|webhook| {
        webhook.client_config.service.as_ref().is_some_and(|s| s.name == "istiod" && s.namespace == ISTIO_NAMESPACE)
    }))
}

/// Whether Service `name` selects a ready pod.
async fn service_has_live_istiod(client: &ClusterClient, name: &str) -> Result<bool, ActivityError> {
    let services: Api<Service> = Api::namespaced(client.client.clone(), ISTIO_NAMESPACE);
    let Some(service) = services.get_opt(name).await.map_err(|err| kube_error(&format!("read Service {name}"), err))?
    else {
        return Ok(false);
    };
    let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
    if selector.is_empty() {
        return Ok(false);
    }
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods: Api<Pod> = Api::namespaced(client.client.clone(), ISTIO_NAMESPACE);
    let found = pods
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(|err| kube_error("list istiod pods", err))?;
    Ok(found.items.iter().any(|pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }))
}

/// Makes Service `istiod` a copy of `istiod-<to>` (the seed's workaround),
/// recording what it replaces.
async fn point_istiod_service_at(
    client: &ClusterClient,
    target: &Target,
    result: &mut ValidationOutput,
) -> Result<(), ActivityError> {
    let services: Api<Service> = Api::namespaced(client.client.clone(), ISTIO_NAMESPACE);
    let source = target.to.istiod();
    let Some(revision_service) =
        services.get_opt(&source).await.map_err(|err| kube_error(&format!("read Service {source}"), err))?
    else {
        return Err(ActivityError::fatal("precondition", format!("Service {source} does not exist")));
    };
    let mut copy = clean(to_json(revision_service));
    copy["metadata"]["name"] = json!("istiod");
    if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("annotations");
    }
    copy["apiVersion"] = json!("v1");
    copy["kind"] = json!("Service");
    match services.get_opt("istiod").await.map_err(|err| kube_error("read Service istiod", err))? {
        Some(before) => result.objects_before.push(with_type(clean(to_json(before)), "v1", "Service")),
        None => result.created.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istiod", "namespace": ISTIO_NAMESPACE}})),
    }
    client.apply(&copy, true).await?;
    Ok(())
}

/// Points `istiod-default-validator` (1.12+) at the new revision, if it
/// calls the old one. Returns whether it did.
async fn move_default_validator(
    client: &ClusterClient,
    target: &Target,
    result: &mut ValidationOutput,
) -> Result<bool, ActivityError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.client.clone());
    let Some(validator) =
        api.get_opt(DEFAULT_VALIDATOR).await.map_err(|err| kube_error(&format!("read {DEFAULT_VALIDATOR}"), err))?
    else {
        return Ok(false);
    };
    let old_service = target.from.istiod();
    let mut moved =
        with_type(clean(to_json(validator)), "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration");
    let calls_old = moved.get("webhooks").and_then(Value::as_array).is_some_and(|hooks| {
        hooks.iter().any(|hook| {
            hook.pointer("/clientConfig/service/name").and_then(Value::as_str) == Some(old_service.as_str())
        })
    });
    if !calls_old {
        return Ok(false);
    }
    result.objects_before.push(moved.clone());
    for hook in moved.get_mut("webhooks").and_then(Value::as_array_mut).into_iter().flatten() {
        hook["clientConfig"]["service"]["name"] = json!(target.to.istiod());
    }
    moved["metadata"]["labels"]["istio.io/rev"] = json!(target.to.0);
    client.apply(&moved, true).await?;
    Ok(true)
}

fn with_type(mut object: Value, api_version: &str, kind: &str) -> Value {
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    object
}

/// Whether anything validates config that names no revision: the base
/// chart's shared webhook (1.6-1.10) or `istiod-default-validator` (1.12+).
async fn validates_unlabelled(client: &ClusterClient) -> Result<bool, ActivityError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.client.clone());
    for name in [DEFAULT_VALIDATOR.to_string(), format!("istiod-{ISTIO_NAMESPACE}")] {
        if api.get_opt(&name).await.map_err(|err| kube_error(&format!("read {name}"), err))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Asks the API server to dry-run an invalid VirtualService: a live
/// validator rejects it. Clusters without Istio's CRDs cannot be asked.
async fn confirm_served(client: &ClusterClient, target: &Target) -> Result<(), ActivityError> {
    let mut probe = json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "canaryflow-validation-probe", "namespace": ISTIO_NAMESPACE},
        "spec": {"hosts": []}
    });
    if !validates_unlabelled(client).await? {
        // Only per-revision validators (a Helm install with no default
        // revision): they validate config labelled for their revision.
        probe["metadata"]["labels"] = json!({"istio.io/rev": target.to.0});
    }
    let Ok(api) = client.api_for(&probe).await else { return Ok(()) };
    let object: kube::api::DynamicObject =
        serde_json::from_value(probe).map_err(|err| ActivityError::fatal("invalid", err.to_string()))?;
    let params = PostParams { dry_run: true, ..PostParams::default() };
    match api.create(&params, &object).await {
        Err(kube::Error::Api(status)) if status.message.contains("admission webhook") && status.code < 500 => Ok(()),
        Ok(_) => Err(ActivityError::retryable(
            "validation",
            "config validation is not served: an invalid VirtualService was accepted (dry run)",
        )),
        Err(err) => Err(kube_error("probe config validation", err)),
    }
}
