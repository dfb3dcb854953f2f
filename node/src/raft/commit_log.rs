//! [`CommitLog`] on Raft: what the client API (`log.v1`) serves on a cluster node.
//!
//! * **append** on the leader proposes one Raft entry per record in a single
//!   `client_write_many` call (so a `ProduceBatch` gets contiguous offsets) and answers once
//!   the entries are applied. Concurrent producers share Raft rounds and fsyncs: openraft
//!   batches every write queued while the previous round is in flight into one log append, one
//!   group-committed fsync and one replication message per follower.
//! * **append** on a follower forwards the records to the leader with `raft.v1.ForwardProduce`
//!   over the cached peer channel. Error semantics: `NotLeader { not_applied: true }` when the
//!   records surely were not appended (no leader connection could be made, or the leader
//!   refused them as not-leader), `OutcomeUnknown` when the leader may have appended them (the
//!   call failed or timed out after it was sent), `NoLeader` during elections.
//! * **read** returns only entries below the applied watermark, on every node. An offset that
//!   is committed but not yet applied here — this node acknowledged it (a forwarded produce),
//!   or the leader said the cluster committed it — is waited for, up to [`CATCH_UP_PATIENCE`],
//!   so a client reads its own writes through any node; past the patience the answer is
//!   `NotYetReplicated` (`UNAVAILABLE`), never the `OUT_OF_RANGE` that means "past the end".
//! * **servers** lists every member (voters and learners) from openraft's metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use logcluster_api::errors::{meta, reason};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver as _;
use openraft::errors::{ClientWriteError, Fatal, ForwardToLeader};
use tokio::sync::watch;
use tonic_types::StatusExt;

use super::Raft;
use super::network::{PeerChannels, is_connect_failure};
use super::pb::proto;
use super::types::{NodeId, Record, TypeConfig};
use crate::commit_log::{CommitLog, CommitLogError, MemberRole, NewRecord, ServerInfo, read_below};
use crate::log::{Entry, Log};

/// How long a read of a committed offset waits for this node to apply it.
pub const CATCH_UP_PATIENCE: Duration = Duration::from_secs(2);

/// The client API's log on a Raft node.
pub struct RaftCommitLog {
    node_id: NodeId,
    raft: Raft,
    log: Log,
    applied: watch::Receiver<u64>,
    servers: watch::Receiver<Arc<Vec<ServerInfo>>>,
    channels: PeerChannels,
    write_timeout: Duration,
    /// The end of the offsets this node has acknowledged to clients (committed, by definition).
    acknowledged: AtomicU64,
}

impl std::fmt::Debug for RaftCommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCommitLog")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl RaftCommitLog {
    /// A commit log serving `log` through `raft`; `applied` is the state machine's watermark and
    /// `servers` the member list kept up to date by [`publish_servers`].
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        log: Log,
        applied: watch::Receiver<u64>,
        servers: watch::Receiver<Arc<Vec<ServerInfo>>>,
        channels: PeerChannels,
        write_timeout: Duration,
    ) -> Self {
        RaftCommitLog {
            node_id,
            raft,
            log,
            applied,
            servers,
            channels,
            write_timeout,
            acknowledged: AtomicU64::new(0),
        }
    }

    /// Records offsets acknowledged to a client.
    fn acknowledge(&self, offsets: &[u64]) {
        if let Some(last) = offsets.iter().max() {
            self.acknowledged.fetch_max(last + 1, Ordering::Relaxed);
        }
    }

    /// The end of what this node knows to be committed: what it acknowledged, or what the
    /// leader last reported as committed by a quorum.
    fn known_committed_end(&self) -> u64 {
        // Reads at the tail (a proglog client polling Consume) get here: borrow, do not copy.
        let cluster = self
            .raft
            .metrics()
            .borrow_watched()
            .cluster_committed
            .map_or(0, |id| id.index + 1);
        cluster.max(self.acknowledged.load(Ordering::Relaxed))
    }

    /// Appends through this node's Raft, never forwarding: the leader answers with offsets, a
    /// follower with `NotLeader { not_applied: true }` (or `NoLeader`). This is what
    /// `ForwardProduce` runs on the leader, so a forwarded write is never forwarded again.
    pub async fn append_local(&self, records: Vec<NewRecord>) -> Result<Vec<u64>, CommitLogError> {
        let count = records.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        self.check_sizes(&records)?;
        let timestamp_ms = now_ms();
        let data = records.into_iter().map(|r| Record {
            value: r.value,
            timestamp_ms,
        });
        let write = async {
            let results = self
                .raft
                .client_write_many(data)
                .await
                .map_err(fatal_error)?;
            Ok::<_, CommitLogError>(results.collect::<Vec<_>>().await)
        };
        let results = tokio::time::timeout(self.write_timeout, write)
            .await
            .map_err(|_| {
                CommitLogError::OutcomeUnknown(format!(
                    "the write was not committed within {:?} (the leader may have lost its quorum)",
                    self.write_timeout
                ))
            })??;
        self.offsets(results, count)
    }

    /// Turns openraft's per-entry results into offsets or one error for the whole request.
    fn offsets(
        &self,
        results: Vec<Result<openraft::raft::WriteResult<TypeConfig>, Fatal<TypeConfig>>>,
        count: usize,
    ) -> Result<Vec<u64>, CommitLogError> {
        let mut offsets = Vec::with_capacity(count);
        let mut not_leader: Option<ForwardToLeader<TypeConfig>> = None;
        let mut unknown: Option<String> = None;
        for result in results {
            match result {
                Ok(Ok(response)) => offsets.push(response.log_id.index),
                Ok(Err(ClientWriteError::ForwardToLeader(forward))) => not_leader = Some(forward),
                Ok(Err(e @ ClientWriteError::LogEntryDiscarded(_))) => {
                    unknown = Some(e.to_string())
                }
                Ok(Err(e)) => unknown = Some(e.to_string()),
                Err(fatal) => return Err(fatal_error(fatal)),
            }
        }
        if offsets.len() == count {
            return Ok(offsets);
        }
        match (offsets.is_empty(), unknown, not_leader) {
            // Every entry was refused before it was appended: safe to retry elsewhere.
            (true, None, Some(forward)) => Err(self.not_leader(&forward)),
            (_, Some(why), _) => Err(CommitLogError::OutcomeUnknown(why)),
            _ => Err(CommitLogError::OutcomeUnknown(format!(
                "only {} of {count} records were committed",
                offsets.len()
            ))),
        }
    }

    fn not_leader(&self, forward: &ForwardToLeader<TypeConfig>) -> CommitLogError {
        tracing::debug!(node_id = self.node_id, ?forward, "not the leader");
        match (&forward.leader_id, &forward.leader_node) {
            (Some(id), Some(node)) if *id != self.node_id => CommitLogError::NotLeader {
                leader_id: Some(*id),
                leader_addr: Some(node.addr.clone()),
                not_applied: true,
            },
            _ => CommitLogError::NoLeader,
        }
    }

    fn check_sizes(&self, records: &[NewRecord]) -> Result<(), CommitLogError> {
        let max = self.max_record_bytes();
        match records.iter().find(|r| r.value.len() as u64 > max) {
            Some(r) => Err(CommitLogError::RecordTooLarge {
                size: r.value.len() as u64,
                max,
            }),
            None => Ok(()),
        }
    }

    /// Sends `records` to the leader `leader_id` at `addr` and waits for its answer.
    async fn forward(
        &self,
        leader_id: u64,
        addr: String,
        records: Vec<NewRecord>,
    ) -> Result<Vec<u64>, CommitLogError> {
        let count = records.len();
        let not_sent = |why: &dyn std::fmt::Display| {
            tracing::debug!(leader_id, %addr, %why, "could not forward a produce");
            CommitLogError::NotLeader {
                leader_id: Some(leader_id),
                leader_addr: Some(addr.clone()),
                not_applied: true,
            }
        };
        let mut client = self.channels.client(&addr).map_err(|e| not_sent(&e))?;
        let request = proto::ForwardProduceRequest {
            values: records.into_iter().map(|r| r.value).collect(),
        };
        match tokio::time::timeout(self.write_timeout, client.forward_produce(request)).await {
            Ok(Ok(response)) => {
                let offsets = response.into_inner().offsets;
                if offsets.len() == count {
                    Ok(offsets)
                } else {
                    Err(CommitLogError::OutcomeUnknown(format!(
                        "the leader answered {} offsets for {count} records",
                        offsets.len()
                    )))
                }
            }
            Ok(Err(status)) if is_connect_failure(&status) => Err(not_sent(&status.message())),
            Ok(Err(status)) => Err(error_from_leader(&status, leader_id, &addr)),
            Err(_) => Err(CommitLogError::OutcomeUnknown(format!(
                "the leader (node {leader_id} at {addr}) did not answer within {:?}",
                self.write_timeout
            ))),
        }
    }
}

/// Rebuilds the leader's refusal from its error details. Without details (a transport failure
/// after the request may have been sent) the outcome is unknown.
fn error_from_leader(status: &tonic::Status, leader_id: u64, addr: &str) -> CommitLogError {
    let details = status.get_error_details();
    let Some(info) = details.error_info() else {
        return CommitLogError::OutcomeUnknown(format!(
            "forwarding to the leader (node {leader_id} at {addr}) failed: {}",
            status.message()
        ));
    };
    let get = |key: &str| info.metadata.get(key).cloned();
    let number = |key: &str| get(key).and_then(|v| v.parse::<u64>().ok());
    let not_applied = get(meta::WRITE_OUTCOME).as_deref() == Some(meta::WRITE_NOT_APPLIED);
    match info.reason.as_str() {
        reason::NOT_LEADER => CommitLogError::NotLeader {
            leader_id: number(meta::LEADER_ID),
            leader_addr: get(meta::LEADER_ADDR),
            not_applied,
        },
        reason::NO_LEADER | reason::SHUTTING_DOWN if not_applied => CommitLogError::NoLeader,
        reason::RECORD_TOO_LARGE => CommitLogError::RecordTooLarge {
            size: number(meta::SIZE).unwrap_or(0),
            max: number(meta::MAX).unwrap_or(0),
        },
        reason::INVALID_REQUEST => CommitLogError::InvalidArgument(status.message().to_owned()),
        // The leader does not let this node replicate (an ACL mistake): nothing was written,
        // and the client can go to the leader directly.
        reason::PERMISSION_DENIED | reason::UNAUTHENTICATED => CommitLogError::NotLeader {
            leader_id: Some(leader_id),
            leader_addr: Some(addr.to_owned()),
            not_applied: true,
        },
        _ if not_applied => CommitLogError::NotLeader {
            leader_id: Some(leader_id),
            leader_addr: Some(addr.to_owned()),
            not_applied: true,
        },
        _ => CommitLogError::OutcomeUnknown(status.message().to_owned()),
    }
}

fn fatal_error(fatal: Fatal<TypeConfig>) -> CommitLogError {
    match fatal {
        Fatal::Stopped => CommitLogError::ShuttingDown,
        other => CommitLogError::Storage(other.to_string()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[async_trait]
impl CommitLog for RaftCommitLog {
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<u64>, CommitLogError> {
        self.check_sizes(&records)?;
        let offsets = match self.append_local(records.clone()).await {
            Err(CommitLogError::NotLeader {
                leader_id: Some(leader_id),
                leader_addr: Some(addr),
                not_applied: true,
            }) => self.forward(leader_id, addr, records).await,
            other => other,
        }?;
        self.acknowledge(&offsets);
        Ok(offsets)
    }

    async fn read(
        &self,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, CommitLogError> {
        let mut applied = *self.applied.borrow();
        if from >= applied {
            let committed = self.known_committed_end();
            if from < committed {
                let mut watch = self.applied.clone();
                let caught_up = tokio::time::timeout(
                    CATCH_UP_PATIENCE,
                    watch.wait_for(|applied| *applied > from),
                )
                .await;
                applied = match caught_up {
                    Ok(Ok(now)) => *now,
                    Ok(Err(_)) => return Err(CommitLogError::ShuttingDown),
                    Err(_) => {
                        return Err(CommitLogError::NotYetReplicated {
                            offset: from,
                            applied: *self.applied.borrow(),
                            committed,
                        });
                    }
                };
            }
        }
        read_below(&self.log, applied, from, max_entries, max_bytes).await
    }

    fn committed(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    fn first_offset(&self) -> u64 {
        self.log.first_offset()
    }

    fn max_record_bytes(&self) -> u64 {
        u64::from(self.log.config().max_record_bytes)
    }

    fn servers(&self) -> watch::Receiver<Arc<Vec<ServerInfo>>> {
        self.servers.clone()
    }
}

/// The member list as this node knows it from openraft's metrics: every voter and learner,
/// who leads, and how far each member's log is known to be replicated (the leader knows every
/// member's matched index; a follower knows only its own log).
pub fn servers_from_metrics(metrics: &openraft::RaftMetrics<TypeConfig>) -> Vec<ServerInfo> {
    let membership = metrics.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let replication: BTreeMap<u64, u64> = metrics
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .filter_map(|(id, matched)| matched.as_ref().map(|m| (*id, m.index)))
                .collect()
        })
        .unwrap_or_default();
    membership
        .nodes()
        .map(|(id, node)| {
            let replicated_offset = if metrics.state == ServerState::Leader {
                if *id == metrics.id {
                    metrics.last_log_index.unwrap_or(0)
                } else {
                    replication.get(id).copied().unwrap_or(0)
                }
            } else if *id == metrics.id {
                metrics.last_log_index.unwrap_or(0)
            } else {
                0
            };
            ServerInfo {
                id: *id,
                rpc_addr: node.addr.clone(),
                is_leader: metrics.current_leader == Some(*id),
                role: if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                replicated_offset,
            }
        })
        .collect()
}

/// Keeps `servers` equal to [`servers_from_metrics`] until `raft` shuts down. A change of who is
/// a member, their roles, addresses or the leader is published at once (clients and
/// `GetServers` must never see a stale leader or an empty list after a change); replication
/// positions move with every write, so position-only updates are published at most every
/// `min_interval` (the latest one always lands).
pub async fn publish_servers(
    raft: Raft,
    servers: watch::Sender<Arc<Vec<ServerInfo>>>,
    min_interval: Duration,
) {
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = raft.metrics();
    let mut last_publish: Option<tokio::time::Instant> = None;
    loop {
        let list = servers_from_metrics(&metrics.borrow_and_update());
        let structural = !same_members(&servers.borrow(), &list);
        let due = last_publish.is_none_or(|at| at.elapsed() >= min_interval);
        let pending = if structural || due {
            let published = servers.send_if_modified(|current| {
                if **current == list {
                    false
                } else {
                    *current = Arc::new(list);
                    true
                }
            });
            if published {
                last_publish = Some(tokio::time::Instant::now());
            }
            false
        } else {
            true
        };
        match (pending, last_publish) {
            (true, Some(at)) => {
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep_until(at + min_interval) => {}
                }
            }
            _ => {
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether two member lists agree on everything but replication positions.
fn same_members(a: &[ServerInfo], b: &[ServerInfo]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.id == y.id
                && x.rpc_addr == y.rpc_addr
                && x.is_leader == y.is_leader
                && x.role == y.role
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through_the_wire(error: CommitLogError) -> CommitLogError {
        error_from_leader(&tonic::Status::from(error), 2, "127.0.0.3:8400")
    }

    #[test]
    fn membership_changes_are_structural_and_positions_are_not() {
        let server = |id: u64, is_leader: bool, replicated_offset: u64| ServerInfo {
            id,
            rpc_addr: format!("127.0.0.{id}:8400"),
            is_leader,
            role: MemberRole::Voter,
            replicated_offset,
        };
        let before = [server(1, true, 10), server(2, false, 9)];
        assert!(same_members(
            &before,
            &[server(1, true, 50), server(2, false, 49)]
        ));
        assert!(!same_members(
            &before,
            &[server(1, false, 10), server(2, true, 9)]
        ));
        assert!(!same_members(&before, &[server(1, true, 10)]));
        assert!(!same_members(&[], &before));
    }

    #[test]
    fn a_leader_refusal_keeps_its_hint_and_write_outcome_through_forwarding() {
        let refused = through_the_wire(CommitLogError::NotLeader {
            leader_id: Some(1),
            leader_addr: Some("127.0.0.2:8400".into()),
            not_applied: true,
        });
        assert!(
            matches!(
                refused,
                CommitLogError::NotLeader { leader_id: Some(1), ref leader_addr, not_applied: true }
                    if leader_addr.as_deref() == Some("127.0.0.2:8400")
            ),
            "{refused:?}"
        );
        assert!(matches!(
            through_the_wire(CommitLogError::NoLeader),
            CommitLogError::NoLeader
        ));
        assert!(matches!(
            through_the_wire(CommitLogError::RecordTooLarge { size: 10, max: 5 }),
            CommitLogError::RecordTooLarge { size: 10, max: 5 }
        ));
    }

    #[test]
    fn a_failure_after_the_leader_may_have_written_is_outcome_unknown() {
        for error in [
            CommitLogError::OutcomeUnknown("timed out".into()),
            CommitLogError::Storage("disk".into()),
        ] {
            let got = through_the_wire(error);
            assert!(matches!(got, CommitLogError::OutcomeUnknown(_)), "{got:?}");
        }
        // A transport failure without error details: the request may have been processed.
        let reset = tonic::Status::unavailable("connection reset");
        assert!(matches!(
            error_from_leader(&reset, 2, "a:1"),
            CommitLogError::OutcomeUnknown(_)
        ));
    }
}
