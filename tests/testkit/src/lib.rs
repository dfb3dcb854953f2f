//! Test helpers shared by the workspace's test suites. It depends on nothing, so any crate can
//! take it as a dev-dependency: the node's tests use it without pulling in the end-to-end
//! harness (`logcluster-tests`, which depends on the node and on the Kubernetes client).
//!
//! * [`http`] — a plain GET for health and metrics ports.

pub mod http;
