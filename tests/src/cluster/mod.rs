//! A cluster of real `lognode` processes on loopback (tier 3 of docs/testing.md).
//!
//! Node *i* of a cluster listens on `127.0.<subnet>.<i+1>` with the default ports (8400 gRPC,
//! 8401 gossip, 8402 HTTP), so clusters of tests running in parallel never share a port: each
//! test picks its own subnet. Every node has its own data directory and certificates issued by
//! the cluster's CA; clients connect with the `root` (produce + consume + admin) certificate.
//! Faults: SIGKILL, SIGSTOP/SIGCONT, restart, and cutting a stopped node's files back.

mod error;
mod pki;
mod workload;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{ClusterStatusRequest, ClusterStatusResponse};
use logcluster_api::{ClientConfig, ClientTls, LogClient};
use tonic::transport::Channel;

use crate::history::NodeLog;
use crate::k8s::ChildProcess;
use crate::read_back;
pub use error::{ClusterError, Result};
pub use pki::{ClusterPki, ClusterPkiError};
pub use workload::{Workload, outcome_of};

/// gRPC port of every node.
pub const GRPC_PORT: u16 = 8400;
/// Gossip port of every node.
pub const GOSSIP_PORT: u16 = 8401;
/// Health/metrics port of every node.
pub const HTTP_PORT: u16 = 8402;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of nodes started by [`ProcessCluster::start`].
    pub nodes: usize,
    /// Third octet of the nodes' loopback addresses: unique per test.
    pub subnet: u8,
    /// `--fsync` of every node.
    pub fsync: &'static str,
    /// How nodes find each other: Raft join through node 0 (`--join`) or gossip seeds.
    pub discovery: Discovery,
    /// Extra flags for every node.
    pub extra_args: Vec<String>,
    /// Node 0 runs `--bootstrap`; when false the cluster is initialized through the admin API
    /// (as the operator does).
    pub bootstrap: bool,
    /// DNS names the node certificate holds besides `localhost` (e.g. pod names).
    pub node_dns_names: Vec<String>,
    /// ACL lines besides the test policy (e.g. `p, operator, *, admin`).
    pub extra_policy: Vec<String>,
}

/// How nodes beyond the first become members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// `lognode --join <node 0>` (admin AddNode).
    Join,
    /// `--gossip-seed <node 0>`: the leader adds nodes it discovers.
    Gossip,
}

impl ClusterSpec {
    pub fn new(nodes: usize, subnet: u8) -> Self {
        ClusterSpec {
            nodes,
            subnet,
            fsync: "always",
            discovery: Discovery::Join,
            extra_args: Vec::new(),
            bootstrap: true,
            node_dns_names: Vec::new(),
            extra_policy: Vec::new(),
        }
    }
}

/// One node of the cluster.
pub struct NodeProcess {
    pub id: u64,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    process: Option<ChildProcess>,
    paused: bool,
    /// Flags of this node only; a `--flag=value` here replaces the cluster's default for it.
    extra_args: Vec<String>,
}

impl NodeProcess {
    /// `ip:8400`.
    pub fn grpc_addr(&self) -> String {
        format!("{}:{GRPC_PORT}", self.ip)
    }

    pub fn http_addr(&self) -> String {
        format!("{}:{HTTP_PORT}", self.ip)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    /// The last `lines` lines of the log that are not per-request access lines: what a failed
    /// test needs (warnings, elections, membership changes) is otherwise drowned by the
    /// workload's `rpc finished` lines.
    pub fn log_tail_without_requests(&self, lines: usize) -> String {
        crate::k8s::process::log_tail_where(&self.log_path, lines, |line| {
            !line.contains(r#""message":"rpc finished""#)
        })
    }
}

/// The `lognode` binary built alongside the tests (`<target>/<profile>/lognode`).
pub fn lognode_binary() -> Result<PathBuf> {
    binary("lognode")
}

/// The `logctl` binary built alongside the tests.
pub fn logctl_binary() -> Result<PathBuf> {
    binary("logctl")
}

fn binary(name: &str) -> Result<PathBuf> {
    if let Ok(path) = std::env::var(format!("LOGCLUSTER_{}_BIN", name.to_ascii_uppercase())) {
        return Ok(PathBuf::from(path));
    }
    // Test binaries live in <target>/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().map_err(ClusterError::CurrentExe)?;
    let Some(profile_dir) = exe.parent().and_then(Path::parent) else {
        return Err(ClusterError::TestBinaryLocation { exe });
    };
    let path = profile_dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(ClusterError::BinaryMissing { path })
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped child.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// A cluster of `lognode` processes.
pub struct ProcessCluster {
    pub spec: ClusterSpec,
    pub dir: tempfile::TempDir,
    pub pki: ClusterPki,
    pub nodes: Vec<NodeProcess>,
}

impl ProcessCluster {
    /// Starts `spec.nodes` nodes: node 0 bootstraps, the others join; waits until all are
    /// voters of one cluster with a leader.
    pub async fn start(spec: ClusterSpec) -> Result<Self> {
        let mut cluster = Self::create(spec.clone())?;
        for _ in 0..spec.nodes {
            cluster.add_node_process()?;
        }
        cluster
            .wait_for_voters(spec.nodes, Duration::from_secs(60))
            .await?;
        Ok(cluster)
    }

    /// The directory and certificates of a cluster, without any node yet (nodes are added with
    /// [`ProcessCluster::add_node_process`]; `spec.nodes` is not used).
    pub fn create(spec: ClusterSpec) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("logcluster-{}-", spec.subnet))
            .tempdir()
            .map_err(|source| ClusterError::Io {
                action: "creating a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let ips: Vec<Ipv4Addr> = (0..16)
            .map(|i| Ipv4Addr::new(127, 0, spec.subnet, i + 1))
            .collect();
        let policy: Vec<&str> = spec.extra_policy.iter().map(String::as_str).collect();
        let pki = ClusterPki::create(
            &dir.path().join("certs"),
            &ips,
            &spec.node_dns_names,
            &policy,
        )?;
        Ok(ProcessCluster {
            spec,
            dir,
            pki,
            nodes: Vec::new(),
        })
    }

    /// Starts one more node (id = next index) that joins the running cluster.
    pub fn add_node_process(&mut self) -> Result<usize> {
        self.add_node_process_with(Vec::new())
    }

    /// Like [`ProcessCluster::add_node_process`], with flags for this node only (e.g. another
    /// `--gossip-key-file=`).
    pub fn add_node_process_with(&mut self, extra_args: Vec<String>) -> Result<usize> {
        let index = self.nodes.len();
        let ip = Ipv4Addr::new(127, 0, self.spec.subnet, index as u8 + 1);
        let data_dir = self.dir.path().join(format!("node-{index}"));
        std::fs::create_dir_all(&data_dir).map_err(|source| ClusterError::Io {
            action: "creating",
            path: data_dir.clone(),
            source,
        })?;
        let node = NodeProcess {
            id: index as u64,
            ip,
            log_path: self.dir.path().join(format!("node-{index}.log")),
            data_dir,
            process: None,
            paused: false,
            extra_args,
        };
        self.nodes.push(node);
        self.spawn(index)?;
        Ok(index)
    }

    fn node_args(&self, index: usize) -> Vec<String> {
        let node = &self.nodes[index];
        let first = &self.nodes[0];
        let mut args = vec![
            format!("--node-id={}", node.id),
            format!("--data-dir={}", node.data_dir.display()),
            format!("--listen-addr={}:{GRPC_PORT}", node.ip),
            format!("--advertise-addr={}:{GRPC_PORT}", node.ip),
            format!("--gossip-listen-addr={}:{GOSSIP_PORT}", node.ip),
            format!("--gossip-advertise-addr={}:{GOSSIP_PORT}", node.ip),
            format!("--http-listen-addr={}:{HTTP_PORT}", node.ip),
            format!("--tls-ca-file={}", self.pki.ca.display()),
            format!("--tls-cert-file={}", self.pki.node_cert.display()),
            format!("--tls-key-file={}", self.pki.node_key.display()),
            format!("--acl-policy-file={}", self.pki.policy.display()),
            format!("--gossip-key-file={}", self.pki.gossip_key.display()),
            format!("--fsync={}", self.spec.fsync),
            "--heartbeat-interval=100ms".into(),
            "--log-format=json".into(),
            "--log-level=info,openraft=warn".into(),
        ];
        match self.spec.discovery {
            Discovery::Join => {
                if index == 0 {
                    if self.spec.bootstrap {
                        args.push("--bootstrap".into());
                    }
                } else {
                    args.push(format!("--join={}:{GRPC_PORT}", first.ip));
                }
            }
            Discovery::Gossip => {
                if index == 0 && self.spec.bootstrap {
                    args.push("--bootstrap".into());
                }
                args.push(format!("--gossip-seed={}:{GOSSIP_PORT}", first.ip));
            }
        }
        args.extend(self.spec.extra_args.iter().cloned());
        // A node's own `--flag=value` replaces the cluster-wide one.
        let flag = |arg: &String| {
            arg.split_once('=')
                .map_or(arg.clone(), |(f, _)| f.to_owned())
        };
        let own: Vec<String> = node.extra_args.iter().map(flag).collect();
        args.retain(|arg| !own.contains(&flag(arg)));
        args.extend(node.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let mut command = Command::new(lognode_binary()?);
        command
            .args(self.node_args(index))
            .env("RUST_BACKTRACE", "1");
        let node = &mut self.nodes[index];
        // Keep earlier runs' output: append a marker and reopen for append via a new file name.
        let log = node.log_path.with_extension(format!(
            "{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        let process =
            ChildProcess::spawn(&format!("lognode-{index}"), command, &log).map_err(|source| {
                ClusterError::Spawn {
                    node: index,
                    source,
                }
            })?;
        node.log_path = log;
        node.process = Some(process);
        node.paused = false;
        Ok(())
    }

    /// kill -9.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            signal(process.pid(), libc::SIGKILL);
            process.stop(); // reaps
        }
    }

    /// Graceful stop (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            if self.nodes[index].paused {
                signal(process.pid(), libc::SIGCONT);
            }
            process.stop();
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&mut self, index: usize) {
        if let Some(pid) = self.nodes[index].pid() {
            signal(pid, libc::SIGSTOP);
            self.nodes[index].paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, index: usize) {
        if let Some(pid) = self.nodes[index].pid() {
            signal(pid, libc::SIGCONT);
            self.nodes[index].paused = false;
        }
    }

    /// Starts a stopped node again on its data directory (it does not bootstrap or join again:
    /// it is already a member).
    pub fn restart(&mut self, index: usize) -> Result<()> {
        self.stop(index);
        self.spawn(index)
    }

    /// TLS settings of the `root` client.
    pub fn client_tls(&self) -> Result<ClientTls> {
        ClientTls::from_files(&self.pki.ca, &self.pki.client_cert, &self.pki.client_key)
            .map_err(ClusterError::ClientTls)
    }

    /// A leader-aware client seeded with every running node.
    pub async fn client(&self) -> Result<LogClient> {
        let seeds = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(NodeProcess::grpc_addr)
            .collect();
        let mut config = ClientConfig::new(seeds, self.client_tls()?);
        config.retry_deadline = Duration::from_secs(30);
        config.request_timeout = Duration::from_secs(5);
        LogClient::connect(config)
            .await
            .map_err(ClusterError::Client)
    }

    /// A channel to one node (no routing).
    pub async fn channel_to(&self, index: usize) -> Result<Channel> {
        let channel_error = |source| ClusterError::Channel {
            node: index,
            source,
        };
        let client = LogClient::connect(ClientConfig::new(
            vec![self.nodes[index].grpc_addr()],
            self.client_tls()?,
        ))
        .await
        .map_err(channel_error)?;
        client
            .channel(&self.nodes[index].grpc_addr())
            .await
            .map_err(channel_error)
    }

    /// `ClusterStatus` as node `index` answers it.
    pub async fn status_of(&self, index: usize) -> Result<ClusterStatusResponse> {
        let channel = self.channel_to(index).await?;
        let mut request = tonic::Request::new(ClusterStatusRequest {});
        request.set_timeout(Duration::from_secs(3));
        AdminClient::new(channel)
            .cluster_status(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ClusterError::Rpc {
                node: index,
                call: "ClusterStatus",
                status: Box::new(status),
            })
    }

    /// The leader's index: the leader of the highest term the running, unpaused nodes report,
    /// provided that node is running, unpaused and itself says it leads. A follower's word alone
    /// is not enough: it names a killed leader until its election timeout, and that node may
    /// already be running again (restarted, not even listening yet) without leading anything.
    pub async fn leader(&self) -> Option<usize> {
        let mut statuses = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if !node.is_running() || node.paused {
                continue;
            }
            if let Ok(status) = self.status_of(index).await {
                statuses.push((index, status));
            }
        }
        let (term, leader_id) = statuses
            .iter()
            .filter_map(|(_, status)| Some((status.term, status.leader_id?)))
            .max()?;
        let index = self.nodes.iter().position(|n| n.id == leader_id)?;
        let claim = statuses
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, status)| status)?;
        (claim.leader_id == Some(leader_id) && claim.term >= term).then_some(index)
    }

    /// Waits until a leader other than `not` is known (e.g. after killing `not`).
    pub async fn wait_for_leader(&self, not: Option<usize>, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let last_seen = match self.leader().await {
                Some(leader) if Some(leader) != not && self.nodes[leader].is_running() => {
                    return Ok(leader);
                }
                Some(leader) => format!("node {leader} leads"),
                None => String::from("no leader"),
            };
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    awaited: match not {
                        Some(not) => format!("a leader other than node {not}"),
                        None => String::from("a leader"),
                    },
                    timeout,
                    last_seen,
                    logs: self.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the leader reports `count` voters and no membership change in flight (neither
    /// a joint configuration nor an appended, uncommitted one — the operator's definition).
    pub async fn wait_for_voters(&self, count: usize, timeout: Duration) -> Result<()> {
        use logcluster_api::admin_v1::MemberRole;
        let deadline = Instant::now() + timeout;
        let mut last_seen = String::from("no leader answered");
        loop {
            if let Some(leader) = self.leader().await
                && let Ok(status) = self.status_of(leader).await
            {
                last_seen = format!("leader {leader} last reported {status:?}");
                let voters = status
                    .members
                    .iter()
                    .filter(|m| {
                        matches!(
                            MemberRole::try_from(m.role),
                            Ok(MemberRole::Leader | MemberRole::Voter)
                        )
                    })
                    .count();
                let settled = !status.membership_changing
                    && status.membership_log_index <= status.commit_index;
                if voters == count && settled {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    awaited: format!("{count} voters and no membership change in flight"),
                    timeout,
                    last_seen,
                    logs: self.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every committed data record node `index` holds, read from it alone.
    pub async fn read_all_from(&self, index: usize) -> Result<NodeLog> {
        Ok(
            read_back::committed_records(self.channel_to(index).await?, &format!("node-{index}"))
                .await?,
        )
    }

    /// Waits until every running node has applied everything the leader has committed. Until
    /// the deadline, a node that cannot be reached yet (e.g. restarted and still opening its
    /// log) or a leader change only means "not yet"; the error names what was still missing.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(missing) = self.missing_for_convergence().await else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    awaited: String::from(
                        "every running node to apply what the leader has committed",
                    ),
                    timeout,
                    last_seen: missing,
                    logs: self.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `None` when every running node has applied what the leader has committed; else what is
    /// missing (an unreachable node or leader only means "not yet" to the caller).
    async fn missing_for_convergence(&self) -> Option<String> {
        let Some(leader) = self.leader().await else {
            return Some(String::from("no leader"));
        };
        let target = match self.status_of(leader).await {
            Ok(status) => status.commit_index,
            Err(e) => return Some(e.to_string()),
        };
        for (index, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let end = match self.committed_end_of(index).await {
                Ok(end) => end,
                Err(e) => return Some(e.to_string()),
            };
            if end <= target {
                return Some(format!(
                    "node {index} has applied up to offset {end}, the leader (node {leader}) \
                     committed {target}"
                ));
            }
        }
        None
    }

    /// The offset after the last entry node `index` serves as committed.
    pub async fn committed_end_of(&self, index: usize) -> Result<u64> {
        Ok(
            read_back::committed_end(self.channel_to(index).await?, &format!("node {index}"))
                .await?,
        )
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "--- node {i} ({}), last lines other than request lines\n{}",
                    n.log_path.display(),
                    n.log_tail_without_requests(30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.stop(index);
        }
        if std::thread::panicking() {
            // A failed test keeps its nodes' logs and data for a post-mortem; the failure
            // message names the directory.
            self.dir.disable_cleanup(true);
            eprintln!(
                "kept the failed cluster's files in {}",
                self.dir.path().display()
            );
        }
    }
}

impl ProcessCluster {
    /// Waits for every running node to hold everything committed, reads each one's log and
    /// checks the history against them (P1–P7). Returns the summary or every violation.
    pub async fn verify(
        &self,
        history: &crate::history::History,
        consumer_seen: Option<&[(u64, String)]>,
    ) -> Result<crate::history::Summary> {
        self.wait_converged(Duration::from_secs(90)).await?;
        let mut logs = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if node.is_running() {
                logs.push(self.read_all_from(index).await?);
            }
        }
        crate::history::check(&history.operations(), &logs, consumer_seen)
            .map_err(ClusterError::Violations)
    }

    /// Simulates losing writes that were never fsynced on a stopped node: cuts its newest
    /// segment back to a random point after the frame of `durable_index` (everything up to it
    /// may have been relied upon: see [`ProcessCluster::pause_and_find_durable_index`]) and
    /// appends garbage, as a torn write would leave. Returns how many bytes were cut.
    pub fn cut_unsynced_tail(&self, index: usize, durable_index: u64) -> Result<u64> {
        use std::io::Write;
        let node = &self.nodes[index];
        if node.is_running() {
            return Err(ClusterError::NodeRunning { node: index });
        }
        let io_error = |action, path: &Path| {
            let path = path.to_owned();
            move |source| ClusterError::Io {
                action,
                path,
                source,
            }
        };
        let log_dir = node.data_dir.join("log");
        let mut stores: Vec<PathBuf> = std::fs::read_dir(&log_dir)
            .map_err(io_error("listing", &log_dir))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "store"))
            .collect();
        stores.sort();
        let Some(newest) = stores.last() else {
            return Err(ClusterError::NoSegment { dir: log_dir });
        };
        let bytes = std::fs::read(newest).map_err(io_error("reading", newest))?;
        // Walk the frames (len u32 | crc u32 | index u64 | ...; a frame is 8 + len bytes) to the
        // end of the durable entry.
        let mut position = 0usize;
        let mut durable_end = 0usize;
        while position + 16 <= bytes.len() {
            let len = u32::from_le_bytes(std::array::from_fn(|i| bytes[position + i])) as usize;
            let entry_index = u64::from_le_bytes(std::array::from_fn(|i| bytes[position + 8 + i]));
            let end = position + 8 + len;
            if len == 0 || end > bytes.len() {
                break;
            }
            if entry_index <= durable_index {
                durable_end = end;
            }
            position = end;
        }
        let cut_at =
            durable_end + (rand::random::<u64>() as usize % (bytes.len() - durable_end + 1));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(newest)
            .map_err(io_error("opening", newest))?;
        file.set_len(cut_at as u64)
            .map_err(io_error("truncating", newest))?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(newest)
            .map_err(io_error("opening", newest))?;
        let garbage: Vec<u8> = (0..rand::random::<u8>() as usize % 64)
            .map(|_| rand::random())
            .collect();
        file.write_all(&garbage)
            .map_err(io_error("appending garbage to", newest))?;
        Ok((bytes.len() - cut_at) as u64)
    }

    /// Pauses node `index` (SIGSTOP: from then on it acknowledges and reveals nothing) and
    /// returns the highest log index the rest of the cluster may rely on it holding durably:
    /// what losing its un-fsynced writes must leave in place. Kill it next, then
    /// [`ProcessCluster::cut_unsynced_tail`].
    ///
    /// Only the node itself knows how far it has fsynced, and a paused node cannot be asked, so
    /// this is what it *revealed*, each part an index whose entry it had fsynced (or that is
    /// held by a majority without it) — the largest of:
    /// * the matched index the leader reports for it: followers acknowledge only appends they
    ///   have fsynced. Read once the leader no longer hears from it (no acknowledgement is
    ///   still on its way). A new leader (the paused node led) reports nothing, 0;
    /// * the commit index of every other running node, read right after the pause: what a
    ///   paused leader told its followers was committed (it counts its own fsynced entries);
    /// * the highest offset acknowledged to a produce invoked before the pause: a leader acks
    ///   only committed entries.
    ///
    /// An entry after that index was not acknowledged by the node and not revealed as
    /// committed: losing it is indistinguishable from a crash just before its fsync. (The node's
    /// own vote and everything else in its state store are not touched.)
    pub async fn pause_and_find_durable_index(
        &mut self,
        index: usize,
        history: &crate::history::History,
    ) -> Result<u64> {
        self.pause(index);
        let paused_at = history.now();
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        let mut durable = 0;
        for (other, node) in self.nodes.iter().enumerate() {
            if other == index || !node.is_running() || node.paused {
                continue;
            }
            // A node restarted a moment ago may not be listening yet: retry (bounded).
            let status = loop {
                match self.status_of(other).await {
                    Ok(status) => break status,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            durable = durable.max(status.commit_index);
        }
        let id = self.nodes[index].id;
        let matched = loop {
            let leader = self.wait_for_leader(Some(index), timeout).await?;
            let status = self.status_of(leader).await?;
            let member = status.members.iter().find(|m| m.node_id == id).ok_or(
                ClusterError::NotAMember {
                    node: index,
                    leader,
                },
            )?;
            if !member.healthy {
                break member.matched_index;
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    awaited: format!("the leader to stop hearing from paused node {index}"),
                    timeout,
                    last_seen: format!("the leader (node {leader}) still reports it healthy"),
                    logs: self.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let acked = history
            .operations()
            .iter()
            .filter(|op| op.invoked < paused_at)
            .filter_map(|op| match op.outcome {
                crate::history::Outcome::Acked(offset) => Some(offset),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Ok(durable.max(matched).max(acked))
    }
}
