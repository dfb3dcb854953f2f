//! The error of the `logcluster-node` library's top layer: starting, running and stopping a node
//! ([`crate::agent`]). Each subsystem has its own typed error (`log::Error`, `RaftNodeError`,
//! `AuthError`, `MembershipError`, `ConfigError`); this enum wraps them with what the node was
//! doing, so `lognode` prints one line that names the step and keeps the cause's chain.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::auth::AuthError;
use crate::auth::tls::TlsFiles;
use crate::config::ConfigError;
use crate::membership::MembershipError;
use crate::raft::RaftNodeError;

/// Result of node operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a node could not start, stopped, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("loading the node's TLS files {files:?}: {source}")]
    Tls {
        files: Box<TlsFiles>,
        #[source]
        source: AuthError,
    },
    #[error("building the TLS server configuration: {0}")]
    TlsServer(#[source] AuthError),
    #[error("loading the ACL policy {}: {source}", path.display())]
    Acl {
        path: PathBuf,
        #[source]
        source: AuthError,
    },
    #[error("starting Raft on {}: {source}", data_dir.display())]
    RaftStart {
        data_dir: PathBuf,
        #[source]
        source: RaftNodeError,
    },
    #[error("binding the {port} port {addr}: {source}")]
    Bind {
        port: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("building the gRPC services: {0}")]
    Services(#[source] tonic_reflection::server::Error),
    #[error("bootstrapping the cluster: {0}")]
    Bootstrap(#[source] RaftNodeError),
    #[error("the gossip flags: {0}")]
    GossipConfig(#[source] MembershipError),
    #[error("starting gossip discovery: {0}")]
    Gossip(#[source] MembershipError),
    /// The node must not keep serving (e.g. a failed fsync): it exits and restarts from disk.
    #[error("fatal: {0}")]
    Fatal(String),
    #[error("gossip failed: {0}")]
    GossipStopped(String),
    #[error("the Raft node is still in use at shutdown")]
    RaftInUse,
    #[error("shutting Raft down: {0}")]
    RaftShutdown(#[source] RaftNodeError),
}
