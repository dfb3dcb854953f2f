//! `LogId` ↔ `raft.v1.LogId`.

use super::{ConvertError, FromPb, ToPb, proto};
use crate::raft::types::{LogId, log_id};

impl ToPb for LogId {
    type Pb = proto::LogId;

    fn to_pb(&self) -> proto::LogId {
        proto::LogId {
            term: self.leader_id.term,
            index: self.index,
        }
    }
}

impl FromPb for LogId {
    type Pb = proto::LogId;

    fn from_pb(id: proto::LogId) -> Result<Self, ConvertError> {
        Ok(log_id(id.term, id.index))
    }
}

/// An optional log id to its message.
pub fn to_pb(id: Option<&LogId>) -> Option<proto::LogId> {
    id.map(LogId::to_pb)
}

/// An optional message to its log id.
pub fn from_pb(id: Option<proto::LogId>) -> Option<LogId> {
    id.map(|id| log_id(id.term, id.index))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::strategies::log_id;
    use super::*;

    proptest! {
        #[test]
        fn log_ids_round_trip(id in log_id()) {
            prop_assert_eq!(LogId::from_pb(id.to_pb()).expect("valid"), id);
        }
    }
}
