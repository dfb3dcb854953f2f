//! Real `lognode` processes on loopback, real mutual TLS, faults under continuous produce load;
//! every test checks the client history against every node's log (P1–P7, docs/testing.md) and
//! requires progress (P8).
//!
//! The tests are a table of [`Scenario`]s run by one driver ([`run`]): the same cluster, the
//! same workload and the same history check for every scenario; only the [`Fault`] differs.
//! Each scenario is still its own `#[test]`, so CI output and name filters see it.

use std::time::Duration;

use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{RemoveNodeRequest, TransferLeaderRequest};
use logcluster_tests::cluster::{ClusterSpec, ProcessCluster, Workload};

const PRODUCERS: u32 = 4;
/// P8: fewer acknowledged produces than this in a fault window makes a run invalid.
const MIN_ACKS_PER_WINDOW: usize = 100;
const WINDOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Every scenario starts with this many nodes.
const NODES: usize = 3;

async fn cluster(nodes: usize, subnet: u8) -> ProcessCluster {
    match ProcessCluster::start(ClusterSpec::new(nodes, subnet)).await {
        Ok(cluster) => cluster,
        Err(e) => panic!("cluster did not start: {e}"),
    }
}

/// Lets the workload make progress (P8) before the next fault.
async fn window(workload: &Workload, cluster: &ProcessCluster, what: &str) {
    let since = workload.history().now();
    if let Err(e) = workload
        .history()
        .wait_for_acks(since, MIN_ACKS_PER_WINDOW, WINDOW_TIMEOUT)
        .await
    {
        panic!("no progress {what}: {e}\n{}", cluster.logs());
    }
}

async fn finish(workload: Workload, cluster: &ProcessCluster) {
    let (history, seen) = workload.stop().await;
    match cluster.verify(&history, seen.as_deref()).await {
        Ok(summary) => {
            assert!(
                summary.acked >= MIN_ACKS_PER_WINDOW,
                "too little traffic: {summary:?}"
            );
            eprintln!("history checked: {summary:?}");
        }
        Err(e) => panic!("{e}\n{}", cluster.logs()),
    }
}

/// What a scenario does to the cluster while the workload runs.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Nothing: a healthy cluster.
    None,
    /// SIGKILL the leader, wait for a new one, restart the old leader.
    KillLeader,
    /// SIGKILL a follower, restart it.
    KillFollower,
    /// SIGSTOP the leader until the others elect a new one, then SIGCONT it.
    PauseLeader,
    /// Add nodes up to five voters, then remove the two newest through the admin API.
    GrowToFiveAndShrinkToThree,
    /// Transfer leadership to another voter, twice.
    TransferLeadership,
    /// Three rounds (follower, leader, follower): freeze a node, kill it, cut its log after
    /// its durable index, restart it.
    LoseUnsyncedWrites,
    /// Kill the leader this many times, reporting the failover times.
    RepeatedLeaderKills(usize),
}

/// One fault test: a named row of the table below.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Third octet of the cluster's loopback addresses (127.0.`subnet`.x), one per scenario so
    /// scenarios can run at the same time.
    subnet: u8,
    /// Whether a live consumer runs alongside the producers (its view is checked too).
    live_consumer: bool,
    fault: Fault,
}

/// The driver: a three-node cluster under load, the fault, then the history check.
async fn run(scenario: Scenario) {
    let mut cluster = cluster(NODES, scenario.subnet).await;
    let client = cluster.client().await.expect("client");
    let workload = Workload::start(&client, PRODUCERS, scenario.live_consumer);
    match scenario.fault {
        Fault::None => window(&workload, &cluster, "on a healthy cluster").await,
        Fault::KillLeader => kill_leader(&mut cluster, &workload).await,
        Fault::KillFollower => kill_follower(&mut cluster, &workload).await,
        Fault::PauseLeader => pause_leader(&mut cluster, &workload).await,
        Fault::GrowToFiveAndShrinkToThree => grow_and_shrink(&mut cluster, &workload).await,
        Fault::TransferLeadership => transfer_leadership(&cluster, &workload).await,
        Fault::LoseUnsyncedWrites => lose_unsynced_writes(&mut cluster, &workload).await,
        Fault::RepeatedLeaderKills(kills) => {
            repeated_leader_kills(&mut cluster, &workload, kills).await
        }
    }
    finish(workload, &cluster).await;
}

/// Declares one `#[test]` per scenario, named after it.
macro_rules! scenarios {
    ($($name:ident: $scenario:expr;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run($scenario).await;
        }
    )+};
}

scenarios! {
    three_nodes_replicate_every_record_to_every_node: Scenario {
        subnet: 10,
        live_consumer: true,
        fault: Fault::None,
    };
    killing_the_leader_under_load_loses_no_acknowledged_record: Scenario {
        subnet: 11,
        live_consumer: true,
        fault: Fault::KillLeader,
    };
    a_follower_killed_and_restarted_under_load_catches_up: Scenario {
        subnet: 12,
        live_consumer: true,
        fault: Fault::KillFollower,
    };
    a_paused_leader_acknowledges_nothing_after_it_resumes_as_a_stale_leader: Scenario {
        subnet: 13,
        live_consumer: true,
        fault: Fault::PauseLeader,
    };
    growing_to_five_and_shrinking_back_to_three_under_load: Scenario {
        subnet: 14,
        live_consumer: true,
        fault: Fault::GrowToFiveAndShrinkToThree,
    };
    transferring_leadership_under_load: Scenario {
        subnet: 15,
        live_consumer: true,
        fault: Fault::TransferLeadership,
    };
    lost_unsynced_writes_on_a_restarted_node_are_repaired: Scenario {
        subnet: 16,
        live_consumer: true,
        fault: Fault::LoseUnsyncedWrites,
    };
    // No live consumer: the failover times are measured on producers alone.
    repeated_leader_kills_report_failover_times: Scenario {
        subnet: 17,
        live_consumer: false,
        fault: Fault::RepeatedLeaderKills(20),
    };
}

async fn leader(cluster: &ProcessCluster) -> usize {
    cluster
        .wait_for_leader(None, Duration::from_secs(30))
        .await
        .expect("leader")
}

async fn kill_leader(cluster: &mut ProcessCluster, workload: &Workload) {
    window(workload, cluster, "before the kill").await;
    let leader = leader(cluster).await;
    cluster.kill(leader);
    let new_leader = cluster
        .wait_for_leader(Some(leader), Duration::from_secs(30))
        .await
        .expect("a new leader takes over");
    assert_ne!(new_leader, leader);
    window(workload, cluster, "after the leader was killed").await;

    // The killed node comes back and catches up.
    cluster.restart(leader).expect("restart");
    window(workload, cluster, "after the old leader restarted").await;
}

async fn kill_follower(cluster: &mut ProcessCluster, workload: &Workload) {
    window(workload, cluster, "before the kill").await;
    let leader = leader(cluster).await;
    let follower = (0..NODES).find(|i| *i != leader).expect("a follower");
    cluster.kill(follower);
    window(workload, cluster, "with a follower down").await;
    cluster.restart(follower).expect("restart");
    window(workload, cluster, "after the follower restarted").await;
}

async fn pause_leader(cluster: &mut ProcessCluster, workload: &Workload) {
    window(workload, cluster, "before the pause").await;
    let leader = leader(cluster).await;
    cluster.pause(leader);
    // Longer than the election timeout (3-6 heartbeats of 100 ms): the others elect a leader.
    cluster
        .wait_for_leader(Some(leader), Duration::from_secs(30))
        .await
        .expect("a new leader while the old one is paused");
    window(workload, cluster, "while the old leader is paused").await;
    cluster.resume(leader);
    window(workload, cluster, "after the stale leader resumed").await;
    // Whatever the stale leader may have acknowledged would have to be in every log (P1): the
    // driver's history check.
}

async fn grow_and_shrink(cluster: &mut ProcessCluster, workload: &Workload) {
    window(workload, cluster, "before growing").await;
    for expected in [4usize, 5] {
        cluster.add_node_process().expect("start a node");
        cluster
            .wait_for_voters(expected, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("grow to {expected}: {e}"));
        window(workload, cluster, &format!("with {expected} voters")).await;
    }
    // Shrink: remove the two newest nodes through the admin API, then stop them.
    for (remove, expected) in [(4usize, 4usize), (3, 3)] {
        let leader = leader(cluster).await;
        let channel = cluster.channel_to(leader).await.expect("channel");
        AdminClient::new(channel)
            .remove_node(RemoveNodeRequest {
                node_id: cluster.nodes[remove].id,
            })
            .await
            .unwrap_or_else(|e| panic!("remove node {remove}: {e}"));
        cluster
            .wait_for_voters(expected, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("shrink to {expected}: {e}"));
        cluster.stop(remove);
        window(workload, cluster, &format!("after shrinking to {expected}")).await;
    }
}

async fn transfer_leadership(cluster: &ProcessCluster, workload: &Workload) {
    window(workload, cluster, "before the transfer").await;
    for _ in 0..2 {
        let leader = leader(cluster).await;
        let target = (0..NODES).find(|i| *i != leader).expect("another voter");
        let channel = cluster.channel_to(leader).await.expect("channel");
        let response = AdminClient::new(channel)
            .transfer_leader(TransferLeaderRequest {
                node_id: Some(cluster.nodes[target].id),
            })
            .await
            .unwrap_or_else(|e| panic!("transfer: {e}"))
            .into_inner();
        assert_eq!(response.new_leader_id, cluster.nodes[target].id);
        let now = cluster
            .wait_for_leader(Some(leader), Duration::from_secs(30))
            .await
            .expect("leader");
        assert_eq!(now, target);
        window(workload, cluster, "after the transfer").await;
    }
}

async fn lose_unsynced_writes(cluster: &mut ProcessCluster, workload: &Workload) {
    for round in 0..3 {
        window(workload, cluster, &format!("before round {round}")).await;
        let leader = leader(cluster).await;
        // Alternate between a follower and the leader.
        let victim = if round % 2 == 0 {
            (leader + 1) % NODES
        } else {
            leader
        };
        // Frozen first, so that what it may have promised can be read off the others.
        let durable = cluster
            .pause_and_find_durable_index(victim, workload.history())
            .await
            .unwrap_or_else(|e| panic!("round {round}: durable index of node {victim}: {e}"));
        cluster.kill(victim);
        let cut = cluster.cut_unsynced_tail(victim, durable).expect("cut");
        eprintln!("round {round}: node {victim} lost {cut} bytes after index {durable}");
        cluster.restart(victim).expect("restart");
    }
    window(workload, cluster, "after the last restart").await;
}

async fn repeated_leader_kills(cluster: &mut ProcessCluster, workload: &Workload, kills: usize) {
    let mut failovers = Vec::with_capacity(kills);
    for kill in 0..kills {
        window(workload, cluster, &format!("before kill {kill}")).await;
        let leader = leader(cluster).await;
        let killed_at = workload.history().now();
        cluster.kill(leader);
        // The old leader is dead (killed and reaped): a produce invoked from now on can only be
        // acknowledged by a new leader. (An answer the old leader sent just before dying may
        // still be recorded after the kill: counting acks by completion time would take it for
        // a failover, and the test would move on before any new leader exists.)
        let dead_at = workload.history().now();
        // Failover time: from the kill to the first acknowledgement of a produce invoked after
        // the old leader was gone.
        workload
            .history()
            .wait_for_acks_invoked_since(dead_at, 1, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("kill {kill}: {e}\n{}", cluster.logs()));
        let first_ack = workload
            .history()
            .first_ack_invoked_since(dead_at)
            .unwrap_or_else(|| panic!("kill {kill}: the acknowledgement waited for is missing"));
        failovers.push(first_ack - killed_at);
        cluster.restart(leader).expect("restart");
        cluster
            .wait_converged(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("kill {kill}: {e}")); // `e` carries the node logs
    }
    failovers.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| failovers[((failovers.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "failover over {kills} leader kills: min {:.0} ms, median {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(failovers[0]),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(failovers[failovers.len() - 1])
    );
}
