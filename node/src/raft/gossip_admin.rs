//! The Raft side of gossip membership: [`ClusterAdmin`] as the [`RaftAdmin`] the membership
//! reconciler drives (ARCHITECTURE decision 4 — gossip discovers, Raft decides). Every change
//! goes through the same admin path as `logctl admin add|remove`.

use async_trait::async_trait;
use logcluster_api::admin_v1::{Member, MemberRole};

use super::cluster_admin::ClusterAdmin;
use crate::membership::{RaftAdmin, RaftAdminError, RaftMember, RaftView};

#[async_trait]
impl RaftAdmin for ClusterAdmin {
    fn view(&self) -> RaftView {
        let status = self.status();
        RaftView {
            is_leader: status.leader_id == Some(status.node_id),
            changing: status.membership_changing,
            members: status
                .members
                .into_iter()
                .map(|m| RaftMember {
                    node_id: m.node_id,
                    voter: m.role() != MemberRole::Learner,
                    rpc_addr: m.rpc_addr,
                })
                .collect(),
        }
    }

    async fn add_and_promote(&self, node_id: u64, rpc_addr: &str) -> Result<(), RaftAdminError> {
        let member = Member {
            node_id,
            rpc_addr: rpc_addr.to_owned(),
        };
        // `forwarded = true`: the reconciler acts only on the leader, and a leadership change
        // in between must fail the call (it is retried on the next pass), not hop elsewhere.
        self.add_node(member, true, true)
            .await
            .map(|_| ())
            .map_err(RaftAdminError::new)
    }

    async fn remove(&self, node_id: u64) -> Result<(), RaftAdminError> {
        self.remove_node(node_id, true)
            .await
            .map(|_| ())
            .map_err(RaftAdminError::new)
    }
}
