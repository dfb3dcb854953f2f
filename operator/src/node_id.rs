//! The identity of a node, shared by the admin client ([`crate::node_client`]) and the decisions
//! made about nodes ([`crate::scaling`], [`crate::rollout`]) without either depending on the other.

/// A Raft node id: the StatefulSet ordinal of its pod.
pub type NodeId = u64;
