//! How the operator talks to the nodes: the `admin.v1` API over mutual TLS, with the operator's
//! client certificate (CN `operator`, which the ACL grants `admin`).
//!
//! [`NodeAdmin`] is the seam: the scaling logic only sees it, tests put a scripted fake behind
//! it. Addresses come from an [`AddressResolver`]: pod DNS names inside Kubernetes
//! ([`PodDnsResolver`]), an explicit mapping elsewhere ([`StaticResolver`], e.g. local processes
//! in tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, InitializeRequest, Member,
    RemoveNodeRequest, TransferLeaderRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::certificates::ClientTls;
use crate::node_id::NodeId;
use crate::resources::config::config_hash;
use crate::resources::names::ClusterNames;
use crate::{Error, Result};

/// The admin calls the operator makes. `node`/`via` name the node the call is sent to.
#[async_trait]
pub trait NodeAdmin: Send + Sync {
    /// `ClusterStatus` on `node`.
    async fn cluster_status(&self, node: NodeId) -> Result<ClusterStatusResponse>;
    /// `Initialize` on `node` with itself as the only voter. Returns whether it initialized now
    /// (false: it already was, with the same voters).
    async fn initialize(&self, node: NodeId) -> Result<bool>;
    /// `AddNode` of `node` (promoted to voter once caught up), sent to `via` (the leader).
    async fn add_node(&self, via: NodeId, node: NodeId) -> Result<()>;
    /// `RemoveNode` of `node`, sent to `via` (the leader).
    async fn remove_node(&self, via: NodeId, node: NodeId) -> Result<()>;
    /// `TransferLeader` to `to`, sent to `via` (the current leader).
    async fn transfer_leader(&self, via: NodeId, to: NodeId) -> Result<()>;
}

/// Creates a [`NodeAdmin`] for one cluster with that cluster's credentials.
pub trait NodeConnector: Send + Sync {
    /// The admin client of the cluster `names`, authenticating with `tls`.
    fn connect(&self, names: &ClusterNames, tls: &ClientTls) -> Result<Arc<dyn NodeAdmin>>;
    /// Forgets cached connections of a deleted cluster.
    fn forget(&self, _names: &ClusterNames) {}
}

/// Where to dial a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    /// `https://host:port`.
    pub uri: String,
    /// The name the node's certificate must hold.
    pub tls_name: String,
}

/// Maps a node of a cluster to its addresses.
pub trait AddressResolver: Send + Sync {
    /// Where the operator dials node `ordinal`.
    fn endpoint(&self, names: &ClusterNames, ordinal: NodeId) -> NodeEndpoint;
    /// The address the node's peers dial (sent in `Initialize` and `AddNode`).
    fn advertise_addr(&self, names: &ClusterNames, ordinal: NodeId) -> String;
}

fn ordinal_u32(ordinal: NodeId) -> u32 {
    u32::try_from(ordinal).unwrap_or(u32::MAX)
}

/// Inside Kubernetes: the pod's DNS name through the headless Service, which the shared node
/// certificate holds.
#[derive(Debug, Clone, Default)]
pub struct PodDnsResolver;

impl AddressResolver for PodDnsResolver {
    fn endpoint(&self, names: &ClusterNames, ordinal: NodeId) -> NodeEndpoint {
        let host = names.pod_fqdn(ordinal_u32(ordinal));
        NodeEndpoint {
            uri: format!("https://{}", names.pod_grpc_addr(ordinal_u32(ordinal))),
            tls_name: host,
        }
    }

    fn advertise_addr(&self, names: &ClusterNames, ordinal: NodeId) -> String {
        names.pod_grpc_addr(ordinal_u32(ordinal))
    }
}

/// Explicit `namespace/pod → host:port` addresses (nodes outside the cluster network, e.g. local
/// processes in tests); pods without an entry fall back to their DNS names. The TLS name stays
/// the pod's DNS name, so the real node certificate still verifies.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    addresses: HashMap<(String, String), String>,
}

impl StaticResolver {
    /// An empty mapping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `namespace/pod → addr`.
    pub fn insert(&mut self, namespace: &str, pod: &str, addr: &str) {
        self.addresses
            .insert((namespace.to_owned(), pod.to_owned()), addr.to_owned());
    }

    /// Parses `namespace/pod=host:port`.
    pub fn parse_entry(&mut self, entry: &str) -> Result<()> {
        let bad = || {
            Error::Config(format!(
                "node address {entry:?} is not namespace/pod=host:port"
            ))
        };
        let (key, addr) = entry.split_once('=').ok_or_else(bad)?;
        let (namespace, pod) = key.split_once('/').ok_or_else(bad)?;
        if namespace.is_empty() || pod.is_empty() || !addr.contains(':') {
            return Err(bad());
        }
        self.insert(namespace, pod, addr);
        Ok(())
    }

    fn lookup(&self, names: &ClusterNames, ordinal: NodeId) -> Option<&String> {
        self.addresses
            .get(&(names.namespace.clone(), names.pod(ordinal_u32(ordinal))))
    }
}

impl AddressResolver for StaticResolver {
    fn endpoint(&self, names: &ClusterNames, ordinal: NodeId) -> NodeEndpoint {
        match self.lookup(names, ordinal) {
            Some(addr) => NodeEndpoint {
                uri: format!("https://{addr}"),
                tls_name: names.pod_fqdn(ordinal_u32(ordinal)),
            },
            None => PodDnsResolver.endpoint(names, ordinal),
        }
    }

    fn advertise_addr(&self, names: &ClusterNames, ordinal: NodeId) -> String {
        self.lookup(names, ordinal)
            .cloned()
            .unwrap_or_else(|| PodDnsResolver.advertise_addr(names, ordinal))
    }
}

/// [`NodeConnector`] over tonic with rustls, caching one lazily connected channel per node and
/// credential set.
pub struct GrpcConnector {
    resolver: Arc<dyn AddressResolver>,
    timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl GrpcConnector {
    /// A connector whose calls time out after `timeout` (connecting included).
    pub fn new(resolver: Arc<dyn AddressResolver>, timeout: Duration) -> Self {
        GrpcConnector {
            resolver,
            timeout,
            channels: Arc::default(),
        }
    }
}

impl NodeConnector for GrpcConnector {
    fn connect(&self, names: &ClusterNames, tls: &ClientTls) -> Result<Arc<dyn NodeAdmin>> {
        if tls.cert_pem.is_empty() || tls.key_pem.is_empty() {
            return Err(Error::Config(format!(
                "no operator client certificate for {}/{}",
                names.namespace, names.cluster
            )));
        }
        Ok(Arc::new(GrpcNodeAdmin {
            names: names.clone(),
            tls: tls.clone(),
            credentials_id: config_hash(&format!("{}{}{}", tls.ca_pem, tls.cert_pem, tls.key_pem)),
            resolver: self.resolver.clone(),
            timeout: self.timeout,
            channels: self.channels.clone(),
        }))
    }

    fn forget(&self, names: &ClusterNames) {
        let prefix = format!("{}/{}/", names.namespace, names.cluster);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|k, _| !k.starts_with(&prefix));
    }
}

struct GrpcNodeAdmin {
    names: ClusterNames,
    tls: ClientTls,
    credentials_id: String,
    resolver: Arc<dyn AddressResolver>,
    timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl GrpcNodeAdmin {
    fn pod(&self, node: NodeId) -> String {
        self.names.pod(ordinal_u32(node))
    }

    fn client(&self, node: NodeId) -> Result<AdminClient<Channel>> {
        let endpoint = self.resolver.endpoint(&self.names, node);
        let key = format!(
            "{}/{}/{node}/{}/{}",
            self.names.namespace, self.names.cluster, endpoint.uri, self.credentials_id
        );
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        // A renewed certificate changes the key: drop this node's channels made with old ones.
        let node_prefix = format!("{}/{}/{node}/", self.names.namespace, self.names.cluster);
        channels.retain(|k, _| !k.starts_with(&node_prefix) || *k == key);
        if let Some(channel) = channels.get(&key) {
            return Ok(AdminClient::new(channel.clone()));
        }
        let admin_error = |reason: String| Error::Admin {
            node: self.pod(node),
            reason,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.tls.ca_pem))
            .identity(Identity::from_pem(&self.tls.cert_pem, &self.tls.key_pem))
            .domain_name(endpoint.tls_name.clone());
        let channel = Endpoint::from_shared(endpoint.uri.clone())
            .map_err(|e| admin_error(format!("bad endpoint {}: {e}", endpoint.uri)))?
            .tls_config(tls)
            .map_err(|e| admin_error(format!("TLS configuration: {e}")))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_lazy();
        channels.insert(key, channel.clone());
        Ok(AdminClient::new(channel))
    }

    fn status_error(&self, node: NodeId, status: tonic::Status) -> Error {
        Error::Admin {
            node: self.pod(node),
            reason: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

#[async_trait]
impl NodeAdmin for GrpcNodeAdmin {
    async fn cluster_status(&self, node: NodeId) -> Result<ClusterStatusResponse> {
        let response = self
            .client(node)?
            .cluster_status(ClusterStatusRequest {})
            .await
            .map_err(|s| self.status_error(node, s))?;
        Ok(response.into_inner())
    }

    async fn initialize(&self, node: NodeId) -> Result<bool> {
        let voters = vec![Member {
            node_id: node,
            rpc_addr: self.resolver.advertise_addr(&self.names, node),
        }];
        let response = self
            .client(node)?
            .initialize(InitializeRequest { voters })
            .await
            .map_err(|s| self.status_error(node, s))?;
        Ok(response.into_inner().initialized)
    }

    async fn add_node(&self, via: NodeId, node: NodeId) -> Result<()> {
        let request = AddNodeRequest {
            node: Some(Member {
                node_id: node,
                rpc_addr: self.resolver.advertise_addr(&self.names, node),
            }),
            promote_to_voter: true,
        };
        self.client(via)?
            .add_node(request)
            .await
            .map_err(|s| self.status_error(via, s))?;
        Ok(())
    }

    async fn remove_node(&self, via: NodeId, node: NodeId) -> Result<()> {
        self.client(via)?
            .remove_node(RemoveNodeRequest { node_id: node })
            .await
            .map_err(|s| self.status_error(via, s))?;
        Ok(())
    }

    async fn transfer_leader(&self, via: NodeId, to: NodeId) -> Result<()> {
        self.client(via)?
            .transfer_leader(TransferLeaderRequest { node_id: Some(to) })
            .await
            .map_err(|s| self.status_error(via, s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resources::fixtures::names;

    #[test]
    fn pods_are_dialled_by_their_dns_names() {
        let e = PodDnsResolver.endpoint(&names(), 2);
        assert_eq!(
            e.uri,
            "https://demo-2.demo-nodes.prod.svc.cluster.local:8400"
        );
        assert_eq!(e.tls_name, "demo-2.demo-nodes.prod.svc.cluster.local");
    }

    #[test]
    fn a_static_mapping_changes_the_address_but_not_the_tls_name() {
        let mut r = StaticResolver::new();
        r.parse_entry("prod/demo-1=127.0.0.2:18400").unwrap();
        let e = r.endpoint(&names(), 1);
        assert_eq!(e.uri, "https://127.0.0.2:18400");
        assert_eq!(e.tls_name, "demo-1.demo-nodes.prod.svc.cluster.local");
        assert_eq!(r.advertise_addr(&names(), 1), "127.0.0.2:18400");
        // Unmapped pods fall back to DNS.
        assert_eq!(
            r.endpoint(&names(), 0),
            PodDnsResolver.endpoint(&names(), 0)
        );
        for bad in [
            "prod/demo-1",
            "demo-1=1.2.3.4:1",
            "/demo=1:1",
            "prod/demo-1=host",
        ] {
            assert!(r.parse_entry(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn connecting_needs_an_operator_certificate() {
        let connector = GrpcConnector::new(Arc::new(PodDnsResolver), Duration::from_secs(1));
        let tls = ClientTls {
            ca_pem: "ca".into(),
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        assert!(connector.connect(&names(), &tls).is_err());
    }
}
