//! openraft's log storage ([`RaftLogStorage`] + [`RaftLogReader`]) on the segmented commit log.
//!
//! * **append** writes with [`Log::append_unsynced`] (readable at once) and leaves the
//!   completion callback to the [`Syncer`] (group commit: it fires only once the entries are
//!   durable). The first append into an empty log may start at any index above the last purged
//!   one (the log is reset to it); a gap in a non-empty log is refused.
//! * **truncate_after(id)** → [`Log::truncate_after`]; `None` empties the log. Durable on return.
//! * **purge(id)** first saves `last_purged_log_id` (flushed) in the [`StableStore`], then deletes
//!   whole segments below `id + 1` ([`Log::purge_before`]), or resets the log to start at
//!   `id + 1` when `id` is at or past its end (a snapshot was installed). A crash in between is
//!   completed at the next [`LogStore::open`]. Entries `<= id` may physically remain in a segment
//!   that also holds newer ones; readers never return them to openraft.
//! * The vote, committed id and last purged id live in the [`StableStore`].
//! * **open** also lowers a committed id or applied state that lies past the end of the log
//!   (see [`LogStore::open`]): after a machine crash the log keeps only what was fsynced, while
//!   those two are persisted without any order relative to the log's fsync.
//!
//! Every blocking call runs on tokio's blocking pool, never on a runtime thread.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use futures::Stream;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::RwLock;

use super::blocking::blocking;
use super::entry_codec::{from_log_entry, to_log_entry};
use super::stable_store::{AppliedState, StableStore};
use super::syncer::Syncer;
use super::types::{LogId, RaftEntry, TypeConfig, Vote, log_id};
use crate::log::{Error as LogError, Log};
use crate::telemetry::metrics::Metrics;

/// Most entries one replication message carries (openraft's `max_payload_entries` bounds it too).
const MAX_READ_ENTRIES: usize = 4096;
/// About this many bytes of frames per replication message or apply chunk.
const MAX_READ_BYTES: usize = 4 << 20;

/// The Raft log storage of a node. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    log: Log,
    stable: Arc<dyn StableStore>,
    syncer: Arc<Syncer>,
    /// Cached copy of the stable store's vote (read on every replication round).
    vote: RwLock<Option<Vote>>,
    last_purged: RwLock<Option<LogId>>,
    metrics: Option<Metrics>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("log", &self.inner.log)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Wraps `log`, finishing a purge or reset that a crash interrupted: when the stable store
    /// says entries up to `p` are purged but the log still ends at or before `p`, the log is
    /// reset to start at `p + 1`. Then lowers the saved committed id and applied state to the
    /// end of the log when they lie past it ([`lower_to_log_end`]). Blocking: call at start-up,
    /// before [`StateMachine::open`](super::state_machine::StateMachine::open) reads the applied
    /// state.
    pub fn open(
        log: Log,
        stable: Arc<dyn StableStore>,
        syncer: Arc<Syncer>,
        metrics: Option<Metrics>,
    ) -> io::Result<LogStore> {
        let vote = stable.vote()?;
        let last_purged = stable.last_purged()?;
        if let Some(purged) = &last_purged {
            if log.next_offset() <= purged.index {
                tracing::info!(
                    purged = %purged, next = log.next_offset(),
                    "completing an interrupted log reset after a snapshot"
                );
                log.reset(purged.index + 1).map_err(io_error)?;
            } else if log.first_offset() <= purged.index {
                log.purge_before(purged.index + 1).map_err(io_error)?;
            }
        }
        lower_to_log_end(&log, stable.as_ref(), last_purged)?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                log,
                stable,
                syncer,
                vote: RwLock::new(vote),
                last_purged: RwLock::new(last_purged),
                metrics,
            }),
        })
    }

    /// The commit log underneath.
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// The group-commit syncer.
    pub fn syncer(&self) -> &Arc<Syncer> {
        &self.inner.syncer
    }

    /// The last purged log id (entries up to it are logically gone).
    pub fn last_purged(&self) -> Option<LogId> {
        *self.inner.last_purged.read()
    }

    /// First index openraft may read: after the last purged entry and inside the log.
    fn first_readable(&self) -> u64 {
        let after_purged = self.last_purged().map_or(0, |p| p.index + 1);
        after_purged.max(self.inner.log.first_offset())
    }

    /// Reads `[start, end)` clipped to what the log holds, at most `max_entries` / about
    /// `max_bytes` (always at least one entry when the clipped range is not empty).
    async fn read(
        &self,
        start: u64,
        end: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<RaftEntry>> {
        let start = start.max(self.first_readable());
        let end = end.min(self.inner.log.next_offset());
        if start >= end {
            return Ok(Vec::new());
        }
        let count = usize::try_from(end - start)
            .unwrap_or(usize::MAX)
            .min(max_entries);
        let log = self.inner.log.clone();
        let entries = blocking(move || match log.read_range(start, count, max_bytes) {
            Ok(entries) => Ok(entries),
            // A concurrent truncation or purge moved the range: report what the log holds now.
            Err(LogError::OutOfRange { .. }) => Ok(Vec::new()),
            Err(e) => Err(io_error(e)),
        })
        .await?;
        entries.into_iter().map(from_log_entry).collect()
    }

    async fn append_entries(&self, entries: Vec<RaftEntry>) -> io::Result<()> {
        let frames = entries
            .iter()
            .map(to_log_entry)
            .collect::<io::Result<Vec<_>>>()?;
        let Some(first) = frames.first().map(|f| f.index) else {
            return Ok(());
        };
        let data_bytes: u64 = entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(record) => Some(record.value.len() as u64),
                _ => None,
            })
            .sum();
        let data_records = entries
            .iter()
            .filter(|e| matches!(e.payload, EntryPayload::Normal(_)))
            .count() as u64;
        let log = self.inner.log.clone();
        let purged_next = self.last_purged().map_or(0, |p| p.index + 1);
        blocking(move || {
            let next = log.next_offset();
            let empty = log.first_offset() == next;
            if first != next {
                if !empty || first < purged_next {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "append at index {first} would leave a gap: the log's next index is {next} \
                             (first readable {purged_next})"
                        ),
                    ));
                }
                // The first entry of an empty log (a fresh follower receiving entries after a
                // snapshot, or openraft's storage suite) defines where the log starts.
                log.reset(first).map_err(io_error)?;
            }
            log.append_unsynced(&frames).map_err(io_error)
        })
        .await?;
        if let Some(metrics) = &self.inner.metrics
            && data_records > 0
        {
            metrics.record_append(data_records, data_bytes);
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, io::Error> {
        let (start, end) = bounds(&range);
        let mut out = Vec::new();
        let mut from = start;
        // `try_get_log_entries` must not stop early: read in chunks until the end.
        while from < end {
            let chunk = self
                .read(from, end, MAX_READ_ENTRIES, MAX_READ_BYTES)
                .await?;
            let Some(last) = chunk.last() else { break };
            from = last.log_id.index + 1;
            out.extend(chunk);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(*self.inner.vote.read())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<RaftEntry>, io::Error> {
        self.read(start, end, MAX_READ_ENTRIES, MAX_READ_BYTES)
            .await
    }

    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl Stream<Item = Result<RaftEntry, io::Error>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        use futures::StreamExt;
        // Applying a long range (after a restart) reads it chunk by chunk instead of all at once.
        let (start, end) = bounds(&range);
        let store = self.clone();
        futures::stream::unfold(Some(start), move |from| {
            let store = store.clone();
            async move {
                let from = from?;
                if from >= end {
                    return None;
                }
                match store
                    .read(from, end, MAX_READ_ENTRIES, MAX_READ_BYTES)
                    .await
                {
                    Ok(chunk) => {
                        let next = chunk.last().map(|e| e.log_id.index + 1);
                        let items: Vec<io::Result<RaftEntry>> = chunk.into_iter().map(Ok).collect();
                        // An empty chunk ends the stream: the range is not (or no longer) held.
                        Some((futures::stream::iter(items), next))
                    }
                    Err(e) => Some((futures::stream::iter(vec![Err(e)]), None)),
                }
            }
        })
        .flatten()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged = self.last_purged();
        let last_log_id = log_end(&self.inner.log, last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let stable = Arc::clone(&self.inner.stable);
        let saved = *vote;
        blocking(move || stable.save_vote(&saved).map_err(io::Error::from)).await?;
        *self.inner.vote.write() = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed (see stable_store): an in-memory insert that sled persists in the background.
        self.inner
            .stable
            .save_committed(committed.as_ref())
            .map_err(io::Error::from)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.inner.stable.committed().map_err(io::Error::from)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<RaftEntry> = entries.into_iter().collect();
        match self.append_entries(entries).await {
            Ok(()) => {
                self.inner.syncer.after_sync(callback);
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let log = self.inner.log.clone();
        blocking(move || match last_log_id {
            Some(id) => log.truncate_after(id.index).map_err(io_error),
            None => log.truncate_from(log.first_offset()).map_err(io_error),
        })
        .await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        if self.last_purged().is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        let stable = Arc::clone(&self.inner.stable);
        let log = self.inner.log.clone();
        // The purge point is durable before any segment goes, so a crash in between leaves a
        // log that `open` completes instead of one that claims entries it no longer has.
        blocking(move || stable.save_last_purged(&upto).map_err(io::Error::from)).await?;
        *self.inner.last_purged.write() = Some(upto);
        blocking(move || {
            if upto.index + 1 >= log.next_offset() {
                log.reset(upto.index + 1).map_err(io_error)
            } else {
                log.purge_before(upto.index + 1)
                    .map(|_| ())
                    .map_err(io_error)
            }
        })
        .await
    }
}

/// The last log id the log holds: its last entry, or the last purged id when that is later
/// (openraft's `last_log_id`, see `get_log_state`).
fn log_end(log: &Log, last_purged: Option<LogId>) -> Option<LogId> {
    let last_entry = log.last_entry().map(|id| log_id(id.term, id.index));
    match (last_entry, last_purged) {
        (Some(entry), Some(purged)) if entry.index > purged.index => Some(entry),
        (Some(_), Some(purged)) => Some(purged),
        (entry, purged) => entry.or(purged),
    }
}

/// After a machine crash the log holds what was fsynced, and nothing guarantees that the saved
/// committed id and applied state (written without being ordered against the log's fsync, see
/// the stable store's module docs) do not lie beyond it: the leader counts followers' fsyncs,
/// not only its own, and openraft lets a node commit entries it has accepted but not flushed
/// yet. openraft would then fail to start ("expected index [c, d), got [None, None)" while
/// re-applying entries that are gone), or treat the missing range as a snapshot and purge the
/// log.
///
/// The entries past the end are not on this node any more; the leader sends them again. Every
/// entry the log still holds up to a saved committed id is committed (the log lost a suffix,
/// not a middle), so both values are lowered to the end of the log. The applied state keeps
/// its membership when that membership's entry is still in the log; otherwise it falls back to
/// the snapshot (or to nothing) and openraft re-applies the log from there, finding the
/// membership entries again.
fn lower_to_log_end(
    log: &Log,
    stable: &dyn StableStore,
    last_purged: Option<LogId>,
) -> io::Result<()> {
    let end = log_end(log, last_purged);
    let past_end = |id: &LogId| end.is_none_or(|end| id.index > end.index);
    if let Some(committed) = stable.committed()?
        && past_end(&committed)
    {
        tracing::warn!(
            committed = %committed, end = ?end,
            "the saved committed log id lies past the end of the log (entries that were never \
             fsynced here are gone); lowering it to the end of the log"
        );
        stable.save_committed(end.as_ref())?;
    }
    if let Some(applied) = stable.applied()?
        && let Some(last_applied) = applied.last_applied
        && past_end(&last_applied)
    {
        let membership_kept = applied
            .membership
            .log_id()
            .as_ref()
            .is_none_or(|id| !past_end(id));
        let lowered = if membership_kept {
            AppliedState {
                last_applied: end,
                membership: applied.membership,
            }
        } else {
            match stable.snapshot()? {
                Some(meta) if meta.last_log_id.as_ref().is_none_or(|id| !past_end(id)) => {
                    AppliedState {
                        last_applied: meta.last_log_id,
                        membership: meta.last_membership,
                    }
                }
                _ => AppliedState::default(),
            }
        };
        tracing::warn!(
            applied = %last_applied, end = ?end, lowered_to = ?lowered.last_applied,
            "the saved applied state lies past the end of the log; lowering it"
        );
        stable.save_applied(&lowered, true)?;
    }
    Ok(())
}

/// `[start, end)` of a range of indexes.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// A commit-log error as the `io::Error` openraft's storage traits return.
pub fn io_error(error: LogError) -> io::Error {
    let kind = match &error {
        LogError::Corrupt { .. } => io::ErrorKind::InvalidData,
        LogError::OutOfRange { .. } | LogError::NonContiguous { .. } => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}
