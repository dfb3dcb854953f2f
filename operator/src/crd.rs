//! The `LogCluster` custom resource (`logcluster.io/v1alpha1`): spec, status and the CEL rules
//! the API server enforces. `crdgen` prints [`LogCluster::crd`] into `crds/logcluster.yaml`.
//!
//! Sizes are Kubernetes quantities (`10Gi`) and durations are Go durations (`720h`), because
//! those are what the API server's CEL library can compare (`quantity()`, `duration()`): the
//! grow-only and cross-field rules run in the API server, before anything reaches the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of the custom resource.
pub const GROUP: &str = "logcluster.io";
/// Finalizer the operator puts on every `LogCluster` (PVC retention runs in it).
pub const FINALIZER: &str = "logcluster.io/cleanup";
/// User names the operator reserves for itself and the nodes (their certificates' CNs carry
/// the `admin` and `replicate` permissions).
pub const RESERVED_USER_NAMES: [&str; 2] = ["node", "operator"];

/// A replicated commit log: a StatefulSet of `lognode` pods forming one Raft cluster.
// NB: clippy reads the repeated `type_ = ...` of separate printcolumn(...) entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "logcluster.io",
    version = "v1alpha1",
    kind = "LogCluster",
    namespaced,
    shortname = "lc",
    status = "LogClusterStatus",
    derive = "PartialEq",
    doc = "A replicated commit log: a StatefulSet of lognode pods forming one Raft cluster",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Ready Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LogClusterSpec {
    /// Number of nodes (Raft voters). Changed one node at a time; a scale-down that would leave
    /// fewer healthy voters than a quorum is refused.
    #[serde(default = "default_replicas")]
    #[x_kube(
        validation = Rule::new("self >= 1").message("replicas must be at least 1"),
        validation = Rule::new("self <= 99").message("replicas must be at most 99")
    )]
    pub replicas: i32,

    /// lognode container image [default: the operator's --default-node-image].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy of the lognode container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// CPU and memory of the lognode container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The persistent volume of each node.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Commit log settings.
    #[serde(default)]
    pub log: LogSpec,

    /// Certificates for mutual TLS between nodes, the operator and users.
    #[serde(default)]
    pub tls: TlsSpec,

    /// Users that get a client certificate and permissions in the ACL.
    #[serde(default)]
    pub acl: AclSpec,

    /// Extra settings of the lognode pods.
    #[serde(default)]
    pub pod: PodOverrides,

    /// The client Service.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Stop changing anything for this cluster (the operator still reports status).
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> i32 {
    3
}

/// Image pull policy of the lognode container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    /// The value Kubernetes expects in a container spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// The persistent volume of each node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0")
        .message("storage.size can only grow"),
    validation = Rule::new(
        "has(self.storageClassName) == has(oldSelf.storageClassName) && \
         (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
    )
    .message("storage.storageClassName is immutable")
)]
pub struct StorageSpec {
    /// Size of each node's volume (a quantity such as 10Gi). Can only grow; growing resizes the
    /// existing claims, which needs a storage class that allows volume expansion.
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("storage.size must be a positive quantity such as 10Gi"))]
    pub size: String,

    /// Storage class of the volumes [default: the cluster's default class]. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// What happens to the volumes when the LogCluster is deleted or scaled down.
    #[serde(default)]
    pub pvc_retention: PvcRetention,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            pvc_retention: PvcRetention::default(),
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".to_owned()
}

/// What happens to the volumes when the LogCluster is deleted or scaled down.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetention {
    /// When the LogCluster is deleted: keep the volumes (`Retain`) or delete them (`Delete`).
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
    /// When a node is removed by a scale-down: keep its volume or delete it.
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
}

/// Keep or delete a volume.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RetentionPolicy {
    #[default]
    Retain,
    Delete,
}

impl RetentionPolicy {
    /// The value of a StatefulSet's `persistentVolumeClaimRetentionPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Retain => "Retain",
            RetentionPolicy::Delete => "Delete",
        }
    }
}

/// A Go duration such as `720h`, `90m` or `1h30m`.
const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Commit log settings (passed to every node).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "quantity(self.maxRecordBytes).compareTo(quantity(self.maxSegmentBytes)) <= 0"
    )
    .message("log.maxRecordBytes must not exceed log.maxSegmentBytes"),
    validation = Rule::new(
        "!has(self.retention) || !has(self.retention.bytes) || \
         quantity(self.retention.bytes).compareTo(quantity(self.maxSegmentBytes)) >= 0"
    )
    .message("log.retention.bytes must be at least log.maxSegmentBytes"),
    validation = Rule::new("self.fsync == 'Interval' || !has(self.fsyncInterval)")
        .message("log.fsyncInterval only applies with fsync: Interval")
)]
pub struct LogSpec {
    /// Largest size of one segment file before a new segment starts (a quantity, e.g. 1Gi).
    #[serde(default = "default_max_segment_bytes")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isInteger() && quantity(self).asInteger() >= 1024")
        .message("log.maxSegmentBytes must be a whole quantity of at least 1024 bytes, e.g. 1Gi"))]
    pub max_segment_bytes: String,

    /// Largest record value accepted (a quantity, e.g. 1Mi).
    #[serde(default = "default_max_record_bytes")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isInteger() && quantity(self).asInteger() >= 1")
        .message("log.maxRecordBytes must be a whole positive quantity, e.g. 1Mi"))]
    pub max_record_bytes: String,

    /// When records reach the disk: `Always` acknowledges only after fdatasync (group commit);
    /// `Interval` syncs every fsyncInterval and may lose the last interval on power loss.
    #[serde(default)]
    pub fsync: FsyncPolicy,

    /// Period of background syncs with `fsync: Interval` (a Go duration, e.g. 100ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = DURATION_PATTERN))]
    pub fsync_interval: Option<String>,

    /// Delete the oldest segments beyond these limits (off when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            max_segment_bytes: default_max_segment_bytes(),
            max_record_bytes: default_max_record_bytes(),
            fsync: FsyncPolicy::default(),
            fsync_interval: None,
            retention: None,
        }
    }
}

fn default_max_segment_bytes() -> String {
    "1Gi".to_owned()
}

fn default_max_record_bytes() -> String {
    "1Mi".to_owned()
}

/// When appended records are synced to disk.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum FsyncPolicy {
    /// fdatasync before acknowledging (group commit).
    #[default]
    Always,
    /// fdatasync every fsyncInterval.
    Interval,
}

/// Log retention limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Delete the oldest segments once the log is larger than this (a quantity, e.g. 100Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isInteger() && quantity(self).asInteger() >= 1")
        .message("log.retention.bytes must be a whole positive quantity, e.g. 100Gi"))]
    pub bytes: Option<String>,

    /// Delete segments whose newest record is older than this (a Go duration, e.g. 168h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = DURATION_PATTERN))]
    pub age: Option<String>,
}

/// Certificates for mutual TLS between nodes, the operator and users.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.renewBefore) < duration(self.validity)")
        .message("tls.renewBefore must be shorter than tls.validity"),
    validation = Rule::new(
        "has(self.caSecretName) == has(oldSelf.caSecretName) && \
         (!has(self.caSecretName) || self.caSecretName == oldSelf.caSecretName)"
    )
    .message("tls.caSecretName is immutable: changing the CA of a running cluster breaks mutual TLS")
)]
pub struct TlsSpec {
    /// An existing Secret in the LogCluster's namespace holding the CA (`tls.crt`, `tls.key`) to
    /// issue every certificate with. When unset, the operator creates and keeps a CA in
    /// `<name>-ca`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub ca_secret_name: Option<String>,

    /// Validity of node, operator and user certificates (a Go duration, e.g. 2160h).
    #[serde(default = "default_validity")]
    #[schemars(length(min = 1, max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')")
        .message("tls.validity must be at least 1m"))]
    pub validity: String,

    /// Renew a certificate this long before it expires (a Go duration, e.g. 720h).
    #[serde(default = "default_renew_before")]
    #[schemars(length(min = 1, max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')")
        .message("tls.renewBefore must be at least 1s"))]
    pub renew_before: String,
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec {
            ca_secret_name: None,
            validity: default_validity(),
            renew_before: default_renew_before(),
        }
    }
}

fn default_validity() -> String {
    "2160h".to_owned()
}

fn default_renew_before() -> String {
    "720h".to_owned()
}

/// Users that get a client certificate (Secret `<cluster>-user-<name>`) and ACL permissions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AclSpec {
    /// The users; names are unique.
    #[serde(default)]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub users: Vec<AclUser>,
}

/// One user of the log.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AclUser {
    /// The user name: the CN of the user's certificate and the subject in the ACL.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self != 'node' && self != 'operator'")
        .message("user names 'node' and 'operator' are reserved for LogCluster itself"))]
    pub name: String,

    /// What the user may do.
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub permissions: Vec<Permission>,
}

/// A permission in the ACL.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Append records.
    Produce,
    /// Read records.
    Consume,
    /// Change membership and leadership (admin.v1).
    Admin,
}

impl Permission {
    /// The casbin action.
    pub fn action(self) -> &'static str {
        match self {
            Permission::Produce => "produce",
            Permission::Consume => "consume",
            Permission::Admin => "admin",
        }
    }
}

/// Extra settings of the lognode pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pods [default: prefer spreading the pods over nodes].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// The client Service `<cluster>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Extra Service annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Type of the client Service.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The value of a Service's `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// What the operator observed and did. Never holds key material.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the StatefulSet (what `kubectl scale` reports as current).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Pod name of the Raft leader, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Raft members as the leader reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The operator initialized the Raft cluster on node 0. Once true it never initializes
    /// again: re-initializing after a lost volume would split the cluster.
    #[serde(default)]
    pub initialized: bool,
    /// The scaling step in progress or refused, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
    /// Certificates the operator issued: where they are and when they expire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    /// `Ready`, `Available`, `Progressing`, `Degraded`, `CertificatesReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One Raft member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The pod (`<cluster>-<nodeId>`).
    pub pod: String,
    /// Raft node id (the pod's ordinal).
    pub node_id: i64,
    /// Role in the Raft configuration.
    pub role: MemberRole,
    /// The leader heard from this member recently.
    pub healthy: bool,
    /// Log entries the member is behind the leader's commit index.
    pub lag: i64,
}

/// Role of a Raft member.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum MemberRole {
    Leader,
    Voter,
    Learner,
}

/// The scaling step in progress or refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStatus {
    /// What is happening.
    pub phase: ScalingPhase,
    /// StatefulSet replicas now.
    pub current_replicas: i32,
    /// `spec.replicas`.
    pub target_replicas: i32,
    /// The next step, or why it cannot be taken.
    pub message: String,
}

/// Phase of a scaling operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ScalingPhase {
    /// Creating the Raft cluster on node 0.
    Bootstrapping,
    /// Adding a node.
    ScalingUp,
    /// Removing a node.
    ScalingDown,
    /// Waiting for the cluster (no leader, a membership change in flight, a node catching up).
    Waiting,
    /// Replacing pods one at a time to run a changed pod template, the leader's pod last.
    RollingUpdate,
    /// A step was refused because it would break the quorum.
    Blocked,
}

/// A certificate the operator issued or uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// The Secret holding it.
    pub secret_name: String,
    /// The certificate's common name.
    pub common_name: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// When the operator renews it (RFC 3339); unset for a CA it does not manage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_after: Option<String>,
}

impl LogCluster {
    /// `spec.replicas` as a count (the API server guarantees ≥ 1; clamp anyway).
    pub fn desired_replicas(&self) -> u32 {
        u32::try_from(self.spec.replicas.max(1)).unwrap_or(1)
    }
}

/// The CRD as YAML, with a header saying where it comes from.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&LogCluster::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p logcluster-operator --bin crdgen` from operator/src/crd.rs.\n\
         # Do not edit: change the Rust types and regenerate (`make crds`).\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    // The generated CRD: committed copy in sync, and the schema features the operator relies on.

    use kube::CustomResourceExt;
    use serde_json::Value;

    use super::{LogCluster, crd_yaml};

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/logcluster.yaml");

    #[test]
    fn committed_crd_matches_the_rust_types() {
        let generated = crd_yaml().unwrap();
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == generated,
            "crds/logcluster.yaml is out of date: run `make crds` \
             (cargo run -p logcluster-operator --bin crdgen > crds/logcluster.yaml)"
        );
    }

    fn schema() -> Value {
        let crd = serde_json::to_value(LogCluster::crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn rules(v: &Value) -> Vec<(String, String)> {
        v["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["rule"].as_str().unwrap_or_default().to_owned(),
                            r["message"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn crd_has_names_subresources_and_columns() {
        let crd = serde_json::to_value(LogCluster::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "logclusters.logcluster.io");
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "lc");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        let scale = &version["subresources"]["scale"];
        assert_eq!(scale["specReplicasPath"], ".spec.replicas");
        assert_eq!(scale["statusReplicasPath"], ".status.replicas");
        assert_eq!(scale["labelSelectorPath"], ".status.selector");
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Ready", "Replicas", "Ready Replicas", "Leader", "Age"]
        );
    }

    #[test]
    fn every_cel_rule_has_a_message() {
        fn walk(v: &Value, found: &mut Vec<(String, String)>) {
            found.extend(rules(v));
            match v {
                Value::Object(m) => m.values().for_each(|c| walk(c, found)),
                Value::Array(a) => a.iter().for_each(|c| walk(c, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(&schema(), &mut found);
        assert!(found.len() >= 12, "{found:?}");
        for (rule, message) in &found {
            assert!(!message.is_empty(), "rule {rule} has no message");
        }
    }

    #[test]
    fn spec_rules_sit_where_they_apply() {
        let spec = &schema()["properties"]["spec"]["properties"];
        let replicas = rules(&spec["replicas"]);
        assert!(
            replicas.iter().any(|(r, _)| r == "self >= 1"),
            "{replicas:?}"
        );
        let storage = rules(&spec["storage"]);
        assert!(
            storage
                .iter()
                .any(|(_, m)| m == "storage.size can only grow"),
            "{storage:?}"
        );
        assert!(
            storage
                .iter()
                .any(|(_, m)| m == "storage.storageClassName is immutable"),
            "{storage:?}"
        );
        let user_name = &spec["acl"]["properties"]["users"]["items"]["properties"]["name"];
        assert!(
            rules(user_name)
                .iter()
                .any(|(r, _)| r.contains("'operator'")),
            "{user_name}"
        );
        let users = &spec["acl"]["properties"]["users"];
        assert_eq!(users["x-kubernetes-list-type"], "map");
        assert_eq!(users["x-kubernetes-list-map-keys"][0], "name");
        assert_eq!(spec["replicas"]["default"], 3);
    }
}
