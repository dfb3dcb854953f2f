//! The LogCluster node.
pub mod auth;
pub mod error;
pub mod log;
