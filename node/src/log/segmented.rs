//! [`Log`]: the segmented log itself — the write path (append, roll, sync, truncate, purge,
//! reset, close) and the read path over its segments. See the module docs of [`crate::log`]
//! for the design; opening an existing directory is the `recovery` module's job.

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::watch;

use super::config::{FsyncPolicy, LogConfig};
use super::error::{Error, Result};
use super::frame::{self, Entry, FrameHeader, HEADER_LEN, LogId};
use super::index::ENTRY_WIDTH;
use super::recovery::{CLEAN_SHUTDOWN_FILE, recover};
use super::segment::{Segment, sync_dir};
use super::store::{Store, StoreFile, check_first_frame_len, check_frame};

/// Advisory lock file: one `Log` per directory, across processes.
const LOCK_FILE: &str = "LOCK";

/// Figures for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStats {
    pub segments: usize,
    /// Bytes of frames in all stores.
    pub store_bytes: u64,
    /// Bytes of valid index entries (not counting preallocation).
    pub index_bytes: u64,
    pub first_offset: u64,
    pub next_offset: u64,
    pub durable_offset: u64,
}

/// The commit log. Cheap to clone (all clones share one log); `Send + Sync`.
///
/// One writer at a time (writes are serialised internally), any number of concurrent readers.
/// All methods block on file I/O: call them from a blocking context (`spawn_blocking` or a
/// dedicated thread), not from an async task.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    /// Serialises writers (append, roll, truncate, purge, reset, close); holds reusable buffers.
    writer: Mutex<Writer>,
    /// The segments. Readers hold it shared only to look positions up; writers hold it
    /// exclusively only to publish.
    state: RwLock<State>,
    /// Serialises `sync` calls so that concurrent ones coalesce.
    sync_lock: Mutex<()>,
    /// Next offset known durable.
    durable: AtomicU64,
    /// Bumped (under the exclusive state lock) by truncation and reset before they change bytes
    /// that readers may be reading.
    rewrites: AtomicU64,
    /// Set by the first write-path failure; all later writes fail.
    poison: Mutex<Option<String>>,
    next_tx: watch::Sender<u64>,
    flusher: Mutex<Option<Flusher>>,
    /// Test failpoint: make every store `fdatasync` fail.
    #[cfg(test)]
    pub(super) fail_syncs: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
    positions: Vec<u64>,
}

struct State {
    /// Never empty while open; the last one is active.
    segments: Vec<Segment>,
    closed: bool,
    /// Holds the directory lock while open.
    lock_file: Option<File>,
}

impl State {
    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn first(&self) -> u64 {
        self.segments.first().map_or(0, Segment::base)
    }

    fn next(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end)
    }

    fn last_entry(&self) -> Option<LogId> {
        self.segments.iter().rev().find_map(|s| {
            s.last().map(|h| LogId {
                term: h.term,
                index: h.index,
            })
        })
    }

    fn out_of_range(&self, offset: u64) -> Error {
        Error::OutOfRange {
            offset,
            first: self.first(),
            next: self.next(),
        }
    }

    /// Index in `segments` of the segment holding `offset` (which the caller range-checked).
    fn find(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base() <= offset)
            .saturating_sub(1)
    }

    fn active(&self) -> Result<&Segment> {
        self.segments.last().ok_or(Error::Closed)
    }

    fn active_mut(&mut self) -> Result<&mut Segment> {
        self.segments.last_mut().ok_or(Error::Closed)
    }
}

/// A run of contiguous frames to read with one `pread`.
struct Chunk {
    file: Arc<StoreFile>,
    start: u64,
    end: u64,
    first: u64,
    count: u64,
}

struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

impl Log {
    /// Opens the log in `dir` (created if missing), recovering from any crash: a torn tail of
    /// the last segment is cut, stale indexes are rebuilt, an interrupted reset is completed,
    /// and damaged sealed data is reported as [`Error::Corrupt`] (the `recovery` module has the
    /// details). A new log starts at `config.initial_offset`.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: dir }),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        let sync = config.fsync != FsyncPolicy::Never;
        let segments = recover(&dir, &config, sync)?;
        let state = State {
            segments,
            closed: false,
            lock_file: Some(lock_file),
        };
        let next = state.next();
        let inner = Arc::new(Inner {
            dir,
            writer: Mutex::new(Writer::default()),
            state: RwLock::new(state),
            sync_lock: Mutex::new(()),
            durable: AtomicU64::new(next),
            rewrites: AtomicU64::new(0),
            poison: Mutex::new(None),
            next_tx: watch::channel(next).0,
            flusher: Mutex::new(None),
            #[cfg(test)]
            fail_syncs: std::sync::atomic::AtomicBool::new(false),
            config,
        });
        if let FsyncPolicy::Interval(every) = inner.config.fsync {
            let flusher = spawn_flusher(Arc::downgrade(&inner), every)
                .map_err(|e| Error::io("spawn fsync thread for", &inner.dir, e))?;
            *inner.flusher.lock() = Some(flusher);
        }
        Ok(Log { inner })
    }

    /// Appends `entries` (whose indexes must be `next_offset()..`) and returns their offsets.
    /// With [`FsyncPolicy::Always`] they are durable when this returns (one `fdatasync` for the
    /// batch); otherwise as [`Log::append_unsynced`]. A refused batch (non-contiguous, too large)
    /// writes nothing.
    pub fn append(&self, entries: &[Entry]) -> Result<Range<u64>> {
        let range = self.append_unsynced(entries)?;
        if self.inner.config.fsync == FsyncPolicy::Always && !range.is_empty() {
            self.inner.sync()?;
        }
        Ok(range)
    }

    /// Appends `entries` without waiting for durability: they are written to the OS and visible
    /// to readers when this returns; [`Log::sync`] makes them durable. For group commit.
    pub fn append_unsynced(&self, entries: &[Entry]) -> Result<Range<u64>> {
        self.inner.append(entries)
    }

    /// Makes everything appended so far durable (one `fdatasync` of the active store; nothing if
    /// nothing new was appended) and returns the durable next offset. Concurrent calls coalesce.
    pub fn sync(&self) -> Result<u64> {
        self.inner.sync()
    }

    /// Next offset known durable: every entry below it survives a crash.
    pub fn durable_offset(&self) -> u64 {
        self.inner.durable.load(Ordering::SeqCst)
    }

    /// Reads the entry at `offset`; `OutOfRange` (with the valid range) below the first offset
    /// or at/after the next offset.
    pub fn read(&self, offset: u64) -> Result<Entry> {
        self.inner.read(offset)
    }

    /// Reads entries from `from` on: at most `max_entries` (0 counts as 1), stopping before the
    /// encoded frames (payload + 33 bytes each) would exceed `max_bytes`, but always at least
    /// one entry; stops at the end of the log.
    ///
    /// `OutOfRange` (with the valid range) unless `first <= from < next`, as for [`Log::read`]:
    /// also at exactly `from == next`, so a successful read is never empty. Callers do not
    /// read at the end to learn that nothing is there: each bounds `from` by its own watermark
    /// first (the commit or applied offset, the range openraft asks for), and a tailing reader
    /// waits on [`Log::subscribe`] until the announced next offset is past what it has read.
    /// An `OutOfRange` from a read that was in range when planned means a concurrent
    /// truncation, purge or reset moved the log.
    pub fn read_range(
        &self,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        self.inner
            .read_range(from, max_entries as u64, max_bytes as u64)
    }

    /// Keeps `offset` and drops every entry after it (Raft conflict resolution), durably before
    /// returning. `truncate_after(first_offset() - 1)` empties the log (use
    /// [`Log::truncate_from`] when the first offset is 0). A no-op when nothing follows `offset`;
    /// `OutOfRange` when `offset + 1 < first_offset()`.
    pub fn truncate_after(&self, offset: u64) -> Result<()> {
        // Report the offset the caller passed, not the first one dropped.
        self.inner
            .truncate_from(offset.saturating_add(1))
            .map_err(|e| match e {
                Error::OutOfRange { first, next, .. } => Error::OutOfRange {
                    offset,
                    first,
                    next,
                },
                other => other,
            })
    }

    /// Drops `offset` and every entry after it (`truncate_after(offset - 1)`, also for
    /// `offset == 0`); this is openraft's `truncate(log_id)`. A no-op when
    /// `offset >= next_offset()`; `OutOfRange` when `offset < first_offset()`.
    pub fn truncate_from(&self, offset: u64) -> Result<()> {
        self.inner.truncate_from(offset)
    }

    /// Deletes whole sealed segments whose entries are all below `offset` and returns the new
    /// first offset (which may stay below `offset`: segments are never split, and the active
    /// segment is never deleted; use [`Log::reset`] to drop everything).
    pub fn purge_before(&self, offset: u64) -> Result<u64> {
        self.inner.purge_before(offset)
    }

    /// Drops every entry and starts an empty log at `next_offset` (installing a Raft snapshot
    /// on a follower). Durable before returning; a crash part-way leaves either a valid prefix
    /// or suffix of the old log, or the new empty log (see the module docs).
    pub fn reset(&self, next_offset: u64) -> Result<()> {
        self.inner.reset(next_offset)
    }

    /// First offset held (equal to `next_offset()` when the log is empty).
    pub fn first_offset(&self) -> u64 {
        self.inner.state.read().first()
    }

    /// Offset the next appended entry gets.
    pub fn next_offset(&self) -> u64 {
        self.inner.state.read().next()
    }

    /// Term and index of the last entry, if the log holds any.
    pub fn last_entry(&self) -> Option<LogId> {
        self.inner.state.read().last_entry()
    }

    /// Watches `next_offset`: the value changes after every append (once the entries are
    /// readable) and after truncation or reset. Await `changed()` instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.next_tx.subscribe()
    }

    /// Segment count, bytes and offsets, for metrics.
    pub fn stats(&self) -> LogStats {
        let state = self.inner.state.read();
        LogStats {
            segments: state.segments.len(),
            store_bytes: state.segments.iter().map(|s| s.store.size()).sum(),
            index_bytes: state.segments.iter().map(|s| s.len() * ENTRY_WIDTH).sum(),
            first_offset: state.first(),
            next_offset: state.next(),
            durable_offset: self.durable_offset(),
        }
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Syncs everything, trims the active index, leaves a clean-shutdown marker (so the next open
    /// need not scan the last segment) and releases files and the directory lock. Later calls on
    /// any clone fail with [`Error::Closed`]. On a poisoned log, releases everything and returns
    /// the poison error (no marker: the next open recovers from disk).
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl Inner {
    fn fsync_enabled(&self) -> bool {
        self.config.fsync != FsyncPolicy::Never
    }

    fn check_poison(&self) -> Result<()> {
        match &*self.poison.lock() {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a write-path failure (the first one wins) and passes the error on.
    fn poison(&self, error: Error) -> Error {
        let mut poison = self.poison.lock();
        if poison.is_none() {
            tracing::error!(dir = %self.dir.display(), %error, "commit log poisoned: refusing all further writes");
            *poison = Some(error.to_string());
        }
        error
    }

    /// Checks that a write may start: open and not poisoned.
    fn check_writable(&self) -> Result<()> {
        self.state.read().check_open()?;
        self.check_poison()
    }

    /// `fdatasync` of a store on the write path (when the policy syncs at all); a failure
    /// poisons the log.
    fn sync_store(&self, file: &StoreFile) -> Result<()> {
        if !self.fsync_enabled() {
            return Ok(());
        }
        #[cfg(test)]
        if self.fail_syncs.load(Ordering::SeqCst) {
            let injected = std::io::Error::other("injected fdatasync failure");
            return Err(self.poison(Error::io("fdatasync", &file.path, injected)));
        }
        file.sync_data().map_err(|e| self.poison(e))
    }

    fn sync_dir(&self) -> Result<()> {
        if self.fsync_enabled() {
            sync_dir(&self.dir).map_err(|e| self.poison(e))?;
        }
        Ok(())
    }

    fn append(&self, entries: &[Entry]) -> Result<Range<u64>> {
        let mut writer = self.writer.lock();
        self.check_writable()?;
        let start = self.state.read().next();
        let max = self.config.max_record_bytes;
        for (i, entry) in entries.iter().enumerate() {
            let expected = start + i as u64;
            if entry.index != expected {
                return Err(Error::NonContiguous {
                    expected,
                    got: entry.index,
                });
            }
            if entry.payload.len() as u64 > u64::from(max) {
                return Err(Error::RecordTooLarge {
                    size: entry.payload.len() as u64,
                    max: u64::from(max),
                });
            }
        }
        let mut rest = entries;
        while !rest.is_empty() {
            let taken = self.append_to_active(&mut writer, rest)?;
            if taken == 0 {
                self.roll()?;
            }
            rest = &rest[taken..];
        }
        Ok(start..start + entries.len() as u64)
    }

    /// Writes as many of `entries` as fit into the active segment and publishes them; returns
    /// how many (0 when the segment is full).
    fn append_to_active(&self, writer: &mut Writer, entries: &[Entry]) -> Result<usize> {
        let Writer { buf, positions } = writer;
        buf.clear();
        positions.clear();
        let (file, start_size) = {
            let state = self.state.read();
            let active = state.active()?;
            let mut size = active.store.size();
            for (count, entry) in (active.len()..).zip(entries) {
                let len = frame::frame_len(entry.payload.len());
                if !active.fits(size, count, len, self.config.max_store_bytes) {
                    break;
                }
                positions.push(size);
                size += len;
            }
            (Arc::clone(active.store.shared()), active.store.size())
        };
        let taken = positions.len();
        if taken == 0 {
            return Ok(0);
        }
        for entry in &entries[..taken] {
            frame::encode_into(entry, buf);
        }
        file.write_all_at(buf, start_size)
            .map_err(|e| self.poison(e))?;

        // Publish: the frames are complete in the file before anyone can look them up.
        let next = {
            let mut state = self.state.write();
            let active = state.active_mut()?;
            for &pos in positions.iter() {
                let Ok(rel) = u32::try_from(active.len()) else {
                    return Err(self.poison(Error::corrupt(
                        active.index.path(),
                        pos,
                        "segment exceeds the u32 relative-offset range",
                    )));
                };
                active.index.push(rel, pos);
            }
            active.store.set_size(start_size + buf.len() as u64);
            let last = &entries[taken - 1];
            active.set_last(Some(FrameHeader {
                index: last.index,
                term: last.term,
                kind: last.kind,
                timestamp_ms: last.timestamp_ms,
                frame_len: frame::frame_len(last.payload.len()),
            }));
            state.next()
        };
        self.next_tx.send_replace(next);
        Ok(taken)
    }

    /// Seals the full active segment durably, then starts a new one at the next offset.
    fn roll(&self) -> Result<()> {
        let sync = self.fsync_enabled();
        let (file, end) = {
            let state = self.state.read();
            (Arc::clone(state.active()?.store.shared()), state.next())
        };
        self.sync_store(&file)?;
        if sync {
            self.state
                .read()
                .active()?
                .index
                .flush()
                .map_err(|e| self.poison(e))?;
        }
        self.state
            .write()
            .active_mut()?
            .index
            .seal()
            .map_err(|e| self.poison(e))?;
        if sync {
            self.state
                .read()
                .active()?
                .index
                .sync_file()
                .map_err(|e| self.poison(e))?;
        }
        // Only now that the sealed segment is durable may the next one exist on disk.
        let segment = Segment::create(&self.dir, end, self.config.max_index_bytes)
            .map_err(|e| self.poison(e))?;
        self.sync_dir()?;
        self.state.write().segments.push(segment);
        self.durable.fetch_max(end, Ordering::SeqCst);
        Ok(())
    }

    fn sync(&self) -> Result<u64> {
        let _sync = self.sync_lock.lock();
        loop {
            self.check_poison()?;
            let (target, file, rewrites) = {
                let state = self.state.read();
                state.check_open()?;
                (
                    state.next(),
                    Arc::clone(state.active()?.store.shared()),
                    self.rewrites.load(Ordering::SeqCst),
                )
            };
            let durable = self.durable.load(Ordering::SeqCst);
            if durable >= target {
                return Ok(durable);
            }
            // Sealed segments were synced when they rolled, so only the active store is dirty.
            self.sync_store(&file)?;
            // A truncation since the snapshot may have dropped entries below `target`; then the
            // snapshot is stale: start over (the truncation has set the watermark itself).
            let _state = self.state.read();
            if self.rewrites.load(Ordering::SeqCst) == rewrites {
                self.durable.fetch_max(target, Ordering::SeqCst);
                return Ok(self.durable.load(Ordering::SeqCst));
            }
        }
    }

    fn read(&self, offset: u64) -> Result<Entry> {
        loop {
            let (file, pos, len, rewrites) = {
                let state = self.state.read();
                state.check_open()?;
                if offset < state.first() || offset >= state.next() {
                    return Err(state.out_of_range(offset));
                }
                let segment = &state.segments[state.find(offset)];
                let (pos, len) = segment.locate(offset)?;
                (
                    Arc::clone(segment.store.shared()),
                    pos,
                    len,
                    self.rewrites.load(Ordering::SeqCst),
                )
            };
            match Store::read_frame(&file, pos, len, offset) {
                Ok((header, bytes)) => return Ok(header.entry(&bytes)),
                Err(e) if !self.rewritten_since(rewrites) => return Err(e),
                Err(_) => continue,
            }
        }
    }

    /// Whether a truncation or reset started since `rewrites` was read: a failed read may then
    /// be explained by it and is retried.
    fn rewritten_since(&self, rewrites: u64) -> bool {
        // Orders the preceding file read before the load (seqlock reader pattern).
        fence(Ordering::SeqCst);
        self.rewrites.load(Ordering::SeqCst) != rewrites
    }

    fn read_range(&self, from: u64, max_entries: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        loop {
            let (chunks, rewrites) = {
                let state = self.state.read();
                state.check_open()?;
                if from < state.first() || from >= state.next() {
                    return Err(state.out_of_range(from));
                }
                (
                    plan_chunks(&state, from, max_entries.max(1), max_bytes)?,
                    self.rewrites.load(Ordering::SeqCst),
                )
            };
            let total = chunks.iter().map(|c| c.count).sum::<u64>();
            let mut entries = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            match chunks
                .iter()
                .try_for_each(|chunk| read_chunk(chunk, &mut entries))
            {
                Ok(()) => return Ok(entries),
                Err(e) if !self.rewritten_since(rewrites) => return Err(e),
                Err(_) => continue,
            }
        }
    }

    fn truncate_from(&self, new_next: u64) -> Result<()> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        // Everything needed is looked up first; nothing else can change it (we are the writer).
        let (keep, new_store_len, last, newer) = {
            let state = self.state.read();
            if new_next >= state.next() {
                return Ok(());
            }
            if new_next < state.first() {
                return Err(state.out_of_range(new_next));
            }
            let keep = state.find(new_next);
            let segment = &state.segments[keep];
            let rel = new_next - segment.base();
            let new_store_len = segment.position(rel)?;
            let last = if rel > 0 {
                let (pos, len) = segment.locate(new_next - 1)?;
                Some(Store::read_frame(segment.store.shared(), pos, len, new_next - 1)?.0)
            } else {
                None
            };
            let newer: Vec<u64> = state.segments[keep + 1..]
                .iter()
                .map(Segment::base)
                .collect();
            (keep, new_store_len, last, newer)
        };
        // Newest first, so that a crash leaves a prefix of the log.
        for &base in newer.iter().rev() {
            Segment::delete_files(&self.dir, base).map_err(|e| self.poison(e))?;
            self.sync_dir()?;
        }
        let file = {
            let mut state = self.state.write();
            self.rewrites.fetch_add(1, Ordering::SeqCst);
            state.segments.truncate(keep + 1);
            let segment = &mut state.segments[keep];
            segment.index.truncate(new_next - segment.base());
            if segment.index.is_sealed() {
                segment
                    .index
                    .reactivate(self.config.max_index_bytes)
                    .map_err(|e| self.poison(e))?;
            }
            segment.store.set_size(new_store_len);
            segment.set_last(last);
            self.durable.fetch_min(new_next, Ordering::SeqCst);
            Arc::clone(segment.store.shared())
        };
        // NB: the store is not mapped, so shrinking it is safe; readers past the new end get a
        // short read, see the epoch bump, and retry.
        file.set_len(new_store_len).map_err(|e| self.poison(e))?;
        self.sync_store(&file)?;
        self.durable.store(new_next, Ordering::SeqCst);
        self.next_tx.send_replace(new_next);
        Ok(())
    }

    fn purge_before(&self, offset: u64) -> Result<u64> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        let (purged, first) = {
            let mut state = self.state.write();
            let sealed = state.segments.len() - 1;
            let count = state.segments[..sealed]
                .iter()
                .take_while(|s| s.end() <= offset)
                .count();
            let purged: Vec<Segment> = state.segments.drain(..count).collect();
            (purged, state.first())
        };
        // Oldest first, so that a crash leaves a suffix of the log. Readers that looked a
        // position up in a purged segment still hold its file open and read the old bytes.
        for segment in &purged {
            Segment::delete_files(&self.dir, segment.base()).map_err(|e| self.poison(e))?;
            self.sync_dir()?;
        }
        Ok(first)
    }

    fn reset(&self, next: u64) -> Result<()> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        let bases: Vec<u64> = self
            .state
            .read()
            .segments
            .iter()
            .map(Segment::base)
            .collect();
        // 1. Segments at or above the new base, newest first (a crash leaves a prefix).
        for &base in bases.iter().rev().filter(|&&b| b >= next) {
            Segment::delete_files(&self.dir, base).map_err(|e| self.poison(e))?;
            self.sync_dir()?;
        }
        // 2. The new empty segment. A crash from here on leaves an empty last segment after a
        //    gap or overlap, which recovery recognises as an interrupted reset.
        let segment = Segment::create(&self.dir, next, self.config.max_index_bytes)
            .map_err(|e| self.poison(e))?;
        self.sync_dir()?;
        let old = {
            let mut state = self.state.write();
            self.rewrites.fetch_add(1, Ordering::SeqCst);
            self.durable.store(next, Ordering::SeqCst);
            std::mem::replace(&mut state.segments, vec![segment])
        };
        self.next_tx.send_replace(next);
        // 3. The rest, oldest first.
        for segment in old.iter().filter(|s| s.base() < next) {
            Segment::delete_files(&self.dir, segment.base()).map_err(|e| self.poison(e))?;
            self.sync_dir()?;
        }
        Ok(())
    }

    fn close(&self) -> Result<()> {
        let _writer = self.writer.lock();
        self.state.read().check_open()?;
        if let Some(flusher) = self.flusher.lock().take() {
            flusher.stop();
        }
        let synced = self.check_poison().and_then(|()| self.sync());
        let (segments, lock_file) = {
            let mut state = self.state.write();
            state.closed = true;
            (std::mem::take(&mut state.segments), state.lock_file.take())
        };
        let result = synced.and_then(|_| self.seal_for_shutdown(segments));
        drop(lock_file);
        result
    }

    /// Trims the active index and writes the clean-shutdown marker.
    fn seal_for_shutdown(&self, mut segments: Vec<Segment>) -> Result<()> {
        let sync = self.fsync_enabled();
        if let Some(active) = segments.last_mut() {
            if sync {
                active.index.flush()?;
            }
            active.index.seal()?;
            if sync {
                active.index.sync_file()?;
            }
        }
        drop(segments);
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        File::create(&marker).map_err(|e| Error::io("create", &marker, e))?;
        if sync {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping without `close` is like a process crash: nothing is lost from the page
        // cache, and the next open recovers. Just stop the fsync thread (not joined: this may
        // run on it).
        if let Some(flusher) = self.flusher.get_mut().take() {
            flusher.signal();
        }
    }
}

impl Flusher {
    fn signal(&self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
    }

    fn stop(self) {
        self.signal();
        if self.handle.join().is_err() {
            tracing::error!("commit log fsync thread panicked");
        }
    }
}

fn spawn_flusher(log: Weak<Inner>, every: Duration) -> std::io::Result<Flusher> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let signal = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("log-fsync".into())
        .spawn(move || {
            loop {
                {
                    let mut stopped = signal.0.lock();
                    if !*stopped {
                        signal.1.wait_for(&mut stopped, every);
                    }
                    if *stopped {
                        return;
                    }
                }
                let Some(inner) = log.upgrade() else { return };
                if let Err(error) = inner.sync() {
                    // Poisoned or closed: nothing more to do. The poison is already logged.
                    tracing::debug!(%error, "commit log fsync thread stops");
                    return;
                }
            }
        })?;
    Ok(Flusher { stop, handle })
}

/// Plans the reads of `read_range` under the state lock.
fn plan_chunks(state: &State, from: u64, max_entries: u64, max_bytes: u64) -> Result<Vec<Chunk>> {
    let mut chunks = Vec::new();
    let mut offset = from;
    let mut entries_left = max_entries;
    let mut bytes_left = max_bytes;
    for segment in &state.segments[state.find(from)..] {
        if entries_left == 0 {
            break;
        }
        if offset >= segment.end() {
            continue;
        }
        let (start, end, count) = segment.span(offset, entries_left, bytes_left)?;
        // Only the very first entry may exceed the byte budget.
        if !chunks.is_empty() && end - start > bytes_left {
            break;
        }
        chunks.push(Chunk {
            file: Arc::clone(segment.store.shared()),
            start,
            end,
            first: offset,
            count,
        });
        offset += count;
        entries_left -= count;
        bytes_left = bytes_left.saturating_sub(end - start);
        if offset < segment.end() {
            break; // the budget ran out inside this segment
        }
    }
    Ok(chunks)
}

/// Reads one chunk with a single `pread` and validates every frame in it.
fn read_chunk(chunk: &Chunk, out: &mut Vec<Entry>) -> Result<()> {
    let Ok(len) = usize::try_from(chunk.end - chunk.start) else {
        return Err(Error::corrupt(
            &chunk.file.path,
            chunk.start,
            "chunk too large",
        ));
    };
    // A multi-frame chunk is bounded by the caller's byte budget; a single frame's length comes
    // from the index alone, so check it against the frame before allocating.
    check_first_frame_len(&chunk.file, chunk.start, len as u64, chunk.count > 1)?;
    let mut buf = vec![0u8; len];
    chunk.file.read_exact_at(&mut buf, chunk.start)?;
    let bytes = Bytes::from(buf);
    let mut at = 0usize;
    for k in 0..chunk.count {
        let position = chunk.start + at as u64;
        let header = frame::decode(&bytes[at..])
            .map_err(|e| Error::corrupt(&chunk.file.path, position, e.to_string()))?;
        let frame_len = header.frame_len as usize;
        let expected_len = if k + 1 == chunk.count {
            (len - at) as u64
        } else {
            header.frame_len
        };
        check_frame(
            &chunk.file,
            position,
            &header,
            expected_len,
            chunk.first + k,
        )?;
        out.push(Entry {
            index: header.index,
            term: header.term,
            kind: header.kind,
            timestamp_ms: header.timestamp_ms,
            payload: bytes.slice(at + HEADER_LEN..at + frame_len),
        });
        at += frame_len;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
