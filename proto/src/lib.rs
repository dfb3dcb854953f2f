//! LogCluster's gRPC API: the generated `log.v1` (client API, wire-compatible with proglog),
//! `admin.v1` (membership and leadership) code.
#![forbid(unsafe_code)]

/// The client API, package `log.v1`.
pub mod log_v1 {
    tonic::include_proto!("log.v1");
}

/// The admin API, package `admin.v1`.
pub mod admin_v1 {
    tonic::include_proto!("admin.v1");
}

/// The peer API between nodes (Raft replication), package `raft.v1`.
pub mod raft_v1 {
    tonic::include_proto!("raft.v1");
}

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("logcluster_descriptor");

pub mod errors;

pub mod client;
pub use client::{
    ClientConfig, ClientError, ClientTls, ConnectTo, LogClient, LogEnd, ProduceStream,
};

/// A client generated from proglog's own `log.v1` layout (not ours): tests use it to prove
/// wire compatibility. Not part of the supported API.
#[doc(hidden)]
pub mod proglog_v1 {
    include!(concat!(env!("OUT_DIR"), "/proglog/log.v1.rs"));
}
