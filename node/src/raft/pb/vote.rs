//! `Vote` and the vote RPCs ↔ `raft.v1.Vote`, `VoteRequest`, `VoteResponse`.

use openraft::raft::{VoteRequest, VoteResponse};

use super::{ConvertError, FromPb, ToPb, log_id, proto, required};
use crate::raft::types::{TypeConfig, Vote};

impl ToPb for Vote {
    type Pb = proto::Vote;

    fn to_pb(&self) -> proto::Vote {
        proto::Vote {
            term: self.leader_id.term,
            node_id: self.leader_id.voted_for,
            committed: self.committed,
        }
    }
}

impl FromPb for Vote {
    type Pb = proto::Vote;

    fn from_pb(vote: proto::Vote) -> Result<Self, ConvertError> {
        Ok(if vote.committed {
            Vote::new_committed(vote.term, vote.node_id)
        } else {
            Vote::new(vote.term, vote.node_id)
        })
    }
}

/// A required vote field.
pub fn required_vote(vote: Option<proto::Vote>, field: &str) -> Result<Vote, ConvertError> {
    Vote::from_pb(required(vote, field)?)
}

impl ToPb for VoteRequest<TypeConfig> {
    type Pb = proto::VoteRequest;

    fn to_pb(&self) -> proto::VoteRequest {
        proto::VoteRequest {
            vote: Some(self.vote.to_pb()),
            last_log_id: log_id::to_pb(self.last_log_id.as_ref()),
            leadership_transfer: self.leadership_transfer,
        }
    }
}

impl FromPb for VoteRequest<TypeConfig> {
    type Pb = proto::VoteRequest;

    fn from_pb(req: proto::VoteRequest) -> Result<Self, ConvertError> {
        Ok(VoteRequest {
            vote: required_vote(req.vote, "VoteRequest.vote")?,
            last_log_id: log_id::from_pb(req.last_log_id),
            leadership_transfer: req.leadership_transfer,
        })
    }
}

impl ToPb for VoteResponse<TypeConfig> {
    type Pb = proto::VoteResponse;

    fn to_pb(&self) -> proto::VoteResponse {
        proto::VoteResponse {
            vote: Some(self.vote.to_pb()),
            vote_granted: self.vote_granted,
            last_log_id: log_id::to_pb(self.last_log_id.as_ref()),
        }
    }
}

impl FromPb for VoteResponse<TypeConfig> {
    type Pb = proto::VoteResponse;

    fn from_pb(resp: proto::VoteResponse) -> Result<Self, ConvertError> {
        Ok(VoteResponse {
            vote: required_vote(resp.vote, "VoteResponse.vote")?,
            vote_granted: resp.vote_granted,
            last_log_id: log_id::from_pb(resp.last_log_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::strategies::{log_id, vote};
    use super::*;

    proptest! {
        #[test]
        fn votes_round_trip(v in vote()) {
            prop_assert_eq!(Vote::from_pb(v.to_pb()).expect("valid"), v);
        }

        #[test]
        fn vote_requests_round_trip(v in vote(), last in proptest::option::of(log_id()), transfer: bool) {
            let req = VoteRequest::<TypeConfig> { vote: v, last_log_id: last, leadership_transfer: transfer };
            prop_assert_eq!(VoteRequest::from_pb(req.to_pb()).expect("valid"), req);
        }

        #[test]
        fn vote_responses_round_trip(v in vote(), last in proptest::option::of(log_id()), granted: bool) {
            let resp = VoteResponse::<TypeConfig> { vote: v, vote_granted: granted, last_log_id: last };
            prop_assert_eq!(VoteResponse::from_pb(resp.to_pb()).expect("valid"), resp);
        }
    }

    #[test]
    fn a_vote_request_without_a_vote_is_refused() {
        let err = VoteRequest::<TypeConfig>::from_pb(proto::VoteRequest::default())
            .expect_err("missing vote");
        assert!(err.0.contains("VoteRequest.vote"), "{err}");
    }
}
