//! The pure core of a reconcile: [`plan`] turns an [`Observed`] into a [`Plan`] — the objects to
//! apply, at most one step on the cluster (a scaling action through the admin API, or one step of
//! a rolling update), the volume claims to grow or delete, the Events to publish and the status
//! to write. No I/O and no clock: the time comes in [`Observed::now`]. The Events about the
//! certificate stage, which runs before the observation, come from [`certificate_events`].
//!
//! A step can fail or be refused when [`execute`](super::execute) takes it; the status and the
//! requeue interval of the plan are those of success, and [`StatusPlan::report`] is what the
//! executor adjusts when a step does not go through.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

use super::observe::{Credentials, Nodes, Observed};
use crate::Result;
use crate::certificates::{CertificatesOutcome, IssueReason, rfc3339};
use crate::crd::{
    CertificateStatus, LogClusterStatus, MemberRole, MemberStatus, RetentionPolicy, ScalingPhase,
    ScalingStatus,
};
use crate::node_id::NodeId;
use crate::resources::config::{config_hash, config_map, node_config};
use crate::resources::names::ClusterNames;
use crate::resources::pdb::{VoterCount, pdb};
use crate::resources::services::{client_service, headless_service};
use crate::resources::statefulset::{StatefulSetInputs, statefulset};
use crate::rollout;
use crate::scaling::{self, AdminAction, Decision, Membership, Progress, Role, decide};
use crate::status::{CertificateHealth, Health, conditions, flips, merge_conditions};
use crate::units::quantity_bytes;

/// An Event to publish about the `LogCluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: String,
    pub action: &'static str,
    pub note: String,
}

fn normal(reason: &str, action: &'static str, note: String) -> Note {
    Note {
        type_: EventType::Normal,
        reason: reason.to_owned(),
        action,
        note,
    }
}

/// The objects a live cluster gets, applied with server-side apply in this order (the
/// PodDisruptionBudget after the step, which it is sized for).
#[derive(Debug, Clone)]
pub struct Objects {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub client_service: Service,
    pub statefulset: StatefulSet,
    pub pdb: PodDisruptionBudget,
}

/// The one step on the cluster a reconcile takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterStep {
    /// A scaling action through the admin API; membership changes go to `leader`.
    Scale {
        action: AdminAction,
        leader: Option<NodeId>,
    },
    /// One step of a rolling update, decided from the StatefulSet at `generation`. NB: when
    /// applying the StatefulSet changes its generation (a new template), the step is void: the
    /// pods' target revision is not known until its controller has seen the new spec.
    Roll {
        step: rollout::Step,
        generation: Option<i64>,
    },
}

impl ClusterStep {
    /// The Event of a scaling action that went through.
    pub fn scale_note(action: AdminAction) -> Note {
        let reason = match action {
            AdminAction::Initialize => "ClusterInitialized",
            AdminAction::AddNode(_) => "NodeAdded",
            AdminAction::TransferLeader { .. } => "LeadershipTransferred",
            AdminAction::RemoveNode(_) => "NodeRemoved",
        };
        normal(reason, "Scale", action.to_string())
    }
}

/// Volume claims to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimChanges {
    /// `spec.storage.size`, which the claims in `grow` are raised to.
    pub size: String,
    /// Claims smaller than `size`.
    pub grow: Vec<String>,
    /// Claims of removed nodes (`whenScaled: Delete`), each with its Event.
    pub delete: Vec<(String, Note)>,
}

/// What one reconcile observed and did, turned into the status.
#[derive(Debug, Clone)]
pub struct Report {
    pub health: Health,
    pub membership: Option<Membership>,
    pub statefulset: Option<StatefulSet>,
    pub applied_replicas: Option<u32>,
    pub initialized: bool,
    pub certificates: Option<Vec<CertificateStatus>>,
}

/// The status to write: [`StatusPlan::render`] of the [`Report`].
#[derive(Debug, Clone)]
pub struct StatusPlan {
    pub report: Report,
    previous: LogClusterStatus,
    generation: Option<i64>,
    desired: u32,
    names: ClusterNames,
    now: Time,
}

/// Everything one reconcile does; see the module documentation.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Create the gossip key, then publish this Event.
    pub gossip_key: Option<Note>,
    /// The objects to apply; `None`: change nothing (paused, or certificates failed).
    pub objects: Option<Objects>,
    /// Published once the StatefulSet is applied.
    pub statefulset_events: Vec<Note>,
    /// At most one step on the cluster.
    pub step: Option<ClusterStep>,
    /// Volume claims to grow and delete.
    pub claims: ClaimChanges,
    /// The status to write.
    pub status: StatusPlan,
    resync: Duration,
    step_interval: Duration,
    /// Time from [`Observed::now`] until the earliest certificate renewal.
    next_renewal: Option<Duration>,
}

impl Plan {
    /// When to reconcile again, given the progress the status reports.
    pub fn requeue_after(&self) -> Duration {
        let mut next = match &self.status.report.health.progress {
            None | Some(Progress::Steady) => self.resync,
            Some(_) => self.step_interval,
        };
        if let Some(until) = self.next_renewal {
            // A second late, so the certificate is inside its window when the reconcile runs.
            next = next.min(until + Duration::from_secs(1));
        }
        next
    }
}

/// Decides a reconcile. Fails only on a spec or object the builders cannot use.
pub fn plan(o: &Observed) -> Result<Plan> {
    let previous = o.lc.status.clone().unwrap_or_default();
    let report_only = |report: Report| Plan {
        gossip_key: None,
        objects: None,
        statefulset_events: Vec::new(),
        step: None,
        claims: ClaimChanges::default(),
        status: status_plan(o, report),
        resync: o.resync,
        step_interval: o.step_interval,
        next_renewal: None,
    };
    match &o.credentials {
        Credentials::Paused => {
            let membership = o.nodes.as_ref().map(|n| n.membership.clone());
            Ok(report_only(Report {
                health: Health {
                    paused: true,
                    initialized: previous.initialized,
                    desired: o.lc.desired_replicas(),
                    ready_replicas: o.ready_replicas(),
                    membership: membership.clone(),
                    progress: None,
                    certificates: None,
                    volume_problem: None,
                },
                membership,
                statefulset: o.statefulset.clone(),
                applied_replicas: None,
                initialized: previous.initialized,
                certificates: None,
            }))
        }
        Credentials::Failed(reason) => Ok(report_only(Report {
            health: Health {
                paused: false,
                initialized: previous.initialized,
                desired: o.lc.desired_replicas(),
                ready_replicas: o.ready_replicas(),
                membership: None,
                progress: None,
                certificates: Some(CertificateHealth::Failed(reason.clone())),
                volume_problem: None,
            },
            membership: None,
            statefulset: o.statefulset.clone(),
            applied_replicas: None,
            initialized: previous.initialized,
            certificates: None,
        })),
        Credentials::Current(certs) => plan_live(o, certs, &previous),
    }
}

fn plan_live(
    o: &Observed,
    certs: &CertificatesOutcome,
    previous: &LogClusterStatus,
) -> Result<Plan> {
    let (lc, names) = (&*o.lc, &o.names);
    let desired = lc.desired_replicas();
    let sts_replicas = o.statefulset_replicas();
    let nodes = o.nodes.clone().unwrap_or_else(|| Nodes {
        membership: Membership::Unknown("the nodes were not asked".to_owned()),
        reachable: BTreeSet::new(),
    });
    let membership = nodes.membership;
    let known_voters = last_known_voters(previous);
    let decision: Decision = decide(&scaling::Observed {
        desired,
        statefulset: sts_replicas,
        initialized: previous.initialized,
        last_known_voters: known_voters.clone(),
        membership: membership.clone(),
        reachable: nodes.reachable,
    });

    let inputs = StatefulSetInputs {
        replicas: i32::try_from(decision.replicas).unwrap_or(i32::MAX),
        claim_size: o
            .statefulset
            .as_ref()
            .and_then(claim_size)
            .unwrap_or_else(|| lc.spec.storage.size.clone()),
        config_hash: config_hash(&node_config(lc, names)?),
    };
    let voters = VoterCount::observed(
        &membership,
        &known_voters,
        decision.replicas,
        decision.replicas.min(desired),
    );
    let objects = Objects {
        config_map: config_map(lc, names)?,
        headless_service: headless_service(lc, names)?,
        client_service: client_service(lc, names)?,
        statefulset: statefulset(lc, names, &o.settings, &inputs)?,
        pdb: pdb(lc, names, voters)?,
    };

    let mut statefulset_events = Vec::new();
    if let Some(from) = sts_replicas.filter(|&r| r != decision.replicas) {
        statefulset_events.push(normal(
            "StatefulSetScaled",
            "Scale",
            format!(
                "StatefulSet {} replicas {from} → {}",
                names.statefulset(),
                decision.replicas
            ),
        ));
    }
    if decision.mark_initialized && !previous.initialized {
        statefulset_events.push(normal(
            "ClusterInitialized",
            "Bootstrap",
            "the nodes already form an initialized cluster; recorded".to_owned(),
        ));
    }
    let initialized = previous.initialized || decision.mark_initialized;

    // A changed pod template: the operator rolls it out itself, leader last, while scaling is
    // steady (the StatefulSet is `OnDelete`).
    let leader = match &membership {
        Membership::Led(view) => Some(view.leader),
        _ => None,
    };
    let mut progress = decision.progress.clone();
    let step = match decision.action {
        Some(action) => Some(ClusterStep::Scale { action, leader }),
        None if progress == Progress::Steady => {
            roll_step(o, decision.replicas, &membership).map(|(step, generation)| {
                progress = Progress::Working {
                    phase: ScalingPhase::RollingUpdate,
                    message: step.to_string(),
                };
                ClusterStep::Roll { step, generation }
            })
        }
        None => None,
    };

    let wanted = quantity_bytes("storage.size", &lc.spec.storage.size)?;
    let claims = ClaimChanges {
        size: lc.spec.storage.size.clone(),
        grow: o
            .claims
            .iter()
            .filter(|c| c.requested_bytes.is_some_and(|b| b < wanted))
            .map(|c| c.name.clone())
            .collect(),
        delete: if lc.spec.storage.pvc_retention.when_scaled == RetentionPolicy::Delete {
            o.claims
                .iter()
                .filter(|c| c.ordinal >= decision.replicas)
                .map(|c| {
                    let note = normal(
                        "VolumeDeleted",
                        "Scale",
                        format!("deleted {} of a removed node (whenScaled: Delete)", c.name),
                    );
                    (c.name.clone(), note)
                })
                .collect()
        } else {
            Vec::new()
        },
    };

    let report = Report {
        health: Health {
            paused: false,
            initialized,
            desired,
            ready_replicas: o.ready_replicas(),
            membership: Some(membership.clone()),
            progress: Some(progress),
            certificates: Some(certificate_health(certs)),
            volume_problem: None,
        },
        membership: Some(membership),
        statefulset: o.statefulset.clone(),
        applied_replicas: Some(decision.replicas),
        initialized,
        certificates: Some(certs.statuses.iter().map(|(s, _)| s.clone()).collect()),
    };
    Ok(Plan {
        gossip_key: (!o.gossip_key_valid).then(|| {
            normal(
                "GossipKeyCreated",
                "Configure",
                format!("created the gossip key in Secret {}", names.gossip_secret()),
            )
        }),
        objects: Some(objects),
        statefulset_events,
        step,
        claims,
        status: status_plan(o, report),
        resync: o.resync,
        step_interval: o.step_interval,
        next_renewal: certs
            .next_renewal
            .map(|at| at.duration_since(o.now).unwrap_or_default()),
    })
}

/// The next step of a rolling update and the StatefulSet generation it was decided from;
/// `None` when every pod runs the current template (or no roll is under way by its status).
fn roll_step(
    o: &Observed,
    replicas: u32,
    membership: &Membership,
) -> Option<(rollout::Step, Option<i64>)> {
    let sts = o.statefulset.as_ref()?;
    let pods = o.pods.as_deref()?;
    let step = rollout::plan(&rollout::Observed {
        update_revision: rollout::update_revision(sts),
        replicas,
        pods,
        membership,
    });
    (step != rollout::Step::Done).then_some((step, sts.metadata.generation))
}

/// The Events about what the certificate stage did. NB: they are published right after that
/// stage, not with the plan: its Secrets are already written, and a later failure of the
/// reconcile must not lose the news (the next reconcile has nothing to issue).
pub fn certificate_events(certs: &CertificatesOutcome, names: &ClusterNames) -> Vec<Note> {
    let mut events = Vec::new();
    if certs.ca_generated {
        events.push(normal(
            "CAGenerated",
            "IssueCertificate",
            format!("created the cluster CA in Secret {}", names.ca_secret()),
        ));
    }
    for issued in &certs.issued {
        let reason = match issued.reason {
            IssueReason::RenewalDue => "CertificateRenewed",
            IssueReason::Missing => "CertificateIssued",
            _ => "CertificateReissued",
        };
        events.push(normal(
            reason,
            "IssueCertificate",
            format!(
                "{} ({}), valid until {}",
                issued.secret_name,
                issued.reason,
                rfc3339(issued.not_after)
            ),
        ));
    }
    events
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

fn last_known_voters(status: &LogClusterStatus) -> BTreeSet<NodeId> {
    status
        .members
        .iter()
        .filter(|m| matches!(m.role, MemberRole::Leader | MemberRole::Voter))
        .filter_map(|m| u64::try_from(m.node_id).ok())
        .collect()
}

fn status_plan(o: &Observed, report: Report) -> StatusPlan {
    StatusPlan {
        report,
        previous: o.lc.status.clone().unwrap_or_default(),
        generation: o.lc.metadata.generation,
        desired: o.lc.desired_replicas(),
        names: o.names.clone(),
        now: Time(Timestamp::try_from(o.now).unwrap_or(Timestamp::UNIX_EPOCH)),
    }
}

impl StatusPlan {
    /// The status as of [`StatusPlan::report`].
    pub fn render(&self) -> LogClusterStatus {
        let (report, previous, names) = (&self.report, &self.previous, &self.names);
        let desired = conditions(&report.health, &previous.conditions);
        let merged = merge_conditions(&previous.conditions, desired, &self.now, self.generation);
        let sts_status = report.statefulset.as_ref().and_then(|s| s.status.as_ref());
        let current = report
            .applied_replicas
            .or_else(|| super::observe::replicas_of(report.statefulset.as_ref()))
            .unwrap_or(0);
        let leader = match &report.membership {
            Some(Membership::Led(view)) => {
                Some(names.pod(u32::try_from(view.leader).unwrap_or(u32::MAX)))
            }
            _ => None,
        };
        LogClusterStatus {
            observed_generation: self.generation,
            replicas: sts_status.map_or(0, |s| s.replicas),
            ready_replicas: sts_status.and_then(|s| s.ready_replicas).unwrap_or(0),
            selector: names.selector_string(),
            leader,
            members: members_for_status(names, report.membership.as_ref(), &previous.members),
            initialized: report.initialized,
            scaling: scaling_status(report.health.progress.as_ref(), current, self.desired),
            certificates: report
                .certificates
                .clone()
                .unwrap_or(previous.certificates.clone()),
            conditions: merged,
        }
    }

    /// The Events for `status` once written: condition flips, and a scaling step newly blocked.
    pub fn events(&self, status: &LogClusterStatus) -> Vec<Note> {
        let previous = &self.previous;
        let mut events = Vec::new();
        for flip in flips(&previous.conditions, &status.conditions) {
            // The first status of a new cluster is not news; its problems are.
            if previous.conditions.is_empty()
                && flip.status == "False"
                && matches!(flip.type_.as_str(), "Progressing" | "Degraded")
            {
                continue;
            }
            let bad = (flip.type_ == "Degraded") == (flip.status == "True");
            events.push(Note {
                type_: if bad {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: format!("{}{}", flip.type_, flip.status),
                action: "Reconcile",
                note: format!("{}: {}", flip.reason, flip.message),
            });
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
            events.push(Note {
                type_: EventType::Warning,
                reason: "ScalingBlocked".to_owned(),
                action: "Scale",
                note: s.message.clone(),
            });
        }
        events
    }
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

#[cfg(test)]
mod tests {
    //! `plan` from plain `Observed` values: no API server, no nodes, no clock.

    use std::sync::Arc;
    use std::time::SystemTime;

    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    use super::*;
    use crate::certificates::{ClientTls, IssuedRecord};
    use crate::controller::observe::ClaimView;
    use crate::crd::LogCluster;
    use crate::resources::BuildSettings;
    use crate::resources::fixtures::cluster_with;
    use crate::rollout::{PodView, Step};
    use crate::scaling::{LeaderView, MemberView};

    const RESYNC: Duration = Duration::from_secs(300);
    const STEP: Duration = Duration::from_secs(5);
    const NEW: &str = "demo-new";
    const OLD: &str = "demo-old";

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn certificates() -> CertificatesOutcome {
        CertificatesOutcome {
            client: ClientTls {
                ca_pem: "ca".into(),
                cert_pem: "cert".into(),
                key_pem: "key".into(),
            },
            statuses: Vec::new(),
            issued: Vec::new(),
            ca_generated: false,
            next_renewal: None,
            limited_by_ca: Vec::new(),
        }
    }

    /// A StatefulSet of `replicas` pods, all ready; `roll` gives its update revision and how
    /// many pods run it.
    fn statefulset(replicas: i32, roll: Option<i32>) -> StatefulSet {
        let status = match roll {
            Some(updated) => json!({"replicas": replicas, "readyReplicas": replicas,
                "observedGeneration": 2, "updateRevision": NEW, "updatedReplicas": updated}),
            None => json!({"replicas": replicas, "readyReplicas": replicas}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": "demo", "namespace": "prod", "generation": 2},
            "spec": {
                "replicas": replicas,
                "serviceName": "demo-nodes",
                "selector": {"matchLabels": {"app.kubernetes.io/name": "logcluster"}},
                "template": {"spec": {"containers": [{"name": "lognode"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"resources": {"requests": {"storage": "10Gi"}}}}]
            },
            "status": status
        }))
        .unwrap()
    }

    /// `leader` leads `voters`, each healthy unless listed in `down`.
    fn led(leader: NodeId, voters: &[NodeId], down: &[NodeId]) -> Nodes {
        Nodes {
            membership: Membership::Led(LeaderView {
                leader,
                members: voters
                    .iter()
                    .map(|&id| MemberView {
                        id,
                        role: if id == leader {
                            Role::Leader
                        } else {
                            Role::Voter
                        },
                        healthy: !down.contains(&id),
                        lag: 0,
                    })
                    .collect(),
                membership_changing: false,
            }),
            reachable: voters
                .iter()
                .copied()
                .filter(|id| !down.contains(id))
                .collect(),
        }
    }

    /// An initialized cluster whose last status lists `voters`.
    fn initialized(spec: serde_json::Value, voters: &[NodeId]) -> Arc<LogCluster> {
        let mut lc = cluster_with(spec);
        let members: Vec<_> = voters
            .iter()
            .map(|&id| {
                json!({"pod": format!("demo-{id}"), "nodeId": id, "role": "Voter",
                "healthy": true, "lag": 0})
            })
            .collect();
        lc.status =
            Some(serde_json::from_value(json!({"initialized": true, "members": members})).unwrap());
        Arc::new(lc)
    }

    /// A live cluster: certificates current, gossip key present, nothing else known yet.
    fn observed(lc: Arc<LogCluster>, sts: Option<StatefulSet>, nodes: Nodes) -> Observed {
        let names = ClusterNames::new(&lc, "cluster.local").unwrap();
        Observed {
            lc,
            names,
            settings: BuildSettings::default(),
            now: now(),
            resync: RESYNC,
            step_interval: STEP,
            statefulset: sts,
            credentials: Credentials::Current(certificates()),
            gossip_key_valid: true,
            nodes: Some(nodes),
            pods: None,
            claims: Vec::new(),
        }
    }

    fn replicas(plan: &Plan) -> Option<i32> {
        plan.objects
            .as_ref()
            .and_then(|o| o.statefulset.spec.as_ref()?.replicas)
    }

    fn max_unavailable(plan: &Plan) -> Option<IntOrString> {
        plan.objects
            .as_ref()
            .and_then(|o| o.pdb.spec.as_ref()?.max_unavailable.clone())
    }

    fn progress(plan: &Plan) -> Progress {
        plan.status
            .report
            .health
            .progress
            .clone()
            .expect("a live plan reports progress")
    }

    fn condition(status: &LogClusterStatus, type_: &str) -> (String, String) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status.clone(), c.reason.clone())
    }

    fn reasons(notes: &[Note]) -> Vec<&str> {
        notes.iter().map(|n| n.reason.as_str()).collect()
    }

    fn pod(node: NodeId, revision: &str) -> PodView {
        PodView {
            node,
            name: format!("demo-{node}"),
            revision: Some(revision.to_owned()),
            ready: true,
            terminating: false,
        }
    }

    #[test]
    fn a_fresh_cluster_gets_every_object_and_one_pod() {
        let mut o = observed(
            Arc::new(cluster_with(json!({}))),
            None,
            Nodes {
                membership: Membership::Unknown("no node answered".into()),
                reachable: BTreeSet::new(),
            },
        );
        o.gossip_key_valid = false;
        let mut certs = certificates();
        certs.ca_generated = true;
        certs.issued = ["demo-node-tls", "demo-operator-tls"]
            .map(|secret_name| IssuedRecord {
                secret_name: secret_name.into(),
                reason: IssueReason::Missing,
                not_after: now() + Duration::from_secs(90 * 24 * 3600),
            })
            .to_vec();
        o.credentials = Credentials::Current(certs);

        let plan = plan(&o).unwrap();
        assert_eq!(replicas(&plan), Some(1));
        assert_eq!(max_unavailable(&plan), Some(IntOrString::Int(0)));
        assert_eq!(plan.step, None, "node 0 has no pod yet");
        assert!(plan.gossip_key.is_some(), "the gossip key is created");
        let Credentials::Current(certs) = &o.credentials else {
            unreachable!()
        };
        assert_eq!(
            reasons(&certificate_events(certs, &o.names)),
            ["CAGenerated", "CertificateIssued", "CertificateIssued"]
        );
        assert!(plan.statefulset_events.is_empty(), "nothing was scaled");
        assert!(
            matches!(
                progress(&plan),
                Progress::Working {
                    phase: ScalingPhase::Bootstrapping,
                    ..
                }
            ),
            "{:?}",
            progress(&plan)
        );
        assert_eq!(plan.requeue_after(), STEP);
        let status = plan.status.render();
        assert!(!status.initialized);
        assert_eq!(
            condition(&status, "Progressing"),
            ("True".to_owned(), "Bootstrapping".to_owned())
        );
        assert_eq!(condition(&status, "CertificatesReady").0, "True");
        // The first status of a new cluster reports its problems, not its not-yet-progress.
        assert!(
            !reasons(&plan.status.events(&status)).contains(&"ProgressingFalse"),
            "{:?}",
            plan.status.events(&status)
        );
    }

    #[test]
    fn node_0_is_initialized_through_the_admin_api() {
        let lc = Arc::new(cluster_with(json!({})));
        let nodes = Nodes {
            membership: Membership::Uninitialized,
            reachable: [0].into(),
        };
        let plan = plan(&observed(lc, Some(statefulset(1, None)), nodes)).unwrap();
        assert_eq!(
            plan.step,
            Some(ClusterStep::Scale {
                action: AdminAction::Initialize,
                leader: None
            })
        );
        // The status records it only once the step went through (the executor's part).
        assert!(!plan.status.report.initialized);
    }

    #[test]
    fn scaling_up_adds_one_pod_at_a_time() {
        let lc = initialized(json!({"replicas": 5}), &[0, 1, 2]);
        let plan3 = plan(&observed(
            lc.clone(),
            Some(statefulset(3, None)),
            led(0, &[0, 1, 2], &[]),
        ))
        .unwrap();
        assert_eq!((replicas(&plan3), plan3.step.clone()), (Some(4), None));
        assert_eq!(reasons(&plan3.statefulset_events), ["StatefulSetScaled"]);
        assert!(
            plan3.statefulset_events[0].note.contains("3 → 4"),
            "{:?}",
            plan3.statefulset_events
        );
        // The new pod runs but gossip has not added it yet: the operator adds it, pods stay.
        let mut nodes = led(0, &[0, 1, 2], &[]);
        nodes.reachable.insert(3);
        let plan4 = plan(&observed(lc.clone(), Some(statefulset(4, None)), nodes)).unwrap();
        assert_eq!(replicas(&plan4), Some(4));
        assert_eq!(
            plan4.step,
            Some(ClusterStep::Scale {
                action: AdminAction::AddNode(3),
                leader: Some(0)
            })
        );
        // Node 3 is a voter: the next pod.
        let plan5 = plan(&observed(
            lc,
            Some(statefulset(4, None)),
            led(0, &[0, 1, 2, 3], &[]),
        ))
        .unwrap();
        assert_eq!((replicas(&plan5), plan5.step.clone()), (Some(5), None));
        assert_eq!(max_unavailable(&plan5), Some(IntOrString::Int(1)));
    }

    #[test]
    fn a_scale_down_that_would_lose_the_quorum_is_refused() {
        let lc = initialized(json!({"replicas": 2}), &[0, 1, 2]);
        let plan = plan(&observed(
            lc,
            Some(statefulset(3, None)),
            led(0, &[0, 1, 2], &[1]),
        ))
        .unwrap();
        assert_eq!((replicas(&plan), plan.step.clone()), (Some(3), None));
        assert!(
            matches!(&progress(&plan), Progress::Blocked { message } if message.contains("quorum needs 2")),
            "{:?}",
            progress(&plan)
        );
        let status = plan.status.render();
        assert_eq!(condition(&status, "Degraded").0, "True");
        let events = plan.status.events(&status);
        let blocked = events
            .iter()
            .find(|e| e.reason == "ScalingBlocked")
            .expect("a ScalingBlocked Event");
        assert_eq!(blocked.type_, EventType::Warning);
    }

    #[test]
    fn a_scale_down_with_the_quorum_intact_removes_the_top_voter_through_the_leader() {
        let lc = initialized(json!({"replicas": 2}), &[0, 1, 2]);
        let plan = plan(&observed(
            lc,
            Some(statefulset(3, None)),
            led(0, &[0, 1, 2], &[]),
        ))
        .unwrap();
        assert_eq!(
            plan.step,
            Some(ClusterStep::Scale {
                action: AdminAction::RemoveNode(2),
                leader: Some(0)
            })
        );
        assert_eq!(
            replicas(&plan),
            Some(3),
            "the pod stays until the node left"
        );
        assert_eq!(
            ClusterStep::scale_note(AdminAction::RemoveNode(2)).reason,
            "NodeRemoved"
        );
    }

    #[test]
    fn the_claim_of_a_removed_node_is_deleted_when_asked_to() {
        let lc = initialized(
            json!({"replicas": 2, "storage": {"pvcRetention": {"whenScaled": "Delete"}}}),
            &[0, 1],
        );
        let mut o = observed(lc, Some(statefulset(2, None)), led(0, &[0, 1], &[]));
        o.claims = (0..3)
            .map(|ordinal| ClaimView {
                name: format!("data-demo-{ordinal}"),
                ordinal,
                requested_bytes: Some(10 << 30),
            })
            .collect();
        let plan = plan(&o).unwrap();
        let deleted: Vec<&str> = plan.claims.delete.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(deleted, ["data-demo-2"]);
        assert!(plan.claims.grow.is_empty(), "every claim has its size");
    }

    #[test]
    fn a_roll_replaces_followers_highest_first_and_the_leader_last() {
        let lc = initialized(json!({}), &[0, 1, 2]);
        let roll = |pods: Vec<PodView>, updated| {
            let mut o = observed(
                lc.clone(),
                Some(statefulset(3, Some(updated))),
                led(1, &[0, 1, 2], &[]),
            );
            o.pods = Some(pods);
            plan(&o).unwrap()
        };
        let first = roll(vec![pod(0, OLD), pod(1, OLD), pod(2, OLD)], 0);
        let Some(ClusterStep::Roll { step, generation }) = &first.step else {
            panic!("no roll step: {:?}", first.step);
        };
        assert!(
            matches!(step, Step::Evict { pod, .. } if pod == "demo-2"),
            "{step:?}"
        );
        assert_eq!(*generation, Some(2), "valid for the StatefulSet it saw");
        assert!(matches!(
            progress(&first),
            Progress::Working {
                phase: ScalingPhase::RollingUpdate,
                ..
            }
        ));
        assert_eq!(first.requeue_after(), STEP);

        let second = roll(vec![pod(0, OLD), pod(1, OLD), pod(2, NEW)], 1);
        assert!(
            matches!(&second.step, Some(ClusterStep::Roll { step: Step::Evict { pod, .. }, .. }) if pod == "demo-0"),
            "{:?}",
            second.step
        );
        // Only the leader's pod is left: leadership moves first, to an updated voter.
        let last = roll(vec![pod(0, NEW), pod(1, OLD), pod(2, NEW)], 2);
        assert!(
            matches!(
                &last.step,
                Some(ClusterStep::Roll {
                    step: Step::TransferLeader { from: 1, .. },
                    ..
                })
            ),
            "{:?}",
            last.step
        );
    }

    #[test]
    fn a_roll_waits_for_a_deleted_pod_to_come_back() {
        let lc = initialized(json!({}), &[0, 1, 2]);
        let mut o = observed(lc, Some(statefulset(3, Some(1))), led(0, &[0, 1, 2], &[]));
        // demo-1 was deleted and is not recreated yet.
        o.pods = Some(vec![pod(0, OLD), pod(2, NEW)]);
        let plan = plan(&o).unwrap();
        assert!(
            matches!(&plan.step, Some(ClusterStep::Roll { step: Step::Wait(why), .. }) if why.contains("2 of 3")),
            "{:?}",
            plan.step
        );
        // While terminating it is waited for too.
        let mut o2 = o.clone();
        let mut terminating = pod(1, OLD);
        terminating.terminating = true;
        o2.pods = Some(vec![pod(0, OLD), terminating, pod(2, NEW)]);
        let plan2 = super::plan(&o2).unwrap();
        assert!(
            matches!(&plan2.step, Some(ClusterStep::Roll { step: Step::Wait(why), .. }) if why.contains("demo-1 to terminate")),
            "{:?}",
            plan2.step
        );
    }

    #[test]
    fn no_roll_while_scaling_or_when_the_statefulset_says_every_pod_is_updated() {
        let lc = initialized(json!({"replicas": 4}), &[0, 1, 2]);
        let mut o = observed(
            lc.clone(),
            Some(statefulset(3, Some(0))),
            led(0, &[0, 1, 2], &[]),
        );
        o.pods = Some(vec![pod(0, OLD), pod(1, OLD), pod(2, OLD)]);
        assert_eq!(plan(&o).unwrap().step, None, "scaling comes first");
        let steady = observed(
            initialized(json!({}), &[0, 1, 2]),
            Some(statefulset(3, None)),
            led(0, &[0, 1, 2], &[]),
        );
        let plan = plan(&steady).unwrap();
        assert_eq!(
            (plan.step.clone(), progress(&plan)),
            (None, Progress::Steady)
        );
        assert_eq!(plan.requeue_after(), RESYNC);
    }

    #[test]
    fn a_due_certificate_renewal_is_reported_and_the_next_one_requeues_the_reconcile() {
        let lc = initialized(json!({}), &[0, 1, 2]);
        let mut o = observed(lc, Some(statefulset(3, None)), led(0, &[0, 1, 2], &[]));
        let mut certs = certificates();
        certs.issued = vec![IssuedRecord {
            secret_name: "demo-node-tls".into(),
            reason: IssueReason::RenewalDue,
            not_after: now() + Duration::from_secs(90 * 24 * 3600),
        }];
        // Another certificate is due in ten seconds.
        certs.next_renewal = Some(now() + Duration::from_secs(10));
        assert_eq!(
            reasons(&certificate_events(&certs, &o.names)),
            ["CertificateRenewed"]
        );
        o.credentials = Credentials::Current(certs);
        let plan = plan(&o).unwrap();
        let status = plan.status.render();
        assert_eq!(
            condition(&status, "CertificatesReady"),
            ("True".to_owned(), "Renewed".to_owned())
        );
        assert_eq!(progress(&plan), Progress::Steady);
        assert_eq!(plan.requeue_after(), Duration::from_secs(11));
    }

    #[test]
    fn paused_or_without_certificates_only_the_status_is_written() {
        let mut o = observed(
            initialized(json!({"paused": true, "replicas": 5}), &[0, 1, 2]),
            Some(statefulset(3, None)),
            led(0, &[0, 1, 2], &[]),
        );
        o.credentials = Credentials::Paused;
        let paused = plan(&o).unwrap();
        assert!(paused.objects.is_none() && paused.step.is_none() && paused.gossip_key.is_none());
        assert_eq!(
            condition(&paused.status.render(), "Progressing").1,
            "Paused"
        );
        assert_eq!(paused.requeue_after(), RESYNC);

        o.credentials = Credentials::Failed("Secret prod/ext-ca: not found".into());
        let failed = plan(&o).unwrap();
        assert!(failed.objects.is_none() && failed.step.is_none());
        assert_eq!(
            condition(&failed.status.render(), "CertificatesReady"),
            ("False".to_owned(), "CertificateError".to_owned())
        );
    }
}
