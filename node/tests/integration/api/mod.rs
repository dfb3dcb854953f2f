//! The node's client API over real mutual TLS on loopback: functional behaviour, the security
//! matrix, live reloads, proglog wire compatibility and observability.

mod client_api;
mod compat;
mod observability;
mod reload;
mod security;
