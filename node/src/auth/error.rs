//! Errors from loading TLS material and policies.

use std::path::PathBuf;

/// Loading or reloading certificates, keys, models or policies failed.
///
/// Every variant names the file (or the embedded input) that needs fixing.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A PEM file could not be decoded, or holds nothing of the expected kind.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The private key does not belong to the certificate.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// rustls refused the material or configuration.
    #[error("{what}: {source}")]
    Tls {
        /// What was being built.
        what: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },

    /// The client certificate verifier could not be built (e.g. no usable CA certificate).
    #[error("{}: cannot build the client certificate verifier: {reason}", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },

    /// A server name (for dialing) is not a valid DNS name or IP address.
    #[error("invalid TLS server name {name:?}: {reason}")]
    ServerName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: String,
    },

    /// The casbin model is invalid.
    #[error("casbin model {source_name}: {reason}")]
    Model {
        /// The model file, or "embedded default model".
        source_name: String,
        /// What is wrong.
        reason: String,
    },

    /// The casbin policy is invalid.
    #[error("casbin policy {source_name}: {reason}")]
    Policy {
        /// The policy file or input.
        source_name: String,
        /// What is wrong (with the line number when it is one line).
        reason: String,
    },
}

impl AuthError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuthError::Io {
            path: path.into(),
            source,
        }
    }
}
