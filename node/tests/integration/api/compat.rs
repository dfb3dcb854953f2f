//! A client generated from proglog's own `log.v1` layout works against LogCluster unchanged.

use futures::StreamExt;
use logcluster_api::proglog_v1::log_client::LogClient as ProglogClient;
use logcluster_api::proglog_v1::{ConsumeRequest, GetServersRequest, ProduceRequest, Record};
use tonic::Code;

use crate::support::single_node::TestNode;

fn record(value: &str) -> Option<Record> {
    Some(Record {
        value: value.as_bytes().to_vec(),
        offset: 0,
        term: 0,
        r#type: 0,
    })
}

#[tokio::test]
async fn an_unmodified_proglog_client_produces_consumes_and_lists_servers() {
    let node = TestNode::start().await;
    let channel = node
        .try_channel(node.tls_as("root"))
        .await
        .expect("connect");
    let mut client = ProglogClient::new(channel);

    let offset = client
        .produce(ProduceRequest {
            record: record("hello world"),
        })
        .await
        .expect("produce")
        .into_inner()
        .offset;
    // Offsets are Raft indexes: the cluster's own first entries come before the first record.
    let got = client
        .consume(ConsumeRequest { offset })
        .await
        .expect("consume")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(got.value, b"hello world");
    assert_eq!(got.offset, offset);

    // proglog's ErrOffsetOutOfRange is gRPC OUT_OF_RANGE (code 11).
    let status = client
        .consume(ConsumeRequest { offset: offset + 1 })
        .await
        .expect_err("past the end");
    assert_eq!(status.code(), Code::OutOfRange);

    let requests =
        futures::stream::iter(["a", "b", "c"].map(|v| ProduceRequest { record: record(v) }));
    let mut responses = client
        .produce_stream(requests)
        .await
        .expect("stream")
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(response) = responses.next().await {
        offsets.push(response.expect("produce").offset);
    }
    assert_eq!(offsets, vec![offset + 1, offset + 2, offset + 3]);

    let mut stream = client
        .consume_stream(ConsumeRequest { offset: offset + 1 })
        .await
        .expect("consume stream")
        .into_inner();
    for (expected_offset, value) in [(offset + 1, "a"), (offset + 2, "b"), (offset + 3, "c")] {
        let got = stream
            .next()
            .await
            .expect("open")
            .expect("record")
            .record
            .expect("record");
        assert_eq!(
            (got.offset, got.value.as_slice()),
            (expected_offset, value.as_bytes())
        );
    }

    let servers = client
        .get_servers(GetServersRequest {})
        .await
        .expect("servers")
        .into_inner()
        .servers;
    assert_eq!(servers.len(), 1);
    assert!(servers[0].is_leader);
    assert!(!servers[0].rpc_addr.is_empty());
}
