//! The error type of the `logcluster-node` library.
//!
//! One enum for the crate; each subsystem contributes a variant wrapping its own typed error so
//! that callers can still match on the details (for example the commit log's
//! [`log::Error::OutOfRange`](crate::log::Error::OutOfRange)).

/// Result of node operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the node library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The commit log failed.
    #[error(transparent)]
    Log(#[from] crate::log::Error),
}
