//! A client of a LogCluster that runs on the node, used from the test process: it dials the
//! pods by IP.
//!
//! The test process resolves names with the host's resolver, which knows nothing of the
//! cluster's DNS; on the node's network ([`super::node::NodeRuntime`]) it can reach every pod's
//! IP. The nodes advertise their pod DNS names
//! (`demo-0.demo-nodes.default.svc.cluster.local:8400`), which are also the names their
//! certificates carry: [`PodAddresses`] keeps the name → IP map of the cluster's pods current
//! (a recreated pod has a new IP) and gives the client a [`ConnectTo`] from it, so each
//! handshake still checks a pod's certificate against its DNS name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use logcluster_api::{ClientConfig, ClientTls, ConnectTo, LogClient};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::history::NodeLog;
use crate::read_back;

/// How often the pods' addresses are listed again.
const REFRESH: Duration = Duration::from_millis(500);

/// The gRPC address node `ordinal` of LogCluster `cluster` advertises (its pod's DNS name).
pub fn advertised(cluster: &str, namespace: &str, ordinal: usize) -> String {
    format!("{cluster}-{ordinal}.{cluster}-nodes.{namespace}.svc.cluster.local:8400")
}

/// The current IPs of a LogCluster's pods, listed in the background until dropped.
pub struct PodAddresses {
    ips: Arc<RwLock<HashMap<String, String>>>,
    task: JoinHandle<()>,
}

impl Drop for PodAddresses {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodAddresses {
    /// Starts listing the pods of LogCluster `cluster` (label `app.kubernetes.io/instance`);
    /// call it from the node's runtime. A failed list keeps the last map (the API server may
    /// be busy): dialing a stale IP fails like a down server, and the client retries.
    pub fn watch(client: kube::Client, namespace: &str, cluster: &str) -> Self {
        let ips = Arc::new(RwLock::new(HashMap::new()));
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let selector =
            ListParams::default().labels(&format!("app.kubernetes.io/instance={cluster}"));
        let shared = Arc::clone(&ips);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tick.tick().await;
                let Ok(list) = pods.list(&selector).await else {
                    continue;
                };
                let current: HashMap<String, String> = list
                    .items
                    .into_iter()
                    .filter_map(|pod| Some((pod.metadata.name?, pod.status?.pod_ip?)))
                    .collect();
                match shared.write() {
                    Ok(mut map) => *map = current,
                    Err(poisoned) => *poisoned.into_inner() = current,
                }
            }
        });
        PodAddresses { ips, task }
    }

    /// Dials `<pod>.<rest>:<port>` at the pod's current IP (when known).
    pub fn connect_to(&self) -> ConnectTo {
        let ips = Arc::clone(&self.ips);
        ConnectTo::with(move |addr| {
            let (host, port) = addr.rsplit_once(':')?;
            let pod = host.split('.').next()?;
            let map = ips.read().unwrap_or_else(|e| e.into_inner());
            map.get(pod).map(|ip| format!("{ip}:{port}"))
        })
    }

    /// Waits until every pod of `pods` has an IP (bounded).
    pub async fn wait_for(&self, pods: &[String], timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing: Vec<&String> = {
                let map = self.ips.read().unwrap_or_else(|e| e.into_inner());
                pods.iter().filter(|p| !map.contains_key(*p)).collect()
            };
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no IP within {timeout:?} for the pods {missing:?}"));
            }
            tokio::time::sleep(REFRESH).await;
        }
    }
}

/// The client TLS of a user Secret the operator wrote (`ca.crt`, `tls.crt`, `tls.key`).
pub async fn user_tls(
    client: kube::Client,
    namespace: &str,
    secret: &str,
) -> Result<ClientTls, String> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let found = secrets
        .get(secret)
        .await
        .map_err(|e| format!("Secret {namespace}/{secret}: {e}"))?;
    let data = found.data.unwrap_or_default();
    let key = |name: &str| {
        data.get(name)
            .map(|bytes| bytes.0.clone())
            .ok_or_else(|| format!("Secret {namespace}/{secret} has no {name}"))
    };
    Ok(ClientTls::from_pem(
        key("ca.crt")?,
        key("tls.crt")?,
        key("tls.key")?,
    ))
}

/// A new connection to `node` alone (a cached one may still point at the IP of a pod that was
/// recreated since).
async fn channel_to(config: &ClientConfig, node: &str) -> Result<Channel, String> {
    let mut config = config.clone();
    config.seeds = vec![node.to_owned()];
    let client = LogClient::connect(config)
        .await
        .map_err(|e| format!("{node}: {e}"))?;
    client
        .channel(node)
        .await
        .map_err(|e| format!("{node}: {e}"))
}

/// Waits until every one of `nodes` (advertised addresses) serves the same committed end, read
/// from each alone; returns it. Meant for after the writes stopped. Until the deadline an
/// unreachable node (still starting) only means "not yet".
pub async fn wait_converged(
    config: &ClientConfig,
    nodes: &[String],
    timeout: Duration,
) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut ends = Vec::new();
        for node in nodes {
            let end = match channel_to(config, node).await {
                Ok(channel) => read_back::committed_end(channel, node)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            ends.push(end);
        }
        if let Ok(ends) = ends.iter().cloned().collect::<Result<Vec<u64>, String>>()
            && ends.windows(2).all(|w| w[0] == w[1])
            && let Some(end) = ends.first()
        {
            return Ok(*end);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the nodes did not converge within {timeout:?}: {:?}",
                nodes.iter().zip(&ends).collect::<Vec<_>>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every committed data record of each of `nodes`, read from each alone.
pub async fn read_every_node(
    config: &ClientConfig,
    nodes: &[String],
) -> Result<Vec<NodeLog>, String> {
    let mut logs = Vec::new();
    for node in nodes {
        let channel = channel_to(config, node).await?;
        logs.push(
            read_back::committed_records(channel, node)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(logs)
}
