//! `logctl`, the LogCluster command line, as library code: the binary stays thin and tests can
//! drive the commands directly.
//!
//! A client only: everything goes through the gRPC API (`logcluster-api`) and the PKI crate
//! (`logcluster-certs`); `logctl dev` runs `lognode` as separate processes.
#![deny(unsafe_code)]

pub mod admin;
pub mod bench;
pub mod certs;
pub mod client;
pub mod dev;
pub mod output;
