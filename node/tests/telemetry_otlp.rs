//! `telemetry::init` with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports one span per RPC, with the
//! RPC's fields, to an OTLP collector over gRPC — here a fake collector on loopback that
//! records what it receives.
//!
//! This binary holds exactly one test: `init` installs the process-wide subscriber and reads
//! the environment, which the test sets before any thread of its own exists.

// The integration binary's telemetry fixtures; this test uses only part of them.
#[allow(dead_code)]
#[path = "integration/support/telemetry.rs"]
mod telemetry_support;

use std::time::Duration;

use logcluster_node::config::LogFormat;
use logcluster_node::telemetry;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use telemetry_support::{STREAM_ONE_THEN_DATA_LOSS, TestServer, consume_request, produce_request};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;

/// Forwards every export it receives to the test.
struct FakeCollector {
    received: mpsc::UnboundedSender<ExportTraceServiceRequest>,
}

#[tonic::async_trait]
impl TraceService for FakeCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.received.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span as received, with the resource it came from.
#[derive(Debug, Clone)]
struct Received {
    service_name: Option<Value>,
    span: Span,
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string(value: &str) -> Option<Value> {
    Some(Value::StringValue(value.to_owned()))
}

fn rpc_span<'a>(spans: &'a [Received], method: &str) -> Option<&'a Received> {
    spans.iter().find(|r| {
        r.span.name == "rpc" && attribute(&r.span.attributes, "method") == string(method).as_ref()
    })
}

#[test]
fn rpc_spans_reach_the_otlp_collector_with_the_rpc_fields() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind collector");
    listener.set_nonblocking(true).expect("nonblocking");
    let collector_addr = listener.local_addr().expect("addr");
    // SAFETY: the only test of this binary, before it starts any thread: nothing reads the
    // environment concurrently.
    unsafe {
        std::env::set_var(
            telemetry::tracing::OTEL_EXPORTER_OTLP_ENDPOINT,
            format!("http://{collector_addr}"),
        );
        std::env::remove_var(telemetry::tracing::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
        std::env::remove_var(telemetry::tracing::OTEL_SERVICE_NAME);
        std::env::set_var(telemetry::tracing::RUST_LOG, "info");
        // Export a batch soon after a span ends, so the test waits on arrivals, not on a flush
        // racing the last span's end.
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "20");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (received, mut exports) = mpsc::unbounded_channel();
        let incoming = TcpListenerStream::new(
            tokio::net::TcpListener::from_std(listener).expect("tokio listener"),
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(FakeCollector { received }))
                .serve_with_incoming(incoming),
        );

        // "warn" would hide the info-level RPC spans: RUST_LOG=info must win over it.
        let guard = telemetry::init(LogFormat::Json, "warn", "lognode-otlp-test").expect("init");
        assert!(guard.exports_spans());

        let server = TestServer::start(5).await;
        let mut client = server.client("otlp-subject").await;
        let offset = client
            .produce(produce_request("traced"))
            .await
            .expect("produce")
            .into_inner()
            .offset;
        assert_eq!(offset, 5);
        let mut stream = client
            .consume_stream(consume_request(STREAM_ONE_THEN_DATA_LOSS))
            .await
            .expect("stream")
            .into_inner();
        while let Some(Ok(_)) = stream.next().await {}

        // Collect exports until both RPC spans and the handler's child span have arrived.
        let mut spans: Vec<Received> = Vec::new();
        let arrived = async {
            while rpc_span(&spans, "log.v1.Log/Produce").is_none()
                || rpc_span(&spans, "log.v1.Log/ConsumeStream").is_none()
                || !spans.iter().any(|r| r.span.name == "append")
            {
                let export = exports.recv().await.expect("collector alive");
                for resource_spans in export.resource_spans {
                    let service_name = resource_spans
                        .resource
                        .as_ref()
                        .and_then(|r| attribute(&r.attributes, "service.name").cloned());
                    for scope_spans in resource_spans.scope_spans {
                        spans.extend(scope_spans.spans.into_iter().map(|span| Received {
                            service_name: service_name.clone(),
                            span,
                        }));
                    }
                }
            }
        };
        // Only a guard against hanging the suite: spans arrive within milliseconds.
        tokio::time::timeout(Duration::from_secs(60), arrived)
            .await
            .unwrap_or_else(|_| panic!("spans did not reach the collector; got {spans:#?}"));

        let produce = rpc_span(&spans, "log.v1.Log/Produce").expect("produce span");
        assert_eq!(produce.service_name, string("lognode-otlp-test"));
        let attributes = &produce.span.attributes;
        assert_eq!(attribute(attributes, "subject"), string("otlp-subject").as_ref());
        assert_eq!(attribute(attributes, "code"), string("OK").as_ref());
        assert_eq!(attribute(attributes, "offset"), Some(&Value::IntValue(5)));
        assert_eq!(attribute(attributes, "count"), Some(&Value::IntValue(1)));
        assert!(
            matches!(attribute(attributes, "duration_ms"), Some(Value::DoubleValue(ms)) if *ms >= 0.0),
            "{attributes:?}"
        );
        assert_eq!(produce.span.kind, SpanKind::Server as i32);
        assert_ne!(
            produce.span.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );

        // The handler's work is a child of the RPC span, in the same trace.
        let append = spans
            .iter()
            .find(|r| r.span.name == "append")
            .expect("append span");
        assert_eq!(append.span.parent_span_id, produce.span.span_id);
        assert_eq!(append.span.trace_id, produce.span.trace_id);

        let stream = rpc_span(&spans, "log.v1.Log/ConsumeStream").expect("stream span");
        let attributes = &stream.span.attributes;
        assert_eq!(attribute(attributes, "code"), string("DATA_LOSS").as_ref());
        assert_eq!(attribute(attributes, "count"), Some(&Value::IntValue(1)));
        assert_eq!(
            stream.span.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );

        drop(server);
        // Shutting export down waits for the collector; keep that off the runtime's workers.
        tokio::task::spawn_blocking(move || drop(guard))
            .await
            .expect("shutdown");
    });
}
