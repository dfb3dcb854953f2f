//! Certificates, ACL and gossip key of a test cluster; the certificates come from the
//! workspace's test PKI ([`TestPki`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use logcluster_certs::testsuite::{LOOPBACK, TestPki};

/// The ACL of test clusters: `root` may do everything, nodes replicate and join.
pub const POLICY: &str = "\
p, root, *, produce
p, root, *, consume
p, root, *, admin
p, node, *, replicate
p, node, *, admin
p, node, *, produce
p, node, *, consume
p, producer, *, produce
p, consumer, *, consume
";

/// Why a cluster's files could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClusterPkiError {
    /// Issuing or writing a certificate failed.
    #[error("test certificates: {0}")]
    Certificates(#[from] logcluster_certs::Error),
    /// Writing the policy or the gossip key failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Paths of a cluster's PEM files, policy and gossip key.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    /// The CA's private key (for tests that hand the CA to another issuer, e.g. the operator).
    pub ca_key: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub policy: PathBuf,
    pub gossip_key: PathBuf,
}

impl ClusterPki {
    /// A CA (key kept as `ca-key.pem`), one node certificate valid for every IP in `ips`,
    /// localhost and `node_dns_names`, `root`, `producer` and `consumer` clients, the test
    /// policy plus `policy_lines`, and a random gossip key.
    pub fn create(
        dir: &Path,
        ips: &[Ipv4Addr],
        node_dns_names: &[String],
        policy_lines: &[&str],
    ) -> Result<Self, ClusterPkiError> {
        let pki = TestPki::in_dir(dir)?;
        let ca_key = pki.write_ca_key()?;
        let node_ips: Vec<IpAddr> = ips
            .iter()
            .map(|ip| IpAddr::V4(*ip))
            .chain([LOOPBACK])
            .collect();
        let node = pki.node("node", "node", &node_ips, node_dns_names)?;
        let root = pki.client("root")?;
        for subject in ["producer", "consumer"] {
            pki.client(subject)?;
        }
        let write = |path: PathBuf, contents: String| {
            std::fs::write(&path, contents)
                .map(|()| path.clone())
                .map_err(|source| ClusterPkiError::Write { path, source })
        };
        let mut policy_text = POLICY.to_owned();
        for line in policy_lines {
            policy_text.push_str(line);
            policy_text.push('\n');
        }
        let policy = write(dir.join("policy.csv"), policy_text)?;
        let key: [u8; 32] = rand::random();
        let gossip_key = write(
            dir.join("gossip.key"),
            key.iter().map(|b| format!("{b:02x}")).collect(),
        )?;
        Ok(ClusterPki {
            dir: dir.to_owned(),
            ca: pki.ca_path(),
            ca_key,
            node_cert: node.cert,
            node_key: node.key,
            client_cert: root.cert,
            client_key: root.key,
            policy,
            gossip_key,
        })
    }
}
