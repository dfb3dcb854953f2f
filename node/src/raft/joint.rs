//! Finishing a membership change that its leader left half done.
//!
//! openraft changes voters in two log entries: a joint configuration (old and new voters must
//! both agree), then the uniform new one. The second entry is proposed by the future that asked
//! for the change, on the leader that asked, and openraft deliberately drops it when leadership
//! moves between the two steps (0.10.0-alpha.37 `raft/api/management.rs`: "A leader change
//! between the two steps must still abort the second step"). Nothing else finishes the change.
//! The cluster then stays in the joint configuration: it serves, but the gossip reconciler and
//! the operator both wait while a change is in flight, so every later join, promotion and
//! scale-down stalls for good. Found by the suite: a removed node returning on its old data
//! called an election while the leader was between the two steps of re-adding it.
//!
//! So every node watches for it. While this node leads and a *committed* joint configuration has
//! stayed unchanged for a grace period, it proposes the uniform step itself — the same no-op
//! change openraft's second step sends (`AddVoterIds(∅)` moves a joint configuration to its
//! last half). The grace leaves a live change the time to take its own second step; proposing
//! it twice would only make that caller's step fail, never change the outcome.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, RaftMetrics, ServerState};

use super::Raft;
use super::metrics_watch;
use super::types::{LogId, TypeConfig};
use crate::telemetry::metrics::Metrics;

/// The committed joint configuration this node, as leader, should finish, if any.
pub(crate) fn abandoned_joint(metrics: &RaftMetrics<TypeConfig>) -> Option<LogId> {
    if metrics.state != ServerState::Leader {
        return None;
    }
    let stored = &metrics.membership_config;
    if stored.membership().get_joint_config().len() < 2 {
        return None;
    }
    let joint = (*stored.log_id())?;
    let applied = metrics.last_applied.as_ref()?;
    // Applied implies committed; an uncommitted joint entry is a change still in its first step.
    (applied.index >= joint.index).then_some(joint)
}

/// Runs for the node's life: finishes joint configurations abandoned for longer than `grace`.
pub(crate) async fn finish_abandoned_joint_configs(raft: Raft, grace: Duration, metrics: Metrics) {
    let mut watch = raft.metrics();
    loop {
        // Wait for a candidate: leading, and a committed joint configuration.
        let joint = loop {
            if let Some(joint) = abandoned_joint(&watch.borrow_and_update()) {
                break joint;
            }
            if watch.changed().await.is_err() {
                return;
            }
        };
        // It must stay exactly that for the grace period (same entry, still leading). A change
        // within it is a live change taking its second step, or a lost leadership.
        let changed = metrics_watch::wait_until(&raft, grace, |m| {
            abandoned_joint(m).as_ref() != Some(&joint)
        })
        .await;
        if changed.is_ok() {
            continue;
        }
        tracing::warn!(
            membership_log_index = joint.index,
            "a membership change was left in its joint configuration (its leader changed between \
             the two steps); this leader finishes it"
        );
        // Counted when proposed, so that whoever sees the uniform configuration sees the count.
        metrics.record_joint_config_finished();
        match raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::new()), false)
            .await
        {
            Ok(done) => {
                tracing::info!(
                    membership_log_index = done.log_id.index,
                    voters = ?done.membership.as_ref().map(|m| m.voter_ids().collect::<Vec<_>>()),
                    "finished the abandoned membership change"
                );
            }
            Err(error) => {
                // Lost leadership or a change raced us: the next pass re-reads the state.
                tracing::warn!(%error, "could not finish the abandoned membership change");
                let _ = tokio::time::timeout(grace, watch.changed()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use openraft::{Membership, StoredMembership};

    use super::*;
    use crate::raft::types::{Node, log_id};

    fn metrics(
        state: ServerState,
        configs: Vec<Vec<u64>>,
        at: u64,
        applied: u64,
    ) -> RaftMetrics<TypeConfig> {
        let nodes: BTreeMap<u64, Node> = configs
            .iter()
            .flatten()
            .map(|id| (*id, Node::new(format!("127.0.0.{}:1", id + 1))))
            .collect();
        let configs = configs.into_iter().map(BTreeSet::from_iter).collect();
        let membership = Membership::new(configs, nodes).expect("valid membership");
        let mut m = RaftMetrics::new_initial(0);
        m.state = state;
        m.membership_config = Arc::new(StoredMembership::new(Some(log_id(2, at)), membership));
        m.last_applied = Some(log_id(2, applied));
        m
    }

    #[test]
    fn a_committed_joint_configuration_on_the_leader_is_abandoned() {
        let m = metrics(
            ServerState::Leader,
            vec![vec![0, 1, 2], vec![0, 1, 2, 3]],
            40,
            41,
        );
        assert_eq!(abandoned_joint(&m), Some(log_id(2, 40)));
    }

    #[test]
    fn an_uncommitted_joint_configuration_is_a_change_in_its_first_step() {
        let m = metrics(
            ServerState::Leader,
            vec![vec![0, 1, 2], vec![0, 1, 2, 3]],
            40,
            39,
        );
        assert_eq!(abandoned_joint(&m), None);
    }

    #[test]
    fn followers_and_uniform_configurations_are_left_alone() {
        let follower = metrics(
            ServerState::Follower,
            vec![vec![0, 1], vec![0, 1, 2]],
            40,
            41,
        );
        assert_eq!(abandoned_joint(&follower), None);
        let uniform = metrics(ServerState::Leader, vec![vec![0, 1, 2]], 40, 41);
        assert_eq!(abandoned_joint(&uniform), None);
    }
}
