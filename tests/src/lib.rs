//! Harnesses for LogCluster integration and end-to-end tests.
//!
//! * [`cluster`] — real `lognode` processes on loopback with fault injection (tier 3/4).
//! * [`history`] — the client-side history and the P1–P8 checker.
//! * [`http`] — a plain GET for health and metrics ports.
//! * [`k8s`] — a real etcd + kube-apiserver control plane on loopback (tier 5 of docs/testing.md).
//! * [`read_back`] — what one node holds as committed, for the checker.

pub mod cluster;
pub mod history;
pub use logcluster_testkit::http;
pub mod k8s;
pub mod read_back;
