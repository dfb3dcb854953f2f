//! Snapshot metadata and the snapshot RPC ↔ `raft.v1.SnapshotMeta`, `InstallSnapshotRequest`,
//! `SnapshotResponse`. A snapshot has no data (the log is the state), so the metadata is all.

use openraft::raft::SnapshotResponse;

use super::vote::required_vote;
use super::{ConvertError, FromPb, ToPb, log_id, proto, required};
use crate::raft::types::{SnapshotMeta, StoredMembership, TypeConfig};

impl ToPb for SnapshotMeta {
    type Pb = proto::SnapshotMeta;

    fn to_pb(&self) -> proto::SnapshotMeta {
        proto::SnapshotMeta {
            last_log_id: log_id::to_pb(self.last_log_id.as_ref()),
            last_membership: Some(self.last_membership.to_pb()),
        }
    }
}

impl FromPb for SnapshotMeta {
    type Pb = proto::SnapshotMeta;

    fn from_pb(meta: proto::SnapshotMeta) -> Result<Self, ConvertError> {
        Ok(SnapshotMeta {
            last_log_id: log_id::from_pb(meta.last_log_id),
            last_membership: StoredMembership::from_pb(required(
                meta.last_membership,
                "SnapshotMeta.last_membership",
            )?)?,
        })
    }
}

impl ToPb for SnapshotResponse<TypeConfig> {
    type Pb = proto::SnapshotResponse;

    fn to_pb(&self) -> proto::SnapshotResponse {
        proto::SnapshotResponse {
            vote: Some(self.vote.to_pb()),
        }
    }
}

impl FromPb for SnapshotResponse<TypeConfig> {
    type Pb = proto::SnapshotResponse;

    fn from_pb(resp: proto::SnapshotResponse) -> Result<Self, ConvertError> {
        Ok(SnapshotResponse::new(required_vote(
            resp.vote,
            "SnapshotResponse.vote",
        )?))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::strategies::{log_id as any_log_id, stored_membership, vote};
    use super::*;

    proptest! {
        #[test]
        fn snapshot_meta_round_trips(
            last in proptest::option::of(any_log_id()),
            membership in stored_membership(),
        ) {
            let meta = SnapshotMeta { last_log_id: last, last_membership: membership };
            let back = SnapshotMeta::from_pb(meta.to_pb()).expect("valid");
            prop_assert_eq!(back, meta);
        }

        #[test]
        fn snapshot_responses_round_trip(v in vote()) {
            let resp = SnapshotResponse::<TypeConfig>::new(v);
            let back = SnapshotResponse::from_pb(resp.to_pb()).expect("valid");
            prop_assert_eq!(back, resp);
        }
    }
}
