//! Reconcile scenarios against the mocked API server (`fixtures`): one situation each, one
//! reconcile, assertions on exactly what the operator sent.

use std::sync::Arc;

use http::{Method, StatusCode};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fixtures::{FakeAdmin, FakeConnector, MockApi, status_error};
use super::observe::claim_ordinal;
use super::{backoff, error_policy, reconcile};
use crate::crd::{FINALIZER, LogCluster};
use crate::resources::ClusterNames;
use crate::resources::fixtures::cluster_with;
use crate::{Error, Result};

const NS: &str = "/api/v1/namespaces/prod";
const LC: &str = "/apis/logcluster.io/v1alpha1/namespaces/prod/logclusters/demo";
const STS: &str = "/apis/apps/v1/namespaces/prod/statefulsets/demo";

/// A LogCluster with the finalizer already on, as the API server would serve it.
fn live(spec: Value, status: Option<Value>) -> LogCluster {
    let mut lc = cluster_with(spec);
    lc.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    if let Some(status) = status {
        lc.status = Some(serde_json::from_value(status).unwrap());
    }
    lc
}

/// `lc` with a deletion timestamp: the finalizer runs the cleanup.
fn deleting(mut lc: LogCluster) -> LogCluster {
    lc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    lc
}

fn statefulset(replicas: i32) -> Value {
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "demo", "namespace": "prod", "uid": "sts-uid"},
        "spec": {
            "replicas": replicas,
            "serviceName": "demo-nodes",
            "selector": {"matchLabels": {"app.kubernetes.io/name": "logcluster"}},
            "template": {"spec": {"containers": [{"name": "lognode"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"resources": {"requests": {"storage": "10Gi"}}}}]
        },
        "status": {"replicas": replicas, "readyReplicas": replicas}
    }))
    .unwrap();
    serde_json::to_value(sts).unwrap()
}

fn initialized_status(voters: &[u64]) -> Value {
    let members: Vec<Value> = voters
        .iter()
        .map(|&id| json!({"pod": format!("demo-{id}"), "nodeId": id, "role": "Voter", "healthy": true, "lag": 0}))
        .collect();
    json!({"initialized": true, "members": members})
}

async fn run(
    api: &MockApi,
    ctx: &Arc<crate::controller::Context>,
    lc: LogCluster,
) -> Result<Action> {
    api.put(LC, serde_json::to_value(&lc).unwrap());
    reconcile(Arc::new(lc), ctx.clone()).await
}

fn status_patch(api: &MockApi) -> Value {
    let patches = api.find(&Method::PATCH, "/logclusters/demo/status");
    patches.last().expect("the status was written").body["status"].clone()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn the_finalizer_is_added_before_anything_else() {
    let (api, client) = MockApi::start();
    let ctx = super::fixtures::context(client, FakeConnector::default());
    let lc = cluster_with(json!({}));
    let action = run(&api, &ctx, lc).await.unwrap();
    assert_eq!(action, Action::await_change());
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, Method::PATCH);
    assert_eq!(requests[0].path(), LC);
    assert!(
        requests[0].body.to_string().contains(FINALIZER),
        "{}",
        requests[0].body
    );
}

#[tokio::test]
async fn a_new_cluster_gets_every_owned_object_and_starts_with_one_pod() {
    let (api, client) = MockApi::start();
    let connector = FakeConnector::default();
    let ctx = super::fixtures::context(client, connector.clone());
    let action = run(
        &api,
        &ctx,
        live(
            json!({"acl": {"users": [{"name": "alice", "permissions": ["produce"]}]}}),
            None,
        ),
    )
    .await
    .unwrap();
    // Bootstrapping: come back soon.
    assert_eq!(action, Action::requeue(ctx.step_interval));

    for secret in [
        "demo-ca",
        "demo-node-tls",
        "demo-operator-tls",
        "demo-user-alice",
        "demo-gossip",
    ] {
        assert_eq!(
            api.find(&Method::PATCH, &format!("/secrets/{secret}"))
                .len(),
            1,
            "{secret} not applied once"
        );
    }
    assert_eq!(api.find(&Method::PATCH, "/configmaps/demo-config").len(), 1);
    assert_eq!(api.find(&Method::PATCH, "/services/demo-nodes").len(), 1);
    assert_eq!(api.find(&Method::PATCH, "/services/demo").len(), 1);
    let sts = api.find(&Method::PATCH, "/statefulsets/demo");
    assert_eq!(sts[0].body["spec"]["replicas"], 1);
    let pdb = api.find(&Method::PATCH, "/poddisruptionbudgets/demo");
    assert_eq!(
        pdb[0].body["spec"]["maxUnavailable"], 0,
        "one voter tolerates no disruption"
    );
    // Every apply is a server-side apply by the one field manager, forced.
    for r in api.requests().iter().filter(|r| {
        r.method == Method::PATCH && !r.path().ends_with(LC) && !r.path().contains("/events")
    }) {
        assert!(
            r.uri.contains("fieldManager=logcluster-operator"),
            "{}",
            r.uri
        );
        assert!(r.uri.contains("force=true"), "{}", r.uri);
    }
    // The operator dialled the nodes with its own certificate (CN operator).
    assert_eq!(
        connector.connected_with.lock().unwrap().as_slice(),
        ["operator"]
    );

    let status = status_patch(&api);
    assert_eq!(status["initialized"], false);
    assert_eq!(status["scaling"]["phase"], "Bootstrapping");
    assert_eq!(condition(&status, "CertificatesReady")["status"], "True");
    assert_eq!(condition(&status, "Progressing")["reason"], "Bootstrapping");
    let text = status.to_string();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("BEGIN CERTIFICATE"),
        "key material in status: {text}"
    );
}

#[tokio::test]
async fn node_0_is_initialized_once_and_the_status_records_it() {
    let (api, client) = MockApi::start();
    let connector = FakeConnector::default();
    // Node 0 answers with an empty membership: uninitialized.
    connector
        .admin
        .status
        .lock()
        .unwrap()
        .insert(0, Default::default());
    let ctx = super::fixtures::context(client, connector.clone());
    api.put(STS, statefulset(1));
    run(&api, &ctx, live(json!({}), None)).await.unwrap();
    assert_eq!(connector.admin.calls(), ["initialize node=0"]);
    assert_eq!(status_patch(&api)["initialized"], true);
}

#[tokio::test]
async fn an_initialized_cluster_whose_nodes_lost_their_data_is_not_initialized_again() {
    let (api, client) = MockApi::start();
    let connector = FakeConnector::default();
    for node in 0..3 {
        connector
            .admin
            .status
            .lock()
            .unwrap()
            .insert(node, Default::default());
    }
    let ctx = super::fixtures::context(client, connector.clone());
    api.put(STS, statefulset(3));
    run(
        &api,
        &ctx,
        live(json!({}), Some(initialized_status(&[0, 1, 2]))),
    )
    .await
    .unwrap();
    assert!(
        connector.admin.calls().is_empty(),
        "{:?}",
        connector.admin.calls()
    );
    let status = status_patch(&api);
    assert_eq!(status["scaling"]["phase"], "Blocked");
    assert_eq!(condition(&status, "Degraded")["status"], "True");
    assert_eq!(condition(&status, "Available")["reason"], "DataLost");
}

#[tokio::test]
async fn a_scale_down_of_the_leader_moves_leadership_first_and_keeps_the_pods() {
    let (api, client) = MockApi::start();
    let connector = FakeConnector {
        admin: FakeAdmin::led(2, &[0, 1, 2], &[], &[0, 1, 2]),
        ..Default::default()
    };
    let ctx = super::fixtures::context(client, connector.clone());
    api.put(STS, statefulset(3));
    run(
        &api,
        &ctx,
        live(json!({"replicas": 2}), Some(initialized_status(&[0, 1, 2]))),
    )
    .await
    .unwrap();
    assert_eq!(connector.admin.calls(), ["transfer_leader via=2 to=0"]);
    let sts = api.find(&Method::PATCH, "/statefulsets/demo");
    assert_eq!(
        sts[0].body["spec"]["replicas"], 3,
        "no pod goes before its node left the voters"
    );
    let status = status_patch(&api);
    assert_eq!(status["scaling"]["phase"], "ScalingDown");
    assert_eq!(status["leader"], "demo-2");
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_failed_admin_step_is_reported_then_fails_the_reconcile() {
    let (api, client) = MockApi::start();
    let connector = FakeConnector {
        admin: FakeAdmin::led(0, &[0, 1, 2], &[], &[0, 1, 2]),
        ..Default::default()
    };
    connector.admin.fail.lock().unwrap().push("remove_node");
    let ctx = super::fixtures::context(client, connector.clone());
    api.put(STS, statefulset(3));
    let lc = live(json!({"replicas": 2}), Some(initialized_status(&[0, 1, 2])));
    let err = run(&api, &ctx, lc.clone()).await.unwrap_err();
    assert!(err.to_string().contains("remove_node failed"), "{err}");
    assert_eq!(connector.admin.calls(), ["remove_node via=0 node=2"]);
    assert_eq!(status_patch(&api)["scaling"]["phase"], "ScalingDown");
    let action = error_policy(Arc::new(lc), &err, ctx.clone());
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(1)));
    assert_eq!(ctx.metrics.failures("admin_api"), 1);
}

#[tokio::test]
async fn a_refused_scale_down_is_explained_and_changes_nothing() {
    let (api, client) = MockApi::start();
    let admin = FakeAdmin::led(0, &[0, 1, 2], &[], &[0, 1, 2]);
    for answer in admin.status.lock().unwrap().values_mut() {
        answer.members[1].healthy = false;
    }
    let connector = FakeConnector {
        admin,
        ..Default::default()
    };
    let ctx = super::fixtures::context(client, connector.clone());
    api.put(STS, statefulset(3));
    run(
        &api,
        &ctx,
        live(json!({"replicas": 2}), Some(initialized_status(&[0, 1, 2]))),
    )
    .await
    .unwrap();
    assert!(connector.admin.calls().is_empty());
    let status = status_patch(&api);
    assert_eq!(status["scaling"]["phase"], "Blocked");
    assert!(
        status["scaling"]["message"]
            .as_str()
            .unwrap()
            .contains("quorum needs 2"),
        "{status}"
    );
    assert_eq!(
        condition(&status, "Progressing")["reason"],
        "ScalingBlocked"
    );
    let events = api.find(&Method::POST, "/events");
    assert!(
        events.iter().any(|e| e.body["reason"] == "ScalingBlocked"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_missing_external_ca_is_reported_and_nothing_is_deployed() {
    let (api, client) = MockApi::start();
    let ctx = super::fixtures::context(client, FakeConnector::default());
    let lc = live(json!({"tls": {"caSecretName": "ext-ca"}}), None);
    let err = run(&api, &ctx, lc.clone()).await.unwrap_err();
    assert!(err.to_string().contains("ext-ca"), "{err}");
    assert!(api.find(&Method::PATCH, "/statefulsets/demo").is_empty());
    assert!(
        api.find(&Method::PATCH, "/secrets/demo-ca").is_empty(),
        "no CA is generated in its place"
    );
    let status = status_patch(&api);
    let certs = condition(&status, "CertificatesReady");
    assert_eq!(
        (certs["status"].as_str(), certs["reason"].as_str()),
        (Some("False"), Some("CertificateError"))
    );
    assert!(certs["message"].as_str().unwrap().contains("ext-ca"));
    error_policy(Arc::new(lc), &err, ctx.clone());
    assert_eq!(ctx.metrics.failures("bad_secret"), 1);
}

#[tokio::test]
async fn an_apply_conflict_is_counted_by_reason_and_backs_off() {
    let (api, client) = MockApi::start();
    api.on(|method, uri, _| {
        (method == Method::PATCH && uri.contains("/configmaps/")).then(|| {
            (
                StatusCode::CONFLICT,
                status_error(409, "Conflict", "the object has been modified"),
            )
        })
    });
    let ctx = super::fixtures::context(client, FakeConnector::default());
    let lc = live(json!({}), None);
    let err = run(&api, &ctx, lc.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "kube_conflict");
    let first = error_policy(Arc::new(lc.clone()), &err, ctx.clone());
    let second = error_policy(Arc::new(lc), &err, ctx.clone());
    assert_eq!(first, Action::requeue(std::time::Duration::from_secs(1)));
    assert_eq!(second, Action::requeue(std::time::Duration::from_secs(2)));
    assert_eq!(ctx.metrics.failures("kube_conflict"), 2);
    assert!(
        api.find(&Method::PATCH, "/statefulsets/demo").is_empty(),
        "stopped at the failure"
    );
}

#[tokio::test]
async fn a_paused_cluster_is_observed_and_reported_but_not_changed() {
    let (api, client) = MockApi::start();
    let connector = FakeConnector::default();
    let ctx = super::fixtures::context(client, connector.clone());
    api.put(STS, statefulset(3));
    run(
        &api,
        &ctx,
        live(
            json!({"paused": true, "replicas": 5}),
            Some(initialized_status(&[0, 1, 2])),
        ),
    )
    .await
    .unwrap();
    let writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method != Method::GET && !r.path().contains("/events"))
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    assert_eq!(writes, [format!("PATCH {LC}/status")]);
    let status = status_patch(&api);
    assert_eq!(condition(&status, "Progressing")["reason"], "Paused");
    assert_eq!(status["replicas"], 3);
}

#[tokio::test]
async fn cleanup_deletes_the_volumes_only_when_asked_to() {
    for (policy, deletes) in [("Delete", 2), ("Retain", 0)] {
        let (api, client) = MockApi::start();
        let ctx = super::fixtures::context(client, FakeConnector::default());
        let claims: Vec<Value> = (0..2)
            .map(|i| json!({"metadata": {"name": format!("data-demo-{i}"), "namespace": "prod",
                "labels": {"logcluster.io/cluster": "demo", "app.kubernetes.io/name": "logcluster"}}}))
            .collect();
        api.put_list(&format!("{NS}/persistentvolumeclaims"), claims);
        let lc = deleting(live(
            json!({"storage": {"pvcRetention": {"whenDeleted": policy}}}),
            None,
        ));
        run(&api, &ctx, lc).await.unwrap();
        let deleted = api.find(&Method::DELETE, "");
        assert_eq!(deleted.len(), deletes, "{policy}: {deleted:?}");
        for d in &deleted {
            assert!(
                d.path().contains("/persistentvolumeclaims/data-demo-"),
                "{}",
                d.path()
            );
        }
        // Then the finalizer is removed.
        let patches = api.find(&Method::PATCH, LC);
        assert_eq!(patches.len(), 1, "{policy}");
        assert!(
            patches[0].body.to_string().contains("remove"),
            "{}",
            patches[0].body
        );
    }
}

#[tokio::test]
async fn cleanup_keeps_the_finalizer_when_deleting_volumes_fails() {
    let (api, client) = MockApi::start();
    api.on(|method, _, _| {
        (method == Method::DELETE)
            .then(|| (StatusCode::FORBIDDEN, status_error(403, "Forbidden", "no")))
    });
    let ctx = super::fixtures::context(client, FakeConnector::default());
    api.put_list(
        &format!("{NS}/persistentvolumeclaims"),
        vec![json!({"metadata": {"name": "data-demo-0", "namespace": "prod"}})],
    );
    let lc = deleting(live(
        json!({"storage": {"pvcRetention": {"whenDeleted": "Delete"}}}),
        None,
    ));
    let err = run(&api, &ctx, lc).await.unwrap_err();
    assert!(matches!(&err, Error::Finalizer(_)), "{err}");
    assert_eq!(err.metric_label(), "kube_forbidden");
    assert!(
        api.find(&Method::PATCH, LC).is_empty(),
        "the finalizer must stay until cleanup succeeds"
    );
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let delays: Vec<u64> = [1, 2, 3, 4, 9, 10, 50]
        .iter()
        .map(|&f| backoff(f).as_secs())
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 256, 300, 300]);
}

#[test]
fn claim_ordinals_are_parsed_from_claim_names() {
    let names = ClusterNames {
        cluster: "demo".into(),
        namespace: "ns".into(),
        cluster_domain: "cluster.local".into(),
    };
    assert_eq!(claim_ordinal("data-demo-3", &names), Some(3));
    assert_eq!(claim_ordinal("data-demo-x", &names), None);
    assert_eq!(claim_ordinal("data-demo2-3", &names), None);
    assert_eq!(claim_ordinal("data-other-3", &names), None);
}
