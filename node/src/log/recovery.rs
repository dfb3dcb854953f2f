//! Recovery: how [`Log::open`](super::Log::open) turns whatever a crash left in the directory
//! back into a valid log, before the first read or write.
//!
//! # What it guarantees
//!
//! After a successful open the log holds, contiguous from `first_offset` to `next_offset`,
//! the entries that were appended before the crash and not since truncated, purged or reset:
//! every one that was made durable, possibly followed by some that reached the disk without
//! being synced, and nothing else (no torn, foreign or reordered entry). `durable_offset ==
//! next_offset`: everything the log holds is on disk. Recovery cuts only data that was never
//! made durable (a torn tail of the last segment); data in a sealed segment is never dropped
//! silently: damage there fails the open with [`Error::Corrupt`] naming the file and the byte
//! position.
//!
//! # The crash states it repairs, and how
//!
//! - **A torn or garbage tail of the last segment** (a write cut mid-frame, or zeros / stale
//!   bytes after a power loss): unless the previous shutdown was clean, the last store is
//!   scanned frame by frame from its start and cut (and synced) at the first torn or invalid
//!   frame (bad CRC, impossible length, or an index field other than `base + n`).
//! - **A stale, preallocated or garbage index of the last segment**: that index is rebuilt from
//!   the valid frames of the scan, so the store alone decides the next offset. (The `proglog`
//!   index yields a wrong next offset after `kill -9`; this one cannot.)
//! - **A sealed index that disagrees with its intact store** (a crash while sealing, or an index
//!   damaged or lost): every segment but the last is opened after an O(1) check (index size a
//!   positive multiple of 12, first entry `(0, 0)`, last entry `(n-1, p)`, the frame at `p`
//!   valid and ending exactly at the end of the store). If the check fails the store is scanned
//!   in full: if every frame is valid the index is rebuilt (it is only a cache); otherwise the
//!   open fails with `Corrupt` at the first invalid frame. Damage inside a sealed segment that
//!   the O(1) check does not touch is found when it is read (every read validates its frames).
//! - **An index without its store** (an interrupted deletion: the segment's two unlinks become
//!   durable with one directory sync, so the index's may survive the store's): deleted when it
//!   lies outside the range of stores; between two stores it is `Corrupt`, since no deletion
//!   order leaves a hole.
//! - **An interrupted [`Log::reset`](super::Log::reset)**: an *empty* last segment after a gap
//!   or overlap; the segments before it are deleted, completing the reset. Any other gap
//!   between segments is `Corrupt`.
//! - **Data that survived a process crash only in the page cache**: the recovered last store is
//!   synced, so that nothing the log now holds can still be lost.
//!
//! Interrupted truncations and purges need no repair: they delete segments newest first
//! (truncation) or oldest first (purge) and sync the directory after each one, so a crash
//! leaves a prefix or a suffix of the log, which opens like any other.
//!
//! A clean [`Log::close`](super::Log::close) leaves the [`CLEAN_SHUTDOWN_FILE`] marker: then the
//! last segment is opened with the O(1) check instead of the scan (falling back to the scan if
//! the check fails), and the marker is removed (and the directory synced) before the log is
//! used, so that a later crash is never mistaken for a clean shutdown.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::LogConfig;
use super::error::{Error, Result};
use super::segment::{
    INDEX_EXT, STORE_EXT, Segment, parse_segment_file_name, segment_paths, sync_dir,
};

/// Present only between a clean [`Log::close`](super::Log::close) and the next open.
pub(super) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// Opens every segment in `dir` (whose lock the caller holds), repairing what a crash left as
/// described in the module docs, and returns them oldest first; never empty. `sync` is false
/// only for [`FsyncPolicy::Never`](super::FsyncPolicy::Never).
pub(super) fn recover(dir: &Path, config: &LogConfig, sync: bool) -> Result<Vec<Segment>> {
    // base -> (has store, has index)
    let mut found: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| Error::io("list", dir, e))?;
        let name = item.file_name();
        let Some((base, ext)) = name.to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        let slot = found.entry(base).or_default();
        match ext {
            STORE_EXT => slot.0 = true,
            INDEX_EXT => slot.1 = true,
            _ => {}
        }
    }
    let stores: Vec<u64> = found.iter().filter(|(_, f)| f.0).map(|(&b, _)| b).collect();
    for (&base, _) in found.iter().filter(|(_, f)| !f.0) {
        let (_, index_path) = segment_paths(dir, base);
        let inside = stores.first().is_some_and(|&lo| lo < base)
            && stores.last().is_some_and(|&hi| base < hi);
        if inside {
            return Err(Error::corrupt(
                &index_path,
                0,
                "index file without its store between other segments",
            ));
        }
        tracing::info!(path = %index_path.display(), "removing an index left over from an interrupted deletion");
        Segment::delete_files(dir, base)?;
    }

    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    let Some((&last_base, sealed_bases)) = stores.split_last() else {
        let segment = Segment::create(dir, config.initial_offset, config.max_index_bytes)?;
        if sync {
            sync_dir(dir)?;
        }
        remove_marker(&marker, clean, dir, sync)?;
        return Ok(vec![segment]);
    };

    let mut segments = Vec::with_capacity(stores.len());
    for &base in sealed_bases {
        segments.push(Segment::open_checked(
            dir,
            base,
            config.max_index_bytes,
            false,
            sync,
        )?);
    }
    let last = if clean {
        Segment::open_checked(dir, last_base, config.max_index_bytes, true, sync)?
    } else {
        let (segment, recovery) =
            Segment::recover_active(dir, last_base, config.max_index_bytes, sync)?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(
                path = %segment.store.path().display(),
                bytes = recovery.truncated_bytes,
                reason = recovery.reason.as_deref().unwrap_or(""),
                "cut a torn or invalid tail off the last segment"
            );
        }
        if sync {
            // What survived a process crash may still be only in the page cache.
            segment.store.shared().sync_data()?;
        }
        segment
    };
    segments.push(last);

    // Contiguity, with the interrupted-reset exception for an empty last segment.
    let n = segments.len();
    for i in 0..n.saturating_sub(1) {
        let (end, next_base) = (segments[i].end(), segments[i + 1].base());
        if end == next_base {
            continue;
        }
        if i + 2 == n && segments[n - 1].len() == 0 {
            tracing::warn!(base = next_base, "completing an interrupted reset");
            for segment in segments.drain(..n - 1) {
                Segment::delete_files(dir, segment.base())?;
                if sync {
                    sync_dir(dir)?;
                }
            }
            break;
        }
        return Err(Error::corrupt(
            segments[i + 1].store.path(),
            0,
            format!("segment starts at offset {next_base} but the previous one ends at {end}"),
        ));
    }
    remove_marker(&marker, clean, dir, sync)?;
    Ok(segments)
}

fn remove_marker(marker: &Path, present: bool, dir: &Path, sync: bool) -> Result<()> {
    if present {
        std::fs::remove_file(marker).map_err(|e| Error::io("delete", marker, e))?;
        if sync {
            sync_dir(dir)?;
        }
    }
    Ok(())
}
