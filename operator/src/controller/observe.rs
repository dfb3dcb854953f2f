//! Every read of a reconcile: the StatefulSet, the gossip key, the nodes' admin API, the pods of
//! a roll, the volume claims. Nothing here writes; the result is an [`Observed`] for
//! [`plan`](super::plan::plan).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::Context;
use crate::certificates::{CertificatesOutcome, ClientTls};
use crate::crd::LogCluster;
use crate::node_client::NodeAdmin;
use crate::node_id::NodeId;
use crate::resources::BuildSettings;
use crate::resources::config::GOSSIP_KEY;
use crate::resources::names::{APP_NAME, CLUSTER_LABEL, ClusterNames};
use crate::rollout::{self, PodView};
use crate::scaling::{Membership, merge_answers};
use crate::units::quantity_bytes;
use crate::{Error, Result};

/// What the certificate stage left the reconcile with.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `spec.paused`: nothing was issued; the nodes are asked with the existing operator
    /// certificate, if there is one.
    Paused,
    /// The certificates could not be made current (the reason); nothing else is done.
    Failed(String),
    /// Every certificate is current.
    Current(CertificatesOutcome),
}

/// The nodes' answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// The membership as the leader reports it.
    pub membership: Membership,
    /// Nodes whose admin API answered.
    pub reachable: BTreeSet<NodeId>,
}

/// One volume claim of the cluster (not being deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimView {
    /// `metadata.name` (`data-<cluster>-<ordinal>`).
    pub name: String,
    /// The ordinal in its name.
    pub ordinal: u32,
    /// Its requested storage in bytes, when it can be read.
    pub requested_bytes: Option<u64>,
}

/// Everything [`plan`](super::plan::plan) decides from.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The resource, as the watch delivered it (its status is the previous status).
    pub lc: Arc<LogCluster>,
    /// Its derived names.
    pub names: ClusterNames,
    /// The operator's build settings.
    pub settings: BuildSettings,
    /// The time of the reconcile (the plan reads no clock).
    pub now: SystemTime,
    /// Requeue interval of a steady cluster.
    pub resync: Duration,
    /// Requeue interval while a step is in progress.
    pub step_interval: Duration,
    /// The StatefulSet, if it exists.
    pub statefulset: Option<StatefulSet>,
    /// The certificates.
    pub credentials: Credentials,
    /// The gossip key Secret holds a valid key.
    pub gossip_key_valid: bool,
    /// The nodes' answers; `None` when they were not asked.
    pub nodes: Option<Nodes>,
    /// The StatefulSet's pods; `None` when no roll is under way by its status (not listed).
    pub pods: Option<Vec<PodView>>,
    /// The cluster's volume claims.
    pub claims: Vec<ClaimView>,
}

impl Observed {
    /// `spec.replicas` of the StatefulSet.
    pub fn statefulset_replicas(&self) -> Option<u32> {
        replicas_of(self.statefulset.as_ref())
    }

    /// `status.readyReplicas` of the StatefulSet.
    pub fn ready_replicas(&self) -> u32 {
        self.statefulset
            .as_ref()
            .and_then(|s| s.status.as_ref()?.ready_replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0)
    }
}

/// Every read after the certificate stage, into an [`Observed`]. `admin` is `None` when there is
/// no operator certificate to ask the nodes with; only a live cluster (certificates current)
/// gets its gossip key, pods and claims read.
pub async fn observe(
    ctx: &Context,
    lc: &Arc<LogCluster>,
    names: &ClusterNames,
    statefulset: Option<StatefulSet>,
    credentials: Credentials,
    admin: Option<&dyn NodeAdmin>,
    now: SystemTime,
) -> Result<Observed> {
    let live = matches!(credentials, Credentials::Current(_));
    let ns = &names.namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let gossip_key_valid = !live || gossip_key_valid(&secrets, names).await?;
    let sts_replicas = replicas_of(statefulset.as_ref());
    let nodes = match admin {
        Some(admin) => Some(self::nodes(admin, sts_replicas.unwrap_or(0)).await),
        None => None,
    };
    let (pods, claims) = if live {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        (
            pods_of_a_roll(&pods, names, statefulset.as_ref()).await?,
            self::claims(&claims, names).await?,
        )
    } else {
        (None, Vec::new())
    };
    Ok(Observed {
        lc: lc.clone(),
        names: names.clone(),
        settings: ctx.settings.clone(),
        now,
        resync: ctx.resync,
        step_interval: ctx.step_interval,
        statefulset,
        credentials,
        gossip_key_valid,
        nodes,
        pods,
        claims,
    })
}

/// `spec.replicas` of a StatefulSet.
pub fn replicas_of(sts: Option<&StatefulSet>) -> Option<u32> {
    sts.and_then(|s| s.spec.as_ref()?.replicas)
        .and_then(|r| u32::try_from(r).ok())
}

/// The StatefulSet, if it exists.
pub async fn statefulset(
    api: &Api<StatefulSet>,
    names: &ClusterNames,
) -> Result<Option<StatefulSet>> {
    api.get_opt(&names.statefulset())
        .await
        .map_err(|e| Error::kube(format!("reading StatefulSet {}", names.statefulset()), e))
}

/// Whether the gossip key Secret holds a 32-byte key (raw, or 64 hex digits).
pub async fn gossip_key_valid(api: &Api<Secret>, names: &ClusterNames) -> Result<bool> {
    let name = names.gossip_secret();
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {name}"), e))?;
    Ok(existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(GOSSIP_KEY))
        .is_some_and(|k| {
            k.0.len() == 32 || (k.0.len() == 64 && k.0.iter().all(u8::is_ascii_hexdigit))
        }))
}

/// The operator's client certificate, read only (nothing is issued while paused).
pub async fn client_tls(secrets: &Api<Secret>, names: &ClusterNames) -> Result<Option<ClientTls>> {
    let name = names.operator_tls_secret();
    let Some(secret) = secrets
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {name}"), e))?
    else {
        return Ok(None);
    };
    let text = |k| crate::resources::secrets::text_value(&secret, k);
    Ok(match (text("ca.crt"), text("tls.crt"), text("tls.key")) {
        (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Some(ClientTls {
            ca_pem,
            cert_pem,
            key_pem,
        }),
        _ => None,
    })
}

/// Asks every node `0..pods` for its cluster status and merges the answers.
pub async fn nodes(admin: &dyn NodeAdmin, pods: u32) -> Nodes {
    let calls = (0..u64::from(pods)).map(|id| async move { (id, admin.cluster_status(id).await) });
    let mut answers = std::collections::BTreeMap::new();
    for (id, result) in futures::future::join_all(calls).await {
        match result {
            Ok(answer) => {
                answers.insert(id, answer);
            }
            Err(e) => {
                tracing::debug!(node_id = id, error = %e, "node did not answer ClusterStatus")
            }
        }
    }
    let reachable = answers.keys().copied().collect();
    Nodes {
        membership: merge_answers(&answers),
        reachable,
    }
}

/// The StatefulSet's pods (by its selector) with their ordinals parsed from their names — only
/// when its status says a roll is under way ([`rollout::settled`]): a steady cluster's pods are
/// not listed on every reconcile.
pub async fn pods_of_a_roll(
    pods: &Api<Pod>,
    names: &ClusterNames,
    sts: Option<&StatefulSet>,
) -> Result<Option<Vec<PodView>>> {
    match sts {
        Some(sts) if !rollout::settled(sts) => Ok(Some(list_pods(pods, names).await?)),
        _ => Ok(None),
    }
}

async fn list_pods(pods: &Api<Pod>, names: &ClusterNames) -> Result<Vec<PodView>> {
    let listed = pods
        .list(&ListParams::default().labels(&names.selector_string()))
        .await
        .map_err(|e| Error::kube("listing the cluster's pods", e))?;
    let prefix = format!("{}-", names.statefulset());
    Ok(listed
        .items
        .iter()
        .filter_map(|pod| {
            let name = pod.name_any();
            let node = name.strip_prefix(&prefix)?.parse::<NodeId>().ok()?;
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Some(PodView {
                node,
                revision: pod.labels().get(rollout::REVISION_LABEL).cloned(),
                ready,
                terminating: pod.metadata.deletion_timestamp.is_some(),
                name,
            })
        })
        .collect())
}

/// The ordinal of a claim `data-<cluster>-<ordinal>`.
pub fn claim_ordinal(claim: &str, names: &ClusterNames) -> Option<u32> {
    claim
        .strip_prefix(&format!("data-{}-", names.cluster))?
        .parse()
        .ok()
}

/// The cluster's volume claims that are not being deleted.
pub async fn claims(
    api: &Api<PersistentVolumeClaim>,
    names: &ClusterNames,
) -> Result<Vec<ClaimView>> {
    let selector = format!(
        "{CLUSTER_LABEL}={},app.kubernetes.io/name={APP_NAME}",
        names.cluster
    );
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("listing PersistentVolumeClaims", e))?
        .items
        .into_iter()
        // A claim already being deleted (held by its pvc-protection finalizer while a pod uses
        // it) needs nothing more: deleting it again would only repeat Events.
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| {
            let name = c.name_any();
            let ordinal = claim_ordinal(&name, names)?;
            let requested_bytes = c
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(|q| quantity_bytes("storage.size", &q.0).ok());
            Some(ClaimView {
                name,
                ordinal,
                requested_bytes,
            })
        })
        .collect())
}
