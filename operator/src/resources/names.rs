//! Names, labels and DNS names of everything the operator creates for a `LogCluster`.
//!
//! One place, so that the builders, the certificate SANs, the address resolver and the tests
//! cannot disagree about what `demo-0` is called.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::LogCluster;
use crate::{Error, Result};

/// `app.kubernetes.io/name` of every object.
pub const APP_NAME: &str = "logcluster";
/// `app.kubernetes.io/managed-by` of every object (also the label the operator's watches select).
pub const MANAGED_BY: &str = "logcluster-operator";
/// Label holding the owning LogCluster's name (for listing claims and user Secrets).
pub const CLUSTER_LABEL: &str = "logcluster.io/cluster";
/// Label holding the user name on a user certificate Secret.
pub const USER_LABEL: &str = "logcluster.io/user";
/// Label saying which certificate a Secret holds (`ca`, `node`, `operator`, `user`).
pub const CERTIFICATE_LABEL: &str = "logcluster.io/certificate";
/// The one field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "logcluster-operator";
/// Name of the volume claim template (claims are `data-<cluster>-<ordinal>`).
pub const DATA_VOLUME: &str = "data";

/// gRPC port (client, peer and admin APIs, mutual TLS).
pub const GRPC_PORT: i32 = 8400;
/// Gossip port (UDP).
pub const GOSSIP_PORT: i32 = 8401;
/// Plaintext health and metrics port.
pub const HTTP_PORT: i32 = 8402;

/// The names of one LogCluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    /// The LogCluster's name; also the StatefulSet's, the client Service's and the PDB's.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
    /// Kubernetes cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

impl ClusterNames {
    /// Names for `lc`, whose namespace and name the API server always sets.
    pub fn new(lc: &LogCluster, cluster_domain: &str) -> Result<Self> {
        let namespace = lc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let cluster = lc
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingMetadata("name"))?;
        Ok(ClusterNames {
            cluster,
            namespace,
            cluster_domain: cluster_domain.to_owned(),
        })
    }

    /// The StatefulSet.
    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }
    /// The headless Service (peer DNS names, gossip seeds).
    pub fn headless_service(&self) -> String {
        format!("{}-nodes", self.cluster)
    }
    /// The client Service.
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }
    /// The PodDisruptionBudget.
    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }
    /// The ConfigMap with the node configuration and the ACL policy.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }
    /// The operator-managed CA Secret.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }
    /// The node certificate Secret (shared by every pod).
    pub fn node_tls_secret(&self) -> String {
        format!("{}-node-tls", self.cluster)
    }
    /// The operator's client certificate Secret.
    pub fn operator_tls_secret(&self) -> String {
        format!("{}-operator-tls", self.cluster)
    }
    /// The gossip key Secret.
    pub fn gossip_secret(&self) -> String {
        format!("{}-gossip", self.cluster)
    }
    /// A user's certificate Secret.
    pub fn user_secret(&self, user: &str) -> String {
        format!("{}-user-{user}", self.cluster)
    }
    /// The pod of a node.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }
    /// The volume claim of a node.
    pub fn claim(&self, ordinal: u32) -> String {
        format!("{DATA_VOLUME}-{}-{ordinal}", self.cluster)
    }
    /// `<svc>.<ns>.svc.<domain>` of a Service.
    pub fn service_fqdn(&self, service: &str) -> String {
        format!("{service}.{}.svc.{}", self.namespace, self.cluster_domain)
    }
    /// Fully qualified DNS name of a node's pod (through the headless Service).
    pub fn pod_fqdn(&self, ordinal: u32) -> String {
        format!(
            "{}.{}",
            self.pod(ordinal),
            self.service_fqdn(&self.headless_service())
        )
    }
    /// `host:port` of a node's gRPC endpoint, as the nodes advertise it.
    pub fn pod_grpc_addr(&self, ordinal: u32) -> String {
        format!("{}:{GRPC_PORT}", self.pod_fqdn(ordinal))
    }
    /// The gossip seed: the headless Service, which lists every pod, ready or not.
    pub fn gossip_seed(&self) -> String {
        format!(
            "{}:{GOSSIP_PORT}",
            self.service_fqdn(&self.headless_service())
        )
    }

    /// Labels that select this cluster's pods (StatefulSet, Services, PDB).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                self.cluster.clone(),
            ),
        ])
    }

    /// `selector_labels` as a label selector string (`status.selector`).
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Labels of every object the operator creates for this cluster.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        );
        labels.insert(
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        );
        labels.insert(CLUSTER_LABEL.to_owned(), self.cluster.clone());
        labels
    }
}

/// Every DNS name the shared node certificate must hold when the StatefulSet may have up to
/// `replicas` pods: each pod's fully qualified and short names, the Services, and localhost.
pub fn node_dns_names(names: &ClusterNames, replicas: u32) -> Vec<String> {
    let headless = names.headless_service();
    let client = names.client_service();
    let ns = &names.namespace;
    let mut dns = Vec::new();
    for ordinal in 0..replicas {
        let pod = names.pod(ordinal);
        dns.push(names.pod_fqdn(ordinal));
        dns.push(format!("{pod}.{headless}.{ns}.svc"));
        dns.push(format!("{pod}.{headless}.{ns}"));
        dns.push(format!("{pod}.{headless}"));
    }
    for service in [&headless, &client] {
        dns.push(names.service_fqdn(service));
        dns.push(format!("{service}.{ns}.svc"));
        dns.push(format!("{service}.{ns}"));
        dns.push(service.clone());
    }
    dns.push("localhost".to_owned());
    dns.sort();
    dns.dedup();
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resources::fixtures::names;

    #[test]
    fn pod_names_follow_the_statefulset_and_headless_service() {
        let n = names();
        assert_eq!(n.pod(2), "demo-2");
        assert_eq!(n.pod_fqdn(2), "demo-2.demo-nodes.prod.svc.cluster.local");
        assert_eq!(
            n.pod_grpc_addr(0),
            "demo-0.demo-nodes.prod.svc.cluster.local:8400"
        );
        assert_eq!(n.gossip_seed(), "demo-nodes.prod.svc.cluster.local:8401");
        assert_eq!(n.claim(1), "data-demo-1");
        assert_eq!(n.user_secret("alice"), "demo-user-alice");
    }

    #[test]
    fn node_certificate_names_cover_every_pod_and_service() {
        let dns = node_dns_names(&names(), 3);
        for expected in [
            "demo-0.demo-nodes.prod.svc.cluster.local",
            "demo-2.demo-nodes.prod.svc.cluster.local",
            "demo-1.demo-nodes.prod.svc",
            "demo-1.demo-nodes",
            "demo-nodes.prod.svc.cluster.local",
            "demo.prod.svc.cluster.local",
            "demo.prod.svc",
            "demo",
            "localhost",
        ] {
            assert!(
                dns.iter().any(|d| d == expected),
                "{expected} missing: {dns:?}"
            );
        }
        assert!(!dns.iter().any(|d| d.starts_with("demo-3.")), "{dns:?}");
    }

    #[test]
    fn selector_is_a_subset_of_the_labels() {
        let n = names();
        let labels = n.labels("node");
        for (k, v) in n.selector_labels() {
            assert_eq!(labels.get(&k), Some(&v));
        }
        assert_eq!(
            n.selector_string(),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=logcluster"
        );
    }
}
