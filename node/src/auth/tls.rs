//! rustls configurations for the node's mTLS port, their hot reload, and the glue that lets
//! tonic serve and dial over them.
//!
//! * TLS 1.2 and 1.3 only, ring provider only (never aws-lc), ALPN `h2`.
//! * The server requires a client certificate and verifies it against the CA bundle
//!   (`WebPkiClientVerifier`: chain, validity period, `clientAuth` EKU). There is no way to build
//!   a server configuration from this module that accepts anonymous clients.
//! * Session resumption is off on the server: a resumed TLS session would skip certificate
//!   verification, so a certificate that expired, or a CA that was rotated out, would keep
//!   working on resumed sessions. gRPC connections are long-lived, so the cost is negligible.
//!
//! ## Hot reload
//!
//! [`ReloadingTlsFiles`] owns the current material (CA roots, certificate chain and key) behind a
//! lock. The rustls configurations it hands out never change; instead their certificate resolver
//! and verifiers look the current material up on every handshake. A reload therefore affects new
//! handshakes only: established connections and their streams are untouched. A reload whose
//! files do not parse or whose key does not match the certificate is refused and the previous
//! material stays in use. During a CA rotation put both CAs in the CA file; every certificate in
//! it is trusted.
//!
//! ## Serving and dialing with tonic
//!
//! tonic's `ServerTlsConfig` cannot take a custom rustls configuration, so the node terminates
//! TLS itself: [`tls_incoming`] turns a `TcpListener` into a stream of
//! `tokio_rustls::server::TlsStream<TcpStream>` for `Server::serve_with_incoming`. tonic
//! implements `Connected` for that type, so handlers get the verified peer chain from
//! `Request::peer_certs()` exactly as with tonic's own TLS. [`TlsConnector`] is the matching
//! client side for `Endpoint::connect_with_connector`.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Endpoint, Uri};

use super::error::AuthError;
use super::watch::{Reload, WatchedFiles, spawn_poller};

/// ALPN protocol for gRPC.
const ALPN_H2: &[u8] = b"h2";

/// At most this many TLS handshakes run at once; further connections wait in the listen
/// backlog, so a flood of idle sockets costs a bounded number of tasks and buffers.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Default time a client has to complete its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls crypto provider LogCluster uses everywhere: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as rustls's process-wide default provider, for libraries (kube, OTLP exporters)
/// that build rustls configurations without naming a provider. Idempotent; call at start-up.
pub fn install_default_crypto_provider() {
    // Err means a provider is already installed, which is fine: everything in this module
    // passes ring explicitly anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Paths of the PEM files a node or client presents and trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle: every certificate in it is a trust anchor.
    pub ca: PathBuf,
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf (PKCS#8, SEC1 or PKCS#1 PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca`, `cert` and `key` paths.
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.ca.clone(), self.cert.clone(), self.key.clone()]
    }
}

/// One consistent set of CA roots, certificate and key, with the verifiers built from them.
struct TlsMaterial {
    certified_key: Arc<CertifiedKey>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
    not_after: SystemTime,
}

impl TlsMaterial {
    /// `contents` are the CA, certificate and key files' bytes, in that order.
    fn build(
        files: &TlsFiles,
        contents: &[Vec<u8>],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, AuthError> {
        let [ca_pem, cert_pem, key_pem] = contents else {
            return Err(AuthError::Pem {
                path: files.ca.clone(),
                reason: "internal error: expected CA, certificate and key contents".to_owned(),
            });
        };
        let pem_err = |path: &PathBuf, reason: String| AuthError::Pem {
            path: path.clone(),
            reason,
        };

        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| pem_err(&files.ca, format!("invalid PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| pem_err(&files.ca, format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(pem_err(&files.ca, "no CERTIFICATE found".to_owned()));
        }
        let roots = Arc::new(roots);

        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(&files.cert, format!("invalid PEM: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(pem_err(&files.cert, "no CERTIFICATE found".to_owned()));
        };
        let not_after = leaf_not_after(leaf)
            .map_err(|reason| pem_err(&files.cert, format!("unreadable certificate: {reason}")))?;

        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| pem_err(&files.key, format!("no usable private key: {e}")))?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| pem_err(&files.key, format!("unsupported private key: {e}")))?;
        let certified_key = CertifiedKey::new(chain, signing_key);
        match certified_key.keys_match() {
            Ok(()) => {}
            // ring can always derive the public key of the key types it loads; Unknown would
            // mean it could not, and then the handshake itself would fail loudly.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(AuthError::KeyMismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                });
            }
        }

        let verifier_err = |e: &dyn fmt::Display| AuthError::Verifier {
            path: files.ca.clone(),
            reason: e.to_string(),
        };
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| verifier_err(&e))?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| verifier_err(&e))?;

        Ok(TlsMaterial {
            certified_key: Arc::new(certified_key),
            client_verifier,
            server_verifier,
            not_after,
        })
    }
}

fn leaf_not_after(
    leaf: &CertificateDer<'_>,
) -> Result<SystemTime, x509_parser::nom::Err<x509_parser::error::X509Error>> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)?;
    let secs = cert.validity().not_after.timestamp();
    Ok(if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    })
}

/// Shared state behind [`ReloadingTlsFiles`] and the resolvers/verifiers it hands to rustls.
struct TlsState {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<TlsMaterial>>,
    watched: tokio::sync::Mutex<WatchedFiles>,
    generation: watch::Sender<u64>,
}

impl TlsState {
    fn current(&self) -> Arc<TlsMaterial> {
        self.current.read().clone()
    }

    // Handshake signatures are checked against the certificate the verifier accepted, with the
    // provider's algorithms; this is what both WebPki verifiers do, and it does not depend on
    // the (reloadable) roots.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Reload for TlsState {
    const WHAT: &'static str = "TLS material";

    async fn reload(&self) -> Result<bool, AuthError> {
        let mut watched = self.watched.lock().await;
        let Some(contents) = watched.changed().await? else {
            return Ok(false);
        };
        let material = TlsMaterial::build(&self.files, &contents, &self.provider)?;
        let not_after = material.not_after;
        *self.current.write() = Arc::new(material);
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(
            ca = %self.files.ca.display(),
            cert = %self.files.cert.display(),
            not_after = %humantime::format_rfc3339_seconds(not_after),
            "reloaded TLS material"
        );
        Ok(true)
    }
}

/// The CA, certificate and key files of a node or client, reloaded when they change.
///
/// Configurations from [`ReloadingTlsFiles::server_config`] and
/// [`ReloadingTlsFiles::client_config`] always use the latest successfully loaded material for
/// new handshakes. Reloads happen on [`ReloadingTlsFiles::reload_now`] or, after
/// [`ReloadingTlsFiles::spawn_watcher`], on a timer.
#[derive(Clone)]
pub struct ReloadingTlsFiles {
    state: Arc<TlsState>,
}

impl fmt::Debug for ReloadingTlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingTlsFiles")
            .field("files", &self.state.files)
            .field("not_after", &self.not_after())
            .finish()
    }
}

impl ReloadingTlsFiles {
    /// Loads the files (blocking file reads: call at start-up). Fails when any file is missing
    /// or invalid, or when the key does not match the certificate.
    pub fn load(files: TlsFiles) -> Result<Self, AuthError> {
        let provider = crypto_provider();
        let paths = files.paths();
        let contents = WatchedFiles::read_all_blocking(&paths)?;
        let material = TlsMaterial::build(&files, &contents, &provider)?;
        Ok(ReloadingTlsFiles {
            state: Arc::new(TlsState {
                files,
                provider,
                current: RwLock::new(Arc::new(material)),
                watched: tokio::sync::Mutex::new(WatchedFiles::new(paths, contents)),
                generation: watch::Sender::new(0),
            }),
        })
    }

    /// The files being watched.
    pub fn files(&self) -> &TlsFiles {
        &self.state.files
    }

    /// A server configuration: TLS 1.2+, client certificate required and verified against the
    /// current CA bundle, the current certificate presented, ALPN `h2`, no session resumption.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, AuthError> {
        let mut config = ServerConfig::builder_with_provider(self.state.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| AuthError::Tls {
                what: "server protocol versions".to_owned(),
                source,
            })?
            .with_client_cert_verifier(Arc::new(CurrentClientVerifier(self.state.clone())))
            .with_cert_resolver(Arc::new(CurrentCertificate(self.state.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// A client configuration: TLS 1.2+, the server verified against the current CA bundle,
    /// the current certificate presented as the client certificate, ALPN `h2`.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, AuthError> {
        let mut config = ClientConfig::builder_with_provider(self.state.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| AuthError::Tls {
                what: "client protocol versions".to_owned(),
                source,
            })?
            // "dangerous" only because the verifier is ours: it delegates every decision to
            // rustls's WebPkiServerVerifier built from the current CA bundle.
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CurrentServerVerifier(self.state.clone())))
            .with_client_cert_resolver(Arc::new(CurrentCertificate(self.state.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// Re-reads the files now. `Ok(true)` when they changed and the new material is in use,
    /// `Ok(false)` when nothing changed, `Err` when the new files are unusable (the previous
    /// material stays in use, and the same broken contents are not retried until they change).
    pub async fn reload_now(&self) -> Result<bool, AuthError> {
        self.state.reload().await
    }

    /// Polls the files every `every` and reloads them when their contents change. Failures are
    /// logged (once per distinct error) and keep the previous material. The task ends when every
    /// handle and configuration of this `ReloadingTlsFiles` has been dropped, or when aborted.
    pub fn spawn_watcher(&self, every: Duration) -> JoinHandle<()> {
        spawn_poller(Arc::downgrade(&self.state), every)
    }

    /// A counter that increases on every successful reload (for tests and metrics).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.state.generation.subscribe()
    }

    /// Expiry of the certificate currently presented (for a `…_cert_expiry_seconds` metric).
    pub fn not_after(&self) -> SystemTime {
        self.state.current().not_after
    }
}

/// Builds a static server configuration from files (no reload): see
/// [`ReloadingTlsFiles::server_config`].
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, AuthError> {
    ReloadingTlsFiles::load(files.clone())?.server_config()
}

/// Builds a static client configuration from files (no reload): see
/// [`ReloadingTlsFiles::client_config`].
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, AuthError> {
    ReloadingTlsFiles::load(files.clone())?.client_config()
}

/// Presents the current certificate, as a server and as a client.
struct CurrentCertificate(Arc<TlsState>);

impl fmt::Debug for CurrentCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurrentCertificate({})", self.0.files.cert.display())
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key.clone())
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates with a `WebPkiClientVerifier` built from the current CA bundle.
struct CurrentClientVerifier(Arc<TlsState>);

impl fmt::Debug for CurrentClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurrentClientVerifier({})", self.0.files.ca.display())
    }
}

impl ClientCertVerifier for CurrentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // NB: the hints would have to borrow from material that a reload may replace, so none
        // are sent. An empty list means "any CA" to rustls, Go and OpenSSL clients, which then
        // send the one certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Verifies servers with a `WebPkiServerVerifier` built from the current CA bundle.
struct CurrentServerVerifier(Arc<TlsState>);

impl fmt::Debug for CurrentServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurrentServerVerifier({})", self.0.files.ca.display())
    }
}

impl ServerCertVerifier for CurrentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A server-side TLS connection; tonic implements `Connected` for it with
/// `ConnectInfo = TlsConnectInfo<TcpConnectInfo>`, which carries the verified peer chain.
pub type TlsConnection = tokio_rustls::server::TlsStream<TcpStream>;

/// Stream of TLS connections that completed their handshake, for
/// `tonic::transport::Server::serve_with_incoming`. Dropping it stops accepting and closes the
/// listening socket.
pub struct TlsIncoming {
    connections: mpsc::Receiver<TlsConnection>,
    accept_task: JoinHandle<()>,
    local_addr: Option<SocketAddr>,
    /// Resolves (with an error) once the accept task has closed the listening socket.
    released: Option<oneshot::Receiver<()>>,
}

/// The listening socket of the accept task, and the signal sent once it is closed. Aborting a
/// task drops it some time later, on the runtime's schedule: a node started again on the same
/// address must wait for that, or its bind fails with "address in use" (seen under load).
struct Listening {
    listener: Option<TcpListener>,
    released: Option<oneshot::Sender<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        // The socket first, then the signal.
        drop(self.listener.take());
        drop(self.released.take());
    }
}

impl fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIncoming")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl TlsIncoming {
    /// The listening address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }
}

impl Stream for TlsIncoming {
    // Never yields an error: failed handshakes are logged and dropped, and tonic would only
    // log errors anyway.
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Accepts TCP connections from `listener` and performs each TLS handshake in its own task, so
/// a slow or hostile client never delays others. A handshake that does not finish within
/// `handshake_timeout` is dropped; so is one that fails verification (logged with the peer
/// address and rustls's reason: missing/expired/untrusted client certificate, TLS ≤ 1.1,
/// plaintext, …). At most 256 handshakes are in flight; more connections wait in the backlog.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
) -> TlsIncoming {
    let local_addr = listener.local_addr().ok();
    let (tx, rx) = mpsc::channel(64);
    let (released_tx, released_rx) = oneshot::channel();
    let listening = Listening {
        listener: Some(listener),
        released: Some(released_tx),
    };
    let accept_task = tokio::spawn(accept_loop(listening, config, handshake_timeout, tx));
    TlsIncoming {
        connections: rx,
        accept_task,
        local_addr,
        released: Some(released_rx),
    }
}

impl TlsIncoming {
    /// A future that completes once the listening socket is closed (after this stream is
    /// dropped, e.g. when the server using it stops): then the address can be bound again.
    /// Only the first call gets a future that waits; later ones complete at once.
    pub fn released(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let released = self.released.take();
        async move {
            if let Some(released) = released {
                let _ = released.await;
            }
        }
    }
}

async fn accept_loop(
    listening: Listening,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    tx: mpsc::Sender<TlsConnection>,
) {
    let Some(listener) = listening.listener.as_ref() else {
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // the semaphore is never closed
            },
            () = tx.closed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Per-connection errors (reset before accept) are harmless; resource exhaustion
                // (EMFILE) would spin, so pause briefly before trying again.
                tracing::warn!(error = %e, "accepting a TCP connection failed");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
            drop(permit);
            match handshake {
                Ok(Ok(tls)) => {
                    // Err only when the server has stopped; the connection is then dropped.
                    let _ = tx.send(tls).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(peer = %peer, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    tracing::info!(
                        peer = %peer,
                        timeout = ?handshake_timeout,
                        "TLS handshake timed out"
                    );
                }
            }
        });
    }
}

/// Dials TLS for tonic's `Endpoint::connect_with_connector`, with our rustls client config.
///
/// The server name checked against the server's certificate is the URI's host (DNS name or IP
/// address) unless [`TlsConnector::with_server_name`] overrides it (e.g. dialing a pod IP while
/// verifying its DNS name). Use [`endpoint`] to build the `Endpoint`: tonic refuses `https://`
/// URIs with a custom connector, since it would try to add its own TLS.
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
    source_ip: Option<IpAddr>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsConnector {
    /// A connector with the given client configuration.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsConnector {
            connector: tokio_rustls::TlsConnector::from(config),
            server_name: None,
            source_ip: None,
        }
    }

    /// Connections leave from `ip` (a node's own address), so a node's traffic is attributable
    /// to it in firewall rules, packet captures and the peer's logs. Only peers of the same
    /// address family are dialed.
    pub fn with_source_ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    /// Verifies the server's certificate against `name` instead of the dialed host.
    pub fn with_server_name(mut self, name: &str) -> Result<Self, AuthError> {
        self.server_name = Some(parse_server_name(name)?);
        Ok(self)
    }

    /// Connects to `uri`'s host and port and completes the TLS handshake.
    pub async fn connect(
        &self,
        uri: &Uri,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .ok_or_else(|| invalid(format!("{uri}: no host")))?;
        let port = uri
            .port_u16()
            .ok_or_else(|| invalid(format!("{uri}: no port")))?;
        let server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => parse_server_name(host).map_err(|e| invalid(e.to_string()))?,
        };
        let tcp = match self.source_ip {
            None => TcpStream::connect((host, port)).await?,
            Some(source) => connect_from(source, host, port).await?,
        };
        let _ = tcp.set_nodelay(true);
        self.connector.connect(server_name, tcp).await
    }
}

/// A TCP connection to `host:port` from `source` (any port): each address of `host` in
/// `source`'s family is tried in turn, as `TcpStream::connect` tries every address.
async fn connect_from(source: IpAddr, host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        if addr.is_ipv4() != source.is_ipv4() {
            continue;
        }
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding the source address {source}: {e}"),
            )
        })?;
        match socket.connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{host} has no address of the same family as the source address {source}"),
        )
    }))
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect(&uri).await.map(TokioIo::new) })
    }
}

/// A tonic `Endpoint` for `addr` (`host:port`, `https://host:port` or `http://host:port`) to be
/// used with [`TlsConnector`]: the URI tonic dials is `http://…` (so tonic adds no TLS of its
/// own; the connector does it), while requests carry `:scheme https`.
pub fn endpoint(addr: &str) -> Result<Endpoint, AuthError> {
    let invalid = |reason: String| AuthError::ServerName {
        name: addr.to_owned(),
        reason,
    };
    let authority = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr)
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid("expected host:port".to_owned()));
    }
    let origin: Uri = format!("https://{authority}")
        .parse()
        .map_err(|e: http_uri::InvalidUri| invalid(e.to_string()))?;
    if origin.port_u16().is_none() {
        return Err(invalid("missing port".to_owned()));
    }
    Endpoint::from_shared(format!("http://{authority}"))
        .map(|e| e.origin(origin))
        .map_err(|e| invalid(e.to_string()))
}

/// `http::uri` by its path in tonic's re-export, to name the parse error type.
mod http_uri {
    pub(super) use tonic::codegen::http::uri::InvalidUri;
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, AuthError> {
    ServerName::try_from(name.to_owned()).map_err(|e| AuthError::ServerName {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}
