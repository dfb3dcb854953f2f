//! TLS settings of a client: the CA that signs the cluster's certificates and the client's own
//! certificate (its subject is what the ACL authorizes).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::error::ClientError;

/// PEM material a client presents and trusts.
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::TlsFile {
        what,
        path: PathBuf::from(path),
        source,
    })
}

impl ClientTls {
    /// From PEM text.
    pub fn from_pem(
        ca_pem: impl Into<Vec<u8>>,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        ClientTls {
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            server_name: None,
        }
    }

    /// From PEM files (CA bundle, client certificate chain, client key).
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        Ok(Self::from_pem(
            read(ca, "CA")?,
            read(cert, "certificate")?,
            read(key, "key")?,
        ))
    }

    /// Verify every server against this name instead of the host dialed (e.g. when dialing an
    /// IP address through a tunnel).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The client certificate chain (PEM), e.g. to check its validity before connecting.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    fn base_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// Verifies a server against the host dialed (or the name set by `with_server_name`).
    pub(crate) fn tonic_config(&self) -> ClientTlsConfig {
        match &self.server_name {
            Some(name) => self.base_config().domain_name(name.clone()),
            None => self.base_config(),
        }
    }

    /// Verifies a server against `advertised` (or the name set by `with_server_name`), whatever
    /// address is dialed.
    pub(crate) fn tonic_config_for(&self, advertised: &str) -> ClientTlsConfig {
        let name = self.server_name.as_deref().unwrap_or(advertised);
        self.base_config().domain_name(name.to_owned())
    }
}
