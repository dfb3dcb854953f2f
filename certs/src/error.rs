//! The crate's single error type.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while creating, loading, inspecting or writing certificates.
///
/// `what` fields name the input ("CA certificate", a file path, …) so a message tells the user
/// which file or which value to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key pair for a new certificate could not be generated.
    #[error("generating an ECDSA P-256 key pair: {0}")]
    KeyGeneration(#[source] rcgen::Error),

    /// A certificate request is incomplete or contains a value that cannot go into a certificate.
    #[error("invalid certificate request for {common_name:?}: {reason}")]
    InvalidRequest {
        /// The requested common name.
        common_name: String,
        /// What is wrong with the request.
        reason: String,
    },

    /// rcgen refused to build or sign the certificate.
    #[error("signing the certificate for {common_name:?}: {source}")]
    Signing {
        /// The requested common name.
        common_name: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },

    /// The input holds no `CERTIFICATE` PEM block.
    #[error("{what}: no PEM CERTIFICATE block found")]
    NoCertificate {
        /// Which input (e.g. "CA certificate" or a file path).
        what: String,
    },

    /// The input is not valid PEM.
    #[error("{what}: invalid PEM: {reason}")]
    Pem {
        /// Which input.
        what: String,
        /// The decoder's reason.
        reason: String,
    },

    /// The PEM block does not hold a valid X.509 certificate.
    #[error("{what}: cannot parse the X.509 certificate: {reason}")]
    Parse {
        /// Which input.
        what: String,
        /// The parser's reason.
        reason: String,
    },

    /// The private key could not be loaded.
    #[error("{what}: invalid private key: {source}")]
    InvalidKey {
        /// Which input.
        what: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },

    /// A certificate supplied as a CA cannot issue certificates.
    #[error("certificate {subject:?} is not a usable CA: {reason}")]
    NotCa {
        /// The certificate's subject.
        subject: String,
        /// Why it is not a CA (no `CA:true`, no `keyCertSign`, expired, …).
        reason: String,
    },

    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate {subject:?}")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
