//! LogCluster PKI: the replacement for `cfssl` in the book's `proglog`.
//!
//! One crate serves the node (`logctl certs`), the operator (which owns a cluster CA and issues,
//! renews and rotates certificates) and the tests (which need expired, not-yet-valid,
//! wrong-usage and foreign-CA certificates on demand).
//!
//! * [`CertificateAuthority`] — a self-signed ECDSA P-256 CA ([`CertificateAuthority::generate`])
//!   or an existing one loaded from PEM ([`CertificateAuthority::from_pem`]), which
//!   [issues](CertificateAuthority::issue) leaf certificates from a [`CertificateRequest`].
//! * [`inspect`] — what a PEM certificate says (subject, SANs, usages, validity), for expiry
//!   checks, `logctl certs inspect` and the operator's renewal decisions.
//! * [`write_pem_files`] — atomic writes with `0600` keys.
//! * `testsuite` (feature `testsuite`) — `TestPki`, the throwaway PKI every crate's tests use.
//!
//! Every private key is a fresh ECDSA P-256 key, serialized as PKCS#8 PEM (what rustls and Go's
//! `crypto/tls` load). Times in certificates have one-second precision; the `SystemTime`s this
//! crate returns are the values actually encoded.

#![forbid(unsafe_code)]

mod authority;
mod error;
mod files;
mod inspect;
mod request;

pub use authority::{CLOCK_SKEW_ALLOWANCE, CertificateAuthority, IssuedCertificate};
pub use error::{Error, Result};
pub use files::{PemPaths, read_file, write_pem_files};
pub use inspect::{CertificateInfo, inspect};
pub use request::{CertificateRequest, Usage};

#[cfg(feature = "testsuite")]
pub mod testsuite;

#[cfg(test)]
mod tests;
