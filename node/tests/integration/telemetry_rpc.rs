//! The RPC layer end to end: a real tonic server and client over loopback, the node's JSON log
//! layer writing into a capture. Every test names its own subject and reads only its lines, so
//! the tests can share the process-wide subscriber and run in parallel.

use crate::support::telemetry::{
    STREAM_ONE_THEN_DATA_LOSS, STREAM_ONE_THEN_FOREVER, STREAM_TWO_THEN_WAIT, TestServer, capture,
    consume_request, produce_request,
};
use logcluster_api::admin_v1::ClusterStatusRequest;
use logcluster_api::admin_v1::admin_client::AdminClient;
use serde_json::Value;
use tokio_stream::StreamExt as _;

/// The sample value of `series` in the server's metrics.
fn metric(server: &TestServer, series: &str) -> Option<f64> {
    server.metrics.encode().lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

fn assert_duration(line: &Value) {
    let duration = line["duration_ms"].as_f64();
    assert!(
        duration.is_some_and(|ms| ms >= 0.0),
        "duration_ms in {line}"
    );
}

#[tokio::test]
async fn a_unary_call_logs_one_line_with_method_subject_code_duration_and_offset() {
    let capture = capture();
    let server = TestServer::start(0).await;
    let mut client = server.client("unary-ok").await;

    client.produce(produce_request("a")).await.expect("produce");
    let offset = client
        .produce(produce_request("b"))
        .await
        .expect("produce")
        .into_inner()
        .offset;
    assert_eq!(offset, 1);

    let lines = capture.rpc_lines("unary-ok");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let line = &lines[1];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "log.v1.Log/Produce");
    assert_eq!(line["code"], "OK");
    assert_eq!(line["offset"], 1);
    assert_eq!(line["count"], 1);
    assert!(line.get("error").is_none(), "{line}");
    assert_duration(line);
}

#[tokio::test]
async fn a_unary_error_is_logged_once_with_its_code_from_the_trailers_only_response() {
    let capture = capture();
    let server = TestServer::start(3).await;
    let mut client = server.client("unary-error").await;

    let status = client
        .consume(consume_request(9))
        .await
        .expect_err("past the end");
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    let status = client
        .produce(produce_request(""))
        .await
        .expect_err("empty");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let lines = capture.rpc_lines("unary-error");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["method"], "log.v1.Log/Consume");
    assert_eq!(lines[0]["code"], "OUT_OF_RANGE");
    assert_eq!(lines[0]["offset"], 9);
    assert!(lines[0].get("count").is_none(), "{}", lines[0]);
    assert_eq!(lines[0]["error"], "offset 9 is past the end");
    assert_eq!(lines[1]["method"], "log.v1.Log/Produce");
    assert_eq!(lines[1]["code"], "INVALID_ARGUMENT");
    assert!(lines[1].get("offset").is_none(), "{}", lines[1]);
    assert_duration(&lines[0]);
}

#[tokio::test]
async fn a_server_stream_is_logged_once_when_it_ends_with_its_count() {
    let capture = capture();
    let server = TestServer::start(2).await;
    let mut client = server.client("stream-ok").await;

    let mut stream = client
        .consume_stream(consume_request(STREAM_TWO_THEN_WAIT))
        .await
        .expect("stream")
        .into_inner();
    for expected in 0..2 {
        let response = stream.next().await.expect("a record").expect("ok");
        assert_eq!(response.record.expect("record").offset, expected);
    }
    // Both records are through and the stream is still open: the call is not over yet.
    assert_eq!(capture.rpc_lines("stream-ok"), Vec::<Value>::new());

    server.release();
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the release"
    );
    let lines = capture.rpc_lines("stream-ok");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["method"], "log.v1.Log/ConsumeStream");
    assert_eq!(lines[0]["code"], "OK");
    assert_eq!(lines[0]["count"], 2);
    assert_eq!(lines[0]["offset"], 1);
    assert_duration(&lines[0]);
}

#[tokio::test]
async fn a_stream_that_fails_midway_is_logged_with_the_code_from_its_trailers() {
    let capture = capture();
    let server = TestServer::start(1000).await;
    let mut client = server.client("stream-error").await;

    let mut stream = client
        .consume_stream(consume_request(STREAM_ONE_THEN_DATA_LOSS))
        .await
        .expect("stream")
        .into_inner();
    stream.next().await.expect("a record").expect("ok");
    let status = stream
        .next()
        .await
        .expect("an error")
        .expect_err("data loss");
    assert_eq!(status.code(), tonic::Code::DataLoss);

    let lines = capture.rpc_lines("stream-error");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["code"], "DATA_LOSS");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines[0]["error"], "segment checksum mismatch");
    assert_eq!(lines[0]["count"], 1);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_is_logged_once_as_cancelled() {
    let capture = capture();
    let server = TestServer::start(2000).await;
    let mut client = server.client("stream-cancelled").await;

    let mut stream = client
        .consume_stream(consume_request(STREAM_ONE_THEN_FOREVER))
        .await
        .expect("stream")
        .into_inner();
    stream.next().await.expect("a record").expect("ok");
    assert_eq!(capture.rpc_lines("stream-cancelled"), Vec::<Value>::new());
    // Dropping the response stream resets the HTTP/2 stream; the server drops the body.
    drop(stream);

    let lines = capture.wait_for_rpc_lines("stream-cancelled", 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["method"], "log.v1.Log/ConsumeStream");
    assert_eq!(lines[0]["code"], "CANCELLED");
    assert_eq!(lines[0]["count"], 1);
    assert_eq!(lines[0]["offset"], STREAM_ONE_THEN_FOREVER);
    assert_eq!(
        metric(
            &server,
            r#"logcluster_rpc_requests_total{method="log.v1.Log/ConsumeStream",code="CANCELLED"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_bidirectional_stream_is_logged_once_when_the_client_closes_it() {
    let capture = capture();
    let server = TestServer::start(10).await;
    let mut client = server.client("bidi").await;

    let requests = tokio_stream::iter(["x", "y", "z"].map(produce_request));
    let mut responses = client
        .produce_stream(requests)
        .await
        .expect("stream")
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(response) = responses.next().await {
        offsets.push(response.expect("ok").offset);
    }
    assert_eq!(offsets, [10, 11, 12]);

    let lines = capture.rpc_lines("bidi");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["method"], "log.v1.Log/ProduceStream");
    assert_eq!(lines[0]["code"], "OK");
    assert_eq!(lines[0]["count"], 3);
    assert_eq!(lines[0]["offset"], 12);
}

#[tokio::test]
async fn lines_the_handler_logs_carry_the_rpc_span_fields() {
    let capture = capture();
    let server = TestServer::start(0).await;
    let mut client = server.client("in-span").await;
    client.produce(produce_request("a")).await.expect("produce");

    let inside = capture
        .lines(|line| line["message"] == "appending" && line["span"]["subject"] == "in-span");
    assert_eq!(inside.len(), 1, "{inside:#?}");
    assert_eq!(inside[0]["span"]["name"], "rpc");
    assert_eq!(inside[0]["span"]["method"], "log.v1.Log/Produce");
}

#[tokio::test]
async fn rpcs_are_counted_by_method_and_code() {
    let _capture = capture();
    let server = TestServer::start(1).await;
    let mut client = server.client("metrics").await;
    client.produce(produce_request("a")).await.expect("produce");
    client.produce(produce_request("b")).await.expect("produce");
    client.consume(consume_request(0)).await.expect("consume");
    client
        .consume(consume_request(99))
        .await
        .expect_err("out of range");
    // A service this server does not have: its path must not become a label value.
    let status = AdminClient::new(server.channel().await)
        .cluster_status(ClusterStatusRequest::default())
        .await
        .expect_err("not served");
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    let expect = [
        (r#"{method="log.v1.Log/Produce",code="OK"}"#, 2.0),
        (r#"{method="log.v1.Log/Consume",code="OK"}"#, 1.0),
        (r#"{method="log.v1.Log/Consume",code="OUT_OF_RANGE"}"#, 1.0),
        (r#"{method="unknown",code="UNIMPLEMENTED"}"#, 1.0),
    ];
    for (labels, count) in expect {
        assert_eq!(
            metric(&server, &format!("logcluster_rpc_requests_total{labels}")),
            Some(count),
            "{labels}"
        );
        assert_eq!(
            metric(
                &server,
                &format!("logcluster_rpc_duration_seconds_count{labels}")
            ),
            Some(count),
            "{labels}"
        );
    }
    let text = server.metrics.encode();
    assert!(!text.contains("admin.v1"), "{text}");
    let families = text
        .lines()
        .filter(|l| l.starts_with("logcluster_rpc_requests_total{"))
        .count();
    assert_eq!(families, 4, "{text}");
}
