//! A throwaway PKI for tests (feature `testsuite`): one CA whose node and client certificates
//! are written as PEM files under the names the node's TLS configuration is given in tests
//! (`ca.pem`, `<name>.pem`, `<name>-key.pem`).
//!
//! Every crate's tests build their certificates here, so a change to what a node certificate
//! must hold (its usages, its SANs) is made once. A test that needs an unusual certificate
//! (a server-only one, another validity) passes its own [`CertificateRequest`] to
//! [`TestPki::issue`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use crate::authority::{CertificateAuthority, IssuedCertificate};
use crate::error::{Error, Result};
use crate::files::write_pem_files;
use crate::request::CertificateRequest;

/// One day, the unit of every validity in tests.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// Validity of the test CA; leaf certificates never outlive it.
pub const CA_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Validity of the leaf certificates [`TestPki`] issues by default.
pub const VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The loopback address every node certificate is valid for when a test names no other.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A CA and the directory its certificates are written to.
#[derive(Debug)]
pub struct TestPki {
    ca: CertificateAuthority,
    dir: PathBuf,
    /// The temporary directory the PKI created for itself (removed on drop), if it did.
    _owned_dir: Option<TempDir>,
}

/// The files of one issued certificate, and what was issued.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The CA certificate that issued it (`<dir>/ca.pem`).
    pub ca: PathBuf,
    /// `<dir>/<name>.pem`
    pub cert: PathBuf,
    /// `<dir>/<name>-key.pem`
    pub key: PathBuf,
    /// The certificate and key as PEM text, with their validity.
    pub issued: IssuedCertificate,
}

impl TestPki {
    /// A new CA writing into a temporary directory that lives as long as the PKI.
    pub fn new() -> Result<Self> {
        Self::generate("LogCluster test CA", None)
    }

    /// A new CA writing into `dir` (created when missing, left in place on drop).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        Self::generate("LogCluster test CA", Some(dir))
    }

    /// Another, unrelated CA in its own temporary directory: its certificates carry the same
    /// subjects as ours but are issued by a CA nobody trusts.
    pub fn stranger() -> Result<Self> {
        Self::generate("LogCluster stranger CA", None)
    }

    fn generate(common_name: &str, dir: Option<PathBuf>) -> Result<Self> {
        let (dir, owned_dir) = match dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("logcluster-pki-")
                    .tempdir()
                    .map_err(|e| Error::io(std::env::temp_dir(), e))?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let ca = CertificateAuthority::generate(common_name, CA_VALIDITY)?;
        write_pem_files(&dir, "ca", ca.cert_pem(), None)?;
        Ok(TestPki {
            ca,
            dir,
            _owned_dir: owned_dir,
        })
    }

    /// The CA, to issue certificates that are not written to files.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The directory holding `ca.pem` and every issued certificate.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/ca.pem`, the bundle nodes and clients of this PKI trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `<dir>/<name>.pem`, where [`TestPki::issue`] writes the certificate `name`.
    pub fn cert_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// `<dir>/<name>-key.pem`, where [`TestPki::issue`] writes the key of `name`.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }

    /// Writes the CA's private key as `<dir>/ca-key.pem` (mode `0600`), for tests that hand
    /// this CA to another issuer, and returns its path.
    pub fn write_ca_key(&self) -> Result<PathBuf> {
        // Rewrites `ca.pem` unchanged: `write_pem_files` gives a key its `0600` mode only when
        // written as the key of a certificate.
        let paths = write_pem_files(&self.dir, "ca", self.ca.cert_pem(), Some(self.ca.key_pem()))?;
        Ok(paths.key.unwrap_or_else(|| self.key_path("ca")))
    }

    /// Issues `request` and writes it as `<dir>/<name>.pem` and `<dir>/<name>-key.pem`,
    /// replacing any earlier certificate of that name.
    pub fn issue(&self, name: &str, request: &CertificateRequest) -> Result<TestCert> {
        let issued = self.ca.issue(request)?;
        let paths = write_pem_files(&self.dir, name, &issued.cert_pem, Some(&issued.key_pem))?;
        Ok(TestCert {
            ca: self.ca_path(),
            cert: paths.cert,
            key: paths.key.unwrap_or_else(|| self.key_path(name)),
            issued,
        })
    }

    /// A node certificate (`serverAuth` + `clientAuth`: nodes serve and dial their peers) with
    /// subject `common_name`, valid for `localhost`, `dns_names` and `ips`, written as
    /// `<name>.pem`.
    pub fn node(
        &self,
        name: &str,
        common_name: &str,
        ips: &[IpAddr],
        dns_names: &[String],
    ) -> Result<TestCert> {
        let dns = std::iter::once("localhost".to_owned()).chain(dns_names.iter().cloned());
        let request = CertificateRequest::node(common_name, dns, ips.iter().copied(), VALIDITY);
        self.issue(name, &request)
    }

    /// A user's client certificate (`clientAuth`) whose CN, the ACL subject, is `common_name`,
    /// written as `<common_name>.pem`.
    pub fn client(&self, common_name: &str) -> Result<TestCert> {
        self.issue(
            common_name,
            &CertificateRequest::client(common_name, VALIDITY),
        )
    }

    /// A client certificate for `common_name` that expired two days ago, written as
    /// `<name>.pem`.
    pub fn expired_client(&self, name: &str, common_name: &str) -> Result<TestCert> {
        let request = CertificateRequest::client(common_name, DAY)
            .with_not_before(SystemTime::now() - 3 * DAY);
        self.issue(name, &request)
    }

    /// A client certificate for `common_name` that becomes valid only tomorrow, written as
    /// `<name>.pem`.
    pub fn not_yet_valid_client(&self, name: &str, common_name: &str) -> Result<TestCert> {
        let request =
            CertificateRequest::client(common_name, DAY).with_not_before(SystemTime::now() + DAY);
        self.issue(name, &request)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::inspect::inspect;

    fn info(cert: &TestCert) -> crate::CertificateInfo {
        inspect(&std::fs::read_to_string(&cert.cert).unwrap()).unwrap()
    }

    #[test]
    fn files_are_named_as_the_node_tls_configuration_expects() {
        let pki = TestPki::new().unwrap();
        let root = pki.client("root").unwrap();
        assert_eq!(root.ca, pki.dir().join("ca.pem"));
        assert_eq!(root.cert, pki.dir().join("root.pem"));
        assert_eq!(root.key, pki.dir().join("root-key.pem"));
        assert_eq!(root.cert, pki.cert_path("root"));
        assert_eq!(root.key, pki.key_path("root"));
        assert_eq!(
            std::fs::read_to_string(&root.ca).unwrap(),
            pki.ca().cert_pem()
        );
        assert_eq!(
            std::fs::read_to_string(&root.key).unwrap(),
            root.issued.key_pem
        );
    }

    #[test]
    fn a_node_certificate_serves_and_dials_for_localhost_and_its_addresses() {
        let pki = TestPki::new().unwrap();
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let node = pki
            .node("node6", "node", &[ip], &["lc-6.example".to_owned()])
            .unwrap();
        let info = info(&node);
        assert_eq!(info.subject_common_name.as_deref(), Some("node"));
        assert_eq!(info.dns_names, vec!["localhost", "lc-6.example"]);
        assert_eq!(info.ip_addresses, vec![ip]);
        assert!(info.server_auth && info.client_auth && !info.is_ca);
        assert_eq!(info.issuer, inspect(pki.ca().cert_pem()).unwrap().subject);
    }

    #[test]
    fn a_client_certificate_only_authenticates_a_client() {
        let pki = TestPki::new().unwrap();
        let info = info(&pki.client("alice").unwrap());
        assert_eq!(info.subject_common_name.as_deref(), Some("alice"));
        assert!(info.client_auth && !info.server_auth);
    }

    #[test]
    fn expired_and_not_yet_valid_clients_are_outside_their_validity_now() {
        let pki = TestPki::new().unwrap();
        let now = SystemTime::now();
        let expired = info(&pki.expired_client("old", "root").unwrap());
        assert!(expired.is_expired_at(now), "{expired:?}");
        let future = info(&pki.not_yet_valid_client("future", "root").unwrap());
        assert!(future.is_not_yet_valid_at(now), "{future:?}");
        assert_eq!(future.subject_common_name.as_deref(), Some("root"));
    }

    #[test]
    fn the_stranger_is_another_ca_in_another_directory() {
        let pki = TestPki::new().unwrap();
        let stranger = TestPki::stranger().unwrap();
        assert_ne!(pki.dir(), stranger.dir());
        assert_ne!(pki.ca().cert_pem(), stranger.ca().cert_pem());
        let mallory = info(&stranger.client("root").unwrap());
        assert_eq!(
            mallory.issuer,
            inspect(stranger.ca().cert_pem()).unwrap().subject
        );
        assert_ne!(
            mallory.issuer,
            inspect(pki.ca().cert_pem()).unwrap().subject
        );
    }

    #[test]
    fn the_ca_key_is_written_for_the_owner_only_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::in_dir(dir.path().join("certs")).unwrap();
        let key = pki.write_ca_key().unwrap();
        assert_eq!(key, dir.path().join("certs/ca-key.pem"));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let cert = std::fs::read_to_string(pki.ca_path()).unwrap();
        let key = std::fs::read_to_string(&key).unwrap();
        assert!(CertificateAuthority::from_pem(&cert, &key).is_ok());
    }

    #[test]
    fn a_temporary_pki_removes_its_directory_and_a_given_one_stays() {
        let pki = TestPki::new().unwrap();
        let temporary = pki.dir().to_owned();
        drop(pki);
        assert!(!temporary.exists());

        let dir = tempfile::tempdir().unwrap();
        drop(TestPki::in_dir(dir.path()).unwrap());
        assert!(dir.path().join("ca.pem").exists());
    }
}
