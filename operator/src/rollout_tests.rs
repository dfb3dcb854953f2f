use super::*;
use crate::scaling::{LeaderView, MemberView, Role};

const NEW: &str = "demo-new";
const OLD: &str = "demo-old";

fn pod(node: NodeId, revision: &str) -> PodView {
    PodView {
        node,
        name: format!("demo-{node}"),
        revision: Some(revision.to_owned()),
        ready: true,
        terminating: false,
    }
}

/// Voters `0..n`, `leader` leading, all healthy and caught up.
fn led(leader: NodeId, n: NodeId) -> Membership {
    Membership::Led(LeaderView {
        leader,
        members: (0..n)
            .map(|id| MemberView {
                id,
                role: if id == leader {
                    Role::Leader
                } else {
                    Role::Voter
                },
                healthy: true,
                lag: 0,
            })
            .collect(),
        membership_changing: false,
    })
}

fn step(pods: &[PodView], membership: &Membership) -> Step {
    plan(&Observed {
        update_revision: Some(NEW),
        replicas: u32::try_from(pods.len()).unwrap_or(u32::MAX),
        pods,
        membership,
    })
}

fn evicts(step: &Step) -> Option<NodeId> {
    match step {
        Step::Evict { node, .. } => Some(*node),
        _ => None,
    }
}

#[test]
fn nothing_to_do_when_every_pod_runs_the_update_revision() {
    let pods = [pod(0, NEW), pod(1, NEW), pod(2, NEW)];
    assert_eq!(step(&pods, &led(1, 3)), Step::Done);
}

#[test]
fn nothing_to_compare_before_the_statefulset_controller_saw_the_spec() {
    let pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
    let membership = led(1, 3);
    let o = Observed {
        update_revision: None,
        replicas: 3,
        pods: &pods,
        membership: &membership,
    };
    assert_eq!(plan(&o), Step::Done);
}

#[test]
fn followers_go_first_highest_ordinal_first_and_the_leader_last_after_a_transfer() {
    // Leader is node 2, the pod Kubernetes' RollingUpdate would replace first.
    let membership = led(2, 3);
    let mut pods = vec![pod(0, OLD), pod(1, OLD), pod(2, OLD)];
    assert_eq!(evicts(&step(&pods, &membership)), Some(1));
    pods[1] = pod(1, NEW);
    assert_eq!(evicts(&step(&pods, &membership)), Some(0));
    pods[0] = pod(0, NEW);
    // Only the leader's pod is left: leadership moves first, to an updated voter.
    match step(&pods, &membership) {
        Step::TransferLeader { from: 2, to } => assert!(to == 0 || to == 1, "to {to}"),
        other => panic!("expected a transfer, got {other:?}"),
    }
    // Once node 0 leads, node 2 is a follower like any other.
    assert_eq!(evicts(&step(&pods, &led(0, 3))), Some(2));
}

#[test]
fn the_successor_is_the_most_caught_up_updated_voter() {
    let Membership::Led(mut view) = led(2, 3) else {
        unreachable!()
    };
    view.members[0].lag = 40;
    view.members[1].lag = 3;
    let pods = [pod(0, NEW), pod(1, NEW), pod(2, OLD)];
    assert_eq!(
        step(&pods, &Membership::Led(view)),
        Step::TransferLeader { from: 2, to: 1 }
    );
}

#[test]
fn a_roll_waits_while_the_cluster_is_not_whole() {
    let pods = [pod(0, OLD), pod(1, NEW), pod(2, OLD)];
    let whole = led(0, 3);

    let mut not_ready = pods.clone();
    not_ready[1].ready = false;
    assert!(matches!(step(&not_ready, &whole), Step::Wait(m) if m.contains("demo-1 to be ready")));

    let mut terminating = pods.clone();
    terminating[2].terminating = true;
    assert!(matches!(step(&terminating, &whole), Step::Wait(m) if m.contains("terminate")));

    let missing = &pods[..2];
    let o = Observed {
        update_revision: Some(NEW),
        replicas: 3,
        pods: missing,
        membership: &whole,
    };
    assert!(matches!(plan(&o), Step::Wait(m) if m.contains("recreate")));

    let Membership::Led(view) = whole.clone() else {
        unreachable!()
    };
    let mut lagging = view.clone();
    lagging.members[1].lag = CAUGHT_UP_LAG + 1;
    assert!(
        matches!(step(&pods, &Membership::Led(lagging)), Step::Wait(m) if m.contains("catch up"))
    );

    let mut unhealthy = view.clone();
    unhealthy.members[1].healthy = false;
    assert!(
        matches!(step(&pods, &Membership::Led(unhealthy)), Step::Wait(m) if m.contains("healthy"))
    );

    let mut learner = view.clone();
    learner.members[1].role = Role::Learner;
    assert!(matches!(step(&pods, &Membership::Led(learner)), Step::Wait(m) if m.contains("voter")));

    let mut changing = view.clone();
    changing.membership_changing = true;
    assert!(
        matches!(step(&pods, &Membership::Led(changing)), Step::Wait(m) if m.contains("in flight"))
    );

    let mut rejoining = view;
    rejoining.members.retain(|m| m.id != 1);
    assert!(
        matches!(step(&pods, &Membership::Led(rejoining)), Step::Wait(m) if m.contains("rejoin"))
    );

    let unknown = Membership::Unknown("no leader is elected".into());
    assert!(matches!(step(&pods, &unknown), Step::Wait(m) if m.contains("leader")));
}

#[test]
fn a_lone_leader_is_replaced_without_a_transfer() {
    let pods = [pod(0, OLD)];
    assert_eq!(evicts(&step(&pods, &led(0, 1))), Some(0));
}

#[test]
fn unhealthy_voters_stop_the_roll_before_the_leader_is_moved() {
    let Membership::Led(mut view) = led(2, 3) else {
        unreachable!()
    };
    let pods = [pod(0, NEW), pod(1, NEW), pod(2, OLD)];
    for m in &mut view.members {
        if m.id != 2 {
            m.healthy = false;
        }
    }
    // Unhealthy voters stop the roll before the transfer is even considered.
    assert!(matches!(step(&pods, &Membership::Led(view)), Step::Wait(_)));
}

fn statefulset(generation: i64, observed: i64, replicas: i32, updated: i32) -> StatefulSet {
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    let mut sts = StatefulSet::default();
    sts.metadata.generation = Some(generation);
    sts.status = Some(StatefulSetStatus {
        observed_generation: Some(observed),
        replicas,
        updated_replicas: Some(updated),
        update_revision: Some(NEW.to_owned()),
        ..StatefulSetStatus::default()
    });
    sts
}

#[test]
fn the_statefulset_status_tells_when_no_pod_needs_listing() {
    assert!(settled(&statefulset(4, 4, 3, 3)), "every pod updated");
    assert!(
        !settled(&statefulset(4, 4, 3, 2)),
        "one pod on an old revision"
    );
    assert_eq!(update_revision(&statefulset(4, 4, 3, 2)), Some(NEW));
    // The controller has not seen generation 5: its updateRevision is the previous template's.
    assert!(settled(&statefulset(5, 4, 3, 3)));
    assert_eq!(update_revision(&statefulset(5, 4, 3, 3)), None);
    assert!(settled(&StatefulSet::default()), "no status yet");
}
