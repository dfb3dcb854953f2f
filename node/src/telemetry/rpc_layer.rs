//! A tower layer for the tonic server that gives every RPC a span, metrics and exactly one log
//! line when the call is over (proglog's ctxtags + zap interceptors, done once for all services).
//!
//! "Over" means different things per call shape, which is why the layer wraps the response
//! body instead of only awaiting the handler:
//! - a unary error comes back as a *trailers-only* response: `grpc-status` is in the response
//!   headers and the body is empty — the call is finished when the headers are;
//! - every other call carries its status in the trailers at the end of the body — the call is
//!   finished when the trailers pass through (for a server stream that is when the stream ends,
//!   so the duration is the stream's whole life);
//! - a client that goes away (resets the stream, disconnects) drops the body or the handler's
//!   future; the call is then logged once as `CANCELLED`.
//!
//! Handlers add what only they know — the offset a produce got, how many records a stream
//! carried — through the [`RpcFields`] handle the layer puts into the request extensions (tonic
//! hands the HTTP request's extensions to `tonic::Request::extensions()`).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;

use super::metrics::Metrics;

/// Reads the caller's verified identity from a request (the wiring supplies it: the peer
/// certificate lives in the connection info that the TLS acceptor puts into the extensions).
pub type SubjectFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

/// Per-call values a handler reports for the RPC's span and log line. Cheap to clone; every
/// clone writes to the same call. Safe to use from tasks the handler spawns.
#[derive(Clone, Default)]
pub struct RpcFields {
    inner: Arc<FieldsInner>,
}

#[derive(Default)]
struct FieldsInner {
    offset: AtomicU64,
    has_offset: AtomicBool,
    count: AtomicU64,
    has_count: AtomicBool,
}

impl RpcFields {
    /// Reports the offset the call is about (produced, or asked for); the last one set wins,
    /// so a stream reports where it got to.
    pub fn set_offset(&self, offset: u64) {
        self.inner.offset.store(offset, Ordering::Relaxed);
        self.inner.has_offset.store(true, Ordering::Release);
    }

    /// Adds `n` records to the call's count (records produced or consumed).
    pub fn add_count(&self, n: u64) {
        self.inner.count.fetch_add(n, Ordering::Relaxed);
        self.inner.has_count.store(true, Ordering::Release);
    }

    /// The offset reported so far, if any.
    pub fn offset(&self) -> Option<u64> {
        self.inner
            .has_offset
            .load(Ordering::Acquire)
            .then(|| self.inner.offset.load(Ordering::Relaxed))
    }

    /// The record count reported so far, if any.
    pub fn count(&self) -> Option<u64> {
        self.inner
            .has_count
            .load(Ordering::Acquire)
            .then(|| self.inner.count.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for RpcFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcFields")
            .field("offset", &self.offset())
            .field("count", &self.count())
            .finish()
    }
}

/// The [`RpcFields`] of the call `req` belongs to. When the request did not pass through
/// [`RpcLayer`] (a handler called directly in a unit test) the handle is detached: what is
/// reported goes nowhere, so handlers never need to branch on it.
pub fn rpc_fields<T>(req: &tonic::Request<T>) -> RpcFields {
    req.extensions()
        .get::<RpcFields>()
        .cloned()
        .unwrap_or_default()
}

/// The canonical name of a gRPC status code (`OK`, `INVALID_ARGUMENT`, …), as used in log
/// lines, span fields and the `code` metric label.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Codes that mean the server failed, as OpenTelemetry's gRPC conventions count them; all
/// others are the caller's doing (bad argument, no permission, out of range) and not errors of
/// this service.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The gRPC code a client derives from an HTTP status when no `grpc-status` came back
/// (gRPC's "HTTP to gRPC status code mapping").
fn code_from_http_status(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// Adds [`RpcService`] around the tonic routes: `Server::builder().layer(RpcLayer::new(m))`.
#[derive(Clone)]
pub struct RpcLayer {
    metrics: Metrics,
    subject: Option<SubjectFn>,
}

impl RpcLayer {
    /// A layer that records into `metrics` and reports no subject.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            subject: None,
        }
    }

    /// Takes the caller's identity for spans and log lines from `subject`.
    pub fn with_subject<F>(mut self, subject: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.subject = Some(Arc::new(subject));
        self
    }
}

impl fmt::Debug for RpcLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcLayer")
            .field("subject", &self.subject.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RpcLayer`] builds.
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body,
    ResBody::Error: fmt::Display,
{
    type Response = http::Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let method = parts.uri.path().trim_start_matches('/').to_owned();
        let subject = self
            .layer
            .subject
            .as_ref()
            .and_then(|subject| subject(&parts));
        let fields = RpcFields::default();
        parts.extensions.insert(fields.clone());

        let span = tracing::info_span!(
            "rpc",
            method = %method,
            subject = subject.as_deref(),
            code = Empty,
            duration_ms = Empty,
            offset = Empty,
            count = Empty,
            otel.kind = "server",
            otel.status_code = Empty,
        );
        // Entered while the inner service builds its future, so work done eagerly in `call`
        // belongs to the RPC too.
        let inner = {
            let _entered = span.enter();
            self.inner.call(http::Request::from_parts(parts, body))
        };
        RpcFuture {
            inner,
            span: span.clone(),
            call: Some(RpcCall {
                state: Some(CallState {
                    span,
                    start: Instant::now(),
                    method,
                    subject,
                    fields,
                    metrics: self.layer.metrics.clone(),
                }),
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcService`]: runs the handler inside the RPC's span.
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        call: Option<RpcCall>,
    }
}

impl<F, ResBody, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body,
    ResBody::Error: fmt::Display,
{
    type Output = Result<http::Response<RpcBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            ready!(this.inner.poll(cx))
        };
        let Some(mut call) = this.call.take() else {
            // Polled again after completion: a contract violation by the caller, not ours to
            // paper over, but never a second log line.
            return Poll::Ready(
                result.map(|response| response.map(|body| RpcBody::new(body, Span::none(), None))),
            );
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                call.finish(Code::Unknown, Some("the service failed before responding"));
                return Poll::Ready(Err(error));
            }
        };
        // Trailers-only response (how tonic sends an error a handler returned): the status is
        // in the headers and nothing follows.
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            call.finish(status.code(), Some(status.message()));
        } else if response.status() != http::StatusCode::OK {
            call.finish(
                code_from_http_status(response.status()),
                Some(response.status().as_str()),
            );
        }
        let call = call.state.is_some().then_some(call);
        let span = this.span.clone();
        Poll::Ready(Ok(response.map(|body| RpcBody::new(body, span, call))))
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`RpcService`]: passes every frame through and finishes the call
    /// when the trailers (with `grpc-status`) go by, or when it is dropped before that.
    pub struct RpcBody<B>
    where
        B: Body,
    {
        #[pin]
        inner: B,
        span: Span,
        call: Option<RpcCall>,
    }

    impl<B> PinnedDrop for RpcBody<B>
    where
        B: Body,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let Some(mut call) = this.call.take() else {
                return;
            };
            if this.inner.is_end_stream() {
                // Sent completely, but without the trailers every gRPC response ends with.
                call.finish(Code::Unknown, Some("the response ended without a grpc-status"));
            }
            // Otherwise dropping `call` logs the call as cancelled: the client went away (or
            // the connection broke) mid-response.
        }
    }
}

impl<B: Body> RpcBody<B> {
    fn new(inner: B, span: Span, call: Option<RpcCall>) -> Self {
        Self { inner, span, call }
    }
}

impl<B> Body for RpcBody<B>
where
    B: Body,
    B::Error: fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // A streaming handler's stream is polled from here: its work belongs to the RPC span.
        let frame = {
            let _entered = this.span.enter();
            ready!(this.inner.poll_frame(cx))
        };
        if let Some(mut call) = this.call.take() {
            match &frame {
                Some(Ok(frame)) => match frame.trailers_ref() {
                    Some(trailers) => match tonic::Status::from_header_map(trailers) {
                        Some(status) => call.finish(status.code(), Some(status.message())),
                        None => call.finish(Code::Unknown, Some("trailers without grpc-status")),
                    },
                    None => *this.call = Some(call),
                },
                Some(Err(error)) => call.finish(Code::Internal, Some(&error.to_string())),
                None => call.finish(
                    Code::Unknown,
                    Some("the response ended without a grpc-status"),
                ),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One RPC in flight. Finishing it records the span fields, the metrics and the log line, once;
/// dropping it unfinished finishes it as cancelled.
struct RpcCall {
    state: Option<CallState>,
}

struct CallState {
    span: Span,
    start: Instant,
    method: String,
    subject: Option<String>,
    fields: RpcFields,
    metrics: Metrics,
}

impl RpcCall {
    fn finish(&mut self, code: Code, message: Option<&str>) {
        if let Some(state) = self.state.take() {
            state.finish(code, message);
        }
    }
}

impl Drop for RpcCall {
    fn drop(&mut self) {
        self.finish(
            Code::Cancelled,
            Some("the client went away before the call completed"),
        );
    }
}

impl CallState {
    fn finish(self, code: Code, message: Option<&str>) {
        let elapsed = self.start.elapsed();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let code_name = code_name(code);
        let offset = self.fields.offset();
        let count = self.fields.count();
        let error = (code != Code::Ok).then_some(message).flatten();

        let span = &self.span;
        span.record("code", code_name);
        span.record("duration_ms", duration_ms);
        if let Some(offset) = offset {
            record_integer(span, "offset", offset);
        }
        if let Some(count) = count {
            record_integer(span, "count", count);
        }
        span.record(
            "otel.status_code",
            if is_server_error(code) { "error" } else { "ok" },
        );

        // NB: an unknown path answers UNIMPLEMENTED; its name must not become a label, or any
        // authenticated client could grow the registry without bound.
        let method_label = if code == Code::Unimplemented {
            "unknown"
        } else {
            self.method.as_str()
        };
        self.metrics.record_rpc(method_label, code_name, elapsed);

        // The one line per call carries every field itself (no parent span), so a log
        // collector needs no span context to read it.
        let subject = self.subject.as_deref();
        let method = self.method.as_str();
        // `event!` needs its level as a constant: one arm per level.
        macro_rules! rpc_finished {
            ($level:expr) => {
                tracing::event!(
                    parent: None,
                    $level,
                    method,
                    subject,
                    code = code_name,
                    duration_ms,
                    offset,
                    count,
                    error,
                    "rpc finished"
                )
            };
        }
        // Codes that point at a bug or a broken disk are warnings; the rest is normal traffic.
        if matches!(code, Code::Unknown | Code::Internal | Code::DataLoss) {
            rpc_finished!(tracing::Level::WARN);
        } else {
            rpc_finished!(tracing::Level::INFO);
        }
    }
}

/// Records `value` as a signed integer where it fits: tracing-opentelemetry exports `u64`
/// fields as strings but `i64` as OTLP integers, which trace queries can compare.
fn record_integer(span: &Span, field: &str, value: u64) {
    match i64::try_from(value) {
        Ok(value) => span.record(field, value),
        Err(_) => span.record(field, value),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_report_nothing_until_the_handler_sets_them() {
        let fields = RpcFields::default();
        assert_eq!((fields.offset(), fields.count()), (None, None));
        let clone = fields.clone();
        clone.set_offset(7);
        clone.set_offset(9);
        clone.add_count(2);
        clone.add_count(3);
        assert_eq!((fields.offset(), fields.count()), (Some(9), Some(5)));
    }

    #[test]
    fn fields_of_a_request_without_the_layer_are_detached() {
        let request = tonic::Request::new(());
        let fields = rpc_fields(&request);
        fields.set_offset(1);
        assert_eq!(rpc_fields(&request).offset(), None);

        let mut request = tonic::Request::new(());
        let attached = RpcFields::default();
        request.extensions_mut().insert(attached.clone());
        rpc_fields(&request).add_count(4);
        assert_eq!(attached.count(), Some(4));
    }

    fn requests_total(metrics: &Metrics, method: &str, code: &str) -> Option<String> {
        let series =
            format!(r#"logcluster_rpc_requests_total{{method="{method}",code="{code}"}} "#);
        let text = metrics.encode();
        text.lines()
            .find_map(|line| line.strip_prefix(&series).map(str::to_owned))
    }

    fn request(path: &str) -> http::Request<tonic::body::Body> {
        http::Request::builder()
            .uri(path)
            .body(tonic::body::Body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn a_call_dropped_before_the_handler_answers_counts_as_cancelled() {
        let metrics = Metrics::new(1);
        let handler = tower::service_fn(|_request: http::Request<tonic::body::Body>| {
            std::future::pending::<
                Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
            >()
        });
        let mut service = RpcLayer::new(metrics.clone()).layer(handler);
        // Boxed, so that dropping it drops the future (a stack pin would outlive the drop).
        let mut call = Box::pin(service.call(request("/log.v1.Log/Produce")));
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert_eq!(
            requests_total(&metrics, "log.v1.Log/Produce", "CANCELLED"),
            None
        );
        drop(call);
        assert_eq!(
            requests_total(&metrics, "log.v1.Log/Produce", "CANCELLED").as_deref(),
            Some("1")
        );
    }

    #[tokio::test]
    async fn an_http_error_without_grpc_status_gets_the_grpc_code_a_client_would_see() {
        let metrics = Metrics::new(1);
        let handler = tower::service_fn(|_request: http::Request<tonic::body::Body>| async {
            let response = http::Response::builder()
                .status(http::StatusCode::SERVICE_UNAVAILABLE)
                .body(tonic::body::Body::empty())
                .expect("response");
            Ok::<_, std::convert::Infallible>(response)
        });
        let mut service = RpcLayer::new(metrics.clone()).layer(handler);
        let response = service
            .call(request("/log.v1.Log/Consume"))
            .await
            .expect("infallible");
        // Finished with the headers: nothing is left for the body to report.
        drop(response);
        assert_eq!(
            requests_total(&metrics, "log.v1.Log/Consume", "UNAVAILABLE").as_deref(),
            Some("1")
        );
        assert_eq!(
            requests_total(&metrics, "log.v1.Log/Consume", "CANCELLED"),
            None
        );
    }

    #[test]
    fn code_names_are_the_canonical_grpc_names() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::OutOfRange), "OUT_OF_RANGE");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        for value in 0..=16 {
            let name = code_name(Code::from_i32(value));
            assert!(
                name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{name}"
            );
        }
    }
}
