//! The Raft state machine of LogCluster: a *view* over the commit log.
//!
//! Applying an entry does not copy it anywhere: the entry already is in the commit log. Applying
//! only advances the applied watermark (published on a `watch`, which the client API reads so
//! that consumers, on every node, see only applied — hence committed — entries) and records the
//! latest membership. The applied state is written to the [`StableStore`] lazily (at most every
//! [`PERSIST_EVERY`], and flushed on snapshot and shutdown): after a crash openraft re-applies
//! from the persisted position up to the committed id, which only moves the watermark again.
//!
//! A snapshot is metadata only: the last applied log id and the membership. Building one
//! persists it (flushed); installing one on a follower makes it the applied state, and openraft
//! then purges the follower's log up to the snapshot, which resets the log to start right after
//! it (see `log_store::purge`; openraft runs that purge only after the installation finished).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::blocking::blocking;
use super::stable_store::{AppliedState, StableStore};
use super::types::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

/// The applied state is written to the stable store at most this often while applying.
pub const PERSIST_EVERY: Duration = Duration::from_millis(100);

/// Responders are answered (after the watermark moved) at least every this many entries.
const RESPOND_EVERY: usize = 4096;

/// The state machine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

struct Inner {
    stable: Arc<dyn StableStore>,
    state: Mutex<State>,
    /// Offset after the last applied entry (0 when nothing is applied).
    applied_next: watch::Sender<u64>,
    snapshot: Mutex<Option<SnapshotMeta>>,
}

struct State {
    applied: AppliedState,
    persisted_at: Instant,
    dirty: bool,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("applied", &self.inner.state.lock().applied.last_applied)
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// Loads the applied state and the current snapshot from `stable` (blocking: at start-up).
    /// When the snapshot is newer than the persisted applied state (the applied state is written
    /// lazily), the snapshot's position is the applied state.
    pub fn open(stable: Arc<dyn StableStore>) -> io::Result<StateMachine> {
        let mut applied = stable.applied()?.unwrap_or_default();
        let snapshot = stable.snapshot()?;
        if let Some(meta) = &snapshot
            && meta.last_log_id > applied.last_applied
        {
            applied = AppliedState {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
        }
        let next = next_index(applied.last_applied.as_ref());
        Ok(StateMachine {
            inner: Arc::new(Inner {
                stable,
                state: Mutex::new(State {
                    applied,
                    persisted_at: Instant::now(),
                    dirty: false,
                }),
                applied_next: watch::Sender::new(next),
                snapshot: Mutex::new(snapshot),
            }),
        })
    }

    /// Watches the offset after the last applied entry.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.inner.applied_next.subscribe()
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner.state.lock().applied.last_applied
    }

    /// The current snapshot's metadata.
    pub fn current_snapshot(&self) -> Option<SnapshotMeta> {
        self.inner.snapshot.lock().clone()
    }

    /// Writes the applied state and flushes the stable store (at shutdown).
    pub fn persist_now(&self) -> io::Result<()> {
        let applied = {
            let mut state = self.inner.state.lock();
            state.dirty = false;
            state.persisted_at = Instant::now();
            state.applied.clone()
        };
        self.inner.stable.save_applied(&applied, true)?;
        Ok(())
    }

    /// Records `applied` and `membership` in memory and publishes the watermark.
    fn advance(&self, last: LogId, membership: Option<StoredMembership>) {
        let mut state = self.inner.state.lock();
        state.applied.last_applied = Some(last);
        if let Some(membership) = membership {
            state.applied.membership = membership;
        }
        state.dirty = true;
        self.inner.applied_next.send_if_modified(|next| {
            let new = last.index + 1;
            if *next != new {
                *next = new;
                true
            } else {
                false
            }
        });
    }

    /// Writes the applied state (unflushed) when it changed and was last written long enough ago.
    async fn persist_lazily(&self) -> io::Result<()> {
        let applied = {
            let mut state = self.inner.state.lock();
            if !state.dirty || state.persisted_at.elapsed() < PERSIST_EVERY {
                return Ok(());
            }
            state.dirty = false;
            state.persisted_at = Instant::now();
            state.applied.clone()
        };
        let stable = Arc::clone(&self.inner.stable);
        blocking(move || {
            stable
                .save_applied(&applied, false)
                .map_err(io::Error::from)
        })
        .await
    }

    /// Makes a snapshot of the current applied state and persists it (flushed).
    async fn snapshot_now(&self) -> io::Result<Snapshot> {
        let applied = self.inner.state.lock().applied.clone();
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
        };
        self.persist_snapshot(applied, meta.clone()).await?;
        Ok(Snapshot { meta, snapshot: () })
    }
}

impl StateMachine {
    /// Persists `applied` and then `meta` (flushed) and makes `meta` the current snapshot. The
    /// applied state goes first so that it never lies behind a persisted snapshot.
    async fn persist_snapshot(&self, applied: AppliedState, meta: SnapshotMeta) -> io::Result<()> {
        let stable = Arc::clone(&self.inner.stable);
        let saved = meta.clone();
        blocking(move || -> io::Result<()> {
            stable.save_applied(&applied, false)?;
            stable.save_snapshot(&saved)?;
            Ok(())
        })
        .await?;
        *self.inner.snapshot.lock() = Some(meta);
        Ok(())
    }
}

/// The offset after `last`.
fn next_index(last: Option<&LogId>) -> u64 {
    last.map_or(0, |id| id.index + 1)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = ();

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.snapshot_now().await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = ();
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.inner.state.lock();
        Ok((state.applied.last_applied, state.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut entries = entries;
        let mut responders = Vec::new();
        let mut last = None;
        let mut membership = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            if let EntryPayload::Membership(m) = &entry.payload {
                membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
            }
            last = Some(entry.log_id);
            if let Some(responder) = responder {
                responders.push(responder);
            }
            if responders.len() >= RESPOND_EVERY
                && let Some(last) = last
            {
                // Publish before answering: a producer that got its offset can read it at once.
                self.advance(last, membership.take());
                for responder in responders.drain(..) {
                    responder.send(());
                }
            }
        }
        if let Some(last) = last {
            self.advance(last, membership.take());
        }
        for responder in responders {
            responder.send(());
        }
        self.persist_lazily().await
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        Some(self.clone())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        _snapshot: (),
    ) -> Result<(), io::Error> {
        let applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.persist_snapshot(applied.clone(), meta.clone()).await?;
        {
            let mut state = self.inner.state.lock();
            state.applied = applied;
            state.dirty = false;
            state.persisted_at = Instant::now();
        }
        let next = next_index(meta.last_log_id.as_ref());
        self.inner.applied_next.send_replace(next);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .current_snapshot()
            .map(|meta| Snapshot { meta, snapshot: () }))
    }
}
