//! The node's gRPC services on its one mutual-TLS port: the client API (`log.v1`), and with
//! Raft the peer (`raft.v1`) and admin (`admin.v1`) APIs, plus gRPC health and reflection.

pub mod access;
pub mod backend;
pub mod closing;
pub mod local;
pub mod log_service;
pub mod server;
pub mod status;

pub use access::AccessControl;
pub use backend::{BackendError, CommitLog, MemberRole, NewRecord, ServerInfo};
pub use closing::Closing;
pub use log_service::{LogService, LogServiceLimits};
