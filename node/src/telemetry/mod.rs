//! Observability of a node: structured logs and OTLP traces ([`tracing`]), Prometheus metrics
//! ([`metrics`]) and the per-RPC span, metrics and log line of the gRPC server ([`rpc_layer`]).
//! The health and metrics HTTP endpoint that serves them is [`crate::http`].

pub mod metrics;
pub mod rpc_layer;
pub mod tracing;

pub use self::metrics::{
    CertificateRole, GossipDropReason, LogGauges, LogStatsProvider, Metrics, RaftGauges,
};
pub use self::rpc_layer::{RpcFields, RpcLayer, rpc_fields};
pub use self::tracing::{TelemetryGuard, TracingConfig, init};
