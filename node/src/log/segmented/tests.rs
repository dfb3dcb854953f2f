//! Unit tests of [`Log`]: limits, recovery paths, truncation, purge, reset, concurrency.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::log::EntryKind;
use crate::log::segment::{STORE_EXT, parse_segment_file_name, segment_paths};

/// Payload that encodes its entry's index and term, so that any returned entry can be checked
/// on its own (concurrent tests cannot know which version of an offset they will see).
fn payload(index: u64, term: u64, len: usize) -> Bytes {
    let mut p = format!("{index}:{term}:").into_bytes();
    p.resize(len.max(p.len()), b'.');
    Bytes::from(p)
}

fn entry(index: u64, term: u64, len: usize) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Data,
        timestamp_ms: 1_000 + index,
        payload: payload(index, term, len),
    }
}

fn entries(range: std::ops::Range<u64>, term: u64, len: usize) -> Vec<Entry> {
    range.map(|i| entry(i, term, len)).collect()
}

fn config(max_store_bytes: u64, max_index_bytes: u64) -> LogConfig {
    LogConfig {
        max_store_bytes,
        max_index_bytes,
        initial_offset: 0,
        fsync: FsyncPolicy::Never,
        max_record_bytes: 4096,
    }
}

/// Frame size of the 10-byte payloads most tests use.
const F: u64 = 43;

fn segment_files(dir: &Path) -> Vec<(u64, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            parse_segment_file_name(&name).map(|(b, ext)| (b, ext.to_string()))
        })
        .collect();
    files.sort();
    files
}

fn store_bases(dir: &Path) -> Vec<u64> {
    segment_files(dir)
        .into_iter()
        .filter(|(_, ext)| ext == STORE_EXT)
        .map(|(b, _)| b)
        .collect()
}

fn assert_reads(log: &Log, expected: &[Entry]) {
    for e in expected {
        assert_eq!(&log.read(e.index).unwrap(), e, "offset {}", e.index);
    }
    if let Some(first) = expected.first() {
        let all = log.read_range(first.index, usize::MAX, usize::MAX).unwrap();
        assert_eq!(all, expected);
    }
}

#[test]
fn a_segment_rolls_exactly_when_the_next_frame_would_exceed_max_store_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    let batch = entries(0..7, 1, 10);
    log.append(&batch).unwrap();
    assert_eq!(store_bases(dir.path()), vec![0, 3, 6]);
    let (s0, _) = segment_paths(dir.path(), 0);
    assert_eq!(
        std::fs::metadata(s0).unwrap().len(),
        3 * F,
        "filled to the byte"
    );
    assert_eq!(log.stats().segments, 3);
    assert_reads(&log, &batch);

    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(3 * F - 1, 1200)).unwrap();
    log.append(&entries(0..5, 1, 10)).unwrap();
    assert_eq!(store_bases(dir.path()), vec![0, 2, 4]);
}

#[test]
fn a_segment_rolls_exactly_when_its_index_is_full() {
    for (max_index, per_segment) in [(36, 3), (47, 3), (48, 4), (12, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config(1 << 20, max_index)).unwrap();
        // One entry at a time and in one batch must roll at the same places.
        for e in entries(0..6, 1, 10) {
            log.append(&[e]).unwrap();
        }
        log.append(&entries(6..12, 1, 10)).unwrap();
        let expected: Vec<u64> = (0..12).step_by(per_segment).collect();
        assert_eq!(
            store_bases(dir.path()),
            expected,
            "max_index_bytes {max_index}"
        );
        // Sealed indexes are trimmed to their entries.
        let (_, i0) = segment_paths(dir.path(), 0);
        assert_eq!(
            std::fs::metadata(i0).unwrap().len(),
            per_segment as u64 * 12
        );
        assert_reads(&log, &entries(0..12, 1, 10));
    }
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(100, 1200)).unwrap();
    let batch = vec![entry(0, 1, 10), entry(1, 1, 500), entry(2, 1, 10)];
    log.append(&batch).unwrap();
    assert_eq!(store_bases(dir.path()), vec![0, 1, 2]);
    assert_reads(&log, &batch);
}

#[test]
fn reopening_finds_every_segment_after_close_and_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(4 * F, 1200);
    let all = entries(0..10, 3, 10);
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        log.append(&all).unwrap();
        log.close().unwrap();
    }
    assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    assert!(
        !dir.path().join(CLEAN_SHUTDOWN_FILE).exists(),
        "marker consumed"
    );
    assert_eq!((log.first_offset(), log.next_offset()), (0, 10));
    assert_eq!(log.last_entry(), Some(LogId { term: 3, index: 9 }));
    assert_reads(&log, &all);
    // Keep appending after the reopen, then "crash" (drop without close).
    let more = entries(10..13, 4, 10);
    log.append(&more).unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.next_offset(), 13);
    assert_eq!(log.last_entry(), Some(LogId { term: 4, index: 12 }));
    assert_reads(&log, &[all, more].concat());
}

#[test]
fn an_empty_log_starts_at_the_initial_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1000, 1200);
    cfg.initial_offset = 42;
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(
        (log.first_offset(), log.next_offset(), log.last_entry()),
        (42, 42, None)
    );
    assert!(matches!(
        log.append(&[entry(0, 1, 1)]),
        Err(Error::NonContiguous {
            expected: 42,
            got: 0
        })
    ));
    log.append(&[entry(42, 1, 1)]).unwrap();
    drop(log);
    // initial_offset only applies to a new log.
    cfg.initial_offset = 7;
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (42, 43));
}

#[test]
fn reads_outside_the_log_are_out_of_range_with_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(2 * F, 1200)).unwrap();
    let empty = log.read(0).unwrap_err();
    assert!(
        matches!(
            empty,
            Error::OutOfRange {
                offset: 0,
                first: 0,
                next: 0
            }
        ),
        "{empty}"
    );
    log.append(&entries(0..6, 1, 10)).unwrap();
    assert_eq!(log.purge_before(2).unwrap(), 2);
    for offset in [0, 1, 6, 7, u64::MAX] {
        let err = log.read(offset).unwrap_err();
        assert!(
            matches!(err, Error::OutOfRange { offset: o, first: 2, next: 6 } if o == offset),
            "{err}"
        );
        let err = log.read_range(offset, 10, 1000).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfRange {
                    first: 2,
                    next: 6,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(
        log.read(1).unwrap_err().to_string(),
        "offset 1 is out of range: the log holds offsets 2..6"
    );
}

#[test]
fn a_non_contiguous_append_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(1000, 1200)).unwrap();
    log.append(&entries(0..3, 1, 10)).unwrap();
    let stats = log.stats();
    let gap = vec![entry(3, 1, 10), entry(5, 1, 10)];
    let err = log.append(&gap).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonContiguous {
                expected: 4,
                got: 5
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("expected entry index 4"), "{err}");
    let replay = log.append(&entries(1..2, 1, 10)).unwrap_err();
    assert!(matches!(
        replay,
        Error::NonContiguous {
            expected: 3,
            got: 1
        }
    ));
    assert_eq!(log.stats(), stats);
    let (s0, _) = segment_paths(dir.path(), 0);
    assert_eq!(std::fs::metadata(s0).unwrap().len(), 3 * F);
    log.append(&entries(3..4, 1, 10)).unwrap();
}

#[test]
fn an_oversized_record_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1000, 1200);
    cfg.max_record_bytes = 100;
    let log = Log::open(dir.path(), cfg).unwrap();
    let batch = vec![entry(0, 1, 10), entry(1, 1, 100), entry(2, 1, 101)];
    let err = log.append(&batch).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RecordTooLarge {
                size: 101,
                max: 100
            }
        ),
        "{err}"
    );
    assert_eq!(log.next_offset(), 0);
    let (s0, _) = segment_paths(dir.path(), 0);
    assert_eq!(
        std::fs::metadata(s0).unwrap().len(),
        0,
        "nothing reached the file"
    );
    log.append(&batch[..2]).unwrap();
    assert_reads(&log, &batch[..2]);
}

#[test]
fn an_empty_append_is_an_empty_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(1000, 1200)).unwrap();
    assert_eq!(log.append(&[]).unwrap(), 0..0);
    assert_eq!(log.append(&entries(0..2, 1, 1)).unwrap(), 0..2);
    assert_eq!(log.append(&[]).unwrap(), 2..2);
}

#[test]
fn read_range_honours_entry_and_byte_limits_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    let all = entries(0..10, 1, 10);
    log.append(&all).unwrap();
    let r = |from, n, bytes| log.read_range(from, n, bytes).unwrap();
    assert_eq!(r(0, 100, usize::MAX), all);
    assert_eq!(r(1, 4, usize::MAX), all[1..5]);
    assert_eq!(r(1, 0, usize::MAX), all[1..2], "0 entries counts as 1");
    assert_eq!(r(2, 100, 0), all[2..3], "at least one entry");
    assert_eq!(r(2, 100, F as usize), all[2..3]);
    assert_eq!(r(2, 100, 2 * F as usize - 1), all[2..3]);
    assert_eq!(
        r(2, 100, 2 * F as usize),
        all[2..4],
        "crosses a segment boundary"
    );
    assert_eq!(r(2, 100, 5 * F as usize + 3), all[2..7]);
    assert_eq!(r(8, 100, usize::MAX), all[8..], "stops at the end");
    assert_eq!(
        r(4, usize::MAX, usize::MAX),
        all[4..],
        "no limits, from mid-segment"
    );
    assert_eq!(r(5, usize::MAX, 3 * F as usize), all[5..8]);
    // A first frame larger than the budget is still returned, alone.
    log.append(&[entry(10, 1, 300)]).unwrap();
    assert_eq!(r(9, 100, 100), all[9..10]);
    assert_eq!(r(10, 100, 100), vec![entry(10, 1, 300)]);
}

#[test]
fn truncate_after_works_within_and_across_segments() {
    // (keep up to, expected segment bases after)
    let cases: [(u64, &[u64]); 6] = [
        (8, &[0, 3, 6, 9]), // the last segment keeps nothing
        (6, &[0, 3, 6]),    // inside a sealed segment that becomes active
        (5, &[0, 3, 6]),    // last entry of a segment: the next one is emptied
        (2, &[0, 3]),
        (0, &[0]),
        (9, &[0, 3, 6, 9]), // no-op: 9 is the last entry
    ];
    for (keep, bases) in cases {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
        let all = entries(0..10, 1, 10);
        log.append(&all).unwrap();
        let durable_before = log.durable_offset();
        log.truncate_after(keep).unwrap();
        assert_eq!(log.next_offset(), keep + 1, "keep {keep}");
        // A real truncation is durable (and syncs what it keeps); a no-op changes nothing.
        let durable = if keep == 9 { durable_before } else { keep + 1 };
        assert_eq!(log.durable_offset(), durable, "keep {keep}");
        assert_eq!(
            log.last_entry(),
            Some(LogId {
                term: 1,
                index: keep
            })
        );
        assert_eq!(store_bases(dir.path()), bases, "keep {keep}");
        assert_reads(&log, &all[..=keep as usize]);
        assert!(matches!(log.read(keep + 1), Err(Error::OutOfRange { .. })));
        // New entries of a new term go where the old ones were, and rolling still works.
        let newer = entries(keep + 1..keep + 8, 2, 10);
        log.append(&newer).unwrap();
        let expected = [&all[..=keep as usize], &newer[..]].concat();
        assert_reads(&log, &expected);
        drop(log);
        let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
        assert_reads(&log, &expected);
        assert_eq!(log.next_offset(), keep + 8);
    }
}

#[test]
fn truncating_to_before_the_first_entry_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    log.append(&entries(0..8, 1, 10)).unwrap();
    assert_eq!(log.purge_before(3).unwrap(), 3);
    let err = log.truncate_after(1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfRange {
                offset: 1,
                first: 3,
                next: 8
            }
        ),
        "{err}"
    );
    let err = log.truncate_from(2).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfRange {
                offset: 2,
                first: 3,
                next: 8
            }
        ),
        "{err}"
    );
    log.truncate_after(2).unwrap();
    assert_eq!(
        (log.first_offset(), log.next_offset(), log.last_entry()),
        (3, 3, None)
    );
    assert_eq!(store_bases(dir.path()), vec![3]);
    log.append(&entries(3..5, 2, 10)).unwrap();
    assert_reads(&log, &entries(3..5, 2, 10));

    // truncate_from(0) empties a log that starts at 0.
    log.reset(0).unwrap();
    log.append(&entries(0..4, 1, 10)).unwrap();
    log.truncate_from(0).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (0, 0));
    drop(log);
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (0, 0));
}

#[test]
fn purge_before_deletes_only_whole_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    let all = entries(0..11, 1, 10);
    log.append(&all).unwrap();
    assert_eq!(store_bases(dir.path()), vec![0, 3, 6, 9]);
    assert_eq!(
        log.purge_before(2).unwrap(),
        0,
        "segment 0..3 still holds 2"
    );
    assert_eq!(log.purge_before(3).unwrap(), 3);
    assert_eq!(
        log.purge_before(8).unwrap(),
        6,
        "several segments, never a partial one"
    );
    assert_eq!(
        log.purge_before(u64::MAX).unwrap(),
        9,
        "never the active segment"
    );
    assert_eq!(store_bases(dir.path()), vec![9]);
    assert_eq!(segment_files(dir.path()).len(), 2, "index files went too");
    assert_eq!((log.first_offset(), log.next_offset()), (9, 11));
    assert_reads(&log, &all[9..]);
    drop(log);
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (9, 11));
    assert_eq!(log.purge_before(0).unwrap(), 9);
}

#[test]
fn reset_starts_an_empty_log_at_any_offset() {
    for target in [100, 4, 0] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
        log.append(&entries(0..8, 1, 10)).unwrap();
        let mut rx = log.subscribe();
        log.reset(target).unwrap();
        assert_eq!(*rx.borrow_and_update(), target);
        assert_eq!(
            (
                log.first_offset(),
                log.next_offset(),
                log.durable_offset(),
                log.last_entry()
            ),
            (target, target, target, None)
        );
        assert_eq!(store_bases(dir.path()), vec![target]);
        assert!(matches!(log.read(target), Err(Error::OutOfRange { .. })));
        log.append(&entries(target..target + 4, 5, 10)).unwrap();
        drop(log);
        let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
        assert_eq!(log.first_offset(), target);
        assert_reads(&log, &entries(target..target + 4, 5, 10));
    }
}

#[test]
fn an_interrupted_reset_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(3 * F, 1200);
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        log.append(&entries(0..8, 1, 10)).unwrap();
    }
    // As if reset(50) crashed after creating the new segment, before deleting the old ones.
    let (store, index) = segment_paths(dir.path(), 50);
    std::fs::write(store, b"").unwrap();
    std::fs::write(index, [0u8; 120]).unwrap();
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (50, 50));
    assert_eq!(store_bases(dir.path()), vec![50]);

    // A gap before a non-empty segment is corruption, not a reset.
    log.append(&entries(50..52, 1, 10)).unwrap();
    drop(log);
    let (store, _) = segment_paths(dir.path(), 70);
    let mut frame = Vec::new();
    frame::encode_into(&entry(70, 1, 10), &mut frame);
    std::fs::write(store, frame).unwrap();
    let err = Log::open(dir.path(), cfg).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if path.ends_with("00000000000000000070.store")),
        "{err}"
    );
}

#[test]
fn an_index_left_by_an_interrupted_deletion_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(3 * F, 1200);
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        log.append(&entries(0..8, 1, 10)).unwrap();
    }
    // Purge deletes the index first: a crash can leave segment 0's store alone (handled by
    // rebuilding) or, after the store went too, nothing. Leave an orphan index below the first
    // store, as a crashed deletion of an older segment would.
    std::fs::remove_file(segment_paths(dir.path(), 0).0).unwrap();
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(log.first_offset(), 3);
    assert_eq!(store_bases(dir.path()), vec![3, 6]);
    assert_eq!(segment_files(dir.path()).len(), 4);
    drop(log);
    // A sealed store whose index is gone gets its index rebuilt.
    std::fs::remove_file(segment_paths(dir.path(), 3).1).unwrap();
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_reads(&log, &entries(3..8, 1, 10));
    assert_eq!(
        std::fs::metadata(segment_paths(dir.path(), 3).1)
            .unwrap()
            .len(),
        36
    );
}

#[test]
fn a_damaged_sealed_segment_is_reported_with_its_path_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(3 * F, 1200);
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        log.append(&entries(0..8, 1, 10)).unwrap();
        log.close().unwrap();
    }
    let (store, _) = segment_paths(dir.path(), 3);
    // The last frame of the segment is checked on open.
    let mut bytes = std::fs::read(&store).unwrap();
    bytes[2 * F as usize + 40] ^= 0x10;
    std::fs::write(&store, &bytes).unwrap();
    let err = Log::open(dir.path(), cfg.clone()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, position, .. } if *path == store && *position == 2 * F),
        "{err}"
    );
    // Damage in the middle is found when read; the other entries stay readable.
    bytes[2 * F as usize + 40] ^= 0x10;
    bytes[F as usize + 35] ^= 0x01;
    std::fs::write(&store, &bytes).unwrap();
    let log = Log::open(dir.path(), cfg).unwrap();
    let err = log.read(4).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, position, .. } if *path == store && *position == F),
        "{err}"
    );
    assert!(matches!(
        log.read_range(3, 10, 10_000),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(log.read(5).unwrap(), entry(5, 1, 10));
    assert_eq!(log.read(3).unwrap(), entry(3, 1, 10));
}

#[test]
fn the_last_segment_is_scanned_when_there_was_no_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1000, 1200);
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        log.append(&entries(0..5, 1, 10)).unwrap();
        // Dropped without close: the index is still preallocated to full size.
    }
    let (store, index) = segment_paths(dir.path(), 0);
    assert_eq!(std::fs::metadata(&index).unwrap().len(), 1200);
    // Garbage past the frames (a torn write) and a stale index entry pointing into it.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&store)
        .unwrap();
    std::io::Write::write_all(&mut f, &[7u8; 50]).unwrap();
    let mut idx = std::fs::read(&index).unwrap();
    idx[60..64].copy_from_slice(&5u32.to_le_bytes());
    idx[64..72].copy_from_slice(&(5 * F).to_le_bytes());
    std::fs::write(&index, idx).unwrap();
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.next_offset(), 5);
    assert_eq!(std::fs::metadata(&store).unwrap().len(), 5 * F, "tail cut");
    assert_reads(&log, &entries(0..5, 1, 10));
    log.append(&entries(5..6, 1, 10)).unwrap();
    assert_reads(&log, &entries(0..6, 1, 10));
}

#[test]
fn a_directory_is_opened_by_one_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(1000, 1200)).unwrap();
    assert!(matches!(
        Log::open(dir.path(), config(1000, 1200)),
        Err(Error::Locked { .. })
    ));
    log.close().unwrap();
    Log::open(dir.path(), config(1000, 1200)).unwrap();
}

#[test]
fn every_call_after_close_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(1000, 1200)).unwrap();
    log.append(&entries(0..2, 1, 1)).unwrap();
    let other = log.clone();
    log.close().unwrap();
    assert!(matches!(other.close(), Err(Error::Closed)));
    assert!(matches!(
        other.append(&entries(2..3, 1, 1)),
        Err(Error::Closed)
    ));
    assert!(matches!(other.read(0), Err(Error::Closed)));
    assert!(matches!(other.read_range(0, 1, 1), Err(Error::Closed)));
    assert!(matches!(other.sync(), Err(Error::Closed)));
    assert!(matches!(other.truncate_after(0), Err(Error::Closed)));
    assert!(matches!(other.purge_before(1), Err(Error::Closed)));
    assert!(matches!(other.reset(0), Err(Error::Closed)));
}

#[test]
fn invalid_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in [
        config(1000, 11),
        config(0, 1200),
        LogConfig {
            fsync: FsyncPolicy::Interval(Duration::ZERO),
            ..config(1000, 1200)
        },
        LogConfig {
            max_record_bytes: u32::MAX,
            ..config(1000, 1200)
        },
    ] {
        assert!(matches!(
            Log::open(dir.path(), cfg),
            Err(Error::InvalidConfig { .. })
        ));
    }
}

#[test]
fn sync_moves_the_durable_offset_and_append_unsynced_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(3 * F, 1200);
    cfg.fsync = FsyncPolicy::Always;
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.append(&entries(0..2, 1, 10)).unwrap(), 0..2);
    assert_eq!(log.durable_offset(), 2);
    log.append_unsynced(&entries(2..3, 1, 10)).unwrap();
    assert_eq!(log.durable_offset(), 2);
    assert_eq!(
        log.read(2).unwrap(),
        entry(2, 1, 10),
        "visible before it is durable"
    );
    assert_eq!(log.sync().unwrap(), 3);
    assert_eq!(log.sync().unwrap(), 3, "nothing new: no-op");
    // Rolling seals (and syncs) the full segment.
    log.append_unsynced(&entries(3..5, 1, 10)).unwrap();
    assert_eq!(log.durable_offset(), 3);
    assert_eq!(log.stats().durable_offset, 3);
    assert_eq!(log.sync().unwrap(), 5);
    log.close().unwrap();
}

#[test]
fn the_interval_policy_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1000, 1200);
    cfg.fsync = FsyncPolicy::Interval(Duration::from_millis(5));
    let log = Log::open(dir.path(), cfg).unwrap();
    log.append(&entries(0..3, 1, 10)).unwrap();
    // Liveness only (no timing assertion): wait until the background thread has synced.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log.durable_offset() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "background sync never happened"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    log.close().unwrap();
}

#[test]
fn a_failed_fsync_poisons_the_log_for_all_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1000, 1200);
    cfg.fsync = FsyncPolicy::Always;
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    log.append(&entries(0..2, 1, 10)).unwrap();
    log.inner.fail_syncs.store(true, Ordering::SeqCst);
    let err = log.append(&entries(2..3, 1, 10)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(log.durable_offset(), 2, "never acknowledged");
    // Even if the disk recovers, nothing is retried or acknowledged.
    log.inner.fail_syncs.store(false, Ordering::SeqCst);
    for result in [
        log.append(&entries(3..4, 1, 10)).map(|_| ()),
        log.sync().map(|_| ()),
        log.truncate_after(0),
        log.purge_before(1).map(|_| ()),
        log.reset(0),
    ] {
        assert!(matches!(result, Err(Error::Poisoned { .. })), "{result:?}");
    }
    assert_eq!(log.read(1).unwrap(), entry(1, 1, 10), "reads still work");
    assert!(matches!(log.close(), Err(Error::Poisoned { .. })));
    // Reopening recovers from what is on disk (here everything reached the page cache).
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.next_offset(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_wakes_a_waiting_reader() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    let mut rx = log.subscribe();
    assert_eq!(*rx.borrow_and_update(), 0);
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < 5 {
                rx.changed().await.unwrap();
                let announced = *rx.borrow_and_update();
                let from = seen.len() as u64;
                // NB: a read returns everything readable, which may be more than was announced
                // (more may have been appended since the notification); a later notification
                // then announces only what was already read. Read only what is new.
                if announced <= from {
                    continue;
                }
                let got = tokio::task::block_in_place(|| log.read_range(from, 100, 1 << 20));
                seen.extend(got.unwrap());
                // Everything announced is readable by the time it is announced.
                assert!(seen.len() as u64 >= announced);
            }
            seen
        })
    };
    let writer = log.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..5 {
            writer.append(&[entry(i, 1, 10)]).unwrap();
        }
    })
    .await
    .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the reader was never woken")
        .unwrap();
    assert_eq!(seen, entries(0..5, 1, 10));
}

#[test]
fn a_notification_can_announce_only_entries_already_read() {
    // The interleaving behind the old flake of `subscribe_wakes_a_waiting_reader`, step by
    // step: a reader woken for 0..1 reads 0..3, then is woken again for 0..3.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    let mut rx = log.subscribe();
    log.append(&entries(0..1, 1, 10)).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
    log.append(&entries(1..3, 1, 10)).unwrap();
    let read = log.read_range(0, 100, 1 << 20).unwrap();
    assert_eq!(read, entries(0..3, 1, 10), "more than was announced");
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        *rx.borrow_and_update(),
        3,
        "announces what was already read"
    );
    assert!(matches!(
        log.read_range(3, 100, 1 << 20),
        Err(Error::OutOfRange {
            offset: 3,
            first: 0,
            next: 3
        })
    ));
}

#[test]
fn read_range_at_the_end_is_out_of_range_like_read() {
    // The contract (see `Log::read_range`): a successful read is never empty, so `next` itself
    // is out of range; a tailing reader waits on `subscribe` until `next` moves past it.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(3 * F, 1200)).unwrap();
    for next in [0u64, 3, 4] {
        log.append(&entries(log.next_offset()..next, 1, 10))
            .unwrap();
        for from in [next, next + 1] {
            let err = log.read_range(from, 10, 1000).unwrap_err();
            assert!(
                matches!(err, Error::OutOfRange { offset, first: 0, next: n } if offset == from && n == next),
                "from {from}: {err}"
            );
        }
    }
    assert_eq!(log.read_range(3, 10, 1000).unwrap(), entries(3..4, 1, 10));
}

/// Checks an entry read concurrently: whatever version it is, it must be whole and be the
/// entry of the offset asked for.
fn check_consistent(offset: u64, e: &Entry) {
    assert_eq!(e.index, offset);
    let text = std::str::from_utf8(&e.payload).unwrap();
    let mut parts = text.split(':');
    assert_eq!(
        parts.next().unwrap().parse::<u64>().unwrap(),
        e.index,
        "{text}"
    );
    assert_eq!(
        parts.next().unwrap().parse::<u64>().unwrap(),
        e.term,
        "{text}"
    );
    assert!(parts.next().unwrap().bytes().all(|b| b == b'.'), "{text}");
    assert_eq!(e.timestamp_ms, 1_000 + e.index);
}

/// Counts the rounds of concurrent reader threads, so that the writer can wait until every
/// reader has run between two of its phases: on a loaded machine the readers might otherwise
/// not be scheduled at all before the writer is done, and the test would check nothing.
struct ReaderRounds {
    rounds: Vec<AtomicU64>,
    lock: parking_lot::Mutex<()>,
    advanced: parking_lot::Condvar,
}

impl ReaderRounds {
    fn new(readers: usize) -> Self {
        ReaderRounds {
            rounds: (0..readers).map(|_| AtomicU64::new(0)).collect(),
            lock: parking_lot::Mutex::new(()),
            advanced: parking_lot::Condvar::new(),
        }
    }

    fn finished_round(&self, reader: usize) {
        self.rounds[reader].fetch_add(1, Ordering::SeqCst);
        // Taking the lock orders the increment before a waiter's check or after its wait began,
        // so the notification is never lost.
        drop(self.lock.lock());
        self.advanced.notify_all();
    }

    fn snapshot(&self) -> Vec<u64> {
        self.rounds
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .collect()
    }

    /// Waits until every reader has finished a round since `since`, or one of them has exited
    /// (it panicked; joining it reports why).
    fn wait_for_every_reader(&self, since: &[u64], readers: &[std::thread::JoinHandle<u64>]) {
        let mut guard = self.lock.lock();
        loop {
            let all_ran = self
                .rounds
                .iter()
                .zip(since)
                .all(|(round, &seen)| round.load(Ordering::SeqCst) > seen);
            if all_ran || readers.iter().any(|r| r.is_finished()) {
                return;
            }
            // A panicking reader notifies nobody: the bounded wait re-checks `is_finished`.
            self.advanced
                .wait_for(&mut guard, Duration::from_millis(50));
        }
    }
}

#[test]
fn concurrent_readers_never_see_torn_or_foreign_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(4096, 12 * 50)).unwrap();
    log.append(&entries(0..50, 1, 40)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(ReaderRounds::new(3));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let log = log.clone();
            let stop = Arc::clone(&stop);
            let rounds = Arc::clone(&rounds);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut i = r as u64;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 7 + 13) % 100_000;
                    let (first, next) = (log.first_offset(), log.next_offset());
                    let offset = first + i % (next - first + 2); // sometimes past the end
                    match log.read(offset) {
                        Ok(e) => {
                            check_consistent(offset, &e);
                            reads += 1;
                        }
                        Err(Error::OutOfRange { .. }) => {}
                        Err(e) => panic!("read {offset}: {e}"),
                    }
                    match log.read_range(offset, 64, 2000) {
                        Ok(batch) => {
                            for (k, e) in batch.iter().enumerate() {
                                check_consistent(offset + k as u64, e);
                            }
                            assert!(!batch.is_empty());
                        }
                        Err(Error::OutOfRange { .. }) => {}
                        Err(e) => panic!("read_range {offset}: {e}"),
                    }
                    rounds.finished_round(r);
                }
                reads
            })
        })
        .collect();
    // The writer appends, truncates (new terms rewrite the same offsets), purges, and resets,
    // in phases of 10 rounds; every reader reads at least once in every phase.
    let mut term = 1;
    for round in 0..150u64 {
        if round % 10 == 0 {
            rounds.wait_for_every_reader(&rounds.snapshot(), &readers);
        }
        let next = log.next_offset();
        log.append(&entries(
            next..next + 1 + round % 17,
            term,
            10 + (round as usize * 13) % 90,
        ))
        .unwrap();
        if round % 5 == 4 {
            term += 1;
            let first = log.first_offset();
            let next = log.next_offset();
            log.truncate_after(first + (next - first) * 2 / 3).unwrap();
        }
        if round % 11 == 10 {
            let next = log.next_offset();
            log.purge_before(next.saturating_sub(40)).unwrap();
        }
        if round % 50 == 49 {
            let next = log.next_offset();
            log.reset(next + 3).unwrap();
        }
    }
    rounds.wait_for_every_reader(&rounds.snapshot(), &readers);
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
}
