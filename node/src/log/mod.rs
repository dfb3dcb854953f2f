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
//! # Recovery
//!
//! [`Log::open`] repairs whatever a crash left (a torn tail, a stale or missing index, an
//! interrupted deletion or reset) before the log is used; the `recovery` module says which crash
//! states it repairs, how, and what it guarantees. In short: the store decides, the index is a
//! cache, and sealed data is never dropped silently.
//!
//! Deletions are ordered so that every crash leaves a valid log: truncation deletes the newest
//! segments first (leaving a prefix), purge the oldest first (leaving a suffix), reset deletes
//! segments at or above its new base newest first, then creates the new empty segment, then
//! deletes the rest oldest first; the directory is synced after each segment.

mod config;
mod error;
pub mod frame;
mod index;
mod recovery;
mod segment;
mod segmented;
mod store;

pub use config::{FsyncPolicy, LogConfig};
pub use error::{Error, Result};
pub use frame::{Entry, EntryKind, LogId};
pub use index::ENTRY_WIDTH;
pub use segment::{INDEX_EXT, STORE_EXT, parse_segment_file_name, segment_paths};
pub use segmented::{Log, LogStats};
