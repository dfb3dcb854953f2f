//! Leader transfer ↔ `raft.v1.TransferLeaderRequest`, `TransferLeaderResponse`.

use openraft::raft::{TransferLeaderError, TransferLeaderRequest, TransferLeaderResponse};

use super::vote::required_vote;
use super::{ConvertError, FromPb, ToPb, log_id, proto, required};
use crate::raft::types::TypeConfig;

use proto::transfer_leader_response::Result as TransferResult;

impl ToPb for TransferLeaderRequest<TypeConfig> {
    type Pb = proto::TransferLeaderRequest;

    fn to_pb(&self) -> proto::TransferLeaderRequest {
        proto::TransferLeaderRequest {
            from_leader: Some(self.from_leader().to_pb()),
            to_node_id: *self.to_node_id(),
            last_log_id: log_id::to_pb(self.last_log_id()),
        }
    }
}

impl FromPb for TransferLeaderRequest<TypeConfig> {
    type Pb = proto::TransferLeaderRequest;

    fn from_pb(req: proto::TransferLeaderRequest) -> Result<Self, ConvertError> {
        Ok(TransferLeaderRequest::new(
            required_vote(req.from_leader, "TransferLeaderRequest.from_leader")?,
            req.to_node_id,
            log_id::from_pb(req.last_log_id),
        ))
    }
}

/// A transfer-leader outcome as its response message.
pub fn transfer_response_to_pb(
    resp: &TransferLeaderResponse<TypeConfig>,
) -> proto::TransferLeaderResponse {
    let result = match resp {
        Ok(()) => TransferResult::Ok(proto::Empty {}),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            TransferResult::VoteChanged(proto::VoteChanged {
                expected: Some(expected.to_pb()),
                actual: Some(actual.to_pb()),
            })
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
            TransferResult::LogNotFlushed(proto::LogNotFlushed {
                expected: log_id::to_pb(expected.as_ref()),
                actual: log_id::to_pb(actual.as_ref()),
            })
        }
    };
    proto::TransferLeaderResponse {
        result: Some(result),
    }
}

/// A transfer-leader response message as its outcome.
pub fn transfer_response_from_pb(
    resp: proto::TransferLeaderResponse,
) -> Result<TransferLeaderResponse<TypeConfig>, ConvertError> {
    Ok(
        match required(resp.result, "TransferLeaderResponse.result")? {
            TransferResult::Ok(_) => Ok(()),
            TransferResult::VoteChanged(v) => Err(TransferLeaderError::VoteChanged {
                expected: required_vote(v.expected, "VoteChanged.expected")?,
                actual: required_vote(v.actual, "VoteChanged.actual")?,
            }),
            TransferResult::LogNotFlushed(l) => Err(TransferLeaderError::LogNotFlushed {
                expected: log_id::from_pb(l.expected),
                actual: log_id::from_pb(l.actual),
            }),
        },
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::strategies::{log_id as any_log_id, vote};
    use super::*;

    proptest! {
        #[test]
        fn transfer_requests_round_trip(v in vote(), to in 0u64..16, last in proptest::option::of(any_log_id())) {
            let req = TransferLeaderRequest::<TypeConfig>::new(v, to, last);
            let back = TransferLeaderRequest::from_pb(req.to_pb()).expect("valid");
            prop_assert_eq!(back, req);
        }

        #[test]
        fn transfer_responses_round_trip(
            a in vote(), b in vote(),
            x in proptest::option::of(any_log_id()), y in proptest::option::of(any_log_id()),
            which in 0u8..3,
        ) {
            let resp: TransferLeaderResponse<TypeConfig> = match which {
                0 => Ok(()),
                1 => Err(TransferLeaderError::VoteChanged { expected: a, actual: b }),
                _ => Err(TransferLeaderError::LogNotFlushed { expected: x, actual: y }),
            };
            let back = transfer_response_from_pb(transfer_response_to_pb(&resp)).expect("valid");
            prop_assert_eq!(back, resp);
        }
    }
}
