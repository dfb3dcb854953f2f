//! Builders of every object the operator owns: pure functions of the `LogCluster` (plus the few
//! observed facts a pure spec cannot give, passed in explicitly), applied with server-side apply.
//!
//! Each builder returns a complete object with the operator's labels and a controller owner
//! reference, so the API server garbage-collects it with its LogCluster.

pub mod config;
pub mod names;
pub mod pdb;
pub mod secrets;
pub mod services;
pub mod statefulset;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::LogCluster;
use crate::{Error, Result};
pub use names::ClusterNames;

/// Settings of the operator that the builders need (from its command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// Image of the lognode container when `spec.image` is unset.
    pub default_image: String,
    /// Kubernetes cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            default_image: default_node_image(),
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// The lognode image matching this operator's version.
pub fn default_node_image() -> String {
    format!("ghcr.io/logcluster/lognode:{}", env!("CARGO_PKG_VERSION"))
}

/// The controller owner reference every child carries (`controller: true`,
/// `blockOwnerDeletion: true`).
pub fn owner_reference(lc: &LogCluster) -> Result<OwnerReference> {
    lc.controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))
}

/// Metadata of a child object: name, namespace, labels, owner.
pub fn child_meta(
    lc: &LogCluster,
    names: &ClusterNames,
    name: String,
    component: &str,
) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels(component)),
        owner_references: Some(vec![owner_reference(lc)?]),
        ..ObjectMeta::default()
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A LogCluster as the API server would hand it to the operator.

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use crate::crd::{LogCluster, LogClusterSpec};
    use crate::resources::ClusterNames;

    /// The names of `demo` in `prod` (cluster domain `cluster.local`).
    pub fn names() -> ClusterNames {
        ClusterNames {
            cluster: "demo".into(),
            namespace: "prod".into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    /// `demo` in namespace `prod`, with the spec's defaults (as the API server defaults them).
    pub fn cluster() -> LogCluster {
        let spec: LogClusterSpec =
            serde_json::from_value(serde_json::json!({})).expect("defaults deserialize");
        LogCluster {
            metadata: ObjectMeta {
                name: Some("demo".into()),
                namespace: Some("prod".into()),
                uid: Some("6f1d4c1e-0000-4000-8000-000000000001".into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// `cluster()` with a spec built from JSON (merged over the defaults by serde).
    pub fn cluster_with(spec: serde_json::Value) -> LogCluster {
        let mut lc = cluster();
        lc.spec = serde_json::from_value(spec).expect("test spec deserializes");
        lc
    }
}
