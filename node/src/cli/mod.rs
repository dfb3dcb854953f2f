//! `logctl` subcommands implemented as library code, so the binary stays thin and tests can
//! drive them directly.

pub mod admin;
pub mod bench;
pub mod certs;
pub mod client;
pub mod dev;
