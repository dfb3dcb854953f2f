//! Raft consensus for LogCluster with openraft, on the commit log itself (ARCHITECTURE
//! decision 1: each record is written once, into the commit log; offsets are Raft indexes).
//!
//! * [`types`] — openraft's type configuration and the replicated [`types::Record`].
//! * [`entry_codec`] — Raft entries ↔ commit-log frames.
//! * [`log_store`] — openraft's log storage on [`crate::log::Log`], with group commit
//!   ([`syncer`]) and the [`stable_store`] (vote, purge point, committed and applied state).
//! * [`state_machine`] — the applied watermark + membership; metadata-only snapshots.
//! * [`retention`] — the only thing that purges.
//! * [`pb`], [`network`], [`service`] — the `raft.v1` peer protocol: conversions, client
//!   (cached mTLS channels) and server (node role only).
//! * [`commit_log`] — the client API's [`CommitLog`](crate::api::CommitLog) on Raft
//!   (forwarding produces from followers to the leader).
//! * [`admin`] — `admin.v1`: initialize, add/remove node, transfer leadership, status.
//! * [`node`] — [`RaftNode`], the façade `lognode` wires.

pub mod admin;
pub mod commit_log;
pub mod entry_codec;
pub mod error;
pub mod log_store;
pub mod metrics_watch;
pub mod network;
pub mod node;
pub mod pb;
pub mod retention;
pub mod service;
pub mod stable_store;
pub mod state_machine;
#[cfg(test)]
mod storage_suite_tests;
pub mod syncer;
pub mod types;

pub use admin::{AdminService, AdminTimeouts, ClusterAdmin};
pub use error::{RaftNodeError, Result};
pub use node::{RaftNode, RaftNodeConfig};
pub use service::RaftService;
