//! The node's integration tests, one binary with a module per area (docs/testing.md, “Conventions”): linking one
//! binary instead of one per area is what makes `cargo test` on this crate tolerable, and the
//! fixtures live in one place ([`support`]).
//!
//! `telemetry::init` is tested in its own binary (`tests/telemetry_otlp.rs`): it installs the
//! process-wide subscriber and reads the environment, so it needs a process of its own.

mod api;
mod log_model;
mod log_recovery;
mod membership_udp;
mod raft_cluster;
mod support;
mod telemetry_rpc;
