use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use logcluster_api::log_v1::{
    ConsumeRequest, GetServersRequest, ProduceBatchRequest, ProduceRequest, Record, RecordType,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{Options, TestNode, committed_end, eventually};

fn record(value: &str) -> Option<Record> {
    Some(Record {
        value: Bytes::from(value.to_owned()),
        ..Record::default()
    })
}

#[tokio::test]
async fn produced_records_are_consumed_back_at_their_offsets() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let mut offsets = Vec::new();
    for value in ["first", "second", "third"] {
        let response = client
            .produce(ProduceRequest {
                record: record(value),
            })
            .await
            .expect("produce");
        offsets.push(response.into_inner().offset);
    }
    assert_eq!(offsets, vec![0, 1, 2]);
    for (offset, value) in offsets.iter().zip(["first", "second", "third"]) {
        let response = client
            .consume(ConsumeRequest { offset: *offset })
            .await
            .expect("consume")
            .into_inner();
        let got = response.record.expect("record");
        assert_eq!(got.value, value.as_bytes());
        assert_eq!(got.offset, *offset);
        assert_eq!(got.r#type, RecordType::Data as u32);
        assert!(got.timestamp_unix_ms > 0, "the leader stamps records");
    }
}

#[tokio::test]
async fn a_batch_is_appended_in_one_call_with_offsets_in_order() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    client
        .produce(ProduceRequest {
            record: record("before"),
        })
        .await
        .expect("produce");
    let values: Vec<String> = (0..100).map(|i| format!("batch-{i}")).collect();
    let response = client
        .produce_batch(ProduceBatchRequest {
            records: values.iter().filter_map(|v| record(v)).collect(),
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(response.offsets, (1..=100).collect::<Vec<u64>>());
    for (offset, value) in response.offsets.iter().zip(&values) {
        let got = client
            .consume(ConsumeRequest { offset: *offset })
            .await
            .expect("consume");
        assert_eq!(
            got.into_inner().record.expect("record").value,
            value.as_bytes()
        );
    }
    let empty = client
        .produce_batch(ProduceBatchRequest { records: vec![] })
        .await
        .expect_err("empty batch");
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn produce_stream_commits_many_in_flight_requests_in_order() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    const N: usize = 2000;
    let requests = futures::stream::iter((0..N).map(|i| ProduceRequest {
        record: record(&format!("stream-{i}")),
    }));
    let mut responses = client
        .produce_stream(requests)
        .await
        .expect("stream")
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(response) = responses.next().await {
        offsets.push(response.expect("produce").offset);
    }
    assert_eq!(
        offsets,
        (0..N as u64).collect::<Vec<u64>>(),
        "one response per request, in order"
    );
    for i in [0usize, N / 2, N - 1] {
        let got = client
            .consume(ConsumeRequest { offset: i as u64 })
            .await
            .expect("consume");
        assert_eq!(
            got.into_inner().record.expect("record").value,
            format!("stream-{i}").as_bytes()
        );
    }
}

#[tokio::test]
async fn consume_stream_started_before_records_exist_receives_them_as_they_commit() {
    let node = TestNode::start().await;
    let mut consumer = node.client_as("root").await;
    let mut producer = node.client_as("root").await;
    let mut stream = consumer
        .consume_stream(ConsumeRequest { offset: 0 })
        .await
        .expect("stream")
        .into_inner();
    for i in 0..5 {
        producer
            .produce(ProduceRequest {
                record: record(&format!("live-{i}")),
            })
            .await
            .expect("produce");
        let got = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the record arrives")
            .expect("stream open")
            .expect("record");
        let got = got.record.expect("record");
        assert_eq!(got.offset, i);
        assert_eq!(got.value, format!("live-{i}").as_bytes());
    }
    // The client goes away: the server ends the call (logged and counted as CANCELLED).
    drop(stream);
    eventually("the server to notice the consumer left", || async {
        let (_, metrics) = node.http_get("/metrics").await;
        metrics.lines().any(|line| {
            line.starts_with("logcluster_rpc_requests_total")
                && line.contains("ConsumeStream")
                && line.contains("CANCELLED")
                && line.trim_end().ends_with(" 1")
        })
    })
    .await;
}

#[tokio::test]
async fn consume_stream_from_a_later_offset_skips_earlier_records() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    for i in 0..10 {
        client
            .produce(ProduceRequest {
                record: record(&format!("r{i}")),
            })
            .await
            .expect("produce");
    }
    let mut stream = client
        .consume_stream(ConsumeRequest { offset: 7 })
        .await
        .expect("stream")
        .into_inner();
    for expected in 7..10u64 {
        let got = stream
            .next()
            .await
            .expect("open")
            .expect("record")
            .record
            .expect("record");
        assert_eq!(got.offset, expected);
    }
}

#[tokio::test]
async fn out_of_range_reads_carry_the_valid_range_in_error_details() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    client
        .produce(ProduceRequest {
            record: record("only"),
        })
        .await
        .expect("produce");
    let status = client
        .consume(ConsumeRequest { offset: 5 })
        .await
        .expect_err("beyond the end");
    assert_eq!(status.code(), Code::OutOfRange);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "OFFSET_OUT_OF_RANGE");
    assert_eq!(info.domain, "logcluster.io");
    assert_eq!(info.metadata["offset"], "5");
    assert_eq!(info.metadata["first_offset"], "0");
    assert_eq!(info.metadata["next_offset"], "1");
    let localized = details.localized_message().expect("LocalizedMessage");
    assert!(
        localized.message.contains("outside the log's range: 5"),
        "{}",
        localized.message
    );
}

#[tokio::test]
async fn an_oversized_record_is_refused_and_nothing_is_written() {
    let node = TestNode::start_with(Options {
        max_record_bytes: 1024,
        ..Options::default()
    })
    .await;
    let mut client = node.client_as("root").await;
    client
        .produce(ProduceRequest {
            record: record("small"),
        })
        .await
        .expect("produce");
    let big = "x".repeat(2048);
    let status = client
        .produce(ProduceRequest {
            record: record(&big),
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "RECORD_TOO_LARGE");
    assert_eq!(info.metadata["size"], "2048");
    assert_eq!(info.metadata["max"], "1024");
    // A batch with one oversized record writes none of its records.
    let status = client
        .produce_batch(ProduceBatchRequest {
            records: vec![record("ok").expect("r"), record(&big).expect("r")],
        })
        .await
        .expect_err("batch with a too-large record");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        committed_end(&mut client).await,
        1,
        "nothing after the first record was written"
    );
}

#[tokio::test]
async fn malformed_produces_are_invalid_arguments_and_write_nothing() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let missing = client
        .produce(ProduceRequest { record: None })
        .await
        .expect_err("no record");
    assert_eq!(missing.code(), Code::InvalidArgument);
    let internal = client
        .produce(ProduceRequest {
            record: Some(Record {
                value: Bytes::from_static(b"sneaky"),
                r#type: RecordType::Membership as u32,
                ..Record::default()
            }),
        })
        .await
        .expect_err("clients cannot write membership entries");
    assert_eq!(internal.code(), Code::InvalidArgument);
    assert_eq!(committed_end(&mut client).await, 0);
}

#[tokio::test]
async fn get_servers_lists_the_node_as_leader() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let servers = client
        .get_servers(GetServersRequest {})
        .await
        .expect("servers")
        .into_inner()
        .servers;
    assert_eq!(servers.len(), 1);
    assert!(servers[0].is_leader);
    assert_eq!(servers[0].id, "0");
}

#[tokio::test]
async fn records_survive_a_restart_of_the_node() {
    let mut node = TestNode::start().await;
    {
        let mut client = node.client_as("root").await;
        for i in 0..3 {
            client
                .produce(ProduceRequest {
                    record: record(&format!("durable-{i}")),
                })
                .await
                .expect("produce");
        }
    }
    // Same data directory, same certificates: what a new process would find.
    node.restart().await;
    let mut client = node.client_as("root").await;
    assert_eq!(committed_end(&mut client).await, 3);
    let got = client
        .consume(ConsumeRequest { offset: 2 })
        .await
        .expect("consume");
    assert_eq!(
        got.into_inner().record.expect("record").value,
        "durable-2".as_bytes()
    );
}
