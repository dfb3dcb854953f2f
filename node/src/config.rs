//! `lognode` configuration: clap flags with `LOGCLUSTER_*` environment fallbacks and an optional
//! YAML file underneath (file → env → flags, the last one wins), validated once at start-up into
//! a typed [`NodeConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The flag's type lives with the logging it configures (`telemetry` never looks up here).
pub use crate::telemetry::tracing::LogFormat;

use clap::{Parser, ValueEnum};

/// Prefix of every environment variable that sets a `lognode` flag.
pub const ENV_PREFIX: &str = "LOGCLUSTER_";

/// Command-line flags of `lognode`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "lognode",
    version,
    about = "A LogCluster node: a replicated commit log served over mutual-TLS gRPC",
    long_about = "A LogCluster node: a replicated commit log served over mutual-TLS gRPC.\n\n\
Every flag can also be set with an environment variable (LOGCLUSTER_ + the flag name in upper \
case with '-' as '_', e.g. LOGCLUSTER_DATA_DIR) or with a key of the same name in the YAML file \
given with --config. Flags override the environment, which overrides the file."
)]
pub struct NodeArgs {
    /// YAML file with any of the options below (keys are the long flag names, e.g. `data-dir`).
    #[arg(long, env = "LOGCLUSTER_CONFIG")]
    pub config: Option<PathBuf>,

    /// This node's Raft id. When unset it is the ordinal at the end of the host name
    /// (a StatefulSet pod `demo-3` is node 3).
    #[arg(long, env = "LOGCLUSTER_NODE_ID")]
    pub node_id: Option<u64>,

    /// Directory holding the commit log segments and the Raft vote store.
    #[arg(
        long,
        env = "LOGCLUSTER_DATA_DIR",
        default_value = "/var/lib/logcluster"
    )]
    pub data_dir: PathBuf,

    /// Address the gRPC server (client, peer and admin APIs; mutual TLS) listens on. When it is
    /// a specific IP (not 0.0.0.0 / ::), connections to peers leave from that IP too.
    #[arg(long, env = "LOGCLUSTER_LISTEN_ADDR", default_value = "0.0.0.0:8400")]
    pub listen_addr: SocketAddr,

    /// host:port other nodes and clients dial to reach this node's gRPC server
    /// [default: <host name>:<listen port>].
    #[arg(long, env = "LOGCLUSTER_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// UDP address the gossip (membership discovery) endpoint listens on.
    #[arg(
        long,
        env = "LOGCLUSTER_GOSSIP_LISTEN_ADDR",
        default_value = "0.0.0.0:8401"
    )]
    pub gossip_listen_addr: SocketAddr,

    /// host:port other nodes send gossip to [default: <advertise host>:<gossip listen port>].
    #[arg(long, env = "LOGCLUSTER_GOSSIP_ADVERTISE_ADDR")]
    pub gossip_advertise_addr: Option<String>,

    /// Gossip seeds (host:port, comma-separated or repeated). Host names are re-resolved
    /// periodically, so a Kubernetes headless Service name works.
    #[arg(long, env = "LOGCLUSTER_GOSSIP_SEED", value_delimiter = ',')]
    pub gossip_seed: Vec<String>,

    /// File holding the 32-byte cluster gossip key (hex or raw). Gossip is authenticated and
    /// encrypted with it.
    #[arg(long, env = "LOGCLUSTER_GOSSIP_KEY_FILE")]
    pub gossip_key_file: Option<PathBuf>,

    /// Run gossip without authentication or encryption. Anyone who can send UDP to the gossip
    /// port can then announce nodes. For local experiments only.
    #[arg(long, env = "LOGCLUSTER_INSECURE_GOSSIP_WITHOUT_KEY")]
    pub insecure_gossip_without_key: bool,

    /// Period of gossip rounds; failure detection and leave propagation scale with it.
    #[arg(long, env = "LOGCLUSTER_GOSSIP_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub gossip_interval: Duration,

    /// Plaintext HTTP address for /livez, /readyz and /metrics (no data, no writes).
    #[arg(
        long,
        env = "LOGCLUSTER_HTTP_LISTEN_ADDR",
        default_value = "0.0.0.0:8402"
    )]
    pub http_listen_addr: SocketAddr,

    /// PEM file with the CA that signs every node and client certificate.
    #[arg(long, env = "LOGCLUSTER_TLS_CA_FILE")]
    pub tls_ca_file: PathBuf,

    /// PEM file with this node's certificate (server and client usage: peers dial each other).
    #[arg(long, env = "LOGCLUSTER_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,

    /// PEM file with this node's private key.
    #[arg(long, env = "LOGCLUSTER_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,

    /// casbin model file [default: the embedded ACL model, the same as proglog's model.conf].
    #[arg(long, env = "LOGCLUSTER_ACL_MODEL_FILE")]
    pub acl_model_file: Option<PathBuf>,

    /// casbin policy file (proglog's policy.csv format: `p, <subject>, <object>, <action>`;
    /// actions produce, consume, replicate, admin). Reloaded when it changes.
    #[arg(long, env = "LOGCLUSTER_ACL_POLICY_FILE")]
    pub acl_policy_file: PathBuf,

    /// Initialize a new cluster with this node as its only voter, once (a restart of an
    /// initialized node does nothing more).
    #[arg(long, env = "LOGCLUSTER_BOOTSTRAP")]
    pub bootstrap: bool,

    /// host:port of a running node to ask to add this node to its cluster (repeatable).
    #[arg(long, env = "LOGCLUSTER_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,

    /// On graceful shutdown (SIGTERM), ask the cluster to remove this node first.
    #[arg(long, env = "LOGCLUSTER_LEAVE_ON_SHUTDOWN")]
    pub leave_on_shutdown: bool,

    /// Log line format.
    #[arg(long, env = "LOGCLUSTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Log filter in RUST_LOG syntax (RUST_LOG, when set, wins).
    #[arg(long, env = "LOGCLUSTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Largest size of one segment's store file before a new segment starts (e.g. 1GiB, 64MiB).
    #[arg(long, env = "LOGCLUSTER_MAX_SEGMENT_BYTES", default_value = "1GiB", value_parser = parse_byte_size)]
    pub max_segment_bytes: u64,

    /// Largest size of one segment's index file (12 bytes per record).
    #[arg(long, env = "LOGCLUSTER_MAX_INDEX_BYTES", default_value = "10MiB", value_parser = parse_byte_size)]
    pub max_index_bytes: u64,

    /// When appended records reach the disk: `always` acknowledges only after fdatasync (group
    /// commit: one sync covers many records); `interval` syncs every --fsync-interval and may
    /// lose the last interval on power loss (Raft still needs a quorum of copies).
    #[arg(long, env = "LOGCLUSTER_FSYNC", value_enum, default_value_t = FsyncMode::Always)]
    pub fsync: FsyncMode,

    /// Period of background syncs with `--fsync interval`.
    #[arg(long, env = "LOGCLUSTER_FSYNC_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub fsync_interval: Duration,

    /// Largest record value accepted (larger produces are refused before anything is written).
    #[arg(long, env = "LOGCLUSTER_MAX_RECORD_BYTES", default_value = "1MiB", value_parser = parse_byte_size)]
    pub max_record_bytes: u64,

    /// Delete the oldest segments once the log is larger than this (off when unset).
    #[arg(long, env = "LOGCLUSTER_RETENTION_BYTES", value_parser = parse_byte_size)]
    pub retention_bytes: Option<u64>,

    /// Delete segments whose newest record is older than this, e.g. `7d` (off when unset).
    #[arg(long, env = "LOGCLUSTER_RETENTION_AGE", value_parser = humantime::parse_duration)]
    pub retention_age: Option<Duration>,

    /// Raft heartbeat interval; the election timeout is derived from it (3x to 6x).
    #[arg(long, env = "LOGCLUSTER_HEARTBEAT_INTERVAL", default_value = "150ms", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
}

/// When appended records are synced to disk.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// fdatasync before acknowledging (group commit).
    Always,
    /// fdatasync every --fsync-interval.
    Interval,
    /// Never sync (tests only: a crash of the machine loses data).
    Never,
}

/// Errors found while reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not a YAML mapping of option names to values: {reason}")]
    ParseFile { path: PathBuf, reason: String },
    #[error(
        "config file {path}: unknown option `{key}` (options are the long flag names of `lognode --help`)"
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("no --node-id given and the host name `{hostname}` does not end in -<ordinal>")]
    NoNodeId { hostname: String },
    #[error("invalid value for {option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
}

/// Why a size flag did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("`{0}` is not a size such as 4096, 64MiB or 1GiB")]
    NotASize(String),
    #[error("unknown size unit `{unit}` in `{text}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")]
    UnknownUnit { unit: String, text: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Parses sizes such as `4096`, `64KiB`, `10MiB`, `1GiB`, `1GB` (powers of 1000), `2TiB`.
pub fn parse_byte_size(text: &str) -> Result<u64, ByteSizeError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| ByteSizeError::NotASize(text.to_owned()))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(ByteSizeError::UnknownUnit {
                unit: other.to_owned(),
                text: text.to_owned(),
            });
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| ByteSizeError::TooLarge(text.to_owned()))
}

/// Node id from a StatefulSet-style host name: the digits after the last `-`.
pub fn node_id_from_hostname(hostname: &str) -> Option<u64> {
    // A pod's host name is its name; with a subdomain it may be fully qualified.
    let short = hostname.split('.').next()?;
    let (_, ordinal) = short.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse().ok()
}

/// The `LOGCLUSTER_*` environment variables the YAML file at `path` contributes: one per key,
/// except keys whose variable is already set, so that with them exported clap sees
/// file < env < flags. Exporting is left to the caller (`lognode`'s `main`, before any thread
/// starts), because only it can promise that `set_var` is sound.
///
/// Keys must be long flag names from `known_keys`; a typo is an error, not silently ignored.
pub fn config_file_env(
    path: &Path,
    known_keys: &[String],
) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_config_file(path, &text, known_keys)?
        .into_iter()
        .map(|(key, value)| (env_var_name(&key), value))
        .filter(|(var, _)| std::env::var_os(var).is_none())
        .collect())
}

/// The environment variable that sets the flag `--<key>`.
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase().replace('-', "_"))
}

fn parse_config_file(
    path: &Path,
    text: &str,
    known_keys: &[String],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let parse_error = |reason: String| ConfigError::ParseFile {
        path: path.to_owned(),
        reason,
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
    let mapping = match value {
        serde_yaml::Value::Mapping(mapping) => mapping,
        serde_yaml::Value::Null => return Ok(BTreeMap::new()),
        _ => return Err(parse_error("the top level is not a mapping".into())),
    };
    let mut out = BTreeMap::new();
    for (key, value) in mapping {
        let key = match key {
            serde_yaml::Value::String(key) => key,
            other => return Err(parse_error(format!("key {other:?} is not a string"))),
        };
        if !known_keys.iter().any(|known| known == &key) || key == "config" {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        let scalar = |v: serde_yaml::Value| -> Result<String, ConfigError> {
            match v {
                serde_yaml::Value::String(s) => Ok(s),
                serde_yaml::Value::Number(n) => Ok(n.to_string()),
                serde_yaml::Value::Bool(b) => Ok(b.to_string()),
                other => Err(parse_error(format!(
                    "value of `{key}` is not a scalar: {other:?}"
                ))),
            }
        };
        let text = match value {
            serde_yaml::Value::Sequence(items) => items
                .into_iter()
                .map(scalar)
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => scalar(other)?,
        };
        out.insert(key, text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert_eq!(parse_byte_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_byte_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("1GB"), Ok(1_000_000_000));
        assert!(parse_byte_size("1XB").is_err());
        assert!(parse_byte_size("MiB").is_err());
        assert!(parse_byte_size("99999999999TiB").is_err());
    }

    #[test]
    fn node_id_comes_from_the_statefulset_ordinal() {
        assert_eq!(node_id_from_hostname("demo-3"), Some(3));
        assert_eq!(
            node_id_from_hostname("my-log-cluster-12.demo-nodes.ns.svc"),
            Some(12)
        );
        assert_eq!(node_id_from_hostname("laptop"), None);
        assert_eq!(node_id_from_hostname("demo-"), None);
        assert_eq!(node_id_from_hostname("demo-x1"), None);
    }

    #[test]
    fn config_file_keys_become_values_and_unknown_keys_are_errors() {
        let known = vec![
            "data-dir".to_string(),
            "gossip-seed".to_string(),
            "bootstrap".to_string(),
        ];
        let path = Path::new("node.yaml");
        let parsed = parse_config_file(
            path,
            "data-dir: /data\ngossip-seed: [a:8401, b:8401]\nbootstrap: true\n",
            &known,
        )
        .expect("valid file");
        assert_eq!(parsed["data-dir"], "/data");
        assert_eq!(parsed["gossip-seed"], "a:8401,b:8401");
        assert_eq!(parsed["bootstrap"], "true");
        let err = parse_config_file(path, "data_dir: /data\n", &known).expect_err("typo");
        assert!(
            err.to_string().contains("unknown option `data_dir`"),
            "{err}"
        );
        assert!(parse_config_file(path, "- a\n- b\n", &known).is_err());
        assert_eq!(env_var_name("data-dir"), "LOGCLUSTER_DATA_DIR");
    }
}
