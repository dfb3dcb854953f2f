//! The pure core of a reconcile: [`plan`] turns an [`Observed`] into a [`Plan`] — the objects to
//! apply, at most one step on the cluster (a scaling action through the admin API, or one step of
//! a rolling update), the volume claims to grow or delete, the Events to publish and the status
//! to write. No I/O and no clock: the time comes in [`Observed::now`].
//!
//! A step can fail or be refused when [`execute`](super::execute) takes it; the status and the
//! requeue interval of the plan are those of success, and [`StatusPlan::report`] is what the
//! executor adjusts when a step does not go through.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

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
    /// About what the certificate stage did (it runs before the nodes can be asked).
    pub certificate_events: Vec<Note>,
    /// `(Secret, expiry)` of every certificate, for the expiry metric.
    pub certificate_expiry: Option<Vec<(String, SystemTime)>>,
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
        certificate_events: Vec::new(),
        certificate_expiry: None,
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
        certificate_events: certificate_events(certs, names),
        certificate_expiry: Some(
            certs
                .statuses
                .iter()
                .map(|(s, t)| (s.secret_name.clone(), *t))
                .collect(),
        ),
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

fn certificate_events(certs: &CertificatesOutcome, names: &ClusterNames) -> Vec<Note> {
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
