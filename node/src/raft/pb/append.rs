//! AppendEntries (unary and streamed) ↔ `raft.v1.AppendEntriesRequest`,
//! `AppendEntriesResponse` and `StreamAppendResponse`.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
};

use super::vote::required_vote;
use super::{ConvertError, FromPb, ToPb, log_id, proto, required};
use crate::raft::types::{LogId, RaftEntry, TypeConfig, Vote};

use proto::append_entries_response::Result as AppendResult;
use proto::stream_append_response::Result as StreamResult;

impl ToPb for AppendEntriesRequest<TypeConfig> {
    type Pb = proto::AppendEntriesRequest;

    fn to_pb(&self) -> proto::AppendEntriesRequest {
        proto::AppendEntriesRequest {
            vote: Some(self.vote.to_pb()),
            prev_log_id: log_id::to_pb(self.prev_log_id.as_ref()),
            entries: self.entries.iter().map(RaftEntry::to_pb).collect(),
            leader_commit: log_id::to_pb(self.leader_commit.as_ref()),
        }
    }
}

impl FromPb for AppendEntriesRequest<TypeConfig> {
    type Pb = proto::AppendEntriesRequest;

    fn from_pb(req: proto::AppendEntriesRequest) -> Result<Self, ConvertError> {
        Ok(AppendEntriesRequest {
            vote: required_vote(req.vote, "AppendEntriesRequest.vote")?,
            prev_log_id: log_id::from_pb(req.prev_log_id),
            entries: req
                .entries
                .into_iter()
                .map(RaftEntry::from_pb)
                .collect::<Result<_, _>>()?,
            leader_commit: log_id::from_pb(req.leader_commit),
        })
    }
}

impl ToPb for AppendEntriesResponse<TypeConfig> {
    type Pb = proto::AppendEntriesResponse;

    fn to_pb(&self) -> proto::AppendEntriesResponse {
        let result = match self {
            AppendEntriesResponse::Success => AppendResult::Success(proto::Empty {}),
            AppendEntriesResponse::PartialSuccess(id) => {
                AppendResult::PartialSuccess(proto::PartialSuccess {
                    log_id: log_id::to_pb(id.as_ref()),
                })
            }
            AppendEntriesResponse::Conflict => AppendResult::Conflict(proto::Empty {}),
            AppendEntriesResponse::HigherVote(vote) => AppendResult::HigherVote(vote.to_pb()),
        };
        proto::AppendEntriesResponse {
            result: Some(result),
        }
    }
}

impl FromPb for AppendEntriesResponse<TypeConfig> {
    type Pb = proto::AppendEntriesResponse;

    fn from_pb(resp: proto::AppendEntriesResponse) -> Result<Self, ConvertError> {
        Ok(
            match required(resp.result, "AppendEntriesResponse.result")? {
                AppendResult::Success(_) => AppendEntriesResponse::Success,
                AppendResult::PartialSuccess(p) => {
                    AppendEntriesResponse::PartialSuccess(log_id::from_pb(p.log_id))
                }
                AppendResult::Conflict(_) => AppendEntriesResponse::Conflict,
                AppendResult::HigherVote(vote) => {
                    AppendEntriesResponse::HigherVote(Vote::from_pb(vote)?)
                }
            },
        )
    }
}

/// One stream-append result as its response message.
pub fn stream_append_result_to_pb(
    result: &StreamAppendResult<TypeConfig>,
) -> proto::StreamAppendResponse {
    let result = match result {
        Ok(flushed) => StreamResult::Success(proto::Flushed {
            log_id: log_id::to_pb(flushed.as_ref()),
        }),
        Err(StreamAppendError::Conflict(id)) => StreamResult::Conflict(id.to_pb()),
        Err(StreamAppendError::HigherVote(vote)) => StreamResult::HigherVote(vote.to_pb()),
    };
    proto::StreamAppendResponse {
        result: Some(result),
    }
}

/// A stream-append response message as its result.
pub fn stream_append_result_from_pb(
    resp: proto::StreamAppendResponse,
) -> Result<StreamAppendResult<TypeConfig>, ConvertError> {
    Ok(
        match required(resp.result, "StreamAppendResponse.result")? {
            StreamResult::Success(flushed) => Ok(log_id::from_pb(flushed.log_id)),
            StreamResult::Conflict(id) => Err(StreamAppendError::Conflict(LogId::from_pb(id)?)),
            StreamResult::HigherVote(vote) => {
                Err(StreamAppendError::HigherVote(Vote::from_pb(vote)?))
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::strategies::{entry, log_id as any_log_id, vote};
    use super::*;

    fn requests() -> impl Strategy<Value = AppendEntriesRequest<TypeConfig>> {
        (
            vote(),
            proptest::option::of(any_log_id()),
            proptest::collection::vec(entry(), 0..8),
            proptest::option::of(any_log_id()),
        )
            .prop_map(
                |(vote, prev_log_id, entries, leader_commit)| AppendEntriesRequest {
                    vote,
                    prev_log_id,
                    entries,
                    leader_commit,
                },
            )
    }

    fn responses() -> impl Strategy<Value = AppendEntriesResponse<TypeConfig>> {
        prop_oneof![
            Just(AppendEntriesResponse::Success),
            proptest::option::of(any_log_id()).prop_map(AppendEntriesResponse::PartialSuccess),
            Just(AppendEntriesResponse::Conflict),
            vote().prop_map(AppendEntriesResponse::HigherVote),
        ]
    }

    fn stream_results() -> impl Strategy<Value = StreamAppendResult<TypeConfig>> {
        prop_oneof![
            proptest::option::of(any_log_id()).prop_map(Ok),
            any_log_id().prop_map(|id| Err(StreamAppendError::Conflict(id))),
            vote().prop_map(|v| Err(StreamAppendError::HigherVote(v))),
        ]
    }

    proptest! {
        #[test]
        fn append_requests_round_trip(req in requests()) {
            let back = AppendEntriesRequest::from_pb(req.to_pb()).expect("valid");
            prop_assert_eq!(format!("{back:?}"), format!("{req:?}"));
            prop_assert_eq!(back.entries, req.entries);
        }

        #[test]
        fn append_responses_round_trip(resp in responses()) {
            let back = AppendEntriesResponse::from_pb(resp.to_pb()).expect("valid");
            prop_assert_eq!(back, resp);
        }

        #[test]
        fn stream_results_round_trip(result in stream_results()) {
            let back = stream_append_result_from_pb(stream_append_result_to_pb(&result)).expect("valid");
            prop_assert_eq!(back, result);
        }
    }

    #[test]
    fn a_response_without_a_result_is_refused() {
        assert!(
            AppendEntriesResponse::<TypeConfig>::from_pb(proto::AppendEntriesResponse::default())
                .is_err()
        );
        assert!(stream_append_result_from_pb(proto::StreamAppendResponse::default()).is_err());
    }
}
