//! The workload controller: Deployments, StatefulSets and DaemonSets roll
//! out when their pod template changes, and report it in their status as a
//! real controller does.
//!
//! A rollout waits the cluster's rollout delay, then replaces every pod at
//! once (the simulator has no ReplicaSets). New pods go through the same
//! admission as pods created over the API, so they are injected by whatever
//! revision the webhooks pick at that moment; if admission fails (an
//! injector webhook whose istiod is down), the rollout reports
//! `ReplicaFailure` and tries again. A pod with a proxy is ready only while
//! the istiod Service its proxy talks to has a ready pod behind it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::admission;
use super::cluster::{Cluster, pod_status, short_suffix};
use super::object;
use super::resources::{self, ResourceType};
use super::state::{Rollout, State, WorkloadKey, pod_ready};

/// Nodes a DaemonSet runs on.
pub const NODES: [&str; 2] = ["sim-node-0", "sim-node-1"];
/// Passes over dirty workloads in one wake-up before yielding.
const PASSES_MAX: usize = 8;
/// How long a Deployment may progress before `ProgressDeadlineExceeded`, when it does not say.
const PROGRESS_DEADLINE_SECONDS_DEFAULT: u64 = 600;

/// Runs the controller of `cluster` until the task is dropped.
pub async fn run(cluster: Arc<Cluster>) {
    loop {
        let next_due = {
            let mut state = cluster.lock();
            reconcile_pending(&cluster, &mut state, Instant::now())
        };
        match next_due {
            Some(at) => {
                tokio::select! {
                    () = cluster.wake.notified() => {}
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                }
            }
            None => cluster.wake.notified().await,
        }
    }
}

/// Reconciles every dirty or due workload; returns when to look again.
pub fn reconcile_pending(cluster: &Cluster, state: &mut State, now: Instant) -> Option<Instant> {
    let later = state.controller.due.split_off(&now);
    let due = std::mem::replace(&mut state.controller.due, later);
    for keys in due.into_values() {
        state.controller.dirty.extend(keys);
    }
    for _ in 0..PASSES_MAX {
        let dirty = std::mem::take(&mut state.controller.dirty);
        if dirty.is_empty() {
            break;
        }
        for key in dirty {
            reconcile(cluster, state, &key, now);
        }
    }
    if !state.controller.dirty.is_empty() {
        cluster.wake.notify_one();
    }
    state.controller.due.keys().next().copied()
}

fn schedule(state: &mut State, key: &WorkloadKey, at: Instant) {
    state.controller.due.entry(at).or_default().insert(key.clone());
}

/// One look at a workload. A look is a fixed point: its own writes (its
/// pods, its status) mark it dirty again, but a second look would change
/// nothing, so that mark is dropped. A mark from elsewhere (another
/// workload's look, every workload marked) stays.
fn reconcile(cluster: &Cluster, state: &mut State, key: &WorkloadKey, now: Instant) {
    let marked_before = state.controller.dirty.contains(key);
    let all_marked_before = state.controller.all_marked_count;
    reconcile_once(cluster, state, key, now);
    if !marked_before && state.controller.all_marked_count == all_marked_before {
        state.controller.dirty.remove(key);
    }
}

fn reconcile_once(cluster: &Cluster, state: &mut State, key: &WorkloadKey, now: Instant) {
    let (plural, namespace, name) = key;
    let resource = resources::builtin("apps", "v1", plural);
    let Some(workload) = state.get_shared("apps", plural, namespace, name).cloned() else {
        state.controller.rollouts.remove(key);
        state.controller.template_hashes.remove(key);
        return;
    };
    let hash = cached_template_hash(state, key, &workload);
    let replicas = desired_replicas(&workload, plural);
    let generation = workload.pointer("/metadata/generation").and_then(Value::as_u64).unwrap_or(1);
    let observed = workload.pointer("/status/observedGeneration").and_then(Value::as_u64);
    let rolling_generation = state.controller.rollouts.get(key).map(|rollout| rollout.generation);
    // A new template starts a rollout, also one that replaces a rollout in progress.
    if (observed != Some(generation) && rolling_generation.is_none())
        || rolling_generation.is_some_and(|g| g != generation)
    {
        let rollout = Rollout { started: now, due: now + cluster.rollout_delay, generation };
        state.controller.rollouts.insert(key.clone(), rollout);
        schedule(state, key, rollout.due);
    }
    let stuck = cluster.faults.rollout_stuck(namespace, name);
    let mut failure = None;
    let rolling = state.controller.rollouts.get(key).copied();
    match rolling {
        Some(rollout) if now >= rollout.due && !stuck => {
            match replace_pods(cluster, state, &workload, resource, &hash, replicas) {
                Ok(()) => {
                    state.controller.rollouts.remove(key);
                }
                Err(why) => {
                    failure = Some(why);
                    schedule(state, key, now + cluster.rollout_delay.max(Duration::from_millis(100)));
                }
            }
        }
        Some(rollout) if stuck => {
            let deadline = rollout.started + Duration::from_secs(progress_deadline(&workload));
            if now < deadline {
                schedule(state, key, deadline);
            }
        }
        Some(_) => {}
        None => {
            if let Err(why) = top_up(cluster, state, &workload, resource, &hash, replicas) {
                failure = Some(why);
                schedule(state, key, now + cluster.rollout_delay.max(Duration::from_millis(100)));
            }
        }
    }
    let crash = cluster.faults.crash_looping(namespace, name);
    update_pod_readiness(cluster, state, key, crash);
    let rollout = state.controller.rollouts.get(key).copied();
    write_status(cluster, state, resource, &workload, &hash, replicas, generation, rollout, failure, now);
}

fn desired_replicas(workload: &Value, plural: &str) -> usize {
    if plural == "daemonsets" {
        return NODES.len();
    }
    workload.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1) as usize
}

fn progress_deadline(workload: &Value) -> u64 {
    workload
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(PROGRESS_DEADLINE_SECONDS_DEFAULT)
}

/// The template hash of `workload`, computed once per generation: the
/// template changes only with the generation, and hashing it means
/// serializing it.
fn cached_template_hash(state: &mut State, key: &WorkloadKey, workload: &Value) -> String {
    let uid = workload.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let generation = workload.pointer("/metadata/generation").and_then(Value::as_u64).unwrap_or(1);
    if let Some((cached_uid, cached_generation, hash)) = state.controller.template_hashes.get(key)
        && cached_uid == uid
        && *cached_generation == generation
    {
        return hash.clone();
    }
    let hash = template_hash(workload.pointer("/spec/template").unwrap_or(&Value::Null));
    state.controller.template_hashes.insert(key.clone(), (uid.to_string(), generation, hash.clone()));
    hash
}

/// A stable short hash of a pod template (the `pod-template-hash` label).
#[must_use]
pub fn template_hash(template: &Value) -> String {
    // FNV-1a over the template's compact JSON, hashed as it is written.
    struct Fnv1a(u64);
    impl std::io::Write for Fnv1a {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            for byte in bytes {
                self.0 ^= u64::from(*byte);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut fnv = Fnv1a(0xcbf2_9ce4_8422_2325);
    serde_json::to_writer(&mut fnv, template).expect("a JSON value writes, and hashing cannot fail");
    let hash = fnv.0;
    let mut out = short_suffix(hash);
    out.push_str(&short_suffix(hash >> 20));
    out.truncate(10);
    out
}

/// A pod of a workload, as the controller needs to know it (no copy of the pod).
struct OwnedPod {
    name: String,
    hash: Option<String>,
    ready: bool,
}

/// The key `workload` is known by (plural, namespace, name).
fn key_of(workload: &Value, plural: &'static str) -> WorkloadKey {
    (plural, object::namespace(workload).to_string(), object::name(workload).to_string())
}

fn owned_pods(state: &State, workload: &Value, plural: &'static str) -> Vec<OwnedPod> {
    state
        .pods_of(&key_of(workload, plural))
        .map(|pod| OwnedPod {
            name: object::name(pod).to_string(),
            hash: object::label(pod, hash_label(plural)).map(str::to_string),
            ready: pod_ready(pod),
        })
        .collect()
}

fn hash_label(plural: &str) -> &'static str {
    if plural == "deployments" { "pod-template-hash" } else { "controller-revision-hash" }
}

/// The rollout: new pods for the new template, then the old ones go.
fn replace_pods(
    cluster: &Cluster,
    state: &mut State,
    workload: &Value,
    resource: &ResourceType,
    hash: &str,
    replicas: usize,
) -> Result<(), String> {
    let pods = owned_pods(state, workload, resource.plural);
    let namespace = object::namespace(workload);
    let current: Vec<&OwnedPod> = pods.iter().filter(|pod| pod.hash.as_deref() == Some(hash)).collect();
    let mut made = Vec::new();
    for ordinal in current.len()..replicas {
        made.push(new_pod(cluster, state, workload, resource, hash, ordinal)?);
    }
    // Old pods go, and current ones beyond the replicas wanted (scaled down
    // during the rollout), as `top_up` would on the next look.
    for pod in pods.iter().filter(|pod| pod.hash.as_deref() != Some(hash)).chain(current.into_iter().skip(replicas)) {
        remove_pod(cluster, state, namespace, &pod.name);
    }
    for pod in made {
        store_pod(cluster, state, pod);
    }
    Ok(())
}

fn pod_type() -> &'static ResourceType {
    resources::builtin("", "v1", "pods")
}

/// Stores a pod the controller made or changed.
fn store_pod(cluster: &Cluster, state: &mut State, pod: Value) {
    let key = (object::namespace(&pod).to_string(), object::name(&pod).to_string());
    state.commit(cluster.events(), pod_type(), Some(pod), key);
}

fn remove_pod(cluster: &Cluster, state: &mut State, namespace: &str, name: &str) {
    state.commit(cluster.events(), pod_type(), None, (namespace.to_string(), name.to_string()));
}

/// Outside a rollout: as many current pods as wanted, no more.
fn top_up(
    cluster: &Cluster,
    state: &mut State,
    workload: &Value,
    resource: &ResourceType,
    hash: &str,
    replicas: usize,
) -> Result<(), String> {
    let pods = owned_pods(state, workload, resource.plural);
    let namespace = object::namespace(workload);
    let current: Vec<&OwnedPod> = pods.iter().filter(|pod| pod.hash.as_deref() == Some(hash)).collect();
    for extra in current.iter().skip(replicas) {
        remove_pod(cluster, state, namespace, &extra.name);
    }
    for ordinal in current.len()..replicas {
        let pod = new_pod(cluster, state, workload, resource, hash, ordinal)?;
        store_pod(cluster, state, pod);
    }
    Ok(())
}

/// A pod from the workload's template, admitted as a new pod is.
fn new_pod(
    cluster: &Cluster,
    state: &mut State,
    workload: &Value,
    resource: &ResourceType,
    hash: &str,
    ordinal: usize,
) -> Result<Value, String> {
    let (namespace, name) = (object::namespace(workload), object::name(workload));
    let template = workload.pointer("/spec/template").cloned().unwrap_or(Value::Null);
    let number = state.next_number();
    let pod_name = match resource.plural {
        "statefulsets" => format!("{name}-{ordinal}"),
        "daemonsets" => format!("{name}-{}", short_suffix(number)),
        _ => format!("{name}-{hash}-{}", short_suffix(number)),
    };
    let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    labels[hash_label(resource.plural)] = json!(hash);
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["nodeName"] = json!(NODES[ordinal % NODES.len()]);
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": resource.kind,
                "name": name,
                "uid": workload.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": spec
    });
    pod = admission::admit(state, cluster.programs.as_ref(), pod_type(), pod, "CREATE")
        .map_err(|err| format!("Error creating: {}", err.message))?;
    let uid = state.new_uid();
    let created = object::rfc3339(cluster.now_seconds());
    let metadata = object::metadata_mut(&mut pod);
    metadata.insert("uid".into(), json!(uid));
    metadata.insert("creationTimestamp".into(), json!(created));
    let ready = state.readiness_holds(&pod) && !cluster.faults.crash_looping(namespace, name);
    pod["status"] = pod_status(state.index, number, ready, &created, &pod);
    Ok(pod)
}

fn update_pod_readiness(cluster: &Cluster, state: &mut State, key: &WorkloadKey, crash: bool) {
    // Only pods whose readiness changes are copied.
    let changing: Vec<(Value, bool)> = state
        .pods_of(key)
        .filter_map(|pod| {
            let ready = !crash && state.readiness_holds(pod);
            let crashing = pod.pointer("/status/containerStatuses/0/state/waiting/reason").and_then(Value::as_str)
                == Some("CrashLoopBackOff");
            (ready != pod_ready(pod) || crash != crashing).then(|| (pod.clone(), ready))
        })
        .collect();
    for (mut updated, ready) in changing {
        let mut status = updated.get_mut("status").map(Value::take).unwrap_or_else(|| json!({}));
        set_ready(&mut status, ready);
        if crash && let Some(first) = status.pointer_mut("/containerStatuses/0") {
            first["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}});
            first["restartCount"] = json!(5);
            first["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        }
        updated["status"] = status;
        store_pod(cluster, state, updated);
    }
}

/// Sets the Ready conditions and every container's `ready`.
fn set_ready(status: &mut Value, ready: bool) {
    let flag = if ready { "True" } else { "False" };
    for condition in status.get_mut("conditions").and_then(Value::as_array_mut).into_iter().flatten() {
        if condition["type"] == "Ready" || condition["type"] == "ContainersReady" {
            condition["status"] = json!(flag);
        }
    }
    for container in status.get_mut("containerStatuses").and_then(Value::as_array_mut).into_iter().flatten() {
        container["ready"] = json!(ready);
        if ready {
            container["state"] = json!({"running": {"startedAt": container.pointer("/state/running/startedAt").cloned().unwrap_or(Value::Null)}});
        }
    }
}

/// Reconciles until nothing is dirty or due, as if every rollout delay had
/// passed: for seeding a cluster before it serves.
pub fn settle_now(cluster: &Cluster, state: &mut State) {
    state.mark_all_workloads();
    let base = Instant::now();
    for round in 1..=20u32 {
        let pretend = base + (cluster.rollout_delay + Duration::from_secs(1)) * round;
        reconcile_pending(cluster, state, pretend);
        if state.controller.dirty.is_empty() && state.controller.due.is_empty() {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "one status, computed from all of these")]
fn write_status(
    cluster: &Cluster,
    state: &mut State,
    resource: &ResourceType,
    workload: &Value,
    hash: &str,
    replicas: usize,
    generation: u64,
    rollout: Option<Rollout>,
    failure: Option<String>,
    now: Instant,
) {
    let pods = owned_pods(state, workload, resource.plural);
    let updated = pods.iter().filter(|pod| pod.hash.as_deref() == Some(hash)).count();
    let ready = pods.iter().filter(|pod| pod.ready).count();
    let exceeded = rollout.is_some_and(|r| now >= r.started + Duration::from_secs(progress_deadline(workload)));
    let status = match resource.plural {
        "daemonsets" => json!({
            "observedGeneration": generation,
            "desiredNumberScheduled": replicas,
            "currentNumberScheduled": pods.len(),
            "updatedNumberScheduled": updated,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberMisscheduled": 0,
        }),
        "statefulsets" => json!({
            "observedGeneration": generation,
            "replicas": pods.len(),
            "currentReplicas": updated,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentRevision": format!("{}-{hash}", object::name(workload)),
            "updateRevision": format!("{}-{hash}", object::name(workload)),
        }),
        _ => deployment_status(
            workload,
            hash,
            replicas,
            generation,
            pods.len(),
            updated,
            ready,
            rollout.is_some(),
            exceeded,
            failure.as_deref(),
        ),
    };
    if workload.get("status") == Some(&status) {
        return;
    }
    let mut changed = workload.clone();
    changed["status"] = status;
    let key = (object::namespace(workload).to_string(), object::name(workload).to_string());
    state.commit(cluster.events(), resource, Some(changed), key);
}

#[allow(clippy::too_many_arguments, reason = "the fields of a Deployment's status")]
fn deployment_status(
    workload: &Value,
    hash: &str,
    replicas: usize,
    generation: u64,
    existing: usize,
    updated: usize,
    ready: usize,
    rolling: bool,
    deadline_exceeded: bool,
    failure: Option<&str>,
) -> Value {
    let name = object::name(workload);
    let available = ready >= replicas;
    let previous = |kind: &str| {
        workload
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|conditions| conditions.iter().find(|c| c["type"] == kind))
            .cloned()
    };
    let condition = |kind: &str, status: &str, reason: &str, message: String| {
        // Keep the transition time while the status stays the same.
        let since = previous(kind).filter(|c| c["status"] == status).and_then(|c| c.get("lastTransitionTime").cloned());
        let now = json!(object::rfc3339(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        ));
        json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": since.unwrap_or(now)})
    };
    let mut conditions = vec![if available {
        condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    }];
    conditions.push(if deadline_exceeded {
        condition(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{name}-{hash}\" has timed out progressing."),
        )
    } else if rolling || updated < replicas {
        condition("Progressing", "True", "ReplicaSetUpdated", format!("ReplicaSet \"{name}-{hash}\" is progressing."))
    } else {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{name}-{hash}\" has successfully progressed."),
        )
    });
    if let Some(failure) = failure {
        conditions.push(condition("ReplicaFailure", "True", "FailedCreate", failure.to_string()));
    }
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": existing,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": conditions,
    });
    if ready < replicas {
        status["unavailableReplicas"] = json!(replicas - ready);
    }
    status
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::fixtures;
    use crate::kube::cluster::{PatchType, WriteOptions};

    /// One look at a workload leaves nothing for a second look to do, also
    /// when a rollout is scaled down as it starts: the look drops its own
    /// mark, and a second look writes nothing.
    #[test]
    fn one_look_at_a_workload_is_a_fixed_point() {
        let options = WriteOptions { manager: "test".into(), ..WriteOptions::default() };
        let cluster = fixtures::shop("fixed", &options);
        let deployments = resources::builtin("apps", "v1", "deployments");
        let key: WorkloadKey = ("deployments", "shop".into(), "web".into());
        let pods_of = |state: &State| {
            let mut names: Vec<String> =
                state.in_namespace("", "pods", "shop").map(|p| object::name(p).to_string()).collect();
            names.sort();
            names
        };
        cluster.create(deployments, "shop", fixtures::web(3, "v1"), &options).expect("create");
        for (replicas, version) in [(3, "v1"), (1, "v2"), (2, "v2")] {
            if version != "v1" || replicas != 3 {
                cluster
                    .replace(deployments, "shop", "web", fixtures::web(replicas, version), &options)
                    .expect("replace");
            }
            let mut state = cluster.lock();
            reconcile_pending(&cluster, &mut state, Instant::now());
            assert!(state.controller.dirty.is_empty(), "{version} x{replicas}: a look leaves no mark of its own");
            assert_eq!(pods_of(&state).len(), replicas as usize, "{version} x{replicas}: the replicas wanted, at once");
            let (version_before, pods_before) = (state.resource_version(), pods_of(&state));
            reconcile(&cluster, &mut state, &key, Instant::now());
            assert_eq!(state.resource_version(), version_before, "{version} x{replicas}: a second look writes nothing");
            assert_eq!(pods_of(&state), pods_before);
        }
    }

    /// A workload's pods are those whose controller it is, as pods are
    /// written: a pod orphaned by a patch is replaced and left alone, and
    /// a deleted one is replaced.
    #[test]
    fn a_workload_owns_the_pods_that_name_it_as_they_change() {
        let options = WriteOptions { manager: "test".into(), ..WriteOptions::default() };
        let cluster = fixtures::shop("owners", &options);
        let deployments = resources::builtin("apps", "v1", "deployments");
        let pods = resources::builtin("", "v1", "pods");
        cluster.create(deployments, "shop", fixtures::web(2, "v1"), &options).expect("create");
        let key: WorkloadKey = ("deployments", "shop".into(), "web".into());
        let settle = || {
            let mut state = cluster.lock();
            reconcile_pending(&cluster, &mut state, Instant::now());
            let mut owned: Vec<String> = state.pods_of(&key).map(|pod| object::name(pod).to_string()).collect();
            owned.sort();
            let all: Vec<String> =
                state.in_namespace("", "pods", "shop").map(|pod| object::name(pod).to_string()).collect();
            (owned, all)
        };
        let (owned, _) = settle();
        assert_eq!(owned.len(), 2);
        let orphan = owned[0].clone();
        let unowned = json!({"metadata": {"ownerReferences": null}});
        cluster.patch(pods, "shop", &orphan, PatchType::Merge, &unowned, &options).expect("orphan");
        let (owned, all) = settle();
        assert_eq!(owned.len(), 2, "the orphan is replaced: {owned:?}");
        assert!(!owned.contains(&orphan) && all.contains(&orphan), "the orphan stays, owned by no one");
        let deleted = owned[0].clone();
        cluster.delete(pods, "shop", &deleted, false).expect("delete");
        let (owned, all) = settle();
        assert_eq!(owned.len(), 2, "the deleted pod is replaced: {owned:?}");
        assert!(!owned.contains(&deleted) && !all.contains(&deleted));
        assert_eq!(all.len(), 3, "two owned and the orphan: {all:?}");
    }
}
