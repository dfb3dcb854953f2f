//! The wired node exposes health, readiness and the named metric series, and counts RPCs by
//! method and code.

use bytes::Bytes;
use logcluster_api::log_v1::{ConsumeRequest, ProduceRequest, Record};

use crate::support::single_node::TestNode;

#[tokio::test]
async fn health_endpoints_and_metrics_reflect_the_node() {
    let node = TestNode::start().await;
    assert_eq!(node.http_get("/livez").await.0, 200);
    assert_eq!(node.http_get("/readyz").await.0, 200);

    let mut client = node.client_as("root").await;
    for _ in 0..3 {
        client
            .produce(ProduceRequest {
                record: Some(Record {
                    value: Bytes::from_static(b"0123456789"),
                    ..Record::default()
                }),
            })
            .await
            .expect("produce");
    }
    let _ = client
        .consume(ConsumeRequest {
            offset: 99,
            end_offset: 0,
        })
        .await;

    let (status, metrics) = node.http_get("/metrics").await;
    assert_eq!(status, 200);
    let has = |needle: &str| metrics.lines().any(|line| line.contains(needle));
    let value_of = |prefix: &str, must_contain: &[&str]| -> Option<f64> {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with(prefix) && must_contain.iter().all(|n| line.contains(n))
            })
            .find_map(|line| line.rsplit(' ').next()?.parse().ok())
    };
    assert_eq!(
        value_of(
            "logcluster_rpc_requests_total",
            &["log.v1.Log/Produce", "\"OK\""]
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        value_of(
            "logcluster_rpc_requests_total",
            &["log.v1.Log/Consume\"", "OUT_OF_RANGE"]
        ),
        Some(1.0),
        "{metrics}"
    );
    for series in [
        "logcluster_rpc_duration_seconds",
        "logcluster_log_first_offset",
        "logcluster_log_next_offset",
        "logcluster_log_segments",
        "logcluster_log_segment_bytes",
        "logcluster_log_fsync_duration_seconds",
        "logcluster_log_appended_records",
        "logcluster_log_appended_bytes",
    ] {
        assert!(has(series), "missing {series} in\n{metrics}");
    }
    let end = crate::support::single_node::committed_end(&mut client).await;
    assert_eq!(
        value_of("logcluster_log_next_offset", &[]),
        Some(end as f64),
        "{metrics}"
    );
}
