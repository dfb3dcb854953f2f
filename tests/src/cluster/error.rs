//! What a [`ProcessCluster`](super::ProcessCluster) operation fails with: one variant per thing
//! that failed, each naming the node or file and keeping its cause as the source.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use logcluster_api::ClientError;

use super::pki::ClusterPkiError;
use crate::history::Violation;
use crate::read_back::ReadBackError;

/// Result of the harness's operations (tests panic on the error with its message).
pub type Result<T> = std::result::Result<T, ClusterError>;

/// Why a harness operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The test binary's own path (where the built binaries are looked up) is unknown.
    #[error("locating the test binary: {0}")]
    CurrentExe(#[source] io::Error),
    /// The test binary is not in `<target>/<profile>/deps`, so the built binaries cannot be found.
    #[error("unexpected test binary location {}", exe.display())]
    TestBinaryLocation { exe: PathBuf },
    /// A binary the harness runs has not been built.
    #[error(
        "{} not found: build it first (`cargo build --workspace`; `make test` does)",
        path.display()
    )]
    BinaryMissing { path: PathBuf },
    /// The cluster's certificates, policy or gossip key could not be created.
    #[error("creating the cluster's PKI: {0}")]
    Pki(#[from] ClusterPkiError),
    /// A file or directory of the cluster (its temporary directory, a node's data directory or
    /// log segment) could not be created, read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `reading`.
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A node's `lognode` process could not be started.
    #[error("starting node {node}: {source}")]
    Spawn {
        node: usize,
        #[source]
        source: crate::k8s::Error,
    },
    /// The `root` client's certificate, key or CA could not be loaded.
    #[error("loading the root client's TLS files: {0}")]
    ClientTls(#[source] ClientError),
    /// No leader-aware client could connect to the running nodes.
    #[error("connecting a client to the running nodes: {0}")]
    Client(#[source] ClientError),
    /// No connection to one node could be made.
    #[error("connecting to node {node}: {source}")]
    Channel {
        node: usize,
        #[source]
        source: ClientError,
    },
    /// A gRPC call to one node failed.
    #[error("node {node}: {call}: {status}")]
    Rpc {
        node: usize,
        /// The RPC, e.g. `ClusterStatus`.
        call: &'static str,
        #[source]
        status: Box<tonic::Status>,
    },
    /// What a node holds as committed could not be read back.
    #[error(transparent)]
    ReadBack(#[from] ReadBackError),
    /// The history violates properties P1–P7 against the nodes' logs.
    #[error("{} violation(s):\n{}", .0.len(), lines(.0))]
    Violations(Vec<Violation>),
    /// A condition the harness waited for did not happen in time.
    #[error("timed out after {timeout:?} waiting for {awaited} (last seen: {last_seen})\n{logs}")]
    Timeout {
        /// What was awaited, e.g. `3 voters and no membership change in flight`.
        awaited: String,
        timeout: Duration,
        /// What the last check found instead.
        last_seen: String,
        /// The last lines of every node's log.
        logs: String,
    },
    /// The operation needs the node stopped (e.g. cutting its log's tail).
    #[error("node {node} must be stopped first")]
    NodeRunning { node: usize },
    /// A node's log directory holds no segment.
    #[error("no segment in {}", dir.display())]
    NoSegment { dir: PathBuf },
    /// The leader's status does not list a node as a member.
    #[error("node {node} is not a member (the leader, node {leader}, does not list it)")]
    NotAMember { node: usize, leader: usize },
}

fn lines(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
