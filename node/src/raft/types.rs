//! The openraft type configuration of LogCluster and the application record it replicates.
//!
//! Node ids are `u64` (a StatefulSet ordinal, starting at 0); a node is an [`openraft::BasicNode`]
//! whose `addr` is the host:port of its gRPC endpoint. The leader id is openraft's *standard*
//! one (one leader per term), so a committed log id is just `(term, index)`: exactly what a
//! commit-log frame stores.

use std::fmt;

use bytes::Bytes;
use openraft::impls::leader_id_std;

/// A client record as Raft replicates it: the value and the leader's wall clock (milliseconds
/// since the Unix epoch) when the leader accepted the write.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    #[serde(with = "bytes_as_vec")]
    pub value: Bytes,
    pub timestamp_ms: u64,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values can be large and binary: log their size only.
        f.debug_struct("Record")
            .field("value_len", &self.value.len())
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record({} bytes @{}ms)",
            self.value.len(),
            self.timestamp_ms
        )
    }
}

/// serde for `Bytes` without enabling a feature of the `bytes` crate: openraft's `serde`
/// feature requires every `AppData` to be serde, even though LogCluster never serializes records
/// with serde (the wire and disk formats are protobuf and commit-log frames).
mod bytes_as_vec {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Bytes::from)
    }
}

openraft::declare_raft_types!(
    /// LogCluster's openraft types.
    pub TypeConfig:
        D = Record,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        LeaderId = leader_id_std::LeaderId<u64, u64>,
);

/// A node id (the StatefulSet ordinal).
pub type NodeId = u64;
/// A node's address book entry.
pub type Node = openraft::BasicNode;
/// `(term, index)` of a log entry.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A Raft vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A Raft log entry as openraft sees it.
pub type RaftEntry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A voter/learner configuration with node addresses.
pub type Membership = openraft::Membership<NodeId, Node>;
/// A membership with the id of the entry that holds it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata (a snapshot has no data: the log is the state).
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its (empty) data.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// Snapshot data: nothing. The log up to the snapshot is the state; a snapshot only tells a
/// follower where its log must start.
pub type SnapshotData = ();

/// A log id from a term and an index.
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        openraft::vote::leader_id_std::CommittedLeaderId::new(term),
        index,
    )
}
