//! The Kubernetes test harness itself: a real API server with the features the operator and the
//! chart rely on (CRDs with CEL rules and the scale subresource, status subresources, server-side
//! apply of every kind the operator owns) and the helm binary.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams, PostParams};
use logcluster_tests::k8s::{self, ControlPlane, Tool};
use serde_json::json;

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.harness.logcluster.io
spec:
  group: harness.logcluster.io
  scope: Namespaced
  names: { kind: Widget, listKind: WidgetList, plural: widgets, singular: widget }
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
        scale:
          specReplicasPath: .spec.replicas
          statusReplicasPath: .status.replicas
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas, maxReplicas]
              x-kubernetes-validations:
                - rule: "self.replicas <= self.maxReplicas"
                  message: "replicas must not exceed maxReplicas"
              properties:
                replicas: { type: integer, minimum: 0 }
                maxReplicas: { type: integer }
                storageClass:
                  type: string
                  x-kubernetes-validations:
                    - rule: "self == oldSelf"
                      message: "storageClass is immutable"
            status:
              type: object
              properties:
                replicas: { type: integer }
"#;

fn widget(name: &str, replicas: u32, max: u32, storage_class: &str) -> String {
    format!(
        "apiVersion: harness.logcluster.io/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n  \
         replicas: {replicas}\n  maxReplicas: {max}\n  storageClass: {storage_class}\n"
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn k8s_api_server_is_ready_and_matches_the_k8s_openapi_version() -> Result<()> {
    let cp = k8s::shared()?;
    assert_eq!(cp.kubectl_ok(["get", "--raw", "/readyz"])?.trim(), "ok");
    let version: serde_json::Value =
        serde_json::from_str(&cp.kubectl_ok(["get", "--raw", "/version"])?)?;
    assert_eq!(version["gitVersion"], Tool::KubeApiserver.version());
    // The workspace compiles k8s-openapi with `v1_35`; the server must speak the same release.
    assert_eq!(version["minor"], "35");
    let namespaces = cp.kubectl_ok(["get", "namespaces", "-o", "name"])?;
    assert!(
        namespaces.lines().any(|l| l == "namespace/default"),
        "{namespaces}"
    );
    Ok(())
}

#[tokio::test]
async fn k8s_kube_client_talks_to_the_api_server_as_admin() -> Result<()> {
    let cp = k8s::shared()?;
    let client = cp.kube_client().await?;
    let info = client.apiserver_version().await?;
    assert_eq!(info.git_version, Tool::KubeApiserver.version());
    // system:masters may do anything, including what the operator's RBAC will be checked against.
    let review = cp.kubectl_ok(["auth", "can-i", "*", "*", "--all-namespaces"])?;
    assert_eq!(review.trim(), "yes");
    Ok(())
}

#[test]
fn k8s_crd_with_cel_rules_and_scale_subresource_works() -> Result<()> {
    let cp = k8s::shared()?;
    let ns = cp.create_namespace("crd")?;
    let out = cp.kubectl_with_stdin(["apply", "--server-side", "-f", "-"], WIDGET_CRD)?;
    ensure!(out.status.success(), "applying the CRD: {}", stderr(&out));
    cp.kubectl_ok([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/widgets.harness.logcluster.io",
    ])?;

    let apply = |manifest: String| {
        cp.kubectl_with_stdin(["-n", &ns, "apply", "--server-side", "-f", "-"], &manifest)
    };
    let out = apply(widget("w", 1, 3, "fast"))?;
    ensure!(
        out.status.success(),
        "a valid Widget was refused: {}",
        stderr(&out)
    );

    let out = apply(widget("too-big", 5, 3, "fast"))?;
    ensure!(
        !out.status.success(),
        "a Widget breaking the CEL rule was accepted"
    );
    assert!(
        stderr(&out).contains("replicas must not exceed maxReplicas"),
        "{}",
        stderr(&out)
    );
    let out = cp.kubectl(["-n", &ns, "get", "widget", "too-big"])?;
    assert!(
        !out.status.success(),
        "the refused Widget was stored anyway"
    );

    // Transition rules (immutable fields) see the old object.
    let out = apply(widget("w", 1, 3, "slow"))?;
    ensure!(!out.status.success(), "an immutable field was changed");
    assert!(
        stderr(&out).contains("storageClass is immutable"),
        "{}",
        stderr(&out)
    );

    // `kubectl scale` goes through the scale subresource, and CEL still guards the result.
    cp.kubectl_ok(["-n", &ns, "scale", "widget/w", "--replicas=3"])?;
    let replicas = cp.kubectl_ok([
        "-n",
        &ns,
        "get",
        "widget",
        "w",
        "-o",
        "jsonpath={.spec.replicas}",
    ])?;
    assert_eq!(replicas, "3");
    let scale_path = format!("/apis/harness.logcluster.io/v1/namespaces/{ns}/widgets/w/scale");
    let scale: serde_json::Value =
        serde_json::from_str(&cp.kubectl_ok(["get", "--raw", &scale_path])?)?;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    let out = cp.kubectl(["-n", &ns, "scale", "widget/w", "--replicas=4"])?;
    ensure!(
        !out.status.success(),
        "scaling past maxReplicas was accepted"
    );
    assert!(
        stderr(&out).contains("replicas must not exceed maxReplicas"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn k8s_every_kind_the_operator_owns_can_be_server_side_applied() -> Result<()> {
    let cp = k8s::shared()?;
    let ns = cp.create_namespace("owned")?;
    let manifests = r#"
apiVersion: v1
kind: Secret
metadata: { name: tls }
type: kubernetes.io/tls
stringData: { tls.crt: "cert", tls.key: "key" }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: config }
data: { node.toml: "id = 1" }
---
apiVersion: v1
kind: Service
metadata: { name: peers }
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: { app: logcluster }
  ports: [{ name: raft, port: 7000 }]
---
apiVersion: v1
kind: Service
metadata: { name: client }
spec:
  selector: { app: logcluster }
  ports: [{ name: grpc, port: 7001 }]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: { name: quorum }
spec:
  maxUnavailable: 1
  selector: { matchLabels: { app: logcluster } }
"#;
    let out = cp.kubectl_with_stdin(
        [
            "-n",
            &ns,
            "apply",
            "--server-side",
            "--field-manager=logcluster-test",
            "-f",
            "-",
        ],
        manifests,
    )?;
    ensure!(
        out.status.success(),
        "server-side apply failed: {}",
        stderr(&out)
    );
    let ip = cp.kubectl_ok([
        "-n",
        &ns,
        "get",
        "service",
        "client",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    assert!(
        ip.starts_with("10.96.0."),
        "cluster IP {ip:?} outside {}",
        k8s::SERVICE_CLUSTER_IP_RANGE
    );
    let names = cp.kubectl_ok([
        "-n",
        &ns,
        "get",
        "secret,configmap,service,pdb",
        "-o",
        "name",
    ])?;
    for expected in [
        "secret/tls",
        "configmap/config",
        "service/peers",
        "service/client",
        "poddisruptionbudget.policy/quorum",
    ] {
        assert!(
            names.lines().any(|l| l == expected),
            "{expected} missing from:\n{names}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn k8s_statefulset_status_is_written_through_the_status_subresource() -> Result<()> {
    let cp = k8s::shared()?;
    let ns = cp.create_namespace("sts")?;
    let api: Api<StatefulSet> = Api::namespaced(cp.kube_client().await?, &ns);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "node" },
        "spec": {
            "replicas": 3,
            "serviceName": "peers",
            "selector": { "matchLabels": { "app": "logcluster" } },
            "template": {
                "metadata": { "labels": { "app": "logcluster" } },
                "spec": { "containers": [{ "name": "lognode", "image": "lognode:test" }] }
            }
        }
    }))?;
    api.create(&PostParams::default(), &sts).await?;

    // What the controller-manager would write; tests of the operator do the same.
    let status = json!({ "status": {
        "observedGeneration": 1, "replicas": 3, "readyReplicas": 2,
        "currentReplicas": 3, "updatedReplicas": 3, "availableReplicas": 2
    }});
    api.patch_status("node", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let got = api
        .get_status("node")
        .await?
        .status
        .context("status is empty")?;
    assert_eq!((got.replicas, got.ready_replicas), (3, Some(2)));

    // The main resource ignores status, the status subresource ignores spec.
    let both = json!({ "spec": { "replicas": 5 }, "status": { "readyReplicas": 0 } });
    api.patch("node", &PatchParams::default(), &Patch::Merge(&both))
        .await?;
    let got = api.get("node").await?;
    assert_eq!(got.spec.as_ref().and_then(|s| s.replicas), Some(5));
    assert_eq!(got.status.as_ref().and_then(|s| s.ready_replicas), Some(2));
    Ok(())
}

#[test]
fn k8s_helm_runs_against_the_api_server() -> Result<()> {
    let cp = k8s::shared()?;
    let version = cp.helm_ok(["version", "--short"])?;
    assert!(version.starts_with(Tool::Helm.version()), "{version}");
    // `helm list` reads release Secrets from the API server: proves the kubeconfig works for it.
    let releases = cp.helm_ok(["list", "--all-namespaces", "--short"])?;
    assert_eq!(releases.trim(), "");
    Ok(())
}

#[test]
fn k8s_control_plane_stops_everything_when_dropped() -> Result<()> {
    // A private control plane (not the shared one) so that it can be dropped here.
    let cp = ControlPlane::start()?;
    let ns = cp.create_namespace("drop")?;
    cp.kubectl_ok(["get", "namespace", &ns])?;
    let pids = cp.pids();
    assert_eq!(pids.len(), 2, "expected etcd and kube-apiserver: {pids:?}");
    let dir = cp.dir().to_owned();
    drop(cp);
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in pids {
        while running(pid) {
            ensure!(
                Instant::now() < deadline,
                "pid {pid} survived the control plane's drop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
    Ok(())
}

/// Whether `pid` is a live (not zombie) process.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn k8s_controller_manager_option_collects_garbage_and_finishes_namespace_deletion() -> Result<()> {
    // Without it, owner references and namespace deletion are never acted on (see the module
    // docs); operator tests that need either start a private control plane like this one.
    let cp = ControlPlane::start_with(k8s::ControlPlaneOptions {
        controllers: vec!["garbagecollector".into(), "namespace".into()],
        ..Default::default()
    })?;
    assert_eq!(
        cp.pids().len(),
        3,
        "expected etcd, kube-apiserver, kube-controller-manager"
    );
    let ns = cp.create_namespace("gc")?;
    cp.kubectl_ok(["-n", &ns, "create", "configmap", "owner"])?;
    let uid = cp.kubectl_ok([
        "-n",
        &ns,
        "get",
        "configmap",
        "owner",
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    let owned = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "owned", "ownerReferences": [
            { "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid }
        ]},
    });
    let out = cp.kubectl_with_stdin(["-n", &ns, "create", "-f", "-"], &owned.to_string())?;
    ensure!(
        out.status.success(),
        "creating the owned Secret: {}",
        stderr(&out)
    );

    cp.kubectl_ok(["-n", &ns, "delete", "configmap", "owner"])?;
    cp.kubectl_ok([
        "-n",
        &ns,
        "wait",
        "--for=delete",
        "secret/owned",
        "--timeout=90s",
    ])?;
    cp.kubectl_ok(["delete", "namespace", &ns, "--wait=false"])?;
    cp.kubectl_ok([
        "wait",
        "--for=delete",
        &format!("namespace/{ns}"),
        "--timeout=90s",
    ])?;
    Ok(())
}
