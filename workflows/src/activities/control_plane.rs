//! The control plane: check, install, wait, record, uninstall, and undo.

use std::sync::Arc;
use std::time::Duration;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

use super::{Env, decode, manifests, output};
use crate::discovery::{check_permissions, check_revisions, check_skew};
use crate::inputs::{
    InstallInput, InstallOutput, PrecheckInput, SnapshotInput, SnapshotOutput, UninstallInput, UninstallOutput,
    WaitInput,
};
use crate::istio::{ISTIO_NAMESPACE, UNINSTALL_KINDS, injected_by, uninstall_selector};
use crate::kube_ops::{
    self, ClusterClient, clean, describe, kube_error, list_pods, namespace_names, to_json, wait_for,
};
use crate::manifests::apply_stage;

/// Re-checks at run time what planning checked: the cluster may have changed since.
pub(super) async fn precheck(
    env: Arc<Env>,
    _context: ActivityContext,
    input: PrecheckInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    // Independent reads, at once: the next wave's install waits on them.
    let (from_version, (), existing) = futures::future::try_join3(
        check_revisions(&client, &input.target.from, &input.target.to),
        check_permissions(&client),
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

/// Server-side applies the new revision's control plane (not its gateways).
pub(super) async fn install(
    env: Arc<Env>,
    context: ActivityContext,
    input: InstallInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let upgrade = manifests(&context)?;
    let mut applied = Vec::new();
    // Stage by stage (the manifests are in apply order), each stage's
    // objects at once: istiod's rollout starts a few round trips after the
    // install does, not after every object before it.
    for stage in upgrade.control_plane.chunk_by(|a, b| apply_stage(a) == apply_stage(b)) {
        let objects: Vec<Value> = stage
            .iter()
            .map(|object| {
                let mut object = object.clone();
                annotate(&mut object, &context);
                object
            })
            .collect();
        futures::future::try_join_all(objects.iter().map(|object| client.apply(object, true))).await?;
        applied.extend(objects.iter().map(describe));
    }
    output(&InstallOutput { applied })
}

/// Marks what canaryflow applied with the workflow that did.
fn annotate(object: &mut Value, context: &ActivityContext) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        annotations["canaryflow.io/workflow"] = json!(context.workflow_id.to_string());
    }
}

/// Undoes `install`: deletes every manifest object that carries the new
/// revision's label (it did not exist before: precheck saw to that).
pub(super) async fn remove_installed(
    env: Arc<Env>,
    context: ActivityContext,
    input: InstallInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let upgrade = manifests(&context)?;
    let mut deleted = Vec::new();
    for object in upgrade.control_plane.iter().rev() {
        let Some(live) = client.get_like(object).await? else { continue };
        if live.pointer("/metadata/labels/istio.io~1rev").and_then(Value::as_str) != Some(input.target.to.0.as_str()) {
            continue; // someone relabelled it since: not ours to delete
        }
        if client.delete_like(object).await? {
            deleted.push(describe(object));
        }
    }
    output(&UninstallOutput { deleted })
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

/// Records the old revision's objects, as `istioctl uninstall --revision`
/// would select them, before anything is deleted. Refuses while a gateway
/// or a proxy still depends on that revision.
pub(super) async fn snapshot(
    env: Arc<Env>,
    _context: ActivityContext,
    input: SnapshotInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let from = &input.target.from;
    let selector = uninstall_selector(&from.0);
    let mut objects = Vec::new();
    let mut secrets_left = Vec::new();
    for (api_version, kind) in UNINSTALL_KINDS {
        let probe = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "probe", "namespace": ISTIO_NAMESPACE}});
        let api: Api<DynamicObject> = client.api_for(&probe).await?;
        let found = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|err| kube_error(&format!("list {kind}s of revision {from}"), err))?;
        for object in found.items {
            let mut value = to_json(object);
            value["apiVersion"] = json!(api_version);
            value["kind"] = json!(kind);
            if kind == "Secret" {
                // Never into the log; and so never deleted either.
                secrets_left.push(describe(&value));
                continue;
            }
            if kind == "Deployment"
                && value
                    .pointer("/spec/template/metadata/labels/istio")
                    .and_then(Value::as_str)
                    .is_some_and(|istio| istio.ends_with("gateway"))
            {
                return Err(ActivityError::fatal(
                    "precondition",
                    format!(
                        "gateway {} still runs revision {from}: refusing to remove its control plane",
                        describe(&value)
                    ),
                ));
            }
            objects.push(clean(value));
        }
    }
    refuse_connected_proxies(&client.client, &objects, from).await?;
    output(&SnapshotOutput { objects, secrets_left })
}

/// Fails while any pod's proxy talks to a Service that the uninstall would delete.
async fn refuse_connected_proxies(
    client: &kube::Client,
    objects: &[Value],
    from: &crate::spec::RevisionName,
) -> Result<(), ActivityError> {
    let doomed: Vec<&str> = objects
        .iter()
        .filter(|o| {
            o["kind"] == "Service" && o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ISTIO_NAMESPACE)
        })
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    let mut stranded: Vec<String> = Vec::new();
    for pod in list_pods(client, None).await? {
        let Some(injection) = injected_by(&pod) else { continue };
        let service = match injection.revision.as_deref() {
            Some("default") => "istiod".to_string(),
            Some(revision) => format!("istiod-{revision}"),
            None => continue,
        };
        if doomed.contains(&service.as_str()) {
            stranded.push(format!("{}/{}", pod.namespace(), pod.name()));
        }
    }
    if stranded.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = stranded.iter().take(5).map(String::as_str).collect();
    Err(ActivityError::fatal(
        "precondition",
        format!(
            "{} proxies still point to revision {from} ({}{}); removing it would detach them",
            stranded.len(),
            shown.join(", "),
            if stranded.len() > 5 { ", ..." } else { "" }
        ),
    ))
}

/// Deletes exactly what `snapshot` recorded, webhooks first.
pub(super) async fn uninstall(
    env: Arc<Env>,
    context: ActivityContext,
    input: UninstallInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let snapshot = snapshot_of(&context, &input)?;
    let mut deleted = Vec::new();
    for object in &snapshot.objects {
        if client.delete_like(object).await? {
            deleted.push(describe(object));
        }
    }
    output(&UninstallOutput { deleted })
}

fn snapshot_of(context: &ActivityContext, input: &UninstallInput) -> Result<SnapshotOutput, ActivityError> {
    let step = canaryflow_engine::StepId::new(input.snapshot_step.as_str())
        .map_err(|err| ActivityError::fatal("invalid", err.to_string()))?;
    let recorded = context
        .dependency_outputs
        .get(&step)
        .ok_or_else(|| ActivityError::fatal("invalid", format!("step {step} recorded no snapshot")))?;
    decode(recorded)
}

/// Undoes `uninstall`: re-applies the recorded objects (webhooks last) and
/// waits until the old istiod is available again.
pub(super) async fn reinstall(
    env: Arc<Env>,
    context: ActivityContext,
    input: UninstallInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let snapshot = snapshot_of(&context, &input)?;
    for object in snapshot.objects.iter().rev() {
        client.apply(object, true).await?;
    }
    wait_istiod(&env, &client, &input.target.from.istiod(), input.timeout_ms).await?;
    output(&json!({"reapplied": snapshot.objects.len()}))
}

/// Waits until Deployment `istiod` is there and rolled out (watched).
async fn wait_istiod(env: &Env, client: &ClusterClient, istiod: &str, timeout_ms: u64) -> Result<(), ActivityError> {
    let names = [istiod.to_string()];
    let rollout =
        kube_ops::Rollouts { kind: "Deployment", namespace: ISTIO_NAMESPACE, names: &names, gone_is_done: false };
    kube_ops::wait_rollouts(&client.client, rollout, Duration::from_millis(timeout_ms), env.settings.poll).await
}
