//! What a client call can fail with, decided from gRPC codes and `google.rpc.ErrorInfo`
//! reasons (never from message text).

use std::collections::HashMap;
use std::path::PathBuf;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::errors::{DOMAIN, meta, reason};

/// A failed client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the TLS {what} file {}: {source}", path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid server address `{addr}`: {reason}")]
    InvalidAddress { addr: String, reason: String },
    #[error("no server could be reached (tried {tried}): {last_error}")]
    NoServerReachable { tried: String, last_error: String },
    #[error("offset {offset} is outside the log's committed range [{first}, {next})")]
    OutOfRange { offset: u64, first: u64, next: u64 },
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("too large: {0}")]
    TooLarge(String),
    /// The produce may or may not have been appended (e.g. the connection broke after the
    /// request was sent). Retrying could write the record twice.
    #[error("the outcome of the write is unknown (it may or may not have been appended): {0}")]
    OutcomeUnknown(String),
    /// The cluster could not serve the call before the retry deadline.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
    /// A server returned a record for an offset no log reaches (`u64::MAX`).
    #[error("the server returned a record (offset {offset}) for an offset past any end of the log")]
    RecordPastTheEnd { offset: u64 },
    /// A record was sent on a stream that has ended (its responses say how).
    #[error("the stream has ended; its responses tell how")]
    StreamClosed,
    #[error("{0}")]
    Other(Status),
}

/// What a status says about a call, for retry decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusInfo {
    pub code: Code,
    pub reason: Option<String>,
    pub metadata: HashMap<String, String>,
}

impl StatusInfo {
    pub fn of(status: &Status) -> Self {
        let details = status.get_error_details();
        let (reason, metadata) = match details.error_info() {
            Some(info) if info.domain == DOMAIN => {
                (Some(info.reason.clone()), info.metadata.clone())
            }
            _ => (None, HashMap::new()),
        };
        StatusInfo {
            code: status.code(),
            reason,
            metadata,
        }
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.metadata.get(key).and_then(|v| v.parse().ok())
    }

    /// The leader's address if the server named one.
    pub fn leader_addr(&self) -> Option<String> {
        self.metadata.get(meta::LEADER_ADDR).cloned()
    }

    /// The server says the write was surely not appended.
    pub fn write_not_applied(&self) -> bool {
        self.metadata.get(meta::WRITE_OUTCOME).map(String::as_str) == Some(meta::WRITE_NOT_APPLIED)
    }

    /// Worth trying again on another server or after an election.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.reason.as_deref(),
            Some(reason::NOT_LEADER | reason::NO_LEADER | reason::SHUTTING_DOWN)
        ) || (self.code == Code::Unavailable && self.reason.is_none())
    }
}

/// The call failed on the way, not by the server's decision about it: the connection broke, it
/// took too long, the server is overloaded or restarting. Another server or a later attempt may
/// answer. Anything else is the server's answer about the request and is taken as such.
pub(crate) fn is_transient(status: &Status) -> bool {
    match status.code() {
        // NB: tonic reports HTTP/2 stream resets as INTERNAL; our server reports storage
        // failures as INTERNAL too, which another replica may not have.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::Internal => true,
        // tonic's own report of a broken transport carries its cause; a server's UNKNOWN does
        // not (proglog answers past-the-end with code 404, which arrives as UNKNOWN).
        Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// A connection to `addr` could not be made, or broke before the request left: such failures
/// are safe to retry even for writes.
pub(crate) fn is_connect_failure(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut text = status.message().to_ascii_lowercase();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        text.push(' ');
        text.push_str(&error.to_string().to_ascii_lowercase());
        source = error.source();
    }
    // NB: tonic reports dial failures as UNAVAILABLE with the connector's error in the chain.
    [
        "tcp connect error",
        "connection refused",
        "error trying to connect",
        "dns error",
        "no route to host",
        // A reconnection inside a channel whose TLS handshake got no answer in time.
        "tls handshake timeout",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        let info = StatusInfo::of(&status);
        let message = status.message().to_owned();
        match (status.code(), info.reason.as_deref()) {
            (_, Some(reason::OFFSET_OUT_OF_RANGE)) => ClientError::OutOfRange {
                offset: info.u64(meta::OFFSET).unwrap_or_default(),
                first: info.u64(meta::FIRST_OFFSET).unwrap_or_default(),
                next: info.u64(meta::NEXT_OFFSET).unwrap_or_default(),
            },
            (Code::PermissionDenied, _) => ClientError::PermissionDenied(message),
            (Code::Unauthenticated, _) => ClientError::Unauthenticated(message),
            (Code::InvalidArgument, _) => ClientError::InvalidArgument(message),
            (Code::ResourceExhausted, _) => ClientError::TooLarge(message),
            // tonic's own message-size limits (ours when encoding, an older server's when
            // decoding) say OUT_OF_RANGE, which is not "past the end of the log".
            (Code::OutOfRange, _) if message.contains("message length too large") => {
                ClientError::TooLarge(message)
            }
            (Code::Unavailable, _) => ClientError::Unavailable(message),
            _ => ClientError::Other(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_size_limits_are_too_large_not_out_of_range() {
        let encode = Status::out_of_range(
            "Error, encoded message length too large: found 67108900 bytes, the limit is: 67108864 bytes",
        );
        assert!(matches!(
            ClientError::from(encode),
            ClientError::TooLarge(_)
        ));
        let end = Status::out_of_range("past the end");
        assert!(matches!(ClientError::from(end), ClientError::Other(_)));
    }

    #[test]
    fn transport_failures_are_transient_and_server_answers_are_not() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Aborted,
            Code::Internal,
        ] {
            assert!(is_transient(&Status::new(code, "x")), "{code:?}");
        }
        for code in [
            Code::NotFound,
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::FailedPrecondition,
            Code::Unknown,
            Code::PermissionDenied,
        ] {
            assert!(!is_transient(&Status::new(code, "x")), "{code:?}");
        }
        let broken = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(
            is_transient(&broken),
            "tonic's report of a broken connection"
        );
    }
}
