//! The LogCluster node.
pub mod agent;
pub mod api;
pub mod auth;
pub mod commit_log;
pub mod config;
pub mod error;
pub mod http;
pub mod log;
pub mod membership;
pub mod raft;
pub mod telemetry;
