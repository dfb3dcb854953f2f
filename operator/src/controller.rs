//! The reconciler: [`reconcile`] hands a `LogCluster` to `kube::runtime::finalizer`, which runs
//! [`apply`] while it lives and [`cleanup`] once it is being deleted; [`error_policy`] counts
//! failures and backs off; [`run`] wires the watches.
//!
//! One reconcile: make the certificates and the gossip key current, apply the ConfigMap and the
//! Services, observe the StatefulSet and the Raft membership, decide the next scaling step
//! ([`crate::scaling::decide`]), apply the StatefulSet with the decided replicas, take at most one
//! admin step — or, when scaling is steady, one step of a rolling update ([`crate::rollout`]) —
//! apply the PodDisruptionBudget, then write the status (server-side apply on the
//! status subresource) and emit Events for what changed. With `spec.paused` it only observes and
//! reports.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use rand::RngCore;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, field, info, info_span, warn};

use crate::certificates::{CertificatesOutcome, IssueReason, ensure_certificates, rfc3339};
use crate::crd::{
    FINALIZER, LogCluster, LogClusterStatus, MemberRole, MemberStatus, RetentionPolicy,
    ScalingPhase, ScalingStatus,
};
use crate::events::EventPublisher;
use crate::metrics::Metrics;
use crate::node_client::{NodeAdmin, NodeConnector};
use crate::resources::BuildSettings;
use crate::resources::config::{GOSSIP_KEY, config_hash, config_map, node_config};
use crate::resources::names::{APP_NAME, CLUSTER_LABEL, ClusterNames, FIELD_MANAGER, MANAGED_BY};
use crate::resources::pdb::{VoterCount, pdb};
use crate::resources::secrets::gossip_secret;
use crate::resources::services::{client_service, headless_service};
use crate::resources::statefulset::{StatefulSetInputs, statefulset};
use crate::rollout::{self, Step};
use crate::scaling::{
    AdminAction, Decision, Membership, NodeId, Observed, Progress, Role, decide, execute, observe,
};
use crate::status::{CertificateHealth, Health, conditions, flips, merge_conditions};
use crate::units::quantity_bytes;
use crate::{Error, Result};

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Settings the builders need.
    pub settings: BuildSettings,
    /// Reaches the nodes' admin API.
    pub connector: Arc<dyn NodeConnector>,
    /// Publishes Events.
    pub recorder: EventPublisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Requeue interval of a steady cluster (status refresh, drift repair).
    pub resync: Duration,
    /// Requeue interval while a scaling step is in progress.
    pub step_interval: Duration,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with the default intervals (resync 5 min, steps every 5 s).
    pub fn new(
        client: kube::Client,
        settings: BuildSettings,
        connector: Arc<dyn NodeConnector>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: EventPublisher::new(client.clone(), reporter),
            client,
            settings,
            connector,
            metrics,
            resync: Duration::from_secs(300),
            step_interval: Duration::from_secs(5),
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn object_key(lc: &LogCluster) -> String {
    format!("{}/{}", lc.namespace().unwrap_or_default(), lc.name_any())
}

/// Entry point of the controller for one `LogCluster`.
pub async fn reconcile(lc: Arc<LogCluster>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!("reconcile", namespace = field::Empty, name = %lc.name_any());
    if let Some(ns) = lc.namespace() {
        span.record("namespace", ns.as_str());
    }
    async move {
        ctx.metrics.reconcile_started();
        let started = Instant::now();
        let ns = lc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let key = object_key(&lc);
        let api: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
        let result = finalizer(&api, FINALIZER, lc, |event| async {
            match event {
                FinalizerEvent::Apply(lc) => apply(lc, ctx.clone()).await,
                FinalizerEvent::Cleanup(lc) => cleanup(lc, ctx.clone()).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        ctx.metrics.reconcile_finished(started.elapsed());
        if result.is_ok() {
            ctx.failures().remove(&key);
        }
        result
    }
    .instrument(span)
    .await
}

/// Backoff after a failed reconcile: 1 s doubling per consecutive failure of the same object, at
/// most 5 minutes. Every failure is counted by reason.
pub fn error_policy(lc: Arc<LogCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let failures = {
        let mut map = ctx.failures();
        let count = map.entry(object_key(&lc)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(failures);
    warn!(name = %lc.name_any(), error = %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

async fn apply_object<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|e| Error::kube(format!("applying {} {name}", K::kind(&())), e))
}

async fn publish(
    ctx: &Context,
    lc: &LogCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &lc.object_ref(&())).await {
        warn!(error = %e, reason, "publishing an Event failed");
    }
}

/// Ensures the gossip key Secret holds a 32-byte key (created once, never rotated by the
/// operator: every node must hold the same key at the same time).
async fn ensure_gossip_key(
    api: &Api<Secret>,
    lc: &LogCluster,
    names: &ClusterNames,
) -> Result<bool> {
    let name = names.gossip_secret();
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {name}"), e))?;
    let valid = existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(GOSSIP_KEY))
        .is_some_and(|k| {
            k.0.len() == 32 || (k.0.len() == 64 && k.0.iter().all(u8::is_ascii_hexdigit))
        });
    if valid {
        return Ok(false);
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    apply_object(api, &gossip_secret(lc, names, &key)?).await?;
    Ok(true)
}

/// The claim size a StatefulSet was created with (its claim templates are immutable).
fn claim_size(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// The ordinal of a claim `data-<cluster>-<ordinal>`.
fn claim_ordinal(claim: &str, names: &ClusterNames) -> Option<u32> {
    claim
        .strip_prefix(&format!("data-{}-", names.cluster))?
        .parse()
        .ok()
}

/// The cluster's volume claims that are not being deleted.
async fn cluster_claims(
    api: &Api<PersistentVolumeClaim>,
    names: &ClusterNames,
) -> Result<Vec<PersistentVolumeClaim>> {
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
        .filter(|c| claim_ordinal(&c.name_any(), names).is_some())
        // A claim already being deleted (held by its pvc-protection finalizer while a pod uses
        // it) needs nothing more: deleting it again would only repeat Events.
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .collect())
}

async fn delete_claim(api: &Api<PersistentVolumeClaim>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(
            format!("deleting PersistentVolumeClaim {name}"),
            e,
        )),
    }
}

/// Grows every claim smaller than `spec.storage.size`. Returns a problem description instead of
/// failing the reconcile: a storage class without expansion must not stop everything else.
async fn grow_claims(
    api: &Api<PersistentVolumeClaim>,
    lc: &LogCluster,
    claims: &[PersistentVolumeClaim],
) -> Result<Option<String>> {
    let wanted = quantity_bytes("storage.size", &lc.spec.storage.size)?;
    let mut problems = Vec::new();
    for claim in claims {
        let current = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| quantity_bytes("storage.size", &q.0).ok());
        if current.is_some_and(|c| c < wanted) {
            let name = claim.name_any();
            let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": lc.spec.storage.size}}}});
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                problems.push(format!("resizing {name}: {e}"));
            }
        }
    }
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}

/// Status members from the leader's view; without one, the last known members, marked unhealthy
/// (the operator cannot vouch for them).
fn members_for_status(
    names: &ClusterNames,
    membership: Option<&Membership>,
    previous: &[MemberStatus],
) -> Vec<MemberStatus> {
    match membership {
        Some(Membership::Led(view)) => {
            let mut members: Vec<_> = view
                .members
                .iter()
                .map(|m| MemberStatus {
                    pod: names.pod(u32::try_from(m.id).unwrap_or(u32::MAX)),
                    node_id: i64::try_from(m.id).unwrap_or(i64::MAX),
                    role: match m.role {
                        Role::Leader => MemberRole::Leader,
                        Role::Voter => MemberRole::Voter,
                        Role::Learner => MemberRole::Learner,
                    },
                    healthy: m.healthy,
                    lag: i64::try_from(m.lag).unwrap_or(i64::MAX),
                })
                .collect();
            members.sort_by_key(|m| m.node_id);
            members
        }
        _ => previous
            .iter()
            .cloned()
            .map(|mut m| {
                m.healthy = false;
                m
            })
            .collect(),
    }
}

fn last_known_voters(status: &LogClusterStatus) -> BTreeSet<NodeId> {
    status
        .members
        .iter()
        .filter(|m| matches!(m.role, MemberRole::Leader | MemberRole::Voter))
        .filter_map(|m| u64::try_from(m.node_id).ok())
        .collect()
}

fn scaling_status(
    progress: Option<&Progress>,
    current: u32,
    desired: u32,
) -> Option<ScalingStatus> {
    let (phase, message) = match progress? {
        Progress::Steady => return None,
        Progress::Working { phase, message } => (*phase, message.clone()),
        Progress::Blocked { message } => (ScalingPhase::Blocked, message.clone()),
    };
    Some(ScalingStatus {
        phase,
        current_replicas: i32::try_from(current).unwrap_or(i32::MAX),
        target_replicas: i32::try_from(desired).unwrap_or(i32::MAX),
        message,
    })
}

/// What one reconcile observed and did, turned into the status.
struct Report {
    health: Health,
    membership: Option<Membership>,
    statefulset: Option<StatefulSet>,
    applied_replicas: Option<u32>,
    initialized: bool,
    certificates: Option<Vec<crate::crd::CertificateStatus>>,
}

async fn write_status(
    ctx: &Context,
    lc: &LogCluster,
    names: &ClusterNames,
    report: Report,
) -> Result<LogClusterStatus> {
    let previous = lc.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let desired = conditions(&report.health, &previous.conditions);
    let merged = merge_conditions(&previous.conditions, desired, &now, lc.metadata.generation);
    let sts_status = report.statefulset.as_ref().and_then(|s| s.status.as_ref());
    let current = report
        .applied_replicas
        .or_else(|| {
            report
                .statefulset
                .as_ref()
                .and_then(|s| s.spec.as_ref()?.replicas)
                .and_then(|r| u32::try_from(r).ok())
        })
        .unwrap_or(0);
    let leader = match &report.membership {
        Some(Membership::Led(view)) => {
            Some(names.pod(u32::try_from(view.leader).unwrap_or(u32::MAX)))
        }
        _ => None,
    };
    let status = LogClusterStatus {
        observed_generation: lc.metadata.generation,
        replicas: sts_status.map_or(0, |s| s.replicas),
        ready_replicas: sts_status.and_then(|s| s.ready_replicas).unwrap_or(0),
        selector: names.selector_string(),
        leader,
        members: members_for_status(names, report.membership.as_ref(), &previous.members),
        initialized: report.initialized,
        scaling: scaling_status(
            report.health.progress.as_ref(),
            current,
            lc.desired_replicas(),
        ),
        certificates: report.certificates.unwrap_or(previous.certificates.clone()),
        conditions: merged,
    };
    let patch = serde_json::json!({
        "apiVersion": "logcluster.io/v1alpha1",
        "kind": "LogCluster",
        "status": status,
    });
    let api: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &names.namespace);
    api.patch_status(
        &names.cluster,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("writing the status of LogCluster {}", names.cluster),
            e,
        )
    })?;

    for flip in flips(&previous.conditions, &status.conditions) {
        // The first status of a new cluster is not news; its problems are.
        if previous.conditions.is_empty()
            && flip.status == "False"
            && matches!(flip.type_.as_str(), "Progressing" | "Degraded")
        {
            continue;
        }
        let bad = (flip.type_ == "Degraded") == (flip.status == "True");
        let type_ = if bad {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            lc,
            type_,
            &format!("{}{}", flip.type_, flip.status),
            "Reconcile",
            format!("{}: {}", flip.reason, flip.message),
        )
        .await;
    }
    let was_blocked = previous
        .scaling
        .as_ref()
        .is_some_and(|s| s.phase == ScalingPhase::Blocked);
    if let Some(s) = status
        .scaling
        .as_ref()
        .filter(|s| s.phase == ScalingPhase::Blocked)
        && !was_blocked
    {
        publish(
            ctx,
            lc,
            EventType::Warning,
            "ScalingBlocked",
            "Scale",
            s.message.clone(),
        )
        .await;
    }
    Ok(status)
}

fn certificate_health(outcome: &CertificatesOutcome) -> CertificateHealth {
    let (renewed, issued): (Vec<_>, Vec<_>) =
        outcome.issued.iter().partition(|i| i.reason.is_renewal());
    CertificateHealth::Valid {
        renewed: renewed.into_iter().map(|i| i.secret_name.clone()).collect(),
        issued: issued.into_iter().map(|i| i.secret_name.clone()).collect(),
        limited_by_ca: outcome.limited_by_ca.clone(),
        next_renewal: outcome.next_renewal.map(rfc3339),
    }
}

/// Reconciles a live `LogCluster`.
pub async fn apply(lc: Arc<LogCluster>, ctx: Arc<Context>) -> Result<Action> {
    let names = ClusterNames::new(&lc, &ctx.settings.cluster_domain)?;
    let ns = names.namespace.clone();
    let previous = lc.status.clone().unwrap_or_default();
    let desired = lc.desired_replicas();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);

    let sts = statefulsets
        .get_opt(&names.statefulset())
        .await
        .map_err(|e| Error::kube(format!("reading StatefulSet {}", names.statefulset()), e))?;
    let sts_replicas = sts
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.replicas)
        .and_then(|r| u32::try_from(r).ok());
    let ready_replicas = sts
        .as_ref()
        .and_then(|s| s.status.as_ref()?.ready_replicas)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0);

    if lc.spec.paused {
        return reconcile_paused(&lc, &ctx, &names, sts, ready_replicas).await;
    }

    // Certificates first: everything else, including talking to the nodes, needs them.
    let now = SystemTime::now();
    let pods_for_names = desired.max(sts_replicas.unwrap_or(0)).max(1);
    let certs = match ensure_certificates(&secrets, &lc, &names, pods_for_names, now).await {
        Ok(certs) => certs,
        Err(e) => {
            let report = Report {
                health: Health {
                    paused: false,
                    initialized: previous.initialized,
                    desired,
                    ready_replicas,
                    membership: None,
                    progress: None,
                    certificates: Some(CertificateHealth::Failed(e.to_string())),
                    volume_problem: None,
                },
                membership: None,
                statefulset: sts,
                applied_replicas: None,
                initialized: previous.initialized,
                certificates: None,
            };
            write_status(&ctx, &lc, &names, report).await?;
            return Err(e);
        }
    };
    if certs.ca_generated {
        publish(
            &ctx,
            &lc,
            EventType::Normal,
            "CAGenerated",
            "IssueCertificate",
            format!("created the cluster CA in Secret {}", names.ca_secret()),
        )
        .await;
    }
    for issued in &certs.issued {
        let (reason, type_) = match issued.reason {
            IssueReason::RenewalDue => ("CertificateRenewed", EventType::Normal),
            IssueReason::Missing => ("CertificateIssued", EventType::Normal),
            _ => ("CertificateReissued", EventType::Normal),
        };
        publish(
            &ctx,
            &lc,
            type_,
            reason,
            "IssueCertificate",
            format!(
                "{} ({}), valid until {}",
                issued.secret_name,
                issued.reason,
                rfc3339(issued.not_after)
            ),
        )
        .await;
    }
    let expiry: Vec<(String, SystemTime)> = certs
        .statuses
        .iter()
        .map(|(s, t)| (s.secret_name.clone(), *t))
        .collect();
    ctx.metrics
        .set_certificate_expiry(&ns, &names.cluster, &expiry);

    if ensure_gossip_key(&secrets, &lc, &names).await? {
        publish(
            &ctx,
            &lc,
            EventType::Normal,
            "GossipKeyCreated",
            "Configure",
            format!("created the gossip key in Secret {}", names.gossip_secret()),
        )
        .await;
    }
    let config_text = node_config(&lc, &names)?;
    apply_object(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
        &config_map(&lc, &names)?,
    )
    .await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    apply_object(&services, &headless_service(&lc, &names)?).await?;
    apply_object(&services, &client_service(&lc, &names)?).await?;

    // Observe the cluster and decide the next step.
    let admin: Arc<dyn NodeAdmin> = ctx.connector.connect(&names, &certs.client)?;
    let (membership, reachable) = observe(admin.as_ref(), sts_replicas.unwrap_or(0)).await;
    let observed = Observed {
        desired,
        statefulset: sts_replicas,
        initialized: previous.initialized,
        last_known_voters: last_known_voters(&previous),
        membership: membership.clone(),
        reachable,
    };
    let decision: Decision = decide(&observed);
    info!(replicas = decision.replicas, action = ?decision.action, progress = ?decision.progress, "scaling decision");

    let inputs = StatefulSetInputs {
        replicas: i32::try_from(decision.replicas).unwrap_or(i32::MAX),
        claim_size: sts
            .as_ref()
            .and_then(claim_size)
            .unwrap_or_else(|| lc.spec.storage.size.clone()),
        config_hash: config_hash(&config_text),
    };
    let applied = apply_object(
        &statefulsets,
        &statefulset(&lc, &names, &ctx.settings, &inputs)?,
    )
    .await?;
    if sts_replicas.is_some_and(|r| r != decision.replicas) {
        publish(
            &ctx,
            &lc,
            EventType::Normal,
            "StatefulSetScaled",
            "Scale",
            format!(
                "StatefulSet {} replicas {} → {}",
                names.statefulset(),
                sts_replicas.unwrap_or(0),
                decision.replicas
            ),
        )
        .await;
    }

    let leader = match &membership {
        Membership::Led(view) => Some(view.leader),
        _ => None,
    };
    let mut initialized = previous.initialized || decision.mark_initialized;
    if decision.mark_initialized && !previous.initialized {
        publish(
            &ctx,
            &lc,
            EventType::Normal,
            "ClusterInitialized",
            "Bootstrap",
            "the nodes already form an initialized cluster; recorded".to_owned(),
        )
        .await;
    }
    let mut action_error = None;
    if let Some(action) = decision.action {
        match execute(admin.as_ref(), action, leader).await {
            Ok(()) => {
                let reason = match action {
                    AdminAction::Initialize => {
                        initialized = true;
                        "ClusterInitialized"
                    }
                    AdminAction::AddNode(_) => "NodeAdded",
                    AdminAction::TransferLeader { .. } => "LeadershipTransferred",
                    AdminAction::RemoveNode(_) => "NodeRemoved",
                };
                publish(
                    &ctx,
                    &lc,
                    EventType::Normal,
                    reason,
                    "Scale",
                    format!("{action}"),
                )
                .await;
            }
            Err(e) => {
                warn!(error = %e, %action, "admin step failed");
                action_error = Some(e);
            }
        }
    }

    // A changed pod template: the operator rolls it out itself, leader last, while scaling is
    // steady (the StatefulSet is `OnDelete`).
    let mut progress = decision.progress.clone();
    if progress == Progress::Steady
        && action_error.is_none()
        && let Some(rolling) =
            rollout_step(&ctx, &lc, &names, &applied, &membership, admin.as_ref()).await?
    {
        progress = rolling;
    }

    // PodDisruptionBudget from the voters (those with pods can be evicted).
    let voters = match &membership {
        Membership::Led(view) => {
            let ids: Vec<NodeId> = view
                .members
                .iter()
                .filter(|m| m.role.votes())
                .map(|m| m.id)
                .collect();
            VoterCount {
                total: u32::try_from(ids.len()).unwrap_or(u32::MAX),
                with_pods: u32::try_from(
                    ids.iter()
                        .filter(|&&id| id < u64::from(decision.replicas))
                        .count(),
                )
                .unwrap_or(0),
            }
        }
        _ => {
            let known = last_known_voters(&previous);
            if known.is_empty() {
                VoterCount::all(decision.replicas.min(desired))
            } else {
                VoterCount {
                    total: u32::try_from(known.len()).unwrap_or(u32::MAX),
                    with_pods: u32::try_from(
                        known
                            .iter()
                            .filter(|&&id| id < u64::from(decision.replicas))
                            .count(),
                    )
                    .unwrap_or(0),
                }
            }
        }
    };
    apply_object(
        &Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns),
        &pdb(&lc, &names, voters)?,
    )
    .await?;

    // Volumes: grow to spec.storage.size; delete the claims of removed nodes if asked to.
    let claims = cluster_claims(&claims_api, &names).await?;
    let volume_problem = grow_claims(&claims_api, &lc, &claims).await?;
    if lc.spec.storage.pvc_retention.when_scaled == RetentionPolicy::Delete {
        for claim in &claims {
            let name = claim.name_any();
            if claim_ordinal(&name, &names).is_some_and(|o| o >= decision.replicas) {
                delete_claim(&claims_api, &name).await?;
                publish(
                    &ctx,
                    &lc,
                    EventType::Normal,
                    "VolumeDeleted",
                    "Scale",
                    format!("deleted {name} of a removed node (whenScaled: Delete)"),
                )
                .await;
            }
        }
    }

    let report = Report {
        health: Health {
            paused: false,
            initialized,
            desired,
            ready_replicas,
            membership: Some(membership.clone()),
            progress: Some(progress.clone()),
            certificates: Some(certificate_health(&certs)),
            volume_problem,
        },
        membership: Some(membership),
        statefulset: Some(applied),
        applied_replicas: Some(decision.replicas),
        initialized,
        certificates: Some(certs.statuses.iter().map(|(s, _)| s.clone()).collect()),
    };
    write_status(&ctx, &lc, &names, report).await?;
    if let Some(e) = action_error {
        return Err(e);
    }

    let mut next = if progress == Progress::Steady {
        ctx.resync
    } else {
        ctx.step_interval
    };
    if let Some(renewal) = certs.next_renewal {
        let until = renewal
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        // A second late, so the certificate is inside its window when the reconcile runs.
        next = next.min(until + Duration::from_secs(1));
    }
    Ok(Action::requeue(next))
}

/// Takes one step of a rolling update ([`crate::rollout`]) and returns its progress, or `None`
/// when every pod already runs the StatefulSet's current template.
async fn rollout_step(
    ctx: &Context,
    lc: &LogCluster,
    names: &ClusterNames,
    sts: &StatefulSet,
    membership: &Membership,
    admin: &dyn NodeAdmin,
) -> Result<Option<Progress>> {
    if rollout::settled(sts) {
        return Ok(None);
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let pods = rollout::observe_pods(&pods_api, names).await?;
    let replicas = sts
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0);
    let step = rollout::plan(&rollout::Observed {
        update_revision: rollout::update_revision(sts),
        replicas,
        pods: &pods,
        membership,
    });
    let mut message = step.to_string();
    match &step {
        Step::Done => return Ok(None),
        Step::Wait(_) => {}
        Step::Evict { pod, .. } => {
            if rollout::evict(&pods_api, pod).await? {
                publish(
                    ctx,
                    lc,
                    EventType::Normal,
                    "PodReplaced",
                    "RollingUpdate",
                    message.clone(),
                )
                .await;
            } else {
                message = format!(
                    "rolling update: the PodDisruptionBudget refused evicting {pod}; retrying"
                );
            }
        }
        Step::TransferLeader { from, to } => {
            let action = AdminAction::TransferLeader {
                from: *from,
                to: *to,
            };
            match execute(admin, action, Some(*from)).await {
                Ok(()) => {
                    publish(
                        ctx,
                        lc,
                        EventType::Normal,
                        "LeadershipTransferred",
                        "RollingUpdate",
                        message.clone(),
                    )
                    .await;
                }
                Err(e) => {
                    warn!(error = %e, %action, "leadership transfer before a pod replacement failed");
                    message = format!("rolling update: {action} failed ({e}); retrying");
                }
            }
        }
    }
    info!(%message, "rolling update");
    Ok(Some(Progress::Working {
        phase: ScalingPhase::RollingUpdate,
        message,
    }))
}

/// Paused: observe and report, change nothing.
async fn reconcile_paused(
    lc: &LogCluster,
    ctx: &Context,
    names: &ClusterNames,
    sts: Option<StatefulSet>,
    ready_replicas: u32,
) -> Result<Action> {
    let previous = lc.status.clone().unwrap_or_default();
    // The operator's client certificate, read only (nothing is issued while paused).
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let client_tls = read_client_tls(&secrets, names).await?;
    let sts_replicas = sts
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.replicas)
        .and_then(|r| u32::try_from(r).ok());
    let membership = match client_tls {
        Some(tls) => {
            let admin = ctx.connector.connect(names, &tls)?;
            Some(observe(admin.as_ref(), sts_replicas.unwrap_or(0)).await.0)
        }
        None => None,
    };
    let report = Report {
        health: Health {
            paused: true,
            initialized: previous.initialized,
            desired: lc.desired_replicas(),
            ready_replicas,
            membership: membership.clone(),
            progress: None,
            certificates: None,
            volume_problem: None,
        },
        membership,
        statefulset: sts,
        applied_replicas: None,
        initialized: previous.initialized,
        certificates: None,
    };
    write_status(ctx, lc, names, report).await?;
    Ok(Action::requeue(ctx.resync))
}

async fn read_client_tls(
    secrets: &Api<Secret>,
    names: &ClusterNames,
) -> Result<Option<crate::certificates::ClientTls>> {
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
        (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Some(crate::certificates::ClientTls {
            ca_pem,
            cert_pem,
            key_pem,
        }),
        _ => None,
    })
}

/// Runs when a `LogCluster` is being deleted: honours `whenDeleted` for the volumes (the owned
/// objects go with the LogCluster through their owner references).
pub async fn cleanup(lc: Arc<LogCluster>, ctx: Arc<Context>) -> Result<Action> {
    let names = ClusterNames::new(&lc, &ctx.settings.cluster_domain)?;
    let claims_api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &names.namespace);
    let policy = lc.spec.storage.pvc_retention.when_deleted;
    let claims = cluster_claims(&claims_api, &names).await?;
    if policy == RetentionPolicy::Delete {
        for claim in &claims {
            delete_claim(&claims_api, &claim.name_any()).await?;
        }
    }
    let note = match policy {
        RetentionPolicy::Delete => format!(
            "deleted {} volume claims (whenDeleted: Delete)",
            claims.len()
        ),
        RetentionPolicy::Retain => {
            format!("kept {} volume claims (whenDeleted: Retain)", claims.len())
        }
    };
    publish(&ctx, &lc, EventType::Normal, "Deleting", "Cleanup", note).await;
    ctx.metrics.forget_cluster(&names.namespace, &names.cluster);
    ctx.connector.forget(&names);
    Ok(Action::await_change())
}

/// Which namespaces the operator watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs cluster-wide RBAC).
    All,
    /// Only these.
    Namespaces(Vec<String>),
}

fn api_for<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller for one namespace (or all) until shutdown.
async fn run_scope(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    // Metadata only: the operator never caches Secret contents (key material).
    let secrets = watcher(
        api_for::<PartialObjectMeta<Secret>>(&client, ns),
        owned.clone(),
    )
    .touched_objects();
    // NB: LogClusters trigger a reconcile only when their generation (spec, deletion) or
    // finalizers change. The operator writes the status on every reconcile, and member lag
    // changes under load: reacting to its own status writes would reconcile in a hot loop.
    let (reader, writer) = reflector::store();
    let logclusters = watcher(
        api_for::<LogCluster>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation.combine(predicates::finalizers),
        PredicateConfig::default(),
    );
    Controller::for_stream(logclusters, reader)
        .owns(api_for::<StatefulSet>(&client, ns), owned.clone())
        .owns(api_for::<Service>(&client, ns), owned.clone())
        .owns(api_for::<ConfigMap>(&client, ns), owned.clone())
        .owns(api_for::<PodDisruptionBudget>(&client, ns), owned.clone())
        .owns_stream(secrets)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object_name(&object), "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

fn object_name(object: &ObjectRef<LogCluster>) -> String {
    format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or(""),
        object.name
    )
}

/// Runs the controller over `scope` until a shutdown signal.
pub async fn run(ctx: Arc<Context>, scope: Scope) -> Result<()> {
    match scope {
        Scope::All => run_scope(ctx, None).await,
        Scope::Namespaces(namespaces) => {
            futures::future::join_all(
                namespaces
                    .into_iter()
                    .map(|ns| run_scope(ctx.clone(), Some(ns))),
            )
            .await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = [1, 2, 3, 4, 9, 10, 50]
            .iter()
            .map(|&f| backoff(f).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 256, 300, 300]);
    }

    #[test]
    fn claim_ordinals_are_parsed_from_claim_names() {
        let names = ClusterNames {
            cluster: "demo".into(),
            namespace: "ns".into(),
            cluster_domain: "cluster.local".into(),
        };
        assert_eq!(claim_ordinal("data-demo-3", &names), Some(3));
        assert_eq!(claim_ordinal("data-demo-x", &names), None);
        assert_eq!(claim_ordinal("data-demo2-3", &names), None);
        assert_eq!(claim_ordinal("data-other-3", &names), None);
    }
}
