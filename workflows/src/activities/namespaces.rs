//! Namespaces: relabel and restart (one step, because their undo must run
//! in the same order: labels back first, then restart), the tag flow's
//! equivalent, verification that every proxy is the new one, and the wave
//! health gate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput, StepId};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{Env, decode, forward_output, output};
use crate::discovery::workloads;
use crate::inputs::{
    HealthInput, InjectionLabels, MoveInput, MoveOutput, NamespacePlan, Target, VerifyInput, VerifyOutput, WorkloadRef,
};
use crate::istio::{PodView, injected_by};
use crate::kube_ops::{self, ClusterClient, FIELD_MANAGER, kube_error, list_pods, patch_workload, to_json};

/// The pod-template annotation that restarts a workload. Its value is the
/// step's idempotency key: a re-run sets the same value, which changes
/// nothing and starts no second rollout.
pub const RESTART_ANNOTATION: &str = "canaryflow.io/restart";

/// Restarts (PATCHes) one activity sends to a cluster at once; the
/// cluster's client bounds the requests of all its steps together
/// (`REQUESTS_PER_CLUSTER_MAX`).
const RESTARTS_AT_ONCE: usize = 10;
/// Namespaces of one cluster whose pods `verify` and the health gate read
/// at once. Each read is a page of pods at most (`PODS_PER_PAGE`), so
/// with `CLUSTERS_AT_ONCE` this bounds the pods in flight to 16 x 4
/// pages; reads one after another are what a wave's last cluster waits
/// on while every other cluster reads too.
const NAMESPACES_AT_ONCE: usize = 4;

fn params() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() }
}

/// Relabels a namespace for the new revision and restarts its workloads.
pub(super) async fn move_namespace(
    env: Arc<Env>,
    context: ActivityContext,
    input: MoveInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let name = &input.namespace.name;
    let moved = InjectionLabels { istio_injection: None, istio_rev: Some(input.target.to.0.clone()) };
    let labels_before = relabel(&client, &input.namespace, &moved).await?;
    // What planning saw restarts, and what a listing now finds made since.
    // Listing after the relabel is enough: a workload made after it gets
    // the new revision's proxy without a restart.
    let planned = &input.namespace.workloads;
    let mut to_restart = planned.clone();
    to_restart.extend(workloads(&client, name).await?.into_iter().filter(|workload| !planned.contains(workload)));
    let mut restarted = restart(&client, name, &to_restart, &context.idempotency_key).await?;
    wait_rollouts(&env, &client, name, &restarted, input.timeout_ms).await?;
    restarted.sort();
    output(&MoveOutput { labels_before, restarted })
}

/// Undoes `move_namespace`: labels back first, then a restart, so that the
/// pods return to the revision the labels name.
pub(super) async fn restore_namespace(
    env: Arc<Env>,
    context: ActivityContext,
    input: MoveInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let name = &input.namespace.name;
    let recorded: Option<MoveOutput> = forward_output(&context);
    let before = recorded.as_ref().map_or_else(|| input.namespace.labels.clone(), |r| r.labels_before.clone());
    set_labels(&client, name, &before, None).await?;
    let restarted = match recorded {
        Some(recorded) if !recorded.restarted.is_empty() => recorded.restarted,
        _ => workloads(&client, name).await?,
    };
    restart(&client, name, &restarted, &context.idempotency_key).await?;
    wait_rollouts(&env, &client, name, &restarted, input.timeout_ms).await?;
    let on_new = pods_on(&client, name, &input.target.to.0).await?;
    if !on_new.is_empty() {
        return Err(ActivityError::retryable(
            "rollout",
            format!("pods in {name} still run revision {}: {}", input.target.to, on_new.join(", ")),
        ));
    }
    output(&json!({"labels": before, "restarted": restarted.len()}))
}

/// Every pod with a proxy in the moved namespaces runs the new revision's
/// proxy, and is ready. Records restart counts, the health gate's baseline.
pub(super) async fn verify(
    env: Arc<Env>,
    _context: ActivityContext,
    input: VerifyInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let mut result = VerifyOutput::default();
    let mut wrong = Vec::new();
    for (namespace, pods) in pods_of(&client, &input.namespaces).await? {
        for pod in pods {
            let name = format!("{namespace}/{}", pod.name());
            let Some(injection) = injected_by(&pod) else { continue };
            result.pods += 1;
            result.restarts.insert(name.clone(), pod.restarts());
            let on_revision = injection.revision.as_deref() == Some(input.target.to.0.as_str());
            // An image named by digest says no version: the revision's evidence decides.
            let on_version = injection.proxy_version.as_deref().is_none_or(|v| v == input.target.to_version);
            if (!on_revision || !on_version) && !restartable(&pod) {
                let owner = pod.owner().map_or_else(|| "none".to_string(), |(kind, owner)| format!("{kind}/{owner}"));
                result.needs_operator.push(format!("{name} ({owner})"));
                continue;
            }
            if !on_revision || !on_version {
                let proxy = injection.proxy_version.unwrap_or_default();
                wrong.push(format!(
                    "{name} runs revision {:?} (proxy {proxy}, by {})",
                    injection.revision.unwrap_or_default(),
                    injection.evidence
                ));
            } else if !pod.ready() {
                wrong.push(format!("{name} is not ready"));
            }
        }
    }
    if !wrong.is_empty() {
        let shown: Vec<&str> = wrong.iter().take(5).map(String::as_str).collect();
        return Err(ActivityError::retryable(
            "verify",
            format!("{} pods are not on {} yet: {}", wrong.len(), input.target.to, shown.join("; ")),
        ));
    }
    output(&result)
}

/// Whether a rollout restarts `pod`: one of a Deployment (through its
/// ReplicaSet), StatefulSet or DaemonSet. A Job's, a bare pod, another
/// controller's needs an operator to move.
fn restartable(pod: &PodView) -> bool {
    matches!(pod.owner(), Some(("ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet", _)))
}

/// A wave's health gate: every moved pod ready and on the new revision, and
/// (if asked) no more restarts than allowed since `verify`.
pub(super) async fn health(
    env: Arc<Env>,
    context: ActivityContext,
    input: HealthInput,
) -> Result<ActivityOutput, ActivityError> {
    // A few clusters of the wave at a time (owned futures: borrowing
    // closures trip the compiler's higher-ranked lifetime check once the
    // activity future must be Send).
    let checks: Vec<_> = input
        .clusters
        .iter()
        .map(|(target, namespaces)| {
            let (env, target, namespaces) = (env.clone(), target.clone(), namespaces.clone());
            let (baseline, restarts_max) = (baseline(&context, &target), input.restarts_max);
            async move {
                let client = env.clusters.get(&target.cluster).await?;
                let mut problems = Vec::new();
                let mut pods = 0usize;
                for (namespace, live) in pods_of(&client, &namespaces).await? {
                    for pod in live {
                        let Some(injection) = injected_by(&pod) else { continue };
                        if !restartable(&pod) {
                            continue; // reported by verify; the uninstall's check names it again
                        }
                        pods += 1;
                        let name = format!("{namespace}/{}", pod.name());
                        if injection.revision.as_deref() != Some(target.to.0.as_str()) || !pod.ready() {
                            problems.push(format!("{}: {name} is not ready on {}", target.cluster.name, target.to));
                        }
                        if let Some(most) = restarts_max {
                            let since = pod.restarts().saturating_sub(baseline.get(&name).copied().unwrap_or(0));
                            if since > u64::from(most) {
                                problems.push(format!(
                                    "{}: {name} restarted {since} times during the soak (at most {most})",
                                    target.cluster.name
                                ));
                            }
                        }
                    }
                }
                Ok::<_, ActivityError>((pods, problems))
            }
        })
        .collect();
    let checked: Vec<(usize, Vec<String>)> =
        futures::stream::iter(checks).buffer_unordered(CLUSTERS_AT_ONCE).try_collect().await?;
    let pods: usize = checked.iter().map(|(pods, _)| pods).sum();
    let problems: Vec<String> = checked.into_iter().flat_map(|(_, problems)| problems).collect();
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        return Err(ActivityError::retryable("health", format!("{} problems: {}", problems.len(), shown.join("; "))));
    }
    output(&json!({"pods": pods, "healthy": true}))
}

/// Restart counts recorded by this cluster's `verify`.
fn baseline(context: &ActivityContext, target: &Target) -> BTreeMap<String, u64> {
    let Ok(step) = StepId::new(format!("{}/verify", target.cluster.name)) else { return BTreeMap::new() };
    context
        .dependency_outputs
        .get(&step)
        .and_then(|payload| decode::<VerifyOutput>(payload).ok())
        .map(|v| v.restarts)
        .unwrap_or_default()
}

/// Moves a namespace's labels to `moved`; returns the labels it had.
/// Unchanged since planning, it is relabelled in one request (the planned
/// resourceVersion as precondition); else, or on a conflict, it is read
/// first. A re-run after a crash finds it moved already (a conflict, then
/// the moved labels): what it had is what planning saw.
async fn relabel(
    client: &ClusterClient,
    planned: &NamespacePlan,
    moved: &InjectionLabels,
) -> Result<InjectionLabels, ActivityError> {
    let name = &planned.name;
    if let Some(resource_version) = &planned.resource_version {
        match set_labels(client, name, moved, Some(resource_version)).await {
            Ok(()) => return Ok(planned.labels.clone()),
            Err(err) if err.class == "conflict" => {}
            Err(err) if err.class == "not-found" => return Err(gone(name)),
            Err(err) => return Err(err),
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.client.clone());
    let Some(live) =
        namespaces.get_opt(name).await.map_err(|err| kube_error(&format!("read namespace {name}"), err))?
    else {
        return Err(gone(name));
    };
    let live_labels = InjectionLabels::of(&to_json(live));
    let labels_before = if &live_labels == moved { planned.labels.clone() } else { live_labels };
    set_labels(client, name, moved, None).await?;
    Ok(labels_before)
}

fn gone(namespace: &str) -> ActivityError {
    ActivityError::fatal("precondition", format!("namespace {namespace} no longer exists"))
}

/// Sets (or removes) both injection labels, as `kubectl label` would: one
/// merge patch; with `resource_version`, only while the namespace is at it
/// (409 otherwise, as `kubectl label --resource-version`).
async fn set_labels(
    client: &ClusterClient,
    namespace: &str,
    labels: &InjectionLabels,
    resource_version: Option<&str>,
) -> Result<(), ActivityError> {
    let mut patch =
        json!({"metadata": {"labels": {"istio-injection": labels.istio_injection, "istio.io/rev": labels.istio_rev}}});
    if let Some(resource_version) = resource_version {
        patch["metadata"]["resourceVersion"] = json!(resource_version);
    }
    let api: Api<Namespace> = Api::all(client.client.clone());
    api.patch(namespace, &params(), &Patch::Merge(&patch))
        .await
        .map_err(|err| kube_error(&format!("relabel namespace {namespace}"), err))?;
    Ok(())
}

/// Restarts workloads by setting the restart annotation to `token`;
/// returns those that exist (a workload gone since has nothing to restart).
pub(super) async fn restart(
    client: &ClusterClient,
    namespace: &str,
    workloads: &[WorkloadRef],
    token: &str,
) -> Result<Vec<WorkloadRef>, ActivityError> {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: token}}}}});
    let params = params();
    // All of a namespace's rollouts start together, as `kubectl rollout
    // restart deployment -n NS` starts them; at most RESTARTS_AT_ONCE
    // requests at a time, answered in order.
    let restarts: Vec<_> = workloads
        .iter()
        .map(|workload| patch_workload(&client.client, &workload.kind, namespace, &workload.name, &params, &patch))
        .collect();
    let found: Vec<bool> = futures::stream::iter(restarts).buffered(RESTARTS_AT_ONCE).try_collect().await?;
    Ok(workloads.iter().zip(found).filter(|(_, found)| *found).map(|(workload, _)| workload.clone()).collect())
}

/// Waits until every workload's rollout is done, watching each kind of
/// them in the namespace (see [`kube_ops::wait_rollouts`]).
pub(super) async fn wait_rollouts(
    env: &Env,
    client: &ClusterClient,
    namespace: &str,
    workloads: &[WorkloadRef],
    timeout_ms: u64,
) -> Result<(), ActivityError> {
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for workload in workloads {
        by_kind.entry(workload.kind.as_str()).or_default().push(workload.name.clone());
    }
    let timeout = Duration::from_millis(timeout_ms);
    let waits = by_kind.iter().map(|(kind, names)| {
        let rollouts = kube_ops::Rollouts { kind, namespace, names, gone_is_done: true };
        kube_ops::wait_rollouts(&client.client, rollouts, timeout, env.settings.poll)
    });
    futures::future::try_join_all(waits).await?;
    Ok(())
}

/// Clusters one health check reads at once (each [`NAMESPACES_AT_ONCE`]
/// namespaces at a time).
const CLUSTERS_AT_ONCE: usize = 16;

/// The pods of each of `namespaces` that are not being deleted, read
/// [`NAMESPACES_AT_ONCE`] namespaces at a time.
async fn pods_of(
    client: &Arc<ClusterClient>,
    namespaces: &[String],
) -> Result<Vec<(String, Vec<PodView>)>, ActivityError> {
    // Owned futures: see `health`.
    let reads = namespaces.iter().cloned().map(|namespace| {
        let client = client.clone();
        async move {
            let pods = live_pods(&client, &namespace).await?;
            Ok::<_, ActivityError>((namespace, pods))
        }
    });
    futures::stream::iter(reads).buffered(NAMESPACES_AT_ONCE).try_collect().await
}

/// Pods of a namespace that are not being deleted.
async fn live_pods(client: &ClusterClient, namespace: &str) -> Result<Vec<PodView>, ActivityError> {
    list_pods(&client.client, Some(namespace)).await
}

/// Pods of a namespace injected by `revision`.
async fn pods_on(client: &ClusterClient, namespace: &str, revision: &str) -> Result<Vec<String>, ActivityError> {
    Ok(live_pods(client, namespace)
        .await?
        .into_iter()
        .filter(|pod| injected_by(pod).and_then(|i| i.revision).as_deref() == Some(revision))
        .map(|pod| pod.name().to_string())
        .collect())
}
