//! Turns refusals into gRPC statuses with `google.rpc` error details (ErrorInfo in the
//! `logcluster.io` domain plus a LocalizedMessage), so clients act on codes and reasons.

use logcluster_api::errors::{meta, metadata as kv, reason, refusal};
use openraft::errors::Fatal;
use tonic::{Code, Status};

use crate::commit_log::CommitLogError;
use crate::raft::AdminError;
use crate::raft::types::TypeConfig;

impl From<CommitLogError> for Status {
    fn from(error: CommitLogError) -> Self {
        let message = error.to_string();
        match error {
            CommitLogError::OutOfRange {
                offset,
                first,
                next,
            } => refusal(
                Code::OutOfRange,
                reason::OFFSET_OUT_OF_RANGE,
                kv([
                    (meta::OFFSET, offset.to_string()),
                    (meta::FIRST_OFFSET, first.to_string()),
                    (meta::NEXT_OFFSET, next.to_string()),
                ]),
                // proglog's wording, so its users recognise it.
                format!(
                    "the requested offset is outside the log's range: {offset} (committed range is [{first}, {next}))"
                ),
            ),
            CommitLogError::RecordTooLarge { size, max } => refusal(
                Code::ResourceExhausted,
                reason::RECORD_TOO_LARGE,
                kv([
                    (meta::SIZE, size.to_string()),
                    (meta::MAX, max.to_string()),
                    (meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into()),
                ]),
                message,
            ),
            CommitLogError::NotYetReplicated {
                offset,
                applied,
                committed,
            } => refusal(
                // Not OUT_OF_RANGE: the record exists; proglog clients would take that for the
                // end of the log.
                Code::Unavailable,
                reason::NOT_YET_REPLICATED,
                kv([
                    (meta::OFFSET, offset.to_string()),
                    (meta::NEXT_OFFSET, applied.to_string()),
                    (meta::COMMITTED_OFFSET, committed.to_string()),
                ]),
                message,
            ),
            CommitLogError::InvalidArgument(_) => invalid_argument(message),
            CommitLogError::NotLeader {
                leader_id,
                leader_addr,
                not_applied,
            } => {
                let mut metadata = kv([(meta::WRITE_OUTCOME, write_outcome(not_applied))]);
                if let Some(id) = leader_id {
                    metadata.insert(meta::LEADER_ID.into(), id.to_string());
                }
                if let Some(addr) = leader_addr {
                    metadata.insert(meta::LEADER_ADDR.into(), addr);
                }
                refusal(Code::Unavailable, reason::NOT_LEADER, metadata, message)
            }
            CommitLogError::NoLeader => refusal(
                Code::Unavailable,
                reason::NO_LEADER,
                kv([(meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into())]),
                message,
            ),
            CommitLogError::Storage(_) => refusal(
                Code::Internal,
                reason::STORAGE,
                kv([(meta::WRITE_OUTCOME, meta::WRITE_OUTCOME_UNKNOWN.into())]),
                message,
            ),
            CommitLogError::OutcomeUnknown(_) => refusal(
                Code::Unavailable,
                reason::STORAGE,
                kv([(meta::WRITE_OUTCOME, meta::WRITE_OUTCOME_UNKNOWN.into())]),
                message,
            ),
            CommitLogError::ShuttingDown => refusal(
                Code::Unavailable,
                reason::SHUTTING_DOWN,
                kv([(meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into())]),
                message,
            ),
        }
    }
}

fn write_outcome(not_applied: bool) -> String {
    if not_applied {
        meta::WRITE_NOT_APPLIED.into()
    } else {
        meta::WRITE_OUTCOME_UNKNOWN.into()
    }
}

/// One code per kind of admin refusal; routing failures carry the same leader hint (error
/// details) as a produce sent to a follower, so clients retry them the same way.
impl From<AdminError> for Status {
    fn from(error: AdminError) -> Self {
        let message = error.to_string();
        match error {
            AdminError::NoVoters
            | AdminError::NotAmongVoters { .. }
            | AdminError::BadAddress { .. } => Status::invalid_argument(message),
            AdminError::InitializedDifferently { .. }
            | AdminError::LastVoter { .. }
            | AdminError::NotAVoter { .. }
            | AdminError::NoOtherVoter
            | AdminError::Refused(_) => Status::failed_precondition(message),
            AdminError::ChangeInProgress(_) => Status::aborted(message),
            AdminError::CatchUpTimedOut { .. }
            | AdminError::ChangeTimedOut
            | AdminError::TransferTimedOut { .. } => Status::deadline_exceeded(message),
            AdminError::NotLeader {
                leader_id,
                leader_addr,
            } => CommitLogError::NotLeader {
                leader_id: Some(leader_id),
                leader_addr,
                not_applied: true,
            }
            .into(),
            AdminError::NoLeader => CommitLogError::NoLeader.into(),
            AdminError::ShuttingDown => CommitLogError::ShuttingDown.into(),
            AdminError::LeaderWithoutAddress { .. } | AdminError::NoLeaderAfterTransfer => {
                Status::unavailable(message)
            }
            AdminError::Leader(status) => status,
            AdminError::Fatal(_) | AdminError::ChangeTaskFailed(_) => Status::internal(message),
        }
    }
}

/// Raft stopped under a call, for every service alike: `UNAVAILABLE` (shutting down, with the
/// details of [`CommitLogError::ShuttingDown`]) when it was asked to stop, `INTERNAL` otherwise.
pub fn fatal_status(fatal: Fatal<TypeConfig>) -> Status {
    AdminError::from(fatal).into()
}

/// `INVALID_ARGUMENT` for a malformed request (nothing was written).
pub fn invalid_argument(message: String) -> Status {
    refusal(
        Code::InvalidArgument,
        reason::INVALID_REQUEST,
        kv([(meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into())]),
        message,
    )
}
