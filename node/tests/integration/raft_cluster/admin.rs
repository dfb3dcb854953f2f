//! Membership changes and leadership transfer through `admin.v1`, as the operator calls them.

use std::collections::{BTreeMap, BTreeSet};

use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{
    AddNodeRequest, ClusterStatusRequest, InitializeRequest, Member, MemberRole, RemoveNodeRequest,
    TransferLeaderRequest,
};
use logcluster_node::raft::types::Node;
use openraft::{EntryPayload, Membership, Precondition};
use tonic::Code;

use crate::support::cluster::{
    Cluster, Options, member_ids, produce, read_data, voter_ids, wait_until,
};

fn admin_client(cluster: &Cluster, i: usize) -> AdminClient<tonic::transport::Channel> {
    let channel = cluster
        .channels_as("admin")
        .channel(&cluster.nodes[i].addr.to_string())
        .expect("channel");
    AdminClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_as_a_learner_and_is_promoted_to_voter() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    let offsets = produce(&cluster, leader, (0..50).map(|i| format!("r{i}")).collect()).await;
    let new = cluster.add_node(3).await;
    assert!(
        !cluster.nodes[new].raft().readiness().borrow().0,
        "a new node is not ready"
    );
    // Joining through a follower: the follower forwards AddNode to the leader.
    let follower = (0..3).find(|i| *i != leader).expect("follower");
    let seeds = vec![cluster.nodes[follower].addr.to_string()];
    cluster.nodes[new].raft().join(&seeds).await.expect("join");
    let voters: BTreeSet<u64> = (0..4).collect();
    cluster.wait_all(|m| voter_ids(m) == voters).await;
    let mut ready = cluster.nodes[new].raft().readiness();
    ready.wait_for(|(ready, _)| *ready).await.expect("ready");
    cluster.wait_applied(new, offsets[49]).await;
    let data = read_data(&cluster.nodes[new].commit_log(), 0).await;
    assert_eq!(data.len(), 50);
    // Joining again is a no-op.
    cluster.nodes[new]
        .raft()
        .join(&seeds)
        .await
        .expect("join is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_follower_and_then_the_leader_shrinks_the_membership() {
    let cluster = Cluster::start(4, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (0..4).find(|i| *i != leader).expect("follower");
    let follower_id = cluster.nodes[follower].id;
    // Through another node than the leader: forwarded.
    let mut client = admin_client(&cluster, follower);
    client
        .remove_node(RemoveNodeRequest {
            node_id: follower_id,
        })
        .await
        .expect("remove follower");
    let running_others: Vec<usize> = (0..4).filter(|i| *i != follower).collect();
    for i in &running_others {
        crate::support::cluster::wait_until(&cluster, *i, |m| {
            !member_ids(m).contains(&follower_id)
        })
        .await;
    }
    // Removing it again is a no-op.
    client
        .remove_node(RemoveNodeRequest {
            node_id: follower_id,
        })
        .await
        .expect("remove is idempotent");

    // Removing the leader moves leadership first.
    let leader_id = cluster.nodes[leader].id;
    let mut client = admin_client(&cluster, leader);
    client
        .remove_node(RemoveNodeRequest { node_id: leader_id })
        .await
        .expect("remove leader");
    let survivors: Vec<usize> = running_others
        .into_iter()
        .filter(|i| *i != leader)
        .collect();
    for i in &survivors {
        crate::support::cluster::wait_until(&cluster, *i, |m| {
            !member_ids(m).contains(&leader_id) && m.current_leader.is_some_and(|l| l != leader_id)
        })
        .await;
    }
    // The two survivors still commit writes.
    let offsets = produce(&cluster, survivors[0], vec!["after-removals".to_string()]).await;
    for i in &survivors {
        cluster.wait_applied(*i, offsets[0]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_requested_voter_or_the_most_up_to_date_one() {
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    let target = (0..3).find(|i| *i != leader).expect("target");
    let target_id = cluster.nodes[target].id;
    // Asked on a node that is not the leader: forwarded.
    let mut client = admin_client(&cluster, target);
    let response = client
        .transfer_leader(TransferLeaderRequest {
            node_id: Some(target_id),
        })
        .await
        .expect("transfer")
        .into_inner();
    assert_eq!(response.new_leader_id, target_id);
    cluster
        .wait_all(|m| m.current_leader == Some(target_id))
        .await;

    let mut client = admin_client(&cluster, target);
    let response = client
        .transfer_leader(TransferLeaderRequest { node_id: None })
        .await
        .expect("transfer to any")
        .into_inner();
    assert_ne!(response.new_leader_id, target_id);
    let new_leader = response.new_leader_id;
    cluster
        .wait_all(|m| m.current_leader == Some(new_leader))
        .await;

    let status = admin_client(&cluster, 0)
        .cluster_status(ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.leader_id, Some(new_leader));
    assert_eq!(status.members.len(), 3);
    let leaders: Vec<u64> = status
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Leader as i32)
        .map(|m| m.node_id)
        .collect();
    assert_eq!(leaders, vec![new_leader]);
    assert!(!status.membership_changing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_is_idempotent_for_the_same_voters_and_refused_for_others() {
    let cluster = Cluster::start(1, Options::default()).await;
    let me = Member {
        node_id: 0,
        rpc_addr: cluster.nodes[0].addr.to_string(),
    };
    let mut client = admin_client(&cluster, 0);
    let again = client
        .initialize(InitializeRequest {
            voters: vec![me.clone()],
        })
        .await
        .expect("same voters")
        .into_inner();
    assert!(!again.initialized);
    let other = Member {
        node_id: 5,
        rpc_addr: "127.0.0.6:1".into(),
    };
    let err = client
        .initialize(InitializeRequest {
            voters: vec![me, other],
        })
        .await
        .expect_err("other voters");
    assert_eq!(err.code(), Code::FailedPrecondition);
}

/// openraft proposes a change's second, uniform step from the leader that took the first one,
/// and drops it when leadership moves in between (what the suite met: a returning node's
/// election between the two steps of its own re-admission). The cluster is then left in the
/// joint configuration, where the reconciler and the operator would wait for ever: the leader
/// must finish it on its own. The joint configuration is appended directly, so nothing but the
/// leader's own repair can take the second step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_abandoned_in_its_joint_configuration_is_finished_by_the_leader() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    let new = cluster.add_node(3).await;
    let raft = cluster.nodes[leader].raft().raft().clone();
    let addr = cluster.nodes[new].addr.to_string();
    raft.add_learner(3, Node::new(addr), true)
        .await
        .expect("learner added");

    let observed = cluster.nodes[leader].metrics().membership_config.clone();
    let nodes: BTreeMap<u64, Node> = observed
        .membership()
        .nodes()
        .map(|(id, node)| (*id, node.clone()))
        .collect();
    let old: BTreeSet<u64> = (0..3).collect();
    let voters: BTreeSet<u64> = (0..4).collect();
    let joint = Membership::new(vec![old, voters.clone()], nodes).expect("joint membership");
    let appended = raft
        .append_membership(
            joint,
            EntryPayload::Blank,
            [Precondition::LastMembershipLogId {
                last_membership_log_id: *observed.log_id(),
            }],
        )
        .await
        .expect("joint configuration appended");

    wait_until(&cluster, leader, |m| {
        voter_ids(m) == voters
            && m.membership_config.membership().get_joint_config().len() == 1
            && m.membership_config.log_id().as_ref().map(|id| id.index)
                > Some(appended.log_id.index)
    })
    .await;
    let exposition = cluster.nodes[leader].prometheus.encode();
    assert!(
        exposition.contains("logcluster_raft_joint_configs_finished_total 1"),
        "the leader counts the change it finished:\n{exposition}"
    );
    cluster.wait_all(|m| voter_ids(m) == voters).await;
}

/// Refused pre-votes node `i` answered (from its Prometheus exposition).
fn refused_pre_votes(cluster: &Cluster, i: usize) -> u64 {
    cluster.nodes[i]
        .prometheus
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("logcluster_raft_vote_requests_total{")
                && l.contains(r#"kind="pre_vote""#)
                && l.contains(r#"granted="false""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A voter removed while it was down comes back on its old data, in which it still votes: its
/// election timer fires, since the leader no longer replicates to it. With pre-vote it first asks
/// whether it would be elected, is refused, and never raises its term; without, its raised term
/// deposed the leader as soon as it was re-added — the election that stranded a membership
/// change in the suite (see `raft/joint.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_voter_back_on_old_data_never_deposes_the_leader() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    let leader_id = cluster.nodes[leader].id;
    let returning = (0..3).find(|i| *i != leader).expect("a follower");
    let returning_id = cluster.nodes[returning].id;
    let term = cluster.nodes[leader].metrics().current_term;
    let returning_term = cluster.nodes[returning].metrics().current_term;
    cluster.crash(returning).await;
    admin_client(&cluster, leader)
        .remove_node(RemoveNodeRequest {
            node_id: returning_id,
        })
        .await
        .expect("remove the crashed voter");
    let others: Vec<usize> = (0..3).filter(|i| *i != returning).collect();
    for i in &others {
        wait_until(&cluster, *i, |m| !member_ids(m).contains(&returning_id)).await;
    }

    cluster.add_node(returning_id).await;
    // Wait until the returning node has campaigned and been refused at least twice.
    let deadline = tokio::time::Instant::now() + crate::support::cluster::WAIT;
    while others
        .iter()
        .map(|i| refused_pre_votes(&cluster, *i))
        .sum::<u64>()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the returning node never asked for a pre-vote: {}",
            cluster.nodes[returning].metrics()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        cluster.nodes[returning].metrics().current_term,
        returning_term,
        "a refused pre-vote raises no term"
    );

    // Back in: added and promoted, under the same leader in the same term.
    let addr = cluster.nodes[returning].addr.to_string();
    admin_client(&cluster, leader)
        .add_node(AddNodeRequest {
            node: Some(Member {
                node_id: returning_id,
                rpc_addr: addr,
            }),
            promote_to_voter: true,
        })
        .await
        .expect("re-add the returning node");
    let voters: BTreeSet<u64> = (0..3).collect();
    cluster.wait_all(|m| voter_ids(m) == voters).await;
    let now = cluster.nodes[leader].metrics();
    assert_eq!(
        (now.current_leader, now.current_term),
        (Some(leader_id), term),
        "the leader was never deposed"
    );
}
