//! Gossip membership on its production path: sealed datagrams on real UDP sockets (loopback),
//! host-name seeds through the system resolver. The scenarios with partitions, restarts and
//! replays run over the in-memory network in the library's unit tests; this checks that the
//! same code works on kernel sockets.

use std::net::SocketAddr;
use std::time::Duration;

use logcluster_node::membership::{
    ClusterMember, GossipKey, GossipSecurity, Membership, MembershipConfig, resolve_gossip_addr,
};
use logcluster_node::telemetry::{GossipDropReason, Metrics};

const WAIT: Duration = Duration::from_secs(30);

/// A free UDP port on 127.0.0.1 (the kernel picks it; the probe socket is closed at once).
fn free_udp_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("a free UDP port on loopback")
}

struct Node {
    membership: Membership,
    metrics: Metrics,
}

async fn start(node_id: u64, addr: SocketAddr, seeds: Vec<String>, key: &GossipKey) -> Node {
    let mut config = MembershipConfig::new(
        node_id,
        format!("node-{node_id}.test:8400"),
        addr,
        addr,
        GossipSecurity::Sealed(key.clone()),
    )
    .with_gossip_interval(Duration::from_millis(100))
    .with_seeds(seeds);
    config.seed_refresh_interval = Duration::from_millis(300);
    let metrics = Metrics::new(node_id);
    let membership = Membership::start(config, metrics.clone())
        .await
        .expect("gossip starts on UDP");
    Node {
        membership,
        metrics,
    }
}

fn ids(members: &[ClusterMember]) -> Vec<u64> {
    members.iter().map(|m| m.node_id).collect()
}

async fn expect_live(node: &Node, expected: &[u64]) {
    let mut members = node.membership.members();
    let seen = tokio::time::timeout(WAIT, members.wait_for(|m| ids(m) == expected)).await;
    assert!(
        seen.is_ok(),
        "node {} sees {:?}, expected {expected:?}",
        node.membership.node_id(),
        ids(&node.membership.members().borrow())
    );
}

fn dropped(metrics: &Metrics, reason: GossipDropReason) -> u64 {
    let series = format!(
        "logcluster_gossip_datagrams_dropped_total{{reason=\"{}\"}} ",
        reason.as_str()
    );
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Waits until `node` has dropped at least `at_least` datagrams for `reason` (counters have no
/// change notification, so this polls).
async fn expect_dropped(node: &Node, reason: GossipDropReason, at_least: u64) {
    let reached = tokio::time::timeout(WAIT, async {
        while dropped(&node.metrics, reason) < at_least {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "node {} dropped {} {} datagrams, expected at least {at_least}",
        node.membership.node_id(),
        dropped(&node.metrics, reason),
        reason.as_str()
    );
}

#[tokio::test]
async fn sealed_gossip_over_udp_forms_a_cluster_and_keeps_strangers_out() {
    let key = GossipKey::generate();
    let addrs: Vec<SocketAddr> = (0..4).map(|_| free_udp_addr()).collect();
    let first = addrs[0];

    let n1 = start(1, first, vec![], &key).await;
    // One seed by host name (the system resolver), one by IP.
    let n2 = start(
        2,
        addrs[1],
        vec![format!("localhost:{}", first.port())],
        &key,
    )
    .await;
    let n3 = start(3, addrs[2], vec![first.to_string()], &key).await;
    for node in [&n1, &n2, &n3] {
        expect_live(node, &[1, 2, 3]).await;
    }

    // A node with another key, and raw datagrams from a plain socket.
    let stranger = start(4, addrs[3], vec![first.to_string()], &GossipKey::generate()).await;
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    raw.send_to(b"not gossip", first).await.expect("send");
    let mut forged = vec![1u8; 80];
    forged[1..5].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    raw.send_to(&forged, first).await.expect("send");

    expect_dropped(&n1, GossipDropReason::Forged, 3).await;
    expect_dropped(&n1, GossipDropReason::Malformed, 1).await;
    assert_eq!(ids(&n1.membership.members().borrow()), vec![1, 2, 3]);
    assert_eq!(ids(&stranger.membership.members().borrow()), vec![4]);

    for node in [n1, n2, n3, stranger] {
        node.membership.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn advertise_addresses_resolve_from_literals_and_host_names() {
    let patience = Duration::from_secs(5);
    assert_eq!(
        resolve_gossip_addr("127.0.0.9:8401", patience)
            .await
            .expect("literal"),
        "127.0.0.9:8401".parse::<SocketAddr>().expect("addr")
    );
    let local = resolve_gossip_addr("localhost:8401", patience)
        .await
        .expect("localhost resolves");
    assert!(local.ip().is_loopback() && local.port() == 8401, "{local}");
    let err = resolve_gossip_addr("localhost", patience)
        .await
        .expect_err("no port");
    assert!(err.to_string().contains("host:port"), "{err}");
}
