//! The join handler: turns what gossip sees into Raft membership changes, on the leader only
//! (proglog's `Join`/`Leave` handlers, driven by gossip; ARCHITECTURE decision 4 — gossip
//! discovers, Raft decides).
//!
//! Rules, derived afresh from observed state on every pass so that a crash or a leadership change
//! mid-way is harmless (every admin call is idempotent):
//! * a live member that is not in the Raft configuration is **added** as a learner and promoted
//!   to voter once caught up; a live learner is **promoted** (it finishes an interrupted join);
//!   a member whose gossiped rpc address differs from Raft's gets its **address updated**;
//! * a member that announces `leaving` is **removed** through the normal admin path (never the
//!   last voter: the admin path would refuse, so it is not tried);
//! * a member that goes **silent is never removed**: it may be restarting, partitioned or
//!   paused, and only an explicit admin call removes voters;
//! * a **restarted** member (same id, new generation) that is already in the configuration with
//!   the same address needs nothing: restarts are not joins.
//!
//! One change at a time: each pass applies at most one change and waits for it. Nothing is done
//! while this node is not the leader or while a configuration change is in flight (joint
//! consensus). A failed change is retried with exponential backoff per node, so one stuck node
//! (say, a learner that cannot catch up) does not hold up the others.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::member::ClusterMember;

/// A member of the Raft configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMember {
    /// Raft node id.
    pub node_id: u64,
    /// Address the Raft configuration holds for it.
    pub rpc_addr: String,
    /// Voter (or learner).
    pub voter: bool,
}

/// What this node's Raft instance knows, read in one go so that the parts agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftView {
    /// This node is the leader.
    pub is_leader: bool,
    /// A membership change is in flight (joint configuration, or an uncommitted change).
    pub changing: bool,
    /// Voters and learners of the current configuration.
    pub members: Vec<RaftMember>,
}

/// Why the Raft side did not make a change the reconciler asked for. The reconciler only reports
/// it (status, log) and tries again on its next pass, so it keeps the cause opaque but intact.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RaftAdminError(Box<dyn std::error::Error + Send + Sync>);

impl RaftAdminError {
    pub fn new(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        RaftAdminError(Box::new(cause))
    }
}

/// The Raft admin operations the reconciler needs; implemented on the Raft node.
#[async_trait]
pub trait RaftAdmin: Send + Sync + 'static {
    /// This node's current view of the Raft configuration. Cheap: called on every pass.
    fn view(&self) -> RaftView;

    /// Adds `node_id` at `rpc_addr` as a learner, waits until it has caught up, and promotes it
    /// to voter; updates the address of an existing member. Idempotent. Runs on the leader.
    async fn add_and_promote(&self, node_id: u64, rpc_addr: &str) -> Result<(), RaftAdminError>;

    /// Removes `node_id` (voter or learner) from the configuration. Idempotent. Runs on the
    /// leader.
    async fn remove(&self, node_id: u64) -> Result<(), RaftAdminError>;
}

/// One membership change the reconciler wants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// A live node that is not a member: add as learner, promote once caught up.
    Add { node_id: u64, rpc_addr: String },
    /// A live learner: promote once caught up.
    Promote { node_id: u64, rpc_addr: String },
    /// A member now gossiping another rpc address.
    UpdateAddress { node_id: u64, rpc_addr: String },
    /// A member that announced it is leaving.
    Remove { node_id: u64 },
}

impl MembershipChange {
    /// The node the change is about.
    pub fn node_id(&self) -> u64 {
        match self {
            MembershipChange::Add { node_id, .. }
            | MembershipChange::Promote { node_id, .. }
            | MembershipChange::UpdateAddress { node_id, .. }
            | MembershipChange::Remove { node_id } => *node_id,
        }
    }

    async fn apply(&self, admin: &dyn RaftAdmin) -> Result<(), RaftAdminError> {
        match self {
            MembershipChange::Add { node_id, rpc_addr }
            | MembershipChange::Promote { node_id, rpc_addr }
            | MembershipChange::UpdateAddress { node_id, rpc_addr } => {
                admin.add_and_promote(*node_id, rpc_addr).await
            }
            MembershipChange::Remove { node_id } => admin.remove(*node_id).await,
        }
    }
}

/// The changes gossip calls for, given the Raft configuration: removals first (a leaving node
/// wants out, and the operator waits on it), then the rest, each group by node id. Pure, so the
/// rules are tested without any Raft.
pub fn plan(members: &[ClusterMember], raft: &[RaftMember]) -> Vec<MembershipChange> {
    let in_raft: HashMap<u64, &RaftMember> = raft.iter().map(|m| (m.node_id, m)).collect();
    let voters = raft.iter().filter(|m| m.voter).count();
    let mut removals = Vec::new();
    let mut others = Vec::new();
    for member in members {
        let node_id = member.node_id;
        let rpc_addr = member.rpc_addr.clone();
        match (in_raft.get(&node_id), member.leaving) {
            (Some(current), true) => {
                if current.voter && voters <= 1 {
                    tracing::debug!(node_id, "the last voter announced leaving; not removing it");
                } else {
                    removals.push(MembershipChange::Remove { node_id });
                }
            }
            (None, true) => {}
            (None, false) => others.push(MembershipChange::Add { node_id, rpc_addr }),
            (Some(current), false) if current.rpc_addr != member.rpc_addr => {
                others.push(MembershipChange::UpdateAddress { node_id, rpc_addr });
            }
            (Some(current), false) if !current.voter => {
                others.push(MembershipChange::Promote { node_id, rpc_addr });
            }
            (Some(_), false) => {}
        }
    }
    removals.sort_by_key(MembershipChange::node_id);
    others.sort_by_key(MembershipChange::node_id);
    removals.extend(others);
    removals
}

/// Timing of the reconciler.
#[derive(Debug, Clone, Copy)]
pub struct ReconcilerConfig {
    /// Passes run at least this often (leadership and Raft configuration changes are noticed
    /// on the next pass; gossip changes wake the reconciler at once).
    pub resync_interval: Duration,
    /// First retry delay after a failed change.
    pub initial_backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            resync_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What the reconciler saw and did on its latest pass (for tests and diagnostics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileStatus {
    /// Passes completed.
    pub passes: u64,
    /// The gossip members the latest pass planned from.
    pub observed: Vec<ClusterMember>,
    /// Whether the latest pass could act (leader, no change in flight).
    pub acting: bool,
    /// The changes the latest pass found necessary (only computed on the leader).
    pub pending: Vec<MembershipChange>,
    /// Changes applied successfully so far.
    pub applied: u64,
    /// The latest failure, cleared by the next success.
    pub last_error: Option<String>,
}

/// A running reconciler; dropping it stops the task.
pub struct Reconciler {
    status: watch::Receiver<ReconcileStatus>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Reconciler {
    /// Starts reconciling `members` (from [`Membership::members`](super::Membership::members))
    /// into the Raft configuration through `admin`. Runs on every node; acts on the leader only.
    pub fn spawn(
        admin: Arc<dyn RaftAdmin>,
        members: watch::Receiver<Vec<ClusterMember>>,
        config: ReconcilerConfig,
    ) -> Reconciler {
        let (status_tx, status) = watch::channel(ReconcileStatus::default());
        let task = tokio::spawn(run(admin, members, config, status_tx));
        Reconciler { status, task }
    }

    /// The latest pass's status.
    pub fn status(&self) -> watch::Receiver<ReconcileStatus> {
        self.status.clone()
    }

    /// Stops the reconciler (an in-flight change is abandoned; the admin path is idempotent).
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Nodes removed from Raft while alive (by `logctl admin remove` or the operator's scale-down),
/// remembered per incarnation so gossip does not add them straight back. Without it the
/// reconciler would re-add a scaled-down pod in the seconds before Kubernetes stops it. A
/// restart (new generation) is a fresh incarnation and may join again; so may the same
/// incarnation once it is a member again (an explicit `logctl admin add`).
///
/// Every node tracks this from the membership changes it sees in its own log, so a follower
/// that becomes leader right after a removal remembers it too.
#[derive(Debug, Default)]
pub struct Departures {
    previous_members: Option<HashSet<u64>>,
    removed: HashMap<u64, u64>,
}

impl Departures {
    /// Records which members disappeared since the last call while gossip still shows them,
    /// and returns `pending` without additions of such incarnations.
    pub fn filter(
        &mut self,
        observed: &[ClusterMember],
        raft: &[RaftMember],
        pending: Vec<MembershipChange>,
    ) -> Vec<MembershipChange> {
        let members: HashSet<u64> = raft.iter().map(|m| m.node_id).collect();
        let generation_of = |node_id: u64| {
            observed
                .iter()
                .find(|m| m.node_id == node_id)
                .map(|m| m.generation)
        };
        if let Some(previous) = &self.previous_members {
            for &gone in previous.difference(&members) {
                if let Some(generation) = generation_of(gone) {
                    tracing::info!(
                        node_id = gone,
                        generation,
                        "node removed from Raft while alive; gossip will not re-add this incarnation"
                    );
                    self.removed.insert(gone, generation);
                }
            }
        }
        // Forgotten once the node is a member again or a newer incarnation shows up; kept while
        // it is merely silent (it may come back with the same generation).
        self.removed.retain(|node_id, generation| {
            !members.contains(node_id)
                && generation_of(*node_id).is_none_or(|seen| seen == *generation)
        });
        self.previous_members = Some(members);
        pending
            .into_iter()
            .filter(|change| {
                !matches!(change, MembershipChange::Add { node_id, .. }
                    if self.removed.contains_key(node_id))
            })
            .collect()
    }
}

/// Retry state of one node's change.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    not_before: Instant,
    delay: Duration,
}

async fn run(
    admin: Arc<dyn RaftAdmin>,
    mut members: watch::Receiver<Vec<ClusterMember>>,
    config: ReconcilerConfig,
    status: watch::Sender<ReconcileStatus>,
) {
    let mut backoffs: HashMap<u64, Backoff> = HashMap::new();
    let mut departures = Departures::default();
    loop {
        let observed = members.borrow_and_update().clone();
        let view = admin.view();
        let acting = view.is_leader && !view.changing;
        let planned = if view.is_leader {
            plan(&observed, &view.members)
        } else {
            Vec::new()
        };
        let pending = departures.filter(&observed, &view.members, planned);
        // Backoffs of changes no longer wanted are forgotten (e.g. the node left meanwhile).
        backoffs.retain(|node_id, _| pending.iter().any(|c| c.node_id() == *node_id));

        let now = Instant::now();
        let ready = |change: &&MembershipChange| {
            backoffs
                .get(&change.node_id())
                .is_none_or(|b| b.not_before <= now)
        };
        let chosen = if acting {
            pending.iter().find(ready).cloned()
        } else {
            None
        };
        let mut outcome = None;
        if let Some(change) = chosen {
            tracing::info!(?change, "applying a membership change discovered by gossip");
            let result = change.apply(admin.as_ref()).await;
            match &result {
                Ok(()) => {
                    tracing::info!(?change, "membership change applied");
                    backoffs.remove(&change.node_id());
                }
                Err(error) => {
                    let delay = backoffs
                        .get(&change.node_id())
                        .map_or(config.initial_backoff, |b| {
                            (b.delay * 2).min(config.max_backoff)
                        });
                    tracing::warn!(?change, %error, retry_in = ?delay, "membership change failed");
                    backoffs.insert(
                        change.node_id(),
                        Backoff {
                            not_before: Instant::now() + delay,
                            delay,
                        },
                    );
                }
            }
            outcome = Some(result);
        }
        status.send_modify(|s| {
            s.passes += 1;
            s.observed = observed;
            s.acting = acting;
            s.pending = pending.clone();
            match &outcome {
                Some(Ok(())) => {
                    s.applied += 1;
                    s.last_error = None;
                }
                Some(Err(error)) => s.last_error = Some(error.to_string()),
                None => {}
            }
        });
        if matches!(outcome, Some(Ok(()))) {
            // Re-plan at once from the new configuration: one change at a time, no idling.
            continue;
        }
        // Sleep until the next retry falls due, the next resync, or a gossip change.
        let mut wake = Instant::now() + config.resync_interval;
        if acting {
            for change in &pending {
                let due = backoffs
                    .get(&change.node_id())
                    .map_or(Instant::now(), |b| b.not_before);
                wake = wake.min(due);
            }
        }
        tokio::select! {
            changed = members.changed() => {
                if changed.is_err() {
                    tracing::debug!("gossip stopped; the reconciler stops");
                    return;
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests;
