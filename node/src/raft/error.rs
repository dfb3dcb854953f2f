//! Errors of the Raft node (start-up, bootstrap, join, leave, shutdown).

use std::path::PathBuf;

use super::stable_store::StableStoreError;

/// Result of [`RaftNode`](super::RaftNode) operations.
pub type Result<T, E = RaftNodeError> = std::result::Result<T, E>;

/// Why the Raft node could not start or complete an operation.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error("commit log: {0}")]
    Log(#[from] crate::log::Error),
    #[error(transparent)]
    StableStore(#[from] StableStoreError),
    #[error("Raft storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The log holds entries (or a purge point / applied state) but the stable store has no
    /// vote: the store was lost or replaced. Starting would let this node vote twice in a term.
    #[error(
        "the Raft state store in {} has no vote although the commit log holds data: it was lost or \
         damaged; refusing to start (restore it, or wipe the whole data directory and re-add the node)",
        path.display()
    )]
    VoteStoreLost { path: PathBuf },
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error("Raft: {0}")]
    Raft(String),
    #[error("joining the cluster failed: {0}")]
    Join(String),
    #[error("leaving the cluster failed: {0}")]
    Leave(String),
}
