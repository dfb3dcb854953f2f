//! How a [`Log`](super::Log) is configured: segment limits, the first offset of a new log, the
//! fsync policy and the largest record. Validated once, when the log is opened.

use std::time::Duration;

use super::error::{Error, Result};
use super::frame;
use super::index::ENTRY_WIDTH;

/// When appended data is made durable with `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// [`Log::append`](super::Log::append) returns only after one `fdatasync` covering its
    /// whole batch (and everything appended before it). The default.
    Always,
    /// A background thread calls [`Log::sync`](super::Log::sync) at this interval; appends
    /// return before their data is durable. A crash of the machine can lose up to one interval
    /// of acknowledged data: an explicit, weaker option.
    Interval(Duration),
    /// Tests only: no `fdatasync` is ever issued. [`Log::sync`](super::Log::sync) still moves
    /// [`Log::durable_offset`](super::Log::durable_offset) as if it had synced, so code behaves
    /// as with `Always`, but nothing survives a machine crash (a process crash loses nothing:
    /// the data is in the page cache).
    Never,
}

/// Configuration of a [`Log`](super::Log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls before its store would exceed this many bytes (a single frame larger
    /// than this still gets a segment of its own).
    pub max_store_bytes: u64,
    /// A segment rolls before its index would exceed this many bytes (12 per entry, so at most
    /// `max_index_bytes / 12` entries per segment; must be at least 12).
    pub max_index_bytes: u64,
    /// Offset of the first entry of a new, empty log.
    pub initial_offset: u64,
    pub fsync: FsyncPolicy,
    /// Largest payload accepted, in bytes (the frame adds 33 bytes of header).
    pub max_record_bytes: u32,
}

impl Default for LogConfig {
    /// 1 GiB stores, 10 MiB indexes (873 813 entries), fsync always, 1 MiB records.
    fn default() -> Self {
        LogConfig {
            max_store_bytes: 1 << 30,
            max_index_bytes: 10 << 20,
            initial_offset: 0,
            fsync: FsyncPolicy::Always,
            max_record_bytes: 1 << 20,
        }
    }
}

impl LogConfig {
    /// Refuses a configuration the log cannot honour; [`Log::open`](super::Log::open) calls it
    /// before touching the directory.
    pub(super) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        if self.max_index_bytes < ENTRY_WIDTH {
            return invalid(format!(
                "max_index_bytes {} cannot hold one {ENTRY_WIDTH}-byte entry",
                self.max_index_bytes
            ));
        }
        if self.max_index_bytes / ENTRY_WIDTH > u64::from(u32::MAX) + 1 {
            return invalid(format!(
                "max_index_bytes {} allows more entries per segment than a u32 relative offset \
                 addresses",
                self.max_index_bytes
            ));
        }
        if self.max_store_bytes == 0 {
            return invalid("max_store_bytes must be positive".into());
        }
        if self.max_record_bytes > u32::MAX - frame::MIN_LEN_FIELD {
            return invalid(format!(
                "max_record_bytes {} does not fit the frame's u32 length",
                self.max_record_bytes
            ));
        }
        if self.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return invalid("the fsync interval must be positive".into());
        }
        Ok(())
    }
}
