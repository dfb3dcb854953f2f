//! Fixtures shared by the areas of the integration tests. Certificates come from
//! [`logcluster_certs::testsuite::TestPki`], the one test PKI of the workspace.
//!
//! * [`single_node`] — one node started through the real wiring (`RunningNode`).
//! * [`cluster`] — clusters of in-process Raft nodes over real gRPC and mutual TLS.
//! * [`telemetry`] — a fake `log.v1.Log` service behind the RPC layer, and a log capture.

pub mod cluster;
pub mod single_node;
pub mod telemetry;

use logcluster_testkit::http;

use std::net::SocketAddr;

use logcluster_certs::testsuite::TestCert;
use logcluster_node::auth::tls::TlsFiles;

/// The node's TLS configuration for a certificate of the test PKI.
pub fn tls_files(cert: &TestCert) -> TlsFiles {
    TlsFiles::new(cert.ca.clone(), cert.cert.clone(), cert.key.clone())
}

/// `GET path` on a node's plaintext health/metrics port: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let target = addr.to_string();
    let request_path = path.to_owned();
    tokio::task::spawn_blocking(move || http::get(&target, &request_path))
        .await
        .expect("the GET task ran")
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}
