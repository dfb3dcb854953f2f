//! Authentication and authorization for the node's single mTLS port (architecture decision 3).
//!
//! * [`tls`] — rustls server and client configurations from PEM files (TLS 1.2+, ring only,
//!   client certificates required and verified), hot reload of the CA, certificate and key
//!   ([`tls::ReloadingTlsFiles`]), the incoming stream tonic serves over
//!   ([`tls::tls_incoming`]) and the connector tonic dials with ([`tls::TlsConnector`]).
//! * [`identity`] — the subject of a verified peer certificate (URI SAN, else CN).
//! * [`authz`] — the [`authz::Authorizer`] trait and its casbin implementation with hot reload.
//! * [`access`] — [`AccessControl`], what every gRPC handler calls: identity, then the ACL.
//!
//! How the pieces fit in a request: the TLS handshake verifies the client certificate against
//! the cluster CA; tonic puts the verified chain into the request's extensions; the handler calls
//! [`identity::subject_from_request`] (→ `UNAUTHENTICATED` on failure) and then
//! [`authz::Authorizer::authorize`] with the action (→ `PERMISSION_DENIED`).

pub mod access;
pub mod authz;
mod error;
pub mod identity;
pub mod tls;
mod watch;

pub use access::{AccessControl, action};
pub use authz::{Authorizer, AuthzError, CasbinAuthorizer};
pub use error::AuthError;
pub use identity::{IdentityError, subject_from_request};
pub use tls::{ReloadingTlsFiles, TlsConnector, TlsFiles, tls_incoming};

#[cfg(test)]
mod tests;
