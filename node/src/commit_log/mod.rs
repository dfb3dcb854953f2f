//! The commit log the client API serves, as an interface (proglog's dependency inversion): the
//! `log.v1` service is written once against [`CommitLog`] and runs on one local log
//! ([`local::LocalCommitLog`], tests and single-node benchmarks) or on Raft
//! ([`crate::raft::RaftCommitLog`]).
//!
//! It sits between the storage and the consensus layers (`log` → `commit_log` → `raft` → `api`):
//! both implementations depend on it, the API depends on it, and it depends on storage only.

pub mod local;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::log::{Entry, Error as LogError, Log};

/// A record a client asks to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub value: Bytes,
}

/// Role of a cluster member as the client API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    Voter,
    Learner,
}

/// One cluster member as the client API reports it (`GetServers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub id: u64,
    pub rpc_addr: String,
    pub is_leader: bool,
    pub role: MemberRole,
    /// Last offset known to be replicated to this member (0 when unknown).
    pub replicated_offset: u64,
}

/// Why the log behind the API refused or failed a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitLogError {
    #[error("offset {offset} is outside the log's committed range [{first}, {next})")]
    OutOfRange { offset: u64, first: u64, next: u64 },
    #[error("record of {size} bytes is larger than the maximum of {max} bytes")]
    RecordTooLarge { size: u64, max: u64 },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("this node is not the leader{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
        /// False when the write may have been appended before the failure.
        not_applied: bool,
    },
    #[error("no leader is known right now; retry shortly")]
    NoLeader,
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the write's outcome is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A follower asked for an offset the cluster has committed (up to `committed`) but that it
    /// has applied only up to `applied`, and it did not catch up within the read's patience.
    #[error(
        "offset {offset} is committed but not yet replicated to this node (applied up to {applied}, committed up to {committed}); retry here or read from another node"
    )]
    NotYetReplicated {
        offset: u64,
        applied: u64,
        committed: u64,
    },
}

/// What a storage failure means to a client: the offsets and sizes it asked about are kept, a
/// closed log is a node shutting down, and anything else is a storage failure.
impl From<LogError> for CommitLogError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::OutOfRange {
                offset,
                first,
                next,
            } => CommitLogError::OutOfRange {
                offset,
                first,
                next,
            },
            LogError::RecordTooLarge { size, max } => CommitLogError::RecordTooLarge { size, max },
            LogError::Closed => CommitLogError::ShuttingDown,
            other => CommitLogError::Storage(other.to_string()),
        }
    }
}

fn leader_hint(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("; the leader is node {id} at {addr}"),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => String::new(),
    }
}

/// The commit log the client API serves: appends that return once committed, reads of
/// committed entries only, and a watch of the commit watermark so consumers never poll.
#[async_trait]
pub trait CommitLog: Send + Sync + 'static {
    /// Appends data records; returns their offsets, in order, once they are committed.
    /// A refused request appends nothing.
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<u64>, CommitLogError>;

    /// Reads committed entries starting at `from`: at least one when `from` is committed, up
    /// to `max_entries` / about `max_bytes`. `OutOfRange` when `from` is below the first offset
    /// or at/after the commit watermark.
    async fn read(
        &self,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, CommitLogError>;

    /// The commit watermark: the offset after the last committed entry. Changes wake waiters.
    fn committed(&self) -> watch::Receiver<u64>;

    /// The first offset still stored.
    fn first_offset(&self) -> u64;

    /// The largest record value accepted.
    fn max_record_bytes(&self) -> u64;

    /// The members as this node knows them; changes wake waiters.
    fn servers(&self) -> watch::Receiver<Arc<Vec<ServerInfo>>>;
}

/// Reads entries of `log` from `from`, never at or past `watermark` (the commit or applied
/// watermark: entries above it may be on disk but are not committed yet). Shared by both
/// implementations so they answer the edges identically: `OutOfRange` below the first stored
/// offset and at or past the watermark, with the watermark as the range's end.
pub async fn read_below(
    log: &Log,
    watermark: u64,
    from: u64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Vec<Entry>, CommitLogError> {
    let first = log.first_offset();
    if from >= watermark || from < first {
        return Err(CommitLogError::OutOfRange {
            offset: from,
            first,
            next: watermark,
        });
    }
    let max_entries = max_entries
        .max(1)
        .min(usize::try_from(watermark - from).unwrap_or(usize::MAX));
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.read_range(from, max_entries, max_bytes))
        .await
        .map_err(|e| CommitLogError::Storage(format!("read task failed: {e}")))?
        .map_err(|e| match e {
            LogError::OutOfRange { offset, first, .. } => CommitLogError::OutOfRange {
                offset,
                first,
                next: watermark,
            },
            other => CommitLogError::from(other),
        })
}
