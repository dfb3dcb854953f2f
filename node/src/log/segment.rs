//! A segment: a `.store` file and its `.index`, holding the entries `base..end`.
//!
//! Files are named by the base offset zero-padded to 20 digits: `00000000000000001234.store`
//! and `00000000000000001234.index`. Only the last segment of a log is *active* (appendable);
//! the others are *sealed*: their store is complete and synced, their index trimmed and synced.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::frame::FrameHeader;
use super::index::{ENTRY_WIDTH, SegmentIndex};
use super::store::{ScanEnd, Store};

/// File extension of store files.
pub const STORE_EXT: &str = "store";
/// File extension of index files.
pub const INDEX_EXT: &str = "index";

/// The `.store` and `.index` paths of the segment starting at `base`.
pub fn segment_paths(dir: &Path, base: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{base:020}.{STORE_EXT}")),
        dir.join(format!("{base:020}.{INDEX_EXT}")),
    )
}

/// Parses a segment file name into its base offset and extension.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if ext != STORE_EXT && ext != INDEX_EXT {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// `fsync` of the log directory: makes the creation or deletion of segment files durable (a
/// synced file whose directory entry is not synced may vanish in a crash).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// How a recovered segment ended: what was cut off, if anything.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Bytes removed from the end of the store (a torn or corrupt tail).
    pub(crate) truncated_bytes: u64,
    /// Why the tail was cut.
    pub(crate) reason: Option<String>,
}

/// One segment of the log.
#[derive(Debug)]
pub(crate) struct Segment {
    base: u64,
    pub(crate) store: Store,
    pub(crate) index: SegmentIndex,
    /// Header of the last entry, if any (its term is the log's last term).
    last: Option<FrameHeader>,
}

impl Segment {
    /// Creates an empty active segment at `base` (fails if its store file exists).
    /// The caller syncs the directory.
    pub(crate) fn create(dir: &Path, base: u64, max_index_bytes: u64) -> Result<Segment> {
        let (store_path, index_path) = segment_paths(dir, base);
        // Store first: an index without a store is treated as a leftover of a deletion.
        let store = Store::create(&store_path)?;
        let (file, _) = SegmentIndex::open_file(&index_path)?;
        let index = SegmentIndex::activate(&index_path, file, max_index_bytes, 0)?;
        Ok(Segment {
            base,
            store,
            index,
            last: None,
        })
    }

    /// Opens the last segment of a log by scanning its whole store: the store is cut at the
    /// first torn or invalid frame and the index rebuilt from the valid frames.
    pub(crate) fn recover_active(
        dir: &Path,
        base: u64,
        max_index_bytes: u64,
        sync: bool,
    ) -> Result<(Segment, Recovery)> {
        let (store_path, index_path) = segment_paths(dir, base);
        let (mut store, file_len) = Store::open(&store_path)?;
        let mut positions = Vec::new();
        let end = Store::scan(store.shared(), 0, file_len, base, |pos, _| {
            positions.push(pos);
            Ok(())
        })?;
        let mut recovery = Recovery::default();
        if end.valid_len < file_len {
            recovery.truncated_bytes = file_len - end.valid_len;
            recovery.reason = end.stopped.clone();
            store.truncate(end.valid_len)?;
            if sync {
                store.shared().sync_data()?;
            }
        }
        store.set_size(end.valid_len);
        let (file, _) = SegmentIndex::open_file(&index_path)?;
        let mut index = SegmentIndex::activate(&index_path, file, max_index_bytes, 0)?;
        for (i, &pos) in positions.iter().enumerate() {
            let Ok(rel) = u32::try_from(i) else {
                return Err(Error::corrupt(
                    &store_path,
                    pos,
                    "segment holds more entries than an index can address",
                ));
            };
            index.push(rel, pos);
        }
        Ok((
            Segment {
                base,
                store,
                index,
                last: end.last,
            },
            recovery,
        ))
    }

    /// Opens a segment whose index is trusted after a cheap consistency check (first and last
    /// entries, last frame ending exactly at the end of the store). `active` maps the index for
    /// appending (the last segment after a clean shutdown); otherwise it is opened sealed.
    ///
    /// A sealed segment whose index fails the check is scanned in full: an intact store gets a
    /// rebuilt index (the index is only a cache); a store with an invalid frame is `Corrupt`,
    /// reported with the store's path and the frame's position.
    pub(crate) fn open_checked(
        dir: &Path,
        base: u64,
        max_index_bytes: u64,
        active: bool,
        sync: bool,
    ) -> Result<Segment> {
        let (store_path, index_path) = segment_paths(dir, base);
        let (mut store, store_len) = Store::open(&store_path)?;
        let (index_file, index_len) = SegmentIndex::open_file(&index_path)?;
        let mismatch =
            match check_index(&store, store_len, &index_path, &index_file, index_len, base) {
                Err(mismatch) => mismatch,
                Ok(last) => {
                    store.set_size(store_len);
                    let count = index_len / ENTRY_WIDTH;
                    let index = if active {
                        SegmentIndex::activate(&index_path, index_file, max_index_bytes, count)?
                    } else {
                        SegmentIndex::sealed(&index_path, index_file, count)?
                    };
                    return Ok(Segment {
                        base,
                        store,
                        index,
                        last: Some(last),
                    });
                }
            };
        if active {
            drop((store, index_file));
            let (segment, recovery) = Segment::recover_active(dir, base, max_index_bytes, sync)?;
            if recovery.truncated_bytes > 0 {
                tracing::warn!(
                    path = %store_path.display(),
                    bytes = recovery.truncated_bytes,
                    reason = recovery.reason.as_deref().unwrap_or(""),
                    %mismatch,
                    "clean-shutdown marker present but the last segment was inconsistent; cut its tail"
                );
            }
            return Ok(segment);
        }
        let mut entries = Vec::new();
        let end: ScanEnd = Store::scan(store.shared(), 0, store_len, base, |pos, _| {
            let rel = u32::try_from(entries.len()).map_err(|_| {
                Error::corrupt(
                    &store_path,
                    pos,
                    "segment holds more entries than an index can address",
                )
            })?;
            entries.push((rel, pos));
            Ok(())
        })?;
        if let Some(reason) = end.stopped {
            return Err(Error::corrupt(&store_path, end.valid_len, reason));
        }
        if end.frames == 0 {
            return Err(Error::corrupt(
                &store_path,
                0,
                "sealed segment holds no entries",
            ));
        }
        tracing::warn!(path = %index_path.display(), entries = end.frames, %mismatch, "sealed index was inconsistent with its intact store; rebuilt it");
        store.set_size(store_len);
        let index = SegmentIndex::rewrite_sealed(&index_path, index_file, &entries, sync)?;
        Ok(Segment {
            base,
            store,
            index,
            last: end.last,
        })
    }

    /// First offset held (or that the first append will get).
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// One past the last offset held.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.index.len()
    }

    pub(crate) fn len(&self) -> u64 {
        self.index.len()
    }

    pub(crate) fn last(&self) -> Option<FrameHeader> {
        self.last
    }

    pub(crate) fn set_last(&mut self, last: Option<FrameHeader>) {
        self.last = last;
    }

    /// Whether one more frame of `frame_len` bytes fits within the limits. An empty segment
    /// always takes one entry, however large, so that any accepted record can be stored.
    pub(crate) fn fits(
        &self,
        used_bytes: u64,
        used_entries: u64,
        frame_len: u64,
        max_store_bytes: u64,
    ) -> bool {
        if used_entries >= self.index.capacity() {
            return false;
        }
        used_entries == 0 || used_bytes + frame_len <= max_store_bytes
    }

    /// Store position of relative entry `rel`; `rel == len()` gives the end of the store.
    pub(crate) fn position(&self, rel: u64) -> Result<u64> {
        if rel == self.index.len() {
            return Ok(self.store.size());
        }
        match self.index.entry(rel) {
            Some((stored_rel, pos)) if u64::from(stored_rel) == rel && pos <= self.store.size() => {
                Ok(pos)
            }
            Some((stored_rel, pos)) => Err(Error::corrupt(
                self.index.path(),
                rel * ENTRY_WIDTH,
                format!(
                    "index entry {rel} holds relative offset {stored_rel} and position {pos} \
                     (store size {})",
                    self.store.size()
                ),
            )),
            None => Err(Error::corrupt(
                self.index.path(),
                rel * ENTRY_WIDTH,
                format!("index entry {rel} is missing"),
            )),
        }
    }

    /// Store position and frame length of `offset`, which the caller checked is in
    /// `base..end`.
    pub(crate) fn locate(&self, offset: u64) -> Result<(u64, u64)> {
        let rel = offset - self.base;
        let pos = self.position(rel)?;
        let next = self.position(rel + 1)?;
        if next <= pos {
            return Err(Error::corrupt(
                self.index.path(),
                (rel + 1) * ENTRY_WIDTH,
                format!("index positions do not increase: entry {rel} at {pos}, next at {next}"),
            ));
        }
        Ok((pos, next - pos))
    }

    /// The entries `from..from + n` to read in one go: `n` is at most `max_entries`, at least 1,
    /// and as large as possible while the frames take at most `max_bytes` (more only for the
    /// single first frame). Returns `(start position, end position, n)`.
    pub(crate) fn span(
        &self,
        from: u64,
        max_entries: u64,
        max_bytes: u64,
    ) -> Result<(u64, u64, u64)> {
        let rel = from - self.base;
        let start = self.position(rel)?;
        // Binary search for the largest end entry within the byte budget; positions increase
        // in a valid index (a damaged one is caught when the frames are checked).
        let mut lo = rel + 1;
        // NB: saturating: callers pass `u64::MAX` for "no entry limit".
        let mut hi = rel.saturating_add(max_entries.max(1)).min(self.index.len());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.position(mid)?.saturating_sub(start) <= max_bytes {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let end = self.position(lo)?;
        if end <= start {
            return Err(Error::corrupt(
                self.index.path(),
                lo * ENTRY_WIDTH,
                format!("index positions do not increase after entry {rel}"),
            ));
        }
        Ok((start, end, lo - rel))
    }

    /// Deletes the segment's files: index first, so that a crash in between leaves a store
    /// without index (rebuilt on open) rather than an index without data.
    pub(crate) fn delete_files(dir: &Path, base: u64) -> Result<()> {
        let (store_path, index_path) = segment_paths(dir, base);
        for path in [index_path, store_path] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete", &path, e)),
            }
        }
        Ok(())
    }
}

/// Cheap consistency check of an index against its store; returns the last frame's header.
/// A mismatch is `Corrupt` at the index entry (or store frame) that disagrees; the caller
/// decides whether that is fatal (it rebuilds the index when the store is intact).
fn check_index(
    store: &Store,
    store_len: u64,
    index_path: &Path,
    index_file: &File,
    index_len: u64,
    base: u64,
) -> Result<FrameHeader> {
    let count = index_len / ENTRY_WIDTH;
    if count == 0 || !index_len.is_multiple_of(ENTRY_WIDTH) {
        return Err(Error::corrupt(
            index_path,
            0,
            format!("index size {index_len} is not a positive multiple of {ENTRY_WIDTH}"),
        ));
    }
    if SegmentIndex::read_raw(index_file, index_len, 0) != Some((0, 0)) {
        return Err(Error::corrupt(
            index_path,
            0,
            "first index entry is not (0, 0)",
        ));
    }
    let last_at = (count - 1) * ENTRY_WIDTH;
    let Some((rel, pos)) = SegmentIndex::read_raw(index_file, index_len, count - 1) else {
        return Err(Error::corrupt(
            index_path,
            last_at,
            "last index entry unreadable",
        ));
    };
    if u64::from(rel) != count - 1 || pos >= store_len {
        return Err(Error::corrupt(
            index_path,
            last_at,
            format!(
                "last index entry ({rel}, {pos}) does not fit {count} entries in a store of \
                 {store_len} bytes"
            ),
        ));
    }
    let (header, _) = Store::read_frame(store.shared(), pos, store_len - pos, base + count - 1)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame::{self, Entry, EntryKind};

    /// Creates segment `base` holding frames with the given payload sizes; returns it and the
    /// frame positions.
    fn segment_with(dir: &Path, base: u64, sizes: &[usize]) -> (Segment, Vec<u64>) {
        let mut segment = Segment::create(dir, base, 1200).unwrap();
        let mut buf = Vec::new();
        let mut positions = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            positions.push(buf.len() as u64);
            let entry = Entry {
                index: base + i as u64,
                term: 1,
                kind: EntryKind::Data,
                timestamp_ms: 0,
                payload: vec![7; len].into(),
            };
            frame::encode_into(&entry, &mut buf);
        }
        segment.store.shared().write_all_at(&buf, 0).unwrap();
        segment.store.set_size(buf.len() as u64);
        for (i, &pos) in positions.iter().enumerate() {
            segment.index.push(i as u32, pos);
        }
        (segment, positions)
    }

    #[test]
    fn span_takes_as_many_frames_as_the_budget_allows_and_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        // Frames of 43, 53, 63, 73 bytes at 0, 43, 96, 159; store ends at 232.
        let (segment, positions) = segment_with(dir.path(), 100, &[10, 20, 30, 40]);
        assert_eq!(positions, vec![0, 43, 96, 159]);
        assert_eq!(segment.span(100, 10, 1000).unwrap(), (0, 232, 4));
        assert_eq!(segment.span(100, 2, 1000).unwrap(), (0, 96, 2));
        assert_eq!(segment.span(101, 10, 116).unwrap(), (43, 159, 2));
        assert_eq!(segment.span(101, 10, 115).unwrap(), (43, 96, 1));
        assert_eq!(
            segment.span(102, 10, 0).unwrap(),
            (96, 159, 1),
            "at least one"
        );
        assert_eq!(
            segment.span(101, u64::MAX, u64::MAX).unwrap(),
            (43, 232, 3),
            "no limits"
        );
        assert_eq!(segment.locate(103).unwrap(), (159, 73));
    }

    #[test]
    fn an_index_entry_that_disagrees_is_reported_as_corruption_of_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let (mut segment, _) = segment_with(dir.path(), 0, &[1, 2]);
        segment.index.truncate(1);
        segment.index.push(5, 44); // wrong relative offset
        let err = segment.locate(1).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path, position: 12, .. } if path == segment.index.path()),
            "{err}"
        );
    }

    #[test]
    fn recovering_the_active_segment_cuts_the_torn_tail_and_rebuilds_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let (segment, positions) = segment_with(dir.path(), 10, &[5, 6, 7]);
        let torn = positions[2] + 20;
        segment.store.shared().set_len(torn).unwrap();
        drop(segment);
        let (segment, recovery) = Segment::recover_active(dir.path(), 10, 1200, false).unwrap();
        assert_eq!((segment.base(), segment.end()), (10, 12));
        assert_eq!(recovery.truncated_bytes, 20);
        assert_eq!(segment.store.size(), positions[2]);
        assert_eq!(segment.last().map(|h| h.index), Some(11));
        assert_eq!(
            segment.locate(11).unwrap(),
            (positions[1], positions[2] - positions[1])
        );
        assert!(!segment.index.is_sealed());
    }

    #[test]
    fn a_sealed_segment_with_a_bad_index_is_rebuilt_and_with_a_bad_store_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut segment, positions) = segment_with(dir.path(), 0, &[5, 6, 7]);
        segment.index.seal().unwrap();
        drop(segment);
        let (store_path, index_path) = segment_paths(dir.path(), 0);
        let good_index = std::fs::read(&index_path).unwrap();
        assert_eq!(good_index.len(), 36);

        std::fs::write(&index_path, &good_index[..24]).unwrap();
        let segment = Segment::open_checked(dir.path(), 0, 1200, false, false).unwrap();
        assert_eq!(segment.end(), 3);
        assert_eq!(std::fs::read(&index_path).unwrap(), good_index, "rebuilt");
        drop(segment);

        let mut store = std::fs::read(&store_path).unwrap();
        store[positions[1] as usize + 30] ^= 1;
        std::fs::write(&store_path, &store).unwrap();
        std::fs::write(&index_path, &good_index[..24]).unwrap();
        let err = Segment::open_checked(dir.path(), 0, 1200, false, false).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path, position, .. } if *path == store_path && *position == positions[1]),
            "{err}"
        );
    }

    #[test]
    fn the_index_check_names_the_index_file_and_the_entry_that_disagrees() {
        let dir = tempfile::tempdir().unwrap();
        let (mut segment, positions) = segment_with(dir.path(), 0, &[5, 6, 7]);
        segment.index.seal().unwrap();
        drop(segment);
        let (store_path, index_path) = segment_paths(dir.path(), 0);
        let check = |index_bytes: &[u8]| {
            std::fs::write(&index_path, index_bytes).unwrap();
            let (store, store_len) = Store::open(&store_path).unwrap();
            let (file, len) = SegmentIndex::open_file(&index_path).unwrap();
            check_index(&store, store_len, &index_path, &file, len, 0)
        };
        let good = std::fs::read(&index_path).unwrap();
        assert_eq!(check(&good).unwrap().index, 2);
        let mut wrong_last = good.clone();
        wrong_last[24..28].copy_from_slice(&5u32.to_le_bytes());
        let cases = [
            // Not whole entries: the index as a whole.
            (&good[..30], &index_path, 0),
            // The last entry claims another relative offset.
            (&wrong_last[..], &index_path, 24),
            // Entries lost: the frame the last entry points at does not end the store.
            (&good[..24], &store_path, positions[1]),
        ];
        for (bytes, file, position) in cases {
            let err = check(bytes).unwrap_err();
            assert!(
                matches!(&err, Error::Corrupt { path, position: p, .. } if path == file && *p == position),
                "{err}"
            );
        }
    }

    #[test]
    fn file_names_are_the_base_offset_padded_to_20_digits() {
        let (store, index) = segment_paths(Path::new("/d"), 1234);
        assert_eq!(store, Path::new("/d/00000000000000001234.store"));
        assert_eq!(index, Path::new("/d/00000000000000001234.index"));
        assert_eq!(
            parse_segment_file_name("18446744073709551615.index"),
            Some((u64::MAX, "index"))
        );
        assert_eq!(parse_segment_file_name("0000000000000000123.store"), None);
        assert_eq!(parse_segment_file_name("00000000000000001234.tmp"), None);
        assert_eq!(parse_segment_file_name("0000000000000000123x.store"), None);
        assert_eq!(parse_segment_file_name("LOCK"), None);
    }
}
