//! Throw-away credentials for a test control plane: a CA, the API server's serving certificate,
//! an admin client certificate (`O=system:masters`, which RBAC lets do anything) and the
//! service-account signing key. All ECDSA P-256, written as PEM files into the control plane's
//! directory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Error, Result};

/// The files the API server and its clients are pointed at.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    /// The public half, for `--service-account-key-file` (which reads no PKCS#8 private keys).
    pub service_account_pub: PathBuf,
}

/// The generated material: files on disk, and the admin identity in memory for the harness's
/// own readiness probe.
pub struct Pki {
    pub files: PkiFiles,
    pub ca_der: CertificateDer<'static>,
    pub admin_cert_der: CertificateDer<'static>,
    admin_key_der: Vec<u8>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Generates everything into `dir`. The serving certificate holds loopback, the `kubernetes`
    /// Service's names and `ips`: the first address of the service range (in-cluster clients
    /// reach the API server as the `kubernetes` Service on it) and any node address.
    pub fn generate(dir: &Path, ips: &[IpAddr]) -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = dn("logcluster-test-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let names = [
            IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ];
        let mut serving = CertificateParams::new(
            names
                .into_iter()
                .chain(ips.iter().map(IpAddr::to_string))
                .collect::<Vec<_>>(),
        )?;
        serving.distinguished_name = dn("kube-apiserver", None);
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::default();
        admin.distinguished_name = dn("logcluster-test-admin", Some("system:masters"));
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let service_account_key = KeyPair::generate()?;

        let files = PkiFiles {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_pub: dir.join("service-account.pub"),
        };
        write(&files.ca_cert, &ca_cert.pem())?;
        write(&files.serving_cert, &serving_cert.pem())?;
        write(&files.serving_key, &serving_key.serialize_pem())?;
        write(&files.admin_cert, &admin_cert.pem())?;
        write(&files.admin_key, &admin_key.serialize_pem())?;
        write(
            &files.service_account_key,
            &service_account_key.serialize_pem(),
        )?;
        write(
            &files.service_account_pub,
            &service_account_key.public_key_pem(),
        )?;

        Ok(Self {
            files,
            ca_der: ca_cert.der().clone(),
            admin_cert_der: admin_cert.der().clone(),
            admin_key_der: admin_key.serialize_der(),
        })
    }

    /// The admin client key, for rustls.
    pub fn admin_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.admin_key_der.clone()))
    }
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn write(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Keys are 0600 like real ones; only this process and its children read them.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
