//! The small stable store beside the commit log: the Raft vote, the last purged log id, the
//! committed log id, the applied state and the current snapshot's metadata.
//!
//! [`StableStore`] is the interface; [`SledStableStore`] keeps the values in a sled tree with a
//! small cache. Durability per value:
//!
//! | value                | written by                          | flushed before returning |
//! |----------------------|-------------------------------------|--------------------------|
//! | vote                 | `save_vote`                         | yes (Raft safety)        |
//! | last purged log id   | `purge`, before segments go         | yes                      |
//! | snapshot metadata    | building/installing a snapshot      | yes                      |
//! | committed log id     | openraft's `save_committed`         | **no** (see below)       |
//! | applied state        | the state machine, lazily           | no (flushed at shutdown) |
//!
//! The committed log id is written on every commit but not flushed: sled flushes in the
//! background (every 500 ms). A stale committed id after a crash only means that openraft
//! re-applies a few more entries at start-up, and applying is cheap here (it moves a watermark).
//! Flushing it per commit would double the fsyncs of the write path. For the same reason the
//! applied state is written at most every 100 ms. Snapshot metadata is flushed, and openraft
//! only purges what a snapshot covers, so the recovered applied state (applied or snapshot,
//! whichever is later) never lies below the first entry of the log.
//!
//! Values are JSON (openraft's serde types) so the file stays readable with sled's tools. A value
//! that does not decode is reported as corruption: the node then refuses to start rather than
//! forget a vote.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{LogId, SnapshotMeta, StoredMembership, Vote};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged_log_id";
const COMMITTED: &[u8] = b"committed_log_id";
const APPLIED: &[u8] = b"applied_state";
const SNAPSHOT: &[u8] = b"snapshot_meta";

/// sled's page cache: the store holds a handful of small values.
const CACHE_CAPACITY_BYTES: u64 = 1 << 20;

/// Errors of the stable store.
#[derive(Debug, thiserror::Error)]
pub enum StableStoreError {
    #[error("cannot open the Raft state store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("Raft state store: {op} `{key}` failed: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: sled::Error,
    },
    #[error("Raft state store: `{key}` is corrupt ({reason}); refusing to use it")]
    Corrupt { key: String, reason: String },
}

impl From<StableStoreError> for std::io::Error {
    fn from(e: StableStoreError) -> Self {
        let kind = match e {
            StableStoreError::Corrupt { .. } => std::io::ErrorKind::InvalidData,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// The applied position of the state machine and the membership as of that position.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Small Raft state that must survive restarts. Implementations are cheap to clone and safe to
/// call from any thread; every method may block on disk I/O.
pub trait StableStore: Send + Sync + 'static {
    /// The saved vote, if any.
    fn vote(&self) -> Result<Option<Vote>, StableStoreError>;
    /// Saves the vote durably (flushed) before returning.
    fn save_vote(&self, vote: &Vote) -> Result<(), StableStoreError>;
    fn last_purged(&self) -> Result<Option<LogId>, StableStoreError>;
    /// Saves the last purged log id durably before returning.
    fn save_last_purged(&self, log_id: &LogId) -> Result<(), StableStoreError>;
    fn committed(&self) -> Result<Option<LogId>, StableStoreError>;
    /// Saves the committed log id without flushing (see the module docs).
    fn save_committed(&self, log_id: Option<&LogId>) -> Result<(), StableStoreError>;
    fn applied(&self) -> Result<Option<AppliedState>, StableStoreError>;
    /// Saves the applied state, flushed only when `flush`.
    fn save_applied(&self, state: &AppliedState, flush: bool) -> Result<(), StableStoreError>;
    fn snapshot(&self) -> Result<Option<SnapshotMeta>, StableStoreError>;
    /// Saves the snapshot metadata durably before returning.
    fn save_snapshot(&self, meta: &SnapshotMeta) -> Result<(), StableStoreError>;
    /// Flushes everything written so far.
    fn flush(&self) -> Result<(), StableStoreError>;
}

/// [`StableStore`] on a sled database in its own directory.
#[derive(Clone)]
pub struct SledStableStore {
    db: sled::Db,
}

impl std::fmt::Debug for SledStableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStableStore").finish_non_exhaustive()
    }
}

impl SledStableStore {
    /// Opens (or creates) the store in `dir` and checks that every value decodes, so that a
    /// damaged store stops the node at start-up.
    pub fn open(dir: &Path) -> Result<Self, StableStoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()
            .map_err(|source| StableStoreError::Open {
                path: dir.to_path_buf(),
                source,
            })?;
        let store = SledStableStore { db };
        store.vote()?;
        store.last_purged()?;
        store.committed()?;
        store.applied()?;
        store.snapshot()?;
        Ok(store)
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StableStoreError> {
        let name = || String::from_utf8_lossy(key).into_owned();
        let Some(bytes) = self.db.get(key).map_err(|source| StableStoreError::Io {
            op: "read",
            key: name(),
            source,
        })?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StableStoreError::Corrupt {
                key: name(),
                reason: e.to_string(),
            })
    }

    fn put<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        flush: bool,
    ) -> Result<(), StableStoreError> {
        let name = || String::from_utf8_lossy(key).into_owned();
        let bytes = serde_json::to_vec(value).map_err(|e| StableStoreError::Corrupt {
            key: name(),
            reason: format!("cannot encode: {e}"),
        })?;
        self.db
            .insert(key, bytes)
            .map_err(|source| StableStoreError::Io {
                op: "write",
                key: name(),
                source,
            })?;
        if flush {
            self.flush()?;
        }
        Ok(())
    }
}

impl StableStore for SledStableStore {
    fn vote(&self) -> Result<Option<Vote>, StableStoreError> {
        self.get(VOTE)
    }

    fn save_vote(&self, vote: &Vote) -> Result<(), StableStoreError> {
        self.put(VOTE, vote, true)
    }

    fn last_purged(&self) -> Result<Option<LogId>, StableStoreError> {
        self.get(LAST_PURGED)
    }

    fn save_last_purged(&self, log_id: &LogId) -> Result<(), StableStoreError> {
        self.put(LAST_PURGED, log_id, true)
    }

    fn committed(&self) -> Result<Option<LogId>, StableStoreError> {
        self.get::<Option<LogId>>(COMMITTED).map(Option::flatten)
    }

    fn save_committed(&self, log_id: Option<&LogId>) -> Result<(), StableStoreError> {
        self.put(COMMITTED, &log_id, false)
    }

    fn applied(&self) -> Result<Option<AppliedState>, StableStoreError> {
        self.get(APPLIED)
    }

    fn save_applied(&self, state: &AppliedState, flush: bool) -> Result<(), StableStoreError> {
        self.put(APPLIED, state, flush)
    }

    fn snapshot(&self) -> Result<Option<SnapshotMeta>, StableStoreError> {
        self.get(SNAPSHOT)
    }

    fn save_snapshot(&self, meta: &SnapshotMeta) -> Result<(), StableStoreError> {
        self.put(SNAPSHOT, meta, true)
    }

    fn flush(&self) -> Result<(), StableStoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|source| StableStoreError::Io {
                op: "flush",
                key: "*".into(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;

    use super::*;
    use crate::raft::types::log_id;

    fn vote(term: u64, node: u64) -> Vote {
        Vote::new_committed(term, node)
    }

    #[test]
    fn values_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStableStore::open(dir.path()).expect("open");
            assert_eq!(store.vote().expect("vote"), None);
            store.save_vote(&vote(3, 1)).expect("save vote");
            store.save_last_purged(&log_id(2, 10)).expect("save purged");
            store
                .save_committed(Some(&log_id(3, 12)))
                .expect("save committed");
            store.flush().expect("flush");
        }
        let store = SledStableStore::open(dir.path()).expect("reopen");
        assert_eq!(store.vote().expect("vote"), Some(vote(3, 1)));
        assert_eq!(store.last_purged().expect("purged"), Some(log_id(2, 10)));
        assert_eq!(store.committed().expect("committed"), Some(log_id(3, 12)));
        let leader = store
            .vote()
            .expect("vote")
            .map(|v| v.leader_id.node_id().to_owned());
        assert_eq!(leader, Some(1));
    }

    #[test]
    fn a_value_that_does_not_decode_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStableStore::open(dir.path()).expect("open");
            store.db.insert(VOTE, &b"\x00garbage"[..]).expect("insert");
            store.flush().expect("flush");
        }
        let err = SledStableStore::open(dir.path()).expect_err("corrupt vote");
        assert!(
            matches!(err, StableStoreError::Corrupt { ref key, .. } if key == "vote"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_database_file_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStableStore::open(dir.path()).expect("open");
            store.save_vote(&vote(7, 2)).expect("save vote");
        }
        // Overwrite every file of the database with garbage of the same size.
        for entry in walk(dir.path()) {
            let len = std::fs::metadata(&entry).expect("metadata").len() as usize;
            std::fs::write(&entry, vec![0xA5; len.max(64)]).expect("overwrite");
        }
        let result = SledStableStore::open(dir.path());
        assert!(
            result.is_err(),
            "a damaged store opened: vote {:?}",
            result.map(|s| s.vote())
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
