//! `logctl certs`: a small PKI for LogCluster (what `cfssl` did for proglog).
//!
//! ```text
//! logctl certs init                                   # CA in ./certs (ca.pem, ca-key.pem)
//! logctl certs issue-node --name lc-0 --dns lc-0.lc-nodes.default.svc --ip 10.0.0.5
//! logctl certs issue-client --name alice              # CN "alice" is the ACL subject
//! logctl certs inspect certs/alice.pem
//! ```

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use logcluster_certs::{
    CertificateAuthority, CertificateInfo, CertificateRequest, IssuedCertificate, inspect,
    read_file, write_pem_files,
};

/// Certificates whose remaining validity is below this are reported as due for renewal.
const RENEWAL_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// File stem of the CA in the certificate directory (`ca.pem`, `ca-key.pem`).
const CA_NAME: &str = "ca";

/// Create a CA and issue node and client certificates.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a new certificate authority (ca.pem, ca-key.pem) in --dir.
    ///
    /// Refuses to replace an existing CA unless --force is given: every certificate the old CA
    /// issued stops being trusted once nodes load the new one.
    Init {
        /// Directory for the PEM files (created with mode 0700 if missing).
        #[arg(long, env = "LOGCLUSTER_CERTS_DIR", default_value = "./certs")]
        dir: PathBuf,
        /// Common name of the CA certificate.
        #[arg(long, default_value = "LogCluster CA")]
        ca_name: String,
        /// How long the CA is valid (e.g. 10y, 3650d).
        #[arg(long, default_value = "10y", value_parser = parse_duration)]
        validity: Duration,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },

    /// Issue a node certificate (server and client auth: nodes also dial their peers).
    ///
    /// Writes <name>.pem and <name>-key.pem (mode 0600), signed by the CA in --dir. Clients
    /// verify the node by its DNS names and IP addresses, so list every name it is dialed by.
    IssueNode {
        /// Directory holding the CA and receiving the new files.
        #[arg(long, env = "LOGCLUSTER_CERTS_DIR", default_value = "./certs")]
        dir: PathBuf,
        /// Certificate common name and file name, e.g. lc-0.
        #[arg(long)]
        name: String,
        /// DNS subject alternative name (repeatable), e.g.
        /// lc-0.lc-nodes.default.svc.cluster.local.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// IP subject alternative name (repeatable), e.g. 127.0.0.1.
        #[arg(long = "ip", value_name = "ADDR")]
        ip: Vec<IpAddr>,
        /// How long the certificate is valid (e.g. 90d, 1y); never beyond the CA's expiry.
        #[arg(long, default_value = "1y", value_parser = parse_duration)]
        validity: Duration,
    },

    /// Issue a client certificate (client auth only) for a user, the operator or logctl.
    ///
    /// The name is the certificate's CN, which is the subject in the casbin policy
    /// (e.g. "p, alice, *, produce"). Writes <name>.pem and <name>-key.pem (mode 0600).
    IssueClient {
        /// Directory holding the CA and receiving the new files.
        #[arg(long, env = "LOGCLUSTER_CERTS_DIR", default_value = "./certs")]
        dir: PathBuf,
        /// Common name = ACL subject = file name, e.g. alice.
        #[arg(long)]
        name: String,
        /// How long the certificate is valid (e.g. 90d, 1y); never beyond the CA's expiry.
        #[arg(long, default_value = "1y", value_parser = parse_duration)]
        validity: Duration,
    },

    /// Show what a certificate says: subject, SANs, usages, validity, and whether it has
    /// expired or expires within 30 days.
    Inspect {
        /// PEM certificate file (the first certificate in it is shown).
        file: PathBuf,
    },
}

/// Why a validity flag did not parse.
#[derive(Debug, thiserror::Error)]
enum DurationFlagError {
    #[error(transparent)]
    NotADuration(#[from] humantime::DurationError),
    #[error("must be longer than zero")]
    Zero,
}

fn parse_duration(text: &str) -> Result<Duration, DurationFlagError> {
    let duration = humantime::parse_duration(text)?;
    if duration.is_zero() {
        return Err(DurationFlagError::Zero);
    }
    Ok(duration)
}

/// Runs a `logctl certs` subcommand, printing to stdout.
pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    let mut out = crate::output::stdout();
    run_with_output(cmd, &mut out, SystemTime::now())
}

/// Runs a subcommand writing its report to `out`, judging expiry at `now`.
pub fn run_with_output(
    cmd: CertsCommand,
    out: &mut dyn Write,
    now: SystemTime,
) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init {
            dir,
            ca_name,
            validity,
            force,
        } => init(&dir, &ca_name, validity, force, out),
        CertsCommand::IssueNode {
            dir,
            name,
            dns,
            ip,
            validity,
        } => {
            let req = CertificateRequest::node(name.clone(), dns, ip, validity);
            issue(&dir, &name, &req, out)
        }
        CertsCommand::IssueClient {
            dir,
            name,
            validity,
        } => issue(
            &dir,
            &name,
            &CertificateRequest::client(name.clone(), validity),
            out,
        ),
        CertsCommand::Inspect { file } => {
            let pem = read_file(&file)?;
            let info = inspect(&pem).with_context(|| format!("{}", file.display()))?;
            write_report(&info, now, out)?;
            Ok(())
        }
    }
}

fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{CA_NAME}.pem")),
        dir.join(format!("{CA_NAME}-key.pem")),
    )
}

fn init(
    dir: &Path,
    ca_name: &str,
    validity: Duration,
    force: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (cert_path, key_path) = ca_paths(dir);
    if !force && (cert_path.exists() || key_path.exists()) {
        bail!(
            "a CA already exists in {} ({}); use --force to replace it \
             (certificates issued by the old CA will no longer be trusted)",
            dir.display(),
            cert_path.display()
        );
    }
    let ca = CertificateAuthority::generate(ca_name, validity)?;
    let paths = write_pem_files(dir, CA_NAME, ca.cert_pem(), Some(ca.key_pem()))?;
    writeln!(
        out,
        "created CA {:?}, valid until {}",
        ca_name,
        humantime::format_rfc3339_seconds(ca.not_after())
    )?;
    writeln!(out, "  certificate: {}", paths.cert.display())?;
    if let Some(key) = &paths.key {
        writeln!(
            out,
            "  private key: {} (mode 0600, keep it secret)",
            key.display()
        )?;
    }
    Ok(())
}

fn load_ca(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    let (cert_path, key_path) = ca_paths(dir);
    if !cert_path.exists() {
        bail!(
            "no CA in {} ({} is missing); create one with `logctl certs init --dir {}`",
            dir.display(),
            cert_path.display(),
            dir.display()
        );
    }
    let cert = read_file(&cert_path)?;
    let key = read_file(&key_path)?;
    CertificateAuthority::from_pem(&cert, &key).with_context(|| {
        format!(
            "loading the CA from {} and {}",
            cert_path.display(),
            key_path.display()
        )
    })
}

fn issue(
    dir: &Path,
    name: &str,
    req: &CertificateRequest,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if name == CA_NAME {
        bail!("the name {CA_NAME:?} is reserved for the CA's own files");
    }
    let ca = load_ca(dir)?;
    let issued: IssuedCertificate = ca.issue(req)?;
    let paths = write_pem_files(dir, name, &issued.cert_pem, Some(&issued.key_pem))?;
    writeln!(
        out,
        "issued {:?} ({}), valid until {}",
        name,
        usage_text(req.usage.server_auth(), req.usage.client_auth()),
        humantime::format_rfc3339_seconds(issued.not_after)
    )?;
    writeln!(out, "  certificate: {}", paths.cert.display())?;
    if let Some(key) = &paths.key {
        writeln!(out, "  private key: {} (mode 0600)", key.display())?;
    }
    Ok(())
}

fn usage_text(server_auth: bool, client_auth: bool) -> &'static str {
    match (server_auth, client_auth) {
        (true, true) => "server auth, client auth",
        (true, false) => "server auth",
        (false, true) => "client auth",
        (false, false) => "neither server nor client auth",
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// A remaining lifetime as "89d 23h" (or "5h 12m" under a day); humantime would say
/// "2months 29days 2h 52m 48s".
fn remaining_text(d: Duration) -> String {
    let minutes = (d.as_secs() + 30) / 60;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else {
        format!("{hours}h {minutes}m")
    }
}

fn write_report(
    info: &CertificateInfo,
    now: SystemTime,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let ips: Vec<String> = info.ip_addresses.iter().map(ToString::to_string).collect();
    writeln!(out, "subject:      {}", info.subject)?;
    writeln!(
        out,
        "common name:  {}",
        info.subject_common_name.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "issuer:       {}", info.issuer)?;
    writeln!(out, "serial:       {}", info.serial_hex)?;
    writeln!(
        out,
        "CA:           {}",
        if info.is_ca { "yes" } else { "no" }
    )?;
    writeln!(
        out,
        "usages:       {}",
        usage_text(info.server_auth, info.client_auth)
    )?;
    writeln!(out, "DNS names:    {}", list(&info.dns_names))?;
    writeln!(out, "IP addresses: {}", list(&ips))?;
    writeln!(out, "URIs:         {}", list(&info.uris))?;
    writeln!(
        out,
        "not before:   {}",
        humantime::format_rfc3339_seconds(info.not_before)
    )?;
    writeln!(
        out,
        "not after:    {}",
        humantime::format_rfc3339_seconds(info.not_after)
    )?;
    let status = if info.is_expired_at(now) {
        format!(
            "EXPIRED on {}",
            humantime::format_rfc3339_seconds(info.not_after)
        )
    } else if info.is_not_yet_valid_at(now) {
        format!(
            "NOT YET VALID: valid from {}",
            humantime::format_rfc3339_seconds(info.not_before)
        )
    } else {
        let left = info.remaining_at(now).unwrap_or_default();
        if info.expires_within(RENEWAL_WINDOW, now) {
            format!(
                "EXPIRES SOON: in {} (within 30 days; renew it)",
                remaining_text(left)
            )
        } else {
            format!("valid, expires in {}", remaining_text(left))
        }
    };
    writeln!(out, "status:       {status}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use clap::{CommandFactory, Parser};

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// `logctl certs …` as the binary will mount it.
    #[derive(Debug, Parser)]
    #[command(name = "logctl-certs")]
    struct Cli {
        #[command(subcommand)]
        cmd: CertsCommand,
    }

    fn parse(args: &[&str]) -> CertsCommand {
        Cli::try_parse_from(std::iter::once("logctl-certs").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    fn run_ok(cmd: CertsCommand) -> String {
        let mut out = Vec::new();
        run_with_output(cmd, &mut out, SystemTime::now()).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn run_err(cmd: CertsCommand) -> String {
        let mut out = Vec::new();
        format!(
            "{:#}",
            run_with_output(cmd, &mut out, SystemTime::now()).unwrap_err()
        )
    }

    fn dir_arg(dir: &Path) -> String {
        dir.display().to_string()
    }

    #[test]
    fn remaining_lifetimes_read_in_days_and_hours() {
        assert_eq!(remaining_text(90 * DAY), "90d 0h");
        assert_eq!(
            remaining_text(DAY + Duration::from_secs(5 * 3600 + 60)),
            "1d 5h"
        );
        assert_eq!(
            remaining_text(Duration::from_secs(3 * 3600 + 25 * 60)),
            "3h 25m"
        );
    }

    #[test]
    fn command_line_is_well_formed_with_documented_defaults() {
        Cli::command().debug_assert();
        match parse(&["init"]) {
            CertsCommand::Init {
                dir,
                ca_name,
                validity,
                force,
            } => {
                assert_eq!(dir, PathBuf::from("./certs"));
                assert_eq!(ca_name, "LogCluster CA");
                assert!(
                    validity >= 3650 * DAY && validity <= 3653 * DAY,
                    "{validity:?}"
                );
                assert!(!force);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "issue-node",
            "--name",
            "lc-0",
            "--dns",
            "a.example",
            "--dns",
            "b.example",
            "--ip",
            "127.0.0.1",
            "--ip",
            "::1",
            "--validity",
            "90d",
        ]) {
            CertsCommand::IssueNode {
                name,
                dns,
                ip,
                validity,
                ..
            } => {
                assert_eq!(name, "lc-0");
                assert_eq!(dns, vec!["a.example", "b.example"]);
                assert_eq!(ip.len(), 2);
                assert_eq!(validity, 90 * DAY);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["x", "issue-client", "--name", "a", "--validity", "0s"]).is_err()
        );
        assert!(Cli::try_parse_from(["x", "issue-node", "--name", "a", "--ip", "nope"]).is_err());
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("issue-client"), "{help}");
    }

    #[test]
    fn init_creates_a_ca_and_refuses_to_overwrite_it_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let init = |force: bool| CertsCommand::Init {
            dir: dir.clone(),
            ca_name: "Test CA".to_owned(),
            validity: 365 * DAY,
            force,
        };
        let report = run_ok(init(false));
        assert!(report.contains("created CA \"Test CA\""), "{report}");
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let info = inspect(&ca_pem).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.subject_common_name.as_deref(), Some("Test CA"));
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.join("ca-key.pem")), 0o600);
        assert_eq!(mode(dir.clone()), 0o700);

        let err = run_err(init(false));
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(dir.join("ca.pem")).unwrap(), ca_pem);

        run_ok(init(true));
        assert_ne!(std::fs::read_to_string(dir.join("ca.pem")).unwrap(), ca_pem);
    }

    #[test]
    fn issued_node_and_client_certificates_are_inspectable() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dir_arg(tmp.path());
        run_ok(parse(&["init", "--dir", &d]));

        let report = run_ok(parse(&[
            "issue-node",
            "--dir",
            &d,
            "--name",
            "lc-0",
            "--dns",
            "lc-0.lc-nodes.default.svc",
            "--ip",
            "127.0.0.1",
            "--validity",
            "90d",
        ]));
        assert!(report.contains("server auth, client auth"), "{report}");
        assert_eq!(
            std::fs::metadata(tmp.path().join("lc-0-key.pem"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let node = run_ok(parse(&["inspect", &dir_arg(&tmp.path().join("lc-0.pem"))]));
        assert!(node.contains("common name:  lc-0"), "{node}");
        assert!(
            node.contains("DNS names:    lc-0.lc-nodes.default.svc"),
            "{node}"
        );
        assert!(node.contains("IP addresses: 127.0.0.1"), "{node}");
        assert!(
            node.contains("usages:       server auth, client auth"),
            "{node}"
        );
        assert!(node.contains("issuer:       CN=LogCluster CA"), "{node}");
        // 90 days minus the few seconds since issuing, rounded to the minute.
        assert!(
            node.contains("status:       valid, expires in 90d 0h")
                || node.contains("status:       valid, expires in 89d 23h"),
            "{node}"
        );

        run_ok(parse(&["issue-client", "--dir", &d, "--name", "alice"]));
        let client = run_ok(parse(&["inspect", &dir_arg(&tmp.path().join("alice.pem"))]));
        assert!(client.contains("common name:  alice"), "{client}");
        assert!(client.contains("usages:       client auth"), "{client}");
        assert!(client.contains("DNS names:    -"), "{client}");
        assert!(client.contains("CA:           no"), "{client}");
    }

    #[test]
    fn inspect_flags_expired_soon_expiring_and_future_certificates() {
        let ca = CertificateAuthority::generate("CA", 365 * DAY).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let cases = [
            (
                "old",
                CertificateRequest::client("old", DAY).with_not_before(now - 3 * DAY),
                "EXPIRED on",
            ),
            (
                "soon",
                CertificateRequest::client("soon", 10 * DAY),
                "EXPIRES SOON",
            ),
            (
                "later",
                CertificateRequest::client("later", DAY).with_not_before(now + 2 * DAY),
                "NOT YET VALID",
            ),
            (
                "fine",
                CertificateRequest::client("fine", 100 * DAY),
                "status:       valid",
            ),
        ];
        for (name, req, expected) in cases {
            let issued = ca.issue(&req).unwrap();
            let paths = write_pem_files(tmp.path(), name, &issued.cert_pem, None).unwrap();
            let mut out = Vec::new();
            run_with_output(CertsCommand::Inspect { file: paths.cert }, &mut out, now).unwrap();
            let report = String::from_utf8(out).unwrap();
            assert!(report.contains(expected), "{name}: {report}");
        }
    }

    #[test]
    fn issuing_without_a_ca_or_with_bad_input_explains_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dir_arg(tmp.path());
        let err = run_err(parse(&["issue-client", "--dir", &d, "--name", "alice"]));
        assert!(err.contains("logctl certs init"), "{err}");

        run_ok(parse(&["init", "--dir", &d]));
        let err = run_err(parse(&["issue-node", "--dir", &d, "--name", "lc-0"]));
        assert!(err.contains("DNS name or IP"), "{err}");
        let err = run_err(parse(&["issue-client", "--dir", &d, "--name", "ca"]));
        assert!(err.contains("reserved"), "{err}");
        let err = run_err(parse(&["issue-client", "--dir", &d, "--name", "../escape"]));
        assert!(err.contains("plain file name"), "{err}");

        // A CA key that does not belong to the CA certificate is reported with both files.
        let other = CertificateAuthority::generate("other", DAY).unwrap();
        std::fs::write(tmp.path().join("ca-key.pem"), other.key_pem()).unwrap();
        let err = run_err(parse(&["issue-client", "--dir", &d, "--name", "bob"]));
        assert!(
            err.contains("ca-key.pem") && err.contains("does not match"),
            "{err}"
        );

        let err = run_err(parse(&[
            "inspect",
            &dir_arg(&tmp.path().join("missing.pem")),
        ]));
        assert!(err.contains("missing.pem"), "{err}");
    }
}
