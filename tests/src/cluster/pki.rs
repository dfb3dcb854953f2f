//! Certificates, ACL and gossip key of a test cluster, issued with `logcluster-certs`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use logcluster_certs::{CertificateAuthority, CertificateRequest, write_pem_files};

const VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

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
    /// localhost and `node_dns_names`, a `root` client, the test policy plus `policy_lines`,
    /// and a random gossip key.
    pub fn create(
        dir: &Path,
        ips: &[Ipv4Addr],
        node_dns_names: &[String],
        policy_lines: &[&str],
    ) -> Result<Self, String> {
        let ca = CertificateAuthority::generate("LogCluster test CA", VALIDITY)
            .map_err(|e| e.to_string())?;
        write_pem_files(dir, "ca", ca.cert_pem(), Some(ca.key_pem())).map_err(|e| e.to_string())?;
        let node = ca
            .issue(&CertificateRequest::node(
                "node",
                std::iter::once("localhost".to_owned()).chain(node_dns_names.iter().cloned()),
                ips.iter()
                    .map(|ip| IpAddr::V4(*ip))
                    .chain([IpAddr::V4(Ipv4Addr::LOCALHOST)]),
                VALIDITY,
            ))
            .map_err(|e| e.to_string())?;
        write_pem_files(dir, "node", &node.cert_pem, Some(&node.key_pem))
            .map_err(|e| e.to_string())?;
        for subject in ["root", "producer", "consumer"] {
            let client = ca
                .issue(&CertificateRequest::client(subject, VALIDITY))
                .map_err(|e| e.to_string())?;
            write_pem_files(dir, subject, &client.cert_pem, Some(&client.key_pem))
                .map_err(|e| e.to_string())?;
        }
        let policy = dir.join("policy.csv");
        let mut policy_text = POLICY.to_owned();
        for line in policy_lines {
            policy_text.push_str(line);
            policy_text.push('\n');
        }
        std::fs::write(&policy, policy_text).map_err(|e| e.to_string())?;
        let gossip_key = dir.join("gossip.key");
        let key: [u8; 32] = rand::random();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&gossip_key, hex).map_err(|e| e.to_string())?;
        Ok(ClusterPki {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            node_cert: dir.join("node.pem"),
            node_key: dir.join("node-key.pem"),
            client_cert: dir.join("root.pem"),
            client_key: dir.join("root-key.pem"),
            policy,
            gossip_key,
        })
    }
}
