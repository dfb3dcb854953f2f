//! Errors of the commit log.
//!
//! Every variant carries what an operator or a caller needs to act: the valid offset range for
//! out-of-range reads, the expected index for non-contiguous appends, the file and byte position
//! for corruption, the file and the operation for I/O failures.

use std::io;
use std::path::{Path, PathBuf};

/// Result of commit-log operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the commit log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The offset is below the first offset or at/after the next offset of the log.
    /// `first..next` is the range that can be read right now (empty when `first == next`).
    #[error("offset {offset} is out of range: the log holds offsets {first}..{next}")]
    OutOfRange { offset: u64, first: u64, next: u64 },

    /// Appended entries must carry the indexes `next_offset, next_offset + 1, …` in order.
    #[error(
        "non-contiguous append: expected entry index {expected} (the log's next offset, or the \
         previous entry + 1), got {got}"
    )]
    NonContiguous { expected: u64, got: u64 },

    /// A payload is larger than `LogConfig::max_record_bytes`; the whole batch was refused and
    /// nothing was written.
    #[error(
        "record of {size} bytes exceeds the maximum record size of {max} bytes; nothing was written"
    )]
    RecordTooLarge { size: u64, max: u64 },

    /// Data on disk failed validation (CRC, framing, index/store disagreement). Never returned
    /// as data.
    #[error("corrupt log file {}: at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    /// An I/O operation on a log file or directory failed.
    #[error("log I/O error: {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"write"`, `"fdatasync"`, `"open"`, …).
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The log was closed with [`Log::close`](super::Log::close).
    #[error("the log is closed")]
    Closed,

    /// An earlier write-path failure (typically a failed fsync) made the log refuse all further
    /// writes. The data on disk is recovered by reopening the log (restart the process): a
    /// failed fsync is never retried, because the kernel may already have dropped the dirty pages.
    #[error("the log refuses writes after an earlier failure: {cause}")]
    Poisoned { cause: String },

    /// Another `Log` (in this or another process) has the directory open.
    #[error("log directory {} is locked by another process or Log instance", path.display())]
    Locked { path: PathBuf },

    /// The configuration cannot work (for example an index too small for one entry).
    #[error("invalid log configuration: {reason}")]
    InvalidConfig { reason: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.to_path_buf(),
            position,
            reason: reason.into(),
        }
    }
}
