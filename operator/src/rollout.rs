//! Rolling restarts, leader last.
//!
//! The StatefulSet uses `updateStrategy: OnDelete`, and the operator replaces the pods itself.
//! Kubernetes' own `RollingUpdate` goes from the highest ordinal down whatever each pod's role,
//! so the leader may be replaced first, and leadership can move once per pod (the newly elected
//! leader being the next pod to go): every move is a pause in acknowledgements. Here pods are
//! replaced one at a time and only while the cluster is whole (every pod ready, every member a
//! healthy, caught-up voter, no membership change in flight): followers first, highest ordinal
//! first, and the leader's pod last, after leadership was handed to a voter that already runs
//! the new template. So a roll moves leadership exactly once.
//!
//! [`plan`] is pure: what the operator observed in, one step out. Nothing is remembered between
//! reconciles, so an operator restarted mid-roll re-derives the same step. Pods are *evicted*
//! rather than deleted, so the PodDisruptionBudget keeps the last word.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, EvictParams, ListParams};

use crate::resources::names::ClusterNames;
use crate::scaling::{Membership, NodeId};
use crate::{Error, Result};

/// The label the StatefulSet controller puts on each pod: the revision it was created from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// Entries a voter may trail the commit index by and still count as caught up. A restarted pod
/// catches up within moments; a roll under a steady produce load must not wait for lag 0.
pub const CAUGHT_UP_LAG: u64 = 1_000;

/// One pod of the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Its ordinal, which is its Raft node id.
    pub node: NodeId,
    /// `metadata.name`.
    pub name: String,
    /// Its `controller-revision-hash` label: the StatefulSet revision it was created from.
    pub revision: Option<String>,
    /// Its `Ready` condition.
    pub ready: bool,
    /// It has a deletion timestamp.
    pub terminating: bool,
}

/// What [`plan`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed<'a> {
    /// `status.updateRevision` of the StatefulSet, once its controller has seen the current
    /// spec (`status.observedGeneration` = `metadata.generation`); `None` before that.
    pub update_revision: Option<&'a str>,
    /// `spec.replicas` of the StatefulSet.
    pub replicas: u32,
    /// Its pods.
    pub pods: &'a [PodView],
    /// The Raft membership as the leader reports it.
    pub membership: &'a Membership,
}

/// The next step of a roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the StatefulSet's current template (or there is nothing to compare yet).
    Done,
    /// Evict this pod; its StatefulSet recreates it from the new template.
    Evict {
        pod: String,
        node: NodeId,
        /// Pods already on the new template.
        updated: usize,
        /// Pods in all.
        total: usize,
    },
    /// The leader's pod is the last one left: move leadership to `to` first.
    TransferLeader { from: NodeId, to: NodeId },
    /// A roll is under way but the cluster is not whole: wait.
    Wait(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Done => write!(f, "every pod runs the current template"),
            Step::Evict {
                pod,
                updated,
                total,
                ..
            } => write!(
                f,
                "replacing pod {pod} to run the new pod template ({updated} of {total} updated)"
            ),
            Step::TransferLeader { from, to } => write!(
                f,
                "node {from} leads and is the last pod to replace; moving leadership to node {to} \
                 (already updated) first"
            ),
            Step::Wait(why) => write!(f, "rolling update: {why}"),
        }
    }
}

/// Decides the next step of a roll. See the module documentation.
pub fn plan(o: &Observed<'_>) -> Step {
    let Some(revision) = o.update_revision else {
        return Step::Done;
    };
    let is_outdated = |p: &&PodView| p.revision.as_deref() != Some(revision);
    let outdated: Vec<&PodView> = o.pods.iter().filter(is_outdated).collect();
    if outdated.is_empty() {
        return Step::Done;
    }
    let total = o.pods.len();
    let updated = total - outdated.len();
    if let Some(pod) = o.pods.iter().find(|p| p.terminating) {
        return Step::Wait(format!("waiting for pod {} to terminate", pod.name));
    }
    if total < o.replicas as usize {
        return Step::Wait(format!(
            "waiting for the StatefulSet to recreate its pods ({total} of {})",
            o.replicas
        ));
    }
    if let Some(pod) = o.pods.iter().find(|p| !p.ready) {
        return Step::Wait(format!("waiting for pod {} to be ready", pod.name));
    }
    let view = match o.membership {
        Membership::Led(view) => view,
        Membership::Uninitialized => {
            return Step::Wait("waiting for the cluster to be initialized".to_owned());
        }
        Membership::Unknown(reason) => {
            return Step::Wait(format!("waiting for a leader: {reason}"));
        }
    };
    if view.membership_changing {
        return Step::Wait("waiting for the membership change in flight to commit".to_owned());
    }
    for pod in o.pods {
        match view.members.iter().find(|m| m.id == pod.node) {
            None => {
                return Step::Wait(format!("waiting for node {} to rejoin", pod.node));
            }
            Some(m) if !m.role.votes() => {
                return Step::Wait(format!("waiting for node {} to become a voter", m.id));
            }
            Some(m) if !m.healthy => {
                return Step::Wait(format!("waiting for node {} to be healthy", m.id));
            }
            Some(m) if m.lag > CAUGHT_UP_LAG => {
                return Step::Wait(format!(
                    "waiting for node {} to catch up ({} entries behind)",
                    m.id, m.lag
                ));
            }
            Some(_) => {}
        }
    }
    // Followers first, highest ordinal first (the order Kubernetes itself would use).
    if let Some(pod) = outdated
        .iter()
        .filter(|p| p.node != view.leader)
        .max_by_key(|p| p.node)
    {
        return Step::Evict {
            pod: pod.name.clone(),
            node: pod.node,
            updated,
            total,
        };
    }
    // Only the leader's pod is left: hand leadership to the most caught-up updated voter.
    let successor = o
        .pods
        .iter()
        .filter(|p| p.node != view.leader && !is_outdated(p))
        .filter_map(|p| view.members.iter().find(|m| m.id == p.node))
        .filter(|m| m.role.votes() && m.healthy)
        .min_by_key(|m| (m.lag, m.id));
    match successor {
        Some(to) => Step::TransferLeader {
            from: view.leader,
            to: to.id,
        },
        // A single-node cluster: nobody to hand over to, the pod just restarts.
        None if total == 1 => Step::Evict {
            pod: outdated[0].name.clone(),
            node: outdated[0].node,
            updated,
            total,
        },
        None => Step::Wait(format!(
            "node {} leads and no updated voter can take over yet",
            view.leader
        )),
    }
}

/// `status.updateRevision` of `sts`, once its controller has seen the current spec: before
/// that it names the previous template and every pod would look up to date.
pub fn update_revision(sts: &StatefulSet) -> Option<&str> {
    let status = sts.status.as_ref()?;
    let seen = status.observed_generation?;
    if Some(seen) < sts.metadata.generation {
        return None;
    }
    status.update_revision.as_deref()
}

/// No roll is under way, by the StatefulSet's own status: every pod it has runs `updateRevision`
/// (or its controller has not seen the current spec yet). Saves listing the pods on every
/// reconcile of a steady cluster.
pub fn settled(sts: &StatefulSet) -> bool {
    let Some(status) = sts.status.as_ref() else {
        return true;
    };
    update_revision(sts).is_none() || status.updated_replicas.unwrap_or(0) >= status.replicas
}

/// The StatefulSet's pods (by its selector), with their ordinals parsed from their names.
pub async fn observe_pods(pods: &Api<Pod>, names: &ClusterNames) -> Result<Vec<PodView>> {
    let listed = pods
        .list(&ListParams::default().labels(&names.selector_string()))
        .await
        .map_err(|e| Error::kube("listing the cluster's pods", e))?;
    let prefix = format!("{}-", names.statefulset());
    Ok(listed
        .items
        .iter()
        .filter_map(|pod| {
            let name = pod.name_any();
            let node = name.strip_prefix(&prefix)?.parse::<NodeId>().ok()?;
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Some(PodView {
                node,
                revision: pod.labels().get(REVISION_LABEL).cloned(),
                ready,
                terminating: pod.metadata.deletion_timestamp.is_some(),
                name,
            })
        })
        .collect())
}

/// Evicts `pod` through the Eviction API, so the PodDisruptionBudget applies. `Ok(false)` when
/// the budget refused (HTTP 429): not an error, the next reconcile tries again.
pub async fn evict(pods: &Api<Pod>, pod: &str) -> Result<bool> {
    match pods.evict(pod, &EvictParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 429 => Ok(false),
        Err(e) => Err(Error::kube(format!("evicting pod {pod}"), e)),
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
