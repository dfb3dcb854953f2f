//! A [`CommitLog`] on one local [`Log`], without replication: a record is committed once it is
//! durable on this node's disk. Used for API tests and single-node benchmarks; the cluster
//! runs the same service on Raft.
//!
//! Appends go through one writer thread that batches every request waiting at that moment into
//! a single write and a single `fdatasync` (group commit), so concurrent producers share syncs.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use super::{CommitLog, CommitLogError, MemberRole, NewRecord, ServerInfo};
use crate::log::{Entry, EntryKind, Log};
use crate::telemetry::metrics::Metrics;

/// Most append requests one group commit takes.
const MAX_GROUP: usize = 4096;

struct AppendRequest {
    records: Vec<NewRecord>,
    reply: oneshot::Sender<Result<Vec<u64>, CommitLogError>>,
}

/// A single-node commit log: durable means committed.
pub struct LocalCommitLog {
    log: Log,
    appends: std_mpsc::Sender<AppendRequest>,
    committed: watch::Receiver<u64>,
    servers: watch::Sender<Arc<Vec<ServerInfo>>>,
}

impl LocalCommitLog {
    /// Serves `log`, reporting itself as node `id` at `rpc_addr` in `GetServers`.
    pub fn new(log: Log, id: u64, rpc_addr: String, metrics: Metrics) -> Self {
        let (committed_tx, committed) = watch::channel(log.next_offset());
        let (appends, requests) = std_mpsc::channel();
        let writer_log = log.clone();
        std::thread::Builder::new()
            .name("local-log-writer".into())
            .spawn(move || write_loop(writer_log, requests, committed_tx, metrics))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the log writer thread"));
        let servers = watch::Sender::new(Arc::new(vec![ServerInfo {
            id,
            rpc_addr,
            is_leader: true,
            role: MemberRole::Voter,
            replicated_offset: 0,
        }]));
        LocalCommitLog {
            log,
            appends,
            committed,
            servers,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_loop(
    log: Log,
    requests: std_mpsc::Receiver<AppendRequest>,
    committed: watch::Sender<u64>,
    metrics: Metrics,
) {
    // Blocks until a request arrives; ends when every LocalCommitLog handle is gone.
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let timestamp_ms = now_ms();
        let mut next = log.next_offset();
        let mut entries = Vec::new();
        let mut offsets = Vec::with_capacity(group.len());
        for request in &group {
            let start = next;
            for record in &request.records {
                entries.push(Entry {
                    index: next,
                    term: 0,
                    kind: EntryKind::Data,
                    timestamp_ms,
                    payload: record.value.clone(),
                });
                next += 1;
            }
            offsets.push((start..next).collect::<Vec<u64>>());
        }
        let bytes: u64 = entries.iter().map(|e| e.payload.len() as u64).sum();
        let result = log
            .append_unsynced(&entries)
            .and_then(|_| {
                let started = std::time::Instant::now();
                let durable = log.sync();
                metrics.observe_fsync(started.elapsed());
                durable
            })
            .map_err(CommitLogError::from);
        if result.is_ok() {
            metrics.record_append(entries.len() as u64, bytes);
        }
        match result {
            Ok(durable) => {
                committed.send_replace(durable);
                for (request, offsets) in group.into_iter().zip(offsets) {
                    let _ = request.reply.send(Ok(offsets));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "appending to the local log failed");
                for request in group {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[async_trait]
impl CommitLog for LocalCommitLog {
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<u64>, CommitLogError> {
        let max = self.max_record_bytes();
        if let Some(too_large) = records.iter().find(|r| r.value.len() as u64 > max) {
            return Err(CommitLogError::RecordTooLarge {
                size: too_large.value.len() as u64,
                max,
            });
        }
        let (reply, response) = oneshot::channel();
        self.appends
            .send(AppendRequest { records, reply })
            .map_err(|_| CommitLogError::ShuttingDown)?;
        response.await.map_err(|_| CommitLogError::ShuttingDown)?
    }

    async fn read(
        &self,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, CommitLogError> {
        // Only committed entries: the writer makes entries readable before their sync.
        let committed = *self.committed.borrow();
        super::read_below(&self.log, committed, from, max_entries, max_bytes).await
    }

    fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    fn first_offset(&self) -> u64 {
        self.log.first_offset()
    }

    fn max_record_bytes(&self) -> u64 {
        u64::from(self.log.config().max_record_bytes)
    }

    fn servers(&self) -> watch::Receiver<Arc<Vec<ServerInfo>>> {
        self.servers.subscribe()
    }
}
