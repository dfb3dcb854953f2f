//! Raft clusters of in-process nodes over real `raft.v1` gRPC with real mutual TLS on loopback:
//! replication, forwarding, failover, membership changes, leadership transfer, snapshots after
//! retention, and the authorization of the peer and admin APIs.

mod admin;
mod replication;
mod security;
mod snapshot;
mod throughput;
mod vote_gate;
