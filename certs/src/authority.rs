//! The certificate authority: create or load one, issue leaf certificates.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;
use x509_parser::prelude::X509Certificate;

use crate::error::{Error, Result};
use crate::inspect::{common_name_of, first_certificate_der, parse_der, system_time};
use crate::request::CertificateRequest;

/// How far a certificate without an explicit `not_before` is back-dated, so that a peer whose
/// clock runs a little behind the issuer's does not reject a certificate issued a moment ago.
/// (cfssl back-dates by the same amount.)
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// A leaf certificate and its freshly generated private key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (ECDSA P-256, PKCS#8), PEM. Write it with mode `0600`.
    pub key_pem: String,
    /// Start of validity, as encoded in the certificate.
    pub not_before: SystemTime,
    /// End of validity, as encoded in the certificate.
    pub not_after: SystemTime,
}

impl fmt::Debug for IssuedCertificate {
    // NB: never print private keys, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// A CA that issues LogCluster node and client certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    subject: String,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertificateAuthority {
    /// Creates a self-signed CA: ECDSA P-256, `CA:true` with path length 0 (it signs leaf
    /// certificates only, never intermediates), key usages `keyCertSign` and `cRLSign`.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self> {
        Self::generate_at(common_name, validity, None)
    }

    /// Like [`CertificateAuthority::generate`] with an explicit start of validity (tests use it
    /// to make a CA that is expired or not yet valid).
    pub fn generate_at(
        common_name: &str,
        validity: Duration,
        not_before: Option<SystemTime>,
    ) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidRequest {
            common_name: common_name.to_owned(),
            reason: reason.to_owned(),
        };
        if common_name.trim().is_empty() {
            return Err(invalid("the CA common name is empty"));
        }
        let (start, end) = validity_window(common_name, not_before, validity)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = start;
        params.not_after = end;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::KeyGeneration)?;
        let cert = params.self_signed(&key).map_err(|source| Error::Signing {
            common_name: common_name.to_owned(),
            source,
        })?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem,
            subject: common_name.to_owned(),
            not_after: end.into(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA, e.g. from a user-supplied Kubernetes Secret.
    ///
    /// Fails when the certificate is not a CA (`CA:true` missing, or a key usage extension
    /// without `keyCertSign`), or when the key is not the certificate's key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let what = "CA certificate";
        let der = first_certificate_der(cert_pem.as_bytes(), what)?;
        let x509 = parse_der(&der, what)?;
        let subject = common_name_of(&x509).unwrap_or_else(|| x509.subject().to_string());
        check_is_ca(&x509, &subject)?;

        let key = KeyPair::from_pem(key_pem).map_err(|source| Error::InvalidKey {
            what: "CA private key".to_owned(),
            source,
        })?;
        // Compare the raw public keys (EC point / RSA modulus+exponent) rather than whole SPKI
        // encodings, which may legally differ in how the algorithm parameters are written.
        if x509.public_key().subject_public_key.data.as_ref()
            != rcgen::PublicKeyData::der_bytes(&key)
        {
            return Err(Error::KeyMismatch { subject });
        }
        let not_after = system_time(x509.validity().not_after.timestamp());
        drop(x509);

        let issuer =
            Issuer::from_ca_cert_der(&der.as_slice().into(), key).map_err(|e| Error::Parse {
                what: what.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            subject,
            not_after,
            issuer,
        })
    }

    /// The CA certificate, PEM (what nodes and clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Store it with mode `0600` or in a Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA's subject (CN, or the whole DN when it has no CN).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the CA certificate expires. Leaf certificates never outlive it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Issues a leaf certificate with a new ECDSA P-256 key.
    ///
    /// The certificate is `CA:false`, key usage `digitalSignature`, the EKUs of
    /// [`CertificateRequest::usage`], and carries an authority key identifier. Its end of
    /// validity is clamped to the CA's, since a chain is only as valid as its CA.
    pub fn issue(&self, req: &CertificateRequest) -> Result<IssuedCertificate> {
        let cn = &req.common_name;
        let invalid = |reason: String| Error::InvalidRequest {
            common_name: cn.clone(),
            reason,
        };
        if cn.trim().is_empty() {
            return Err(invalid("the common name is empty".to_owned()));
        }
        if req.usage.server_auth() && req.dns_names.is_empty() && req.ip_addresses.is_empty() {
            // webpki verifies server names against SANs only (never the CN), so such a
            // certificate could never be used by a server.
            return Err(invalid(
                "a server certificate needs at least one DNS name or IP address".to_owned(),
            ));
        }
        if SystemTime::now() >= self.not_after {
            return Err(Error::NotCa {
                subject: self.subject.clone(),
                reason: "the CA certificate has expired".to_owned(),
            });
        }

        let mut sans = Vec::new();
        for dns in &req.dns_names {
            let name = Ia5String::try_from(dns.as_str())
                .map_err(|e| invalid(format!("DNS name {dns:?}: {e}")))?;
            if dns.is_empty() || dns.contains(char::is_whitespace) {
                return Err(invalid(format!("DNS name {dns:?} is not a host name")));
            }
            sans.push(SanType::DnsName(name));
        }
        sans.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));
        for uri in &req.uris {
            if !uri.contains(':') || uri.contains(char::is_whitespace) {
                return Err(invalid(format!("URI {uri:?} is not an absolute URI")));
            }
            let value = Ia5String::try_from(uri.as_str())
                .map_err(|e| invalid(format!("URI {uri:?}: {e}")))?;
            sans.push(SanType::URI(value));
        }

        let (start, mut end) = validity_window(cn, req.not_before, req.validity)?;
        let ca_end = OffsetDateTime::from(self.not_after);
        if end > ca_end {
            end = ca_end;
        }
        if end <= start {
            return Err(invalid(
                "the requested validity starts after the CA certificate expires".to_owned(),
            ));
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(cn);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = Vec::new();
        if req.usage.server_auth() {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if req.usage.client_auth() {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = start;
        params.not_after = end;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::KeyGeneration)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Signing {
                common_name: cn.clone(),
                source,
            })?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_before: start.into(),
            not_after: end.into(),
        })
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "LogCluster");
    dn
}

/// Computes `[not_before, not_after]` with whole seconds (what X.509 encodes), so the times we
/// return are exactly the ones in the certificate.
fn validity_window(
    common_name: &str,
    not_before: Option<SystemTime>,
    validity: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let invalid = |reason: &str| Error::InvalidRequest {
        common_name: common_name.to_owned(),
        reason: reason.to_owned(),
    };
    if validity.is_zero() {
        return Err(invalid("the validity is zero"));
    }
    let anchor = OffsetDateTime::from(not_before.unwrap_or_else(SystemTime::now));
    let start = match not_before {
        Some(_) => anchor,
        None => anchor - CLOCK_SKEW_ALLOWANCE,
    };
    let end = anchor
        .checked_add(
            time::Duration::try_from(validity).map_err(|_| invalid("the validity is too long"))?,
        )
        .ok_or_else(|| invalid("the validity is too long"))?;
    if end.year() > 9999 {
        return Err(invalid("the validity ends after the year 9999"));
    }
    let whole = |t: OffsetDateTime| t.replace_nanosecond(0).map_err(|_| invalid("bad time"));
    Ok((whole(start)?, whole(end)?))
}

fn check_is_ca(x509: &X509Certificate<'_>, subject: &str) -> Result<()> {
    let not_ca = |reason: &str| Error::NotCa {
        subject: subject.to_owned(),
        reason: reason.to_owned(),
    };
    match x509.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(not_ca("basic constraints do not say CA:true")),
        Err(e) => return Err(not_ca(&format!("unreadable basic constraints: {e}"))),
    }
    match x509.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            Err(not_ca("the key usage extension does not allow keyCertSign"))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(not_ca(&format!("unreadable key usage: {e}"))),
    }
}
