//! Writing the new revision and the shared pieces the spec asks to
//! upgrade, and undoing it from the record: `record` reads every object
//! the upgrade will write before anything is written; `install` applies
//! the revision's objects labelled as `istioctl install` labels them; its
//! compensation deletes what did not exist and puts back what did, as the
//! record says. CRDs are applied before istiod and never deleted; the node
//! agents are upgraded in place only when asked, and put back on rollback.

use std::sync::Arc;
use std::time::Duration;

use canaryflow_engine::{ActivityContext, ActivityError, ActivityOutput, StepId};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::{Env, decode, manifests, output};
use crate::inputs::{
    InstallInput, InstallOutput, NodeAgentInput, ObjectRef, PriorState, RecordInput, RecordOutput, Target,
};
use crate::istio::ISTIO_NAMESPACE;
use crate::kube_ops::{self, ClusterClient, clean, describe};
use crate::manifests::apply_stage;
use crate::ownership;
use crate::spec::SharedChoice;

/// The annotation naming the workflow that installed an object.
pub const WORKFLOW_ANNOTATION: &str = "canaryflow.io/workflow";
/// Objects `record` reads at once.
const READS_AT_ONCE: usize = 8;

/// Reads, before anything is written, every object the upgrade will write.
pub(super) async fn record(
    env: Arc<Env>,
    context: ActivityContext,
    input: RecordInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let upgrade = manifests(&context)?;
    let mut objects: Vec<Value> = upgrade.control_plane.into_iter().chain(upgrade.gateways).collect();
    for (choice, carried) in
        [(input.shared.crds, upgrade.crds), (input.shared.cni, upgrade.cni), (input.shared.ztunnel, upgrade.ztunnel)]
    {
        if choice == SharedChoice::Upgrade {
            objects.extend(carried);
        }
    }
    // Owned futures: borrowing closures trip the compiler's higher-ranked
    // lifetime check once the activity future must be Send.
    let reads = objects.into_iter().map(|object| {
        let client = client.clone();
        async move { prior_state(&client, &object).await }
    });
    let objects: Vec<PriorState> = futures::stream::iter(reads).buffered(READS_AT_ONCE).try_collect().await?;
    output(&RecordOutput { objects })
}

/// How `object` is now: absent, or as it is (cleaned). A CRD is recorded
/// as present or absent only: it is never put back.
async fn prior_state(client: &ClusterClient, object: &Value) -> Result<PriorState, ActivityError> {
    let reference = ObjectRef::of(object);
    let live = client.get_like(object).await?;
    let existed = live.is_some();
    let before = live.filter(|_| reference.kind != "CustomResourceDefinition").map(|live| {
        let mut cleaned = clean(live);
        cleaned["apiVersion"] = json!(reference.api_version);
        cleaned["kind"] = json!(reference.kind);
        cleaned
    });
    Ok(PriorState { object: reference, before, existed })
}

/// The record `record_step` made, which every write and undo of this cluster acts on.
pub(super) fn the_record(context: &ActivityContext, record_step: &str) -> Result<RecordOutput, ActivityError> {
    let step = StepId::new(record_step).map_err(|err| ActivityError::fatal("invalid", err.to_string()))?;
    let recorded = context.dependency_outputs.get(&step).ok_or_else(|| {
        ActivityError::fatal("invalid", format!("step {step} recorded nothing: refusing to act without the record"))
    })?;
    decode(recorded)
}

/// `object` labelled as `istioctl install` labels what it applies
/// (`operator/pkg/install` `getOwnerLabels`), and annotated with the
/// workflow that applied it.
pub(super) fn labelled(mut object: Value, target: &Target, component: &str, context: &ActivityContext) -> Value {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        labels["istio.io/rev"] = json!(target.to.0);
        labels["operator.istio.io/component"] = json!(component);
        labels["operator.istio.io/managed"] = json!("Reconcile");
        labels["operator.istio.io/version"] = json!(target.to_version);
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        annotations[WORKFLOW_ANNOTATION] = json!(context.workflow_id.to_string());
    }
    object
}

/// Applies `objects` stage by stage (the manifests are in apply order),
/// each stage's objects at once: istiod's rollout starts a few round trips
/// after the install does, not after every object before it.
async fn apply_staged(client: &ClusterClient, objects: &[Value]) -> Result<Vec<String>, ActivityError> {
    let mut applied = Vec::new();
    for stage in objects.chunk_by(|a, b| apply_stage(a) == apply_stage(b)) {
        futures::future::try_join_all(stage.iter().map(|object| client.apply(object, true))).await?;
        applied.extend(stage.iter().map(describe));
    }
    Ok(applied)
}

/// What `applied` did by the record: created what did not exist, changed what did.
fn outcome(applied: Vec<String>, objects: &[Value], record: &RecordOutput) -> InstallOutput {
    let mut out = InstallOutput { applied, ..InstallOutput::default() };
    for object in objects {
        let reference = ObjectRef::of(object);
        match record.objects.iter().find(|prior| prior.object == reference) {
            Some(prior) if prior.existed => out.changed.push(reference),
            _ => out.created.push(reference),
        }
    }
    out
}

/// Server-side applies the new revision's own objects (not its gateways,
/// not shared pieces), labelled as istioctl labels them.
pub(super) async fn install(
    env: Arc<Env>,
    context: ActivityContext,
    input: InstallInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let record = the_record(&context, &input.record_step)?;
    let upgrade = manifests(&context)?;
    let objects: Vec<Value> =
        upgrade.control_plane.iter().map(|object| labelled(object.clone(), &input.target, "Pilot", &context)).collect();
    let applied = apply_staged(&client, &objects).await?;
    output(&outcome(applied, &objects, &record))
}

/// Undoes `install` from the record: what did not exist is deleted (if it
/// is still the one this workflow made), what existed is put back as it
/// was; webhooks first, so that nothing calls an istiod going away.
pub(super) async fn remove_installed(
    env: Arc<Env>,
    context: ActivityContext,
    input: InstallInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let record = the_record(&context, &input.record_step)?;
    let upgrade = manifests(&context)?;
    let mut done = Vec::new();
    for object in upgrade.control_plane.iter().rev() {
        let reference = ObjectRef::of(object);
        let prior = record.objects.iter().find(|prior| prior.object == reference);
        done.extend(undo_one(&client, &context, &input.target, &reference, prior).await?);
    }
    output(&json!({"undone": done}))
}

/// Puts one object back as the record has it; says what it did.
pub(super) async fn undo_one(
    client: &ClusterClient,
    context: &ActivityContext,
    target: &Target,
    reference: &ObjectRef,
    prior: Option<&PriorState>,
) -> Result<Option<String>, ActivityError> {
    match prior.and_then(|prior| prior.before.clone()) {
        Some(before) => {
            client.apply(&before, true).await?;
            Ok(Some(format!("restored {reference}")))
        }
        None if prior.is_some_and(|prior| prior.existed) => Ok(None), // a CRD: never put back
        None => {
            let probe = reference.probe();
            let Some(live) = client.get_like(&probe).await? else { return Ok(None) };
            let ours = live.pointer("/metadata/annotations/canaryflow.io~1workflow").and_then(Value::as_str)
                == Some(context.workflow_id.to_string().as_str())
                || live.pointer("/metadata/labels/istio.io~1rev").and_then(Value::as_str) == Some(target.to.0.as_str());
            if !ours {
                return Ok(None); // someone else's since: not this workflow's to delete
            }
            client.delete_like(&probe).await?;
            Ok(Some(format!("deleted {reference}")))
        }
    }
}

/// Applies the CRDs the manifests carry, before the new istiod starts:
/// labelled as istioctl labels the base (component `Base`, never pruned by
/// a revision's uninstall). Never undone: a newer CRD serves every
/// revision, and an older one could strand config stored in a version it
/// no longer serves.
pub(super) async fn upgrade_crds(
    env: Arc<Env>,
    context: ActivityContext,
    input: InstallInput,
) -> Result<ActivityOutput, ActivityError> {
    let client = env.clusters.get(&input.target.cluster).await?;
    let record = the_record(&context, &input.record_step)?;
    let upgrade = manifests(&context)?;
    let mut objects = Vec::new();
    for crd in &upgrade.crds {
        let live = client.get_like(crd).await?;
        objects.push(keeping_shared_labels(labelled(crd.clone(), &input.target, "Base", &context), live.as_ref()));
    }
    let applied = apply_staged(&client, &objects).await?;
    output(&outcome(applied, &objects, &record))
}

/// `applied` with the revision and component labels `live` carries, when it
/// carries them: a shared piece keeps whichever revision installed it (a
/// rollback does not put a CRD back, so it must not be left naming a
/// revision that is gone).
fn keeping_shared_labels(mut applied: Value, live: Option<&Value>) -> Value {
    for key in ["istio.io/rev", "operator.istio.io/component"] {
        let pointer = format!("/metadata/labels/{}", key.replace('/', "~1"));
        if let Some(kept) = live.and_then(|live| live.pointer(&pointer)).cloned() {
            applied["metadata"]["labels"][key] = kept;
        }
    }
    applied
}

/// The objects of node agent `agent` the manifests carry.
fn agent_objects(context: &ActivityContext, agent: &str) -> Result<Vec<Value>, ActivityError> {
    let upgrade = manifests(context)?;
    match agent {
        "cni" => Ok(upgrade.cni),
        "ztunnel" => Ok(upgrade.ztunnel),
        other => Err(ActivityError::fatal("invalid", format!("no node agent {other:?}"))),
    }
}

/// Upgrades a shared node agent in place, as `spec.shared` asks: its
/// objects applied over the live ones, keeping the revision and component
/// labels they carry (relabelled for the new revision, a later `istioctl
/// uninstall --revision` of it would take the agent every pod depends on),
/// then its rollout waited for.
pub(super) async fn upgrade_node_agent(
    env: Arc<Env>,
    context: ActivityContext,
    input: NodeAgentInput,
) -> Result<ActivityOutput, ActivityError> {
    let install = &input.install;
    let client = env.clusters.get(&install.target.cluster).await?;
    let record = the_record(&context, &install.record_step)?;
    let mut objects = Vec::new();
    for object in agent_objects(&context, &input.agent)? {
        let reference = ObjectRef::of(&object);
        let prior = record.objects.iter().find(|prior| prior.object == reference).and_then(|p| p.before.as_ref());
        let role = ownership::classify(&object, &install.target.to.0).unwrap_or(ownership::Role::Revision);
        let mut applied =
            labelled(object, &install.target, ownership::component_of(role, &reference.probe()), &context);
        for key in ["istio.io/rev", "operator.istio.io/component"] {
            let pointer = format!("/metadata/labels/{}", key.replace('/', "~1"));
            if let Some(kept) = prior.and_then(|before| before.pointer(&pointer)).cloned() {
                applied["metadata"]["labels"][key] = kept;
            }
        }
        objects.push(applied);
    }
    let applied = apply_staged(&client, &objects).await?;
    wait_daemonsets(&env, &client, &objects, install.timeout_ms).await?;
    output(&outcome(applied, &objects, &record))
}

/// Puts a node agent back as the record has it, and waits until it runs.
pub(super) async fn restore_node_agent(
    env: Arc<Env>,
    context: ActivityContext,
    input: NodeAgentInput,
) -> Result<ActivityOutput, ActivityError> {
    let install = &input.install;
    let client = env.clusters.get(&install.target.cluster).await?;
    let record = the_record(&context, &install.record_step)?;
    let objects = agent_objects(&context, &input.agent)?;
    let mut done = Vec::new();
    for object in objects.iter().rev() {
        let reference = ObjectRef::of(object);
        let prior = record.objects.iter().find(|prior| prior.object == reference);
        done.extend(undo_one(&client, &context, &install.target, &reference, prior).await?);
    }
    let restored: Vec<Value> = objects
        .iter()
        .filter(|object| record.objects.iter().any(|prior| prior.object == ObjectRef::of(object) && prior.existed))
        .cloned()
        .collect();
    wait_daemonsets(&env, &client, &restored, install.timeout_ms).await?;
    output(&json!({"undone": done}))
}

/// Waits until the DaemonSets among `objects` have rolled out.
async fn wait_daemonsets(
    env: &Env,
    client: &ClusterClient,
    objects: &[Value],
    timeout_ms: u64,
) -> Result<(), ActivityError> {
    let names: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] == "DaemonSet")
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let rollouts =
        kube_ops::Rollouts { kind: "DaemonSet", namespace: ISTIO_NAMESPACE, names: &names, gone_is_done: false };
    kube_ops::wait_rollouts(&client.client, rollouts, Duration::from_millis(timeout_ms), env.settings.poll).await
}
