//! The crate's single error type.

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can make a reconcile (or the operator's start-up) fail.
///
/// Messages never include key material: Secrets are named, never printed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing (`applying StatefulSet demo/demo`).
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The finalizer helper failed (adding/removing the finalizer, or the cleanup itself).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// A spec value the operator cannot use (the CRD's CEL rules normally catch these first).
    #[error("invalid spec.{field}: {reason}")]
    InvalidSpec {
        /// The field path below `spec`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// The object has no namespace or name (the API server always sets both).
    #[error("the LogCluster has no {0}")]
    MissingMetadata(&'static str),

    /// A Secret the operator needs is missing a key or holds something unusable.
    #[error("Secret {namespace}/{name}: {reason}")]
    BadSecret {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is wrong (never the content).
        reason: String,
    },

    /// Creating, loading or inspecting a certificate failed.
    #[error("certificate {what}: {source}")]
    Certificate {
        /// Which certificate (`node TLS for demo/demo`).
        what: String,
        #[source]
        source: logcluster_certs::Error,
    },

    /// A call to a node's admin API failed.
    #[error("admin API of {node}: {reason}")]
    Admin {
        /// The node (`demo-0`).
        node: String,
        /// The gRPC status or transport error.
        reason: String,
    },

    /// Serializing a built object failed (a bug: builders produce plain data).
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The operator's configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),

    /// Leader election could not proceed (the Lease API failed for longer than allowed).
    #[error("leader election: {0}")]
    LeaderElection(String),
}

impl Error {
    /// Wraps a Kubernetes API error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }

    /// A short, bounded label for the failure-counter metric (never free text, so the metric's
    /// cardinality stays small).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => "kube_conflict",
                kube::Error::Api(status) if status.code == 403 => "kube_forbidden",
                kube::Error::Api(status) if status.code == 422 => "kube_invalid",
                kube::Error::Api(_) => "kube_api",
                _ => "kube_transport",
            },
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::BadSecret { .. } => "bad_secret",
            Error::Certificate { .. } => "certificate",
            Error::Admin { .. } => "admin_api",
            Error::Serialize { .. } => "serialize",
            Error::Config(_) => "config",
            Error::LeaderElection(_) => "leader_election",
        }
    }
}
