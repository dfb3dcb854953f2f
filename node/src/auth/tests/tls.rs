//! TLS: the security matrix for the mTLS port, hot reload, the incoming stream and tonic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use logcluster_certs::{CertificateRequest, write_pem_files};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;

use super::fixtures::*;
use crate::auth::identity::subject_from_request;
use crate::auth::tls::{
    ReloadingTlsFiles, TlsConnector, TlsFiles, client_config, endpoint, server_config, tls_incoming,
};

fn is_expired(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        )
    )
}

fn is_not_yet_valid(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
        )
    )
}

fn is_wrong_purpose(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
        )
    )
}

fn is_wrong_name(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

/// Starts an echo server with the node certificate of `pki`.
async fn node_server(pki: &TestPki) -> EchoServer {
    EchoServer::start(server_config(&node_files(pki, "lc-0")).unwrap()).await
}

/// Dials and pings with `client`; returns the server's view and whether the ping got through.
async fn attempt(server: &mut EchoServer, client: Arc<ClientConfig>) -> (Handshake, bool) {
    let pinged = match dial(client, server.addr, "localhost").await {
        Ok(mut tls) => ping(&mut tls, "hello")
            .await
            .is_ok_and(|echo| echo == "hello"),
        Err(_) => false,
    };
    (server.next_handshake().await, pinged)
}

#[tokio::test]
async fn good_client_certificate_is_accepted_and_identified() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    let (handshake, pinged) = attempt(
        &mut server,
        client_config(&client_files(&pki, "alice")).unwrap(),
    )
    .await;
    assert_eq!(handshake.unwrap(), "alice");
    assert!(pinged);
}

#[tokio::test]
async fn tls12_client_with_a_good_certificate_is_accepted() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    // A plain rustls client offering only TLS 1.2.
    let files = client_files(&pki, "alice");
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(crate::auth::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let mut tls = dial(Arc::new(config), server.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(ping(&mut tls, "x").await.unwrap(), "x");
    assert_eq!(server.next_handshake().await.unwrap(), "alice");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    let (handshake, pinged) = attempt(&mut server, anonymous_client(&pki.ca_path())).await;
    assert_eq!(
        handshake.unwrap_err(),
        rustls::Error::NoCertificatesPresented
    );
    assert!(!pinged);
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let pki = TestPki::new().unwrap();
    let other = TestPki::stranger().unwrap();
    let mut server = node_server(&pki).await;
    // Trusts our CA (so the server is verified) but presents a certificate from another CA.
    let mut files = client_files(&other, "mallory");
    files.ca = pki.ca_path();
    let (handshake, pinged) = attempt(&mut server, client_config(&files).unwrap()).await;
    assert_eq!(
        handshake.unwrap_err(),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert!(!pinged);
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    let files: TlsFiles = pki.expired_client("old", "old").unwrap().into();
    let (handshake, pinged) = attempt(&mut server, client_config(&files).unwrap()).await;
    let err = handshake.unwrap_err();
    assert!(is_expired(&err), "{err:?}");
    assert!(!pinged);
}

#[tokio::test]
async fn not_yet_valid_client_certificate_is_refused() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    let files: TlsFiles = pki.not_yet_valid_client("future", "future").unwrap().into();
    let (handshake, pinged) = attempt(&mut server, client_config(&files).unwrap()).await;
    let err = handshake.unwrap_err();
    assert!(is_not_yet_valid(&err), "{err:?}");
    assert!(!pinged);
}

#[tokio::test]
async fn server_only_certificate_cannot_be_used_as_a_client() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    let req = CertificateRequest::server("web", ["localhost"], [], DAY);
    let files = TlsFiles::from(pki.issue("web", &req).unwrap());
    let (handshake, pinged) = attempt(&mut server, client_config(&files).unwrap()).await;
    let err = handshake.unwrap_err();
    assert!(is_wrong_purpose(&err), "{err:?}");
    assert!(!pinged);
}

#[tokio::test]
async fn client_refuses_a_server_certificate_with_the_wrong_name() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    let err = dial(
        client_config(&client_files(&pki, "alice")).unwrap(),
        server.addr,
        "wrong.example",
    )
    .await
    .unwrap_err();
    let err = rustls_error(&err);
    assert!(is_wrong_name(&err), "{err:?}");
    // The server sees the client's alert, not a completed handshake.
    assert!(server.next_handshake().await.is_err());
}

#[tokio::test]
async fn client_refuses_a_server_from_another_ca() {
    let pki = TestPki::new().unwrap();
    let other = TestPki::stranger().unwrap();
    let mut server = node_server(&other).await;
    let err = dial(
        client_config(&client_files(&pki, "alice")).unwrap(),
        server.addr,
        "localhost",
    )
    .await
    .unwrap_err();
    assert_eq!(
        rustls_error(&err),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert!(server.next_handshake().await.is_err());
}

/// A TLS 1.1 ClientHello, as an old OpenSSL or Java client sends it.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two CBC suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    // Extensions a real client sends, so that the version is the only thing wrong with it:
    // signature_algorithms (ecdsa_secp256r1_sha256), supported_groups (secp256r1),
    // ec_point_formats (uncompressed).
    let extensions: &[u8] = &[
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, //
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, //
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,
    ];
    body.extend_from_slice(&[0x00, extensions.len() as u8]);
    body.extend_from_slice(extensions);
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

/// Sends raw bytes and returns everything the server answers before closing.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    answer
}

#[tokio::test]
async fn tls11_and_older_are_refused() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    let answer = raw_exchange(server.addr, &tls11_client_hello()).await;
    // A fatal alert (content type 21, level 2; rustls says handshake_failure), never a
    // ServerHello (content type 22).
    assert_eq!(answer.first(), Some(&0x15), "{answer:02x?}");
    assert_eq!(answer.get(5), Some(&2), "{answer:02x?}");
    assert!(matches!(answer.get(6), Some(40 | 70)), "{answer:02x?}");
    let err = server.next_handshake().await.unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn plaintext_http2_is_refused() {
    let pki = TestPki::new().unwrap();
    let mut server = node_server(&pki).await;
    let answer = raw_exchange(server.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    // Either a TLS alert or a bare close: never an HTTP/2 frame.
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:02x?}");
    assert!(server.next_handshake().await.is_err());
}

#[tokio::test]
async fn reload_switches_new_handshakes_and_keeps_established_connections() {
    let pki = TestPki::new().unwrap();
    let server_files = node_files(&pki, "lc-0");
    let reloading = ReloadingTlsFiles::load(server_files.clone()).unwrap();
    let mut server = EchoServer::start(reloading.server_config().unwrap()).await;
    let old_not_after = reloading.not_after();

    // A client of the first CA connects and stays connected.
    let old_client = client_config(&client_files(&pki, "alice")).unwrap();
    let mut established = dial(old_client.clone(), server.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(ping(&mut established, "before").await.unwrap(), "before");
    assert_eq!(server.next_handshake().await.unwrap(), "alice");

    // Rotate to a new CA in the server's directory: new CA bundle, new server certificate
    // (longer validity), new key.
    let new_pki = TestPki::in_dir(server_files.cert.parent().unwrap()).unwrap();
    let new_server = new_pki
        .issue(
            "lc-0",
            &CertificateRequest::node("lc-0", ["localhost"], [LOOPBACK], 10 * DAY),
        )
        .unwrap()
        .issued;
    assert!(reloading.reload_now().await.unwrap());
    assert!(
        !reloading.reload_now().await.unwrap(),
        "unchanged files are not reloaded"
    );
    assert_eq!(reloading.not_after(), new_server.not_after);
    assert_ne!(reloading.not_after(), old_not_after);
    assert_eq!(*reloading.subscribe().borrow(), 1);

    // The established connection is untouched.
    assert_eq!(ping(&mut established, "after").await.unwrap(), "after");

    // New handshakes: the old CA's client is now refused...
    let (handshake, pinged) = attempt(&mut server, old_client).await;
    assert!(handshake.is_err() && !pinged, "{handshake:?}");

    // ...and a client of the new CA is accepted and sees the new server certificate.
    let bob_files = client_files(&new_pki, "bob");
    let mut tls = dial(client_config(&bob_files).unwrap(), server.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(ping(&mut tls, "new").await.unwrap(), "new");
    assert_eq!(server.next_handshake().await.unwrap(), "bob");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let expected = logcluster_certs::inspect(&new_server.cert_pem).unwrap();
    let presented_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_encode(presented.as_ref())
    );
    assert_eq!(
        logcluster_certs::inspect(&presented_pem)
            .unwrap()
            .serial_hex,
        expected.serial_hex
    );
}

/// Minimal standard base64 (the test only needs to re-wrap a DER certificate as PEM).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn failed_reload_keeps_the_previous_material() {
    let pki = TestPki::new().unwrap();
    let files = node_files(&pki, "lc-0");
    let reloading = ReloadingTlsFiles::load(files.clone()).unwrap();
    let mut server = EchoServer::start(reloading.server_config().unwrap()).await;
    let alice = client_config(&client_files(&pki, "alice")).unwrap();
    let before = reloading.not_after();

    // Garbage certificate: refused, and the error names the file.
    replace_file(&files.cert, b"not a certificate");
    let err = reloading.reload_now().await.unwrap_err();
    assert!(
        err.to_string().contains(&files.cert.display().to_string()),
        "{err}"
    );
    let (handshake, pinged) = attempt(&mut server, alice.clone()).await;
    assert_eq!(handshake.unwrap(), "alice");
    assert!(pinged);

    // A valid certificate with somebody else's key: refused as a mismatch.
    let other = pki
        .ca()
        .issue(&CertificateRequest::node(
            "lc-9",
            ["localhost"],
            [],
            5 * DAY,
        ))
        .unwrap();
    replace_file(&files.cert, other.cert_pem.as_bytes());
    let err = reloading.reload_now().await.unwrap_err();
    assert!(
        matches!(err, crate::auth::AuthError::KeyMismatch { .. }),
        "{err}"
    );
    // The same broken contents are reported once, not retried on every poll.
    assert!(!reloading.reload_now().await.unwrap());
    let (handshake, pinged) = attempt(&mut server, alice.clone()).await;
    assert_eq!(handshake.unwrap(), "alice");
    assert!(pinged);
    assert_eq!(reloading.not_after(), before);
    assert_eq!(*reloading.subscribe().borrow(), 0);

    // Completing the pair (the key arrives) is picked up.
    replace_file(&files.key, other.key_pem.as_bytes());
    assert!(reloading.reload_now().await.unwrap());
    assert_eq!(reloading.not_after(), other.not_after);

    // A missing file is an error naming it, and keeps the material.
    std::fs::remove_file(&files.ca).unwrap();
    let err = reloading.reload_now().await.unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
    let (handshake, _) = attempt(&mut server, alice).await;
    assert_eq!(handshake.unwrap(), "alice");
}

#[tokio::test]
async fn watcher_picks_up_renewed_certificates() {
    let pki = TestPki::new().unwrap();
    let files = node_files(&pki, "lc-0");
    let reloading = ReloadingTlsFiles::load(files.clone()).unwrap();
    let watcher = reloading.spawn_watcher(Duration::from_millis(50));
    let mut generation = reloading.subscribe();

    let renewed = pki
        .ca()
        .issue(&CertificateRequest::node(
            "lc-0",
            ["localhost"],
            [],
            20 * DAY,
        ))
        .unwrap();
    write_pem_files(
        files.cert.parent().unwrap(),
        "lc-0",
        &renewed.cert_pem,
        Some(&renewed.key_pem),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), generation.wait_for(|g| *g >= 1))
        .await
        .expect("the watcher did not reload within 10s")
        .unwrap();
    assert_eq!(reloading.not_after(), renewed.not_after);
    watcher.abort();
}

#[tokio::test]
async fn load_errors_name_the_file() {
    let pki = TestPki::new().unwrap();
    let mut files = node_files(&pki, "lc-0");
    files.key = pki.dir().join("missing-key.pem");
    let err = ReloadingTlsFiles::load(files).unwrap_err();
    assert!(err.to_string().contains("missing-key.pem"), "{err}");

    let mut files = node_files(&pki, "lc-0");
    files.ca = files.key.clone(); // a key is not a CA certificate
    let err = ReloadingTlsFiles::load(files).unwrap_err();
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
}

#[tokio::test]
async fn a_stalled_handshake_neither_blocks_others_nor_lives_forever() {
    let pki = TestPki::new().unwrap();
    let config = server_config(&node_files(&pki, "lc-0")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = tls_incoming(listener, config, Duration::from_millis(500));
    assert_eq!(incoming.local_addr(), Some(addr));

    // A client that connects and never speaks.
    let mut stalled = TcpStream::connect(addr).await.unwrap();

    // A good client still gets through while the stalled handshake is pending.
    let alice = client_config(&client_files(&pki, "alice")).unwrap();
    let client = tokio::spawn(async move {
        let mut tls = dial(alice, addr, "localhost").await.unwrap();
        tls.write_all(b"hi").await.unwrap();
        tls.flush().await.unwrap();
        tls
    });
    let conn = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .expect("the good client was blocked")
        .unwrap()
        .unwrap();
    let certs = conn.get_ref().1.peer_certificates().unwrap().to_vec();
    assert_eq!(
        crate::auth::identity::subject_from_certs(&certs).unwrap(),
        "alice"
    );
    let _client = client.await.unwrap();

    // The stalled connection is closed by the handshake timeout.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("the stalled handshake was not timed out");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Refused handshakes never come out of the stream.
    let anon = anonymous_client(&pki.ca_path());
    if let Ok(mut tls) = dial(anon, addr, "localhost").await {
        let _ = ping(&mut tls, "x").await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), incoming.next())
            .await
            .is_err()
    );

    // Dropping the stream closes the listener.
    drop(incoming);
    tokio::task::yield_now().await;
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener is still open");
}

#[tokio::test]
async fn tonic_serves_and_dials_over_our_tls_and_sees_the_subject() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let pki = TestPki::new().unwrap();
    let node = ReloadingTlsFiles::load(node_files(&pki, "lc-0")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tls_incoming(
        listener,
        node.server_config().unwrap(),
        Duration::from_secs(5),
    );

    // The interceptor plays the part of a handler: it needs the caller's subject.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_in_server = seen.clone();
    let reporter = tonic_health::server::HealthReporter::new();
    let health = tonic_health::pb::health_server::HealthServer::with_interceptor(
        tonic_health::server::HealthService::from_health_reporter(reporter),
        move |request: tonic::Request<()>| {
            let subject = subject_from_request(&request)?;
            seen_in_server.lock().unwrap().push(subject);
            Ok(request)
        },
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    let connector = TlsConnector::new(client_config(&client_files(&pki, "alice")).unwrap());
    let channel = endpoint(&format!("localhost:{}", addr.port()))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().status, 1); // SERVING
    assert_eq!(*seen.lock().unwrap(), vec!["alice".to_owned()]);

    // Dialing an IP address with the DNS name as override also verifies.
    let connector = TlsConnector::new(client_config(&client_files(&pki, "bob")).unwrap())
        .with_server_name("localhost")
        .unwrap();
    let channel = endpoint(&format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().last().map(String::as_str), Some("bob"));

    // A wrong server name fails to connect.
    let connector = TlsConnector::new(client_config(&client_files(&pki, "carol")).unwrap())
        .with_server_name("wrong.example")
        .unwrap();
    let result = endpoint(&format!("127.0.0.1:{}", addr.port()))
        .unwrap()
        .connect_with_connector(connector)
        .await;
    assert!(result.is_err());
    assert_eq!(seen.lock().unwrap().len(), 2);
    server.abort();
}

#[test]
fn endpoints_need_a_host_and_port() {
    assert!(endpoint("localhost:8400").is_ok());
    assert!(endpoint("https://lc-0.lc-nodes.default.svc:8400").is_ok());
    assert!(endpoint("http://[::1]:8400").is_ok());
    assert!(endpoint("localhost").is_err());
    assert!(endpoint("https://host:8400/path").is_err());
    assert!(endpoint("").is_err());
}

#[tokio::test]
async fn a_connector_with_a_source_ip_dials_from_it() {
    let pki = TestPki::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move { listener.accept().await.map(|(_, peer)| peer) });
    let source: std::net::IpAddr = "127.0.0.7".parse().unwrap();
    let connector = TlsConnector::new(client_config(&client_files(&pki, "alice")).unwrap())
        .with_source_ip(source);
    let uri: http::Uri = format!("https://127.0.0.1:{port}").parse().unwrap();
    // Nothing speaks TLS there: the handshake fails once the connection is accepted, which is
    // all this test needs to see where it came from.
    let dial = tokio::spawn(async move { connector.connect(&uri).await.map(|_| ()) });
    let peer = accepted.await.unwrap().unwrap();
    assert_eq!(peer.ip(), source);
    dial.abort();

    // A source of the other family cannot reach the host: a clear error, nothing dialed.
    let connector = TlsConnector::new(client_config(&client_files(&pki, "alice")).unwrap())
        .with_source_ip("::1".parse().unwrap());
    let uri: http::Uri = format!("https://127.0.0.1:{port}").parse().unwrap();
    let error = connector.connect(&uri).await.expect_err("no IPv6 address");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::AddrNotAvailable,
        "{error}"
    );
    assert!(error.to_string().contains("same family"), "{error}");
}
