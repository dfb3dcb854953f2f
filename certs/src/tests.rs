//! Unit tests: issue → inspect round trips, loading CAs, validity windows, files on disk.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::inspect::first_certificate_der;
use crate::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate("LogCluster test CA", 365 * DAY).unwrap()
}

/// Verifies `leaf_pem`'s signature with `ca_pem`'s public key.
fn signed_by(leaf_pem: &str, ca_pem: &str) -> bool {
    let leaf_der = first_certificate_der(leaf_pem.as_bytes(), "leaf").unwrap();
    let ca_der = first_certificate_der(ca_pem.as_bytes(), "ca").unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

#[test]
fn node_certificate_round_trips_through_inspect() {
    let ca = ca();
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let req = CertificateRequest::node(
        "lc-0",
        ["lc-0.lc-nodes.default.svc.cluster.local", "localhost"],
        ips.clone(),
        30 * DAY,
    )
    .with_uri("spiffe://logcluster/ns/default/node/lc-0");
    let before = SystemTime::now();
    let issued = ca.issue(&req).unwrap();
    let info = inspect(&issued.cert_pem).unwrap();

    assert_eq!(info.subject_common_name.as_deref(), Some("lc-0"));
    assert_eq!(
        info.dns_names,
        vec!["lc-0.lc-nodes.default.svc.cluster.local", "localhost"]
    );
    assert_eq!(info.ip_addresses, ips);
    assert_eq!(info.uris, vec!["spiffe://logcluster/ns/default/node/lc-0"]);
    assert!(info.server_auth && info.client_auth);
    assert!(!info.is_ca);
    assert!(
        info.issuer.contains("LogCluster test CA"),
        "{}",
        info.issuer
    );
    assert!(!info.serial_hex.is_empty());
    assert!(info.serial_hex.chars().all(|c| c.is_ascii_hexdigit()));

    // The returned times are exactly the encoded ones; the start is back-dated for clock skew.
    assert_eq!(info.not_before, issued.not_before);
    assert_eq!(info.not_after, issued.not_after);
    let lifetime = info.not_after.duration_since(info.not_before).unwrap();
    let expected = 30 * DAY + CLOCK_SKEW_ALLOWANCE;
    assert!(
        lifetime.abs_diff(expected) <= Duration::from_secs(2),
        "{lifetime:?}"
    );
    assert!(info.not_before <= before);
    assert!(!info.is_expired_at(SystemTime::now()));
    assert!(signed_by(&issued.cert_pem, ca.cert_pem()));
    assert!(issued.key_pem.contains("BEGIN PRIVATE KEY"));
}

#[test]
fn usages_map_to_extended_key_usages() {
    let ca = ca();
    let client = inspect(
        &ca.issue(&CertificateRequest::client("alice", DAY))
            .unwrap()
            .cert_pem,
    )
    .unwrap();
    assert_eq!((client.server_auth, client.client_auth), (false, true));
    assert_eq!(client.subject_common_name.as_deref(), Some("alice"));
    assert!(client.dns_names.is_empty() && client.ip_addresses.is_empty());

    let server = CertificateRequest::server("web", ["web.example"], [], DAY);
    let server = inspect(&ca.issue(&server).unwrap().cert_pem).unwrap();
    assert_eq!((server.server_auth, server.client_auth), (true, false));
}

#[test]
fn generated_ca_is_a_ca() {
    let ca = ca();
    let info = inspect(ca.cert_pem()).unwrap();
    assert!(info.is_ca);
    assert_eq!(
        info.subject_common_name.as_deref(),
        Some("LogCluster test CA")
    );
    assert_eq!(info.subject, info.issuer, "self-signed");
    assert!(signed_by(ca.cert_pem(), ca.cert_pem()));
    assert_eq!(ca.not_after(), info.not_after);
    // Key usages are checked by from_pem: a CA without keyCertSign would be refused.
    CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
}

#[test]
fn loaded_ca_issues_certificates_that_chain_to_it() {
    let original = ca();
    let loaded = CertificateAuthority::from_pem(original.cert_pem(), original.key_pem()).unwrap();
    assert_eq!(loaded.cert_pem(), original.cert_pem());
    assert_eq!(loaded.subject(), "LogCluster test CA");
    assert_eq!(loaded.not_after(), original.not_after());

    let issued = loaded
        .issue(&CertificateRequest::client("bob", DAY))
        .unwrap();
    assert!(signed_by(&issued.cert_pem, original.cert_pem()));
    let info = inspect(&issued.cert_pem).unwrap();
    assert_eq!(info.issuer, inspect(original.cert_pem()).unwrap().subject);
}

#[test]
fn ca_with_someone_elses_key_is_refused() {
    let a = ca();
    let b = CertificateAuthority::generate("other CA", DAY).unwrap();
    let err = CertificateAuthority::from_pem(a.cert_pem(), b.key_pem()).unwrap_err();
    assert!(
        matches!(err, Error::KeyMismatch { ref subject } if subject == "LogCluster test CA"),
        "{err}"
    );
}

#[test]
fn leaf_certificate_is_not_accepted_as_a_ca() {
    let ca = ca();
    let leaf = ca
        .issue(&CertificateRequest::client("mallory", DAY))
        .unwrap();
    let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");
    assert!(err.to_string().contains("mallory"), "{err}");
}

#[test]
fn unreadable_ca_inputs_say_what_is_wrong() {
    let ca = ca();
    let err = CertificateAuthority::from_pem("not pem at all", ca.key_pem()).unwrap_err();
    assert!(matches!(err, Error::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("CA certificate"), "{err}");

    let err = CertificateAuthority::from_pem(ca.key_pem(), ca.key_pem()).unwrap_err();
    assert!(matches!(err, Error::NoCertificate { .. }), "{err}");

    let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = CertificateAuthority::from_pem(broken, ca.key_pem()).unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err}");

    let err = CertificateAuthority::from_pem(ca.cert_pem(), "garbage").unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    assert!(err.to_string().contains("CA private key"), "{err}");
}

#[test]
fn expired_and_not_yet_valid_certificates_can_be_made() {
    let ca = ca();
    let now = SystemTime::now();
    let expired = CertificateRequest::client("old", DAY).with_not_before(now - 3 * DAY);
    let expired = inspect(&ca.issue(&expired).unwrap().cert_pem).unwrap();
    assert!(expired.is_expired_at(now));
    assert!(expired.remaining_at(now).is_none());
    assert!(!expired.expires_within(30 * DAY, now));

    let future = CertificateRequest::client("future", DAY).with_not_before(now + 2 * DAY);
    let future = inspect(&ca.issue(&future).unwrap().cert_pem).unwrap();
    assert!(future.is_not_yet_valid_at(now));
    assert!(!future.is_expired_at(now));

    // An explicit start is not back-dated.
    let exact = now - DAY;
    let issued = ca
        .issue(&CertificateRequest::client("exact", 2 * DAY).with_not_before(exact))
        .unwrap();
    let since = exact.duration_since(issued.not_before).unwrap_or_default();
    assert!(since < Duration::from_secs(1), "{since:?}");
}

#[test]
fn renewal_window_is_reported() {
    let ca = ca();
    let soon = inspect(
        &ca.issue(&CertificateRequest::client("soon", 10 * DAY))
            .unwrap()
            .cert_pem,
    )
    .unwrap();
    let now = SystemTime::now();
    assert!(soon.expires_within(30 * DAY, now));
    assert!(!soon.expires_within(DAY, now));
    let left = soon.remaining_at(now).unwrap();
    assert!(left > 9 * DAY && left <= 10 * DAY, "{left:?}");
}

#[test]
fn leaf_never_outlives_its_ca() {
    let ca = CertificateAuthority::generate("short CA", 2 * DAY).unwrap();
    let issued = ca
        .issue(&CertificateRequest::client("long", 365 * DAY))
        .unwrap();
    assert_eq!(issued.not_after, ca.not_after());
    assert_eq!(inspect(&issued.cert_pem).unwrap().not_after, ca.not_after());
}

#[test]
fn expired_ca_refuses_to_issue() {
    let ca = CertificateAuthority::generate_at("dead CA", DAY, Some(SystemTime::now() - 3 * DAY))
        .unwrap();
    let err = ca.issue(&CertificateRequest::client("x", DAY)).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let ca = ca();
    let no_sans = CertificateRequest::node("lc-0", Vec::<String>::new(), [], DAY);
    let err = ca.issue(&no_sans).unwrap_err();
    assert!(err.to_string().contains("DNS name or IP"), "{err}");

    let err = ca
        .issue(&CertificateRequest::client("  ", DAY))
        .unwrap_err();
    assert!(err.to_string().contains("common name is empty"), "{err}");

    let err = ca
        .issue(&CertificateRequest::client("x", Duration::ZERO))
        .unwrap_err();
    assert!(err.to_string().contains("validity is zero"), "{err}");

    let bad_dns = CertificateRequest::node("lc-0", ["bad name"], [], DAY);
    assert!(ca.issue(&bad_dns).is_err());

    let bad_uri = CertificateRequest::client("x", DAY).with_uri("no-scheme");
    assert!(ca.issue(&bad_uri).is_err());

    assert!(CertificateAuthority::generate("", DAY).is_err());
}

#[test]
fn serial_numbers_differ() {
    let ca = ca();
    let a = inspect(
        &ca.issue(&CertificateRequest::client("a", DAY))
            .unwrap()
            .cert_pem,
    )
    .unwrap();
    let b = inspect(
        &ca.issue(&CertificateRequest::client("a", DAY))
            .unwrap()
            .cert_pem,
    )
    .unwrap();
    assert_ne!(a.serial_hex, b.serial_hex);
}

#[test]
fn inspect_reads_the_first_certificate_of_a_chain() {
    let ca = ca();
    let leaf = ca.issue(&CertificateRequest::client("first", DAY)).unwrap();
    let chain = format!("{}{}", leaf.cert_pem, ca.cert_pem());
    let info = inspect(&chain).unwrap();
    assert_eq!(info.subject_common_name.as_deref(), Some("first"));
}

#[test]
fn debug_output_hides_private_keys() {
    let ca = ca();
    let issued = ca.issue(&CertificateRequest::client("x", DAY)).unwrap();
    for text in [format!("{ca:?}"), format!("{issued:?}")] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(text.contains("redacted"));
    }
}

#[test]
fn pem_files_are_written_atomically_with_private_key_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let ca = ca();
    let paths = write_pem_files(&dir, "ca", ca.cert_pem(), Some(ca.key_pem())).unwrap();

    assert_eq!(paths.cert, dir.join("ca.pem"));
    assert_eq!(paths.key.as_deref(), Some(dir.join("ca-key.pem").as_path()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&paths.cert), 0o644);
    assert_eq!(mode(paths.key.as_deref().unwrap()), 0o600);
    assert_eq!(read_file(&paths.cert).unwrap(), ca.cert_pem());
    assert_eq!(
        read_file(paths.key.as_deref().unwrap()).unwrap(),
        ca.key_pem()
    );

    // Overwriting replaces contents and keeps modes; no temporary files are left behind.
    let other = ca.issue(&CertificateRequest::client("x", DAY)).unwrap();
    write_pem_files(&dir, "ca", &other.cert_pem, Some(&other.key_pem)).unwrap();
    assert_eq!(read_file(&paths.cert).unwrap(), other.cert_pem);
    assert_eq!(mode(paths.key.as_deref().unwrap()), 0o600);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["ca-key.pem", "ca.pem"]);

    // Certificate only.
    let only = write_pem_files(&dir, "ca-bundle", ca.cert_pem(), None).unwrap();
    assert!(only.key.is_none());
    assert!(!dir.join("ca-bundle-key.pem").exists());
}

#[test]
fn pem_file_names_cannot_escape_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "..", "../evil", "a/b"] {
        assert!(
            write_pem_files(tmp.path(), bad, "x", None).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn read_errors_name_the_file() {
    let err = read_file(std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn authority_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
}
