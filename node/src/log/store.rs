//! The `.store` file of a segment: frames appended back to back (see [`super::frame`]).
//!
//! Writes are positioned (`pwrite`) at the store's logical size and reads are positioned
//! (`pread`), so the one writer and any number of readers share the file descriptor without a
//! cursor. The file handle is reference-counted: a reader that looked up a position keeps the
//! file readable even if the segment is deleted meanwhile (it then reads the old bytes).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Error, Result};
use super::frame::{self, DecodeError, FrameHeader, PREFIX_LEN};

/// Read size for recovery scans: large sequential reads, few syscalls.
const SCAN_CHUNK: usize = 1 << 20;

/// An open store file and its path, shared between the writer and readers.
#[derive(Debug)]
pub(crate) struct StoreFile {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
}

impl StoreFile {
    /// Reads exactly `buf.len()` bytes at `position`. A short file is reported as `Corrupt`
    /// (the caller decides whether a concurrent truncation explains it).
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        self.file.read_exact_at(buf, position).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::corrupt(
                    &self.path,
                    position,
                    format!(
                        "store ends before the {} bytes the index promises",
                        buf.len()
                    ),
                )
            } else {
                Error::io("read", &self.path, e)
            }
        })
    }

    pub(crate) fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()> {
        self.file
            .write_all_at(buf, position)
            .map_err(|e| Error::io("write", &self.path, e))
    }

    /// Sets the file length (truncation by the writer; the store is never memory-mapped, so
    /// shrinking it cannot SIGBUS anyone).
    pub(crate) fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate", &self.path, e))
    }

    /// `fdatasync`: the data and the file size (needed to read it back) become durable.
    pub(crate) fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))
    }
}

/// The store of one segment: the shared file plus the size the log has published.
#[derive(Debug)]
pub(crate) struct Store {
    file: Arc<StoreFile>,
    /// Bytes of complete, published frames. The file may be longer only transiently, while the
    /// writer has written a batch it has not published yet.
    size: u64,
}

/// Where a scan of a store stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// End of the last valid frame (= start of the first invalid one, or the file length).
    pub(crate) valid_len: u64,
    /// Number of valid frames.
    pub(crate) frames: u64,
    /// The last valid frame's header.
    pub(crate) last: Option<FrameHeader>,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) stopped: Option<String>,
}

impl Store {
    /// Creates a new, empty store file; fails if it exists.
    pub(crate) fn create(path: &Path) -> Result<Store> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("create", path, e))?;
        Ok(Store::from_file(path, file, 0))
    }

    /// Opens an existing store file (creating it when missing). Its size is not trusted yet:
    /// it is set by the caller after validation (`set_size`).
    pub(crate) fn open(path: &Path) -> Result<(Store, u64)> {
        let (file, len) = open_read_write(path)?;
        Ok((Store::from_file(path, file, 0), len))
    }

    fn from_file(path: &Path, file: File, size: u64) -> Store {
        Store {
            file: Arc::new(StoreFile {
                path: path.to_path_buf(),
                file,
            }),
            size,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.file.path
    }

    pub(crate) fn shared(&self) -> &Arc<StoreFile> {
        &self.file
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn set_size(&mut self, size: u64) {
        self.size = size;
    }

    /// Shrinks (or extends) the file to `len` bytes and makes that the published size.
    /// NB: the store is never memory-mapped, so shrinking it cannot SIGBUS anyone; readers that
    /// still hold positions past `len` get a short read.
    pub(crate) fn truncate(&mut self, len: u64) -> Result<()> {
        self.file.set_len(len)?;
        self.size = len;
        Ok(())
    }

    /// Reads and validates the frame at `position` that must be `len` bytes long and hold
    /// log index `expected_index`.
    pub(crate) fn read_frame(
        file: &StoreFile,
        position: u64,
        len: u64,
        expected_index: u64,
    ) -> Result<(FrameHeader, bytes::Bytes)> {
        let Ok(len_usize) = usize::try_from(len) else {
            return Err(Error::corrupt(
                &file.path,
                position,
                "frame length overflows",
            ));
        };
        check_first_frame_len(file, position, len, false)?;
        let mut buf = vec![0u8; len_usize];
        file.read_exact_at(&mut buf, position)?;
        let header =
            frame::decode(&buf).map_err(|e| Error::corrupt(&file.path, position, e.to_string()))?;
        check_frame(file, position, &header, len, expected_index)?;
        Ok((header, bytes::Bytes::from(buf)))
    }

    /// Validates frames from `from` (which must be a frame boundary) to the end of the file.
    /// `on_frame(position, header)` sees each valid frame in order; the scan stops at the first
    /// torn or invalid frame, or when a frame's index is not `first_index + n`.
    pub(crate) fn scan(
        file: &StoreFile,
        from: u64,
        file_len: u64,
        first_index: u64,
        mut on_frame: impl FnMut(u64, &FrameHeader) -> Result<()>,
    ) -> Result<ScanEnd> {
        let mut end = ScanEnd {
            valid_len: from,
            frames: 0,
            last: None,
            stopped: None,
        };
        let mut buf: Vec<u8> = Vec::new();
        // File position of buf[0].
        let mut buf_start = from;
        let mut pos = from;
        while pos < file_len {
            let remaining = file_len - pos;
            // Make sure the 8-byte prefix, then the whole frame, is in the buffer.
            let mut want = PREFIX_LEN as u64;
            let header = loop {
                let offset_in_buf = (pos - buf_start) as usize;
                if want > remaining {
                    end.stopped = Some(format!(
                        "torn frame: {want} bytes needed, {remaining} left in the file"
                    ));
                    return Ok(end);
                }
                if ((buf.len() - offset_in_buf) as u64) < want {
                    // Refill: drop consumed bytes, read at least `want`, ideally a whole chunk.
                    buf.drain(..offset_in_buf);
                    buf_start = pos;
                    let target = (want as usize).max(SCAN_CHUNK).min(remaining as usize);
                    let have = buf.len();
                    buf.resize(target, 0);
                    file.read_exact_at(&mut buf[have..], pos + have as u64)?;
                    continue;
                }
                match frame::decode(&buf[offset_in_buf..]) {
                    Ok(header) => break header,
                    Err(DecodeError::Incomplete { needed }) => {
                        want = needed.unwrap_or(PREFIX_LEN as u64);
                    }
                    Err(DecodeError::Invalid(reason)) => {
                        end.stopped = Some(reason);
                        return Ok(end);
                    }
                }
            };
            let expected = first_index + end.frames;
            if header.index != expected {
                end.stopped = Some(format!(
                    "frame holds index {}, expected {expected}",
                    header.index
                ));
                return Ok(end);
            }
            on_frame(pos, &header)?;
            pos += header.frame_len;
            end.valid_len = pos;
            end.frames += 1;
            end.last = Some(header);
        }
        Ok(end)
    }
}

/// Opens a segment file for reading and writing, creating it when missing; returns its length.
pub(crate) fn open_read_write(path: &Path) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    Ok((file, len))
}

/// Above this many bytes, a read first checks the frame's own length field against the length
/// the index implies, so that a damaged index cannot make a reader allocate and read gigabytes.
const LARGE_READ: u64 = 64 << 10;

/// For reads of more than [`LARGE_READ`] bytes at `position`, checks the length field of the
/// frame there before the big read: it must be exactly `len`, or at most `len` when `within`
/// (a run of several frames).
pub(crate) fn check_first_frame_len(
    file: &StoreFile,
    position: u64,
    len: u64,
    within: bool,
) -> Result<()> {
    if len <= LARGE_READ {
        return Ok(());
    }
    let mut prefix = [0u8; PREFIX_LEN];
    file.read_exact_at(&mut prefix, position)?;
    let frame_len = frame::peek_frame_len(&prefix)
        .map_err(|e| Error::corrupt(&file.path, position, e.to_string()))?;
    if frame_len == len || (within && frame_len < len) {
        Ok(())
    } else {
        Err(Error::corrupt(
            &file.path,
            position,
            format!("frame is {frame_len} bytes but the index implies {len}"),
        ))
    }
}

/// Checks that a decoded frame is the one the index promised.
pub(crate) fn check_frame(
    file: &StoreFile,
    position: u64,
    header: &FrameHeader,
    len: u64,
    expected_index: u64,
) -> Result<()> {
    if header.frame_len != len {
        return Err(Error::corrupt(
            &file.path,
            position,
            format!(
                "frame is {} bytes but the index places the next frame {len} bytes later",
                header.frame_len
            ),
        ));
    }
    if header.index != expected_index {
        return Err(Error::corrupt(
            &file.path,
            position,
            format!(
                "frame holds index {}, expected {expected_index}",
                header.index
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame::{Entry, EntryKind, encode_into};

    fn entry(index: u64, len: usize) -> Entry {
        Entry {
            index,
            term: 1,
            kind: EntryKind::Data,
            timestamp_ms: 5,
            payload: vec![index as u8; len].into(),
        }
    }

    fn write_frames(store: &mut Store, entries: &[Entry]) -> Vec<u64> {
        let mut buf = Vec::new();
        let mut positions = Vec::new();
        for e in entries {
            positions.push(store.size() + buf.len() as u64);
            encode_into(e, &mut buf);
        }
        store.shared().write_all_at(&buf, store.size()).unwrap();
        store.set_size(store.size() + buf.len() as u64);
        positions
    }

    #[test]
    fn frames_written_are_read_back_at_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("s.store")).unwrap();
        let entries: Vec<_> = (10..20).map(|i| entry(i, i as usize * 3)).collect();
        let positions = write_frames(&mut store, &entries);
        for (e, &pos) in entries.iter().zip(&positions) {
            let len = frame::frame_len(e.payload.len());
            let (header, bytes) = Store::read_frame(store.shared(), pos, len, e.index).unwrap();
            assert_eq!(&header.entry(&bytes), e);
        }
        // Asking for the wrong index or length is corruption, not data.
        let len = frame::frame_len(entries[0].payload.len());
        assert!(matches!(
            Store::read_frame(store.shared(), 0, len, 11),
            Err(Error::Corrupt { position: 0, .. })
        ));
        assert!(matches!(
            Store::read_frame(store.shared(), 0, len + 1, 10),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_damaged_length_from_the_index_is_refused_before_a_huge_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("s.store")).unwrap();
        write_frames(&mut store, &[entry(0, 10)]);
        // An index claiming a 1 TiB frame: checked against the frame's own length first.
        let err = Store::read_frame(store.shared(), 0, 1 << 40, 0).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { reason, .. } if reason.contains("index implies")),
            "{err}"
        );
    }

    #[test]
    fn create_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.store");
        Store::create(&path).unwrap();
        assert!(matches!(
            Store::create(&path),
            Err(Error::Io { op: "create", .. })
        ));
    }

    #[test]
    fn scan_stops_at_a_torn_tail_and_reports_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.store");
        let mut store = Store::create(&path).unwrap();
        let entries: Vec<_> = (0..5).map(|i| entry(i, 100)).collect();
        let positions = write_frames(&mut store, &entries);
        let full = store.size();
        for cut in [
            full,
            full - 1,
            positions[4] + 3,
            positions[4],
            positions[1] + 40,
            0,
        ] {
            store.truncate(cut).unwrap();
            let mut seen = Vec::new();
            let end = Store::scan(store.shared(), 0, cut, 0, |pos, h| {
                seen.push((pos, h.index));
                Ok(())
            })
            .unwrap();
            let complete = positions.iter().filter(|&&p| p + 133 <= cut).count() as u64;
            assert_eq!(end.frames, complete, "cut {cut}");
            assert_eq!(end.valid_len, complete * 133);
            assert_eq!(end.stopped.is_some(), cut != complete * 133);
            assert_eq!(seen.len() as u64, complete);
            // Restore the full file for the next cut.
            store.truncate(0).unwrap();
            write_frames(&mut store, &entries);
        }
    }

    #[test]
    fn scan_stops_at_an_unexpected_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("s.store")).unwrap();
        write_frames(&mut store, &[entry(0, 1), entry(1, 1), entry(5, 1)]);
        let end = Store::scan(store.shared(), 0, store.size(), 0, |_, _| Ok(())).unwrap();
        assert_eq!(end.frames, 2);
        assert_eq!(end.last.map(|h| h.index), Some(1));
        assert_eq!(
            end.stopped.as_deref(),
            Some("frame holds index 5, expected 2")
        );
    }

    #[test]
    fn scan_reads_frames_larger_than_its_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("s.store")).unwrap();
        let entries = [entry(0, 10), entry(1, SCAN_CHUNK + 17), entry(2, 3)];
        write_frames(&mut store, &entries);
        let end = Store::scan(store.shared(), 0, store.size(), 0, |_, _| Ok(())).unwrap();
        assert_eq!(end.frames, 3);
        assert_eq!(end.valid_len, store.size());
        assert_eq!(end.stopped, None);
    }
}
