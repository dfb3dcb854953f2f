//! The PodDisruptionBudget: voluntary disruptions (drains, evictions) may never take away a
//! quorum of voters.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use std::collections::BTreeSet;

use super::names::ClusterNames;
use crate::Result;
use crate::crd::LogCluster;
use crate::node_id::NodeId;
use crate::scaling::{Membership, quorum};

/// The voters the PDB is sized from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoterCount {
    /// Voters in the Raft configuration.
    pub total: u32,
    /// Of those, the ones that have a pod (ordinal below the StatefulSet's replicas). A voter
    /// without a pod is already unavailable and cannot be evicted.
    pub with_pods: u32,
}

impl VoterCount {
    /// Every pod is a voter (used before the leader's view is known).
    pub fn all(pods: u32) -> Self {
        VoterCount {
            total: pods,
            with_pods: pods,
        }
    }

    /// The voters a reconcile knows of: the leader's view; without one, the voters of the last
    /// status (`last_known`); with neither, every pod of `fallback_pods`. A voter has a pod when
    /// its ordinal is below `replicas`, the StatefulSet's replicas being applied.
    pub fn observed(
        membership: &Membership,
        last_known: &BTreeSet<NodeId>,
        replicas: u32,
        fallback_pods: u32,
    ) -> Self {
        match membership {
            Membership::Led(view) => VoterCount::of(
                view.members.iter().filter(|m| m.role.votes()).map(|m| m.id),
                replicas,
            ),
            _ if last_known.is_empty() => VoterCount::all(fallback_pods),
            _ => VoterCount::of(last_known.iter().copied(), replicas),
        }
    }

    /// The count of `voters`, of which those below `replicas` have pods.
    fn of(voters: impl Iterator<Item = NodeId>, replicas: u32) -> Self {
        let (total, with_pods) = voters.fold((0u32, 0u32), |(total, with_pods), id| {
            let has_pod = id < u64::from(replicas);
            (
                total.saturating_add(1),
                with_pods.saturating_add(u32::from(has_pod)),
            )
        });
        VoterCount { total, with_pods }
    }
}

/// Pods that may be disrupted at once: the voters that can be lost while a quorum remains.
///
/// `maxUnavailable` counts every pod of the selector, learners included, so it is conservative
/// while a learner catches up. One voter gives 0: a single-node cluster has no redundancy, and
/// a drain must wait rather than take the log offline.
pub fn max_unavailable(voters: VoterCount) -> i32 {
    let allowed = voters.with_pods.saturating_sub(quorum(voters.total));
    i32::try_from(allowed).unwrap_or(0)
}

/// The PodDisruptionBudget.
pub fn pdb(
    lc: &LogCluster,
    names: &ClusterNames,
    voters: VoterCount,
) -> Result<PodDisruptionBudget> {
    Ok(PodDisruptionBudget {
        metadata: super::child_meta(lc, names, names.pdb(), "node")?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable(voters))),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::cluster;

    #[test]
    fn disruptions_never_exceed_what_the_quorum_tolerates() {
        let cases = [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (7, 3)];
        for (voters, expected) in cases {
            assert_eq!(
                max_unavailable(VoterCount::all(voters)),
                expected,
                "{voters} voters"
            );
        }
    }

    #[test]
    fn voters_without_pods_use_up_the_budget() {
        // Five voters, two of them stale without pods: losing one more pod loses the quorum.
        assert_eq!(
            max_unavailable(VoterCount {
                total: 5,
                with_pods: 3
            }),
            0
        );
        assert_eq!(
            max_unavailable(VoterCount {
                total: 5,
                with_pods: 4
            }),
            1
        );
    }

    #[test]
    fn voters_come_from_the_leader_then_the_last_status_then_the_pods() {
        use crate::scaling::{LeaderView, MemberView, Role};
        let member = |id, role| MemberView {
            id,
            role,
            healthy: true,
            lag: 0,
        };
        // Voters 0..=3 (3 without a pod at 3 replicas) and a learner, which does not count.
        let led = Membership::Led(LeaderView {
            leader: 0,
            members: vec![
                member(0, Role::Leader),
                member(1, Role::Voter),
                member(2, Role::Voter),
                member(3, Role::Voter),
                member(4, Role::Learner),
            ],
            membership_changing: false,
        });
        let known: BTreeSet<NodeId> = [0, 1, 2, 3, 4].into();
        assert_eq!(
            VoterCount::observed(&led, &known, 3, 3),
            VoterCount {
                total: 4,
                with_pods: 3
            }
        );
        let unknown = Membership::Unknown("no leader".into());
        assert_eq!(
            VoterCount::observed(&unknown, &known, 3, 3),
            VoterCount {
                total: 5,
                with_pods: 3
            }
        );
        assert_eq!(
            VoterCount::observed(&unknown, &BTreeSet::new(), 3, 2),
            VoterCount::all(2)
        );
    }

    #[test]
    fn pdb_selects_the_cluster_pods() {
        let lc = cluster();
        let names = ClusterNames::new(&lc, "cluster.local").unwrap();
        let pdb = pdb(&lc, &names, VoterCount::all(3)).unwrap();
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.unwrap().match_labels,
            Some(names.selector_labels())
        );
    }
}
