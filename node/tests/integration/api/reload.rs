//! Certificates and the ACL change on disk and take effect without a restart, and without
//! dropping calls already in progress.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use logcluster_api::log_v1::{ConsumeRequest, ProduceRequest, Record};
use logcluster_certs::inspect;
use logcluster_node::auth::tls::{TlsConnector, TlsFiles, client_config};
use tonic::Code;

use crate::support::single_node::{POLICY, TestNode};

fn request(value: &str) -> ProduceRequest {
    ProduceRequest {
        record: Some(Record {
            value: Bytes::from(value.to_owned()),
            ..Record::default()
        }),
    }
}

#[tokio::test]
async fn policy_changes_grant_and_revoke_access_live_without_dropping_streams() {
    let node = TestNode::start().await;
    let mut nobody = node.client_as("nobody").await;
    assert_eq!(
        nobody
            .produce(request("x"))
            .await
            .expect_err("denied")
            .code(),
        Code::PermissionDenied
    );

    // A consumer's stream is open while the policy changes twice.
    let mut consumer = node.client_as("consumer").await;
    let mut stream = consumer
        .consume_stream(ConsumeRequest {
            offset: 0,
            end_offset: 0,
        })
        .await
        .expect("stream")
        .into_inner();

    // Grant.
    std::fs::write(
        &node.policy_path,
        format!("{POLICY}p, nobody, *, produce\n"),
    )
    .expect("policy");
    assert!(
        node.running()
            .authorizer()
            .reload_now()
            .await
            .expect("reload"),
        "the policy changed"
    );
    let offset = nobody
        .produce(request("granted"))
        .await
        .expect("now allowed")
        .into_inner()
        .offset;
    let got = stream
        .next()
        .await
        .expect("open")
        .expect("record")
        .record
        .expect("record");
    assert_eq!(
        (got.offset, got.value.as_ref()),
        (offset, b"granted".as_ref())
    );

    // Revoke both the new grant and the consumer's permission.
    std::fs::write(
        &node.policy_path,
        POLICY.replace("p, consumer, *, consume\n", ""),
    )
    .expect("policy");
    assert!(
        node.running()
            .authorizer()
            .reload_now()
            .await
            .expect("reload")
    );
    assert_eq!(
        nobody
            .produce(request("x"))
            .await
            .expect_err("revoked")
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        consumer
            .consume(ConsumeRequest {
                offset,
                end_offset: 0
            })
            .await
            .expect_err("revoked")
            .code(),
        Code::PermissionDenied
    );
    // The stream opened before the revocation keeps delivering (authorized when opened).
    let mut root = node.client_as("root").await;
    let next = root
        .produce(request("after"))
        .await
        .expect("root produces")
        .into_inner()
        .offset;
    let got = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the open stream still delivers")
        .expect("open")
        .expect("record")
        .record
        .expect("record");
    assert_eq!(got.offset, next);
}

#[tokio::test]
async fn a_broken_policy_file_keeps_the_old_policy() {
    let node = TestNode::start().await;
    std::fs::write(
        &node.policy_path,
        "this is not, a policy line at all, ,, ,\n\"",
    )
    .expect("policy");
    let _ = node.running().authorizer().reload_now().await;
    let mut root = node.client_as("root").await;
    root.produce(request("still allowed"))
        .await
        .expect("old policy still applies");
}

/// The serial of the certificate the server presents on a new connection.
async fn served_serial(node: &TestNode) -> String {
    let files = TlsFiles::new(
        node.pki.ca_path(),
        node.pki.cert_path("root"),
        node.pki.key_path("root"),
    );
    let connector = TlsConnector::new(client_config(&files).expect("client config"))
        .with_server_name("localhost")
        .expect("name");
    let uri: http::Uri = format!("http://{}", node.addr()).parse().expect("uri");
    let stream = connector.connect(&uri).await.expect("handshake");
    let (_, connection) = stream.get_ref();
    let leaf = connection
        .peer_certificates()
        .and_then(|chain| chain.first().cloned())
        .expect("server certificate");
    // Same format as `CertificateInfo::serial_hex`: lower-case hex of the raw serial.
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("parse");
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn renewed_node_certificates_are_served_to_new_connections_while_old_ones_keep_working() {
    let node = TestNode::start().await;
    let mut old_connection = node.client_as("root").await;
    old_connection
        .produce(request("before"))
        .await
        .expect("produce");
    let before = served_serial(&node).await;

    let renewed = node.renew_node_cert();
    let renewed_serial = inspect(&renewed.issued.cert_pem).expect("parse").serial_hex;
    assert_ne!(before, renewed_serial);
    assert!(
        node.running()
            .tls_files()
            .reload_now()
            .await
            .expect("reload"),
        "the files changed"
    );

    assert_eq!(
        served_serial(&node).await,
        renewed_serial,
        "new handshakes use the renewed certificate"
    );
    old_connection
        .produce(request("after"))
        .await
        .expect("the connection made before the renewal still works");
}
