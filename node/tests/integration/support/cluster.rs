//! Clusters of in-process Raft nodes that share one test PKI and talk real `raft.v1` gRPC over
//! real mutual TLS on loopback (node *i* listens on 127.0.0.(i+1), on a free port).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use logcluster_certs::testsuite::TestPki;
use logcluster_node::api::{AdminService, Closing, RaftService};
use logcluster_node::auth::AccessControl;
use logcluster_node::auth::authz::{CasbinAuthorizer, DEFAULT_MODEL};
use logcluster_node::auth::tls::{ReloadingTlsFiles, TlsFiles, tls_incoming};
use logcluster_node::commit_log::{CommitLog, NewRecord};
use logcluster_node::log::{EntryKind, FsyncPolicy, LogConfig};
use logcluster_node::raft::metrics_watch;
use logcluster_node::raft::network::PeerChannels;
use logcluster_node::raft::{AdminTimeouts, RaftNode, RaftNodeConfig};
use logcluster_node::telemetry::metrics::Metrics;
use openraft::{RaftMetrics, ServerState};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use logcluster_node::raft::types::TypeConfig;

/// Bound of every wait in these tests (generous: CI machines are small and busy).
pub const WAIT: Duration = Duration::from_secs(30);

/// The ACL: nodes replicate and administer, `admin` administers, `root` produces and consumes.
pub const POLICY: &str = "\
p, node, *, replicate
p, node, *, admin
p, admin, *, admin
p, root, *, produce
p, root, *, consume
";

/// Knobs of a test cluster.
#[derive(Clone)]
pub struct Options {
    pub log: LogConfig,
    pub retention_bytes: Option<u64>,
    pub retention_interval: Duration,
    pub heartbeat: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log: LogConfig {
                fsync: FsyncPolicy::Always,
                ..LogConfig::default()
            },
            retention_bytes: None,
            retention_interval: Duration::from_secs(30),
            heartbeat: Duration::from_millis(150),
        }
    }
}

/// One node: its directories, its gRPC server and its Raft.
pub struct TestNode {
    pub id: u64,
    pub addr: SocketAddr,
    pub node: Option<RaftNode>,
    /// The node's Prometheus registry (what `/metrics` would serve).
    pub prometheus: Metrics,
    /// Stops the server; the `Closing` first ends the streams peers keep open.
    server: Option<ServerHandles>,
}

/// What stops a test node's server: the shutdown signal, the closing of its streams, the
/// server task, and the release of its listening socket.
type ServerHandles = (
    oneshot::Sender<()>,
    Closing,
    JoinHandle<()>,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
);

impl TestNode {
    pub fn raft(&self) -> &RaftNode {
        self.node.as_ref().expect("node is running")
    }

    pub fn commit_log(&self) -> Arc<dyn CommitLog> {
        self.raft().commit_log()
    }

    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        metrics_watch::current(self.raft().raft())
    }

    pub fn is_running(&self) -> bool {
        self.node.is_some()
    }

    async fn stop_server(&mut self) {
        if let Some((stop, closing, task, released)) = self.server.take() {
            closing.cancel();
            let _ = stop.send(());
            let _ = task.await;
            // The node may be started again on this address: wait until it is free.
            released.await;
        }
    }
}

/// A cluster of in-process nodes sharing one PKI.
pub struct Cluster {
    pub dir: TempDir,
    pub pki: TestPki,
    pub nodes: Vec<TestNode>,
    pub options: Options,
    access: AccessControl,
}

impl Cluster {
    /// Starts `n` nodes: node 0 bootstraps, the others join through the admin API, and the
    /// call returns once all are voters that agree on a leader.
    pub async fn start(n: usize, options: Options) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::in_dir(dir.path().join("certs")).expect("test PKI");
        // Node `i` is `node<i>`, valid for its own address only; every node's subject is `node`.
        for i in 0..8u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i + 1));
            pki.node(&format!("node{i}"), "node", &[ip], &[])
                .expect("node certificate");
        }
        for subject in ["root", "admin"] {
            pki.client(subject).expect("client certificate");
        }
        let authorizer = CasbinAuthorizer::from_text(DEFAULT_MODEL, POLICY)
            .await
            .expect("authorizer");
        let access = AccessControl::new(Arc::new(authorizer));
        let mut cluster = Cluster {
            dir,
            pki,
            nodes: Vec::new(),
            options,
            access,
        };
        for i in 0..n {
            cluster.add_node(i as u64).await;
        }
        let first = cluster.nodes[0].raft();
        assert!(
            first.bootstrap_if_new().await.expect("bootstrap"),
            "node 0 bootstraps"
        );
        wait_until(&cluster, 0, |m| m.state == ServerState::Leader).await;
        let seed = vec![cluster.nodes[0].addr.to_string()];
        for i in 1..n {
            tokio::time::timeout(WAIT, cluster.nodes[i].raft().join(&seed))
                .await
                .expect("join in time")
                .expect("join");
        }
        let voters: BTreeSet<u64> = (0..n as u64).collect();
        cluster
            .wait_all(|m| voter_ids(m) == voters && m.current_leader.is_some())
            .await;
        cluster
    }

    /// TLS files of a certificate from the cluster's PKI (`node<i>`, `root`, `admin`).
    pub fn tls_files(&self, name: &str) -> TlsFiles {
        TlsFiles::new(
            self.pki.ca_path(),
            self.pki.cert_path(name),
            self.pki.key_path(name),
        )
    }

    /// Channels that dial nodes presenting `name`'s certificate.
    pub fn channels_as(&self, name: &str) -> PeerChannels {
        PeerChannels::new(
            ReloadingTlsFiles::load(self.tls_files(name)).expect("client TLS"),
            None,
        )
    }

    /// Starts node `id` (new, or again on its old address and data) without joining it.
    pub async fn add_node(&mut self, id: u64) -> usize {
        let ip = Ipv4Addr::new(127, 0, 0, id as u8 + 1);
        let existing = self.nodes.iter().position(|n| n.id == id);
        let bind = match existing {
            Some(i) => self.nodes[i].addr,
            None => SocketAddr::from((ip, 0)),
        };
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let data_dir = self.dir.path().join(format!("node{id}"));
        let tls = ReloadingTlsFiles::load(self.tls_files(&format!("node{id}"))).expect("node TLS");
        let mut config = RaftNodeConfig::new(id, addr.to_string(), &data_dir);
        config.log = self.options.log.clone();
        config.heartbeat_interval = self.options.heartbeat;
        config.retention_bytes = self.options.retention_bytes;
        config.retention_interval = self.options.retention_interval;
        config.admin_timeouts = AdminTimeouts {
            catch_up: WAIT,
            change: WAIT,
        };
        let prometheus = Metrics::new(id);
        let node = RaftNode::start(config, tls.clone(), prometheus.clone())
            .await
            .expect("raft node starts");
        let mut incoming = tls_incoming(
            listener,
            tls.server_config().expect("server config"),
            Duration::from_secs(5),
        );
        let released = Box::pin(incoming.released());
        let (stop, stopped) = oneshot::channel::<()>();
        let closing = Closing::new();
        // Replication streams are large: a follower's receive windows must not throttle them
        // (the node's real server should use the same settings).
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_connection_window_size(Some(32 << 20))
            .initial_stream_window_size(Some(8 << 20))
            .add_service(
                RaftService::for_node(&node, self.access.clone(), closing.clone()).into_server(),
            )
            .add_service(
                AdminService::new(node.admin().clone(), self.access.clone()).into_server(),
            );
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                eprintln!("node {id}: server failed: {e}");
            }
        });
        let test_node = TestNode {
            id,
            addr,
            node: Some(node),
            prometheus,
            server: Some((stop, closing, task, released)),
        };
        match existing {
            Some(i) => {
                self.nodes[i] = test_node;
                i
            }
            None => {
                self.nodes.push(test_node);
                self.nodes.len() - 1
            }
        }
    }

    /// Graceful shutdown of node `i` (leadership moves away first when it leads).
    pub async fn shutdown(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.stop_server().await;
        if let Some(raft) = node.node.take() {
            raft.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stops node `i` the hard way, as its peers see a crash: its server goes and its Raft stops
    /// without handing anything over.
    pub async fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.stop_server().await;
        if let Some(raft) = node.node.take() {
            raft.raft().shutdown().await.expect("raft stops");
            drop(raft);
        }
    }

    pub fn running(&self) -> impl Iterator<Item = &TestNode> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// Waits until `condition` holds on every running node.
    pub async fn wait_all(&self, condition: impl Fn(&RaftMetrics<TypeConfig>) -> bool + Clone) {
        for node in self.running() {
            metrics_watch::wait_until(node.raft().raft(), WAIT, condition.clone())
                .await
                .unwrap_or_else(|e| panic!("node {}: {e}", node.id));
        }
    }

    /// Waits until every running node follows the same leader, and returns its position in
    /// `nodes`.
    pub async fn wait_for_leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leaders: BTreeSet<Option<u64>> =
                self.running().map(|n| n.metrics().current_leader).collect();
            if leaders.len() == 1
                && let Some(Some(leader)) = leaders.into_iter().next()
                && let Some(i) = self
                    .nodes
                    .iter()
                    .position(|n| n.id == leader && n.is_running())
                && self.nodes[i].metrics().state == ServerState::Leader
            {
                return i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader within {WAIT:?}"
            );
            // Wake on any node's metrics change.
            let waits = self.running().map(|n| {
                let raft = n.raft().raft().clone();
                Box::pin(async move {
                    use openraft::async_runtime::WatchReceiver;
                    let mut watch = raft.metrics();
                    let _ = watch.changed().await;
                })
            });
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                futures::future::select_all(waits),
            )
            .await;
        }
    }

    /// Waits until node `i` has applied everything up to `offset`.
    pub async fn wait_applied(&self, i: usize, offset: u64) {
        let mut committed = self.nodes[i].commit_log().committed();
        tokio::time::timeout(WAIT, committed.wait_for(|next| *next > offset))
            .await
            .unwrap_or_else(|_| panic!("node {} did not apply offset {offset}", self.nodes[i].id))
            .expect("watch");
    }
}

/// The voters of a node's current membership.
pub fn voter_ids(metrics: &RaftMetrics<TypeConfig>) -> BTreeSet<u64> {
    metrics.membership_config.membership().voter_ids().collect()
}

/// Every node id (voters and learners) of a node's current membership.
pub fn member_ids(metrics: &RaftMetrics<TypeConfig>) -> BTreeSet<u64> {
    metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect()
}

/// Records with the given values.
pub fn records(values: impl IntoIterator<Item = String>) -> Vec<NewRecord> {
    values
        .into_iter()
        .map(|v| NewRecord {
            value: Bytes::from(v),
        })
        .collect()
}

/// Every applied data record of a node from `from` on: `(offset, value)`.
pub async fn read_data(log: &Arc<dyn CommitLog>, from: u64) -> Vec<(u64, Bytes)> {
    let end = *log.committed().borrow();
    let mut out = Vec::new();
    let mut next = from.max(log.first_offset());
    while next < end {
        let entries = log.read(next, 1024, 1 << 20).await.expect("read");
        let Some(last) = entries.last().map(|e| e.index) else {
            break;
        };
        out.extend(
            entries
                .into_iter()
                .filter(|e| e.kind == EntryKind::Data)
                .map(|e| (e.index, e.payload)),
        );
        next = last + 1;
    }
    out
}

/// Waits until `condition` holds on node `i`.
pub async fn wait_until(
    cluster: &Cluster,
    i: usize,
    condition: impl FnMut(&RaftMetrics<TypeConfig>) -> bool,
) {
    metrics_watch::wait_until(cluster.nodes[i].raft().raft(), WAIT, condition)
        .await
        .unwrap_or_else(|e| panic!("node {}: {e}", cluster.nodes[i].id));
}

/// Produces `values` through node `via` the way a client does: a refusal that surely wrote
/// nothing (no leader yet, or a leader change) is retried until [`WAIT`]; anything else fails.
pub async fn produce(cluster: &Cluster, via: usize, values: Vec<String>) -> Vec<u64> {
    use logcluster_node::commit_log::CommitLogError;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match cluster.nodes[via]
            .commit_log()
            .append(records(values.clone()))
            .await
        {
            Ok(offsets) => return offsets,
            Err(
                CommitLogError::NoLeader
                | CommitLogError::NotLeader {
                    not_applied: true, ..
                },
            ) if tokio::time::Instant::now() < deadline => {
                cluster.wait_for_leader().await;
            }
            Err(e) => panic!("produce through node {}: {e}", cluster.nodes[via].id),
        }
    }
}
