//! The plaintext health and metrics endpoint (default port 8402): `/livez`, `/readyz` and
//! `/metrics` for the kubelet's probes and Prometheus, which cannot present client
//! certificates. It serves no log data and accepts no writes: every other method gets 405, every
//! other path 404.

use std::future::Future;
use std::io;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::telemetry::Metrics;
use crate::telemetry::metrics::OPENMETRICS_CONTENT_TYPE;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Whether the node should receive traffic, and if not, why (shown by `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `/readyz` answers 200 when true, 503 otherwise.
    pub ready: bool,
    /// Why the node is not ready (empty when it is).
    pub reason: String,
}

impl Readiness {
    /// Ready to serve.
    pub fn ready() -> Self {
        Self {
            ready: true,
            reason: String::new(),
        }
    }

    /// Not ready, because of `reason` (short: it ends up in probe events).
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason: reason.into(),
        }
    }
}

impl Default for Readiness {
    /// A node that has just started is not ready until it says so.
    fn default() -> Self {
        Self::not_ready("starting")
    }
}

/// What the endpoint serves from: the node's metrics and its readiness as the node updates it.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Encoded on every `/metrics` request.
    pub metrics: Metrics,
    /// The node's current readiness.
    pub readiness: watch::Receiver<Readiness>,
}

/// The routes, for serving on a listener of the caller's choosing (or testing in memory).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the endpoint on `listener` until `shutdown` completes, then finishes the requests in
/// flight and returns.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The process is up and its runtime answers: nothing more, so a slow dependency never makes
/// the kubelet restart a node that would recover by itself.
async fn livez() -> Response {
    ([(header::CONTENT_TYPE, TEXT_PLAIN)], "ok\n").into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let readiness = state.readiness.borrow().clone();
    if readiness.ready {
        ([(header::CONTENT_TYPE, TEXT_PLAIN)], "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, TEXT_PLAIN)],
            format!("not ready: {}\n", readiness.reason),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::{Body, to_bytes};
    use axum::http::{Method, Request};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tower::ServiceExt as _;

    use super::*;
    use crate::telemetry::{CertificateRole, LogGauges, RaftGauges};

    fn state() -> (HttpState, watch::Sender<Readiness>) {
        let (tx, readiness) = watch::channel(Readiness::default());
        (
            HttpState {
                metrics: Metrics::new(0),
                readiness,
            },
            tx,
        )
    }

    async fn get(router: &Router, method: Method, path: &str) -> (StatusCode, String, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn readyz_follows_the_readiness_the_node_publishes() {
        let (state, readiness) = state();
        let router = router(state);
        let (status, _, body) = get(&router, Method::GET, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n")
        );

        readiness.send_replace(Readiness::ready());
        let (status, _, body) = get(&router, Method::GET, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));

        readiness.send_replace(Readiness::not_ready("no leader"));
        let (status, _, body) = get(&router, Method::GET, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: no leader\n")
        );

        // Liveness does not depend on readiness.
        let (status, _, _) = get(&router, Method::GET, "/livez").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_exposes_every_named_series_as_openmetrics() {
        let (state, _readiness) = state();
        let metrics = state.metrics.clone();
        metrics.record_rpc(
            "log.v1.Log/Produce",
            "OK",
            std::time::Duration::from_millis(1),
        );
        metrics.record_append(1, 10);
        metrics.observe_fsync(std::time::Duration::from_micros(80));
        metrics.set_raft(RaftGauges::default());
        metrics.set_certificate_not_after(CertificateRole::Node, 1_900_000_000);
        metrics.register_log_stats(Arc::new(LogGauges::default));
        let (status, content_type, body) = get(&router(state), Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        for series in [
            "logcluster_rpc_requests_total{",
            "logcluster_rpc_duration_seconds_bucket{",
            "logcluster_log_appended_records_total ",
            "logcluster_log_appended_bytes_total ",
            "logcluster_log_first_offset ",
            "logcluster_log_next_offset ",
            "logcluster_log_segments ",
            "logcluster_log_segment_bytes ",
            "logcluster_log_fsync_duration_seconds_bucket{",
            "logcluster_raft_term ",
            "logcluster_raft_commit_index ",
            "logcluster_raft_applied_index ",
            "logcluster_raft_is_leader ",
            "logcluster_raft_membership_size ",
            "logcluster_gossip_datagrams_dropped_total{",
            "logcluster_tls_certificate_not_after_seconds{",
            "logcluster_consumed_records_total{",
        ] {
            assert!(
                body.lines().any(|line| line.starts_with(series)),
                "{series} missing from\n{body}"
            );
        }
    }

    #[tokio::test]
    async fn the_endpoint_accepts_no_writes_and_serves_nothing_else() {
        let (state, _readiness) = state();
        let router = router(state);
        for path in ["/livez", "/readyz", "/metrics"] {
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                let (status, _, _) = get(&router, method.clone(), path).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            }
        }
        let (status, _, _) = get(&router, Method::GET, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn serve_answers_over_tcp_and_stops_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (state, _readiness) = state();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));

        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok\n"), "{response}");

        stop.send(()).expect("server still running");
        server.await.expect("join").expect("serve");
    }
}
