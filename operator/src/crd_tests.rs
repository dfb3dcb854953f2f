//! The generated CRD: committed copy in sync, and the schema features the operator relies on.

use kube::CustomResourceExt;
use serde_json::Value;

use crate::crd::{LogCluster, crd_yaml};

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
