//! Shared fixtures: certificate files from the test PKI as the node's [`TlsFiles`], a TLS echo
//! server on loopback that reports each handshake's outcome, and a client that dials it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logcluster_certs::testsuite::TestCert;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::auth::identity::subject_from_certs;
use crate::auth::tls::TlsFiles;

pub use logcluster_certs::testsuite::{DAY, LOOPBACK, TestPki};

// NB: `TlsFiles` is this crate's own type, so its conversion can live in the tests.
impl From<TestCert> for TlsFiles {
    fn from(cert: TestCert) -> Self {
        TlsFiles::new(cert.ca, cert.cert, cert.key)
    }
}

/// A node certificate for `localhost` / `127.0.0.1` whose CN is `name`.
pub fn node_files(pki: &TestPki, name: &str) -> TlsFiles {
    pki.node(name, name, &[LOOPBACK], &[]).unwrap().into()
}

/// A client certificate whose CN is `cn`.
pub fn client_files(pki: &TestPki, cn: &str) -> TlsFiles {
    pki.client(cn).unwrap().into()
}

/// Replaces `path` atomically with `contents` (like a Secret volume update).
pub fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-replace");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What the echo server saw for one connection.
pub type Handshake = Result<String, rustls::Error>;

/// A TLS echo server: reports each handshake (the peer's subject, or rustls's error) and then
/// echoes lines back until the client goes away.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub handshakes: mpsc::UnboundedReceiver<Handshake>,
}

impl EchoServer {
    pub async fn start(config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, handshakes) = mpsc::unbounded_channel();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            let subject = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(subject_from_certs)
                                .map(|s| s.unwrap_or_else(|e| format!("<{e}>")))
                                .unwrap_or_else(|| "<none>".to_owned());
                            let _ = tx.send(Ok(subject));
                            echo(tls).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(rustls_error(&e)));
                        }
                    }
                });
            }
        });
        EchoServer { addr, handshakes }
    }

    /// The outcome of the next handshake.
    pub async fn next_handshake(&mut self) -> Handshake {
        tokio::time::timeout(Duration::from_secs(10), self.handshakes.recv())
            .await
            .expect("no handshake within 10s")
            .expect("server stopped")
    }
}

async fn echo(tls: tokio_rustls::server::TlsStream<TcpStream>) {
    let (read, mut write) = tokio::io::split(tls);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The rustls error inside an I/O error from tokio-rustls.
pub fn rustls_error(e: &std::io::Error) -> rustls::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| rustls::Error::General(format!("not a rustls error: {e}")))
}

pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Dials `addr` verifying the server as `server_name`.
pub async fn dial(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
) -> std::io::Result<ClientTls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Sends a line and reads the echo. With TLS 1.3 a client learns that the server refused its
/// certificate only here, after its side of the handshake completed.
pub async fn ping(tls: &mut ClientTls, text: &str) -> std::io::Result<String> {
    tls.write_all(format!("{text}\n").as_bytes()).await?;
    tls.flush().await?;
    let mut line = String::new();
    let n = tokio::time::timeout(Duration::from_secs(10), async {
        let mut reader = BufReader::new(&mut *tls);
        reader.read_line(&mut line).await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo"))??;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        ));
    }
    Ok(line.trim_end().to_owned())
}

/// A client configuration that trusts `ca` and presents no certificate.
pub fn anonymous_client(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(crate::auth::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}
