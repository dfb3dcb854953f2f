use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use logcluster_api::log_v1::{
    ConsumeRequest, GetServersRequest, ProduceBatchRequest, ProduceRequest, Record, RecordType,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::single_node::{Options, TestNode, committed_end, eventually};

fn record(value: &str) -> Option<Record> {
    Some(Record {
        value: Bytes::from(value.to_owned()),
        ..Record::default()
    })
}

fn consume(offset: u64) -> ConsumeRequest {
    ConsumeRequest {
        offset,
        end_offset: 0,
    }
}

async fn produce(client: &mut crate::support::single_node::RawLog, value: &str) -> u64 {
    client
        .produce(ProduceRequest {
            record: record(value),
        })
        .await
        .expect("produce")
        .into_inner()
        .offset
}

#[tokio::test]
async fn produced_records_are_consumed_back_at_their_offsets() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let mut offsets = Vec::new();
    for value in ["first", "second", "third"] {
        offsets.push(produce(&mut client, value).await);
    }
    // Offsets are Raft indexes: the cluster's own entries (membership, the leader's blank entry)
    // come first; one producer's records then follow each other.
    let base = offsets[0];
    assert_eq!(offsets, vec![base, base + 1, base + 2]);
    for (offset, value) in offsets.iter().zip(["first", "second", "third"]) {
        let got = client
            .consume(consume(*offset))
            .await
            .expect("consume")
            .into_inner()
            .record
            .expect("record");
        assert_eq!(got.value, value.as_bytes());
        assert_eq!(got.offset, *offset);
        assert_eq!(got.r#type, RecordType::Data as u32);
        assert!(got.timestamp_unix_ms > 0, "the leader stamps records");
    }
    // The entries before the first record are Raft's own (membership, the leader's blank
    // entry): a consumer never sees them. `Consume` of one answers with the next data record,
    // whose offset says where it is.
    assert!(
        base > 0,
        "a new cluster's first record follows Raft's own entries"
    );
    for internal in 0..base {
        let got = client
            .consume(consume(internal))
            .await
            .expect("consume an internal offset")
            .into_inner()
            .record
            .expect("record");
        assert_eq!(
            (got.offset, got.r#type, got.value.as_ref()),
            (base, RecordType::Data as u32, b"first".as_slice()),
            "Consume({internal})"
        );
    }
}

#[tokio::test]
async fn a_batch_is_appended_in_one_call_with_offsets_in_order() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let before = produce(&mut client, "before").await;
    let values: Vec<String> = (0..100).map(|i| format!("batch-{i}")).collect();
    let response = client
        .produce_batch(ProduceBatchRequest {
            records: values.iter().filter_map(|v| record(v)).collect(),
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(
        response.offsets,
        (before + 1..=before + 100).collect::<Vec<u64>>()
    );
    for (offset, value) in response.offsets.iter().zip(&values) {
        let got = client.consume(consume(*offset)).await.expect("consume");
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
async fn produce_stream_commits_many_in_flight_requests_in_request_order() {
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
    assert_eq!(offsets.len(), N, "one response per request");
    // One stream's records keep their order in the log (and nothing else writes here).
    let base = offsets[0];
    assert_eq!(offsets, (base..base + N as u64).collect::<Vec<u64>>());
    for i in [0usize, N / 2, N - 1] {
        let got = client.consume(consume(offsets[i])).await.expect("consume");
        assert_eq!(
            got.into_inner().record.expect("record").value,
            format!("stream-{i}").as_bytes()
        );
    }
}

#[tokio::test]
async fn a_bad_record_in_a_produce_stream_ends_it_after_answering_the_ones_before() {
    let node = TestNode::start_with(Options {
        max_record_bytes: 1024,
        ..Options::default()
    })
    .await;
    let mut client = node.client_as("root").await;
    let big = "x".repeat(2048);
    let requests = futures::stream::iter(vec![
        ProduceRequest {
            record: record("a"),
        },
        ProduceRequest {
            record: record("b"),
        },
        ProduceRequest {
            record: record(&big),
        },
        ProduceRequest {
            record: record("never"),
        },
    ]);
    let mut responses = client
        .produce_stream(requests)
        .await
        .expect("stream")
        .into_inner();
    let first = responses.next().await.expect("answer").expect("a");
    let second = responses.next().await.expect("answer").expect("b");
    assert_eq!(second.offset, first.offset + 1);
    let error = responses
        .next()
        .await
        .expect("answer")
        .expect_err("too large");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert!(
        responses.next().await.is_none(),
        "the stream ends at the error"
    );
    assert_eq!(committed_end(&mut client).await, second.offset + 1);
}

#[tokio::test]
async fn consume_stream_started_before_records_exist_receives_them_as_they_commit() {
    let node = TestNode::start().await;
    let mut consumer = node.client_as("root").await;
    let mut producer = node.client_as("root").await;
    let from = committed_end(&mut consumer).await;
    let mut stream = consumer
        .consume_stream(consume(from))
        .await
        .expect("stream")
        .into_inner();
    for i in 0..5 {
        let offset = produce(&mut producer, &format!("live-{i}")).await;
        let got = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the record arrives")
            .expect("stream open")
            .expect("record")
            .record
            .expect("record");
        assert_eq!(got.offset, offset);
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
    let mut offsets = Vec::new();
    for i in 0..10 {
        offsets.push(produce(&mut client, &format!("r{i}")).await);
    }
    let mut stream = client
        .consume_stream(consume(offsets[7]))
        .await
        .expect("stream")
        .into_inner();
    for expected in &offsets[7..] {
        let got = stream
            .next()
            .await
            .expect("open")
            .expect("record")
            .record
            .expect("record");
        assert_eq!(got.offset, *expected);
    }
}

#[tokio::test]
async fn consume_stream_with_an_end_offset_stops_there() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(produce(&mut client, &format!("r{i}")).await);
    }
    let mut stream = client
        .consume_stream(ConsumeRequest {
            offset: offsets[1],
            end_offset: offsets[4],
        })
        .await
        .expect("stream")
        .into_inner();
    let mut got = Vec::new();
    while let Some(message) = stream.message().await.expect("the range ends with OK") {
        got.push(message.record.expect("record").offset);
    }
    assert_eq!(got, offsets[1..4].to_vec());
}

/// Every offset past the end is followed the same way — waited for, as proglog's ConsumeStream
/// does — up to and including u64::MAX (which once ended the stream at once with OK while
/// 2^63-1 was followed). Only an explicit `end_offset` ends a stream.
#[tokio::test]
async fn consume_stream_past_the_end_follows_the_tail_for_every_offset() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let last = produce(&mut client, "only").await;
    for from in [last + 1000, (1u64 << 63) - 1, u64::MAX - 1, u64::MAX] {
        let mut stream = client
            .consume_stream(consume(from))
            .await
            .expect("stream")
            .into_inner();
        produce(&mut client, "after").await;
        // NB: a stream that stays open can only be watched for a while; one that ends (the
        // old behaviour at u64::MAX) ends within milliseconds.
        let waited = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
        assert!(
            waited.is_err(),
            "ConsumeStream({from}) did not keep following: {waited:?}"
        );
    }
    // An empty range ends at once, with OK.
    let mut empty = client
        .consume_stream(ConsumeRequest {
            offset: u64::MAX,
            end_offset: u64::MAX,
        })
        .await
        .expect("stream")
        .into_inner();
    assert!(empty.message().await.expect("OK").is_none());
}

#[tokio::test]
async fn out_of_range_reads_carry_the_valid_range_in_error_details() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let last = produce(&mut client, "only").await;
    let beyond = last + 5;
    let status = client
        .consume(consume(beyond))
        .await
        .expect_err("beyond the end");
    assert_eq!(status.code(), Code::OutOfRange);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "OFFSET_OUT_OF_RANGE");
    assert_eq!(info.domain, "logcluster.io");
    assert_eq!(info.metadata["offset"], beyond.to_string());
    assert_eq!(info.metadata["first_offset"], "0");
    assert_eq!(info.metadata["next_offset"], (last + 1).to_string());
    let localized = details.localized_message().expect("LocalizedMessage");
    assert!(
        localized
            .message
            .contains(&format!("outside the log's range: {beyond}")),
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
    produce(&mut client, "small").await;
    let end = committed_end(&mut client).await;
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
    assert_eq!(committed_end(&mut client).await, end, "nothing was written");

    // A message over the gRPC decoding limit (the largest record or batch plus headroom) is
    // refused by tonic before any handler runs — still `RESOURCE_EXHAUSTED`, never the
    // `OUT_OF_RANGE` that proglog clients read as "end of the log". The default batch limit
    // is 16 MiB: 17 MiB is over every limit of the server.
    let huge = "x".repeat(17 << 20);
    let check = |status: &tonic::Status, path: &str| {
        assert_eq!(status.code(), Code::ResourceExhausted, "{path}: {status:?}");
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "RECORD_TOO_LARGE", "{path}");
        assert_eq!(
            info.metadata["max"],
            ((16u64 << 20) + (64 << 10)).to_string(),
            "{path}"
        );
    };
    let unary = client
        .produce(ProduceRequest {
            record: record(&huge),
        })
        .await
        .expect_err("too large");
    check(&unary, "Produce");
    let requests = futures::stream::iter([ProduceRequest {
        record: record(&huge),
    }]);
    let streamed = match client.produce_stream(requests).await {
        Err(status) => status,
        Ok(responses) => responses
            .into_inner()
            .next()
            .await
            .expect("an answer")
            .expect_err("too large"),
    };
    check(&streamed, "ProduceStream");
    assert_eq!(committed_end(&mut client).await, end, "nothing was written");
}

#[tokio::test]
async fn malformed_produces_are_invalid_arguments_and_write_nothing() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    let end = committed_end(&mut client).await;
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
    assert_eq!(committed_end(&mut client).await, end);
}

#[tokio::test]
async fn get_servers_lists_the_node_as_leader() {
    let node = TestNode::start().await;
    let mut client = node.client_as("root").await;
    // The member list follows Raft's metrics a moment after they change.
    let mut servers = Vec::new();
    for _ in 0..100 {
        servers = client
            .get_servers(GetServersRequest {})
            .await
            .expect("servers")
            .into_inner()
            .servers;
        if !servers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert!(servers[0].is_leader);
    assert_eq!(servers[0].id, "0");
    assert_eq!(servers[0].rpc_addr, node.config.advertise_addr);
}

#[tokio::test]
async fn records_survive_a_restart_of_the_node() {
    let mut node = TestNode::start().await;
    let mut offsets = Vec::new();
    {
        let mut client = node.client_as("root").await;
        for i in 0..3 {
            offsets.push(produce(&mut client, &format!("durable-{i}")).await);
        }
    }
    // Same data directory, same certificates: what a new process would find.
    node.restart().await;
    let mut client = node.client_as("root").await;
    assert!(committed_end(&mut client).await > offsets[2]);
    for (i, offset) in offsets.iter().enumerate() {
        let got = client.consume(consume(*offset)).await.expect("consume");
        assert_eq!(
            got.into_inner().record.expect("record").value,
            format!("durable-{i}").as_bytes()
        );
    }
}

/// A server that completed the TCP handshake but never answers — what a stopped (SIGSTOP)
/// process looks like: its kernel still accepts connections into the listen backlog — must not
/// hold the leader-aware client. Connecting, TLS handshake included, is bounded by
/// `connect_timeout`, and the client moves on to the next server. (The waits below are progress
/// windows: without the bound the client waits for the handshake forever.)
#[tokio::test]
async fn the_client_moves_past_a_server_that_accepts_connections_but_never_answers() {
    use logcluster_api::{ClientConfig, ClientError, ClientTls, LogClient};

    let node = TestNode::start().await;
    // Bound but never accepted from: the kernel completes TCP handshakes, nothing answers TLS.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let frozen_addr = frozen.local_addr().expect("addr").to_string();
    let tls = ClientTls::from_files(
        &node.pki.ca_path(),
        &node.pki.cert_path("root"),
        &node.pki.key_path("root"),
    )
    .expect("client TLS files");
    let config = |seeds: Vec<String>| {
        let mut config = ClientConfig::new(seeds, tls.clone());
        config.connect_timeout = Duration::from_millis(500);
        config.request_timeout = Duration::from_secs(2);
        config.retry_deadline = Duration::from_secs(5);
        config
    };
    let window = Duration::from_secs(30);

    // The frozen server first: discovery gives up on it and asks the live one.
    let client = tokio::time::timeout(
        window,
        LogClient::connect(config(vec![frozen_addr.clone(), node.addr().to_string()])),
    )
    .await
    .expect("connecting does not wait for the frozen server")
    .expect("the live server answers");
    let offset = tokio::time::timeout(window, client.produce("past the frozen server"))
        .await
        .expect("the produce does not wait for the frozen server")
        .expect("produce");
    let record = node
        .client_as("root")
        .await
        .consume(consume(offset))
        .await
        .expect("consume")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(record.value, "past the frozen server".as_bytes());

    // Only the frozen server: a bounded failure that says nothing was reached.
    let alone = tokio::time::timeout(window, LogClient::connect(config(vec![frozen_addr])))
        .await
        .expect("connecting to a server that never answers gives up");
    assert!(
        matches!(alone, Err(ClientError::NoServerReachable { .. })),
        "{:?}",
        alone.err()
    );
    drop(frozen);
}
