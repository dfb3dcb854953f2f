//! The `.index` file of a segment: fixed-width entries mapping a relative offset to the byte
//! position of its frame in the `.store` file, memory-mapped.
//!
//! ```text
//! entry i (12 bytes at i * 12): relative offset u32 LE (= i) | position u64 LE
//! ```
//!
//! The index is a cache of the store. An *active* index (the last segment's) is preallocated to
//! `max_index_bytes` and mapped read-write; entries past [`SegmentIndex::len`] are meaningless
//! (zeros, or stale after a truncation), which is why recovery never trusts an active index and
//! rebuilds it from the store. A *sealed* index is trimmed to exactly `len * 12` bytes, synced,
//! and mapped read-only.
//!
//! NB: a file is never shrunk while it is mapped (that would SIGBUS readers of the tail):
//! every resize unmaps first. All access to the mapping goes through `&self`/`&mut self`, and the
//! log holds the segment list behind a lock, so unmapping can never race a reader.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};

use super::error::{Error, Result};
use super::store::open_read_write;

/// Bytes per index entry: relative offset u32 + position u64.
pub const ENTRY_WIDTH: u64 = 12;

enum Mapping {
    /// No mapping (a zero-length file cannot be mapped).
    None,
    ReadOnly(Mmap),
    ReadWrite(MmapMut),
}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        match self {
            Mapping::None => &[],
            Mapping::ReadOnly(m) => m,
            Mapping::ReadWrite(m) => m,
        }
    }
}

/// One segment's index.
pub(crate) struct SegmentIndex {
    path: PathBuf,
    file: File,
    map: Mapping,
    /// Number of valid entries.
    len: u64,
}

impl std::fmt::Debug for SegmentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentIndex")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl SegmentIndex {
    /// Opens (creating if missing) an index file without mapping it; `file_len` is its size.
    pub(crate) fn open_file(path: &Path) -> Result<(File, u64)> {
        open_read_write(path)
    }

    /// Makes `file` an active index, preallocated to hold at least `max_bytes / 12` entries,
    /// whose first `valid` entries (already validated by the caller) are kept; the caller pushes
    /// further entries, e.g. when rebuilding from the store with `valid = 0`.
    pub(crate) fn activate(
        path: &Path,
        file: File,
        max_bytes: u64,
        valid: u64,
    ) -> Result<SegmentIndex> {
        let capacity = (max_bytes / ENTRY_WIDTH).max(valid);
        let size = capacity * ENTRY_WIDTH;
        // Not mapped yet, so resizing (even shrinking a larger file) is safe here.
        file.set_len(size)
            .map_err(|e| Error::io("preallocate", path, e))?;
        let mut index = SegmentIndex {
            path: path.to_path_buf(),
            file,
            map: Mapping::None,
            len: valid,
        };
        index.map = index.map_read_write(size)?;
        Ok(index)
    }

    /// Makes `file` a sealed index whose content (exactly `len` entries) is trusted.
    pub(crate) fn sealed(path: &Path, file: File, len: u64) -> Result<SegmentIndex> {
        let mut index = SegmentIndex {
            path: path.to_path_buf(),
            file,
            map: Mapping::None,
            len,
        };
        index.map = index.map_read_only(len * ENTRY_WIDTH)?;
        Ok(index)
    }

    /// Replaces the content of `file` by `entries`, trimmed to size and synced when `sync`,
    /// and returns it as a sealed index. Used when a sealed index fails validation but its store
    /// is intact (the index is only a cache).
    pub(crate) fn rewrite_sealed(
        path: &Path,
        file: File,
        entries: &[(u32, u64)],
        sync: bool,
    ) -> Result<SegmentIndex> {
        let mut bytes = Vec::with_capacity(entries.len() * ENTRY_WIDTH as usize);
        for &(rel, pos) in entries {
            bytes.extend_from_slice(&encode_entry(rel, pos));
        }
        file.set_len(0)
            .and_then(|()| std::os::unix::fs::FileExt::write_all_at(&file, &bytes, 0))
            .map_err(|e| Error::io("rewrite", path, e))?;
        if sync {
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", path, e))?;
        }
        SegmentIndex::sealed(path, file, entries.len() as u64)
    }

    /// Length of a mapping of `size` bytes; `None` for an empty file (which cannot be mapped).
    fn mapping_len(&self, size: u64) -> Result<Option<usize>> {
        if size == 0 {
            return Ok(None);
        }
        usize::try_from(size).map(Some).map_err(|_| {
            Error::corrupt(
                &self.path,
                0,
                format!("index size {size} does not fit in memory"),
            )
        })
    }

    fn map_read_write(&self, size: u64) -> Result<Mapping> {
        let Some(len) = self.mapping_len(size)? else {
            return Ok(Mapping::None);
        };
        // SAFETY: the mapping is backed by a file this `Log` owns exclusively (the directory is
        // locked against other `Log` instances), whose length is exactly `len` (set just before)
        // and which is never shrunk while mapped (`unmap` comes first in every resize). Accesses
        // are bounds-checked slice operations, synchronised by the log's segment lock.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&self.file) }
            .map_err(|e| Error::io("mmap", &self.path, e))?;
        Ok(Mapping::ReadWrite(map))
    }

    fn map_read_only(&self, size: u64) -> Result<Mapping> {
        let Some(len) = self.mapping_len(size)? else {
            return Ok(Mapping::None);
        };
        // SAFETY: as in `map_read_write`: an exclusively owned file of at least `len` bytes that
        // is never shrunk while mapped; the mapping is only read through bounds-checked slices.
        let map = unsafe { MmapOptions::new().len(len).map(&self.file) }
            .map_err(|e| Error::io("mmap", &self.path, e))?;
        Ok(Mapping::ReadOnly(map))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Number of valid entries.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Entries the mapping can hold.
    pub(crate) fn capacity(&self) -> u64 {
        self.map.bytes().len() as u64 / ENTRY_WIDTH
    }

    pub(crate) fn is_sealed(&self) -> bool {
        !matches!(self.map, Mapping::ReadWrite(_))
    }

    /// Entry `i` as stored (relative offset, position), or `None` past the valid entries.
    pub(crate) fn entry(&self, i: u64) -> Option<(u32, u64)> {
        if i >= self.len {
            return None;
        }
        read_entry(self.map.bytes(), i)
    }

    /// Appends an entry. The caller checks `len() < capacity()` first.
    pub(crate) fn push(&mut self, rel: u32, position: u64) {
        let at = (self.len * ENTRY_WIDTH) as usize;
        if let Mapping::ReadWrite(map) = &mut self.map
            && let Some(slot) = map.get_mut(at..at + ENTRY_WIDTH as usize)
        {
            slot.copy_from_slice(&encode_entry(rel, position));
            self.len += 1;
            return;
        }
        // A logic error in the caller (sealed or full index): fail loudly in tests, and never
        // write out of bounds in production.
        debug_assert!(
            false,
            "push on a sealed or full index {}",
            self.path.display()
        );
    }

    /// Forgets the entries from `len` on. Stale bytes stay in an active mapping; they are never
    /// read because only the first `len` entries are valid (and recovery rebuilds active indexes).
    pub(crate) fn truncate(&mut self, len: u64) {
        self.len = self.len.min(len);
    }

    /// Writes dirty pages of an active mapping to the file (`msync`).
    pub(crate) fn flush(&self) -> Result<()> {
        if let Mapping::ReadWrite(map) = &self.map {
            map.flush().map_err(|e| Error::io("msync", &self.path, e))?;
        }
        Ok(())
    }

    /// Trims the file to exactly the valid entries and maps it read-only. The caller flushes
    /// the mapping before and syncs the file after (`sync_file`) when durability is wanted.
    pub(crate) fn seal(&mut self) -> Result<()> {
        // Unmap before shrinking: see the module note.
        self.map = Mapping::None;
        let size = self.len * ENTRY_WIDTH;
        self.file
            .set_len(size)
            .map_err(|e| Error::io("trim", &self.path, e))?;
        self.map = self.map_read_only(size)?;
        Ok(())
    }

    /// Turns a sealed index back into an active one (after a truncation made its segment the
    /// last one), preallocated to `max_bytes`.
    pub(crate) fn reactivate(&mut self, max_bytes: u64) -> Result<()> {
        let capacity = (max_bytes / ENTRY_WIDTH).max(self.len);
        let size = capacity * ENTRY_WIDTH;
        self.map = Mapping::None;
        self.file
            .set_len(size)
            .map_err(|e| Error::io("preallocate", &self.path, e))?;
        self.map = self.map_read_write(size)?;
        Ok(())
    }

    /// `fdatasync` of the index file (its content and size).
    pub(crate) fn sync_file(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    /// Entries as found in the file, for validating a sealed index: `None` when the file size is
    /// not a whole number of entries. Reads without mapping (validation happens before).
    pub(crate) fn read_raw(file: &File, file_len: u64, i: u64) -> Option<(u32, u64)> {
        if !file_len.is_multiple_of(ENTRY_WIDTH) || (i + 1) * ENTRY_WIDTH > file_len {
            return None;
        }
        let mut buf = [0u8; ENTRY_WIDTH as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, i * ENTRY_WIDTH).ok()?;
        read_entry(&buf, 0)
    }
}

fn encode_entry(rel: u32, position: u64) -> [u8; ENTRY_WIDTH as usize] {
    let mut e = [0u8; ENTRY_WIDTH as usize];
    e[..4].copy_from_slice(&rel.to_le_bytes());
    e[4..].copy_from_slice(&position.to_le_bytes());
    e
}

fn read_entry(bytes: &[u8], i: u64) -> Option<(u32, u64)> {
    let at = usize::try_from(i * ENTRY_WIDTH).ok()?;
    let e = bytes.get(at..at + ENTRY_WIDTH as usize)?;
    let rel = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
    let mut pos = [0u8; 8];
    pos.copy_from_slice(&e[4..]);
    Some((rel, u64::from_le_bytes(pos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(dir: &Path, max_bytes: u64) -> SegmentIndex {
        let path = dir.join("i.index");
        let (file, _) = SegmentIndex::open_file(&path).unwrap();
        SegmentIndex::activate(&path, file, max_bytes, 0).unwrap()
    }

    #[test]
    fn an_active_index_is_preallocated_and_fills_to_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = active(dir.path(), 3 * ENTRY_WIDTH + 11);
        assert_eq!(index.capacity(), 3);
        assert_eq!(std::fs::metadata(index.path()).unwrap().len(), 36);
        for i in 0..3 {
            assert_eq!(index.entry(i), None);
            index.push(i as u32, i * 100);
            assert_eq!(index.entry(i), Some((i as u32, i * 100)));
        }
        assert_eq!(index.len(), 3);
        assert_eq!(index.entry(3), None);
    }

    #[test]
    fn sealing_trims_the_file_and_keeps_the_entries_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = active(dir.path(), 1000 * ENTRY_WIDTH);
        for i in 0..5 {
            index.push(i, u64::from(i) * 40);
        }
        index.flush().unwrap();
        index.seal().unwrap();
        index.sync_file().unwrap();
        assert!(index.is_sealed());
        assert_eq!(
            std::fs::metadata(index.path()).unwrap().len(),
            5 * ENTRY_WIDTH
        );
        assert_eq!(index.capacity(), 5);
        assert_eq!(index.entry(4), Some((4, 160)));

        // The trimmed file is what a reopen finds.
        let (file, len) = SegmentIndex::open_file(index.path()).unwrap();
        assert_eq!(len, 60);
        assert_eq!(SegmentIndex::read_raw(&file, len, 4), Some((4, 160)));
        assert_eq!(SegmentIndex::read_raw(&file, len, 5), None);
        let reopened = SegmentIndex::sealed(index.path(), file, 5).unwrap();
        assert_eq!(reopened.entry(2), Some((2, 80)));
    }

    #[test]
    fn reactivating_after_truncation_allows_appends_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = active(dir.path(), 4 * ENTRY_WIDTH);
        for i in 0..4 {
            index.push(i, u64::from(i));
        }
        index.seal().unwrap();
        index.truncate(2);
        index.reactivate(4 * ENTRY_WIDTH).unwrap();
        assert!(!index.is_sealed());
        assert_eq!((index.len(), index.capacity()), (2, 4));
        assert_eq!(index.entry(2), None);
        index.push(2, 99);
        assert_eq!(index.entry(2), Some((2, 99)));
    }

    #[test]
    fn raw_reads_reject_files_that_are_not_whole_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        std::fs::write(&path, [0u8; 13]).unwrap();
        let (file, len) = SegmentIndex::open_file(&path).unwrap();
        assert_eq!(SegmentIndex::read_raw(&file, len, 0), None);
    }

    #[test]
    fn an_empty_sealed_index_needs_no_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.index");
        let (file, _) = SegmentIndex::open_file(&path).unwrap();
        let index = SegmentIndex::sealed(&path, file, 0).unwrap();
        assert_eq!((index.len(), index.capacity()), (0, 0));
        assert_eq!(index.entry(0), None);
    }
}
