//! Harnesses for LogCluster integration and end-to-end tests.
//!
//! * [`k8s`] — a real etcd + kube-apiserver control plane on loopback (tier 5 of TESTING.md).

pub mod k8s;
