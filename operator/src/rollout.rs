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

use crate::node_id::NodeId;
use crate::scaling::Membership;

/// The label the StatefulSet controller puts on each pod: the revision it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::{LeaderView, MemberView, Role};

    const NEW: &str = "demo-new";
    const OLD: &str = "demo-old";

    fn pod(node: NodeId, revision: &str) -> PodView {
        PodView {
            node,
            name: format!("demo-{node}"),
            revision: Some(revision.to_owned()),
            ready: true,
            terminating: false,
        }
    }

    /// Voters `0..n`, `leader` leading, all healthy and caught up.
    fn led(leader: NodeId, n: NodeId) -> Membership {
        Membership::Led(LeaderView {
            leader,
            members: (0..n)
                .map(|id| MemberView {
                    id,
                    role: if id == leader {
                        Role::Leader
                    } else {
                        Role::Voter
                    },
                    healthy: true,
                    lag: 0,
                })
                .collect(),
            membership_changing: false,
        })
    }

    fn step(pods: &[PodView], membership: &Membership) -> Step {
        plan(&Observed {
            update_revision: Some(NEW),
            replicas: u32::try_from(pods.len()).unwrap_or(u32::MAX),
            pods,
            membership,
        })
    }

    fn evicts(step: &Step) -> Option<NodeId> {
        match step {
            Step::Evict { node, .. } => Some(*node),
            _ => None,
        }
    }

    #[test]
    fn nothing_to_do_when_every_pod_runs_the_update_revision() {
        let pods = [pod(0, NEW), pod(1, NEW), pod(2, NEW)];
        assert_eq!(step(&pods, &led(1, 3)), Step::Done);
    }

    #[test]
    fn nothing_to_compare_before_the_statefulset_controller_saw_the_spec() {
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        let membership = led(1, 3);
        let o = Observed {
            update_revision: None,
            replicas: 3,
            pods: &pods,
            membership: &membership,
        };
        assert_eq!(plan(&o), Step::Done);
    }

    #[test]
    fn followers_go_first_highest_ordinal_first_and_the_leader_last_after_a_transfer() {
        // Leader is node 2, the pod Kubernetes' RollingUpdate would replace first.
        let membership = led(2, 3);
        let mut pods = vec![pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        assert_eq!(evicts(&step(&pods, &membership)), Some(1));
        pods[1] = pod(1, NEW);
        assert_eq!(evicts(&step(&pods, &membership)), Some(0));
        pods[0] = pod(0, NEW);
        // Only the leader's pod is left: leadership moves first, to an updated voter.
        match step(&pods, &membership) {
            Step::TransferLeader { from: 2, to } => assert!(to == 0 || to == 1, "to {to}"),
            other => panic!("expected a transfer, got {other:?}"),
        }
        // Once node 0 leads, node 2 is a follower like any other.
        assert_eq!(evicts(&step(&pods, &led(0, 3))), Some(2));
    }

    #[test]
    fn the_successor_is_the_most_caught_up_updated_voter() {
        let Membership::Led(mut view) = led(2, 3) else {
            unreachable!()
        };
        view.members[0].lag = 40;
        view.members[1].lag = 3;
        let pods = [pod(0, NEW), pod(1, NEW), pod(2, OLD)];
        assert_eq!(
            step(&pods, &Membership::Led(view)),
            Step::TransferLeader { from: 2, to: 1 }
        );
    }

    #[test]
    fn a_roll_waits_while_the_cluster_is_not_whole() {
        let pods = [pod(0, OLD), pod(1, NEW), pod(2, OLD)];
        let whole = led(0, 3);

        let mut not_ready = pods.clone();
        not_ready[1].ready = false;
        assert!(
            matches!(step(&not_ready, &whole), Step::Wait(m) if m.contains("demo-1 to be ready"))
        );

        let mut terminating = pods.clone();
        terminating[2].terminating = true;
        assert!(matches!(step(&terminating, &whole), Step::Wait(m) if m.contains("terminate")));

        let missing = &pods[..2];
        let o = Observed {
            update_revision: Some(NEW),
            replicas: 3,
            pods: missing,
            membership: &whole,
        };
        assert!(matches!(plan(&o), Step::Wait(m) if m.contains("recreate")));

        let Membership::Led(view) = whole.clone() else {
            unreachable!()
        };
        let mut lagging = view.clone();
        lagging.members[1].lag = CAUGHT_UP_LAG + 1;
        assert!(
            matches!(step(&pods, &Membership::Led(lagging)), Step::Wait(m) if m.contains("catch up"))
        );

        let mut unhealthy = view.clone();
        unhealthy.members[1].healthy = false;
        assert!(
            matches!(step(&pods, &Membership::Led(unhealthy)), Step::Wait(m) if m.contains("healthy"))
        );

        let mut learner = view.clone();
        learner.members[1].role = Role::Learner;
        assert!(
            matches!(step(&pods, &Membership::Led(learner)), Step::Wait(m) if m.contains("voter"))
        );

        let mut changing = view.clone();
        changing.membership_changing = true;
        assert!(
            matches!(step(&pods, &Membership::Led(changing)), Step::Wait(m) if m.contains("in flight"))
        );

        let mut rejoining = view;
        rejoining.members.retain(|m| m.id != 1);
        assert!(
            matches!(step(&pods, &Membership::Led(rejoining)), Step::Wait(m) if m.contains("rejoin"))
        );

        let unknown = Membership::Unknown("no leader is elected".into());
        assert!(matches!(step(&pods, &unknown), Step::Wait(m) if m.contains("leader")));
    }

    #[test]
    fn a_lone_leader_is_replaced_without_a_transfer() {
        let pods = [pod(0, OLD)];
        assert_eq!(evicts(&step(&pods, &led(0, 1))), Some(0));
    }

    #[test]
    fn unhealthy_voters_stop_the_roll_before_the_leader_is_moved() {
        let Membership::Led(mut view) = led(2, 3) else {
            unreachable!()
        };
        let pods = [pod(0, NEW), pod(1, NEW), pod(2, OLD)];
        for m in &mut view.members {
            if m.id != 2 {
                m.healthy = false;
            }
        }
        // Unhealthy voters stop the roll before the transfer is even considered.
        assert!(matches!(step(&pods, &Membership::Led(view)), Step::Wait(_)));
    }

    fn statefulset(generation: i64, observed: i64, replicas: i32, updated: i32) -> StatefulSet {
        use k8s_openapi::api::apps::v1::StatefulSetStatus;
        let mut sts = StatefulSet::default();
        sts.metadata.generation = Some(generation);
        sts.status = Some(StatefulSetStatus {
            observed_generation: Some(observed),
            replicas,
            updated_replicas: Some(updated),
            update_revision: Some(NEW.to_owned()),
            ..StatefulSetStatus::default()
        });
        sts
    }

    #[test]
    fn the_statefulset_status_tells_when_no_pod_needs_listing() {
        assert!(settled(&statefulset(4, 4, 3, 3)), "every pod updated");
        assert!(
            !settled(&statefulset(4, 4, 3, 2)),
            "one pod on an old revision"
        );
        assert_eq!(update_revision(&statefulset(4, 4, 3, 2)), Some(NEW));
        // The controller has not seen generation 5: its updateRevision is the previous template's.
        assert!(settled(&statefulset(5, 4, 3, 3)));
        assert_eq!(update_revision(&statefulset(5, 4, 3, 3)), None);
        assert!(settled(&StatefulSet::default()), "no status yet");
    }
}
