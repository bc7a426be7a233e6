//! Removing the old revision: first check that nothing uses it any more
//! (sail-operator's in-use rule: namespaces, tags, webhooks, pods), then
//! record its objects into the log (never Secrets), then delete them;
//! on rollback, apply the record again and wait for the old istiod.
//!
//! What is the old revision's is decided by [`crate::ownership`]: its
//! objects by the charts' names (Helm installs label no RBAC with the
//! revision) and by istioctl's labels, never a shared piece (CRDs, the
//! base, the node agents, tags, the CA root), never a gateway that has
//! moved on. Namespaced objects outside istio-system count only when
//! labelled as `istioctl uninstall --revision` selects them.

use std::collections::BTreeSet;
use std::sync::Arc;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput, StepId};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::control_plane::wait_istiod;
use super::{Env, decode, output};
use crate::inputs::{
    InjectionLabels, ObjectRef, SnapshotInput, SnapshotOutput, Target, UninstallInput, UninstallOutput,
};
use crate::istio::{ISTIO_NAMESPACE, UNINSTALL_COMPONENTS, UNINSTALL_KINDS, injected_by};
use crate::kube_ops::{ClusterClient, clean, describe, kube_error, list_pods, to_json};
use crate::ownership;

/// Names shown per kind of blocker in a message; the count says the rest.
const BLOCKERS_SHOWN_MAX: usize = 5;

/// Checks that nothing uses the old revision, then records its objects,
/// as `istioctl uninstall --revision` would select them, before anything
/// is deleted. Something still using it pauses the workflow, named.
pub(super) async fn snapshot(
    env: Arc<Env>,
    _context: ActivityContext,
    input: SnapshotInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let from = &input.target.from;
    let (mut objects, secrets_left) = revision_objects(&client, &from.0).await?;
    for recorded in &input.installed {
        let present = objects.iter().any(|o| ObjectRef::of(o) == *recorded);
        let Some(live) = (if present { None } else { client.get_like(&recorded.probe()).await? }) else { continue };
        if ownership::shared_piece(&live).is_some() || ownership::is_gateway(&live) {
            continue;
        }
        let mut value = clean(live);
        value["apiVersion"] = json!(recorded.api_version);
        value["kind"] = json!(recorded.kind);
        objects.push(value);
    }
    // Webhooks first, as for the rest; never a namespace (it may hold anything).
    objects.retain(|o| o["kind"] != "Namespace");
    objects.sort_by_key(|o| {
        UNINSTALL_KINDS.iter().position(|(_, kind)| o["kind"] == *kind).unwrap_or(UNINSTALL_KINDS.len())
    });
    let blockers = in_use(&client, &input.target, &objects).await?;
    if !blockers.is_empty() {
        return Err(ActivityError::needs_operator(format!(
            "revision {from} is still in use, so it is not uninstalled: {}. Move these to {} (or remove them), then resume; or roll back",
            blockers.join("; "),
            input.target.to
        )));
    }
    output(&SnapshotOutput { objects, secrets_left })
}

/// The old revision's objects, cleaned, in uninstall order; and the Secrets
/// that match but are left alone.
async fn revision_objects(client: &ClusterClient, revision: &str) -> Result<(Vec<Value>, Vec<String>), ActivityError> {
    let mut objects = Vec::new();
    let mut secrets_left = Vec::new();
    for (group, kind) in UNINSTALL_KINDS {
        let Some((resource, scope)) = client.preferred(group, kind).await? else { continue };
        let listed = client
            .api_with(&resource, scope, None)
            .list(&ListParams::default())
            .await
            .map_err(|err| kube_error(&format!("list {kind}s"), err))?;
        for object in listed.items {
            let mut value = to_json(object);
            value["apiVersion"] = json!(resource.api_version);
            value["kind"] = json!(kind);
            if !selected(&value, revision) {
                continue;
            }
            if kind == "Secret" {
                // Never into the log; and so never deleted either.
                secrets_left.push(describe(&value));
                continue;
            }
            objects.push(clean(value));
        }
    }
    Ok((objects, secrets_left))
}

/// Whether the uninstall of `revision` takes `object`: in istio-system (or
/// cluster-wide) the revision's own by name or label; elsewhere only what
/// istioctl's selector takes (`istio.io/rev=<rev>` and a component of the
/// revision's).
fn selected(object: &Value, revision: &str) -> bool {
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
    match namespace {
        None | Some(ISTIO_NAMESPACE) => ownership::belongs_to(object, revision),
        Some(_) => {
            let label = |key: &str| object.pointer(&format!("/metadata/labels/{key}")).and_then(Value::as_str);
            label("istio.io~1rev") == Some(revision)
                && label("operator.istio.io~1component").is_some_and(|c| UNINSTALL_COMPONENTS.contains(&c))
                && ownership::shared_piece(object).is_none()
        }
    }
}

/// What still uses the old revision (sail-operator's `isRevisionReferenced`,
/// and what else the uninstall would strand): namespaces whose labels
/// select it (directly or through a tag), tags pointing at it, webhooks
/// that call a Service the uninstall deletes, running pods it injected or
/// whose proxy talks to such a Service, gateways still on it.
async fn in_use(client: &ClusterClient, target: &Target, doomed: &[Value]) -> Result<Vec<String>, ActivityError> {
    let from = target.from.0.as_str();
    let tags = tag_targets(client).await?;
    let resolve = |selected: &str| -> String {
        tags.iter().find(|(tag, _)| tag == selected).map_or_else(|| selected.to_string(), |(_, rev)| rev.clone())
    };
    let mut blockers = Vec::new();

    let namespaces: Api<Namespace> = Api::all(client.client.clone());
    let listed = namespaces.list(&ListParams::default()).await.map_err(|err| kube_error("list namespaces", err))?;
    let listed: Vec<Value> = listed.items.into_iter().map(to_json).collect();
    let unlabelled: BTreeSet<String> = listed
        .iter()
        .filter(|namespace| InjectionLabels::of(namespace) == InjectionLabels::default())
        .filter_map(|namespace| namespace.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let using: Vec<String> = listed
        .iter()
        .filter_map(|namespace| {
            let labels = InjectionLabels::of(namespace);
            let selected = match (&labels.istio_injection, &labels.istio_rev) {
                (Some(enabled), _) if enabled == "enabled" => "default".to_string(),
                (Some(_), _) | (None, None) => return None,
                (None, Some(revision)) => revision.clone(),
            };
            let name = namespace.pointer("/metadata/name").and_then(Value::as_str)?.to_string();
            (resolve(&selected) == from).then_some(name)
        })
        .collect();
    push(&mut blockers, "namespaces select it", &using);

    let tags_at: Vec<String> =
        tags.iter().filter(|(_, rev)| rev == from).map(|(tag, _)| format!("tag {tag}")).collect();
    push(&mut blockers, "revision tags point at it", &tags_at);

    let services: BTreeSet<&str> = doomed
        .iter()
        .filter(|o| o["kind"] == "Service")
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    let webhooks = calling_webhooks(client, doomed, &services).await?;
    push(&mut blockers, "webhooks call its istiod", &webhooks);

    let mut pods = Vec::new();
    let mut gateways = Vec::new();
    for pod in list_pods(&client.client, None).await? {
        if !pod.running() {
            continue;
        }
        let Some(injection) = injected_by(&pod) else {
            // Not injected, but its labels select the revision for its next start.
            let selects = pod.label("sidecar.istio.io/inject") != Some("false")
                && unlabelled.contains(pod.namespace())
                && pod.label("istio.io/rev").is_some_and(|selected| resolve(selected) == from);
            if selects {
                pods.push(format!("{}/{}", pod.namespace(), pod.name()));
            }
            continue;
        };
        let revision = injection.revision.as_deref().unwrap_or_default();
        let service = if revision == "default" { "istiod".to_string() } else { format!("istiod-{revision}") };
        if revision == from || services.contains(service.as_str()) {
            let name = format!("{}/{}", pod.namespace(), pod.name());
            if pod.labels_say_gateway() { gateways.push(name) } else { pods.push(name) }
        }
    }
    push(&mut blockers, "gateway pods run its proxy", &gateways);
    push(&mut blockers, "pods run its proxy (restart or replace them)", &pods);
    Ok(blockers)
}

/// Adds a blocker line: what, how many, the first few names.
fn push(blockers: &mut Vec<String>, what: &str, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let shown: Vec<&str> = names.iter().take(BLOCKERS_SHOWN_MAX).map(String::as_str).collect();
    let more = if names.len() > BLOCKERS_SHOWN_MAX {
        format!(" and {} more", names.len() - BLOCKERS_SHOWN_MAX)
    } else {
        String::new()
    };
    blockers.push(format!("{} {what} ({}{more})", names.len(), shown.join(", ")));
}

/// Every revision tag and the revision it points at.
async fn tag_targets(client: &ClusterClient) -> Result<Vec<(String, String)>, ActivityError> {
    let api: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client.client.clone());
    let listed = api
        .list(&ListParams::default().labels("istio.io/tag"))
        .await
        .map_err(|err| kube_error("list revision tags", err))?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(|webhook| {
            let labels = webhook.metadata.labels?;
            Some((labels.get("istio.io/tag")?.clone(), labels.get("istio.io/rev").cloned().unwrap_or_default()))
        })
        .collect())
}

/// Webhook configurations the uninstall keeps that call a Service it deletes.
async fn calling_webhooks(
    client: &ClusterClient,
    doomed: &[Value],
    services: &BTreeSet<&str>,
) -> Result<Vec<String>, ActivityError> {
    let mut found = Vec::new();
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let Some((resource, scope)) = client.preferred("admissionregistration.k8s.io", kind).await? else { continue };
        let listed = client
            .api_with(&resource, scope, None)
            .list(&ListParams::default())
            .await
            .map_err(|err| kube_error(&format!("list {kind}s"), err))?;
        for configuration in listed.items {
            let name = configuration.metadata.name.clone().unwrap_or_default();
            if doomed.iter().any(|o| {
                o["kind"] == kind && o.pointer("/metadata/name").and_then(Value::as_str) == Some(name.as_str())
            }) {
                continue;
            }
            let value = to_json(configuration);
            let calls = value.get("webhooks").and_then(Value::as_array).into_iter().flatten().any(|hook| {
                hook.pointer("/clientConfig/service/namespace").and_then(Value::as_str) == Some(ISTIO_NAMESPACE)
                    && hook
                        .pointer("/clientConfig/service/name")
                        .and_then(Value::as_str)
                        .is_some_and(|s| services.contains(s))
            });
            if calls {
                found.push(format!("{kind} {name}"));
            }
        }
    }
    Ok(found)
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
    let step =
        StepId::new(input.snapshot_step.as_str()).map_err(|err| ActivityError::fatal("invalid", err.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_istio_system_only_istioctls_selector_takes_an_object() {
        let object = |namespace: &str, labels: Value| json!({"kind": "EnvoyFilter", "metadata": {"name": "stats-filter-1.27", "namespace": namespace, "labels": labels}});
        let labelled = json!({"istio.io/rev": "1-27-0", "operator.istio.io/component": "Pilot"});
        assert!(selected(&object("istio-system", labelled.clone()), "1-27-0"));
        assert!(selected(&object("mesh-config", labelled), "1-27-0"));
        assert!(
            !selected(&object("mesh-config", json!({"istio.io/rev": "1-27-0"})), "1-27-0"),
            "no component: not istioctl's"
        );
        let cni = json!({"kind": "DaemonSet", "metadata": {"name": "istio-cni-node", "namespace": "istio-system",
            "labels": {"istio.io/rev": "default", "operator.istio.io/component": "Cni"}}});
        assert!(!selected(&cni, "default"), "never a shared piece, whatever istioctl labelled it");
    }
}
