//! The peer and admin APIs refuse subjects without the node / admin role, and write nothing.

use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{AddNodeRequest, ClusterStatusRequest, Member};
use logcluster_api::raft_v1::raft_client::RaftClient;
use logcluster_api::raft_v1::{
    AppendEntriesRequest, Entry, EntryKind, ForwardProduceRequest, Vote, VoteRequest,
};
use tonic::Code;

use crate::support::cluster::{Cluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_cannot_call_the_raft_peer_api() {
    let cluster = Cluster::start(1, Options::default()).await;
    let addr = cluster.nodes[0].addr.to_string();
    let next_before = cluster.nodes[0].raft().log().next_offset();
    let term = cluster.nodes[0].metrics().current_term;
    for subject in ["root", "admin"] {
        let channel = cluster
            .channels_as(subject)
            .channel(&addr)
            .expect("channel");
        let mut client = RaftClient::new(channel);
        let vote = client
            .vote(VoteRequest {
                vote: Some(Vote {
                    term: term + 100,
                    node_id: 7,
                    committed: false,
                }),
                last_log_id: None,
                leadership_transfer: false,
            })
            .await
            .expect_err("vote as a client");
        assert_eq!(vote.code(), Code::PermissionDenied, "{subject}: {vote}");
        let append = client
            .append_entries(AppendEntriesRequest {
                vote: Some(Vote {
                    term: term + 100,
                    node_id: 7,
                    committed: true,
                }),
                prev_log_id: None,
                entries: vec![Entry {
                    index: next_before,
                    term: term + 100,
                    kind: EntryKind::Data as i32,
                    timestamp_ms: 1,
                    payload: bytes::Bytes::from_static(b"injected"),
                    membership: None,
                }],
                leader_commit: None,
            })
            .await
            .expect_err("append as a client");
        assert_eq!(append.code(), Code::PermissionDenied, "{subject}: {append}");
        let forward = client
            .forward_produce(ForwardProduceRequest {
                values: vec![bytes::Bytes::from_static(b"forged")],
            })
            .await
            .expect_err("forward as a client");
        assert_eq!(
            forward.code(),
            Code::PermissionDenied,
            "{subject}: {forward}"
        );
    }
    assert_eq!(
        cluster.nodes[0].raft().log().next_offset(),
        next_before,
        "nothing was written"
    );
    assert_eq!(
        cluster.nodes[0].metrics().current_term,
        term,
        "the term did not move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_without_the_admin_role_cannot_call_the_admin_api() {
    let cluster = Cluster::start(1, Options::default()).await;
    let addr = cluster.nodes[0].addr.to_string();
    let channel = cluster.channels_as("root").channel(&addr).expect("channel");
    let mut client = AdminClient::new(channel);
    let add = client
        .add_node(AddNodeRequest {
            node: Some(Member {
                node_id: 9,
                rpc_addr: "127.0.0.10:1".into(),
            }),
            promote_to_voter: true,
        })
        .await
        .expect_err("add node as a producer");
    assert_eq!(add.code(), Code::PermissionDenied);
    let status = client
        .cluster_status(ClusterStatusRequest {})
        .await
        .expect_err("status as a producer");
    assert_eq!(status.code(), Code::PermissionDenied);
    let members = crate::support::cluster::member_ids(&cluster.nodes[0].metrics());
    assert!(!members.contains(&9), "the membership did not change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_be_reached_is_reported_as_a_connection_failure() {
    let cluster = Cluster::start(1, Options::default()).await;
    // A port that nothing listens on any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.9:0")
        .await
        .expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let channels = cluster.channels_as("node0");
    let mut client = channels.client(&addr).expect("client");
    let status = client
        .forward_produce(ForwardProduceRequest { values: vec![] })
        .await
        .expect_err("nobody listens");
    assert!(
        logcluster_node::raft::network::is_connect_failure(&status),
        "not recognised as a connection failure: {status}"
    );
    // A peer that answers is not a connection failure, even when it refuses.
    let mut client = cluster
        .channels_as("root")
        .client(&cluster.nodes[0].addr.to_string())
        .expect("client");
    let refused = client
        .forward_produce(ForwardProduceRequest { values: vec![] })
        .await
        .expect_err("refused");
    assert!(!logcluster_node::raft::network::is_connect_failure(
        &refused
    ));
}
