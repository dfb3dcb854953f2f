//! The PodDisruptionBudget: voluntary disruptions (drains, evictions) may never take away a
//! quorum of voters.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::ClusterNames;
use crate::Result;
use crate::crd::LogCluster;
use crate::scaling::quorum;

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
