//! Errors of the membership module.

use std::path::PathBuf;

/// Result of membership operations.
pub type Result<T, E = MembershipError> = std::result::Result<T, E>;

/// Why gossip membership could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The gossip key file could not be read.
    #[error("cannot read the gossip key file {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The gossip key file does not hold a 32-byte key.
    #[error(
        "the gossip key file {path} does not hold a 32-byte key: {source} \
         (expected 64 hex digits, optionally surrounded by whitespace, or exactly 32 raw bytes; \
         generate one with `head -c 32 /dev/urandom | xxd -p -c 64`)"
    )]
    InvalidKey {
        path: PathBuf,
        #[source]
        source: super::key::KeyFormatError,
    },
    /// Neither a key file nor the explicit insecure flag was given.
    #[error(
        "gossip needs a cluster key: pass --gossip-key-file <file with 32 bytes, hex or raw>, or \
         --insecure-gossip-without-key to run unauthenticated, unencrypted gossip (local \
         experiments only)"
    )]
    KeyRequired,
    /// Both a key file and the insecure flag were given.
    #[error("--gossip-key-file and --insecure-gossip-without-key contradict each other; give one")]
    ConflictingKeyFlags,
    /// A seed is not a `host:port` string.
    #[error("gossip seed {seed:?} is not host:port: {reason}")]
    InvalidSeed { seed: String, reason: String },
    /// The gossip advertise address could not be resolved to one socket address.
    #[error("cannot resolve the gossip advertise address {addr:?}: {reason}")]
    AdvertiseAddr { addr: String, reason: String },
    /// The configuration is unusable.
    #[error("invalid membership configuration: {0}")]
    Config(String),
    /// chitchat (or the transport under it) failed.
    #[error("gossip failed: {0}")]
    Gossip(String),
}
