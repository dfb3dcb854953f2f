//! Membership scenarios over the in-memory network, written as step lists in chitchat's style
//! (start a node, cut a link, expect, ...). Real chitchat, real sealing, fast gossip rounds; every
//! expectation waits for the state it names (on the members `watch`), bounded by a timeout that
//! only a broken build reaches.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::memory::Datagram;
use super::*;
use crate::telemetry::{GossipDropReason, Metrics};

/// Gossip round period in these tests.
const ROUND: Duration = Duration::from_millis(50);
/// Bound of every wait; only reached when a scenario fails.
const WAIT: Duration = Duration::from_secs(30);

/// Datagrams counted as dropped for `reason` by the node owning `metrics`.
pub(super) fn dropped(metrics: &Metrics, reason: GossipDropReason) -> u64 {
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

fn gossip_addr(node: u64) -> SocketAddr {
    SocketAddr::from((
        [127, 0, 1, u8::try_from(node).expect("small node id")],
        8401,
    ))
}

fn rpc_addr(node: u64) -> String {
    format!("node-{node}.test:8400")
}

/// A DNS stand-in whose answers the scenario changes.
#[derive(Default)]
struct FakeDns(Mutex<HashMap<String, Vec<SocketAddr>>>);

#[async_trait]
impl SeedResolver for FakeDns {
    async fn resolve(&self, seed: &str) -> io::Result<Vec<SocketAddr>> {
        self.0
            .lock()
            .get(seed)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such host {seed}")))
    }
}

/// One step of a scenario.
enum Step {
    /// Start `node` with the cluster key, seeded with the gossip addresses of `seeds`.
    Start { node: u64, seeds: &'static [u64] },
    /// Start `node` with host-name seeds (resolved by the scenario's fake DNS).
    StartWithHostSeeds {
        node: u64,
        seeds: &'static [&'static str],
    },
    /// Start `node` with a key of its own (not the cluster's).
    StartWithWrongKey { node: u64, seeds: &'static [u64] },
    /// Stop `node` and start it again: same id, address and seeds, next generation.
    Restart { node: u64 },
    /// Announce readiness.
    Ready { node: u64 },
    /// Announce leaving (and wait for the propagation grace time).
    Leave { node: u64 },
    /// Make `node` mirror a readiness source the scenario controls.
    MirrorReadiness { node: u64 },
    /// Set the readiness source of `node`.
    SourceReady { node: u64, ready: bool },
    /// Cut every link between the two groups.
    Partition(&'static [u64], &'static [u64]),
    /// Restore every link.
    HealAll,
    /// Make the fake DNS answer `host` with the gossip addresses of `nodes`.
    Resolve {
        host: &'static str,
        nodes: &'static [u64],
    },
    /// Start recording every member list `on` publishes.
    Record { on: u64 },
    /// Wait until `on` sees exactly `nodes` as live members.
    ExpectLive { on: u64, nodes: &'static [u64] },
    /// Wait until `on` sees `node` as a member satisfying `check`.
    ExpectMember {
        on: u64,
        node: u64,
        what: &'static str,
        check: fn(&ClusterMember) -> bool,
    },
    /// `on`'s current live members are exactly `nodes` (no waiting).
    AssertLiveNow { on: u64, nodes: &'static [u64] },
    /// In everything recorded on `on`, `node` never went missing after it first appeared, and
    /// its generation never went down.
    AssertNeverDeparted { on: u64, node: u64 },
    /// chitchat on `on` has two generations of `node` live at once (the dedup is at work).
    AssertTwoGenerationsUnderneath { on: u64, node: u64 },
    /// Wait until `on` has dropped at least `at_least` datagrams for `reason`.
    ExpectDropped {
        on: u64,
        reason: GossipDropReason,
        at_least: u64,
    },
    /// Re-send the latest datagram `from` sent to `to`, unchanged, `times` times.
    Replay { from: u64, to: u64, times: usize },
    /// Send `to` the latest datagram `from` sent it, with one bit flipped.
    Tamper { from: u64, to: u64 },
}

struct Node {
    membership: Membership,
    metrics: Metrics,
    seeds: Seeds,
    generation: u64,
}

#[derive(Clone)]
enum Seeds {
    Nodes(&'static [u64]),
    Hosts(&'static [&'static str]),
}

struct Scenario {
    net: MemoryNetwork,
    key: GossipKey,
    dns: Arc<FakeDns>,
    nodes: BTreeMap<u64, Node>,
    failure_detector: chitchat::FailureDetectorConfig,
    tap: mpsc::UnboundedReceiver<Datagram>,
    /// Latest datagram seen on each (from, to) link.
    last_sent: HashMap<(SocketAddr, SocketAddr), Vec<u8>>,
    recordings: HashMap<u64, Arc<Mutex<Vec<Vec<ClusterMember>>>>>,
    readiness: HashMap<u64, tokio::sync::watch::Sender<bool>>,
}

impl Scenario {
    fn new() -> Self {
        let net = MemoryNetwork::new();
        let tap = net.tap();
        Scenario {
            net,
            key: GossipKey::generate(),
            dns: Arc::default(),
            nodes: BTreeMap::new(),
            failure_detector: failure_detector_for(ROUND),
            tap,
            last_sent: HashMap::new(),
            recordings: HashMap::new(),
            readiness: HashMap::new(),
        }
    }

    /// A failure detector that never declares anyone dead (for scenarios that must not depend
    /// on how fast it is).
    fn without_deaths(mut self) -> Self {
        self.failure_detector.phi_threshold = f64::INFINITY;
        self
    }

    async fn run(mut self, steps: Vec<Step>) {
        for (i, step) in steps.into_iter().enumerate() {
            let what = describe(&step);
            tracing::info!(step = i, %what, "scenario step");
            self.step(step, &format!("step {i} ({what})")).await;
        }
        for (_, node) in std::mem::take(&mut self.nodes) {
            node.membership.shutdown().await.expect("clean shutdown");
        }
    }

    async fn start(&mut self, node: u64, seeds: Seeds, key: GossipKey, generation: u64) {
        let mut config = MembershipConfig::new(
            node,
            rpc_addr(node),
            gossip_addr(node),
            gossip_addr(node),
            GossipSecurity::Sealed(key),
        )
        .with_gossip_interval(ROUND);
        config.seeds = match &seeds {
            Seeds::Nodes(nodes) => nodes.iter().map(|n| gossip_addr(*n).to_string()).collect(),
            Seeds::Hosts(hosts) => hosts.iter().map(ToString::to_string).collect(),
        };
        config.generation = generation;
        config.seed_refresh_interval = Duration::from_millis(200);
        config.failure_detector = self.failure_detector.clone();
        let metrics = Metrics::new(node);
        let membership = Membership::start_on(
            config,
            metrics.clone(),
            Arc::new(self.net.clone()),
            self.dns.clone(),
        )
        .await
        .expect("membership starts");
        self.nodes.insert(
            node,
            Node {
                membership,
                metrics,
                seeds,
                generation,
            },
        );
    }

    fn node(&self, node: u64) -> &Node {
        self.nodes
            .get(&node)
            .unwrap_or_else(|| panic!("node {node} is not running"))
    }

    async fn wait_members(&self, on: u64, context: &str, done: impl Fn(&[ClusterMember]) -> bool) {
        let mut members = self.node(on).membership.members();
        if tokio::time::timeout(WAIT, members.wait_for(|m| done(m)))
            .await
            .is_err()
        {
            panic!(
                "{context}: node {on} sees {:#?}",
                *self.node(on).membership.members().borrow()
            );
        }
    }

    /// Drains the tap into `last_sent`, then returns the latest datagram on (from, to).
    fn latest(&mut self, from: u64, to: u64, context: &str) -> Vec<u8> {
        while let Ok(datagram) = self.tap.try_recv() {
            self.last_sent
                .insert((datagram.from, datagram.to), datagram.bytes);
        }
        self.last_sent
            .get(&(gossip_addr(from), gossip_addr(to)))
            .cloned()
            .unwrap_or_else(|| panic!("{context}: node {from} never sent to node {to}"))
    }

    async fn step(&mut self, step: Step, context: &str) {
        match step {
            Step::Start { node, seeds } => {
                let key = self.key.clone();
                self.start(node, Seeds::Nodes(seeds), key, 1_000).await;
            }
            Step::StartWithHostSeeds { node, seeds } => {
                let key = self.key.clone();
                self.start(node, Seeds::Hosts(seeds), key, 1_000).await;
            }
            Step::StartWithWrongKey { node, seeds } => {
                self.start(node, Seeds::Nodes(seeds), GossipKey::generate(), 1_000)
                    .await;
            }
            Step::Restart { node } => {
                let old = self
                    .nodes
                    .remove(&node)
                    .unwrap_or_else(|| panic!("{context}: node {node} is not running"));
                old.membership.shutdown().await.expect("clean shutdown");
                let key = self.key.clone();
                self.start(node, old.seeds, key, old.generation + 1).await;
            }
            Step::Ready { node } => self.node(node).membership.set_ready(true).await,
            Step::Leave { node } => self.node(node).membership.leave().await,
            Step::MirrorReadiness { node } => {
                let (source, ready) = tokio::sync::watch::channel(false);
                self.nodes
                    .get_mut(&node)
                    .unwrap_or_else(|| panic!("{context}: node {node} is not running"))
                    .membership
                    .mirror_readiness(ready, |ready| *ready);
                self.readiness.insert(node, source);
            }
            Step::SourceReady { node, ready } => {
                self.readiness
                    .get(&node)
                    .unwrap_or_else(|| panic!("{context}: node {node} mirrors nothing"))
                    .send_replace(ready);
            }
            Step::Partition(left, right) => {
                let addrs =
                    |nodes: &[u64]| nodes.iter().map(|n| gossip_addr(*n)).collect::<Vec<_>>();
                self.net.partition(&addrs(left), &addrs(right));
            }
            Step::HealAll => self.net.heal_all(),
            Step::Resolve { host, nodes } => {
                let addrs = nodes.iter().map(|n| gossip_addr(*n)).collect();
                self.dns.0.lock().insert(host.to_string(), addrs);
            }
            Step::Record { on } => {
                let log = Arc::new(Mutex::new(Vec::new()));
                let mut members = self.node(on).membership.members();
                let recording = Arc::clone(&log);
                tokio::spawn(async move {
                    loop {
                        recording.lock().push(members.borrow_and_update().clone());
                        if members.changed().await.is_err() {
                            return;
                        }
                    }
                });
                self.recordings.insert(on, log);
            }
            Step::ExpectLive { on, nodes } => {
                self.wait_members(on, context, |members| ids(members) == nodes)
                    .await;
            }
            Step::ExpectMember {
                on,
                node,
                what,
                check,
            } => {
                self.wait_members(on, &format!("{context}: {what}"), |members| {
                    members.iter().any(|m| m.node_id == node && check(m))
                })
                .await;
            }
            Step::AssertLiveNow { on, nodes } => {
                let members = self.node(on).membership.members().borrow().clone();
                assert_eq!(ids(&members), nodes, "{context}: {members:#?}");
            }
            Step::AssertNeverDeparted { on, node } => {
                let log = self.recordings.get(&on).expect("recording").lock().clone();
                let mut seen = false;
                let mut generation = 0;
                for members in &log {
                    match members.iter().find(|m| m.node_id == node) {
                        Some(member) => {
                            assert!(
                                member.generation >= generation,
                                "{context}: generation went down in {log:#?}"
                            );
                            generation = member.generation;
                            seen = true;
                        }
                        None => assert!(!seen, "{context}: node {node} departed in {log:#?}"),
                    }
                    assert!(
                        members.iter().filter(|m| m.node_id == node).count() <= 1,
                        "{context}: one member per node id"
                    );
                }
                assert!(seen, "{context}: node {node} was never seen");
            }
            Step::AssertTwoGenerationsUnderneath { on, node } => {
                let chitchat = self.node(on).membership.chitchat();
                let guard = chitchat.lock().await;
                let generations: Vec<u64> = guard
                    .live_nodes()
                    .filter(|id| *id.node_id == *node.to_string())
                    .map(|id| id.generation_id)
                    .collect();
                assert_eq!(generations.len(), 2, "{context}: {generations:?}");
            }
            Step::ExpectDropped {
                on,
                reason,
                at_least,
            } => {
                let metrics = self.node(on).metrics.clone();
                // Counters have no change notification; poll them (this is the only poll).
                let reached = tokio::time::timeout(WAIT, async {
                    while dropped(&metrics, reason) < at_least {
                        tokio::time::sleep(ROUND).await;
                    }
                })
                .await;
                assert!(
                    reached.is_ok(),
                    "{context}: node {on} dropped {} {} datagrams",
                    dropped(&metrics, reason),
                    reason.as_str()
                );
            }
            Step::Replay { from, to, times } => {
                let datagram = self.latest(from, to, context);
                for _ in 0..times {
                    assert!(
                        self.net
                            .inject(gossip_addr(from), gossip_addr(to), datagram.clone())
                    );
                }
            }
            Step::Tamper { from, to } => {
                let mut datagram = self.latest(from, to, context);
                let last = datagram.len() - 1;
                datagram[last] ^= 0x01;
                assert!(
                    self.net
                        .inject(gossip_addr(from), gossip_addr(to), datagram)
                );
            }
        }
    }
}

fn ids(members: &[ClusterMember]) -> Vec<u64> {
    members.iter().map(|m| m.node_id).collect()
}

fn describe(step: &Step) -> String {
    match step {
        Step::Start { node, seeds } => format!("start {node} seeds {seeds:?}"),
        Step::StartWithHostSeeds { node, seeds } => format!("start {node} seeds {seeds:?}"),
        Step::StartWithWrongKey { node, seeds } => {
            format!("start {node} with a wrong key, seeds {seeds:?}")
        }
        Step::Restart { node } => format!("restart {node}"),
        Step::Ready { node } => format!("{node} ready"),
        Step::Leave { node } => format!("{node} leaves"),
        Step::MirrorReadiness { node } => format!("{node} mirrors a readiness source"),
        Step::SourceReady { node, ready } => format!("{node}'s readiness source says {ready}"),
        Step::Partition(left, right) => format!("partition {left:?} | {right:?}"),
        Step::HealAll => "heal all links".into(),
        Step::Resolve { host, nodes } => format!("DNS {host} -> {nodes:?}"),
        Step::Record { on } => format!("record members on {on}"),
        Step::ExpectLive { on, nodes } => format!("expect {on} sees {nodes:?}"),
        Step::ExpectMember { on, node, what, .. } => format!("expect {on} sees {node}: {what}"),
        Step::AssertLiveNow { on, nodes } => format!("assert {on} sees {nodes:?} now"),
        Step::AssertNeverDeparted { on, node } => format!("assert {node} never left {on}'s view"),
        Step::AssertTwoGenerationsUnderneath { on, node } => {
            format!("assert chitchat on {on} has two generations of {node}")
        }
        Step::ExpectDropped {
            on,
            reason,
            at_least,
        } => format!("expect {on} dropped >= {at_least} {}", reason.as_str()),
        Step::Replay { from, to, times } => format!("replay {from}->{to} x{times}"),
        Step::Tamper { from, to } => format!("tamper {from}->{to}"),
    }
}

// Step constructors, so that scenarios read as one line per step.

fn start(node: u64, seeds: &'static [u64]) -> Step {
    Step::Start { node, seeds }
}

fn expect_live(on: u64, nodes: &'static [u64]) -> Step {
    Step::ExpectLive { on, nodes }
}

fn live_now(on: u64, nodes: &'static [u64]) -> Step {
    Step::AssertLiveNow { on, nodes }
}

fn expect_member(
    on: u64,
    node: u64,
    what: &'static str,
    check: fn(&ClusterMember) -> bool,
) -> Step {
    Step::ExpectMember {
        on,
        node,
        what,
        check,
    }
}

fn source_ready(node: u64, ready: bool) -> Step {
    Step::SourceReady { node, ready }
}

fn expect_dropped(on: u64, reason: GossipDropReason, at_least: u64) -> Step {
    Step::ExpectDropped {
        on,
        reason,
        at_least,
    }
}

/// Nodes 1, 2 and 3 (2 and 3 seeded with 1), until everyone sees everyone.
fn three_nodes() -> Vec<Step> {
    vec![
        start(1, &[]),
        start(2, &[1]),
        start(3, &[1]),
        expect_live(1, &[1, 2, 3]),
        expect_live(2, &[1, 2, 3]),
        expect_live(3, &[1, 2, 3]),
    ]
}

fn then(mut first: Vec<Step>, rest: Vec<Step>) -> Vec<Step> {
    first.extend(rest);
    first
}

#[tokio::test]
async fn three_nodes_started_from_seeds_see_each_other() {
    let steps = then(
        three_nodes(),
        vec![
            expect_member(3, 1, "node 1's keys parsed", |m| {
                m.rpc_addr == "node-1.test:8400"
                    && m.generation == 1_000
                    && m.gossip_addr == gossip_addr(1)
                    && !m.ready
                    && !m.leaving
            }),
            Step::Ready { node: 2 },
            expect_member(1, 2, "node 2 ready", |m| m.ready),
        ],
    );
    Scenario::new().run(steps).await;
}

#[tokio::test]
async fn a_leaving_node_is_seen_leaving_by_the_others() {
    let steps = then(
        three_nodes(),
        vec![
            Step::MirrorReadiness { node: 3 },
            source_ready(3, true),
            expect_member(1, 3, "node 3 ready", |m| m.ready),
            source_ready(3, false),
            expect_member(1, 3, "node 3 no longer ready", |m| !m.ready),
            source_ready(3, true),
            expect_member(2, 3, "node 3 ready again", |m| m.ready),
            Step::Leave { node: 3 },
            expect_member(1, 3, "node 3 leaving, not ready", |m| m.leaving && !m.ready),
            expect_member(2, 3, "node 3 leaving", |m| m.leaving),
            // Leaving is not departing: node 3 is still a live member.
            live_now(1, &[1, 2, 3]),
        ],
    );
    Scenario::new().run(steps).await;
}

#[tokio::test]
async fn a_partition_hides_nodes_and_healing_brings_them_back() {
    let steps = then(
        three_nodes(),
        vec![
            Step::Partition(&[1, 2], &[3]),
            expect_live(1, &[1, 2]),
            expect_live(2, &[1, 2]),
            expect_live(3, &[3]),
            Step::HealAll,
            expect_live(1, &[1, 2, 3]),
            expect_live(2, &[1, 2, 3]),
            expect_live(3, &[1, 2, 3]),
        ],
    );
    Scenario::new().run(steps).await;
}

#[tokio::test]
async fn a_restarted_node_is_one_member_with_a_new_generation_and_never_departs() {
    // No deaths: the old incarnation stays live in chitchat, which is exactly the situation the
    // member list must flatten (and it keeps the scenario independent of detector timing).
    let steps = vec![
        start(1, &[]),
        start(2, &[1]),
        expect_live(1, &[1, 2]),
        Step::Record { on: 1 },
        Step::Restart { node: 2 },
        expect_member(1, 2, "node 2's new generation", |m| m.generation == 1_001),
        live_now(1, &[1, 2]),
        Step::AssertTwoGenerationsUnderneath { on: 1, node: 2 },
        Step::AssertNeverDeparted { on: 1, node: 2 },
        expect_live(2, &[1, 2]),
    ];
    Scenario::new().without_deaths().run(steps).await;
}

#[tokio::test]
async fn a_node_with_the_wrong_key_never_becomes_visible() {
    let steps = vec![
        start(1, &[]),
        start(2, &[1]),
        Step::StartWithWrongKey {
            node: 3,
            seeds: &[1, 2],
        },
        expect_live(1, &[1, 2]),
        // Node 3 keeps knocking: several of its datagrams were refused...
        expect_dropped(1, GossipDropReason::Forged, 3),
        expect_dropped(2, GossipDropReason::Forged, 3),
        // ...and none got through, either way.
        live_now(1, &[1, 2]),
        live_now(2, &[1, 2]),
        live_now(3, &[3]),
    ];
    Scenario::new().run(steps).await;
}

#[tokio::test]
async fn replayed_and_tampered_datagrams_are_dropped_in_a_running_cluster() {
    let steps = vec![
        start(1, &[]),
        start(2, &[1]),
        expect_live(2, &[1, 2]),
        Step::Replay {
            from: 1,
            to: 2,
            times: 3,
        },
        Step::Tamper { from: 1, to: 2 },
        expect_dropped(2, GossipDropReason::Replayed, 3),
        expect_dropped(2, GossipDropReason::Forged, 1),
        live_now(2, &[1, 2]),
    ];
    Scenario::new().run(steps).await;
}

#[tokio::test]
async fn host_name_seeds_are_re_resolved_until_they_lead_somewhere() {
    const SERVICE: &str = "demo-nodes.test:8401";
    let steps = vec![
        start(1, &[]),
        // The headless Service does not list anyone yet.
        Step::Resolve {
            host: SERVICE,
            nodes: &[],
        },
        Step::StartWithHostSeeds {
            node: 2,
            seeds: &[SERVICE],
        },
        live_now(2, &[2]),
        // Now it lists node 1 (and node 2 itself, which must be skipped).
        Step::Resolve {
            host: SERVICE,
            nodes: &[1, 2],
        },
        expect_live(2, &[1, 2]),
        expect_live(1, &[1, 2]),
    ];
    Scenario::new().run(steps).await;
}

#[tokio::test]
async fn bad_configurations_are_refused_at_start() {
    let net = Arc::new(MemoryNetwork::new());
    let dns: Arc<FakeDns> = Arc::default();
    let base = || {
        MembershipConfig::new(
            1,
            rpc_addr(1),
            gossip_addr(1),
            gossip_addr(1),
            GossipSecurity::Sealed(GossipKey::generate()),
        )
    };
    let cases: Vec<(MembershipConfig, &str)> = vec![
        (base().with_seeds(["demo-nodes"]), "not host:port"),
        (
            MembershipConfig {
                rpc_addr: "node-1".into(),
                ..base()
            },
            "rpc address",
        ),
        (
            MembershipConfig {
                advertise_addr: SocketAddr::from(([0, 0, 0, 0], 8401)),
                ..base()
            },
            "advertise address",
        ),
    ];
    for (config, expected) in cases {
        let err = Membership::start_on(config, Metrics::new(1), net.clone(), dns.clone())
            .await
            .expect_err(expected);
        assert!(err.to_string().contains(expected), "{err}");
    }
}
