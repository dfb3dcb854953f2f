//! Fixtures: a throwaway PKI, a node started through the real wiring on loopback, and
//! clients with chosen certificates.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use logcluster_api::log_v1::log_client::LogClient as RawClient;
use logcluster_certs::{
    CertificateAuthority, CertificateRequest, IssuedCertificate, write_pem_files,
};
use logcluster_node::agent::{NodeConfig, RunningNode};
use logcluster_node::auth::tls::TlsFiles;
use logcluster_node::log::{FsyncPolicy, LogConfig};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The generated client over a TLS channel.
pub type RawLog = RawClient<Channel>;

pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// The default ACL of the tests: who may do what.
pub const POLICY: &str = "\
p, root, *, produce
p, root, *, consume
p, producer, *, produce
p, consumer, *, consume
";

/// A CA with helpers to issue certificates into a directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertificateAuthority,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let ca = CertificateAuthority::generate("test CA", 30 * DAY).expect("CA");
        write_pem_files(dir, "ca", ca.cert_pem(), None).expect("write CA");
        Pki {
            dir: dir.to_owned(),
            ca,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn issue(&self, name: &str, request: &CertificateRequest) -> IssuedCertificate {
        let issued = self.ca.issue(request).expect("issue");
        write_pem_files(&self.dir, name, &issued.cert_pem, Some(&issued.key_pem)).expect("write");
        issued
    }

    /// A node certificate for localhost / 127.0.0.1 written as `<name>.pem`.
    pub fn node_cert(&self, name: &str) -> IssuedCertificate {
        self.issue(
            name,
            &CertificateRequest::node(
                "node",
                ["localhost"],
                [IpAddr::V4(Ipv4Addr::LOCALHOST)],
                DAY,
            ),
        )
    }

    pub fn client_cert(&self, subject: &str) -> IssuedCertificate {
        self.issue(subject, &CertificateRequest::client(subject, DAY))
    }
}

/// A node on loopback with its own data directory and PKI.
pub struct TestNode {
    pub dir: TempDir,
    pub pki: Pki,
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
        let pki = Pki::new(&dir.path().join("certs"));
        pki.node_cert("node");
        for subject in ["root", "producer", "consumer", "nobody"] {
            pki.client_cert(subject);
        }
        let policy_path = dir.path().join("policy.csv");
        std::fs::write(&policy_path, options.policy).expect("policy");
        let mut config = NodeConfig::new(
            0,
            dir.path().join("data"),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            TlsFiles::new(
                pki.ca_path(),
                pki.dir.join("node.pem"),
                pki.dir.join("node-key.pem"),
            ),
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
            dir,
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
        tls_with(&self.pki.ca_path(), &self.pki.dir, Some(name)).domain_name("localhost")
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
        http_get(self.running().http_addr(), path).await
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

/// A minimal HTTP/1.1 GET (the health port is plaintext).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
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
        http_get(addr, "/readyz").await.0 == 200
    })
    .await;
}
