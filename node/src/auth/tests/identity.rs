//! Identity: which name of a certificate is the subject, and what an unauthenticated request
//! turns into.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::fixtures::{DAY, TestPki};
use crate::auth::identity::{IdentityError, subject_from_certs, subject_from_request};
use logcluster_certs::CertificateRequest;

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[test]
fn common_name_is_the_subject_without_uri_sans() {
    let pki = TestPki::new().unwrap();
    let cert = pki
        .ca()
        .issue(&CertificateRequest::client("alice", DAY))
        .unwrap();
    assert_eq!(subject_from_certs(&[der(&cert.cert_pem)]).unwrap(), "alice");
}

#[test]
fn a_uri_san_takes_precedence_over_the_common_name() {
    let pki = TestPki::new().unwrap();
    let req = CertificateRequest::client("alice", DAY).with_uri("spiffe://logcluster/user/alice");
    let cert = pki.ca().issue(&req).unwrap();
    assert_eq!(
        subject_from_certs(&[der(&cert.cert_pem)]).unwrap(),
        "spiffe://logcluster/user/alice"
    );
}

#[test]
fn several_uri_sans_are_ambiguous() {
    let pki = TestPki::new().unwrap();
    let req = CertificateRequest::client("alice", DAY)
        .with_uri("spiffe://logcluster/user/alice")
        .with_uri("spiffe://logcluster/role/admin");
    let cert = pki.ca().issue(&req).unwrap();
    assert_eq!(
        subject_from_certs(&[der(&cert.cert_pem)]).unwrap_err(),
        IdentityError::Ambiguous {
            kind: "URI SAN",
            count: 2
        }
    );
}

#[test]
fn only_the_leaf_names_the_subject() {
    let pki = TestPki::new().unwrap();
    let cert = pki
        .ca()
        .issue(&CertificateRequest::client("leaf", DAY))
        .unwrap();
    let chain = [der(&cert.cert_pem), der(pki.ca().cert_pem())];
    assert_eq!(subject_from_certs(&chain).unwrap(), "leaf");
}

#[test]
fn missing_or_broken_certificates_are_unauthenticated() {
    assert_eq!(
        subject_from_certs(&[]).unwrap_err(),
        IdentityError::NoPeerCertificate
    );
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(matches!(
        subject_from_certs(&[garbage]).unwrap_err(),
        IdentityError::Unparseable(_)
    ));

    // A request that did not come through the TLS acceptor carries no peer certificates.
    let request = tonic::Request::new(());
    let err = subject_from_request(&request).unwrap_err();
    assert_eq!(err, IdentityError::NoPeerCertificate);
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("no verified client certificate"));
}
