//! Raft consensus for LogCluster with openraft, on the commit log itself (ARCHITECTURE
//! decision 1: each record is written once, into the commit log; offsets are Raft indexes).
//!
//! * [`types`] — openraft's type configuration and the replicated [`types::Record`].
//! * [`entry_codec`] — Raft entries ↔ commit-log frames.
//! * [`log_store`] — openraft's log storage on [`crate::log::Log`], with group commit
//!   ([`syncer`]) and the [`stable_store`] (vote, purge point, committed and applied state).
//! * [`state_machine`] — the applied watermark + membership; metadata-only snapshots.
//! * [`retention`] — the only thing that purges.
//! * [`pb`], [`network`] — the `raft.v1` peer protocol: conversions and the client (cached
//!   mTLS channels); the server is [`crate::api::RaftService`]; [`unanswered`] is the
//!   replication stream's deadline (idle streams are not broken ones).
//! * [`commit_log`] — the client API's [`CommitLog`](crate::commit_log::CommitLog) on Raft
//!   (forwarding produces from followers to the leader).
//! * [`cluster_admin`] — what `admin.v1` does: initialize, add/remove node, transfer
//!   leadership, status, with [`AdminError`]; [`joint`] finishes a membership change its
//!   leader abandoned between its two steps.
//!
//! Layering: this module depends on `log`, `commit_log`, `auth` (TLS for peer channels) and
//! `telemetry`, never on `api`: the gRPC services are thin adapters in [`crate::api`].
//! * [`node`] — [`RaftNode`], the façade `lognode` wires.
//!
//! # Wiring (what `lognode` does)
//!
//! ```ignore
//! // Bind first: the advertised address must carry the real port.
//! let listener = TcpListener::bind(config.listen_addr).await?;
//! let mut raft_config = RaftNodeConfig::new(node_id, advertise_addr, &config.data_dir);
//! raft_config.log = log_config;                      // fsync policy, segment sizes, max record
//! raft_config.heartbeat_interval = args.heartbeat_interval;
//! raft_config.retention_bytes = args.retention_bytes;
//! raft_config.retention_age = args.retention_age;
//! let raft = RaftNode::start(raft_config, tls_files.clone(), metrics.clone()).await?;
//! let closing = Closing::new();                     // ends never-ending streams on shutdown
//! let log_service = LogService::new(raft.commit_log(), access.clone(), limits)
//!     .with_closing(closing.clone());
//! let routes = GrpcRoutes::new(log_service)
//!     .await?
//!     .add_service(RaftService::for_node(&raft, access.clone(), closing.clone()).into_server())
//!     .add_service(AdminService::new(raft.admin().clone(), access.clone()).into_server());
//! // serve `routes` on the TLS listener, then:
//! if args.bootstrap { raft.bootstrap_if_new().await?; }
//! if !args.join.is_empty() { raft.join(&args.join).await?; }   // cancellable
//! tokio::select! { reason = raft.fatal() => exit(reason), _ = sigterm => {} }
//! if args.leave_on_shutdown { raft.leave().await?; }
//! raft.shutdown().await?;
//! ```
//!
//! The gRPC server should use large HTTP/2 receive windows (e.g. 32 MiB per connection, 8 MiB
//! per stream): replication batches arrive as requests on the follower.

mod admin_error;
mod blocking;
pub mod cluster_admin;
pub mod commit_log;
mod connect_backoff;
pub mod entry_codec;
pub mod error;
pub mod gossip_admin;
mod joint;
pub mod log_store;
pub mod metrics_watch;
pub mod network;
pub mod node;
pub mod pb;
pub mod retention;
pub mod stable_store;
pub mod state_machine;
pub mod syncer;
pub mod types;
mod unanswered;
pub mod vote_gate;

/// The Raft handle: openraft with our types and state machine. Declared here, above both, so
/// that `types` does not depend on `state_machine` (which depends on `types`).
pub type Raft = openraft::Raft<types::TypeConfig, state_machine::StateMachine>;

pub use cluster_admin::{AdminError, AdminTimeouts, ClusterAdmin};
pub use commit_log::RaftCommitLog;
pub use error::{RaftNodeError, Result};
pub use node::{RaftNode, RaftNodeConfig};

/// openraft's storage test suite against our log store and state machine.
#[cfg(test)]
mod tests;
