//! Why an admin operation ([`super::ClusterAdmin`]) was refused or failed. The gRPC service maps
//! each variant to one status code (`crate::api::status`), so the admin logic never speaks gRPC.

use std::collections::BTreeSet;
use std::time::Duration;

use super::types::NodeId;

/// A refused or failed admin operation.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    // The request itself is wrong (`INVALID_ARGUMENT`).
    #[error("at least one voter is required")]
    NoVoters,
    #[error("this node ({node_id}) must be one of the voters")]
    NotAmongVoters { node_id: NodeId },
    #[error("rpc_addr {addr:?} is not host:port")]
    BadAddress { addr: String },

    // The cluster is not in a state that allows it (`FAILED_PRECONDITION`).
    #[error("the cluster is already initialized with voters {current:?}, not {requested:?}")]
    InitializedDifferently {
        current: BTreeSet<NodeId>,
        requested: BTreeSet<NodeId>,
    },
    #[error("node {node_id} is the only voter; a cluster cannot remove its last voter")]
    LastVoter { node_id: NodeId },
    #[error("node {node_id} is not a voter")]
    NotAVoter { node_id: NodeId },
    #[error("there is no other voter to lead")]
    NoOtherVoter,
    /// openraft refused the change for a reason of its own (e.g. a node not in the membership).
    #[error("{0}")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another membership change has not committed yet (`ABORTED`: retry).
    #[error("{0}; retry once it has committed")]
    ChangeInProgress(String),

    // Waiting took too long (`DEADLINE_EXCEEDED`); the operation may still complete.
    #[error("node {node_id} did not catch up within {after:?}; retry to keep waiting")]
    CatchUpTimedOut { node_id: NodeId, after: Duration },
    #[error("the membership change did not commit in time; it goes on, retry to see it")]
    ChangeTimedOut,
    #[error("leadership did not move to node {target}: {source}")]
    TransferTimedOut {
        target: NodeId,
        #[source]
        source: super::metrics_watch::WaitError,
    },

    // Routing to the leader (`UNAVAILABLE` with the leader hint in the details).
    #[error("this node is not the leader; the leader is node {leader_id}")]
    NotLeader {
        leader_id: NodeId,
        leader_addr: Option<String>,
    },
    #[error("no leader is known right now; retry shortly")]
    NoLeader,
    #[error("the new leader (node {leader_id}) has no address")]
    LeaderWithoutAddress { leader_id: NodeId },
    #[error("no leader after the transfer")]
    NoLeaderAfterTransfer,
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The leader answered a forwarded call with this status: passed on unchanged.
    #[error("the leader answered: {}", .0.message())]
    Leader(tonic::Status),

    // This node is broken (`INTERNAL`).
    #[error("raft stopped: {0}")]
    Fatal(#[source] openraft::errors::Fatal<super::types::TypeConfig>),
    #[error("the membership change task failed: {0}")]
    ChangeTaskFailed(#[source] tokio::task::JoinError),
}
