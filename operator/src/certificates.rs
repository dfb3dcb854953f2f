//! Certificates: the cluster CA (operator-managed or user-supplied), the shared node certificate,
//! the operator's client certificate and one client certificate per ACL user — issued when
//! missing, re-issued when their names or CA changed, renewed `renewBefore` ahead of expiry.
//!
//! The decisions are pure functions of what the Secrets hold and the clock ([`decide_leaf`]);
//! [`ensure_certificates`] applies them. Nodes read the renewed files from their Secret volume
//! (the kubelet updates it in place), so renewals need no restart.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use logcluster_certs::{CertificateAuthority, CertificateRequest, Usage};

use crate::crd::{CertificateStatus, LogCluster, TlsSpec};
use crate::resources::names::{
    CERTIFICATE_LABEL, CLUSTER_LABEL, ClusterNames, FIELD_MANAGER, USER_LABEL, node_dns_names,
};
use crate::resources::secrets::{self, CertificateKind, text_value};
use crate::units::go_duration;
use crate::{Error, Result};

/// Validity of an operator-managed CA. Long, because rotating a CA means re-trusting every node
/// and client at once; leaf certificates are what gets renewed routinely.
pub const MANAGED_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Validity and renewal window of leaf certificates (`spec.tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificatePolicy {
    /// Validity of a new certificate.
    pub validity: Duration,
    /// Renew this long before expiry.
    pub renew_before: Duration,
}

impl CertificatePolicy {
    /// Parses `spec.tls`.
    pub fn from_spec(tls: &TlsSpec) -> Result<Self> {
        let validity = go_duration("tls.validity", &tls.validity)?;
        let renew_before = go_duration("tls.renewBefore", &tls.renew_before)?;
        if renew_before >= validity {
            // Every fresh certificate would be due at once: an endless renewal loop.
            return Err(Error::InvalidSpec {
                field: "tls.renewBefore",
                reason: "must be shorter than tls.validity".to_owned(),
            });
        }
        Ok(CertificatePolicy {
            validity,
            renew_before,
        })
    }
}

/// What a leaf certificate Secret currently holds.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExistingLeaf {
    /// `ca.crt`.
    pub ca_pem: Option<String>,
    /// `tls.crt`.
    pub cert_pem: Option<String>,
    /// `tls.key` is present and non-empty.
    pub has_key: bool,
}

impl fmt::Debug for ExistingLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExistingLeaf")
            .field("has_ca", &self.ca_pem.is_some())
            .field("has_cert", &self.cert_pem.is_some())
            .field("has_key", &self.has_key)
            .finish()
    }
}

impl ExistingLeaf {
    /// Reads a TLS Secret.
    pub fn from_secret(secret: &Secret) -> Self {
        ExistingLeaf {
            ca_pem: text_value(secret, "ca.crt"),
            cert_pem: text_value(secret, "tls.crt"),
            has_key: secret
                .data
                .as_ref()
                .and_then(|d| d.get("tls.key"))
                .is_some_and(|k| !k.0.is_empty()),
        }
    }
}

/// A leaf certificate the cluster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafWant {
    /// The Secret holding it.
    pub secret_name: String,
    /// Which certificate it is.
    pub kind: CertificateKind,
    /// Subject CN (the ACL subject).
    pub common_name: String,
    /// DNS names it must hold (a superset is fine).
    pub dns_names: Vec<String>,
    /// IP addresses it must hold.
    pub ip_addresses: Vec<IpAddr>,
    /// Extended key usages.
    pub usage: Usage,
}

impl LeafWant {
    fn request(&self, validity: Duration) -> CertificateRequest {
        CertificateRequest {
            common_name: self.common_name.clone(),
            dns_names: self.dns_names.clone(),
            ip_addresses: self.ip_addresses.clone(),
            uris: Vec::new(),
            usage: self.usage,
            validity,
            not_before: None,
        }
    }
}

/// Why a certificate is (re-)issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// The Secret or one of its keys does not exist.
    Missing,
    /// The certificate cannot be parsed.
    Unreadable,
    /// It was issued by another CA (or `ca.crt` differs from the current CA).
    OtherCa,
    /// Its names, CN or usages are not the ones needed now (e.g. after a scale-up).
    Changed,
    /// It is inside the renewal window, or expired.
    RenewalDue,
}

impl IssueReason {
    /// Whether this is a renewal of a certificate that was otherwise fine.
    pub fn is_renewal(self) -> bool {
        matches!(self, IssueReason::RenewalDue)
    }
}

impl fmt::Display for IssueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IssueReason::Missing => "missing",
            IssueReason::Unreadable => "unreadable",
            IssueReason::OtherCa => "issued by another CA",
            IssueReason::Changed => "names or usages changed",
            IssueReason::RenewalDue => "renewal due",
        })
    }
}

/// What to do with one leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafDecision {
    /// The Secret is good; renew it at `renew_at`.
    Keep {
        /// End of validity.
        not_after: SystemTime,
        /// Start of the renewal window; `None` when renewing could not extend the validity
        /// because the CA itself expires first.
        renew_at: Option<SystemTime>,
    },
    /// Issue a new certificate.
    Issue(IssueReason),
}

/// The facts about the CA that leaf decisions need.
#[derive(Debug, Clone, Copy)]
pub struct CaFacts<'a> {
    /// The CA certificate, PEM.
    pub cert_pem: &'a str,
    /// Its end of validity (leaves are clamped to it).
    pub not_after: SystemTime,
}

/// Decides whether a leaf certificate must be (re-)issued at `now`.
pub fn decide_leaf(
    existing: Option<&ExistingLeaf>,
    want: &LeafWant,
    ca: CaFacts<'_>,
    policy: CertificatePolicy,
    now: SystemTime,
) -> LeafDecision {
    let Some(existing) = existing else {
        return LeafDecision::Issue(IssueReason::Missing);
    };
    let (Some(ca_pem), Some(cert_pem), true) =
        (&existing.ca_pem, &existing.cert_pem, existing.has_key)
    else {
        return LeafDecision::Issue(IssueReason::Missing);
    };
    if ca_pem.trim() != ca.cert_pem.trim() {
        return LeafDecision::Issue(IssueReason::OtherCa);
    }
    let Ok(info) = logcluster_certs::inspect(cert_pem) else {
        return LeafDecision::Issue(IssueReason::Unreadable);
    };
    let Ok(ca_info) = logcluster_certs::inspect(ca.cert_pem) else {
        return LeafDecision::Issue(IssueReason::Unreadable);
    };
    if info.issuer != ca_info.subject {
        return LeafDecision::Issue(IssueReason::OtherCa);
    }
    let names_ok = info.subject_common_name.as_deref() == Some(want.common_name.as_str())
        && want.dns_names.iter().all(|d| info.dns_names.contains(d))
        && want
            .ip_addresses
            .iter()
            .all(|ip| info.ip_addresses.contains(ip))
        && info.server_auth == want.usage.server_auth()
        && info.client_auth == want.usage.client_auth();
    if !names_ok {
        return LeafDecision::Issue(IssueReason::Changed);
    }
    // A renewal only helps when the new certificate would outlive the current one; when the CA
    // expires first, re-issuing on every reconcile would just churn Secrets.
    let best_possible = (now + policy.validity).min(ca.not_after);
    let renewal_helps = best_possible > info.not_after;
    let renew_at = info
        .not_after
        .checked_sub(policy.renew_before)
        .unwrap_or(info.not_before);
    if renewal_helps && now >= renew_at {
        return LeafDecision::Issue(IssueReason::RenewalDue);
    }
    LeafDecision::Keep {
        not_after: info.not_after,
        renew_at: renewal_helps.then_some(renew_at),
    }
}

/// The leaf certificates a cluster needs, for a StatefulSet of up to `pods` pods.
pub fn wanted_leaves(lc: &LogCluster, names: &ClusterNames, pods: u32) -> Vec<LeafWant> {
    let mut leaves = vec![
        LeafWant {
            secret_name: names.node_tls_secret(),
            kind: CertificateKind::Node,
            common_name: "node".to_owned(),
            dns_names: node_dns_names(names, pods),
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            usage: Usage::ServerAndClient,
        },
        LeafWant {
            secret_name: names.operator_tls_secret(),
            kind: CertificateKind::Operator,
            common_name: "operator".to_owned(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage: Usage::Client,
        },
    ];
    for user in &lc.spec.acl.users {
        leaves.push(LeafWant {
            secret_name: names.user_secret(&user.name),
            kind: CertificateKind::User(user.name.clone()),
            common_name: user.name.clone(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage: Usage::Client,
        });
    }
    leaves
}

/// The operator's client identity for one cluster: what it dials the nodes' admin API with.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA the nodes' certificates chain to.
    pub ca_pem: String,
    /// The operator's certificate (CN `operator`).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl fmt::Debug for ClientTls {
    // NB: never print private keys, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A certificate issued during this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRecord {
    /// Its Secret.
    pub secret_name: String,
    /// Why.
    pub reason: IssueReason,
    /// Its new end of validity.
    pub not_after: SystemTime,
}

/// What [`ensure_certificates`] did and found.
#[derive(Debug, Clone)]
pub struct CertificatesOutcome {
    /// The operator's client identity.
    pub client: ClientTls,
    /// One entry per certificate, for `status.certificates` and the expiry metric.
    pub statuses: Vec<(CertificateStatus, SystemTime)>,
    /// Certificates issued now.
    pub issued: Vec<IssuedRecord>,
    /// The operator created a new CA now.
    pub ca_generated: bool,
    /// Earliest renewal time, to requeue for.
    pub next_renewal: Option<SystemTime>,
    /// Certificates that cannot be renewed any more because the CA expires first.
    pub limited_by_ca: Vec<String>,
}

/// RFC 3339 text of a time (for status fields).
pub fn rfc3339(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

fn secret_error(names: &ClusterNames, name: &str, reason: impl Into<String>) -> Error {
    Error::BadSecret {
        namespace: names.namespace.clone(),
        name: name.to_owned(),
        reason: reason.into(),
    }
}

async fn apply_secret(api: &Api<Secret>, secret: &Secret) -> Result<()> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(secret),
    )
    .await
    .map_err(|e| Error::kube(format!("applying Secret {name}"), e))?;
    Ok(())
}

async fn get_secret(api: &Api<Secret>, name: &str) -> Result<Option<Secret>> {
    api.get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {name}"), e))
}

/// Loads the CA (creating the managed one when it does not exist yet).
async fn ensure_ca(
    api: &Api<Secret>,
    lc: &LogCluster,
    names: &ClusterNames,
) -> Result<(CertificateAuthority, String, bool)> {
    let (secret_name, managed) = match &lc.spec.tls.ca_secret_name {
        Some(name) => (name.clone(), false),
        None => (names.ca_secret(), true),
    };
    let existing = get_secret(api, &secret_name).await?;
    let Some(secret) = existing else {
        if !managed {
            return Err(secret_error(
                names,
                &secret_name,
                "not found (spec.tls.caSecretName)",
            ));
        }
        let ca = CertificateAuthority::generate(
            &format!("LogCluster {}/{} CA", names.namespace, names.cluster),
            MANAGED_CA_VALIDITY,
        )
        .map_err(|source| Error::Certificate {
            what: format!("CA for {}/{}", names.namespace, names.cluster),
            source,
        })?;
        apply_secret(
            api,
            &secrets::ca_secret(lc, names, ca.cert_pem(), ca.key_pem())?,
        )
        .await?;
        return Ok((ca, secret_name, true));
    };
    let cert = text_value(&secret, "tls.crt")
        .ok_or_else(|| secret_error(names, &secret_name, "has no tls.crt"))?;
    let key = text_value(&secret, "tls.key")
        .ok_or_else(|| secret_error(names, &secret_name, "has no tls.key"))?;
    // NB: an unreadable managed CA is an error, not a reason to generate a new one: a new CA
    // would silently cut every node and client off until all of them trust it.
    let ca = CertificateAuthority::from_pem(&cert, &key).map_err(|source| Error::Certificate {
        what: format!("CA in Secret {}/{secret_name}", names.namespace),
        source,
    })?;
    Ok((ca, secret_name, false))
}

/// Makes every certificate Secret of `lc` current: see the module documentation. `pods` is the
/// largest number of pods the StatefulSet may have (the node certificate names each of them).
pub async fn ensure_certificates(
    api: &Api<Secret>,
    lc: &LogCluster,
    names: &ClusterNames,
    pods: u32,
    now: SystemTime,
) -> Result<CertificatesOutcome> {
    let policy = CertificatePolicy::from_spec(&lc.spec.tls)?;
    let (ca, ca_secret, ca_generated) = ensure_ca(api, lc, names).await?;
    let ca_facts = CaFacts {
        cert_pem: ca.cert_pem(),
        not_after: ca.not_after(),
    };
    let mut outcome = CertificatesOutcome {
        client: ClientTls {
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem: String::new(),
            key_pem: String::new(),
        },
        statuses: vec![(
            CertificateStatus {
                secret_name: ca_secret,
                common_name: ca.subject().to_owned(),
                not_after: rfc3339(ca.not_after()),
                renew_after: None,
            },
            ca.not_after(),
        )],
        issued: Vec::new(),
        ca_generated,
        next_renewal: None,
        limited_by_ca: Vec::new(),
    };

    for want in wanted_leaves(lc, names, pods) {
        let secret = get_secret(api, &want.secret_name).await?;
        let existing = secret.as_ref().map(ExistingLeaf::from_secret);
        let (not_after, renew_at) =
            match decide_leaf(existing.as_ref(), &want, ca_facts, policy, now) {
                LeafDecision::Keep {
                    not_after,
                    renew_at,
                } => {
                    if want.kind == CertificateKind::Operator
                        && let Some(secret) = &secret
                    {
                        // decide_leaf checked both are present.
                        outcome.client.cert_pem = text_value(secret, "tls.crt").unwrap_or_default();
                        outcome.client.key_pem = text_value(secret, "tls.key").unwrap_or_default();
                    }
                    (not_after, renew_at)
                }
                LeafDecision::Issue(reason) => {
                    let issued = ca.issue(&want.request(policy.validity)).map_err(|source| {
                        Error::Certificate {
                            what: format!(
                                "{} in {}/{}",
                                want.common_name, names.namespace, want.secret_name
                            ),
                            source,
                        }
                    })?;
                    let secret = secrets::leaf_secret(
                        lc,
                        names,
                        want.secret_name.clone(),
                        &want.kind,
                        ca.cert_pem(),
                        &issued.cert_pem,
                        &issued.key_pem,
                    )?;
                    apply_secret(api, &secret).await?;
                    if want.kind == CertificateKind::Operator {
                        outcome.client.cert_pem = issued.cert_pem.clone();
                        outcome.client.key_pem = issued.key_pem.clone();
                    }
                    outcome.issued.push(IssuedRecord {
                        secret_name: want.secret_name.clone(),
                        reason,
                        not_after: issued.not_after,
                    });
                    let renew_at = issued.not_after.checked_sub(policy.renew_before);
                    (issued.not_after, renew_at)
                }
            };
        match renew_at {
            Some(at) => {
                outcome.next_renewal = Some(outcome.next_renewal.map_or(at, |n| n.min(at)));
            }
            None => outcome.limited_by_ca.push(want.secret_name.clone()),
        }
        outcome.statuses.push((
            CertificateStatus {
                secret_name: want.secret_name.clone(),
                common_name: want.common_name.clone(),
                not_after: rfc3339(not_after),
                renew_after: renew_at.map(rfc3339),
            },
            not_after,
        ));
    }
    remove_stale_user_secrets(api, lc, names).await?;
    Ok(outcome)
}

/// Deletes the certificate Secrets of users no longer in `spec.acl` (the ACL already denies
/// them; deleting the key is the other half of revoking).
async fn remove_stale_user_secrets(
    api: &Api<Secret>,
    lc: &LogCluster,
    names: &ClusterNames,
) -> Result<()> {
    let wanted: BTreeSet<&str> = lc.spec.acl.users.iter().map(|u| u.name.as_str()).collect();
    let selector = format!("{CLUSTER_LABEL}={},{CERTIFICATE_LABEL}=user", names.cluster);
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("listing user certificate Secrets", e))?;
    for secret in list.items {
        let user = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(USER_LABEL))
            .map(String::as_str)
            .unwrap_or_default();
        let Some(name) = secret.metadata.name.as_deref() else {
            continue;
        };
        if !wanted.contains(user) {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::kube(format!("deleting Secret {name}"), e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy() -> CertificatePolicy {
        CertificatePolicy {
            validity: 90 * 24 * HOUR,
            renew_before: 30 * 24 * HOUR,
        }
    }

    fn node_want(dns: &[&str]) -> LeafWant {
        LeafWant {
            secret_name: "demo-node-tls".into(),
            kind: CertificateKind::Node,
            common_name: "node".into(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            usage: Usage::ServerAndClient,
        }
    }

    fn issue(ca: &CertificateAuthority, want: &LeafWant, validity: Duration) -> ExistingLeaf {
        let cert = ca.issue(&want.request(validity)).unwrap();
        ExistingLeaf {
            ca_pem: Some(ca.cert_pem().to_owned()),
            cert_pem: Some(cert.cert_pem),
            has_key: true,
        }
    }

    fn facts(ca: &CertificateAuthority) -> CaFacts<'_> {
        CaFacts {
            cert_pem: ca.cert_pem(),
            not_after: ca.not_after(),
        }
    }

    #[test]
    fn policy_refuses_a_window_as_long_as_the_validity() {
        let tls = TlsSpec {
            validity: "1h".into(),
            renew_before: "1h".into(),
            ..TlsSpec::default()
        };
        assert!(CertificatePolicy::from_spec(&tls).is_err());
        let defaults = CertificatePolicy::from_spec(&TlsSpec::default()).unwrap();
        assert_eq!(defaults, policy());
    }

    #[test]
    fn missing_or_partial_secrets_are_issued() {
        let ca = CertificateAuthority::generate("ca", 365 * 24 * HOUR).unwrap();
        let want = node_want(&["a"]);
        let now = SystemTime::now();
        assert_eq!(
            decide_leaf(None, &want, facts(&ca), policy(), now),
            LeafDecision::Issue(IssueReason::Missing)
        );
        let mut partial = issue(&ca, &want, policy().validity);
        partial.has_key = false;
        assert_eq!(
            decide_leaf(Some(&partial), &want, facts(&ca), policy(), now),
            LeafDecision::Issue(IssueReason::Missing)
        );
        let garbage = ExistingLeaf {
            ca_pem: Some(ca.cert_pem().to_owned()),
            cert_pem: Some("not a certificate".into()),
            has_key: true,
        };
        assert_eq!(
            decide_leaf(Some(&garbage), &want, facts(&ca), policy(), now),
            LeafDecision::Issue(IssueReason::Unreadable)
        );
    }

    #[test]
    fn a_fresh_certificate_is_kept_until_its_renewal_window() {
        let ca = CertificateAuthority::generate("ca", 365 * 24 * HOUR).unwrap();
        let want = node_want(&["a", "b"]);
        let existing = issue(&ca, &want, policy().validity);
        let now = SystemTime::now();
        let LeafDecision::Keep {
            not_after,
            renew_at,
        } = decide_leaf(Some(&existing), &want, facts(&ca), policy(), now)
        else {
            panic!("a fresh certificate was not kept");
        };
        let renew_at = renew_at.expect("renewable");
        assert_eq!(
            not_after.duration_since(renew_at).unwrap(),
            policy().renew_before
        );
        // Inside the window it is renewed; just before it, it is not.
        assert_eq!(
            decide_leaf(Some(&existing), &want, facts(&ca), policy(), renew_at),
            LeafDecision::Issue(IssueReason::RenewalDue)
        );
        assert!(matches!(
            decide_leaf(
                Some(&existing),
                &want,
                facts(&ca),
                policy(),
                renew_at - Duration::from_secs(1)
            ),
            LeafDecision::Keep { .. }
        ));
        // Expired certificates are renewal cases too.
        assert_eq!(
            decide_leaf(
                Some(&existing),
                &want,
                facts(&ca),
                policy(),
                not_after + HOUR
            ),
            LeafDecision::Issue(IssueReason::RenewalDue)
        );
    }

    #[test]
    fn new_pod_names_force_a_new_node_certificate_but_fewer_do_not() {
        let ca = CertificateAuthority::generate("ca", 365 * 24 * HOUR).unwrap();
        let existing = issue(&ca, &node_want(&["p0", "p1", "p2"]), policy().validity);
        let now = SystemTime::now();
        assert!(matches!(
            decide_leaf(
                Some(&existing),
                &node_want(&["p0", "p1"]),
                facts(&ca),
                policy(),
                now
            ),
            LeafDecision::Keep { .. }
        ));
        assert_eq!(
            decide_leaf(
                Some(&existing),
                &node_want(&["p0", "p1", "p2", "p3"]),
                facts(&ca),
                policy(),
                now
            ),
            LeafDecision::Issue(IssueReason::Changed)
        );
    }

    #[test]
    fn a_client_certificate_is_not_accepted_where_a_node_certificate_is_needed() {
        let ca = CertificateAuthority::generate("ca", 365 * 24 * HOUR).unwrap();
        let mut client = node_want(&["a"]);
        client.usage = Usage::Client;
        let existing = issue(&ca, &client, policy().validity);
        assert_eq!(
            decide_leaf(
                Some(&existing),
                &node_want(&["a"]),
                facts(&ca),
                policy(),
                SystemTime::now()
            ),
            LeafDecision::Issue(IssueReason::Changed)
        );
    }

    #[test]
    fn certificates_of_another_ca_are_replaced() {
        let ca = CertificateAuthority::generate("ca", 365 * 24 * HOUR).unwrap();
        let other = CertificateAuthority::generate("ca", 365 * 24 * HOUR).unwrap();
        let want = node_want(&["a"]);
        let foreign = issue(&other, &want, policy().validity);
        assert_eq!(
            decide_leaf(
                Some(&foreign),
                &want,
                facts(&ca),
                policy(),
                SystemTime::now()
            ),
            LeafDecision::Issue(IssueReason::OtherCa)
        );
    }

    #[test]
    fn renewal_stops_when_the_ca_expires_first() {
        // The CA outlives the leaf by less than a renewal would add: re-issuing could not extend
        // the leaf, so it is kept (and reported) instead of being re-issued on every reconcile.
        let ca = CertificateAuthority::generate("ca", 40 * 24 * HOUR).unwrap();
        let want = node_want(&["a"]);
        let existing = issue(&ca, &want, policy().validity);
        let now = SystemTime::now() + HOUR;
        assert_eq!(
            decide_leaf(Some(&existing), &want, facts(&ca), policy(), now),
            LeafDecision::Keep {
                not_after: ca.not_after(),
                renew_at: None
            }
        );
    }

    #[test]
    fn every_user_gets_a_client_certificate_and_the_node_one_names_every_pod() {
        let lc = crate::resources::fixtures::cluster_with(serde_json::json!({
            "acl": {"users": [{"name": "alice", "permissions": ["produce"]}]}
        }));
        let names = ClusterNames::new(&lc, "cluster.local").unwrap();
        let leaves = wanted_leaves(&lc, &names, 5);
        let secrets: Vec<_> = leaves.iter().map(|l| l.secret_name.as_str()).collect();
        assert_eq!(
            secrets,
            ["demo-node-tls", "demo-operator-tls", "demo-user-alice"]
        );
        assert!(
            leaves[0]
                .dns_names
                .contains(&"demo-4.demo-nodes.prod.svc.cluster.local".to_owned())
        );
        assert_eq!(
            (leaves[1].common_name.as_str(), leaves[1].usage),
            ("operator", Usage::Client)
        );
        assert_eq!(
            (leaves[2].common_name.as_str(), leaves[2].usage),
            ("alice", Usage::Client)
        );
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let tls = ClientTls {
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----".into(),
        };
        assert!(!format!("{tls:?}").contains("PRIVATE"));
    }
}
