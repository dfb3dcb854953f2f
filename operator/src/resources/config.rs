//! The ConfigMap `<cluster>-config`: the lognode configuration file (keys are lognode's long flag
//! names) and the casbin ACL policy. Neither holds key material: certificates and the gossip key
//! are files from Secret volumes, referenced here by path only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_yaml::{Mapping, Value};

use super::names::{ClusterNames, GOSSIP_PORT, GRPC_PORT, HTTP_PORT};
use crate::Result;
use crate::crd::{FsyncPolicy, LogCluster, Permission};
use crate::units::{go_duration, humantime_text, quantity_bytes};

/// Where the ConfigMap is mounted in the pods.
pub const CONFIG_DIR: &str = "/etc/logcluster/config";
/// Key (file name) of the lognode configuration.
pub const NODE_CONFIG_KEY: &str = "lognode.yaml";
/// Key (file name) of the ACL policy.
pub const POLICY_KEY: &str = "policy.csv";
/// Where the node TLS Secret is mounted (`ca.crt`, `tls.crt`, `tls.key`).
pub const TLS_DIR: &str = "/etc/logcluster/tls";
/// Where the gossip key Secret is mounted.
pub const GOSSIP_DIR: &str = "/etc/logcluster/gossip";
/// Key (file name) of the gossip key in its Secret.
pub const GOSSIP_KEY: &str = "gossip.key";
/// Where each node's volume is mounted.
pub const DATA_DIR: &str = "/var/lib/logcluster";

/// The lognode configuration file for this cluster.
///
/// The per-pod advertise address is not here: it comes from the pod's own name through the
/// `LOGCLUSTER_ADVERTISE_ADDR` environment variable (see the StatefulSet builder).
pub fn node_config(lc: &LogCluster, names: &ClusterNames) -> Result<String> {
    let log = &lc.spec.log;
    let mut m = Mapping::new();
    let mut set = |k: &str, v: Value| {
        m.insert(Value::from(k), v);
    };
    set("data-dir", DATA_DIR.into());
    set("listen-addr", format!("0.0.0.0:{GRPC_PORT}").into());
    set(
        "gossip-listen-addr",
        format!("0.0.0.0:{GOSSIP_PORT}").into(),
    );
    set("http-listen-addr", format!("0.0.0.0:{HTTP_PORT}").into());
    set(
        "gossip-seed",
        Value::Sequence(vec![names.gossip_seed().into()]),
    );
    set(
        "gossip-key-file",
        format!("{GOSSIP_DIR}/{GOSSIP_KEY}").into(),
    );
    set("tls-ca-file", format!("{TLS_DIR}/ca.crt").into());
    set("tls-cert-file", format!("{TLS_DIR}/tls.crt").into());
    set("tls-key-file", format!("{TLS_DIR}/tls.key").into());
    set(
        "acl-policy-file",
        format!("{CONFIG_DIR}/{POLICY_KEY}").into(),
    );
    set("log-format", "json".into());
    set(
        "max-segment-bytes",
        quantity_bytes("log.maxSegmentBytes", &log.max_segment_bytes)?.into(),
    );
    set(
        "max-record-bytes",
        quantity_bytes("log.maxRecordBytes", &log.max_record_bytes)?.into(),
    );
    match log.fsync {
        FsyncPolicy::Always => set("fsync", "always".into()),
        FsyncPolicy::Interval => {
            set("fsync", "interval".into());
            if let Some(interval) = &log.fsync_interval {
                let d = go_duration("log.fsyncInterval", interval)?;
                set("fsync-interval", humantime_text(d).into());
            }
        }
    }
    if let Some(retention) = &log.retention {
        if let Some(bytes) = &retention.bytes {
            set(
                "retention-bytes",
                quantity_bytes("log.retention.bytes", bytes)?.into(),
            );
        }
        if let Some(age) = &retention.age {
            let d = go_duration("log.retention.age", age)?;
            set("retention-age", humantime_text(d).into());
        }
    }
    serde_yaml::to_string(&Value::Mapping(m)).map_err(|e| crate::Error::Config(e.to_string()))
}

/// The casbin policy (proglog's `policy.csv` format, `p, <subject>, *, <action>`).
///
/// `operator` administers membership; `node` replicates and may ask to join (admin); users get
/// exactly what `spec.acl` grants, in a stable order so the ConfigMap only changes when the ACL
/// does.
pub fn policy(lc: &LogCluster) -> String {
    let mut lines = vec![
        "p, operator, *, admin".to_owned(),
        "p, node, *, replicate".to_owned(),
        "p, node, *, admin".to_owned(),
    ];
    let mut users: Vec<_> = lc.spec.acl.users.iter().collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    for user in users {
        let mut permissions: Vec<Permission> = user.permissions.clone();
        permissions.sort();
        permissions.dedup();
        for p in permissions {
            lines.push(format!("p, {}, *, {}", user.name, p.action()));
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// A stable 64-bit FNV-1a hash, hex. Put on the pod template so that a change of the node
/// configuration (which lognode reads at start) rolls the pods; the policy is left out because
/// nodes reload it without a restart.
pub fn config_hash(node_config: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node_config.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The ConfigMap.
pub fn config_map(lc: &LogCluster, names: &ClusterNames) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: super::child_meta(lc, names, names.config_map(), "config")?,
        data: Some(BTreeMap::from([
            (NODE_CONFIG_KEY.to_owned(), node_config(lc, names)?),
            (POLICY_KEY.to_owned(), policy(lc)),
        ])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::fixtures::{cluster, cluster_with};

    fn names() -> ClusterNames {
        ClusterNames::new(&cluster(), "cluster.local").unwrap()
    }

    fn parsed(lc: &LogCluster) -> serde_yaml::Mapping {
        serde_yaml::from_str(&node_config(lc, &names()).unwrap()).unwrap()
    }

    fn get<'a>(m: &'a serde_yaml::Mapping, key: &str) -> &'a Value {
        m.get(Value::from(key))
            .unwrap_or_else(|| panic!("{key} missing from {m:?}"))
    }

    #[test]
    fn node_config_points_at_mounted_files_and_the_headless_service() {
        let m = parsed(&cluster());
        assert_eq!(get(&m, "tls-ca-file"), "/etc/logcluster/tls/ca.crt");
        assert_eq!(get(&m, "tls-key-file"), "/etc/logcluster/tls/tls.key");
        assert_eq!(
            get(&m, "gossip-key-file"),
            "/etc/logcluster/gossip/gossip.key"
        );
        assert_eq!(
            get(&m, "acl-policy-file"),
            "/etc/logcluster/config/policy.csv"
        );
        assert_eq!(
            get(&m, "gossip-seed"),
            &Value::Sequence(vec!["demo-nodes.prod.svc.cluster.local:8401".into()])
        );
        assert_eq!(get(&m, "max-segment-bytes"), &Value::from(1u64 << 30));
        assert_eq!(get(&m, "max-record-bytes"), &Value::from(1u64 << 20));
        assert_eq!(get(&m, "fsync"), "always");
        assert!(m.get(Value::from("retention-bytes")).is_none());
    }

    #[test]
    fn log_settings_are_converted_to_lognode_units() {
        let lc = cluster_with(json!({"log": {
            "maxSegmentBytes": "64Mi", "maxRecordBytes": "64Ki", "fsync": "Interval",
            "fsyncInterval": "250ms", "retention": {"bytes": "10Gi", "age": "168h"}
        }}));
        let m = parsed(&lc);
        assert_eq!(get(&m, "max-segment-bytes"), &Value::from(64u64 << 20));
        assert_eq!(get(&m, "max-record-bytes"), &Value::from(64u64 << 10));
        assert_eq!(get(&m, "fsync"), "interval");
        assert_eq!(get(&m, "fsync-interval"), "250ms");
        assert_eq!(get(&m, "retention-bytes"), &Value::from(10u64 << 30));
        assert_eq!(get(&m, "retention-age"), "604800s");
    }

    #[test]
    fn invalid_sizes_name_the_field() {
        let lc = cluster_with(json!({"log": {"maxSegmentBytes": "lots"}}));
        let err = node_config(&lc, &names()).unwrap_err().to_string();
        assert!(err.contains("log.maxSegmentBytes"), "{err}");
    }

    #[test]
    fn policy_grants_roles_and_exactly_the_declared_user_permissions() {
        let lc = cluster_with(json!({"acl": {"users": [
            {"name": "zed", "permissions": ["consume"]},
            {"name": "alice", "permissions": ["consume", "produce", "produce"]},
        ]}}));
        assert_eq!(
            policy(&lc),
            "p, operator, *, admin\np, node, *, replicate\np, node, *, admin\n\
             p, alice, *, produce\np, alice, *, consume\np, zed, *, consume\n"
        );
    }

    #[test]
    fn config_map_holds_no_key_material() {
        let lc = cluster_with(json!({"acl": {"users": [{"name": "a", "permissions": ["admin"]}]}}));
        let cm = config_map(&lc, &names()).unwrap();
        for (key, value) in cm.data.unwrap() {
            assert!(!value.contains("PRIVATE KEY"), "{key}");
            assert!(!value.contains("BEGIN CERTIFICATE"), "{key}");
        }
    }

    #[test]
    fn config_hash_is_stable_and_sensitive() {
        assert_eq!(config_hash("a"), config_hash("a"));
        assert_ne!(config_hash("a"), config_hash("b"));
        assert_eq!(config_hash(""), "cbf29ce484222325");
    }
}
