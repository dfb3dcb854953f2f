//! Retention purges the log; a node that needs purged entries gets a metadata-only snapshot and
//! its log starts right after it.

use std::time::Duration;

use logcluster_node::commit_log::CommitLogError;
use logcluster_node::log::{FsyncPolicy, LogConfig};

use crate::support::cluster::{Cluster, Options, produce, read_data, voter_ids, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_need_purged_entries_receive_a_snapshot_and_their_log_starts_after_it() {
    let options = Options {
        log: LogConfig {
            // 16 entries per segment, so retention has whole segments to delete.
            max_index_bytes: 12 * 16,
            fsync: FsyncPolicy::Always,
            ..LogConfig::default()
        },
        retention_bytes: Some(8 << 10),
        retention_interval: Duration::from_millis(200),
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let leader = cluster.wait_for_leader().await;
    // A follower goes away for a while (graceful stop, data kept).
    let away = (0..3).find(|i| *i != leader).expect("follower");
    let away_last = cluster.nodes[away].raft().log().next_offset();
    cluster.shutdown(away).await;

    let value = "x".repeat(100);
    for _ in 0..40 {
        produce(&cluster, leader, (0..10).map(|_| value.clone()).collect()).await;
    }
    // Retention purges well past what the stopped follower holds.
    wait_until(&cluster, leader, |m| {
        m.purged.is_some_and(|p| p.index > away_last + 32)
    })
    .await;
    let leader_first = cluster.nodes[leader].raft().log().first_offset();
    assert!(
        leader_first > away_last,
        "the leader's log starts at {leader_first}"
    );

    // A brand-new node and the returning follower both need purged entries.
    let new = cluster.add_node(3).await;
    cluster.add_node(cluster.nodes[away].id).await;
    let seeds = vec![cluster.nodes[leader].addr.to_string()];
    cluster.nodes[new].raft().join(&seeds).await.expect("join");
    cluster.wait_all(|m| voter_ids(m).len() == 4).await;

    // Replication continues after the snapshot.
    let leader = cluster.wait_for_leader().await;
    let offsets = produce(
        &cluster,
        leader,
        (0..20).map(|i| format!("after-snapshot-{i}")).collect(),
    )
    .await;
    let last = offsets[19];
    let leader_log = cluster.nodes[leader].commit_log();
    for i in [new, away] {
        cluster.wait_applied(i, last).await;
        let metrics = cluster.nodes[i].metrics();
        let snapshot = metrics.snapshot.expect("installed a snapshot");
        let first = cluster.nodes[i].raft().log().first_offset();
        assert!(
            first > away_last,
            "node {}: log still starts at {first}",
            cluster.nodes[i].id
        );
        assert!(
            first <= snapshot.index + 1,
            "node {}: log starts after a gap",
            cluster.nodes[i].id
        );
        // Everything after the snapshot is the leader's data, record for record — from where
        // the leader still holds it: retention (every 200 ms here) may have purged its log past
        // this node's snapshot meanwhile, and a read below the log's start begins at its start.
        let theirs = read_data(&leader_log, snapshot.index + 1).await;
        let from = theirs
            .first()
            .map_or(snapshot.index + 1, |(offset, _)| *offset);
        let mine = read_data(&cluster.nodes[i].commit_log(), from).await;
        assert_eq!(mine, theirs, "node {}", cluster.nodes[i].id);
        assert!(
            mine.len() >= 20,
            "node {}: {} records after the snapshot",
            cluster.nodes[i].id,
            mine.len()
        );
        // Below the log's start there is nothing to read.
        let below = cluster.nodes[i].commit_log().read(0, 1, 1 << 20).await;
        assert!(
            matches!(below, Err(CommitLogError::OutOfRange { .. })),
            "{below:?}"
        );
    }
}
