//! Conversions between openraft's messages and the `raft.v1` protobuf messages, one file per
//! message family. Decoding validates: a message from the network that lacks a required field
//! or carries an unknown enum value is a [`ConvertError`], never a panic.

mod append;
mod entry;
mod log_id;
mod membership;
mod snapshot;
mod transfer;
mod vote;

pub use append::{stream_append_result_from_pb, stream_append_result_to_pb};
pub use logcluster_api::raft_v1 as proto;
pub use transfer::{transfer_response_from_pb, transfer_response_to_pb};

/// Encodes an openraft value as its `raft.v1` message. (A local trait: both sides of the
/// conversion are foreign types, so `From` cannot be implemented here.)
pub trait ToPb {
    type Pb;
    fn to_pb(&self) -> Self::Pb;
}

/// Decodes a `raft.v1` message into an openraft value, validating it.
pub trait FromPb: Sized {
    type Pb;
    fn from_pb(pb: Self::Pb) -> Result<Self, ConvertError>;
}

/// A protobuf message that does not describe a valid openraft message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft.v1 message: {0}")]
pub struct ConvertError(pub String);

impl ConvertError {
    pub(crate) fn missing(field: &str) -> Self {
        ConvertError(format!("required field `{field}` is missing"))
    }
}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Takes a required message field.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, ConvertError> {
    value.ok_or_else(|| ConvertError::missing(field))
}

#[cfg(test)]
pub(crate) mod strategies;
