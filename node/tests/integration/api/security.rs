//! The security matrix of docs/testing.md for the client port: every case is refused
//! with the right error and writes nothing.

use std::time::Duration;

use bytes::Bytes;
use logcluster_api::log_v1::log_client::LogClient as RawClient;
use logcluster_api::log_v1::{ConsumeRequest, ProduceBatchRequest, ProduceRequest, Record};
use logcluster_certs::CertificateRequest;
use logcluster_certs::testsuite::{DAY, TestPki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic_types::StatusExt;

use crate::support::single_node::{TestNode, committed_end, tls_with};

fn request(value: &'static str) -> ProduceRequest {
    ProduceRequest {
        record: Some(Record {
            value: Bytes::from_static(value.as_bytes()),
            ..Record::default()
        }),
    }
}

/// A client with `tls` cannot produce, and the log stays empty.
async fn assert_refused(node: &TestNode, tls: ClientTlsConfig, case: &str) {
    let mut root = node.client_as("root").await;
    let before = committed_end(&mut root).await;
    match node.try_channel(tls).await {
        Err(e) => {
            // Refused during the handshake (TLS 1.2-style, or verification on our side).
            let _ = e;
        }
        Ok(channel) => {
            // TLS 1.3 lets the client finish its handshake before the server verifies the
            // client certificate: the refusal then arrives as a failed call.
            let status = RawClient::new(channel)
                .produce(request("must not be written"))
                .await
                .expect_err(case);
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal
                ),
                "{case}: unexpected status {status:?}"
            );
        }
    }
    assert_eq!(
        committed_end(&mut root).await,
        before,
        "{case}: nothing may be written"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let node = TestNode::start().await;
    let tls = tls_with(&node.pki.ca_path(), node.pki.dir(), None).domain_name("localhost");
    assert_refused(&node, tls, "no client certificate").await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let node = TestNode::start().await;
    let stranger = TestPki::stranger().expect("stranger CA");
    stranger.client("root").expect("client certificate"); // same subject, wrong issuer
    // Trust our node's CA (so the server is accepted) but present the foreign certificate.
    let tls = tls_with(&node.pki.ca_path(), stranger.dir(), Some("root")).domain_name("localhost");
    assert_refused(&node, tls, "certificate from another CA").await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let node = TestNode::start().await;
    node.pki
        .expired_client("expired", "root")
        .expect("expired certificate");
    node.pki
        .not_yet_valid_client("future", "root")
        .expect("not-yet-valid certificate");
    assert_refused(&node, node.tls_as("expired"), "expired certificate").await;
    assert_refused(&node, node.tls_as("future"), "not-yet-valid certificate").await;
}

#[tokio::test]
async fn a_server_only_certificate_cannot_be_used_as_a_client() {
    let node = TestNode::start().await;
    node.pki
        .issue(
            "server-only",
            &CertificateRequest::server("root", ["localhost"], [], DAY),
        )
        .expect("server-only certificate");
    assert_refused(
        &node,
        node.tls_as("server-only"),
        "serverAuth-only certificate as client",
    )
    .await;
}

#[tokio::test]
async fn the_client_refuses_a_server_certificate_with_the_wrong_name() {
    let node = TestNode::start().await;
    let mut root = node.client_as("root").await;
    let before = committed_end(&mut root).await;
    let tls = tls_with(&node.pki.ca_path(), node.pki.dir(), Some("root"))
        .domain_name("not-the-node.example");
    match node.try_channel(tls).await {
        Err(_) => {}
        Ok(channel) => {
            let status = RawClient::new(channel)
                .produce(request("x"))
                .await
                .expect_err("wrong server name");
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        }
    }
    assert_eq!(committed_end(&mut root).await, before);
}

#[tokio::test]
async fn plaintext_http2_to_the_tls_port_is_refused() {
    let node = TestNode::start().await;
    let mut root = node.client_as("root").await;
    let before = committed_end(&mut root).await;
    let result = async {
        let channel = Endpoint::from_shared(format!("http://{}", node.addr()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await?;
        let status = RawClient::new(channel).produce(request("x")).await.err();
        Ok::<_, tonic::transport::Error>(status)
    }
    .await;
    match result {
        Err(_) => {}
        Ok(status) => assert!(status.is_some(), "a plaintext call must fail"),
    }
    assert_eq!(committed_end(&mut root).await, before);
}

/// A TLS 1.1 ClientHello (RSA/AES128-CBC-SHA, no extensions).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // one cipher suite
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused() {
    let node = TestNode::start().await;
    let mut stream = tokio::net::TcpStream::connect(node.addr())
        .await
        .expect("tcp");
    stream
        .write_all(&tls11_client_hello())
        .await
        .expect("hello");
    let mut response = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .expect("the server answers or closes")
        .unwrap_or(0);
    // Either an alert record (0x15) or a closed connection — never a ServerHello (0x16).
    assert!(
        n == 0 || response[0] == 0x15,
        "server answered TLS 1.1 with {:02x?}",
        &response[..n]
    );
}

#[tokio::test]
async fn a_subject_without_permission_is_denied_with_details() {
    let node = TestNode::start().await;
    let mut root = node.client_as("root").await;
    let before = committed_end(&mut root).await;
    let mut nobody = node.client_as("nobody").await;
    let status = nobody.produce(request("x")).await.expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "PERMISSION_DENIED");
    assert_eq!(info.metadata["subject"], "nobody");
    assert_eq!(info.metadata["action"], "produce");
    let status = nobody
        .consume(ConsumeRequest {
            offset: 0,
            end_offset: 0,
        })
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(committed_end(&mut root).await, before);
}

#[tokio::test]
async fn produce_only_and_consume_only_subjects_stay_in_their_lane() {
    let node = TestNode::start().await;
    let mut producer = node.client_as("producer").await;
    let mut consumer = node.client_as("consumer").await;
    let offset = producer
        .produce(request("allowed"))
        .await
        .expect("producer produces")
        .into_inner()
        .offset;
    consumer
        .consume(ConsumeRequest {
            offset,
            end_offset: 0,
        })
        .await
        .expect("consumer consumes");

    let status = producer
        .consume(ConsumeRequest {
            offset,
            end_offset: 0,
        })
        .await
        .expect_err("producer consuming");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = producer
        .consume_stream(ConsumeRequest {
            offset,
            end_offset: 0,
        })
        .await
        .expect_err("producer streaming");
    assert_eq!(status.code(), Code::PermissionDenied);

    let status = consumer
        .produce(request("denied"))
        .await
        .expect_err("consumer producing");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = consumer
        .produce_batch(ProduceBatchRequest {
            records: vec![Record {
                value: Bytes::from_static(b"denied"),
                ..Record::default()
            }],
        })
        .await
        .expect_err("consumer batching");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = consumer
        .produce_stream(futures::stream::iter(vec![request("denied")]))
        .await
        .expect_err("consumer streaming");
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut root = node.client_as("root").await;
    assert_eq!(
        committed_end(&mut root).await,
        offset + 1,
        "only the producer's record exists"
    );
}
