//! The error vocabulary shared by servers and clients.
//!
//! Every refused request carries a `google.rpc.ErrorInfo` detail in domain [`DOMAIN`] with one
//! of the reasons below and metadata keys from [`meta`]; clients decide on retries from these,
//! never from message text.

/// `ErrorInfo.domain` of every LogCluster error.
pub const DOMAIN: &str = "logcluster.io";

/// `ErrorInfo.reason` values.
pub mod reason {
    /// `OUT_OF_RANGE`: the offset is below the log's start or at/after its committed end.
    /// Metadata: `offset`, `first_offset`, `next_offset`.
    pub const OFFSET_OUT_OF_RANGE: &str = "OFFSET_OUT_OF_RANGE";
    /// `RESOURCE_EXHAUSTED`: a record or request is larger than allowed. Metadata: `size`, `max`.
    pub const RECORD_TOO_LARGE: &str = "RECORD_TOO_LARGE";
    /// `INVALID_ARGUMENT`: malformed request.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// `UNAVAILABLE`: this node is not the leader and could not forward. Metadata: `leader_id`,
    /// `leader_addr` when a leader is known.
    pub const NOT_LEADER: &str = "NOT_LEADER";
    /// `UNAVAILABLE`: no leader is known right now (election in progress).
    pub const NO_LEADER: &str = "NO_LEADER";
    /// `PERMISSION_DENIED`: the ACL refused. Metadata: `subject`, `object`, `action`.
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    /// `UNAUTHENTICATED`: no verified client certificate identity.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// `INTERNAL` / `UNAVAILABLE`: storage failed on the node.
    pub const STORAGE: &str = "STORAGE";
    /// `UNAVAILABLE`: the node is shutting down.
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
    /// `UNAVAILABLE`: the offset is committed in the cluster but this node (a follower) has not
    /// applied it yet; another node, or this one a moment later, serves it. Metadata: `offset`,
    /// `next_offset` (this node's applied end), `committed_offset` (the cluster's, as known here).
    pub const NOT_YET_REPLICATED: &str = "NOT_YET_REPLICATED";
}

/// `ErrorInfo.metadata` keys.
pub mod meta {
    pub const OFFSET: &str = "offset";
    pub const FIRST_OFFSET: &str = "first_offset";
    pub const NEXT_OFFSET: &str = "next_offset";
    pub const COMMITTED_OFFSET: &str = "committed_offset";
    pub const SIZE: &str = "size";
    pub const MAX: &str = "max";
    pub const LEADER_ID: &str = "leader_id";
    pub const LEADER_ADDR: &str = "leader_addr";
    pub const SUBJECT: &str = "subject";
    pub const OBJECT: &str = "object";
    pub const ACTION: &str = "action";
    /// Whether a refused write may have been appended anyway: [`WRITE_NOT_APPLIED`] means it
    /// definitely was not (safe to retry), [`WRITE_OUTCOME_UNKNOWN`] means it may have been.
    pub const WRITE_OUTCOME: &str = "write_outcome";
    pub const WRITE_NOT_APPLIED: &str = "not_applied";
    pub const WRITE_OUTCOME_UNKNOWN: &str = "unknown";
}

/// The status servers send for a refusal: `code` and `message`, with an `ErrorInfo` (this
/// [`DOMAIN`], `reason`, `metadata`) and an en-US `LocalizedMessage` repeating the message, so
/// a client decides from the reason and a human reads the message.
pub fn refusal(
    code: tonic::Code,
    reason: &str,
    metadata: std::collections::HashMap<String, String>,
    message: String,
) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    details.set_localized_message("en-US", message.clone());
    tonic::Status::with_error_details(code, message, details)
}

/// Metadata from `(key, value)` pairs.
pub fn metadata<const N: usize>(
    pairs: [(&str, String); N],
) -> std::collections::HashMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
