//! Safe scaling, one member at a time.
//!
//! [`decide`] is a pure function from what the operator observes — `spec.replicas`, the
//! StatefulSet's replicas, whether the cluster was initialized, and the Raft membership as the
//! leader reports it — to the StatefulSet replicas to apply now and at most one admin call.
//! Nothing is remembered between reconciles except `status.initialized`, so an operator that
//! crashes mid-step simply re-derives the same step (every step is idempotent).
//!
//! Up: raise the StatefulSet by one, wait until the new node is a voter (the leader adds nodes it
//! discovers by gossip as learners and promotes them once caught up), repeat.
//! Down: move leadership off the highest ordinal if it leads, remove it from the voters, wait for
//! the committed configuration, then lower the StatefulSet by one.
//! A removal that would leave fewer healthy voters than a quorum is refused, with the reason.
//! Scaling back up while a node was removed but its pod still runs adds that node back.
//!
//! [`merge_answers`] turns the nodes' `ClusterStatus` answers into a [`Membership`]. Asking the
//! nodes and making the admin call are the controller's I/O ([`crate::controller`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use logcluster_api::admin_v1::{ClusterStatusResponse, MemberRole as ProtoRole};

use crate::crd::ScalingPhase;
use crate::node_id::NodeId;

/// Votes needed for a majority of `voters`.
pub fn quorum(voters: u32) -> u32 {
    voters / 2 + 1
}

/// Role of a member in the committed configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Voter,
    Learner,
}

impl Role {
    /// Leaders and voters vote.
    pub fn votes(self) -> bool {
        matches!(self, Role::Leader | Role::Voter)
    }
}

/// One member as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub role: Role,
    /// The leader heard from it recently.
    pub healthy: bool,
    /// Entries behind the commit index.
    pub lag: u64,
}

/// The membership as reported by the current leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    pub leader: NodeId,
    pub members: Vec<MemberView>,
    /// A joint configuration is in flight: wait for it to commit before the next change.
    pub membership_changing: bool,
}

impl LeaderView {
    fn member(&self, id: NodeId) -> Option<&MemberView> {
        self.members.iter().find(|m| m.id == id)
    }

    fn voters(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| m.role.votes())
    }
}

/// What the nodes' admin APIs say about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// A leader answered with its view.
    Led(LeaderView),
    /// Some nodes answered but none has (or knows of) an initialized configuration.
    Uninitialized,
    /// No usable answer: no node answered, no leader is elected, or the leader did not answer.
    Unknown(String),
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `spec.replicas` (≥ 1).
    pub desired: u32,
    /// `spec.replicas` of the StatefulSet; `None` when it does not exist yet.
    pub statefulset: Option<u32>,
    /// `status.initialized`.
    pub initialized: bool,
    /// Voter ids from the last status (to restore their pods when the leader is unknown).
    pub last_known_voters: BTreeSet<NodeId>,
    /// The membership.
    pub membership: Membership,
    /// Nodes whose admin API answered.
    pub reachable: BTreeSet<NodeId>,
}

/// An admin API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// `Initialize` on node 0 with node 0 as the only voter.
    Initialize,
    /// `AddNode` (promote to voter once caught up), through the leader.
    AddNode(NodeId),
    /// `TransferLeader` from the current leader to `to`.
    TransferLeader { from: NodeId, to: NodeId },
    /// `RemoveNode`, through the leader.
    RemoveNode(NodeId),
}

impl fmt::Display for AdminAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAction::Initialize => write!(f, "initialize the cluster on node 0"),
            AdminAction::AddNode(id) => write!(f, "add node {id}"),
            AdminAction::TransferLeader { from, to } => {
                write!(f, "transfer leadership from node {from} to node {to}")
            }
            AdminAction::RemoveNode(id) => write!(f, "remove node {id} from the voters"),
        }
    }
}

/// Where scaling stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Replicas match and every node is a voter.
    Steady,
    /// A step is being taken or awaited.
    Working {
        phase: ScalingPhase,
        message: String,
    },
    /// A step was refused (it would break the quorum, or needs a human).
    Blocked { message: String },
}

/// The output of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// StatefulSet `spec.replicas` to apply now.
    pub replicas: u32,
    /// The admin call to make now, if any.
    pub action: Option<AdminAction>,
    /// The nodes report an initialized cluster that the status does not record yet.
    pub mark_initialized: bool,
    /// For status and events.
    pub progress: Progress,
}

fn working(
    replicas: u32,
    action: Option<AdminAction>,
    phase: ScalingPhase,
    message: String,
) -> Decision {
    Decision {
        replicas,
        action,
        mark_initialized: false,
        progress: Progress::Working { phase, message },
    }
}

fn blocked(replicas: u32, message: String) -> Decision {
    Decision {
        replicas,
        action: None,
        mark_initialized: false,
        progress: Progress::Blocked { message },
    }
}

/// Decides the next step. See the module documentation for the protocol.
pub fn decide(o: &Observed) -> Decision {
    let d = o.desired.max(1);
    // Pods needed so that every voter we last knew of has one: quorum depends on them.
    let voter_span = o
        .last_known_voters
        .iter()
        .max()
        .map_or(0, |&id| u32::try_from(id + 1).unwrap_or(u32::MAX));

    let Some(n) = o.statefulset else {
        if o.initialized {
            // The StatefulSet was deleted under a running cluster: bring back a pod for every
            // voter (their volumes still hold the log), or the cluster could never regain quorum.
            let replicas = voter_span.max(1);
            return working(
                replicas,
                None,
                ScalingPhase::Waiting,
                format!("recreating the StatefulSet with {replicas} pods for the known voters"),
            );
        }
        return working(
            1,
            None,
            ScalingPhase::Bootstrapping,
            "creating the StatefulSet with node 0".to_owned(),
        );
    };

    if !o.initialized {
        return match &o.membership {
            Membership::Led(_) => Decision {
                replicas: n,
                action: None,
                mark_initialized: true,
                progress: Progress::Working {
                    phase: ScalingPhase::Waiting,
                    message: "the nodes report an initialized cluster; recording it".to_owned(),
                },
            },
            Membership::Uninitialized if o.reachable.contains(&0) => working(
                n.max(1),
                Some(AdminAction::Initialize),
                ScalingPhase::Bootstrapping,
                "initializing the cluster on node 0".to_owned(),
            ),
            Membership::Uninitialized => working(
                n.max(1),
                None,
                ScalingPhase::Bootstrapping,
                "waiting for node 0 to answer".to_owned(),
            ),
            Membership::Unknown(reason) => working(
                n.max(1),
                None,
                ScalingPhase::Bootstrapping,
                format!("waiting for node 0: {reason}"),
            ),
        };
    }

    let view = match &o.membership {
        Membership::Led(view) => view,
        Membership::Uninitialized => {
            // NB: never initialize twice. Nodes that all claim to be uninitialized after the
            // cluster was initialized have lost their data; a new cluster would silently
            // diverge from any copy that comes back.
            return blocked(
                n.max(voter_span),
                "the cluster was initialized before but every node that answered reports no \
                 membership (lost volumes?); refusing to initialize again — restore the data \
                 or recreate the LogCluster"
                    .to_owned(),
            );
        }
        Membership::Unknown(reason) => {
            return working(
                n.max(voter_span),
                None,
                ScalingPhase::Waiting,
                format!("waiting for a leader: {reason}"),
            );
        }
    };

    if view.membership_changing {
        return working(
            n,
            None,
            ScalingPhase::Waiting,
            "waiting for the membership change in flight to commit".to_owned(),
        );
    }

    let top_member = view.members.iter().map(|m| m.id).max();
    if d < n {
        // Scale down: remove the highest ordinal (or a higher member that has no pod).
        let target = top_member.map_or(u64::from(n - 1), |m| m.max(u64::from(n - 1)));
        return scale_down_step(view, n, d, target);
    }

    // Members beyond the desired size (a pod-less leftover) go first, highest first.
    if let Some(stale) = top_member.filter(|&m| m >= u64::from(d)) {
        return scale_down_step(view, n, d, stale);
    }
    // Voters in [n, d) without pods (the StatefulSet was lowered behind the operator's back):
    // restore their pods; that is not a membership change.
    let voters_span = view.voters().map(|m| m.id + 1).max().unwrap_or(0);
    if voters_span > u64::from(n) {
        let replicas = u32::try_from(voters_span).unwrap_or(n);
        return working(
            replicas,
            None,
            ScalingPhase::ScalingUp,
            format!("restoring pods for voters up to node {}", voters_span - 1),
        );
    }
    for i in 0..u64::from(n) {
        match view.member(i).map(|m| m.role) {
            Some(Role::Leader | Role::Voter) => {}
            Some(Role::Learner) => {
                return working(
                    n,
                    None,
                    ScalingPhase::ScalingUp,
                    format!("waiting for node {i} to catch up and become a voter"),
                );
            }
            None if o.reachable.contains(&i) => {
                // Its pod runs but it is not a member: it is new and gossip has not added it
                // yet, or it was removed by a scale-down that spec.replicas now cancels.
                return working(
                    n,
                    Some(AdminAction::AddNode(i)),
                    ScalingPhase::ScalingUp,
                    format!("adding node {i} to the cluster"),
                );
            }
            None => {
                return working(
                    n,
                    None,
                    ScalingPhase::ScalingUp,
                    format!("waiting for node {i} to start and join"),
                );
            }
        }
    }
    if d > n {
        return working(
            n + 1,
            None,
            ScalingPhase::ScalingUp,
            format!("adding node {n} ({n} of {d} nodes are voters)"),
        );
    }
    Decision {
        replicas: n,
        action: None,
        mark_initialized: false,
        progress: Progress::Steady,
    }
}

/// The next step of removing `target` (a member, or the StatefulSet's top ordinal).
fn scale_down_step(view: &LeaderView, n: u32, d: u32, target: NodeId) -> Decision {
    let phase = ScalingPhase::ScalingDown;
    let Some(member) = view.member(target) else {
        // Not a member any more (the removal committed): now the pod can go.
        return working(
            n.saturating_sub(1).max(1),
            None,
            phase,
            format!(
                "node {target} left the cluster; removing its pod ({n} → {} pods, target {d})",
                n.saturating_sub(1)
            ),
        );
    };
    if member.role == Role::Learner {
        return working(
            n,
            Some(AdminAction::RemoveNode(target)),
            phase,
            format!("removing learner node {target}"),
        );
    }
    let voters: Vec<&MemberView> = view.voters().collect();
    let remaining: Vec<&MemberView> = voters.iter().copied().filter(|m| m.id != target).collect();
    if remaining.is_empty() {
        return blocked(
            n,
            format!("node {target} is the last voter and cannot be removed"),
        );
    }
    let healthy_remaining = remaining.iter().filter(|m| m.healthy).count();
    let healthy_now = voters.iter().filter(|m| m.healthy).count();
    let need_after = quorum(u32::try_from(remaining.len()).unwrap_or(u32::MAX)) as usize;
    let need_now = quorum(u32::try_from(voters.len()).unwrap_or(u32::MAX)) as usize;
    // The change commits through a joint configuration: a quorum of the old voters and of the
    // new ones must both be healthy, or the cluster stalls mid-change.
    if healthy_remaining < need_after || healthy_now < need_now {
        return blocked(
            n,
            format!(
                "removing node {target} would leave {healthy_remaining} healthy of {} voters, \
                 and a quorum needs {need_after}; waiting for unhealthy voters to recover",
                remaining.len()
            ),
        );
    }
    if view.leader == target {
        let successor = remaining
            .iter()
            .filter(|m| m.healthy)
            .min_by_key(|m| (m.lag, m.id))
            .map(|m| m.id);
        return match successor {
            Some(to) => working(
                n,
                Some(AdminAction::TransferLeader { from: target, to }),
                phase,
                format!("node {target} leads; moving leadership to node {to} before removing it"),
            ),
            None => blocked(
                n,
                format!("node {target} leads and no healthy voter can take over"),
            ),
        };
    }
    working(
        n,
        Some(AdminAction::RemoveNode(target)),
        phase,
        format!("removing node {target} from the voters"),
    )
}

/// Builds the membership from the answers of the nodes' `ClusterStatus` (by ordinal).
pub fn merge_answers(answers: &BTreeMap<NodeId, ClusterStatusResponse>) -> Membership {
    if answers.is_empty() {
        return Membership::Unknown("no node answered".to_owned());
    }
    // The leader known in the highest term wins; an older term's leader may be deposed.
    let leader = answers
        .values()
        .filter_map(|a| a.leader_id.map(|l| (a.term, l)))
        .max()
        .map(|(_, l)| l);
    let initialized = answers.values().any(|a| !a.members.is_empty());
    let Some(leader) = leader else {
        return if initialized {
            Membership::Unknown("no leader is elected".to_owned())
        } else {
            Membership::Uninitialized
        };
    };
    let Some(answer) = answers.get(&leader) else {
        return Membership::Unknown(format!("leader node {leader} did not answer"));
    };
    if answer.leader_id != Some(leader) {
        return Membership::Unknown(format!("node {leader} no longer claims leadership"));
    }
    let mut members = Vec::new();
    for m in &answer.members {
        let role = match ProtoRole::try_from(m.role) {
            Ok(ProtoRole::Leader) => Role::Leader,
            Ok(ProtoRole::Voter) => Role::Voter,
            Ok(ProtoRole::Learner) => Role::Learner,
            Ok(ProtoRole::Unspecified) | Err(_) => {
                return Membership::Unknown(format!(
                    "leader node {leader} reported node {} without a role",
                    m.node_id
                ));
            }
        };
        // The leader obviously hears from itself.
        let healthy = m.healthy || m.node_id == leader;
        members.push(MemberView {
            id: m.node_id,
            role: if m.node_id == leader {
                Role::Leader
            } else {
                role
            },
            healthy,
            lag: m.lag,
        });
    }
    // A configuration the leader has appended but not committed yet is still in flight: "wait
    // for the committed configuration" before the next step (e.g. before a removed node's pod
    // goes) means this too, not only a joint configuration.
    let uncommitted = answer.membership_log_index > answer.commit_index;
    Membership::Led(LeaderView {
        leader,
        members,
        membership_changing: answer.membership_changing || uncommitted,
    })
}

#[cfg(test)]
mod tests {
    use logcluster_api::admin_v1::MemberStatus as ProtoMember;

    use super::*;

    fn member(id: NodeId, role: Role) -> MemberView {
        MemberView {
            id,
            role,
            healthy: true,
            lag: 0,
        }
    }

    /// A led cluster whose voters are `voters` (the first one leads) plus `learners`.
    fn led(leader: NodeId, voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let mut members: Vec<_> = voters
            .iter()
            .map(|&id| {
                member(
                    id,
                    if id == leader {
                        Role::Leader
                    } else {
                        Role::Voter
                    },
                )
            })
            .collect();
        members.extend(learners.iter().map(|&id| member(id, Role::Learner)));
        Membership::Led(LeaderView {
            leader,
            members,
            membership_changing: false,
        })
    }

    fn observed(desired: u32, sts: u32, membership: Membership) -> Observed {
        let reachable = (0..u64::from(sts)).collect();
        Observed {
            desired,
            statefulset: Some(sts),
            initialized: true,
            last_known_voters: BTreeSet::new(),
            membership,
            reachable,
        }
    }

    fn unhealthy(mut m: Membership, ids: &[NodeId]) -> Membership {
        if let Membership::Led(view) = &mut m {
            for member in &mut view.members {
                if ids.contains(&member.id) {
                    member.healthy = false;
                }
            }
        }
        m
    }

    fn is_blocked(d: &Decision) -> bool {
        matches!(d.progress, Progress::Blocked { .. })
    }

    fn message(d: &Decision) -> &str {
        match &d.progress {
            Progress::Steady => "",
            Progress::Working { message, .. } | Progress::Blocked { message } => message,
        }
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!([1, 2, 3, 4, 5, 6, 7].map(quorum), [1, 2, 2, 3, 3, 4, 4]);
    }

    // ---- bootstrap ----

    #[test]
    fn a_new_cluster_starts_with_one_pod() {
        let o = Observed {
            desired: 3,
            statefulset: None,
            initialized: false,
            last_known_voters: BTreeSet::new(),
            membership: Membership::Unknown("no node answered".into()),
            reachable: BTreeSet::new(),
        };
        let d = decide(&o);
        assert_eq!((d.replicas, d.action), (1, None));
        assert!(matches!(
            d.progress,
            Progress::Working {
                phase: ScalingPhase::Bootstrapping,
                ..
            }
        ));
    }

    #[test]
    fn node_0_is_initialized_once_it_answers_uninitialized() {
        let mut o = observed(3, 1, Membership::Uninitialized);
        o.initialized = false;
        let d = decide(&o);
        assert_eq!((d.replicas, d.action), (1, Some(AdminAction::Initialize)));

        o.reachable.clear();
        let d = decide(&o);
        assert_eq!(
            (d.replicas, d.action),
            (1, None),
            "node 0 must answer first"
        );
    }

    #[test]
    fn an_initialized_cluster_is_recorded_not_initialized_again() {
        let mut o = observed(3, 1, led(0, &[0], &[]));
        o.initialized = false;
        let d = decide(&o);
        assert!(d.mark_initialized);
        assert_eq!(d.action, None);
    }

    #[test]
    fn a_cluster_that_lost_its_data_is_never_initialized_again() {
        let o = observed(3, 3, Membership::Uninitialized);
        let d = decide(&o);
        assert_eq!(d.action, None);
        assert!(is_blocked(&d), "{d:?}");
        assert!(message(&d).contains("refusing to initialize again"));
    }

    // ---- scale up ----

    #[test]
    fn scale_up_raises_one_pod_at_a_time_once_all_are_voters() {
        let d = decide(&observed(3, 1, led(0, &[0], &[])));
        assert_eq!((d.replicas, d.action), (2, None));
        let d = decide(&observed(3, 2, led(0, &[0, 1], &[])));
        assert_eq!((d.replicas, d.action), (3, None));
        let d = decide(&observed(3, 3, led(0, &[0, 1, 2], &[])));
        assert_eq!(
            (d.replicas, d.action, d.progress),
            (3, None, Progress::Steady)
        );
    }

    #[test]
    fn scale_up_waits_while_the_new_node_is_a_learner() {
        let d = decide(&observed(5, 4, led(0, &[0, 1, 2], &[3])));
        assert_eq!((d.replicas, d.action), (4, None));
        assert!(message(&d).contains("node 3 to catch up"), "{d:?}");
    }

    #[test]
    fn scale_up_waits_for_a_pod_that_does_not_answer_yet() {
        let mut o = observed(5, 4, led(0, &[0, 1, 2], &[]));
        o.reachable.remove(&3);
        let d = decide(&o);
        assert_eq!((d.replicas, d.action), (4, None));
        assert!(message(&d).contains("node 3 to start"), "{d:?}");
    }

    #[test]
    fn a_running_node_that_is_not_a_member_is_added() {
        // Gossip may add it first; AddNode is idempotent, so racing it is harmless.
        let d = decide(&observed(5, 4, led(1, &[0, 1, 2], &[])));
        assert_eq!((d.replicas, d.action), (4, Some(AdminAction::AddNode(3))));
    }

    #[test]
    fn scaling_back_up_cancels_a_pending_scale_down() {
        // spec went 3 → 2: node 2 was removed, its pod still runs; now spec is 3 again.
        let d = decide(&observed(3, 3, led(0, &[0, 1], &[])));
        assert_eq!((d.replicas, d.action), (3, Some(AdminAction::AddNode(2))));
        // And while the removal had not happened yet, nothing is done at all.
        let d = decide(&observed(3, 3, led(0, &[0, 1, 2], &[])));
        assert_eq!(d.progress, Progress::Steady);
    }

    #[test]
    fn nothing_changes_while_a_membership_change_is_in_flight() {
        let Membership::Led(mut view) = led(0, &[0, 1, 2], &[]) else {
            unreachable!()
        };
        view.membership_changing = true;
        for desired in [1, 3, 5] {
            let d = decide(&observed(desired, 3, Membership::Led(view.clone())));
            assert_eq!((d.replicas, d.action), (3, None), "desired {desired}");
        }
    }

    #[test]
    fn nothing_changes_without_a_leader() {
        for desired in [1, 3, 5] {
            let d = decide(&observed(
                desired,
                3,
                Membership::Unknown("no leader".into()),
            ));
            assert_eq!((d.replicas, d.action), (3, None), "desired {desired}");
        }
    }

    #[test]
    fn pods_of_known_voters_are_restored_when_the_statefulset_shrank_behind_our_back() {
        // Leaderless: status remembers voters 0..=2, the StatefulSet was set to 1 by hand.
        let mut o = observed(3, 1, Membership::Unknown("no leader".into()));
        o.last_known_voters = [0, 1, 2].into();
        assert_eq!(decide(&o).replicas, 3);
        // Led: voter 2 has no pod.
        let d = decide(&observed(3, 2, led(0, &[0, 1, 2], &[])));
        assert_eq!((d.replicas, d.action), (3, None));
        // Deleted StatefulSet of an initialized cluster.
        let mut o = observed(3, 0, Membership::Unknown("no node answered".into()));
        o.statefulset = None;
        o.last_known_voters = [0, 1, 2, 3].into();
        assert_eq!(decide(&o).replicas, 4);
    }

    // ---- scale down ----

    #[test]
    fn scale_down_removes_the_highest_voter_then_its_pod() {
        let d = decide(&observed(3, 5, led(0, &[0, 1, 2, 3, 4], &[])));
        assert_eq!(
            (d.replicas, d.action),
            (5, Some(AdminAction::RemoveNode(4)))
        );
        let d = decide(&observed(3, 5, led(0, &[0, 1, 2, 3], &[])));
        assert_eq!((d.replicas, d.action), (4, None));
        let d = decide(&observed(3, 4, led(0, &[0, 1, 2, 3], &[])));
        assert_eq!(
            (d.replicas, d.action),
            (4, Some(AdminAction::RemoveNode(3)))
        );
        let d = decide(&observed(3, 4, led(0, &[0, 1, 2], &[])));
        assert_eq!((d.replicas, d.action), (3, None));
        let d = decide(&observed(3, 3, led(0, &[0, 1, 2], &[])));
        assert_eq!(d.progress, Progress::Steady);
    }

    #[test]
    fn scale_down_of_the_leader_transfers_leadership_first() {
        let membership = led(4, &[0, 1, 2, 3, 4], &[]);
        let Membership::Led(mut view) = membership else {
            unreachable!()
        };
        // Node 2 is the most up to date of the others.
        for m in &mut view.members {
            m.lag = match m.id {
                2 => 0,
                4 => 0,
                _ => 10,
            };
        }
        let d = decide(&observed(3, 5, Membership::Led(view)));
        assert_eq!(
            d.action,
            Some(AdminAction::TransferLeader { from: 4, to: 2 })
        );
        assert_eq!(d.replicas, 5);
    }

    #[test]
    fn the_successor_must_be_healthy_and_the_most_up_to_date() {
        let Membership::Led(mut view) = unhealthy(led(4, &[0, 1, 2, 3, 4], &[]), &[0]) else {
            unreachable!()
        };
        for m in &mut view.members {
            // Node 0 is the most up to date but unreachable; node 3 is next.
            m.lag = match m.id {
                0 => 0,
                3 => 1,
                4 => 0,
                _ => 5,
            };
        }
        let d = decide(&observed(4, 5, Membership::Led(view)));
        assert_eq!(
            d.action,
            Some(AdminAction::TransferLeader { from: 4, to: 3 })
        );
    }

    #[test]
    fn scale_down_that_would_break_quorum_is_refused() {
        // 3 voters, node 1 down: removing node 2 leaves {0 healthy, 1 down}: 1 of 2 < quorum 2.
        let d = decide(&observed(2, 3, unhealthy(led(0, &[0, 1, 2], &[]), &[1])));
        assert!(is_blocked(&d), "{d:?}");
        assert_eq!((d.replicas, d.action), (3, None));
        assert!(message(&d).contains("quorum needs 2"), "{}", message(&d));
    }

    #[test]
    fn scale_down_with_enough_healthy_voters_proceeds_despite_one_down() {
        // 5 voters, node 1 down: removing 4 leaves 3 healthy of 4, quorum 3: fine.
        let d = decide(&observed(
            4,
            5,
            unhealthy(led(0, &[0, 1, 2, 3, 4], &[]), &[1]),
        ));
        assert_eq!(d.action, Some(AdminAction::RemoveNode(4)));
    }

    #[test]
    fn removing_an_unhealthy_top_voter_is_allowed_when_the_rest_hold_a_quorum() {
        let d = decide(&observed(2, 3, unhealthy(led(0, &[0, 1, 2], &[]), &[2])));
        assert_eq!(d.action, Some(AdminAction::RemoveNode(2)));
    }

    #[test]
    fn the_last_voter_is_never_removed() {
        let d = decide(&observed(1, 2, led(1, &[1], &[0])));
        // Node 1 (top) is the only voter: refuse.
        assert!(is_blocked(&d), "{d:?}");
        assert_eq!(d.action, None);
    }

    #[test]
    fn a_learner_at_the_top_is_removed_without_quorum_concerns() {
        let d = decide(&observed(
            3,
            4,
            unhealthy(led(0, &[0, 1, 2], &[3]), &[1, 2]),
        ));
        assert_eq!(d.action, Some(AdminAction::RemoveNode(3)));
    }

    #[test]
    fn a_member_without_a_pod_beyond_the_desired_size_is_removed() {
        // StatefulSet at 3 but node 3 is still a (dead) voter: remove it, pods stay.
        let d = decide(&observed(3, 3, unhealthy(led(0, &[0, 1, 2, 3], &[]), &[3])));
        assert_eq!(
            (d.replicas, d.action),
            (3, Some(AdminAction::RemoveNode(3)))
        );
    }

    #[test]
    fn every_step_is_idempotent_under_repetition() {
        // Re-deciding from the same observation gives the same step (an operator restart
        // between deciding and observing the effect repeats, never skips, a step).
        let cases = [
            observed(3, 5, led(0, &[0, 1, 2, 3, 4], &[])),
            observed(3, 5, led(4, &[0, 1, 2, 3, 4], &[])),
            observed(5, 3, led(0, &[0, 1, 2], &[])),
            observed(3, 3, led(0, &[0, 1], &[])),
        ];
        for o in cases {
            assert_eq!(decide(&o), decide(&o));
        }
    }

    /// Simulates a cluster that obeys each decision, to check whole scaling runs converge
    /// through valid states only.
    fn simulate(
        desired: u32,
        mut sts: u32,
        mut voters: BTreeSet<NodeId>,
        mut leader: NodeId,
    ) -> Vec<String> {
        let mut log = Vec::new();
        for _ in 0..50 {
            let ids: Vec<NodeId> = voters.iter().copied().collect();
            let d = decide(&observed(desired, sts, led(leader, &ids, &[])));
            let sts_before = sts;
            assert!(!is_blocked(&d), "blocked: {d:?}");
            if d.replicas != sts {
                assert!(
                    d.replicas.abs_diff(sts) == 1,
                    "changed by more than one: {sts} → {}",
                    d.replicas
                );
                // Never a pod removed while it is still a voter.
                if d.replicas < sts {
                    assert!(
                        !voters.contains(&u64::from(d.replicas)),
                        "removing the pod of a voter"
                    );
                }
                log.push(format!("sts {sts}->{}", d.replicas));
                sts = d.replicas;
            }
            match d.action {
                Some(AdminAction::RemoveNode(id)) => {
                    assert_ne!(id, leader, "removed the leader without a transfer");
                    voters.remove(&id);
                    log.push(format!("remove {id}"));
                }
                Some(AdminAction::TransferLeader { from, to }) => {
                    assert_eq!(from, leader);
                    leader = to;
                    log.push(format!("transfer {from}->{to}"));
                }
                Some(AdminAction::AddNode(id)) => {
                    voters.insert(id);
                    log.push(format!("add {id}"));
                }
                Some(AdminAction::Initialize) => panic!("initialize in a running cluster"),
                None => {}
            }
            // Gossip: the leader adds a new pod as a learner and promotes it (modelled as one
            // step). A removed node whose pod still runs is not re-added.
            if sts > sts_before {
                voters.insert(u64::from(sts - 1));
            }
            if d.progress == Progress::Steady {
                assert_eq!(sts, desired);
                assert_eq!(voters, (0..u64::from(desired)).collect());
                return log;
            }
        }
        panic!("did not converge: {log:?}");
    }

    #[test]
    fn three_to_five_to_three_goes_one_member_at_a_time_in_order() {
        let up = simulate(5, 3, [0, 1, 2].into(), 0);
        assert_eq!(up, ["sts 3->4", "sts 4->5"]);
        let down = simulate(3, 5, [0, 1, 2, 3, 4].into(), 4);
        assert_eq!(
            down,
            [
                "transfer 4->0",
                "remove 4",
                "sts 5->4",
                "remove 3",
                "sts 4->3"
            ]
        );
    }

    // ---- merging answers ----

    fn answer(
        node: NodeId,
        leader: Option<NodeId>,
        term: u64,
        members: &[(NodeId, ProtoRole)],
    ) -> ClusterStatusResponse {
        ClusterStatusResponse {
            node_id: node,
            leader_id: leader,
            term,
            members: members
                .iter()
                .map(|&(id, role)| ProtoMember {
                    node_id: id,
                    rpc_addr: format!("n{id}:8400"),
                    role: role as i32,
                    matched_index: 10,
                    lag: 0,
                    healthy: id != 2,
                })
                .collect(),
            ..ClusterStatusResponse::default()
        }
    }

    #[test]
    fn the_leaders_own_view_is_used() {
        let ms = [
            (0, ProtoRole::Voter),
            (1, ProtoRole::Leader),
            (2, ProtoRole::Learner),
        ];
        let answers = BTreeMap::from([
            (0, answer(0, Some(1), 3, &ms)),
            (1, answer(1, Some(1), 3, &ms)),
        ]);
        let Membership::Led(view) = merge_answers(&answers) else {
            panic!()
        };
        assert_eq!(view.leader, 1);
        assert_eq!(view.members.len(), 3);
        assert_eq!(
            view.member(2).map(|m| (m.role, m.healthy)),
            Some((Role::Learner, false))
        );
    }

    #[test]
    fn an_uncommitted_configuration_counts_as_a_change_in_flight() {
        let ms = [(0, ProtoRole::Leader), (1, ProtoRole::Voter)];
        let changing = |membership_log_index, commit_index, joint| {
            let mut a = answer(0, Some(0), 3, &ms);
            a.membership_log_index = membership_log_index;
            a.commit_index = commit_index;
            a.membership_changing = joint;
            match merge_answers(&BTreeMap::from([(0, a)])) {
                Membership::Led(view) => view.membership_changing,
                other => panic!("{other:?}"),
            }
        };
        assert!(changing(12, 11, false), "appended, not committed");
        assert!(!changing(12, 12, false), "committed");
        assert!(!changing(12, 40, false), "committed long ago");
        assert!(changing(12, 40, true), "joint");
        // With the removal of node 4 appended but not committed, its pod stays.
        let Membership::Led(mut view) = led(0, &[0, 1, 2, 3], &[]) else {
            unreachable!()
        };
        view.membership_changing = true;
        let d = decide(&observed(3, 5, Membership::Led(view)));
        assert_eq!((d.replicas, d.action), (5, None));
    }

    #[test]
    fn a_leader_that_did_not_answer_gives_no_view() {
        let ms = [(0, ProtoRole::Voter), (1, ProtoRole::Leader)];
        let answers = BTreeMap::from([(0, answer(0, Some(1), 3, &ms))]);
        assert!(
            matches!(merge_answers(&answers), Membership::Unknown(r) if r.contains("did not answer"))
        );
    }

    #[test]
    fn the_newest_term_names_the_leader() {
        let ms = [(0, ProtoRole::Voter), (1, ProtoRole::Voter)];
        let answers = BTreeMap::from([
            (0, answer(0, Some(1), 2, &ms)),
            (1, answer(1, Some(0), 5, &ms)),
        ]);
        // Node 0 leads in term 5 per node 1, but node 0 itself says node 1 (term 2): no claim.
        assert!(matches!(merge_answers(&answers), Membership::Unknown(_)));
    }

    #[test]
    fn fresh_nodes_report_an_uninitialized_cluster() {
        let answers = BTreeMap::from([(0, answer(0, None, 0, &[]))]);
        assert_eq!(merge_answers(&answers), Membership::Uninitialized);
        let answers = BTreeMap::from([
            (0, answer(0, None, 0, &[])),
            (1, answer(1, None, 4, &[(1, ProtoRole::Voter)])),
        ]);
        assert!(
            matches!(merge_answers(&answers), Membership::Unknown(r) if r.contains("no leader"))
        );
        assert!(matches!(
            merge_answers(&BTreeMap::new()),
            Membership::Unknown(_)
        ));
    }

    #[test]
    fn a_member_without_a_role_makes_the_view_unusable() {
        let answers = BTreeMap::from([(0, answer(0, Some(0), 1, &[(0, ProtoRole::Unspecified)]))]);
        assert!(matches!(merge_answers(&answers), Membership::Unknown(_)));
    }
}
