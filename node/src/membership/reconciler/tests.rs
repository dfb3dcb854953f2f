//! The reconciler against a fake Raft: pure planning rules first, then the running loop
//! (leadership, in-flight changes, retries, one change at a time).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use parking_lot::Mutex;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn member(node_id: u64, generation: u64) -> ClusterMember {
    ClusterMember {
        node_id,
        generation,
        rpc_addr: format!("node-{node_id}:8400"),
        gossip_addr: SocketAddr::from(([127, 0, 1, node_id as u8], 8401)),
        ready: true,
        leaving: false,
    }
}

fn leaving(node_id: u64, generation: u64) -> ClusterMember {
    ClusterMember {
        leaving: true,
        ready: false,
        ..member(node_id, generation)
    }
}

fn voter(node_id: u64) -> RaftMember {
    RaftMember {
        node_id,
        rpc_addr: format!("node-{node_id}:8400"),
        voter: true,
    }
}

fn learner(node_id: u64) -> RaftMember {
    RaftMember {
        voter: false,
        ..voter(node_id)
    }
}

fn add(node_id: u64) -> MembershipChange {
    MembershipChange::Add {
        node_id,
        rpc_addr: format!("node-{node_id}:8400"),
    }
}

// ---- planning rules ----

#[test]
fn unknown_live_nodes_are_added_and_live_learners_promoted() {
    let gossip = [member(1, 1), member(2, 1), member(3, 1)];
    let raft = [voter(1), learner(3)];
    assert_eq!(
        plan(&gossip, &raft),
        vec![
            add(2),
            MembershipChange::Promote {
                node_id: 3,
                rpc_addr: "node-3:8400".into()
            }
        ]
    );
}

#[test]
fn silent_members_are_never_removed() {
    // Node 3 is a voter that gossip no longer sees (crashed, partitioned, restarting).
    let raft = [voter(1), voter(2), voter(3)];
    assert_eq!(plan(&[member(1, 1), member(2, 1)], &raft), vec![]);
    // Even when every other member is silent.
    assert_eq!(plan(&[member(1, 1)], &raft), vec![]);
}

#[test]
fn leaving_members_are_removed_before_anything_else() {
    let gossip = [member(1, 1), member(2, 1), leaving(3, 1), leaving(4, 1)];
    let raft = [voter(1), voter(3), learner(4)];
    assert_eq!(
        plan(&gossip, &raft),
        vec![
            MembershipChange::Remove { node_id: 3 },
            MembershipChange::Remove { node_id: 4 },
            add(2),
        ]
    );
}

#[test]
fn leaving_nodes_that_are_not_members_are_left_alone() {
    assert_eq!(plan(&[member(1, 1), leaving(2, 1)], &[voter(1)]), vec![]);
}

#[test]
fn the_last_voter_is_not_removed_even_if_it_leaves() {
    assert_eq!(plan(&[leaving(1, 1)], &[voter(1)]), vec![]);
    assert_eq!(
        plan(&[leaving(1, 1), member(2, 1)], &[voter(1), learner(2)]),
        vec![MembershipChange::Promote {
            node_id: 2,
            rpc_addr: "node-2:8400".into()
        }],
        "a learner does not count as a voter that could take over"
    );
}

#[test]
fn restarted_members_are_not_re_added() {
    let raft = [voter(1), voter(2)];
    // A new generation at the same address: nothing to do.
    assert_eq!(plan(&[member(1, 1), member(2, 99)], &raft), vec![]);
    // A new generation at a new address: the address is updated, the node is not re-added.
    let moved = ClusterMember {
        rpc_addr: "node-2-new:8400".into(),
        ..member(2, 100)
    };
    assert_eq!(
        plan(&[member(1, 1), moved], &raft),
        vec![MembershipChange::UpdateAddress {
            node_id: 2,
            rpc_addr: "node-2-new:8400".into()
        }]
    );
}

// ---- the running reconciler ----

#[test]
fn nodes_removed_while_alive_are_not_re_added_until_they_restart() {
    let mut departures = Departures::default();
    let gossip = [member(1, 1), member(2, 1), member(3, 1)];
    let all = [voter(1), voter(2), voter(3)];
    assert!(
        departures
            .filter(&gossip, &all, plan(&gossip, &all))
            .is_empty()
    );

    // An admin removal of node 3 while it still gossips: gossip must not undo it.
    let two = [voter(1), voter(2)];
    assert_eq!(
        plan(&gossip, &two),
        vec![add(3)],
        "plain planning would re-add it"
    );
    assert!(
        departures
            .filter(&gossip, &two, plan(&gossip, &two))
            .is_empty()
    );
    // Still refused while it is silent for a while and comes back as the same incarnation.
    let silent = [member(1, 1), member(2, 1)];
    assert!(
        departures
            .filter(&silent, &two, plan(&silent, &two))
            .is_empty()
    );
    assert!(
        departures
            .filter(&gossip, &two, plan(&gossip, &two))
            .is_empty()
    );

    // A restart (new generation) may join again.
    let restarted = [member(1, 1), member(2, 1), member(3, 2)];
    assert_eq!(
        departures.filter(&restarted, &two, plan(&restarted, &two)),
        vec![add(3)]
    );
}

#[test]
fn a_removed_incarnation_added_back_by_an_admin_is_a_member_again() {
    let mut departures = Departures::default();
    let gossip = [member(1, 1), member(2, 1)];
    let both = [voter(1), voter(2)];
    let one = [voter(1)];
    departures.filter(&gossip, &both, plan(&gossip, &both));
    assert!(
        departures
            .filter(&gossip, &one, plan(&gossip, &one))
            .is_empty()
    );
    // `logctl admin add 2` makes it a learner again: promotion is planned as usual, and a later
    // removal is remembered afresh.
    let learner_again = [voter(1), learner(2)];
    assert_eq!(
        departures.filter(&gossip, &learner_again, plan(&gossip, &learner_again)),
        plan(&gossip, &learner_again)
    );
    assert!(!plan(&gossip, &learner_again).is_empty());
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    AddAndPromote(u64, String),
    Remove(u64),
}

#[derive(Default)]
struct FakeState {
    is_leader: bool,
    changing: bool,
    /// node id → (rpc addr, voter)
    members: BTreeMap<u64, (String, bool)>,
    /// node id → how many more calls about it fail
    failures: HashMap<u64, usize>,
}

/// A Raft stand-in that applies changes to a map and records every call.
struct FakeRaft {
    state: Mutex<FakeState>,
    calls: watch::Sender<Vec<Call>>,
}

impl FakeRaft {
    fn new(is_leader: bool, members: &[RaftMember]) -> Arc<Self> {
        let state = FakeState {
            is_leader,
            members: members
                .iter()
                .map(|m| (m.node_id, (m.rpc_addr.clone(), m.voter)))
                .collect(),
            ..FakeState::default()
        };
        Arc::new(FakeRaft {
            state: Mutex::new(state),
            calls: watch::channel(Vec::new()).0,
        })
    }

    fn set_leader(&self, is_leader: bool) {
        self.state.lock().is_leader = is_leader;
    }

    fn set_changing(&self, changing: bool) {
        self.state.lock().changing = changing;
    }

    fn fail(&self, node_id: u64, times: usize) {
        self.state.lock().failures.insert(node_id, times);
    }

    fn voters(&self) -> Vec<u64> {
        let state = self.state.lock();
        state
            .members
            .iter()
            .filter(|(_, (_, voter))| *voter)
            .map(|(id, _)| *id)
            .collect()
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Applies `change` unless a failure is scheduled for the node; records the call either way.
    fn call(&self, call: Call, change: impl FnOnce(&mut FakeState)) -> Result<(), RaftAdminError> {
        let node_id = match &call {
            Call::AddAndPromote(id, _) | Call::Remove(id) => *id,
        };
        let result = {
            let mut state = self.state.lock();
            match state.failures.get_mut(&node_id) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    Err(RaftAdminError::new(std::io::Error::other(format!(
                        "injected failure for node {node_id}"
                    ))))
                }
                _ => {
                    change(&mut state);
                    Ok(())
                }
            }
        };
        self.calls.send_modify(|calls| calls.push(call));
        result
    }
}

#[async_trait]
impl RaftAdmin for FakeRaft {
    fn view(&self) -> RaftView {
        let state = self.state.lock();
        RaftView {
            is_leader: state.is_leader,
            changing: state.changing,
            members: state
                .members
                .iter()
                .map(|(id, (addr, voter))| RaftMember {
                    node_id: *id,
                    rpc_addr: addr.clone(),
                    voter: *voter,
                })
                .collect(),
        }
    }

    async fn add_and_promote(&self, node_id: u64, rpc_addr: &str) -> Result<(), RaftAdminError> {
        self.call(Call::AddAndPromote(node_id, rpc_addr.into()), |state| {
            state.members.insert(node_id, (rpc_addr.to_string(), true));
        })
    }

    async fn remove(&self, node_id: u64) -> Result<(), RaftAdminError> {
        self.call(Call::Remove(node_id), |state| {
            state.members.remove(&node_id);
        })
    }
}

struct Harness {
    raft: Arc<FakeRaft>,
    gossip: watch::Sender<Vec<ClusterMember>>,
    reconciler: Reconciler,
}

impl Harness {
    fn start(raft: Arc<FakeRaft>, members: Vec<ClusterMember>) -> Harness {
        let (gossip, members_rx) = watch::channel(members);
        let config = ReconcilerConfig {
            resync_interval: Duration::from_millis(20),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(40),
        };
        let admin: Arc<dyn RaftAdmin> = raft.clone();
        let reconciler = Reconciler::spawn(admin, members_rx, config);
        Harness {
            raft,
            gossip,
            reconciler,
        }
    }

    /// Publishes `members` and waits for a pass that planned from exactly them.
    async fn gossip(&self, members: Vec<ClusterMember>) -> ReconcileStatus {
        self.gossip.send_replace(members.clone());
        self.settled(&members).await
    }

    /// Waits for a completed pass that observed `members`.
    async fn settled(&self, members: &[ClusterMember]) -> ReconcileStatus {
        let mut status = self.reconciler.status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.observed == members))
            .await
            .expect("a reconcile pass over the new members")
            .expect("reconciler running")
            .clone()
    }

    /// Waits until the calls satisfy `done`, returning them.
    async fn calls_until(&self, what: &str, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let mut calls = self.raft.calls.subscribe();
        match tokio::time::timeout(WAIT, calls.wait_for(|c| done(c))).await {
            Ok(Ok(calls)) => calls.clone(),
            _ => panic!("{what}: calls so far {:?}", self.raft.calls()),
        }
    }
}

#[tokio::test]
async fn only_the_leader_adds_new_members() {
    let raft = FakeRaft::new(false, &[voter(1)]);
    let h = Harness::start(raft.clone(), vec![member(1, 1)]);
    let status = h.gossip(vec![member(1, 1), member(2, 1)]).await;
    assert!(!status.acting && status.pending.is_empty(), "{status:?}");
    assert_eq!(raft.calls(), vec![], "a follower changes nothing");

    raft.set_leader(true);
    let calls = h
        .calls_until("node 2 added once this node leads", |c| !c.is_empty())
        .await;
    assert_eq!(calls, vec![Call::AddAndPromote(2, "node-2:8400".into())]);
    assert_eq!(raft.voters(), vec![1, 2]);
}

#[tokio::test]
async fn nothing_happens_while_a_configuration_change_is_in_flight() {
    let raft = FakeRaft::new(true, &[voter(1)]);
    raft.set_changing(true);
    let h = Harness::start(raft.clone(), vec![member(1, 1)]);
    let status = h.gossip(vec![member(1, 1), member(2, 1)]).await;
    assert!(!status.acting, "{status:?}");
    assert_eq!(status.pending, vec![add(2)], "the change waits");
    assert_eq!(raft.calls(), vec![]);

    raft.set_changing(false);
    h.calls_until("node 2 added after the change committed", |c| c.len() == 1)
        .await;
    assert_eq!(raft.voters(), vec![1, 2]);
}

#[tokio::test]
async fn failed_changes_are_retried_until_they_succeed() {
    let raft = FakeRaft::new(true, &[voter(1)]);
    raft.fail(2, 3);
    let h = Harness::start(raft.clone(), vec![member(1, 1), member(2, 1)]);
    let calls = h
        .calls_until("three failures, then success", |c| c.len() == 4)
        .await;
    assert!(
        calls
            .iter()
            .all(|c| *c == Call::AddAndPromote(2, "node-2:8400".into())),
        "{calls:?}"
    );
    assert_eq!(raft.voters(), vec![1, 2]);
    let mut status = h.reconciler.status();
    let status = tokio::time::timeout(WAIT, status.wait_for(|s| s.applied == 1))
        .await
        .expect("success recorded")
        .expect("running")
        .clone();
    assert_eq!(status.last_error, None, "cleared by the success");
    assert!(status.pending.is_empty(), "{status:?}");
}

#[tokio::test]
async fn a_node_that_keeps_failing_does_not_hold_up_the_others() {
    let raft = FakeRaft::new(true, &[voter(1)]);
    raft.fail(2, usize::MAX);
    let h = Harness::start(raft.clone(), vec![member(1, 1), member(2, 1), member(3, 1)]);
    h.calls_until("node 3 added despite node 2", |c| {
        c.contains(&Call::AddAndPromote(3, "node-3:8400".into()))
    })
    .await;
    // Node 2 keeps being retried (with backoff) and never blocks node 3.
    h.calls_until("node 2 retried", |c| {
        c.iter()
            .filter(|c| matches!(c, Call::AddAndPromote(2, _)))
            .count()
            >= 3
    })
    .await;
    assert_eq!(raft.voters(), vec![1, 3]);
    let status = h.reconciler.status().borrow().clone();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("node 2")),
        "{status:?}"
    );
}

#[tokio::test]
async fn leaving_members_are_removed_and_not_re_added() {
    let raft = FakeRaft::new(true, &[voter(1), voter(2), voter(3)]);
    let h = Harness::start(raft.clone(), vec![member(1, 1), member(2, 1), member(3, 1)]);
    h.gossip(vec![member(1, 1), member(2, 1), leaving(3, 1)])
        .await;
    h.calls_until("node 3 removed", |c| !c.is_empty()).await;
    assert_eq!(raft.voters(), vec![1, 2]);

    // Node 3 is still live and still says it is leaving; it must not come back.
    let status = h
        .gossip(vec![member(1, 1), member(2, 1), leaving(3, 2)])
        .await;
    assert!(status.pending.is_empty(), "{status:?}");
    assert_eq!(raft.calls(), vec![Call::Remove(3)]);
}

#[tokio::test]
async fn silent_and_restarted_members_change_nothing() {
    let raft = FakeRaft::new(true, &[voter(1), voter(2), voter(3)]);
    let all = vec![member(1, 1), member(2, 1), member(3, 1)];
    let h = Harness::start(raft.clone(), all.clone());
    h.settled(&all).await;

    // Node 3 goes silent: the failure detector drops it from the live members.
    let status = h.gossip(vec![member(1, 1), member(2, 1)]).await;
    assert!(status.acting && status.pending.is_empty(), "{status:?}");
    // Node 3 comes back as a new generation at the same address.
    let status = h
        .gossip(vec![member(1, 1), member(2, 1), member(3, 2)])
        .await;
    assert!(status.acting && status.pending.is_empty(), "{status:?}");
    // And node 2 restarts too.
    let status = h
        .gossip(vec![member(1, 1), member(2, 7), member(3, 2)])
        .await;
    assert!(status.pending.is_empty(), "{status:?}");

    assert_eq!(
        raft.calls(),
        vec![],
        "no Raft change for silence or restarts"
    );
    assert_eq!(raft.voters(), vec![1, 2, 3]);
}

#[tokio::test]
async fn the_reconciler_stops_when_gossip_stops() {
    let raft = FakeRaft::new(true, &[voter(1)]);
    let Harness {
        gossip, reconciler, ..
    } = Harness::start(raft, vec![member(1, 1)]);
    drop(gossip);
    let mut reconciler = reconciler;
    tokio::time::timeout(WAIT, &mut reconciler.task)
        .await
        .expect("the task ends")
        .expect("without panicking");
}
