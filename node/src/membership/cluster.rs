//! [`Membership`]: this node's gossip endpoint — it announces the node (typed keys), follows
//! which nodes are live ([`Membership::members`]), and says when the node is ready or leaving.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
    ProtocolVersion, spawn_chitchat,
};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::datagram::{DatagramTransport, UdpDatagramTransport};
use super::error::{MembershipError, Result};
use super::key::GossipSecurity;
use super::member::{
    ClusterMember, flag_value, initial_key_values, is_host_port, keys, members_from_live_nodes,
};
use super::seal::DEFAULT_REPLAY_WINDOW;
use super::seeds::{DnsSeedResolver, SeedResolver, Seeds, run_seed_refresh};
use super::transport::GossipTransport;
use crate::telemetry::Metrics;

/// Default period of gossip rounds.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_secs(1);
/// Default period of seed re-resolution once this node knows another live node.
pub const DEFAULT_SEED_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Default chitchat cluster id: nodes with different ids refuse each other's gossip.
pub const DEFAULT_CLUSTER_ID: &str = "logcluster";
/// Seeds are re-resolved at least this often while this node knows no other live node.
const ALONE_SEED_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Configuration of [`Membership::start`].
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's Raft id.
    pub node_id: u64,
    /// chitchat's cluster id (e.g. the `LogCluster` name): a second guard besides the key.
    pub cluster_id: String,
    /// host:port of this node's gRPC server, announced to everyone.
    pub rpc_addr: String,
    /// UDP address gossip binds to (`--gossip-listen-addr`).
    pub listen_addr: SocketAddr,
    /// UDP address peers send gossip to (`--gossip-advertise-addr`, resolved; see
    /// [`resolve_gossip_addr`]).
    pub advertise_addr: SocketAddr,
    /// `host:port` seeds (`--gossip-seed`); host names are re-resolved periodically.
    pub seeds: Vec<String>,
    /// Sealed with the cluster key, or explicitly insecure.
    pub security: GossipSecurity,
    /// This incarnation: must grow across restarts of the node. Defaults to the start time in
    /// milliseconds since the Unix epoch.
    pub generation: u64,
    /// Period of gossip rounds.
    pub gossip_interval: Duration,
    /// Period of seed re-resolution (faster while the node is alone).
    pub seed_refresh_interval: Duration,
    /// chitchat's phi-accrual failure detector.
    pub failure_detector: FailureDetectorConfig,
    /// Sealed datagrams must be stamped within this window of the receiver's clock.
    pub replay_window: Duration,
    /// How long [`Membership::leave`] lets gossip spread the announcement.
    pub leave_propagation: Duration,
}

impl MembershipConfig {
    /// A configuration with the defaults: 1 s gossip rounds, generation = now, no seeds.
    pub fn new(
        node_id: u64,
        rpc_addr: impl Into<String>,
        listen_addr: SocketAddr,
        advertise_addr: SocketAddr,
        security: GossipSecurity,
    ) -> Self {
        MembershipConfig {
            node_id,
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            rpc_addr: rpc_addr.into(),
            listen_addr,
            advertise_addr,
            seeds: Vec::new(),
            security,
            generation: now_millis(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            seed_refresh_interval: DEFAULT_SEED_REFRESH_INTERVAL,
            failure_detector: failure_detector_for(DEFAULT_GOSSIP_INTERVAL),
            replay_window: DEFAULT_REPLAY_WINDOW,
            leave_propagation: DEFAULT_GOSSIP_INTERVAL * 3,
        }
    }

    /// Sets the seeds.
    pub fn with_seeds(mut self, seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the gossip period, and the failure detector's prior and the leave propagation time
    /// that depend on it.
    pub fn with_gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip_interval = interval;
        self.failure_detector = failure_detector_for(interval);
        self.leave_propagation = interval * 3;
        self
    }

    fn validate(&self) -> Result<Seeds> {
        if !is_host_port(&self.rpc_addr) {
            return Err(MembershipError::Config(format!(
                "the rpc address {:?} is not host:port",
                self.rpc_addr
            )));
        }
        if self.advertise_addr.ip().is_unspecified() || self.advertise_addr.port() == 0 {
            return Err(MembershipError::Config(format!(
                "the gossip advertise address {} must be an address peers can reach",
                self.advertise_addr
            )));
        }
        if self.gossip_interval.is_zero() || self.seed_refresh_interval.is_zero() {
            return Err(MembershipError::Config(
                "gossip and seed refresh intervals must be positive".into(),
            ));
        }
        Seeds::parse(&self.seeds)
    }
}

/// The failure detector LogCluster uses: chitchat's defaults (phi threshold 8), a prior
/// heartbeat interval of five gossip rounds, and dead generations forgotten after an hour.
pub fn failure_detector_for(gossip_interval: Duration) -> FailureDetectorConfig {
    FailureDetectorConfig {
        initial_interval: gossip_interval * 5,
        dead_node_grace_period: Duration::from_secs(3600),
        ..FailureDetectorConfig::default()
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Resolves `--gossip-advertise-addr` (an IP or a host name such as the pod's own DNS name) to
/// the socket address announced to peers, retrying until `patience` is spent (a pod's DNS
/// record can lag its start).
pub async fn resolve_gossip_addr(addr: &str, patience: Duration) -> Result<SocketAddr> {
    if let Ok(literal) = addr.parse() {
        return Ok(literal);
    }
    if !is_host_port(addr) {
        return Err(MembershipError::AdvertiseAddr {
            addr: addr.to_string(),
            reason: "expected host:port".into(),
        });
    }
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let reason = match tokio::net::lookup_host(addr).await {
            Ok(mut resolved) => match resolved.next() {
                Some(found) => return Ok(found),
                None => "no address".to_string(),
            },
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(MembershipError::AdvertiseAddr {
                addr: addr.to_string(),
                reason,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// This node's gossip membership. Dropping it stops gossip (as [`Membership::shutdown`] does,
/// without waiting).
pub struct Membership {
    node_id: u64,
    generation: u64,
    gossip_addr: SocketAddr,
    handle: Arc<ChitchatHandle>,
    chitchat: Arc<Mutex<Chitchat>>,
    members: watch::Receiver<Vec<ClusterMember>>,
    leave_propagation: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("node_id", &self.node_id)
            .field("generation", &self.generation)
            .field("gossip_addr", &self.gossip_addr)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Starts gossip on UDP with the system resolver for seeds.
    pub async fn start(config: MembershipConfig, metrics: Metrics) -> Result<Membership> {
        Self::start_on(
            config,
            metrics,
            Arc::new(UdpDatagramTransport),
            Arc::new(DnsSeedResolver),
        )
        .await
    }

    /// Starts gossip over `datagrams` (tests: an in-memory network), resolving host-name seeds
    /// with `resolver`.
    pub async fn start_on(
        config: MembershipConfig,
        metrics: Metrics,
        datagrams: Arc<dyn DatagramTransport>,
        resolver: Arc<dyn SeedResolver>,
    ) -> Result<Membership> {
        let seeds = config.validate()?;
        if config.security == GossipSecurity::InsecurePlaintext {
            tracing::warn!(
                "gossip is NOT authenticated or encrypted (--insecure-gossip-without-key): anyone \
                 who can send UDP to {} can announce nodes to this cluster",
                config.listen_addr
            );
        }
        let transport = GossipTransport::new(datagrams, &config.security, metrics)
            .with_replay_window(config.replay_window);
        let chitchat_id = ChitchatId::new(
            config.node_id.to_string(),
            config.generation,
            config.advertise_addr,
        );
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.listen_addr,
            // Host names are resolved by our own refresh loop (see `seeds`), so chitchat's fixed
            // 60 s DNS loop is not started.
            seed_nodes: seeds.literal.iter().map(ToString::to_string).collect(),
            failure_detector_config: config.failure_detector.clone(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Every LogCluster node runs the same chitchat; V0 is the format all versions read.
            protocol_version: ProtocolVersion::V0,
        };
        let key_values = initial_key_values(config.node_id, config.generation, &config.rpc_addr);
        let handle = spawn_chitchat(chitchat_config, key_values, &transport)
            .await
            .map_err(|e| MembershipError::Gossip(format!("{e:#}")))?;
        let handle = Arc::new(handle);
        let chitchat = handle.chitchat();

        // The first member list is read under the same lock as the watcher is subscribed, so no
        // change can fall between them.
        let (initial, live) = {
            let guard = chitchat.lock().await;
            let live_now = guard
                .live_nodes()
                .filter_map(|id| guard.node_state(id).map(|state| (id, state)));
            let initial = members_from_live_nodes(live_now);
            let mut watcher = guard.live_nodes_watcher();
            watcher.mark_unchanged();
            (initial, watcher)
        };
        let (members_tx, members) = watch::channel(initial);
        let mut tasks = vec![tokio::spawn(publish_members(live, members_tx))];
        tasks.push(tokio::spawn(run_seed_refresh(
            Arc::clone(&handle),
            resolver,
            seeds,
            config.advertise_addr,
            members.clone(),
            config.seed_refresh_interval,
            config
                .seed_refresh_interval
                .min(ALONE_SEED_REFRESH_INTERVAL),
        )));
        tracing::info!(
            node_id = config.node_id,
            generation = config.generation,
            gossip_addr = %config.advertise_addr,
            sealed = matches!(config.security, GossipSecurity::Sealed(_)),
            "gossip started"
        );
        Ok(Membership {
            node_id: config.node_id,
            generation: config.generation,
            gossip_addr: config.advertise_addr,
            handle,
            chitchat,
            members,
            leave_propagation: config.leave_propagation,
            tasks,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// This incarnation's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The gossip address announced to peers.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// The live members (this node included), one per node id (its newest generation), sorted
    /// by node id. A node that goes silent drops out once the failure detector gives up on it;
    /// that says nothing about its Raft membership.
    pub fn members(&self) -> watch::Receiver<Vec<ClusterMember>> {
        self.members.clone()
    }

    /// Announces whether this node is ready (serving).
    pub async fn set_ready(&self, ready: bool) {
        self.set(keys::READY, flag_value(ready)).await;
    }

    /// Keeps the `ready` key equal to `is_ready(source)` from now on, e.g. with the Raft node's
    /// readiness watch. The mirroring stops at shutdown, or when `source` closes.
    pub fn mirror_readiness<T>(
        &mut self,
        mut source: watch::Receiver<T>,
        is_ready: impl Fn(&T) -> bool + Send + 'static,
    ) where
        T: Send + Sync + 'static,
    {
        let chitchat = Arc::clone(&self.chitchat);
        self.tasks.push(tokio::spawn(async move {
            loop {
                let ready = is_ready(&source.borrow_and_update());
                set_ready_unless_leaving(chitchat.lock().await.self_node_state(), ready);
                if source.changed().await.is_err() {
                    return;
                }
            }
        }));
    }

    /// Announces that this node is leaving the cluster (the Raft leader removes it) and gives
    /// gossip a few rounds to spread the news. Call it only for a real departure
    /// (`--leave-on-shutdown`, scale-down), never for a restart: a restarting node must stay a
    /// member. chitchat has no acknowledgement to wait for, hence the fixed grace time.
    pub async fn leave(&self) {
        {
            let mut chitchat = self.chitchat.lock().await;
            let state = chitchat.self_node_state();
            state.set(keys::READY, flag_value(false));
            state.set(keys::LEAVING, flag_value(true));
        }
        tracing::info!(node_id = self.node_id, "announced leaving the cluster");
        tokio::time::sleep(self.leave_propagation).await;
    }

    /// Resolves when gossip stops: `Ok` after [`Membership::shutdown`], an error when the
    /// socket broke (the node should then exit).
    pub fn stopped(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let terminated = self.handle.termination_watcher();
        async move {
            terminated
                .await
                .map_err(|e| MembershipError::Gossip(format!("{e:#}")))
        }
    }

    /// Stops gossip and waits until the socket is closed. Peers then see this node go silent
    /// (not leave): it stays a member of the Raft cluster.
    pub async fn shutdown(mut self) -> Result<()> {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        let stopped = self.stopped();
        // An error means the server already stopped; `stopped` says how.
        let _ = self.handle.initiate_shutdown();
        stopped.await
    }

    async fn set(&self, key: &str, value: &str) {
        self.chitchat.lock().await.self_node_state().set(key, value);
    }

    /// chitchat's state, for tests that look under the member list.
    #[cfg(test)]
    pub(crate) fn chitchat(&self) -> Arc<Mutex<Chitchat>> {
        Arc::clone(&self.chitchat)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sets the `ready` key, except that a node that announced leaving stays not ready whatever
/// its Raft state says (the leader is about to remove it).
fn set_ready_unless_leaving(state: &mut NodeState, ready: bool) {
    let leaving = state.get(keys::LEAVING) == Some(flag_value(true));
    state.set(keys::READY, flag_value(ready && !leaving));
}

/// Publishes the parsed member list whenever chitchat's live set or a live node's state changes.
async fn publish_members(
    mut live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    members: watch::Sender<Vec<ClusterMember>>,
) {
    while live.changed().await.is_ok() {
        let current = members_from_live_nodes(live.borrow_and_update().iter());
        members.send_if_modified(|published| {
            if *published == current {
                return false;
            }
            *published = current;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaving_node_never_turns_ready_again() {
        let mut state = NodeState::for_test();
        for (key, value) in initial_key_values(1, 1, "node-1:8400") {
            state.set(key, value);
        }
        set_ready_unless_leaving(&mut state, true);
        assert_eq!(state.get(keys::READY), Some("true"));
        state.set(keys::READY, flag_value(false));
        state.set(keys::LEAVING, flag_value(true));
        set_ready_unless_leaving(&mut state, true);
        assert_eq!(state.get(keys::READY), Some("false"));
    }
}
