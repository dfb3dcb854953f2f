//! Prometheus metrics and the operator's HTTP endpoints: `/healthz` (the process serves),
//! `/readyz` (it reached the API server and can act: leading, or standing by for the lease) and
//! `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{Error, Result};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    namespace: String,
    cluster: String,
    secret: String,
}

/// The operator's metrics (prefix `logcluster_operator_`).
pub struct Metrics {
    registry: Registry,
    reconciliations: Counter,
    failures: Family<ReasonLabels, Counter>,
    duration: Histogram,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    leader: Gauge,
    /// Certificate series per cluster (`namespace/name`), to drop them when it is deleted.
    certificate_series: Mutex<HashMap<String, Vec<CertificateLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("logcluster_operator");
        let reconciliations = Counter::default();
        registry.register(
            "reconciliations",
            "Reconciles started",
            reconciliations.clone(),
        );
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            duration.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "End of validity of each certificate the operator manages (Unix seconds)",
            certificate_expiry.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            failures,
            duration,
            certificate_expiry,
            leader,
            certificate_series: Mutex::default(),
        }
    }

    /// Counts a reconcile start.
    pub fn reconcile_started(&self) {
        self.reconciliations.inc();
    }

    /// Records how long a reconcile took.
    pub fn reconcile_finished(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, error: &Error) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: error.metric_label().to_owned(),
            })
            .inc();
    }

    /// Failures counted for `reason` so far.
    pub fn failures(&self, reason: &str) -> u64 {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .get()
    }

    /// Sets this replica's leadership.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Replaces the certificate expiry series of one cluster.
    pub fn set_certificate_expiry(
        &self,
        namespace: &str,
        cluster: &str,
        certs: &[(String, SystemTime)],
    ) {
        let key = format!("{namespace}/{cluster}");
        let mut series = self
            .certificate_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for old in series.remove(&key).unwrap_or_default() {
            self.certificate_expiry.remove(&old);
        }
        let mut labels_now = Vec::new();
        for (secret, not_after) in certs {
            let labels = CertificateLabels {
                namespace: namespace.to_owned(),
                cluster: cluster.to_owned(),
                secret: secret.clone(),
            };
            let secs = not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            self.certificate_expiry.get_or_create(&labels).set(secs);
            labels_now.push(labels);
        }
        series.insert(key, labels_now);
    }

    /// Drops the series of a deleted cluster.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str) {
        self.set_certificate_expiry(namespace, cluster, &[]);
        let key = format!("{namespace}/{cluster}");
        self.certificate_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Shared state of the HTTP endpoints.
#[derive(Debug, Clone, Default)]
pub struct HttpState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Set once the operator reached the API server and can act.
    pub ready: Arc<AtomicBool>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// The router of the HTTP endpoints.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, state: HttpState) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("binding the HTTP address {addr}: {e}")))?;
    axum::serve(listener, router(state))
        .await
        .map_err(|e| Error::Config(format!("serving HTTP on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_bounded_reason() {
        let m = Metrics::new();
        m.reconcile_failed(&Error::Config("x".into()));
        m.reconcile_failed(&Error::Config("y".into()));
        m.reconcile_failed(&Error::InvalidSpec {
            field: "f",
            reason: "r".into(),
        });
        assert_eq!(m.failures("config"), 2);
        assert_eq!(m.failures("invalid_spec"), 1);
        let text = m.encode();
        assert!(
            text.contains("logcluster_operator_reconcile_failures_total{reason=\"config\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn certificate_series_are_replaced_and_forgotten() {
        let m = Metrics::new();
        let t = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        m.set_certificate_expiry(
            "ns",
            "demo",
            &[("demo-node-tls".into(), t), ("demo-user-a".into(), t)],
        );
        m.set_certificate_expiry("ns", "demo", &[("demo-node-tls".into(), t)]);
        let text = m.encode();
        assert!(
            text.contains("secret=\"demo-node-tls\"} 2000000000"),
            "{text}"
        );
        assert!(!text.contains("demo-user-a"), "{text}");
        m.forget_cluster("ns", "demo");
        assert!(!m.encode().contains("demo-node-tls"));
    }
}
