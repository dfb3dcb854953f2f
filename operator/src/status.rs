//! Status conditions: `Ready`, `Available`, `Progressing`, `Degraded`, `CertificatesReady`.
//!
//! [`conditions`] derives the desired conditions from a [`Health`] summary; [`merge_conditions`]
//! keeps each condition's `lastTransitionTime` unless its status flips, so the time says when a
//! condition became what it is, not when the operator last looked. [`flips`] lists the
//! transitions, which become Events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::ScalingPhase;
use crate::scaling::{Membership, Progress, quorum};

pub const READY: &str = "Ready";
pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const CERTIFICATES_READY: &str = "CertificatesReady";

/// A condition before timestamps are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn cond(
    type_: &'static str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
) -> DesiredCondition {
    DesiredCondition {
        type_,
        status,
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// How certificates went in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateHealth {
    /// Every certificate is valid.
    Valid {
        /// Secrets renewed now (inside their renewal window).
        renewed: Vec<String>,
        /// Secrets issued now for another reason (new, names changed, other CA).
        issued: Vec<String>,
        /// Certificates that can no longer be renewed because the CA expires first.
        limited_by_ca: Vec<String>,
        /// Earliest renewal (RFC 3339), for the message.
        next_renewal: Option<String>,
    },
    /// Certificates could not be made current.
    Failed(String),
}

/// Everything the conditions are derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub paused: bool,
    pub initialized: bool,
    pub desired: u32,
    pub ready_replicas: u32,
    /// `None` when the nodes were not asked (paused before the first reconcile, or certificates
    /// failed so there was no client identity).
    pub membership: Option<Membership>,
    /// `None` when paused or when the step could not be decided.
    pub progress: Option<Progress>,
    /// `None` when certificates were not looked at (paused): the previous condition stays.
    pub certificates: Option<CertificateHealth>,
    /// Why growing the volumes failed, if it did.
    pub volume_problem: Option<String>,
}

/// The reason a `CertificatesReady=True` condition keeps when nothing was issued now: a renewal
/// stays on record until the next issuance.
fn kept_certificate_reason(previous: Option<&Condition>) -> &'static str {
    match previous {
        Some(c) if c.status == "True" && c.reason == "Renewed" => "Renewed",
        Some(c) if c.status == "True" && c.reason == "Issued" => "Issued",
        _ => "Valid",
    }
}

/// The desired conditions. `previous` are the conditions in the current status.
pub fn conditions(h: &Health, previous: &[Condition]) -> Vec<DesiredCondition> {
    let prev = |t: &str| previous.iter().find(|c| c.type_ == t);

    let certs = match &h.certificates {
        None => match prev(CERTIFICATES_READY) {
            Some(c) => cond(
                CERTIFICATES_READY,
                c.status == "True",
                &c.reason,
                c.message.clone(),
            ),
            None => cond(
                CERTIFICATES_READY,
                false,
                "Unknown",
                "certificates were not checked yet",
            ),
        },
        Some(CertificateHealth::Failed(message)) => cond(
            CERTIFICATES_READY,
            false,
            "CertificateError",
            message.clone(),
        ),
        Some(CertificateHealth::Valid {
            renewed,
            issued,
            next_renewal,
            ..
        }) => {
            let next = next_renewal
                .as_ref()
                .map(|t| format!("; next renewal at {t}"))
                .unwrap_or_default();
            if !renewed.is_empty() {
                cond(
                    CERTIFICATES_READY,
                    true,
                    "Renewed",
                    format!("renewed {}{next}", renewed.join(", ")),
                )
            } else if !issued.is_empty() {
                cond(
                    CERTIFICATES_READY,
                    true,
                    "Issued",
                    format!("issued {}{next}", issued.join(", ")),
                )
            } else {
                let reason = kept_certificate_reason(prev(CERTIFICATES_READY));
                let message = match prev(CERTIFICATES_READY) {
                    Some(c) if c.reason == reason && reason != "Valid" => c.message.clone(),
                    _ => format!("all certificates are valid{next}"),
                };
                cond(CERTIFICATES_READY, true, reason, message)
            }
        }
    };
    let certs_ok = certs.status;

    let (available, voters, healthy) = match &h.membership {
        Some(Membership::Led(view)) => {
            let voters: Vec<_> = view.members.iter().filter(|m| m.role.votes()).collect();
            let healthy = voters.iter().filter(|m| m.healthy).count();
            let n = u32::try_from(voters.len()).unwrap_or(u32::MAX);
            let healthy_u = u32::try_from(healthy).unwrap_or(0);
            let a = if healthy_u >= quorum(n) {
                cond(
                    AVAILABLE,
                    true,
                    "QuorumAvailable",
                    format!(
                        "node {} leads; {healthy} of {} voters healthy",
                        view.leader,
                        voters.len()
                    ),
                )
            } else {
                cond(
                    AVAILABLE,
                    false,
                    "QuorumLost",
                    format!(
                        "{healthy} of {} voters healthy; a quorum needs {}",
                        voters.len(),
                        quorum(n)
                    ),
                )
            };
            (a, voters.len(), healthy)
        }
        Some(Membership::Uninitialized) if !h.initialized => (
            cond(
                AVAILABLE,
                false,
                "NotInitialized",
                "the Raft cluster is not initialized yet",
            ),
            0,
            0,
        ),
        Some(Membership::Uninitialized) => (
            cond(
                AVAILABLE,
                false,
                "DataLost",
                "the nodes report no membership although the cluster was initialized",
            ),
            0,
            0,
        ),
        Some(Membership::Unknown(reason)) => {
            (cond(AVAILABLE, false, "NoLeader", reason.clone()), 0, 0)
        }
        None => (
            cond(
                AVAILABLE,
                false,
                "Unknown",
                "the nodes were not asked (see CertificatesReady)",
            ),
            0,
            0,
        ),
    };

    let progressing = if h.paused {
        cond(
            PROGRESSING,
            false,
            "Paused",
            "spec.paused is set: the operator changes nothing",
        )
    } else {
        match &h.progress {
            Some(Progress::Working { phase, message }) => {
                cond(PROGRESSING, true, phase_reason(*phase), message.clone())
            }
            Some(Progress::Blocked { message }) => {
                cond(PROGRESSING, false, "ScalingBlocked", message.clone())
            }
            Some(Progress::Steady) => cond(
                PROGRESSING,
                false,
                "Complete",
                format!("{} of {} nodes are voters", h.desired, h.desired),
            ),
            None => cond(
                PROGRESSING,
                false,
                "Unknown",
                "no scaling step could be decided",
            ),
        }
    };

    let mut degraded_reasons = Vec::new();
    if let Some(Progress::Blocked { message }) = &h.progress {
        degraded_reasons.push(("ScalingBlocked", message.clone()));
    }
    if let Some(CertificateHealth::Failed(message)) = &h.certificates {
        degraded_reasons.push(("CertificateError", message.clone()));
    }
    if let Some(problem) = &h.volume_problem {
        degraded_reasons.push(("VolumeResizeFailed", problem.clone()));
    }
    if let Some(CertificateHealth::Valid { limited_by_ca, .. }) = &h.certificates
        && !limited_by_ca.is_empty()
    {
        degraded_reasons.push((
            "CAExpiring",
            format!(
                "the CA expires before {} can be renewed",
                limited_by_ca.join(", ")
            ),
        ));
    }
    if voters > healthy {
        degraded_reasons.push((
            "UnhealthyVoters",
            format!("{} of {voters} voters are unhealthy", voters - healthy),
        ));
    }
    if h.initialized && !available.status && available.reason != "Unknown" {
        degraded_reasons.push((static_reason(&available.reason), available.message.clone()));
    }
    let degraded = match degraded_reasons.first() {
        Some((reason, message)) => cond(DEGRADED, true, reason, message.clone()),
        None => cond(DEGRADED, false, "AsExpected", "no problems found"),
    };

    let steady = matches!(h.progress, Some(Progress::Steady));
    let ready = if !certs_ok {
        cond(READY, false, "CertificatesNotReady", certs.message.clone())
    } else if !available.status {
        cond(READY, false, "NotAvailable", available.message.clone())
    } else if degraded.status {
        cond(READY, false, "Degraded", degraded.message.clone())
    } else if h.ready_replicas < h.desired {
        cond(
            READY,
            false,
            "PodsNotReady",
            format!("{} of {} pods are ready", h.ready_replicas, h.desired),
        )
    } else if !steady && !h.paused {
        cond(READY, false, "Progressing", progressing.message.clone())
    } else {
        cond(
            READY,
            true,
            "Ready",
            format!("{} nodes ready, quorum available", h.desired),
        )
    };

    vec![ready, available, progressing, degraded, certs]
}

/// Reasons are a fixed vocabulary; this maps one borrowed from another condition back to it.
fn static_reason(reason: &str) -> &'static str {
    match reason {
        "QuorumLost" => "QuorumLost",
        "DataLost" => "DataLost",
        "NoLeader" => "NoLeader",
        "NotInitialized" => "NotInitialized",
        _ => "NotAvailable",
    }
}

fn phase_reason(phase: ScalingPhase) -> &'static str {
    match phase {
        ScalingPhase::Bootstrapping => "Bootstrapping",
        ScalingPhase::ScalingUp => "ScalingUp",
        ScalingPhase::ScalingDown => "ScalingDown",
        ScalingPhase::Waiting => "Waiting",
        ScalingPhase::RollingUpdate => "RollingUpdate",
        ScalingPhase::Blocked => "ScalingBlocked",
    }
}

/// Attaches timestamps: `lastTransitionTime` is kept from `previous` unless the status flipped.
pub fn merge_conditions(
    previous: &[Condition],
    desired: Vec<DesiredCondition>,
    now: &Time,
    generation: Option<i64>,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason,
                message: d.message,
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

/// A condition that changed status (or appeared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Conditions whose status differs from `previous` (new ones included).
pub fn flips(previous: &[Condition], current: &[Condition]) -> Vec<Flip> {
    current
        .iter()
        .filter(|c| {
            previous
                .iter()
                .find(|p| p.type_ == c.type_)
                .is_none_or(|p| p.status != c.status)
        })
        .map(|c| Flip {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::scaling::{LeaderView, MemberView, Role};

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn led(healthy: &[bool]) -> Membership {
        Membership::Led(LeaderView {
            leader: 0,
            members: healthy
                .iter()
                .enumerate()
                .map(|(i, &h)| MemberView {
                    id: i as u64,
                    role: if i == 0 { Role::Leader } else { Role::Voter },
                    healthy: h,
                    lag: 0,
                })
                .collect(),
            membership_changing: false,
        })
    }

    fn valid() -> CertificateHealth {
        CertificateHealth::Valid {
            renewed: vec![],
            issued: vec![],
            limited_by_ca: vec![],
            next_renewal: None,
        }
    }

    fn healthy_cluster() -> Health {
        Health {
            paused: false,
            initialized: true,
            desired: 3,
            ready_replicas: 3,
            membership: Some(led(&[true, true, true])),
            progress: Some(Progress::Steady),
            certificates: Some(valid()),
            volume_problem: None,
        }
    }

    fn get<'a>(conds: &'a [DesiredCondition], t: &str) -> &'a DesiredCondition {
        conds.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_healthy_steady_cluster_is_ready_and_not_degraded() {
        let c = conditions(&healthy_cluster(), &[]);
        assert!(get(&c, READY).status);
        assert!(get(&c, AVAILABLE).status);
        assert!(!get(&c, PROGRESSING).status);
        assert!(!get(&c, DEGRADED).status);
        assert!(get(&c, CERTIFICATES_READY).status);
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn one_unhealthy_voter_degrades_but_keeps_availability() {
        let mut h = healthy_cluster();
        h.membership = Some(led(&[true, true, false]));
        let c = conditions(&h, &[]);
        assert!(get(&c, AVAILABLE).status);
        assert_eq!(get(&c, DEGRADED).reason, "UnhealthyVoters");
        assert!(!get(&c, READY).status);
    }

    #[test]
    fn losing_the_quorum_makes_the_cluster_unavailable() {
        let mut h = healthy_cluster();
        h.membership = Some(led(&[true, false, false]));
        let c = conditions(&h, &[]);
        assert_eq!(
            (
                get(&c, AVAILABLE).status,
                get(&c, AVAILABLE).reason.as_str()
            ),
            (false, "QuorumLost")
        );
        assert_eq!(get(&c, READY).reason, "NotAvailable");
    }

    #[test]
    fn a_blocked_scale_down_shows_in_progressing_and_degraded() {
        let mut h = healthy_cluster();
        h.progress = Some(Progress::Blocked {
            message: "would break quorum".into(),
        });
        let c = conditions(&h, &[]);
        assert_eq!(get(&c, PROGRESSING).reason, "ScalingBlocked");
        assert_eq!(get(&c, DEGRADED).reason, "ScalingBlocked");
        assert_eq!(get(&c, DEGRADED).message, "would break quorum");
    }

    #[test]
    fn scaling_is_progressing_and_not_ready() {
        let mut h = healthy_cluster();
        h.progress = Some(Progress::Working {
            phase: ScalingPhase::ScalingUp,
            message: "adding node 3".into(),
        });
        let c = conditions(&h, &[]);
        assert_eq!(
            (
                get(&c, PROGRESSING).status,
                get(&c, PROGRESSING).reason.as_str()
            ),
            (true, "ScalingUp")
        );
        assert_eq!(get(&c, READY).reason, "Progressing");
    }

    #[test]
    fn paused_clusters_say_so() {
        let mut h = healthy_cluster();
        h.paused = true;
        h.progress = None;
        h.certificates = None;
        let before = merge_conditions(&[], conditions(&healthy_cluster(), &[]), &at(1), Some(1));
        let c = conditions(&h, &before);
        assert_eq!(get(&c, PROGRESSING).reason, "Paused");
        assert!(
            get(&c, READY).status,
            "pausing does not make a healthy cluster unready"
        );
        // Certificates are not looked at while paused: their condition stays as it was.
        assert_eq!(get(&c, CERTIFICATES_READY).reason, "Valid");
        assert!(get(&c, CERTIFICATES_READY).status);
    }

    #[test]
    fn a_failed_volume_resize_degrades() {
        let mut h = healthy_cluster();
        h.volume_problem = Some("storage class does not allow expansion".into());
        let c = conditions(&h, &[]);
        assert_eq!(get(&c, DEGRADED).reason, "VolumeResizeFailed");
    }

    #[test]
    fn a_renewal_is_recorded_until_the_next_issuance() {
        let mut h = healthy_cluster();
        h.certificates = Some(CertificateHealth::Valid {
            renewed: vec!["demo-node-tls".into()],
            issued: vec![],
            limited_by_ca: vec![],
            next_renewal: Some("2030-01-01T00:00:00Z".into()),
        });
        let first = merge_conditions(&[], conditions(&h, &[]), &at(100), Some(1));
        let cert = first
            .iter()
            .find(|c| c.type_ == CERTIFICATES_READY)
            .unwrap();
        assert_eq!(cert.reason, "Renewed");
        assert!(cert.message.contains("demo-node-tls"));
        // Next reconcile, nothing renewed: the record stays.
        h.certificates = Some(valid());
        let second = merge_conditions(&first, conditions(&h, &first), &at(200), Some(1));
        let cert2 = second
            .iter()
            .find(|c| c.type_ == CERTIFICATES_READY)
            .unwrap();
        assert_eq!(
            (cert2.reason.as_str(), &cert2.message),
            ("Renewed", &cert.message)
        );
        assert_eq!(cert2.last_transition_time, at(100));
    }

    #[test]
    fn certificate_failures_make_everything_clear() {
        let mut h = healthy_cluster();
        h.certificates = Some(CertificateHealth::Failed(
            "Secret prod/ext-ca: not found".into(),
        ));
        h.membership = None;
        let c = conditions(&h, &[]);
        assert_eq!(get(&c, CERTIFICATES_READY).reason, "CertificateError");
        assert_eq!(get(&c, READY).reason, "CertificatesNotReady");
        assert_eq!(get(&c, DEGRADED).reason, "CertificateError");
    }

    #[test]
    fn transition_time_changes_only_when_the_status_flips() {
        let h = healthy_cluster();
        let t1 = merge_conditions(&[], conditions(&h, &[]), &at(100), Some(1));
        assert!(t1.iter().all(|c| c.last_transition_time == at(100)));
        // Same statuses, different message: times stay.
        let mut h2 = h.clone();
        h2.membership = Some(Membership::Led(match led(&[true, true, true]) {
            Membership::Led(mut v) => {
                v.leader = 0;
                v
            }
            other => panic!("{other:?}"),
        }));
        let t2 = merge_conditions(&t1, conditions(&h2, &t1), &at(200), Some(2));
        assert!(
            t2.iter().all(|c| c.last_transition_time == at(100)),
            "{t2:?}"
        );
        assert!(t2.iter().all(|c| c.observed_generation == Some(2)));
        assert!(flips(&t1, &t2).is_empty());
        // Ready flips: only Ready (and what flipped with it) get the new time.
        let mut h3 = h.clone();
        h3.ready_replicas = 2;
        let t3 = merge_conditions(&t2, conditions(&h3, &t2), &at(300), Some(2));
        let ready = t3.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), &ready.last_transition_time),
            ("False", &at(300))
        );
        let avail = t3.iter().find(|c| c.type_ == AVAILABLE).unwrap();
        assert_eq!(avail.last_transition_time, at(100));
        let flipped: Vec<_> = flips(&t2, &t3).into_iter().map(|f| f.type_).collect();
        assert_eq!(flipped, [READY]);
    }

    #[test]
    fn first_conditions_all_count_as_flips() {
        let t1 = merge_conditions(&[], conditions(&healthy_cluster(), &[]), &at(1), None);
        assert_eq!(flips(&[], &t1).len(), 5);
    }
}
