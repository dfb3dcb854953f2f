//! The LogCluster node.
pub mod error;
pub mod log;
