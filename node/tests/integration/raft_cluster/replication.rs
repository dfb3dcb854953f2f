//! Replication, follower forwarding and failover.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::join_all;

use crate::support::cluster::{Cluster, Options, produce, read_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_every_log_holds_the_same_committed_records() {
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    // Concurrent producers (batches of 10) share Raft rounds.
    let cluster = &cluster;
    let produces = (0..8).map(|producer| async move {
        let mut acked = Vec::new();
        for batch in 0..5 {
            let values: Vec<String> = (0..10)
                .map(|i| format!("p{producer}-b{batch}-{i}"))
                .collect();
            let offsets = produce(cluster, leader, values.clone()).await;
            assert_eq!(offsets.len(), values.len());
            assert!(
                offsets.windows(2).all(|w| w[1] == w[0] + 1),
                "a batch gets contiguous offsets"
            );
            acked.extend(offsets.into_iter().zip(values));
        }
        acked
    });
    let acked: BTreeMap<u64, String> = join_all(produces).await.into_iter().flatten().collect();
    assert_eq!(acked.len(), 400, "every offset is distinct");
    let last = *acked.keys().last().expect("acked");
    for i in 0..3 {
        cluster.wait_applied(i, last).await;
    }
    let expected: Vec<(u64, Bytes)> = acked
        .iter()
        .map(|(o, v)| (*o, Bytes::from(v.clone())))
        .collect();
    for node in &cluster.nodes {
        let data = read_data(&node.commit_log(), 0).await;
        assert_eq!(data, expected, "node {} holds different records", node.id);
        // The same frames are in every node's commit log itself (one copy, no second log).
        let frame = node.raft().log().read(last).expect("frame");
        assert_eq!(frame.payload, Bytes::from(acked[&last].clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_produces_to_the_leader() {
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let offsets = produce(
        &cluster,
        follower,
        (0..5).map(|i| format!("via-follower-{i}")).collect(),
    )
    .await;
    assert_eq!(offsets.len(), 5);
    let last = offsets[4];
    cluster.wait_applied(leader, last).await;
    let on_leader = read_data(&cluster.nodes[leader].commit_log(), offsets[0]).await;
    let values: Vec<Bytes> = on_leader.into_iter().map(|(_, v)| v).collect();
    let expected: Vec<Bytes> = (0..5)
        .map(|i| Bytes::from(format!("via-follower-{i}")))
        .collect();
    assert_eq!(values, expected);
    // The record carries the leader's timestamp.
    let frame = cluster.nodes[leader]
        .raft()
        .log()
        .read(last)
        .expect("frame");
    assert!(frame.timestamp_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_leader_crashes_a_new_leader_is_elected_and_no_acknowledged_record_is_lost() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let old = cluster.wait_for_leader().await;
    let old_id = cluster.nodes[old].id;
    let mut acked = BTreeMap::new();
    for batch in 0..10 {
        let values: Vec<String> = (0..10).map(|i| format!("before-{batch}-{i}")).collect();
        let offsets = produce(&cluster, old, values.clone()).await;
        acked.extend(offsets.into_iter().zip(values));
    }
    cluster.crash(old).await;
    let new = cluster.wait_for_leader().await;
    assert_ne!(cluster.nodes[new].id, old_id, "a surviving node leads");
    // Writes reach the new leader, also through the surviving follower.
    let other = (0..3).find(|i| *i != old && *i != new).expect("survivor");
    for (i, via) in [new, other].into_iter().enumerate() {
        let values: Vec<String> = (0..10).map(|j| format!("after-{i}-{j}")).collect();
        let offsets = produce(&cluster, via, values.clone()).await;
        acked.extend(offsets.into_iter().zip(values));
    }
    let last = *acked.keys().last().expect("acked");
    let expected: Vec<(u64, Bytes)> = acked
        .iter()
        .map(|(o, v)| (*o, Bytes::from(v.clone())))
        .collect();
    for i in [new, other] {
        cluster.wait_applied(i, last).await;
        let data = read_data(&cluster.nodes[i].commit_log(), 0).await;
        assert_eq!(
            data, expected,
            "node {} lost or changed acknowledged records",
            cluster.nodes[i].id
        );
    }
}

/// Read-your-write through a follower: a record the follower acknowledged (it forwarded the
/// produce to the leader) is served by that follower right away — it waits to apply the
/// offset rather than answer "past the end" (`OUT_OF_RANGE`), which it did whenever its apply
/// lagged the leader's ack by a heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_acknowledged_through_a_follower_is_read_back_through_it_at_once() {
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let log = cluster.nodes[follower].commit_log();
    for i in 0..50 {
        let value = format!("ryw-{i}");
        let offsets = produce(&cluster, follower, vec![value.clone()]).await;
        let entries = log
            .read(offsets[0], 1, 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("read {} right after its ack: {e}", offsets[0]));
        assert_eq!(entries[0].index, offsets[0]);
        assert_eq!(entries[0].payload, Bytes::from(value));
    }
}
