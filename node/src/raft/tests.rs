//! openraft's storage test suite against [`LogStore`] + [`StateMachine`], and the crash-safety
//! cases the suite does not cover.

use std::sync::Arc;

use openraft::StorageError;
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

use super::log_store::LogStore;
use super::stable_store::{SledStableStore, StableStore};
use super::state_machine::StateMachine;
use super::syncer::Syncer;
use super::types::{RaftEntry, SnapshotMeta, StoredMembership, TypeConfig, log_id};
use crate::log::{FsyncPolicy, Log, LogConfig};

/// A fresh log + stable store in a temporary directory, with group commit on.
struct Builder;

fn small_segments() -> LogConfig {
    LogConfig {
        // A few entries per segment, so purges and resets cross segment boundaries.
        max_index_bytes: 12 * 4,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

fn open(
    dir: &std::path::Path,
    config: LogConfig,
) -> (LogStore, StateMachine, Arc<dyn StableStore>) {
    let log = Log::open(dir.join("log"), config).expect("open log");
    let stable: Arc<dyn StableStore> =
        Arc::new(SledStableStore::open(&dir.join("raft")).expect("open stable"));
    let syncer = Arc::new(Syncer::start(log.clone(), true, None).expect("syncer"));
    let store = LogStore::open(log, Arc::clone(&stable), syncer, None).expect("log store");
    let sm = StateMachine::open(Arc::clone(&stable)).expect("state machine");
    (store, sm, stable)
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let (store, sm, _) = open(dir.path(), small_segments());
        Ok((dir, store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder)
        .await
        .expect("openraft storage suite");
}

fn blank(term: u64, index: u64) -> RaftEntry {
    RaftEntry {
        log_id: log_id(term, index),
        payload: openraft::EntryPayload::Blank,
    }
}

async fn append(store: &mut LogStore, entries: Vec<RaftEntry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store
        .append(entries, openraft::storage::IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("callback").expect("flushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_a_snapshot_resets_the_log_to_start_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, mut sm, _) = open(dir.path(), small_segments());
    append(&mut store, (0..10).map(|i| blank(1, i)).collect()).await;

    // What openraft does on a follower: install the snapshot in the state machine, then purge
    // the log up to the snapshot's last log id.
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(3, 25)),
        last_membership: StoredMembership::default(),
    };
    sm.install_snapshot(&meta, ()).await.expect("install");
    store.purge(log_id(3, 25)).await.expect("purge");

    assert_eq!(store.log().first_offset(), 26);
    assert_eq!(store.log().next_offset(), 26);
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 25)));
    assert_eq!(state.last_log_id, Some(log_id(3, 25)));
    assert_eq!(*sm.applied_watch().borrow(), 26);
    // Replication continues right after the snapshot.
    append(&mut store, vec![blank(3, 26)]).await;
    assert_eq!(
        store.try_get_log_entries(0..100).await.expect("read").len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_interrupted_by_a_crash_is_completed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut store, _sm, stable) = open(dir.path(), small_segments());
        append(&mut store, (0..10).map(|i| blank(1, i)).collect()).await;
        // The crash happened after the purge point was saved but before the log was reset.
        stable
            .save_last_purged(&log_id(2, 40))
            .expect("save purged");
        store.log().close().expect("close");
    }
    let (mut store, _sm, _) = open(dir.path(), small_segments());
    assert_eq!(store.log().first_offset(), 41);
    assert_eq!(store.log().next_offset(), 41);
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(log_id(2, 40)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_return_purged_entries_left_in_a_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _sm, _) = open(dir.path(), small_segments());
    append(&mut store, (0..10).map(|i| blank(1, i)).collect()).await;
    store.purge(log_id(1, 5)).await.expect("purge");
    // Segments hold 4 entries: the one with 4..8 stays, but 4 and 5 are purged.
    assert!(store.log().first_offset() <= 5);
    let entries = store.try_get_log_entries(0..100).await.expect("read");
    assert_eq!(entries.first().map(|e| e.log_id.index), Some(6));
    assert_eq!(entries.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_leaves_a_gap_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _sm, _) = open(dir.path(), small_segments());
    append(&mut store, (0..3).map(|i| blank(1, i)).collect()).await;
    let (tx, rx) = TypeConfig::oneshot();
    let result = store
        .append(vec![blank(1, 7)], openraft::storage::IOFlushed::signal(tx))
        .await;
    assert!(result.is_err());
    assert!(
        rx.await.expect("callback").is_err(),
        "the callback reports the failure too"
    );
    assert_eq!(store.log().next_offset(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applied_state_is_recovered_from_the_snapshot_when_it_is_newer() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, mut sm, _) = open(dir.path(), small_segments());
        openraft::storage::RaftStateMachine::apply(
            &mut sm,
            futures::stream::iter(vec![Ok((blank(1, 3), None))]),
        )
        .await
        .expect("apply");
        let mut builder = sm.get_snapshot_builder().await;
        openraft::storage::RaftSnapshotBuilder::build_snapshot(&mut builder)
            .await
            .expect("snapshot");
        // Applying more without persisting (lazy) and then crashing.
        openraft::storage::RaftStateMachine::apply(
            &mut sm,
            futures::stream::iter(vec![Ok((blank(1, 4), None))]),
        )
        .await
        .expect("apply");
        store.syncer().stop();
        store.log().close().expect("close");
    }
    let (_store, mut sm, _) = open(dir.path(), small_segments());
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert!(
        applied >= Some(log_id(1, 3)),
        "applied {applied:?} is behind the snapshot"
    );
}

/// A machine crash lost the log's un-fsynced tail, but the committed id and the applied state
/// (persisted without being ordered against the log's fsync) had already been saved beyond it.
/// Opening lowers both to the end of the log, so openraft starts instead of failing to re-apply
/// entries that are gone (the leader sends them again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_id_and_applied_state_past_the_end_of_the_log_are_lowered_on_open() {
    use super::stable_store::AppliedState;
    use openraft::storage::StorageHelper;

    for membership_lost in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut store, _sm, stable) = open(dir.path(), small_segments());
            append(&mut store, (0..10).map(|i| blank(1, i)).collect()).await;
            // What the crash left: entries 10.. were never fsynced, but their commit and
            // application had been saved.
            stable
                .save_committed(Some(&log_id(1, 14)))
                .expect("save committed");
            let membership = if membership_lost {
                StoredMembership::new(Some(log_id(1, 12)), Default::default())
            } else {
                StoredMembership::default()
            };
            stable
                .save_applied(
                    &AppliedState {
                        last_applied: Some(log_id(1, 13)),
                        membership,
                    },
                    true,
                )
                .expect("save applied");
            store.syncer().stop();
            store.log().close().expect("close");
        }
        let (mut store, mut sm, stable) = open(dir.path(), small_segments());
        assert_eq!(stable.committed().expect("committed"), Some(log_id(1, 9)));
        let applied = stable
            .applied()
            .expect("applied")
            .expect("an applied state");
        let expected = if membership_lost {
            None // re-applied from the start, where the membership entries are found again
        } else {
            Some(log_id(1, 9))
        };
        assert_eq!(applied.last_applied, expected);
        let state = StorageHelper::new(&mut store, &mut sm)
            .with_id(0)
            .get_initial_state()
            .await
            .unwrap_or_else(|e| {
                panic!("openraft starts (membership lost: {membership_lost}): {e}")
            });
        assert_eq!(state.local_committed(), Some(&log_id(1, 9)));
        assert_eq!(
            store.log().next_offset(),
            10,
            "nothing the log holds is dropped"
        );
    }
}
