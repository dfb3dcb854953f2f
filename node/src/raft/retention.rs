//! Retention: the only thing that deletes data (ARCHITECTURE decision 1).
//!
//! Off by default. With `--retention-bytes` and/or `--retention-age`, a periodic task on every
//! node picks a purge point `P`: the last index of the newest *sealed* segment that has to go
//! (oldest segments first, while the log is larger than the byte limit, or while a segment's
//! newest record is older than the age limit). `P` is always below the applied watermark —
//! retention never deletes what this node has not applied. Then:
//!
//! 1. if the current snapshot does not cover `P`, a snapshot (metadata only) is built and the
//!    task waits until openraft has it;
//! 2. `raft.trigger().purge_log(P)`: openraft purges once no replication stream still reads
//!    below `P` (it never purges past its snapshot, and with `max_in_snapshot_log_to_keep` at
//!    its maximum it never purges on its own).
//!
//! A follower that later needs entries `<= P` receives the snapshot instead and its log restarts
//! after it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::Raft;
use super::log_store::LogStore;
use super::metrics_watch;
use crate::log::{EntryKind, Log, STORE_EXT, parse_segment_file_name, segment_paths};

/// How many entries back from a segment's end to look for a record timestamp (blank and
/// membership entries carry none).
const TIMESTAMP_LOOKBACK: u64 = 64;

/// What retention keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the log at most this large (bytes of segment stores).
    pub max_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this.
    pub max_age: Option<Duration>,
}

impl RetentionPolicy {
    /// Whether anything is ever deleted.
    pub fn enabled(&self) -> bool {
        self.max_bytes.is_some() || self.max_age.is_some()
    }
}

/// One segment as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// First index of the segment.
    pub base: u64,
    /// Index after its last entry (the next segment's base; the log's next offset for the last).
    pub end: u64,
    /// Bytes of its store file.
    pub bytes: u64,
    /// Leader timestamp of its newest record, if one was found.
    pub newest_ms: Option<u64>,
}

/// The purge point for `segments` (oldest first; the last one is the active segment and is
/// never chosen): the last index of the newest segment that must go, or `None`. Only segments
/// that end at or below `applied_next` (everything in them is applied) are candidates.
pub fn purge_point(
    segments: &[SegmentSummary],
    applied_next: u64,
    policy: &RetentionPolicy,
    now_ms: u64,
) -> Option<u64> {
    let sealed = segments.len().saturating_sub(1);
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut point = None;
    for segment in &segments[..sealed] {
        if segment.end > applied_next || segment.end <= segment.base {
            break;
        }
        let too_big = policy.max_bytes.is_some_and(|max| total > max);
        let too_old = policy.max_age.is_some_and(|age| {
            let limit = now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
            segment.newest_ms.is_some_and(|newest| newest < limit)
        });
        if !(too_big || too_old) {
            break;
        }
        total -= segment.bytes;
        point = Some(segment.end - 1);
    }
    point
}

/// The segments of `log` from its directory listing (blocking). Concurrent rolls or purges can
/// make the listing stale; that only makes retention purge a little less this round.
pub fn list_segments(log: &Log) -> std::io::Result<Vec<SegmentSummary>> {
    let mut bases: Vec<u64> = std::fs::read_dir(log.dir())?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let (base, ext) = parse_segment_file_name(name.to_str()?)?;
            (ext == STORE_EXT).then_some(base)
        })
        .collect();
    bases.sort_unstable();
    let next = log.next_offset();
    let mut out = Vec::with_capacity(bases.len());
    for (i, base) in bases.iter().enumerate() {
        let end = bases.get(i + 1).copied().unwrap_or(next);
        let bytes = store_bytes(log.dir(), *base);
        out.push(SegmentSummary {
            base: *base,
            end,
            bytes,
            newest_ms: newest_timestamp(log, *base, end),
        });
    }
    Ok(out)
}

fn store_bytes(dir: &Path, base: u64) -> u64 {
    let (store, _) = segment_paths(dir, base);
    std::fs::metadata(store).map(|m| m.len()).unwrap_or(0)
}

fn newest_timestamp(log: &Log, base: u64, end: u64) -> Option<u64> {
    let from = end.saturating_sub(TIMESTAMP_LOOKBACK).max(base);
    (from..end)
        .rev()
        .filter_map(|index| log.read(index).ok())
        .find(|entry| entry.kind == EntryKind::Data)
        .map(|entry| entry.timestamp_ms)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a retention pass purged nothing; the next pass tries again.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("listing segments: {0}")]
    ListSegments(#[source] std::io::Error),
    #[error("waiting for a snapshot covering {point}: {source}")]
    NoSnapshot {
        point: u64,
        #[source]
        source: metrics_watch::WaitError,
    },
    #[error("raft: {0}")]
    Raft(#[source] openraft::errors::Fatal<super::types::TypeConfig>),
    #[error("the segment listing task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Runs one retention round: returns the purge point it asked openraft for, if any.
pub async fn retain_once(
    raft: &Raft,
    store: &LogStore,
    applied: &watch::Receiver<u64>,
    policy: &RetentionPolicy,
    snapshot_wait: Duration,
) -> Result<Option<u64>, RetentionError> {
    if !policy.enabled() {
        return Ok(None);
    }
    let applied_next = *applied.borrow();
    let log = store.log().clone();
    let segments = tokio::task::spawn_blocking(move || list_segments(&log))
        .await
        .map_err(RetentionError::Task)?
        .map_err(RetentionError::ListSegments)?;
    let Some(point) = purge_point(&segments, applied_next, policy, now_ms()) else {
        return Ok(None);
    };
    if store.last_purged().is_some_and(|p| p.index >= point) {
        return Ok(None);
    }
    let covered = |m: &openraft::RaftMetrics<super::types::TypeConfig>| {
        m.snapshot.is_some_and(|s| s.index >= point)
    };
    if !covered(&metrics_watch::current(raft)) {
        raft.trigger()
            .snapshot()
            .await
            .map_err(RetentionError::Raft)?;
        metrics_watch::wait_until(raft, snapshot_wait, covered)
            .await
            .map_err(|source| RetentionError::NoSnapshot { point, source })?;
    }
    raft.trigger()
        .purge_log(point)
        .await
        .map_err(RetentionError::Raft)?;
    tracing::info!(point, "retention: purging the log up to this index");
    Ok(Some(point))
}

/// Runs retention every `every` until `raft` shuts down.
pub async fn run_retention(
    raft: Raft,
    store: LogStore,
    applied: watch::Receiver<u64>,
    policy: RetentionPolicy,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if metrics_watch::current(&raft).running_state.is_err() {
            return;
        }
        if let Err(e) = retain_once(
            &raft,
            &store,
            &applied,
            &policy,
            every.max(Duration::from_secs(5)),
        )
        .await
        {
            tracing::warn!(error = %e, "retention round failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, end: u64, bytes: u64, newest_ms: Option<u64>) -> SegmentSummary {
        SegmentSummary {
            base,
            end,
            bytes,
            newest_ms,
        }
    }

    fn log() -> Vec<SegmentSummary> {
        vec![
            seg(0, 100, 1000, Some(1_000)),
            seg(100, 200, 1000, Some(2_000)),
            seg(200, 300, 1000, Some(3_000)),
            seg(300, 350, 500, Some(4_000)),
        ]
    }

    #[test]
    fn nothing_is_purged_when_retention_is_off() {
        assert_eq!(
            purge_point(&log(), 350, &RetentionPolicy::default(), 10_000),
            None
        );
    }

    #[test]
    fn bytes_retention_deletes_the_oldest_segments_until_the_log_fits() {
        let policy = RetentionPolicy {
            max_bytes: Some(1600),
            max_age: None,
        };
        // 3500 bytes: dropping two segments leaves 1500 <= 1600.
        assert_eq!(purge_point(&log(), 350, &policy, 10_000), Some(199));
    }

    #[test]
    fn age_retention_deletes_segments_whose_newest_record_is_too_old() {
        let policy = RetentionPolicy {
            max_bytes: None,
            max_age: Some(Duration::from_millis(7_500)),
        };
        // now 10_000: records older than 2_500 go, i.e. the first two segments.
        assert_eq!(purge_point(&log(), 350, &policy, 10_000), Some(199));
    }

    #[test]
    fn retention_never_purges_past_the_applied_watermark() {
        let policy = RetentionPolicy {
            max_bytes: Some(0),
            max_age: None,
        };
        // Everything is "too big", but only the first segment is fully applied.
        assert_eq!(purge_point(&log(), 150, &policy, 10_000), Some(99));
        assert_eq!(purge_point(&log(), 99, &policy, 10_000), None);
        for applied in 0..400 {
            if let Some(point) = purge_point(&log(), applied, &policy, 10_000) {
                assert!(
                    point < applied,
                    "purge point {point} with applied next {applied}"
                );
            }
        }
    }

    #[test]
    fn the_active_segment_is_never_chosen() {
        let policy = RetentionPolicy {
            max_bytes: Some(0),
            max_age: None,
        };
        assert_eq!(purge_point(&log(), 350, &policy, 10_000), Some(299));
        assert_eq!(purge_point(&log()[3..], 350, &policy, 10_000), None);
    }

    #[test]
    fn a_segment_without_a_record_timestamp_is_kept_by_age() {
        let segments = vec![seg(0, 10, 10, None), seg(10, 20, 10, Some(1))];
        let policy = RetentionPolicy {
            max_bytes: None,
            max_age: Some(Duration::from_millis(1)),
        };
        assert_eq!(purge_point(&segments, 20, &policy, 10_000), None);
    }
}
