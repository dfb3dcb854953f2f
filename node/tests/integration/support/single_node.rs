//! A node started through the real wiring on loopback, with its own test PKI, and clients
//! with chosen certificates.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use logcluster_api::log_v1::log_client::LogClient as RawClient;
use logcluster_certs::testsuite::{LOOPBACK, TestCert, TestPki};
use logcluster_node::agent::{NodeConfig, RunningNode};
use logcluster_node::log::{FsyncPolicy, LogConfig};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The generated client over a TLS channel.
pub type RawLog = RawClient<Channel>;

/// The default ACL of the tests: who may do what.
pub const POLICY: &str = "\
p, root, *, produce
p, root, *, consume
p, producer, *, produce
p, consumer, *, consume
";

/// A node on loopback with its own data directory and PKI.
pub struct TestNode {
    /// Holds the node's data, certificates and policy; removed when the test ends.
    _dir: TempDir,
    pub pki: TestPki,
    pub node: Option<RunningNode>,
    pub policy_path: PathBuf,
    pub config: NodeConfig,
}

pub struct Options {
    pub max_record_bytes: u32,
    pub policy: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_record_bytes: 1 << 20,
            policy: POLICY,
        }
    }
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::in_dir(dir.path().join("certs")).expect("test PKI");
        let node_cert = issue_node_cert(&pki);
        for subject in ["root", "producer", "consumer", "nobody"] {
            pki.client(subject).expect("client certificate");
        }
        let policy_path = dir.path().join("policy.csv");
        std::fs::write(&policy_path, options.policy).expect("policy");
        let mut config = NodeConfig::new(
            0,
            dir.path().join("data"),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            super::tls_files(&node_cert),
            policy_path.clone(),
        );
        // A single-voter cluster: it elects itself and commits on its own fsync.
        config.bootstrap = true;
        config.log = LogConfig {
            fsync: FsyncPolicy::Always,
            max_record_bytes: options.max_record_bytes,
            ..LogConfig::default()
        };
        let node = RunningNode::start(config.clone())
            .await
            .expect("node starts");
        wait_until_leader(&node).await;
        TestNode {
            _dir: dir,
            pki,
            node: Some(node),
            policy_path,
            config,
        }
    }

    pub fn running(&self) -> &RunningNode {
        self.node.as_ref().expect("node is running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().grpc_addr()
    }

    /// TLS settings for a client presenting `<name>.pem` from this node's PKI.
    pub fn tls_as(&self, name: &str) -> ClientTlsConfig {
        tls_with(&self.pki.ca_path(), self.pki.dir(), Some(name)).domain_name("localhost")
    }

    /// A raw generated client presenting `<name>.pem`.
    pub async fn client_as(&self, name: &str) -> RawClient<Channel> {
        let channel = self.try_channel(self.tls_as(name)).await.expect("connect");
        RawClient::new(channel)
    }

    pub async fn try_channel(
        &self,
        tls: ClientTlsConfig,
    ) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("https://{}", self.addr()))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    /// GET on the health/metrics port.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        super::http_get(self.running().http_addr(), path).await
    }

    /// Issues the node a new certificate, overwriting `node.pem` / `node-key.pem` (the node
    /// picks it up on its next reload).
    pub fn renew_node_cert(&self) -> TestCert {
        issue_node_cert(&self.pki)
    }

    /// Stops the node (if running) and starts it again on the same data and certificates.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let node = RunningNode::start(self.config.clone())
            .await
            .expect("node restarts");
        wait_until_leader(&node).await;
        self.node = Some(node);
    }

    pub async fn shutdown(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Client TLS trusting `ca`, presenting `<dir>/<name>.pem` when given.
pub fn tls_with(ca: &Path, dir: &Path, name: Option<&str>) -> ClientTlsConfig {
    let ca_pem = std::fs::read(ca).expect("ca");
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    match name {
        Some(name) => {
            let cert = std::fs::read(dir.join(format!("{name}.pem"))).expect("cert");
            let key = std::fs::read(dir.join(format!("{name}-key.pem"))).expect("key");
            config.identity(Identity::from_pem(cert, key))
        }
        None => config,
    }
}

/// The node certificate (`node.pem`, subject `node`) for localhost / 127.0.0.1.
fn issue_node_cert(pki: &TestPki) -> TestCert {
    pki.node("node", "node", &[LOOPBACK], &[])
        .expect("node certificate")
}

/// The `next_offset` the server reports through an OUT_OF_RANGE refusal.
pub async fn committed_end(client: &mut RawClient<Channel>) -> u64 {
    let status = client
        .consume(logcluster_api::log_v1::ConsumeRequest {
            offset: u64::MAX,
            end_offset: 0,
        })
        .await
        .expect_err("no record at u64::MAX");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    let details = tonic_types::StatusExt::get_error_details(&status);
    let info = details.error_info().expect("ErrorInfo detail");
    info.metadata["next_offset"]
        .parse()
        .expect("next_offset is a number")
}

/// Waits (bounded) for `check` to hold, polling every 20 ms.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the node leads its single-voter cluster, has applied its own first
/// entries (so the commit watermark stands still until a client writes) and reports ready.
async fn wait_until_leader(node: &RunningNode) {
    let raft = node.raft().raft().clone();
    raft.wait(Some(Duration::from_secs(20)))
        .metrics(
            |m| {
                m.current_leader == Some(0)
                    && m.last_log_index.is_some()
                    && m.last_applied.as_ref().map(|id| id.index) == m.last_log_index
            },
            "the single node leads and has applied its own entries",
        )
        .await
        .expect("the node becomes leader");
    let addr = node.http_addr();
    eventually("/readyz", || async move {
        super::http_get(addr, "/readyz").await.0 == 200
    })
    .await;
}
