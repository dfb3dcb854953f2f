//! A request larger than the server accepts is `RESOURCE_EXHAUSTED`, however it is refused.
//!
//! Our own size check answers a record over `--max-record-bytes` with `RESOURCE_EXHAUSTED`
//! (reason `RECORD_TOO_LARGE`). A message larger still — over the gRPC decoding limit — never
//! reaches it: tonic refuses it while decoding, with `OUT_OF_RANGE` ("decoded message length too
//! large"). proglog clients read `OUT_OF_RANGE` as the end of the log, so a 64 MiB record looked
//! like a read past the end. [`OversizedLayer`] rewrites that answer for unary calls (tonic sends
//! it as a trailers-only response, before any handler runs), and [`as_resource_exhausted`] does
//! the same for a message inside a client stream.

use std::task::{Context, Poll};

use tonic::{Code, Status};

use crate::commit_log::CommitLogError;

/// How tonic's decoder begins the message of the refusal.
const TONIC_DECODE_LIMIT: &str = "Error, decoded message length too large: found ";

/// `status` as `RESOURCE_EXHAUSTED` with our details when it is tonic's decoding-limit refusal;
/// any other status unchanged.
pub fn as_resource_exhausted(status: Status) -> Status {
    if status.code() != Code::OutOfRange {
        return status;
    }
    let Some(rest) = status.message().strip_prefix(TONIC_DECODE_LIMIT) else {
        return status;
    };
    // "<len> bytes, the limit is: <limit> bytes"
    let number = |text: &str| text.split(' ').next().and_then(|n| n.parse::<u64>().ok());
    let size = number(rest);
    let max = rest
        .split_once("the limit is: ")
        .and_then(|(_, limit)| number(limit));
    match (size, max) {
        // The same refusal as a record over `--max-record-bytes` (one mapping, `api::status`).
        (Some(size), Some(max)) => CommitLogError::RecordTooLarge { size, max }.into(),
        _ => status,
    }
}

/// Rewrites tonic's decoding-limit refusal of a unary request (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct OversizedLayer;

impl<S> tower::Layer<S> for OversizedLayer {
    type Service = Oversized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversized { inner }
    }
}

/// The service of [`OversizedLayer`].
#[derive(Debug, Clone)]
pub struct Oversized<S> {
    inner: S,
}

impl<S, Req, B> tower::Service<Req> for Oversized<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(http::Response<B>) -> http::Response<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        use futures::TryFutureExt as _;
        self.inner.call(request).map_ok(rewrite_headers::<B>)
    }
}

/// Replaces the status in a trailers-only response's headers when it is the decoding refusal.
fn rewrite_headers<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    if status.code() != Code::OutOfRange || !status.message().starts_with(TONIC_DECODE_LIMIT) {
        return response;
    }
    let rewritten = as_resource_exhausted(status);
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if rewritten.add_header(headers).is_err() {
        // Not expected (our message and details are valid header values); keep tonic's answer
        // rather than send none.
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(Code::OutOfRange as i32),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tonic_refusal() -> Status {
        Status::out_of_range(format!(
            "{TONIC_DECODE_LIMIT}67108900 bytes, the limit is: 16842752 bytes"
        ))
    }

    #[test]
    fn the_decoding_refusal_becomes_resource_exhausted_with_sizes() {
        let status = as_resource_exhausted(tonic_refusal());
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("67108900 bytes"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("16842752 bytes"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn other_out_of_range_answers_are_left_alone() {
        let end_of_log = Status::out_of_range("the requested offset is outside the log's range");
        let kept = as_resource_exhausted(end_of_log);
        assert_eq!(kept.code(), Code::OutOfRange);
        assert_eq!(
            kept.message(),
            "the requested offset is outside the log's range"
        );
    }

    #[test]
    fn a_trailers_only_response_is_rewritten_in_its_headers() {
        let response: http::Response<()> = tonic_refusal().into_http();
        let rewritten = rewrite_headers(response);
        let status = Status::from_header_map(rewritten.headers()).expect("a status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let ok = http::Response::new(());
        assert!(Status::from_header_map(rewrite_headers(ok).headers()).is_none());
    }
}
