//! Command line of `logcluster-operator`: clap flags, each with a `LOGCLUSTER_OPERATOR_*`
//! environment variable, validated once into an [`OperatorConfig`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::controller::Scope;
use crate::leader_election::LeaseConfig;
use crate::node_client::{AddressResolver, PodDnsResolver, StaticResolver};
use crate::resources::{BuildSettings, default_node_image};
use crate::{Error, Result};

/// Where Kubernetes mounts a pod's namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Flags of `logcluster-operator`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "logcluster-operator",
    version,
    about = "Runs LogCluster resources as StatefulSets of lognode pods",
    long_about = "Runs LogCluster resources as StatefulSets of lognode pods.\n\n\
Every flag can also be set with its LOGCLUSTER_OPERATOR_* environment variable (shown below). \
The Kubernetes connection comes from KUBECONFIG or, inside a pod, its service account."
)]
pub struct OperatorArgs {
    /// Namespaces to watch (comma-separated or repeated). Empty: every namespace (needs a
    /// ClusterRole).
    #[arg(
        long = "namespace",
        env = "LOGCLUSTER_OPERATOR_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Elect a leader through a Lease so that only one replica reconciles (on when running
    /// more than one replica).
    #[arg(
        long,
        env = "LOGCLUSTER_OPERATOR_LEADER_ELECTION",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true"
    )]
    pub leader_election: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "LOGCLUSTER_OPERATOR_LEADER_ELECTION_LEASE_NAME",
        default_value = "logcluster-operator"
    )]
    pub leader_election_lease_name: String,

    /// Namespace of the Lease [default: the operator pod's namespace (POD_NAMESPACE or the
    /// service account's)].
    #[arg(long, env = "LOGCLUSTER_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// This replica's identity in the Lease [default: POD_NAME, else the host name].
    #[arg(long, env = "LOGCLUSTER_OPERATOR_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,

    /// Address of the HTTP endpoints /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "LOGCLUSTER_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,

    /// Log line format.
    #[arg(long, env = "LOGCLUSTER_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter in RUST_LOG syntax (RUST_LOG, when set, wins).
    #[arg(long, env = "LOGCLUSTER_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// lognode image for LogClusters that do not set spec.image.
    #[arg(long, env = "LOGCLUSTER_OPERATOR_DEFAULT_NODE_IMAGE", default_value_t = default_node_image())]
    pub default_node_image: String,

    /// DNS domain of the Kubernetes cluster (pod names in certificates and addresses).
    #[arg(
        long,
        env = "LOGCLUSTER_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// How often a steady LogCluster is reconciled anyway (status refresh, drift repair).
    #[arg(long, env = "LOGCLUSTER_OPERATOR_RESYNC_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,

    /// How often a LogCluster is reconciled while a scaling step is in progress.
    #[arg(long, env = "LOGCLUSTER_OPERATOR_STEP_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub step_interval: Duration,

    /// Timeout of each call to a node's admin API (connecting included).
    #[arg(long, env = "LOGCLUSTER_OPERATOR_ADMIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub admin_timeout: Duration,

    /// Dial a node at an explicit address instead of its pod DNS name:
    /// `namespace/pod=host:port` (comma-separated or repeated). For running the operator outside
    /// the cluster network, e.g. against local lognode processes in tests.
    #[arg(
        long = "node-address",
        env = "LOGCLUSTER_OPERATOR_NODE_ADDRESSES",
        value_delimiter = ','
    )]
    pub node_addresses: Vec<String>,
}

/// Log line format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Clone)]
pub struct OperatorConfig {
    /// Watched namespaces.
    pub scope: Scope,
    /// Leader election, when enabled.
    pub lease: Option<LeaseConfig>,
    /// HTTP endpoints address.
    pub http_addr: SocketAddr,
    /// Builder settings.
    pub settings: BuildSettings,
    /// Resync interval.
    pub resync_interval: Duration,
    /// Step interval.
    pub step_interval: Duration,
    /// Admin call timeout.
    pub admin_timeout: Duration,
    /// How nodes are dialled.
    pub resolver: Arc<dyn AddressResolver>,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl OperatorConfig {
    /// Validates `args`; `env` looks up environment variables (a parameter so tests need not
    /// touch the process environment) and `sa_namespace_file` is where a pod finds its namespace.
    pub fn from_args(
        args: &OperatorArgs,
        env: impl Fn(&str) -> Option<String>,
        sa_namespace_file: &Path,
    ) -> Result<Self> {
        let mut namespaces = Vec::new();
        for ns in &args.namespaces {
            let ns = ns.trim();
            if ns.is_empty() {
                continue;
            }
            if !is_dns_label(ns) {
                return Err(Error::Config(format!(
                    "--namespace {ns:?} is not a namespace name"
                )));
            }
            if !namespaces.iter().any(|n| n == ns) {
                namespaces.push(ns.to_owned());
            }
        }
        let scope = if namespaces.is_empty() {
            Scope::All
        } else {
            Scope::Namespaces(namespaces)
        };

        let lease = if args.leader_election {
            let namespace = args
                .leader_election_namespace
                .clone()
                .or_else(|| env("POD_NAMESPACE"))
                .or_else(|| {
                    std::fs::read_to_string(sa_namespace_file)
                        .ok()
                        .map(|s| s.trim().to_owned())
                })
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    Error::Config(
                        "--leader-election needs --leader-election-namespace (or POD_NAMESPACE, \
                         or to run in a pod)"
                            .to_owned(),
                    )
                })?;
            let identity = args
                .leader_election_identity
                .clone()
                .or_else(|| env("POD_NAME"))
                .or_else(|| env("HOSTNAME"))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    Error::Config(
                        "--leader-election needs --leader-election-identity (or POD_NAME)"
                            .to_owned(),
                    )
                })?;
            if args.leader_election_lease_name.is_empty() {
                return Err(Error::Config(
                    "--leader-election-lease-name is empty".to_owned(),
                ));
            }
            Some(LeaseConfig::new(
                namespace,
                args.leader_election_lease_name.clone(),
                identity,
            ))
        } else {
            None
        };

        if args.cluster_domain.is_empty() || args.cluster_domain.starts_with('.') {
            return Err(Error::Config(format!(
                "--cluster-domain {:?} is not a DNS domain",
                args.cluster_domain
            )));
        }
        if args.default_node_image.trim().is_empty() {
            return Err(Error::Config("--default-node-image is empty".to_owned()));
        }
        for (flag, d) in [
            ("--resync-interval", args.resync_interval),
            ("--step-interval", args.step_interval),
            ("--admin-timeout", args.admin_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("{flag} must be positive")));
            }
        }
        let resolver: Arc<dyn AddressResolver> = if args.node_addresses.is_empty() {
            Arc::new(PodDnsResolver)
        } else {
            let mut r = StaticResolver::new();
            for entry in &args.node_addresses {
                r.parse_entry(entry)?;
            }
            Arc::new(r)
        };
        Ok(OperatorConfig {
            scope,
            lease,
            http_addr: args.http_addr,
            settings: BuildSettings {
                default_image: args.default_node_image.clone(),
                cluster_domain: args.cluster_domain.clone(),
            },
            resync_interval: args.resync_interval,
            step_interval: args.step_interval,
            admin_timeout: args.admin_timeout,
            resolver,
        })
    }

    /// [`OperatorConfig::from_args`] with the process environment.
    pub fn from_env(args: &OperatorArgs) -> Result<Self> {
        Self::from_args(
            args,
            |k| std::env::var(k).ok(),
            Path::new(SERVICE_ACCOUNT_NAMESPACE),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> OperatorArgs {
        OperatorArgs::try_parse_from(
            std::iter::once("logcluster-operator").chain(args.iter().copied()),
        )
        .unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_watch_everything_without_leader_election() {
        let c = OperatorConfig::from_args(&parse(&[]), no_env, Path::new("/nonexistent")).unwrap();
        assert_eq!(c.scope, Scope::All);
        assert!(c.lease.is_none());
        assert_eq!(c.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.settings.cluster_domain, "cluster.local");
        assert_eq!(c.resync_interval, Duration::from_secs(300));
    }

    #[test]
    fn namespaces_are_deduplicated_and_validated() {
        let c = OperatorConfig::from_args(
            &parse(&["--namespace", "a,b", "--namespace", "a"]),
            no_env,
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(c.scope, Scope::Namespaces(vec!["a".into(), "b".into()]));
        let bad = OperatorConfig::from_args(
            &parse(&["--namespace", "Not_A_Namespace"]),
            no_env,
            Path::new("/x"),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn leader_election_takes_namespace_and_identity_from_the_pod() {
        let env = |k: &str| match k {
            "POD_NAMESPACE" => Some("ops".to_owned()),
            "POD_NAME" => Some("op-7d9".to_owned()),
            _ => None,
        };
        let c = OperatorConfig::from_args(&parse(&["--leader-election"]), env, Path::new("/x"))
            .unwrap();
        let lease = c.lease.unwrap();
        assert_eq!(
            (
                lease.namespace.as_str(),
                lease.identity.as_str(),
                lease.name.as_str()
            ),
            ("ops", "op-7d9", "logcluster-operator")
        );
        let c = OperatorConfig::from_args(
            &parse(&[
                "--leader-election=true",
                "--leader-election-namespace",
                "x",
                "--leader-election-identity",
                "me",
                "--leader-election-lease-name",
                "l",
            ]),
            no_env,
            Path::new("/x"),
        )
        .unwrap();
        let lease = c.lease.unwrap();
        assert_eq!(
            (
                lease.namespace.as_str(),
                lease.identity.as_str(),
                lease.name.as_str()
            ),
            ("x", "me", "l")
        );
        let off = OperatorConfig::from_args(
            &parse(&["--leader-election=false"]),
            no_env,
            Path::new("/x"),
        )
        .unwrap();
        assert!(off.lease.is_none());
    }

    #[test]
    fn leader_election_without_a_namespace_is_an_error() {
        let err = OperatorConfig::from_args(
            &parse(&["--leader-election"]),
            no_env,
            Path::new("/nonexistent"),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("--leader-election-namespace"),
            "{err}"
        );
    }

    #[test]
    fn node_addresses_must_be_well_formed() {
        assert!(
            OperatorConfig::from_args(
                &parse(&["--node-address", "ns/demo-0=127.0.0.1:8400"]),
                no_env,
                Path::new("/x")
            )
            .is_ok()
        );
        assert!(
            OperatorConfig::from_args(
                &parse(&["--node-address", "demo-0"]),
                no_env,
                Path::new("/x")
            )
            .is_err()
        );
    }

    #[test]
    fn intervals_must_be_positive() {
        assert!(
            OperatorConfig::from_args(&parse(&["--step-interval", "0s"]), no_env, Path::new("/x"))
                .is_err()
        );
    }
}
