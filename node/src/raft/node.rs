//! [`RaftNode`]: the façade `lognode` wires — opens the commit log and the stable store, builds
//! openraft with our storage and network, and runs the helper tasks (group-commit syncer,
//! member list, readiness, metrics, retention).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{AddNodeRequest, Member};
use openraft::errors::{Fatal, InitializeError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Raft;
use super::blocking::blocking;
use super::cluster_admin::{AdminTimeouts, ClusterAdmin};
use super::commit_log::{RaftCommitLog, publish_servers};
use super::error::{RaftNodeError, Result};
use super::joint;
use super::log_store::LogStore;
use super::metrics_watch;
use super::network::{Network, PeerChannels};
use super::retention::{RetentionPolicy, run_retention};
use super::stable_store::{SledStableStore, StableStore};
use super::state_machine::StateMachine;
use super::syncer::Syncer;
use super::types::{Node, NodeId, TypeConfig};
use super::vote_gate::VoteGate;
use crate::auth::tls::ReloadingTlsFiles;
use crate::commit_log::{CommitLog, ServerInfo};
use crate::log::{FsyncPolicy, Log, LogConfig};
use crate::telemetry::metrics::{Metrics, RaftGauges};

/// Subdirectory of the data directory holding the commit log.
pub const LOG_DIR: &str = "log";
/// Subdirectory of the data directory holding the stable store (sled).
pub const STATE_DIR: &str = "raft";

/// Configuration of a [`RaftNode`].
#[derive(Debug, Clone)]
pub struct RaftNodeConfig {
    /// This node's id (StatefulSet ordinal; ids start at 0).
    pub node_id: u64,
    /// host:port other nodes dial to reach this node's gRPC server.
    pub advertise_addr: String,
    /// Holds `log/` (the commit log) and `raft/` (vote, committed and applied state).
    pub data_dir: PathBuf,
    pub log: LogConfig,
    /// Leader heartbeat period; elections time out after 3 to 6 of them.
    pub heartbeat_interval: Duration,
    /// Retention by size (off when `None`).
    pub retention_bytes: Option<u64>,
    /// Retention by age (off when `None`).
    pub retention_age: Option<Duration>,
    /// How often retention runs (when enabled).
    pub retention_interval: Duration,
    /// How long a produce may wait to be committed (on the leader or forwarded) before it is
    /// answered as outcome-unknown.
    pub write_timeout: Duration,
    /// Limits of membership operations.
    pub admin_timeouts: AdminTimeouts,
    /// The address connections to peers leave from (the node's listen address when it is a
    /// specific one); `None` lets the kernel choose.
    pub source_ip: Option<std::net::IpAddr>,
}

impl RaftNodeConfig {
    /// A configuration with the defaults: default log, 150 ms heartbeats, no retention.
    pub fn new(
        node_id: u64,
        advertise_addr: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        RaftNodeConfig {
            node_id,
            advertise_addr: advertise_addr.into(),
            data_dir: data_dir.into(),
            log: LogConfig::default(),
            heartbeat_interval: Duration::from_millis(150),
            retention_bytes: None,
            retention_age: None,
            retention_interval: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            admin_timeouts: AdminTimeouts::default(),
            source_ip: None,
        }
    }

    /// openraft's configuration for this node.
    pub fn raft_config(&self) -> Result<Config> {
        let heartbeat = u64::try_from(self.heartbeat_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(10);
        let config = Config {
            cluster_name: "logcluster".into(),
            heartbeat_interval: heartbeat,
            election_timeout_min: heartbeat * 3,
            election_timeout_max: heartbeat * 6,
            // Metadata-only snapshots are tiny; the timeout covers connecting to the follower.
            install_snapshot_timeout: 5_000,
            // Big replication batches: one message, one follower fsync, for thousands of records.
            max_payload_entries: 4096,
            // Snapshots are built only when retention needs one, and only retention purges: with
            // the maximum here openraft never schedules a purge after a snapshot on its own.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            purge_batch_size: 1,
            // The committed id and the applied state are persisted lazily, so a restarted
            // leader must not resume leadership without an election.
            enable_leader_restore: Some(false),
            // A node that cannot win — restarted on old data, partitioned, removed — first asks
            // whether it would be elected, so it never raises its term and deposes a healthy
            // leader (one such deposition between the two steps of a membership change is how a
            // joint configuration got stranded; see `joint.rs`).
            enable_pre_vote: Some(true),
            allow_log_reversion: Some(false),
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| RaftNodeError::Config(e.to_string()))
    }
}

/// A running Raft node.
pub struct RaftNode {
    config: RaftNodeConfig,
    raft: Raft,
    log: Log,
    stable: Arc<dyn StableStore>,
    syncer: Arc<Syncer>,
    state_machine: StateMachine,
    commit_log: Arc<RaftCommitLog>,
    admin: ClusterAdmin,
    channels: PeerChannels,
    vote_gate: Arc<VoteGate>,
    readiness: watch::Receiver<(bool, String)>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Metrics,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("node_id", &self.config.node_id)
            .field("advertise_addr", &self.config.advertise_addr)
            .finish_non_exhaustive()
    }
}

impl RaftNode {
    /// Opens the log and the stable store in `config.data_dir`, builds openraft and starts the
    /// helper tasks. A node with a new data directory is not a member of anything: it does not
    /// vote until a cluster adds it (or [`RaftNode::bootstrap_if_new`] creates one).
    pub async fn start(
        config: RaftNodeConfig,
        tls: ReloadingTlsFiles,
        metrics: Metrics,
    ) -> Result<RaftNode> {
        let raft_config = Arc::new(config.raft_config()?);
        // A live change takes its second step within a round trip of its commit; one that is
        // still joint after several election timeouts was abandoned by a leader change.
        let joint_grace = Duration::from_millis(raft_config.election_timeout_max * 3);
        let log_dir = config.data_dir.join(LOG_DIR);
        let state_dir = config.data_dir.join(STATE_DIR);
        let log_config = config.log.clone();
        let log = blocking(move || Log::open(&log_dir, log_config).map_err(std::io::Error::other))
            .await
            .map_err(|e| match e.downcast::<crate::log::Error>() {
                Ok(log_error) => RaftNodeError::Log(log_error),
                Err(other) => RaftNodeError::Storage(other),
            })?;
        let dir = state_dir.clone();
        let stable: Arc<dyn StableStore> = Arc::new(
            blocking(move || SledStableStore::open(&dir).map_err(std::io::Error::from)).await?,
        );
        check_vote_not_lost(&log, stable.as_ref(), &state_dir)?;
        let fresh = stable.vote()?.is_none()
            && log.last_entry().is_none()
            && stable.last_purged()?.is_none();
        let vote_gate = Arc::new(
            VoteGate::load(config.node_id, &config.data_dir, fresh)
                .map_err(RaftNodeError::Storage)?,
        );

        let sync_per_append = log.config().fsync == FsyncPolicy::Always;
        let syncer = Arc::new(Syncer::start(
            log.clone(),
            sync_per_append,
            Some(metrics.clone()),
        )?);
        let store_log = log.clone();
        let store_stable = Arc::clone(&stable);
        let store_syncer = Arc::clone(&syncer);
        let store_metrics = metrics.clone();
        let log_store = blocking(move || {
            LogStore::open(store_log, store_stable, store_syncer, Some(store_metrics))
        })
        .await?;
        let sm_stable = Arc::clone(&stable);
        let state_machine = blocking(move || StateMachine::open(sm_stable)).await?;

        let node_id = config.node_id;
        let channels = PeerChannels::new(tls, config.source_ip);
        let network = Network::new(node_id, channels.clone());
        let raft = Raft::new(
            node_id,
            raft_config,
            network,
            log_store.clone(),
            state_machine.clone(),
        )
        .await
        .map_err(|e| RaftNodeError::Raft(e.to_string()))?;

        let mut tasks = Vec::new();
        let (servers_tx, servers_rx) = watch::channel(Arc::new(Vec::<ServerInfo>::new()));
        tasks.push(tokio::spawn(publish_servers(
            raft.clone(),
            servers_tx,
            Duration::from_millis(100),
        )));
        tasks.push(tokio::spawn(publish_gauges(raft.clone(), metrics.clone())));
        tasks.push(tokio::spawn(joint::finish_abandoned_joint_configs(
            raft.clone(),
            joint_grace,
            metrics.clone(),
        )));
        let (ready_tx, readiness) = watch::channel((false, "starting".to_owned()));
        tasks.push(tokio::spawn(publish_readiness(
            raft.clone(),
            node_id,
            ready_tx,
        )));
        let policy = RetentionPolicy {
            max_bytes: config.retention_bytes,
            max_age: config.retention_age,
        };
        if policy.enabled() {
            tasks.push(tokio::spawn(run_retention(
                raft.clone(),
                log_store.clone(),
                state_machine.applied_watch(),
                policy,
                config.retention_interval,
            )));
        }

        let commit_log = Arc::new(RaftCommitLog::new(
            node_id,
            raft.clone(),
            log.clone(),
            state_machine.applied_watch(),
            servers_rx,
            channels.clone(),
            config.write_timeout,
        ));
        let admin = ClusterAdmin::new(
            node_id,
            raft.clone(),
            log.clone(),
            channels.clone(),
            config.admin_timeouts,
            Arc::clone(&vote_gate),
        );
        tracing::info!(node_id, addr = %config.advertise_addr, "raft node started");
        Ok(RaftNode {
            config,
            raft,
            log,
            stable,
            syncer,
            state_machine,
            commit_log,
            admin,
            channels,
            vote_gate,
            readiness,
            tasks,
            metrics,
        })
    }

    /// The client API's log (`log.v1` serves it).
    pub fn commit_log(&self) -> Arc<dyn CommitLog> {
        self.commit_log.clone()
    }

    /// The Raft-backed commit log itself (the peer service's `ForwardProduce` appends here).
    pub fn raft_commit_log(&self) -> &Arc<RaftCommitLog> {
        &self.commit_log
    }

    /// The gate that keeps a node with a new data directory from voting until it caught up.
    pub fn vote_gate(&self) -> &Arc<VoteGate> {
        &self.vote_gate
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The admin operations, for in-process callers.
    pub fn admin(&self) -> &ClusterAdmin {
        &self.admin
    }

    /// The openraft handle (metrics, tests).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The commit log underneath.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// `lognode --bootstrap`: initializes a cluster with this node as its only voter, unless this
    /// node already belongs to one (so it is idempotent across restarts). Returns whether it
    /// initialized. Only for the very first node of a new cluster: a node whose data directory
    /// was wiped must be re-added by the cluster, never bootstrapped again.
    pub async fn bootstrap_if_new(&self) -> Result<bool> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftNodeError::Raft(e.to_string()))?
        {
            return Ok(false);
        }
        let members = BTreeMap::from([(
            self.config.node_id,
            Node::new(self.config.advertise_addr.clone()),
        )]);
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(
                    node_id = self.config.node_id,
                    "initialized a new single-voter cluster"
                );
                self.vote_gate.open("initialized a new cluster here");
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(RaftNodeError::Raft(e.to_string())),
        }
    }

    /// Whether this node is a voter of its cluster's current configuration.
    fn is_voter(&self) -> bool {
        let metrics = metrics_watch::current(&self.raft);
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.config.node_id)
    }

    /// `lognode --join`: asks the nodes at `seeds` (host:port, tried in turn) to add this node
    /// as a learner and promote it to voter once it has caught up. Retries with backoff until
    /// one accepts; returns at once when this node already is a voter. Cancel by dropping.
    pub async fn join(&self, seeds: &[String]) -> Result<()> {
        if seeds.is_empty() {
            return Err(RaftNodeError::Join("no seed address given".into()));
        }
        let me = Member {
            node_id: self.config.node_id,
            rpc_addr: self.config.advertise_addr.clone(),
        };
        let per_call = self.config.admin_timeouts.catch_up + self.config.admin_timeouts.change;
        let mut delay = Duration::from_millis(200);
        loop {
            if self.is_voter() {
                return Ok(());
            }
            for seed in seeds {
                let Ok(channel) = self.channels.channel(seed) else {
                    tracing::warn!(%seed, "invalid join seed address");
                    continue;
                };
                let mut client = AdminClient::new(channel);
                let request = AddNodeRequest {
                    node: Some(me.clone()),
                    promote_to_voter: true,
                };
                match tokio::time::timeout(per_call, client.add_node(request)).await {
                    Ok(Ok(response)) => {
                        tracing::info!(
                            %seed, index = response.into_inner().membership_log_index,
                            "joined the cluster as a voter"
                        );
                        return Ok(());
                    }
                    Ok(Err(status)) => {
                        tracing::info!(%seed, %status, "join attempt refused; retrying")
                    }
                    Err(_) => tracing::info!(%seed, "join attempt timed out; retrying"),
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Ready = a voter, or a learner that has applied everything it knows to be committed.
    pub fn readiness(&self) -> watch::Receiver<(bool, String)> {
        self.readiness.clone()
    }

    /// Removes this node from the cluster through the admin path (leadership moves away first
    /// when it leads). A no-op when it is not a member.
    pub async fn leave(&self) -> Result<()> {
        self.admin
            .remove_node(self.config.node_id, false)
            .await
            .map(|_| ())
            .map_err(|status| RaftNodeError::Leave(status.to_string()))
    }

    /// Resolves if openraft or the storage under it failed fatally (a failed fsync, a storage
    /// error): the process must exit and recover from disk. It does not resolve on a graceful
    /// [`RaftNode::shutdown`].
    pub fn fatal(&self) -> impl Future<Output = String> + Send + 'static {
        let mut sync = self.syncer.fatal();
        let raft = self.raft.clone();
        async move {
            let storage = async {
                loop {
                    if let Some(reason) = sync.borrow_and_update().clone() {
                        return reason;
                    }
                    if sync.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            let raft_fatal = async {
                use openraft::async_runtime::WatchReceiver;
                let mut watch = raft.metrics();
                loop {
                    if let Err(fatal) = &watch.borrow_and_update().running_state
                        && !matches!(fatal, Fatal::Stopped)
                    {
                        return format!("raft stopped: {fatal}");
                    }
                    if watch.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                reason = storage => reason,
                reason = raft_fatal => reason,
            }
        }
    }

    /// Graceful shutdown: hands leadership to another voter when leading (best effort, bounded),
    /// stops Raft, waits for the last sync, persists the applied state and closes the log.
    pub async fn shutdown(self) -> Result<()> {
        let metrics = metrics_watch::current(&self.raft);
        if metrics.state == ServerState::Leader
            && metrics.membership_config.membership().voter_ids().count() > 1
        {
            // Best effort and bounded: a quick handover spares clients an election timeout.
            let bound = self.config.heartbeat_interval * 20;
            match tokio::time::timeout(bound, self.admin.transfer_leader(None, true)).await {
                Ok(Ok(to)) => tracing::info!(to, "handed leadership over before shutting down"),
                Ok(Err(e)) => tracing::info!(error = %e, "no leadership transfer before shutdown"),
                Err(_) => tracing::info!("leadership transfer before shutdown timed out"),
            }
        }
        for task in &self.tasks {
            task.abort();
        }
        self.raft
            .shutdown()
            .await
            .map_err(|e| RaftNodeError::Raft(format!("shutting down raft: {e}")))?;
        let syncer = Arc::clone(&self.syncer);
        let state_machine = self.state_machine.clone();
        let stable = Arc::clone(&self.stable);
        let log = self.log.clone();
        blocking(move || {
            let synced = syncer.barrier();
            syncer.stop();
            state_machine.persist_now()?;
            stable.flush()?;
            log.close().map_err(std::io::Error::other)?;
            synced
        })
        .await?;
        tracing::info!(node_id = self.config.node_id, "raft node stopped");
        Ok(())
    }
}

impl Drop for RaftNode {
    /// The helper tasks end with the node (also when it is dropped without a shutdown).
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A node whose stable store lost its vote must not start: it could vote twice in a term.
fn check_vote_not_lost(
    log: &Log,
    stable: &dyn StableStore,
    state_dir: &std::path::Path,
) -> Result<()> {
    if stable.vote()?.is_some() {
        return Ok(());
    }
    // Entries of term 0 are openraft's `initialize` entry, written before any vote is saved;
    // every later entry (and any purge or applied position beyond it) required a saved vote.
    let beyond_init = |term: u64| term > 0;
    let has_data = log.last_entry().is_some_and(|id| beyond_init(id.term))
        || stable.last_purged()?.is_some()
        || stable
            .applied()?
            .and_then(|a| a.last_applied)
            .is_some_and(|id| beyond_init(id.leader_id.term));
    if has_data {
        return Err(RaftNodeError::VoteStoreLost {
            path: state_dir.to_path_buf(),
        });
    }
    Ok(())
}

async fn publish_gauges(raft: Raft, metrics: Metrics) {
    use openraft::async_runtime::WatchReceiver;
    let mut watch = raft.metrics();
    loop {
        let gauges = {
            let m = watch.borrow_and_update();
            RaftGauges {
                term: m.current_term,
                commit_index: m.local_committed.map_or(0, |c| c.index),
                applied_index: m.last_applied.map_or(0, |a| a.index),
                is_leader: m.state == ServerState::Leader,
                membership_size: m.membership_config.membership().nodes().count() as u64,
            }
        };
        metrics.set_raft(gauges);
        if watch.changed().await.is_err() {
            return;
        }
    }
}

/// Readiness from the metrics: a voter is ready; a learner once it has applied what it knows
/// to be committed and follows a leader.
fn readiness_of(metrics: &openraft::RaftMetrics<TypeConfig>, me: NodeId) -> (bool, String) {
    let membership = metrics.membership_config.membership();
    if membership.voter_ids().any(|id| id == me) {
        return (true, "voter".into());
    }
    if membership.get_node(&me).is_none() {
        return (
            false,
            "not a member of a cluster yet (waiting to be added)".into(),
        );
    }
    let committed = metrics.local_committed.map_or(0, |c| c.index);
    let applied = metrics.last_applied.map_or(0, |a| a.index);
    match metrics.current_leader {
        Some(_) if applied >= committed => (true, "learner, caught up".into()),
        Some(_) => (
            false,
            format!("learner catching up: applied {applied} of {committed}"),
        ),
        None => (false, "learner without a leader".into()),
    }
}

async fn publish_readiness(raft: Raft, me: NodeId, ready: watch::Sender<(bool, String)>) {
    use openraft::async_runtime::WatchReceiver;
    let mut watch = raft.metrics();
    loop {
        let state = readiness_of(&watch.borrow_and_update(), me);
        ready.send_if_modified(|current| {
            if *current == state {
                false
            } else {
                *current = state;
                true
            }
        });
        if watch.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::log::{Entry, EntryKind};
    use crate::raft::stable_store::SledStableStore;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Blank,
            timestamp_ms: 0,
            payload: Bytes::new(),
        }
    }

    #[test]
    fn a_node_whose_vote_store_lost_its_vote_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path().join(LOG_DIR), LogConfig::default()).expect("log");
        let stable = SledStableStore::open(&dir.path().join(STATE_DIR)).expect("stable");
        // openraft's `initialize` entry (term 0) is written before any vote: not a loss.
        log.append(&[entry(0, 0)]).expect("append");
        check_vote_not_lost(&log, &stable, dir.path()).expect("initialize entry only");
        // An entry of a real term means a vote existed.
        log.append(&[entry(1, 1)]).expect("append");
        let err = check_vote_not_lost(&log, &stable, dir.path()).expect_err("vote lost");
        assert!(matches!(err, RaftNodeError::VoteStoreLost { .. }), "{err}");
        stable
            .save_vote(&crate::raft::types::Vote::new_committed(1, 0))
            .expect("vote");
        check_vote_not_lost(&log, &stable, dir.path()).expect("vote present");
    }

    #[test]
    fn the_raft_configuration_never_purges_on_its_own() {
        let config = RaftNodeConfig::new(0, "127.0.0.1:8400", "/nonexistent")
            .raft_config()
            .expect("valid");
        assert_eq!(config.snapshot_policy, SnapshotPolicy::Never);
        assert_eq!(config.max_in_snapshot_log_to_keep, u64::MAX);
        assert_eq!(config.enable_leader_restore, Some(false));
        assert!(config.election_timeout_min >= 3 * config.heartbeat_interval);
    }
}
