//! The exact Kubernetes permissions the operator uses — the source of truth for the Helm chart's
//! Role/ClusterRole, and checked by a test that runs the operator as a ServiceAccount bound to
//! nothing more.
//!
//! [`rules`] go into a namespaced Role in every watched namespace (or one ClusterRole when the
//! operator watches all namespaces); [`lease_rules`] go into a Role in the leader election
//! Lease's namespace. No wildcards; Secrets only where LogClusters live.

use k8s_openapi::api::rbac::v1::PolicyRule;

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// Permissions in every namespace the operator watches.
pub fn rules() -> Vec<PolicyRule> {
    vec![
        // Watch LogClusters; add/remove the finalizer (JSON patch).
        rule(
            "logcluster.io",
            &["logclusters"],
            &["list", "watch", "patch"],
        ),
        // Status through server-side apply.
        rule("logcluster.io", &["logclusters/status"], &["patch"]),
        // Owned objects: server-side apply and watches. NB: an apply that creates the object
        // needs `create` besides `patch` (checked by the RBAC test against a real API server).
        rule(
            "apps",
            &["statefulsets"],
            &["get", "list", "watch", "create", "patch"],
        ),
        rule(
            "",
            &["services", "configmaps"],
            &["list", "watch", "create", "patch"],
        ),
        rule(
            "policy",
            &["poddisruptionbudgets"],
            &["list", "watch", "create", "patch"],
        ),
        // Certificates, CA and gossip key: read, apply, watch (metadata only), delete the
        // Secrets of removed users.
        rule(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        // Volume growth (patch) and the PVC retention policy (delete).
        rule(
            "",
            &["persistentvolumeclaims"],
            &["list", "patch", "delete"],
        ),
        // Rolling updates: the operator finds pods on an old template and evicts them one at a
        // time, leader last (the StatefulSet is `OnDelete`).
        rule("", &["pods"], &["list"]),
        rule("", &["pods/eviction"], &["create"]),
        // Events on LogClusters.
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// Permissions in the Lease's namespace, for leader election.
pub fn lease_rules() -> Vec<PolicyRule> {
    vec![rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards_anywhere() {
        for r in rules().iter().chain(lease_rules().iter()) {
            let all = r
                .api_groups
                .iter()
                .flatten()
                .chain(r.resources.iter().flatten())
                .chain(r.verbs.iter());
            for item in all {
                assert_ne!(item, "*", "{r:?}");
            }
        }
    }
}
