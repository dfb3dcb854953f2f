//! Who is calling: the subject of the verified client certificate.
//!
//! Precedence: a certificate with exactly one URI SAN (e.g. `spiffe://…`) is identified by that
//! URI; otherwise by its subject CN. URI SANs come first because they are the modern,
//! unambiguous binding (RFC 6125 deprecates identity in the CN), and a CA that issues them means
//! them as the identity; plain `logctl certs issue-client` certificates carry only a CN, which
//! then is the subject (as in proglog). A certificate with several URI SANs or several CNs is
//! refused rather than guessed at.
//!
//! The chain tonic exposes (`Request::peer_certs()`) was verified during the handshake by the
//! server configuration from [`super::tls`], which requires client certificates; a request
//! without it never came through that handshake and is unauthenticated.

use rustls::pki_types::CertificateDer;
use tonic::codegen::http::Extensions;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use x509_parser::extensions::GeneralName;

/// The caller has no usable verified identity. Maps to gRPC `UNAUTHENTICATED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The connection carries no verified client certificate.
    #[error("no verified client certificate on this connection")]
    NoPeerCertificate,
    /// The client certificate could not be parsed.
    #[error("the client certificate cannot be parsed: {0}")]
    Unparseable(String),
    /// The certificate names nobody.
    #[error("the client certificate has neither a URI SAN nor a subject common name")]
    NoSubject,
    /// The certificate names more than one identity.
    #[error("the client certificate names {count} {kind}s; exactly one is required")]
    Ambiguous {
        /// "URI SAN" or "common name".
        kind: &'static str,
        /// How many there are.
        count: usize,
    },
}

impl From<IdentityError> for tonic::Status {
    fn from(e: IdentityError) -> Self {
        tonic::Status::unauthenticated(e.to_string())
    }
}

/// The subject of a verified certificate chain (leaf first): its only URI SAN, else its CN.
pub fn subject_from_certs(chain: &[CertificateDer<'_>]) -> Result<String, IdentityError> {
    let leaf = chain.first().ok_or(IdentityError::NoPeerCertificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;

    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] if !uri.is_empty() => return Ok((*uri).to_owned()),
        [] | [_] => {}
        many => {
            return Err(IdentityError::Ambiguous {
                kind: "URI SAN",
                count: many.len(),
            });
        }
    }

    let cns: Vec<_> = cert.subject().iter_common_name().collect();
    match cns.as_slice() {
        [] => Err(IdentityError::NoSubject),
        [cn] => match cn.as_str() {
            Ok(cn) if !cn.trim().is_empty() => Ok(cn.to_owned()),
            Ok(_) => Err(IdentityError::NoSubject),
            Err(e) => Err(IdentityError::Unparseable(format!("common name: {e}"))),
        },
        many => Err(IdentityError::Ambiguous {
            kind: "common name",
            count: many.len(),
        }),
    }
}

/// The subject of the client that sent `request` (served over [`super::tls::tls_incoming`]).
pub fn subject_from_request<T>(request: &tonic::Request<T>) -> Result<String, IdentityError> {
    let chain = request
        .peer_certs()
        .ok_or(IdentityError::NoPeerCertificate)?;
    subject_from_certs(&chain)
}

/// The same, from an `http::Request`'s extensions, for tower layers in front of the services
/// (e.g. the per-RPC log line) that see HTTP requests rather than `tonic::Request`s.
pub fn subject_from_extensions(extensions: &Extensions) -> Result<String, IdentityError> {
    let chain = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .ok_or(IdentityError::NoPeerCertificate)?;
    subject_from_certs(&chain)
}
