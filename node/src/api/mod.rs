//! The node's gRPC services on its one mutual-TLS port: the client API (`log.v1`), and with
//! Raft the peer (`raft.v1`) and admin (`admin.v1`) APIs, plus gRPC health and reflection.

pub mod admin_service;
pub mod closing;
pub mod log_service;
pub mod oversized;
pub mod raft_service;
pub mod server;
pub mod status;

pub use admin_service::AdminService;
pub use closing::Closing;
pub use log_service::{LogService, LogServiceLimits};
pub use raft_service::RaftService;
