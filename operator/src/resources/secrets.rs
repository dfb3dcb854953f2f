//! Secrets: the CA, the TLS Secrets (node, operator, users) and the gossip key.
//!
//! TLS Secrets have type `kubernetes.io/tls` with `tls.crt`, `tls.key` and the CA as `ca.crt`, so
//! one Secret volume gives a pod everything it needs, and a user can mount their Secret as is.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::config::GOSSIP_KEY;
use super::names::{CERTIFICATE_LABEL, ClusterNames, USER_LABEL};
use crate::Result;
use crate::crd::LogCluster;

/// Which certificate a TLS Secret holds (the `logcluster.io/certificate` label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertificateKind {
    /// The cluster CA.
    Ca,
    /// The node certificate shared by every pod.
    Node,
    /// The operator's client certificate.
    Operator,
    /// A user's client certificate.
    User(String),
}

impl CertificateKind {
    /// The label value.
    pub fn label(&self) -> &'static str {
        match self {
            CertificateKind::Ca => "ca",
            CertificateKind::Node => "node",
            CertificateKind::Operator => "operator",
            CertificateKind::User(_) => "user",
        }
    }
}

fn tls_type_secret(
    lc: &LogCluster,
    names: &ClusterNames,
    name: String,
    kind: &CertificateKind,
    data: BTreeMap<String, ByteString>,
) -> Result<Secret> {
    let mut metadata = super::child_meta(lc, names, name, "certificates")?;
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(CERTIFICATE_LABEL.to_owned(), kind.label().to_owned());
    if let CertificateKind::User(user) = kind {
        labels.insert(USER_LABEL.to_owned(), user.clone());
    }
    Ok(Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

/// The operator-managed CA Secret (`tls.crt`, `tls.key`).
pub fn ca_secret(
    lc: &LogCluster,
    names: &ClusterNames,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Secret> {
    tls_type_secret(
        lc,
        names,
        names.ca_secret(),
        &CertificateKind::Ca,
        BTreeMap::from([
            ("tls.crt".to_owned(), bytes(cert_pem)),
            ("tls.key".to_owned(), bytes(key_pem)),
        ]),
    )
}

/// A leaf certificate Secret (`ca.crt`, `tls.crt`, `tls.key`).
pub fn leaf_secret(
    lc: &LogCluster,
    names: &ClusterNames,
    name: String,
    kind: &CertificateKind,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Secret> {
    tls_type_secret(
        lc,
        names,
        name,
        kind,
        BTreeMap::from([
            ("ca.crt".to_owned(), bytes(ca_pem)),
            ("tls.crt".to_owned(), bytes(cert_pem)),
            ("tls.key".to_owned(), bytes(key_pem)),
        ]),
    )
}

/// The gossip key Secret (`gossip.key`: 32 random bytes).
pub fn gossip_secret(lc: &LogCluster, names: &ClusterNames, key: &[u8]) -> Result<Secret> {
    Ok(Secret {
        metadata: super::child_meta(lc, names, names.gossip_secret(), "gossip")?,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            GOSSIP_KEY.to_owned(),
            ByteString(key.to_vec()),
        )])),
        ..Secret::default()
    })
}

/// A Secret value as UTF-8 text (PEM), if present.
pub fn text_value(secret: &Secret, key: &str) -> Option<String> {
    let value = secret.data.as_ref()?.get(key)?;
    String::from_utf8(value.0.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::cluster;

    #[test]
    fn user_secrets_are_labelled_with_the_user() {
        let lc = cluster();
        let names = ClusterNames::new(&lc, "cluster.local").unwrap();
        let kind = CertificateKind::User("alice".into());
        let s = leaf_secret(
            &lc,
            &names,
            names.user_secret("alice"),
            &kind,
            "ca",
            "crt",
            "key",
        )
        .unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("demo-user-alice"));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[USER_LABEL], "alice");
        assert_eq!(labels[CERTIFICATE_LABEL], "user");
        assert_eq!(text_value(&s, "ca.crt").as_deref(), Some("ca"));
        assert_eq!(text_value(&s, "tls.key").as_deref(), Some("key"));
        assert_eq!(text_value(&s, "missing"), None);
    }
}
