//! What an earlier upgrade recorded of the revision it installed: a later
//! upgrade that removes that revision acts on the record (the objects its
//! install created), beside the charts' names and istioctl's labels.

use canaryflow_engine::{Event, RecordedEvent, StepAction};

use crate::inputs::{InstallInput, InstallOutput, ObjectRef};
use crate::plan::activity;
use crate::spec::{ClusterRef, RevisionName};

/// The objects the install steps of `history` created for revision
/// `revision` on `cluster` (matched by kubeconfig context and file).
#[must_use]
pub fn installed_objects(history: &[RecordedEvent], cluster: &ClusterRef, revision: &RevisionName) -> Vec<ObjectRef> {
    let mut install_steps = Vec::new();
    for recorded in history {
        let steps = match &recorded.event {
            Event::WorkflowStarted(started) => &started.plan.steps,
            Event::StepsAdded(added) => &added.steps,
            _ => continue,
        };
        for step in steps {
            let StepAction::Activity { name, input } = &step.action else { continue };
            if name != activity::INSTALL {
                continue;
            }
            let Ok(input) = input.decode::<InstallInput>() else { continue };
            let same_cluster = input.target.cluster.context == cluster.context
                && input.target.cluster.kubeconfig == cluster.kubeconfig;
            if same_cluster && input.target.to == *revision {
                install_steps.push(step.id.clone());
            }
        }
    }
    let mut created: Vec<ObjectRef> = history
        .iter()
        .filter_map(|recorded| match &recorded.event {
            Event::StepSucceeded(done) if install_steps.contains(&done.step) => {
                done.output.decode::<InstallOutput>().ok()
            }
            _ => None,
        })
        .flat_map(|output| output.created)
        .collect();
    created.sort();
    created.dedup();
    created
}
