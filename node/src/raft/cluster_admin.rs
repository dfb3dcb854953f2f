//! Cluster administration: the logic behind `admin.v1` ([`ClusterAdmin`]); its gRPC service is
//! [`crate::api::AdminService`], which maps [`AdminError`] to a status in one place.
//!
//! Membership-changing calls (AddNode, RemoveNode, TransferLeader) run on the leader. A follower
//! forwards them to the leader over the cached peer channel, authenticated with the node
//! certificate (nodes hold the `admin` permission), marking the call as forwarded so that it is
//! never forwarded twice; when that fails it answers `UNAVAILABLE` with the leader hint in the
//! error details. Every call is idempotent: repeating it after a timeout is safe.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{
    AddNodeRequest, ClusterStatusResponse, Member, MemberRole, MemberStatus, RemoveNodeRequest,
    TransferLeaderRequest,
};
use openraft::errors::{
    ChangeMembershipError, ClientWriteError, Fatal, InitializeError, RaftError,
};
use openraft::{ChangeMembers, Instant as _, RaftMetrics, ServerState};
use tonic::{Request, Status};

use super::Raft;
use super::metrics_watch;
use super::network::{PeerChannels, is_connect_failure};
use super::types::{Node, NodeId, TypeConfig};
use super::vote_gate::VoteGate;
use crate::log::Log;

pub use super::admin_error::AdminError;

/// Metadata key set on calls a follower forwards to the leader.
pub const FORWARDED_HEADER: &str = "x-logcluster-forwarded";

/// How long a membership call may wait (a learner catching up, a leader transfer).
#[derive(Debug, Clone, Copy)]
pub struct AdminTimeouts {
    /// Adding a learner that must catch up before promotion.
    pub catch_up: Duration,
    /// A membership entry to commit, or a leadership transfer to complete.
    pub change: Duration,
}

impl Default for AdminTimeouts {
    fn default() -> Self {
        AdminTimeouts {
            catch_up: Duration::from_secs(120),
            change: Duration::from_secs(15),
        }
    }
}

/// The admin operations of one node.
#[derive(Clone)]
pub struct ClusterAdmin {
    node_id: NodeId,
    raft: Raft,
    log: Log,
    channels: PeerChannels,
    timeouts: AdminTimeouts,
    vote_gate: Arc<VoteGate>,
}

impl std::fmt::Debug for ClusterAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAdmin")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Where a membership call must run.
enum Route {
    Here,
    Leader(NodeId, String),
}

impl ClusterAdmin {
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        log: Log,
        channels: PeerChannels,
        timeouts: AdminTimeouts,
        vote_gate: Arc<VoteGate>,
    ) -> Self {
        ClusterAdmin {
            node_id,
            raft,
            log,
            channels,
            timeouts,
            vote_gate,
        }
    }

    fn metrics(&self) -> RaftMetrics<TypeConfig> {
        metrics_watch::current(&self.raft)
    }

    /// Whether this node leads, or where the leader is; `UNAVAILABLE` when none is known in time.
    /// During an election, or just after a leadership transfer before the new leader has taken
    /// office, no node knows a leader for a moment: wait for one, bounded by a few election
    /// timeouts, rather than fail an admin call that would succeed moments later.
    async fn route(&self) -> Result<Route, AdminError> {
        let me = self.node_id;
        let settled = |m: &RaftMetrics<TypeConfig>| match m.current_leader {
            Some(id) if id == me => m.state == ServerState::Leader,
            Some(_) => true,
            None => false,
        };
        let bound = Duration::from_millis(self.raft.config().election_timeout_max * 4);
        let metrics = match metrics_watch::wait_until(&self.raft, bound, settled).await {
            Ok(metrics) => metrics,
            Err(_) => return Err(AdminError::NoLeader),
        };
        match metrics.current_leader {
            Some(id) if id == me => Ok(Route::Here),
            Some(id) => match metrics.membership_config.membership().get_node(&id) {
                Some(node) => Ok(Route::Leader(id, node.addr.clone())),
                None => Err(AdminError::NotLeader {
                    leader_id: id,
                    leader_addr: None,
                }),
            },
            None => Err(AdminError::NoLeader),
        }
    }

    fn leader_client(
        &self,
        leader: NodeId,
        addr: &str,
    ) -> Result<AdminClient<tonic::transport::Channel>, AdminError> {
        self.channels
            .channel(addr)
            .map(AdminClient::new)
            .map_err(|_| not_leader(leader, addr))
    }

    /// Runs an admin call where it belongs: `None` when this node leads (the caller goes on
    /// here), else the leader's answer to `call` — forwarded once: a call that already was
    /// forwarded is answered "not the leader" rather than sent on again.
    async fn forward<T, F, Fut>(
        &self,
        route: Route,
        forwarded: bool,
        call: F,
    ) -> Result<Option<T>, AdminError>
    where
        F: FnOnce(AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        match route {
            Route::Here => Ok(None),
            Route::Leader(leader, addr) if !forwarded => {
                let client = self.leader_client(leader, &addr)?;
                call(client)
                    .await
                    .map(Some)
                    .map_err(|s| forward_failure(s, leader, &addr))
            }
            Route::Leader(leader, addr) => Err(not_leader(leader, &addr)),
        }
    }

    /// Initializes a new cluster with `voters` (this node must be one). Returns false when the
    /// cluster already is initialized with exactly these voters.
    pub async fn initialize(&self, voters: Vec<Member>) -> Result<bool, AdminError> {
        if voters.is_empty() {
            return Err(AdminError::NoVoters);
        }
        let mut members = BTreeMap::new();
        for member in voters {
            check_addr(&member.rpc_addr)?;
            members.insert(member.node_id, Node::new(member.rpc_addr));
        }
        if !members.contains_key(&self.node_id) {
            return Err(AdminError::NotAmongVoters {
                node_id: self.node_id,
            });
        }
        match self.raft.initialize(members.clone()).await {
            Ok(()) => {
                self.vote_gate.open("initialized a new cluster here");
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                let metrics = self.metrics();
                let current: BTreeSet<NodeId> =
                    metrics.membership_config.membership().voter_ids().collect();
                let requested: BTreeSet<NodeId> = members.keys().copied().collect();
                if current == requested {
                    Ok(false)
                } else {
                    Err(AdminError::InitializedDifferently { current, requested })
                }
            }
            Err(RaftError::APIError(e @ InitializeError::NotInMembers(_))) => {
                Err(AdminError::Refused(Box::new(e)))
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal.into()),
        }
    }

    /// Adds `node` as a learner and, with `promote`, makes it a voter once it has caught up.
    /// Returns the index of the membership entry that made (or already reflects) the change.
    pub async fn add_node(
        &self,
        node: Member,
        promote: bool,
        forwarded: bool,
    ) -> Result<u64, AdminError> {
        check_addr(&node.rpc_addr)?;
        let request = AddNodeRequest {
            node: Some(node.clone()),
            promote_to_voter: promote,
        };
        let route = self.route().await?;
        let on_leader = self.forward(route, forwarded, |mut leader| async move {
            let response = leader.add_node(forwarded_request(request)).await?;
            Ok(response.into_inner().membership_log_index)
        });
        if let Some(index) = on_leader.await? {
            return Ok(index);
        }
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == node.node_id);
        let known = membership.get_node(&node.node_id);
        let same_addr = known.is_some_and(|n| n.addr == node.rpc_addr);
        let mut index = membership_index(&metrics);
        if is_voter && same_addr {
            return Ok(index);
        }
        let id = node.node_id;
        let addr = node.rpc_addr.clone();
        if known.is_some() && !same_addr {
            // The node moved: update its address (a voter keeps its vote).
            let change = ChangeMembers::SetNodes(BTreeMap::from([(id, Node::new(addr.clone()))]));
            index = self.change(change).await?;
            if is_voter {
                return Ok(index);
            }
        }
        if !is_voter {
            let added = tokio::time::timeout(
                self.timeouts.catch_up,
                self.raft.add_learner(id, Node::new(addr), promote),
            )
            .await
            .map_err(|_| AdminError::CatchUpTimedOut {
                node_id: id,
                after: self.timeouts.catch_up,
            })?
            .map_err(AdminError::from)?;
            index = added.log_id.index;
        }
        if promote {
            index = self
                .change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                .await?;
        }
        Ok(index)
    }

    /// Removes node `id` (voter or learner). When it is this node and this node leads,
    /// leadership moves to another voter first.
    pub async fn remove_node(&self, id: NodeId, forwarded: bool) -> Result<u64, AdminError> {
        let route = self.route().await?;
        let on_leader = self.forward(route, forwarded, |mut leader| async move {
            let request = forwarded_request(RemoveNodeRequest { node_id: id });
            Ok(leader
                .remove_node(request)
                .await?
                .into_inner()
                .membership_log_index)
        });
        if let Some(index) = on_leader.await? {
            return Ok(index);
        }
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Ok(membership_index(&metrics));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.contains(&id) && voters.len() == 1 {
            return Err(AdminError::LastVoter { node_id: id });
        }
        if id == self.node_id {
            // Hand leadership over first, then let the new leader remove this node.
            let new_leader = self.transfer_leader(None, true).await?;
            let addr = self
                .metrics()
                .membership_config
                .membership()
                .get_node(&new_leader)
                .map(|n| n.addr.clone())
                .ok_or(AdminError::LeaderWithoutAddress {
                    leader_id: new_leader,
                })?;
            let mut client = self.leader_client(new_leader, &addr)?;
            // The new leader may not have taken office yet, or may lose it to an election right
            // away: ask again (removal is idempotent) until the change deadline.
            let deadline = tokio::time::Instant::now() + self.timeouts.change;
            let pause = Duration::from_millis(self.raft.config().heartbeat_interval);
            loop {
                let answer = client
                    .remove_node(forwarded_request(RemoveNodeRequest { node_id: id }))
                    .await
                    .map(|r| r.into_inner().membership_log_index);
                match answer {
                    Err(status)
                        if status.code() == tonic::Code::Unavailable
                            && tokio::time::Instant::now() + pause < deadline =>
                    {
                        tokio::time::sleep(pause).await;
                    }
                    other => return other.map_err(|s| forward_failure(s, new_leader, &addr)),
                }
            }
        }
        let change = if voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let index = self.change(change).await?;
        // A removed voter stays a learner until its node entry goes too.
        if self
            .metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
        {
            return self
                .change(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                .await;
        }
        Ok(index)
    }

    /// Moves leadership to voter `to` (or the most up-to-date other voter) and returns the new
    /// leader once it leads.
    pub async fn transfer_leader(
        &self,
        to: Option<NodeId>,
        forwarded: bool,
    ) -> Result<NodeId, AdminError> {
        let route = self.route().await?;
        if let Route::Leader(leader, _) = route
            && to == Some(leader)
        {
            return Ok(leader);
        }
        let on_leader = self.forward(route, forwarded, |mut leader| async move {
            let request = forwarded_request(TransferLeaderRequest { node_id: to });
            Ok(leader
                .transfer_leader(request)
                .await?
                .into_inner()
                .new_leader_id)
        });
        if let Some(new_leader) = on_leader.await? {
            return Ok(new_leader);
        }
        let metrics = self.metrics();
        let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let target = match to {
            Some(id) if id == self.node_id => return Ok(id),
            Some(id) if voters.contains(&id) => id,
            Some(id) => {
                return Err(AdminError::NotAVoter { node_id: id });
            }
            None => {
                most_up_to_date(&metrics, &voters, self.node_id).ok_or(AdminError::NoOtherVoter)?
            }
        };
        self.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(AdminError::from)?;
        let me = self.node_id;
        let moved = metrics_watch::wait_until(&self.raft, self.timeouts.change, |m| {
            m.current_leader.is_some_and(|leader| leader != me)
        })
        .await
        .map_err(|source| AdminError::TransferTimedOut { target, source })?;
        moved
            .current_leader
            .ok_or(AdminError::NoLeaderAfterTransfer)
    }

    /// The cluster as this node sees it (the leader knows every member's progress).
    pub fn status(&self) -> ClusterStatusResponse {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_leader = metrics.state == ServerState::Leader;
        let commit_index = metrics.local_committed.map_or(0, |c| c.index);
        let healthy_within = Duration::from_millis(self.raft.config().election_timeout_max * 2);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let role = if metrics.current_leader == Some(*id) {
                    MemberRole::Leader
                } else if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                };
                let (matched_index, healthy) = if *id == self.node_id {
                    (metrics.last_log_index.unwrap_or(0), true)
                } else if is_leader {
                    let matched = metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map_or(0, |m| m.index);
                    let healthy = metrics
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(id).cloned().flatten())
                        .is_some_and(|acked| acked.elapsed() < healthy_within);
                    (matched, healthy)
                } else {
                    (0, metrics.current_leader == Some(*id))
                };
                MemberStatus {
                    node_id: *id,
                    rpc_addr: node.addr.clone(),
                    role: role as i32,
                    matched_index,
                    lag: commit_index.saturating_sub(matched_index),
                    healthy,
                }
            })
            .collect();
        ClusterStatusResponse {
            node_id: self.node_id,
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            commit_index,
            first_offset: self.log.first_offset(),
            next_offset: self.log.next_offset(),
            members,
            membership_changing: membership.get_joint_config().len() > 1,
            membership_log_index: membership_index(&metrics),
        }
    }

    /// Proposes a membership change and waits for it to commit; returns its log index.
    ///
    /// openraft changes voters in two entries, a joint config and then the uniform one, and
    /// the *caller's* future proposes the second. Dropping that future in between — our own
    /// timeout, or tonic cancelling the handler when the caller gives up — left the cluster
    /// in the joint config for good (every voter healthy, the operator "waiting for the
    /// membership change in flight to commit"). So the change runs as its own task, to the
    /// end, and the caller only stops *waiting* for it. A leader change between the steps
    /// strands it too; [`super::joint`] is the backstop for that case.
    async fn change(&self, change: ChangeMembers<NodeId, Node>) -> Result<u64, AdminError> {
        let raft = self.raft.clone();
        let changing = tokio::spawn(async move { raft.change_membership(change, false).await });
        let response = tokio::time::timeout(self.timeouts.change, changing)
            .await
            .map_err(|_| AdminError::ChangeTimedOut)?
            .map_err(AdminError::ChangeTaskFailed)?
            .map_err(AdminError::from)?;
        Ok(response.log_id.index)
    }
}

fn check_addr(addr: &str) -> Result<(), AdminError> {
    if addr.is_empty() || !addr.contains(':') {
        return Err(AdminError::BadAddress {
            addr: addr.to_owned(),
        });
    }
    Ok(())
}

fn membership_index(metrics: &RaftMetrics<TypeConfig>) -> u64 {
    metrics.membership_config.log_id().map_or(0, |id| id.index)
}

/// The voter other than `me` with the highest matched index (the leader's view).
fn most_up_to_date(
    metrics: &RaftMetrics<TypeConfig>,
    voters: &BTreeSet<NodeId>,
    me: NodeId,
) -> Option<NodeId> {
    let matched = |id: &NodeId| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
            .map(|m| m.index)
    };
    voters
        .iter()
        .filter(|id| **id != me)
        .max_by_key(|id| (matched(id), std::cmp::Reverse(**id)))
        .copied()
}

fn forwarded_request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

fn not_leader(leader: NodeId, addr: &str) -> AdminError {
    AdminError::NotLeader {
        leader_id: leader,
        leader_addr: Some(addr.to_owned()),
    }
}

/// A forwarded call that failed: the leader's own answer, or "not the leader" with its address
/// when the leader could not be reached at all.
fn forward_failure(status: Status, leader: NodeId, addr: &str) -> AdminError {
    if is_connect_failure(&status) {
        not_leader(leader, addr)
    } else {
        AdminError::Leader(status)
    }
}

impl From<Fatal<TypeConfig>> for AdminError {
    fn from(fatal: Fatal<TypeConfig>) -> Self {
        match fatal {
            Fatal::Stopped => AdminError::ShuttingDown,
            other => AdminError::Fatal(other),
        }
    }
}

impl From<RaftError<TypeConfig, ClientWriteError<TypeConfig>>> for AdminError {
    fn from(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Self {
        match e {
            RaftError::Fatal(fatal) => fatal.into(),
            RaftError::APIError(
                ClientWriteError::ForwardToLeader(f) | ClientWriteError::LogEntryDiscarded(f),
            ) => match (f.leader_id, f.leader_node) {
                (Some(id), Some(node)) => not_leader(id, &node.addr),
                _ => AdminError::NoLeader,
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                e @ ChangeMembershipError::InProgress(_),
            )) => AdminError::ChangeInProgress(e.to_string()),
            RaftError::APIError(e) => AdminError::Refused(Box::new(e)),
        }
    }
}
