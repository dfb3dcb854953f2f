//! The segmented commit log: the node's only copy of every record (it is also the Raft log, see
//! ARCHITECTURE decision 1).
//!
//! # Files
//!
//! A log is a directory of segments. Segment `B` holds the entries `B..E` in two files named by
//! `B` zero-padded to 20 digits: `<B>.store` (frames, see [`frame`]) and `<B>.index` (12-byte
//! entries `relative offset u32 | position u64`, memory-mapped). The last segment is *active*
//! (appended to, index preallocated to `max_index_bytes`); the others are *sealed* (store synced,
//! index trimmed to its entries and synced). Besides segments the directory holds `LOCK` (an
//! advisory lock: one `Log` per directory) and, only between a clean [`Log::close`] and the next
//! open, `clean-shutdown`.
//!
//! # Writing
//!
//! One writer at a time (appends, truncation, purge, reset are serialised). An append validates
//! the whole batch first (contiguous indexes, record sizes), so a refused batch writes nothing;
//! then it encodes the frames into one buffer, writes them with one positioned write, and only
//! then *publishes* them: index entries, sizes and `next_offset` change under a short exclusive
//! lock, and subscribers are notified. A segment rolls when the next frame would push its store
//! past `max_store_bytes` or its index past `max_index_bytes` (an empty segment accepts any one
//! record). Rolling seals the full segment durably (fdatasync store, msync + trim + fdatasync
//! index) *before* creating the next segment and syncing the directory.
//!
//! Durability follows [`FsyncPolicy`]: `Always` makes [`Log::append`] return after one
//! `fdatasync` of the active store covering the whole batch (plus the syncs of a roll, if the
//! batch crossed one); [`Log::append_unsynced`] + [`Log::sync`] let a caller group-commit many
//! batches with one `fdatasync`. The index is never synced on the append path: it is a cache
//! that recovery rebuilds. A failed fsync (or any write-path I/O error) poisons the log: every
//! later write fails with [`Error::Poisoned`], and only reopening (after a restart) recovers.
//!
//! # Reading
//!
//! Readers look positions up in the index under a shared lock held for microseconds, then read
//! the store with `pread` outside the lock, into one buffer per contiguous run of frames. Every
//! frame is checked (CRC, length against the index, index field against the requested offset),
//! so damaged data is reported as [`Error::Corrupt`] and never returned. Truncation and reset
//! bump an epoch before changing bytes a reader may be reading; a reader whose frame fails
//! validation while the epoch moved retries (and then sees the new state), so a concurrent
//! truncation yields old data or `OutOfRange`, never garbage or a false corruption report.
//! Purged and reset segments are unlinked while readers may still hold the file open; those
//! readers simply read the old bytes. Index mappings are only replaced under the exclusive lock.
//!
//! # Recovery (what [`Log::open`] does)
//!
//! 1. Lock the directory; list `<20 digits>.store` / `.index` files (others are ignored).
//! 2. An index without a store is the leftover of an interrupted deletion (deletion removes the
//!    index first): it is deleted when it lies outside the range of stores, and is corruption
//!    when it lies between them.
//! 3. Every segment but the last is opened *sealed* after an O(1) check: index size a positive
//!    multiple of 12, first entry `(0, 0)`, last entry `(n-1, p)`, and the frame at `p` valid
//!    (CRC, index `base+n-1`) and ending exactly at the end of the store. If the check fails,
//!    the whole store is scanned: if every frame is valid the index is rebuilt (it is only a
//!    cache); otherwise open fails with `Corrupt { path, position }` of the first invalid frame.
//!    Sealed data is never dropped silently. Damage inside a sealed segment that the O(1) check
//!    does not touch is found when it is read (every read validates its frames).
//! 4. The last segment is scanned frame by frame from its start: the store is cut (and synced) at
//!    the first torn or invalid frame, and the index is rebuilt from the valid frames. So a
//!    preallocated, stale, or garbage index can never yield a wrong next offset: the store alone
//!    decides. Only after a clean shutdown (marker present) is the last segment opened with the
//!    O(1) check instead of the scan, falling back to the scan if the check fails.
//! 5. Segments must be contiguous (`end` of one = `base` of the next). The one allowed
//!    exception is an interrupted [`Log::reset`]: an *empty* last segment after a gap or
//!    overlap; the segments before it are deleted, completing the reset. Any other gap is
//!    `Corrupt`.
//! 6. Then the marker is removed (and the directory synced), and `durable_offset = next_offset`.
//!
//! Deletions are ordered so that every crash leaves a valid log: truncation deletes the newest
//! segments first (leaving a prefix), purge the oldest first (leaving a suffix), reset deletes
//! segments at or above its new base newest first, then creates the new empty segment, then
//! deletes the rest oldest first; the directory is synced after each segment.

mod error;
pub mod frame;
mod index;
#[allow(clippy::module_inception)]
mod log;
mod segment;
mod store;

pub use error::{Error, Result};
pub use frame::{Entry, EntryKind, LogId};
pub use index::ENTRY_WIDTH;
pub use log::{FsyncPolicy, Log, LogConfig, LogStats};
pub use segment::{INDEX_EXT, STORE_EXT, parse_segment_file_name, segment_paths};
