//! A voter whose data directory was lost comes back with the same id and an empty log; it must
//! not vote for candidates with history until it has caught up (ARCHITECTURE decision 4), or a
//! stale candidate could win with its vote and lose committed records.

use logcluster_node::raft::pb::ToPb;
use logcluster_node::raft::types::{TypeConfig, Vote, log_id};
use logcluster_node::raft::vote_gate::MARKER;
use openraft::raft::VoteRequest;

use crate::support::cluster::*;

/// Asks node `i` (as peer node 0) to vote in `term` for a candidate whose log ends at
/// `last_log`; returns the gRPC outcome.
async fn ask_vote(
    cluster: &Cluster,
    i: usize,
    term: u64,
    last_log: (u64, u64),
) -> Result<(), tonic::Status> {
    let mut client = cluster
        .channels_as("node0")
        .client(&cluster.nodes[i].addr.to_string())
        .expect("client");
    let request =
        VoteRequest::<TypeConfig>::new(Vote::new(term, 0), Some(log_id(last_log.0, last_log.1)));
    client.vote(request.to_pb()).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wiped_data_directory_does_not_vote_until_it_has_caught_up() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let offsets = produce(&cluster, 0, (0..20).map(|i| format!("r{i}")).collect()).await;
    let last = *offsets.last().expect("offsets");
    for i in 0..3 {
        cluster.wait_applied(i, last).await;
    }
    let term = cluster.nodes[0].metrics().current_term;

    // Everyone stops; node 2 loses its disk and starts alone with the same id and address.
    for i in 0..3 {
        cluster.crash(i).await;
    }
    let wiped = cluster.dir.path().join("node2");
    std::fs::remove_dir_all(&wiped).expect("wipe node 2");
    let two = cluster.add_node(2).await;
    assert!(wiped.join(MARKER).exists(), "a fresh node marks itself");

    let refused = ask_vote(&cluster, two, term + 5, (term, last))
        .await
        .expect_err("a candidate with history is refused");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(refused.message().contains("has not caught up"), "{refused}");
    // A new cluster's first election (the candidate holds only the term-0 initialize entry) is
    // still answered, else a cluster of new nodes could never elect anyone.
    ask_vote(&cluster, two, 1, (0, 0))
        .await
        .expect("the first election of a new cluster is answered");

    // Nodes 0 and 1 come back with their data, elect a leader and catch node 2 up.
    cluster.add_node(0).await;
    cluster.add_node(1).await;
    cluster.wait_for_leader().await;
    let more = produce(&cluster, 0, vec!["after".into()]).await;
    cluster.wait_applied(two, more[0]).await;
    let data = read_data(&cluster.nodes[two].raft().commit_log(), 0).await;
    assert_eq!(data.len(), 21, "node 2 holds every record again");
    let deadline = tokio::time::Instant::now() + WAIT;
    while wiped.join(MARKER).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 2 caught up but still does not vote"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // An ordinary (stale-term) vote request now gets an ordinary answer, not the refusal.
    ask_vote(&cluster, two, 1, (term, last))
        .await
        .expect("a caught-up node answers vote requests");
}
