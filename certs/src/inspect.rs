//! Reading certificates: what a PEM certificate says, for expiry checks and diagnostics.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's first common name, if any.
    pub subject_common_name: Option<String>,
    /// The subject DN as text (`CN=…, O=…`).
    pub subject: String,
    /// The issuer DN as text.
    pub issuer: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// `CA:true` in the basic constraints.
    pub is_ca: bool,
    /// May authenticate a TLS server: `serverAuth` or `anyExtendedKeyUsage` in the EKU, or no
    /// EKU extension at all (which RFC 5280 reads as "no restriction").
    pub server_auth: bool,
    /// May authenticate a TLS client (same rules as `server_auth`, with `clientAuth`).
    pub client_auth: bool,
    /// The serial number, lower-case hex without separators.
    pub serial_hex: String,
}

impl CertificateInfo {
    /// Whether the certificate has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after
    }

    /// Whether the certificate is not yet valid at `now`.
    pub fn is_not_yet_valid_at(&self, now: SystemTime) -> bool {
        now < self.not_before
    }

    /// Whether the certificate is valid at `now` but expires within `window` (renewal due).
    pub fn expires_within(&self, window: Duration, now: SystemTime) -> bool {
        !self.is_expired_at(now) && now + window >= self.not_after
    }

    /// Time left until expiry at `now` (`None` when already expired).
    pub fn remaining_at(&self, now: SystemTime) -> Option<Duration> {
        self.not_after.duration_since(now).ok()
    }
}

/// Describes the first certificate in `cert_pem` (later blocks, e.g. a chain, are ignored).
pub fn inspect(cert_pem: &str) -> Result<CertificateInfo> {
    let what = "certificate";
    let der = first_certificate_der(cert_pem.as_bytes(), what)?;
    let x509 = parse_der(&der, what)?;
    describe(&x509, what)
}

fn describe(x509: &X509Certificate<'_>, what: &str) -> Result<CertificateInfo> {
    let parse_err = |e: x509_parser::error::X509Error| Error::Parse {
        what: what.to_owned(),
        reason: e.to_string(),
    };

    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let mut uris = Vec::new();
    if let Some(san) = x509.subject_alternative_name().map_err(parse_err)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ip_addresses.push(ip);
                    }
                }
                _ => {}
            }
        }
    }

    let (server_auth, client_auth) = match x509.extended_key_usage().map_err(parse_err)? {
        Some(eku) => (
            eku.value.any || eku.value.server_auth,
            eku.value.any || eku.value.client_auth,
        ),
        None => (true, true),
    };
    let is_ca = x509
        .basic_constraints()
        .map_err(parse_err)?
        .is_some_and(|bc| bc.value.ca);

    Ok(CertificateInfo {
        subject_common_name: common_name_of(x509),
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        dns_names,
        ip_addresses,
        uris,
        not_before: system_time(x509.validity().not_before.timestamp()),
        not_after: system_time(x509.validity().not_after.timestamp()),
        is_ca,
        server_auth,
        client_auth,
        serial_hex: x509
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// The first `CERTIFICATE` PEM block's DER bytes.
pub(crate) fn first_certificate_der(pem: &[u8], what: &str) -> Result<Vec<u8>> {
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| Error::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        if block.label == "CERTIFICATE" {
            return Ok(block.contents);
        }
    }
    Err(Error::NoCertificate {
        what: what.to_owned(),
    })
}

/// Parses DER as an X.509 certificate, refusing trailing garbage.
pub(crate) fn parse_der<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>> {
    let parse_err = |reason: String| Error::Parse {
        what: what.to_owned(),
        reason,
    };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| parse_err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(parse_err(format!(
            "{} unexpected bytes after the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

/// The subject's first CN, when it is a readable string.
pub(crate) fn common_name_of(x509: &X509Certificate<'_>) -> Option<String> {
    x509.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// Converts seconds since the Unix epoch (possibly negative) to a `SystemTime`.
pub(crate) fn system_time(unix_seconds: i64) -> SystemTime {
    if unix_seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix_seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs())
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}
