//! logctl and the Rust client against servers that are not ours: one test binary (docs/testing.md, “Conventions”),
//! one module per area. Every server here is an in-process `log.v1` fake on an ephemeral
//! loopback port, with mutual TLS from a throwaway PKI.

mod closed_stdout;
mod fake_log;
mod late_headers;
