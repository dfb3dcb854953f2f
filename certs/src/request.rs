//! What to put into a leaf certificate.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// The extended key usages (EKU) of a leaf certificate.
///
/// rustls (webpki) enforces them: a `Server` certificate cannot authenticate a client and a
/// `Client` certificate cannot serve TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// `serverAuth` only: a TLS server that never dials other nodes.
    Server,
    /// `clientAuth` only: users, `logctl`, the operator.
    Client,
    /// `serverAuth` and `clientAuth`: LogCluster nodes, which serve and also dial their peers.
    ServerAndClient,
}

impl Usage {
    /// Whether the certificate may authenticate a TLS server.
    pub fn server_auth(self) -> bool {
        matches!(self, Usage::Server | Usage::ServerAndClient)
    }

    /// Whether the certificate may authenticate a TLS client.
    pub fn client_auth(self) -> bool {
        matches!(self, Usage::Client | Usage::ServerAndClient)
    }
}

/// A request for a leaf certificate, issued by [`crate::CertificateAuthority::issue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    /// Subject CN. For client certificates this is the ACL subject (casbin `sub`).
    pub common_name: String,
    /// DNS subject alternative names (server name verification uses these, never the CN).
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// URI subject alternative names (e.g. `spiffe://…`); a URI SAN takes precedence over the CN
    /// as the ACL subject on the node.
    pub uris: Vec<String>,
    /// Extended key usages.
    pub usage: Usage,
    /// How long the certificate is valid, counted from `not_before` (or from now).
    pub validity: Duration,
    /// Start of validity. `None` means now, back-dated by [`crate::CLOCK_SKEW_ALLOWANCE`] so that
    /// peers whose clocks lag a little accept a fresh certificate. Tests set it to make
    /// not-yet-valid (future) or expired (past, with a short validity) certificates.
    pub not_before: Option<SystemTime>,
}

impl CertificateRequest {
    /// A node certificate: serves and dials peers (`serverAuth` + `clientAuth`), valid for the
    /// given DNS names and IP addresses.
    pub fn node(
        common_name: impl Into<String>,
        dns_names: impl IntoIterator<Item = impl Into<String>>,
        ip_addresses: impl IntoIterator<Item = IpAddr>,
        validity: Duration,
    ) -> Self {
        CertificateRequest {
            common_name: common_name.into(),
            dns_names: dns_names.into_iter().map(Into::into).collect(),
            ip_addresses: ip_addresses.into_iter().collect(),
            uris: Vec::new(),
            usage: Usage::ServerAndClient,
            validity,
            not_before: None,
        }
    }

    /// A client certificate (`clientAuth` only) whose CN is the ACL subject.
    pub fn client(common_name: impl Into<String>, validity: Duration) -> Self {
        CertificateRequest {
            usage: Usage::Client,
            ..CertificateRequest::node(common_name, Vec::<String>::new(), [], validity)
        }
    }

    /// A server-only certificate (`serverAuth` only).
    pub fn server(
        common_name: impl Into<String>,
        dns_names: impl IntoIterator<Item = impl Into<String>>,
        ip_addresses: impl IntoIterator<Item = IpAddr>,
        validity: Duration,
    ) -> Self {
        CertificateRequest {
            usage: Usage::Server,
            ..CertificateRequest::node(common_name, dns_names, ip_addresses, validity)
        }
    }

    /// Sets an explicit start of validity (see [`CertificateRequest::not_before`]).
    pub fn with_not_before(mut self, not_before: SystemTime) -> Self {
        self.not_before = Some(not_before);
        self
    }

    /// Adds a URI subject alternative name.
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uris.push(uri.into());
        self
    }
}
