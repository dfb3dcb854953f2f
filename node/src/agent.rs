//! Wires a node together from its configuration, runs it, and shuts it down gracefully:
//! telemetry → TLS material and ACL (both hot-reloaded) → commit log → gRPC on the TLS port and
//! health/metrics on the HTTP port → wait for SIGTERM/SIGINT → drain and close.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::server::GrpcRoutes;
use crate::api::{AdminService, Closing, LogService, LogServiceLimits, RaftService};
use crate::auth::AccessControl;
use crate::auth::authz::CasbinAuthorizer;
use crate::auth::tls::{self, ReloadingTlsFiles, TlsFiles};
use crate::config::{ConfigError, FsyncMode, NodeArgs, node_id_from_hostname};
use crate::error::{Error, Result};
use crate::http::{self, HttpState, Readiness};
use crate::log::{FsyncPolicy, LogConfig};
use crate::membership::{
    GossipSecurity, Membership, MembershipConfig, MembershipError, Reconciler, ReconcilerConfig,
    resolve_gossip_addr,
};
use crate::raft::{RaftNode, RaftNodeConfig};
use crate::telemetry::metrics::{CertificateRole, LogGauges, Metrics};

/// How often certificate and policy files are checked for changes.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// How long to wait for the gossip advertise name to resolve (a pod's DNS record lags its start).
const GOSSIP_ADDR_PATIENCE: Duration = Duration::from_secs(120);
/// How long a stopping node waits for its open gRPC calls to finish. Streams that never end
/// by themselves are ended by [`Closing`] first; this bounds the rest (a client that keeps a
/// `ProduceStream` open, say), well inside a pod's default 30 s grace period.
const DRAIN_PATIENCE: Duration = Duration::from_secs(10);

/// Gossip discovery (chitchat) settings; `None` in [`NodeConfig::gossip`] turns it off.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// UDP address gossip binds to.
    pub listen_addr: SocketAddr,
    /// host:port peers send gossip to (resolved at start).
    pub advertise_addr: String,
    /// host:port seeds, re-resolved periodically.
    pub seeds: Vec<String>,
    /// Sealed with the cluster key, or explicitly insecure.
    pub security: GossipSecurity,
    /// Period of gossip rounds.
    pub interval: Duration,
}

/// The validated configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub listen_addr: SocketAddr,
    pub advertise_addr: String,
    pub http_listen_addr: SocketAddr,
    pub tls: TlsFiles,
    pub acl_model_file: Option<PathBuf>,
    pub acl_policy_file: PathBuf,
    pub log: LogConfig,
    /// Initialize a new cluster with this node as its only voter (once).
    pub bootstrap: bool,
    /// Running nodes to ask to add this one.
    pub join: Vec<String>,
    /// Ask the cluster to remove this node on graceful shutdown.
    pub leave_on_shutdown: bool,
    pub heartbeat_interval: Duration,
    pub retention_bytes: Option<u64>,
    pub retention_age: Option<Duration>,
    /// Gossip discovery; off when `None` (membership then changes only through `--join` and
    /// the admin API).
    pub gossip: Option<GossipConfig>,
}

impl NodeConfig {
    /// A configuration for tests and embedding: a node on `listen_addr` (advertised as given)
    /// with its data in `data_dir`, everything else at the defaults.
    pub fn new(
        node_id: u64,
        data_dir: PathBuf,
        listen_addr: SocketAddr,
        tls: TlsFiles,
        acl_policy_file: PathBuf,
    ) -> Self {
        NodeConfig {
            node_id,
            data_dir,
            listen_addr,
            advertise_addr: listen_addr.to_string(),
            http_listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls,
            acl_model_file: None,
            acl_policy_file,
            log: LogConfig::default(),
            bootstrap: false,
            join: Vec::new(),
            leave_on_shutdown: false,
            heartbeat_interval: Duration::from_millis(150),
            retention_bytes: None,
            retention_age: None,
            gossip: None,
        }
    }
}

impl NodeConfig {
    /// Validates the flags once, at start-up.
    pub fn from_args(args: &NodeArgs) -> Result<Self> {
        let node_id = match args.node_id {
            Some(id) => id,
            None => {
                let hostname = hostname();
                node_id_from_hostname(&hostname).ok_or(ConfigError::NoNodeId { hostname })?
            }
        };
        let advertise_addr = match &args.advertise_addr {
            Some(addr) => addr.clone(),
            None => format!("{}:{}", hostname(), args.listen_addr.port()),
        };
        if !advertise_addr.contains(':') {
            return Err(invalid(
                "--advertise-addr",
                format!("`{advertise_addr}` must be host:port"),
            ));
        }
        let max_record_bytes = u32::try_from(args.max_record_bytes).map_err(|_| {
            invalid(
                "--max-record-bytes",
                format!("{} is larger than 4 GiB", args.max_record_bytes),
            )
        })?;
        if args.max_record_bytes == 0 {
            return Err(invalid("--max-record-bytes", "must be at least 1".into()));
        }
        if args.max_record_bytes >= args.max_segment_bytes {
            return Err(invalid(
                "--max-record-bytes",
                format!(
                    "{} must be smaller than --max-segment-bytes ({})",
                    args.max_record_bytes, args.max_segment_bytes
                ),
            ));
        }
        let fsync = match args.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => FsyncPolicy::Interval(args.fsync_interval),
            FsyncMode::Never => FsyncPolicy::Never,
        };
        let log = LogConfig {
            max_store_bytes: args.max_segment_bytes,
            max_index_bytes: args.max_index_bytes,
            fsync,
            max_record_bytes,
            ..LogConfig::default()
        };
        let gossip = gossip_config(args, &advertise_addr).map_err(Error::GossipConfig)?;
        Ok(NodeConfig {
            node_id,
            data_dir: args.data_dir.clone(),
            listen_addr: args.listen_addr,
            advertise_addr,
            http_listen_addr: args.http_listen_addr,
            tls: TlsFiles::new(&args.tls_ca_file, &args.tls_cert_file, &args.tls_key_file),
            acl_model_file: args.acl_model_file.clone(),
            acl_policy_file: args.acl_policy_file.clone(),
            log,
            bootstrap: args.bootstrap,
            join: args.join.clone(),
            leave_on_shutdown: args.leave_on_shutdown,
            heartbeat_interval: args.heartbeat_interval,
            retention_bytes: args.retention_bytes,
            retention_age: args.retention_age,
            gossip,
        })
    }
}

/// Gossip runs when it is asked for: a key file, seeds, or the explicit insecure flag. Seeds
/// without a key are refused (ARCHITECTURE decision 4: gossip is authenticated unless the
/// operator says otherwise by name).
fn gossip_config(
    args: &NodeArgs,
    advertise_addr: &str,
) -> Result<Option<GossipConfig>, MembershipError> {
    let wanted = args.gossip_key_file.is_some()
        || args.insecure_gossip_without_key
        || !args.gossip_seed.is_empty();
    if !wanted {
        return Ok(None);
    }
    let security = GossipSecurity::from_flags(
        args.gossip_key_file.as_deref(),
        args.insecure_gossip_without_key,
    )?;
    let advertise = match &args.gossip_advertise_addr {
        Some(addr) => addr.clone(),
        None => {
            let host = advertise_addr
                .rsplit_once(':')
                .map_or(advertise_addr, |(host, _)| host);
            format!("{host}:{}", args.gossip_listen_addr.port())
        }
    };
    Ok(Some(GossipConfig {
        listen_addr: args.gossip_listen_addr,
        advertise_addr: advertise,
        seeds: args.gossip_seed.clone(),
        security,
        interval: args.gossip_interval,
    }))
}

fn invalid(option: &'static str, reason: String) -> Error {
    Error::Config(ConfigError::Invalid { option, reason })
}

async fn bind(port: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { port, addr, source })
}

fn local_addr(port: &'static str, listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|source| Error::Bind { port, addr, source })
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs a node until SIGTERM or SIGINT, then shuts it down gracefully.
pub async fn run(config: NodeConfig) -> Result<()> {
    let node = RunningNode::start(config).await?;
    let fatal = node.raft.fatal();
    let gossip_stopped = node.gossip.as_ref().map(|g| g.membership.stopped());
    let gossip_failed = async move {
        match gossip_stopped {
            Some(stopped) => match stopped.await {
                Err(e) => e.to_string(),
                Ok(()) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown_signal() => node.shutdown().await,
        reason = fatal => {
            // NB: never keep serving after a storage failure (e.g. a failed fsync): the data on
            // disk is the truth; a restart recovers from it.
            tracing::error!(%reason, "fatal error; exiting so the node restarts from disk");
            Err(Error::Fatal(reason))
        }
        reason = gossip_failed => {
            tracing::error!(%reason, "gossip stopped; exiting so the node restarts");
            Err(Error::GossipStopped(reason))
        }
    }
}

/// A started node: its servers run in the background until [`RunningNode::shutdown`].
pub struct RunningNode {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    tls_files: ReloadingTlsFiles,
    authorizer: CasbinAuthorizer,
    metrics: Metrics,
    raft: Arc<RaftNode>,
    gossip: Option<RunningGossip>,
    leave_on_shutdown: bool,
    health: tonic_health::server::HealthReporter,
    readiness: watch::Sender<Readiness>,
    /// The one stop signal: ends never-ending streams and starts both servers' drains.
    closing: Closing,
    grpc_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Opens the log and starts serving. Listen addresses with port 0 get a free port
    /// ([`RunningNode::grpc_addr`] says which).
    pub async fn start(config: NodeConfig) -> Result<Self> {
        tls::install_default_crypto_provider();
        let metrics = Metrics::new(config.node_id);

        let tls_files =
            ReloadingTlsFiles::load(config.tls.clone()).map_err(|source| Error::Tls {
                files: Box::new(config.tls.clone()),
                source,
            })?;
        let mut background = vec![tls_files.spawn_watcher(RELOAD_INTERVAL)];
        metrics
            .set_certificate_not_after(CertificateRole::Node, unix_seconds(tls_files.not_after()));
        let authorizer =
            CasbinAuthorizer::from_files(config.acl_model_file.as_deref(), &config.acl_policy_file)
                .await
                .map_err(|source| Error::Acl {
                    path: config.acl_policy_file.clone(),
                    source,
                })?;
        background.push(authorizer.spawn_watcher(RELOAD_INTERVAL));
        let access = AccessControl::new(Arc::new(authorizer.clone()));

        let raft = RaftNode::start(
            RaftNodeConfig {
                log: config.log.clone(),
                heartbeat_interval: config.heartbeat_interval,
                retention_bytes: config.retention_bytes,
                retention_age: config.retention_age,
                // A node listening on one address also dials its peers from it.
                source_ip: Some(config.listen_addr.ip()).filter(|ip| !ip.is_unspecified()),
                ..RaftNodeConfig::new(
                    config.node_id,
                    config.advertise_addr.clone(),
                    config.data_dir.clone(),
                )
            },
            tls_files.clone(),
            metrics.clone(),
        )
        .await
        .map_err(|source| Error::RaftStart {
            data_dir: config.data_dir.clone(),
            source,
        })?;
        // Shared with the join task; unwrapped again at shutdown.
        let raft = Arc::new(raft);
        {
            let log = raft.log().clone();
            metrics.register_log_stats(Arc::new(move || {
                let stats = log.stats();
                LogGauges {
                    first_offset: stats.first_offset,
                    next_offset: stats.next_offset,
                    segments: stats.segments as u64,
                    segment_bytes: stats.store_bytes + stats.index_bytes,
                }
            }));
        }

        let closing = Closing::new();
        let (readiness, readiness_rx) = watch::channel(Readiness::default());

        let http_listener = bind("HTTP", config.http_listen_addr).await?;
        let http_addr = local_addr("HTTP", &http_listener, config.http_listen_addr)?;
        let http_task = tokio::spawn(http::serve(
            http_listener,
            HttpState {
                metrics: metrics.clone(),
                readiness: readiness_rx,
            },
            closing.clone().cancelled_owned(),
        ));

        let service = LogService::new(
            raft.commit_log(),
            access.clone(),
            LogServiceLimits::default(),
        )
        .with_metrics(metrics.clone())
        .with_closing(closing.clone());
        let routes = GrpcRoutes::new(service)
            .await
            .map_err(Error::Services)?
            .add_service(
                RaftService::for_node(&raft, access.clone(), closing.clone()).into_server(),
            )
            .add_service(AdminService::new(raft.admin().clone(), access).into_server());
        let health = routes.health();
        let grpc_listener = bind("gRPC", config.listen_addr).await?;
        let grpc_addr = local_addr("gRPC", &grpc_listener, config.listen_addr)?;
        let incoming = tls::tls_incoming(
            grpc_listener,
            tls_files.server_config().map_err(Error::TlsServer)?,
            tls::DEFAULT_HANDSHAKE_TIMEOUT,
        );
        let grpc_task = tokio::spawn(routes.serve(
            incoming,
            metrics.clone(),
            closing.clone().cancelled_owned(),
        ));
        background.push(tokio::spawn(forward_readiness(
            raft.readiness(),
            readiness.clone(),
        )));
        if config.bootstrap {
            match raft.bootstrap_if_new().await {
                Ok(true) => tracing::info!("bootstrapped a new cluster"),
                Ok(false) => tracing::info!("already initialized; --bootstrap has nothing to do"),
                Err(e) => return Err(Error::Bootstrap(e)),
            }
        }
        if !config.join.is_empty() {
            let raft = Arc::clone(&raft);
            let seeds = config.join.clone();
            background.push(tokio::spawn(async move {
                if let Err(e) = raft.join(&seeds).await {
                    tracing::error!(error = %e, "joining the cluster failed");
                }
            }));
        }
        let gossip = match &config.gossip {
            Some(gossip) => Some(
                start_gossip(&config, gossip, &raft, &metrics)
                    .await
                    .map_err(Error::Gossip)?,
            ),
            None => {
                tracing::info!(
                    "gossip discovery is off (no --gossip-key-file or --gossip-seed): membership \
                     changes only through --join and the admin API"
                );
                None
            }
        };
        let log = raft.log().clone();
        tracing::info!(
            node_id = config.node_id,
            grpc = %grpc_addr,
            advertise = %config.advertise_addr,
            http = %http_addr,
            first_offset = log.first_offset(),
            next_offset = log.next_offset(),
            "node is serving"
        );
        Ok(RunningNode {
            grpc_addr,
            http_addr,
            tls_files,
            authorizer,
            metrics,
            raft,
            gossip,
            leave_on_shutdown: config.leave_on_shutdown,
            health,
            readiness,
            closing,
            grpc_task,
            http_task,
            background,
        })
    }

    /// Where the gRPC server listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the health/metrics server listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The node's TLS material (reloads from disk periodically; `reload_now` forces it).
    pub fn tls_files(&self) -> &ReloadingTlsFiles {
        &self.tls_files
    }

    /// The node's ACL (reloads from disk periodically; `reload_now` forces it).
    pub fn authorizer(&self) -> &CasbinAuthorizer {
        &self.authorizer
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Raft node behind the services.
    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }

    /// This node's gossip membership, when gossip discovery is on.
    pub fn membership(&self) -> Option<&Membership> {
        self.gossip.as_ref().map(|g| &g.membership)
    }

    /// Stops accepting, drains in-flight calls, hands leadership over, closes the log.
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!("shutting down");
        self.readiness
            .send_replace(Readiness::not_ready("shutting down"));
        if self.leave_on_shutdown {
            if let Some(gossip) = &self.gossip {
                // Tell gossip first, so the leader's reconciler does not re-add this node.
                gossip.membership.leave().await;
            }
            match self.raft.leave().await {
                Ok(()) => tracing::info!("left the cluster"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not leave the cluster before shutting down")
                }
            }
        }
        self.health
            .set_not_serving::<logcluster_api::log_v1::log_server::LogServer<LogService>>()
            .await;
        self.closing.cancel();
        let mut grpc_task = self.grpc_task;
        match tokio::time::timeout(DRAIN_PATIENCE, &mut grpc_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the gRPC server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the gRPC server task failed"),
            Err(_) => {
                tracing::warn!(
                    patience = ?DRAIN_PATIENCE,
                    "gRPC calls were still open; stopping without them"
                );
                grpc_task.abort();
            }
        }
        let _ = self.http_task.await;
        if let Some(gossip) = self.gossip {
            gossip.reconciler.shutdown().await;
            if let Err(e) = gossip.membership.shutdown().await {
                tracing::warn!(error = %e, "gossip did not stop cleanly");
            }
        }
        for task in self.background {
            task.abort();
            let _ = task.await; // drops what the task held (the join task's Raft handle)
        }
        let raft = Arc::try_unwrap(self.raft).map_err(|_| Error::RaftInUse)?;
        raft.shutdown().await.map_err(Error::RaftShutdown)?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Gossip discovery of a running node: its membership and the join reconciler.
struct RunningGossip {
    membership: Membership,
    reconciler: Reconciler,
}

/// Starts gossip once the node serves (peers may dial it as soon as they hear of it), mirrors
/// readiness into it, and starts the reconciler that acts on the leader.
async fn start_gossip(
    config: &NodeConfig,
    gossip: &GossipConfig,
    raft: &RaftNode,
    metrics: &Metrics,
) -> Result<RunningGossip, MembershipError> {
    let advertise = resolve_gossip_addr(&gossip.advertise_addr, GOSSIP_ADDR_PATIENCE).await?;
    let membership_config = MembershipConfig::new(
        config.node_id,
        config.advertise_addr.clone(),
        gossip.listen_addr,
        advertise,
        gossip.security.clone(),
    )
    .with_seeds(gossip.seeds.iter().cloned())
    .with_gossip_interval(gossip.interval);
    let mut membership = Membership::start(membership_config, metrics.clone()).await?;
    membership.mirror_readiness(raft.readiness(), |(ready, _)| *ready);
    let reconciler = Reconciler::spawn(
        Arc::new(raft.admin().clone()),
        membership.members(),
        ReconcilerConfig::default(),
    );
    Ok(RunningGossip {
        membership,
        reconciler,
    })
}

/// Mirrors the Raft node's readiness (voter, or caught-up learner) on `/readyz`.
async fn forward_readiness(
    mut raft: watch::Receiver<(bool, String)>,
    readiness: watch::Sender<Readiness>,
) {
    loop {
        let (ready, reason) = raft.borrow_and_update().clone();
        readiness.send_replace(if ready {
            Readiness::ready()
        } else {
            Readiness::not_ready(reason)
        });
        if raft.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn args(extra: &[&str]) -> NodeArgs {
        let base = [
            "lognode",
            "--node-id=1",
            "--tls-ca-file=ca.pem",
            "--tls-cert-file=node.pem",
            "--tls-key-file=node-key.pem",
            "--acl-policy-file=policy.csv",
            "--advertise-addr=10.1.2.3:8400",
        ];
        NodeArgs::try_parse_from(base.iter().chain(extra)).expect("valid flags")
    }

    #[test]
    fn gossip_is_off_unless_asked_for() {
        let config = NodeConfig::from_args(&args(&[])).expect("config");
        assert!(config.gossip.is_none());
    }

    #[test]
    fn gossip_seeds_without_a_key_are_refused_with_the_way_out() {
        let err = NodeConfig::from_args(&args(&["--gossip-seed=a:8401"]))
            .expect_err("seeds without a key");
        let text = format!("{err:#}");
        assert!(text.contains("--gossip-key-file"), "{text}");
        assert!(text.contains("--insecure-gossip-without-key"), "{text}");
    }

    #[test]
    fn gossip_advertises_the_rpc_host_on_the_gossip_port_by_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("gossip.key");
        std::fs::write(&key, "11".repeat(32)).expect("key");
        let key_flag = format!("--gossip-key-file={}", key.display());
        let config = NodeConfig::from_args(&args(&[
            &key_flag,
            "--gossip-listen-addr=0.0.0.0:9401",
            "--gossip-seed=a:8401,b:8401",
        ]))
        .expect("config");
        let gossip = config.gossip.expect("gossip on");
        assert_eq!(gossip.advertise_addr, "10.1.2.3:9401");
        assert_eq!(gossip.seeds, ["a:8401", "b:8401"]);
        assert!(matches!(gossip.security, GossipSecurity::Sealed(_)));

        let insecure = NodeConfig::from_args(&args(&["--insecure-gossip-without-key"]))
            .expect("explicitly insecure");
        assert_eq!(
            insecure.gossip.expect("gossip on").security,
            GossipSecurity::InsecurePlaintext
        );
    }
}
