//! Turns refusals into gRPC statuses with `google.rpc` error details (ErrorInfo in the
//! `logcluster.io` domain plus a LocalizedMessage), so clients act on codes and reasons.

use std::collections::HashMap;

use logcluster_api::errors::{DOMAIN, meta, reason};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::backend::BackendError;

const LOCALE: &str = "en-US";

fn status(code: Code, why: &str, metadata: HashMap<String, String>, message: String) -> Status {
    let mut details = ErrorDetails::with_error_info(why, DOMAIN, metadata);
    details.set_localized_message(LOCALE, message.clone());
    Status::with_error_details(code, message, details)
}

fn kv<const N: usize>(pairs: [(&str, String); N]) -> HashMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl From<BackendError> for Status {
    fn from(error: BackendError) -> Self {
        let message = error.to_string();
        match error {
            BackendError::OutOfRange {
                offset,
                first,
                next,
            } => status(
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
            BackendError::RecordTooLarge { size, max } => status(
                Code::ResourceExhausted,
                reason::RECORD_TOO_LARGE,
                kv([
                    (meta::SIZE, size.to_string()),
                    (meta::MAX, max.to_string()),
                    (meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into()),
                ]),
                message,
            ),
            BackendError::InvalidArgument(_) => invalid_argument(message),
            BackendError::NotLeader {
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
                status(Code::Unavailable, reason::NOT_LEADER, metadata, message)
            }
            BackendError::NoLeader => status(
                Code::Unavailable,
                reason::NO_LEADER,
                kv([(meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into())]),
                message,
            ),
            BackendError::Storage(_) => status(
                Code::Internal,
                reason::STORAGE,
                kv([(meta::WRITE_OUTCOME, meta::WRITE_OUTCOME_UNKNOWN.into())]),
                message,
            ),
            BackendError::OutcomeUnknown(_) => status(
                Code::Unavailable,
                reason::STORAGE,
                kv([(meta::WRITE_OUTCOME, meta::WRITE_OUTCOME_UNKNOWN.into())]),
                message,
            ),
            BackendError::ShuttingDown => status(
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

/// `INVALID_ARGUMENT` for a malformed request (nothing was written).
pub fn invalid_argument(message: String) -> Status {
    status(
        Code::InvalidArgument,
        reason::INVALID_REQUEST,
        kv([(meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into())]),
        message,
    )
}

/// `PERMISSION_DENIED` from the ACL.
pub fn permission_denied(subject: &str, object: &str, action: &str) -> Status {
    status(
        Code::PermissionDenied,
        reason::PERMISSION_DENIED,
        kv([
            (meta::SUBJECT, subject.to_owned()),
            (meta::OBJECT, object.to_owned()),
            (meta::ACTION, action.to_owned()),
            (meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into()),
        ]),
        format!("subject `{subject}` is not permitted to {action} on `{object}`"),
    )
}

/// `UNAUTHENTICATED`: no verified client identity.
pub fn unauthenticated(why: &str) -> Status {
    status(
        Code::Unauthenticated,
        reason::UNAUTHENTICATED,
        kv([(meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into())]),
        format!("no verified client identity: {why}"),
    )
}
