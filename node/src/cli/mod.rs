//! `logctl` subcommands implemented as library code, so the binary stays thin and tests can
//! drive them directly.

pub mod certs;
pub mod client;
