//! The chart's operator Deployment as an operations team would install it for a shared
//! cluster: two replicas (leader election through a Lease) and `watchNamespaces` (a Role in
//! each listed namespace, nothing cluster-wide), on the harness's one-node Kubernetes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use logcluster_tests::k8s::node::{self, KubeNode};

use super::k8s_journey::{POD_PATIENCE, one_cluster, step, wait_for_cluster, workspace};
use super::k8s_node::wait_for_jsonpath;

/// A namespace of its own, so that this release and the journey's never share objects.
const RELEASE_NAMESPACE: &str = "logcluster-ha";
const RELEASE: &str = "logcluster-operator";

/// The Lease's holder (a pod name), or an empty string while nobody holds it.
fn lease_holder(node: &KubeNode) -> Result<String> {
    let out = node.control_plane().kubectl_ok([
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "lease",
        RELEASE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    Ok(out.trim().to_owned())
}

/// The names of the operator's pods.
fn operator_pods(node: &KubeNode) -> Result<Vec<String>> {
    let out = node.control_plane().kubectl_ok([
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=logcluster-operator",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

/// Waits until one of `candidates` holds the Lease and returns it.
fn wait_for_holder(node: &KubeNode, candidates: &[String]) -> Result<String> {
    let deadline = Instant::now() + POD_PATIENCE;
    loop {
        let holder = lease_holder(node).unwrap_or_default();
        if candidates.contains(&holder) {
            return Ok(holder);
        }
        ensure!(
            Instant::now() < deadline,
            "the Lease is held by {holder:?}, none of {candidates:?}, after {POD_PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn k8s_operator_two_replicas_elect_one_leader_and_act_only_in_watched_namespaces() -> Result<()> {
    let started = Instant::now();
    let node = node::shared()?;
    let _one_cluster = one_cluster(node)?;
    let cp = node.control_plane();
    let watched = cp.create_namespace("watched")?;
    let unwatched = cp.create_namespace("unwatched")?;

    step(
        started,
        "helm install: replicaCount=2, watchNamespaces={watched}",
    );
    let chart = workspace().join("charts/logcluster-operator");
    let watch = format!("watchNamespaces={{{watched}}}");
    cp.helm_ok([
        "install".as_ref(),
        RELEASE.as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        RELEASE_NAMESPACE.as_ref(),
        "--create-namespace".as_ref(),
        "--set".as_ref(),
        "replicaCount=2".as_ref(),
        "--set".as_ref(),
        watch.as_ref(),
    ])
    .context("helm install")?;
    wait_for_jsonpath(
        node,
        RELEASE_NAMESPACE,
        &format!("deployment/{RELEASE}"),
        "{.status.availableReplicas}",
        "2",
        POD_PATIENCE,
    )?;

    // Namespaced RBAC only: a Role where it acts, no ClusterRole of this release.
    let release_label = format!("app.kubernetes.io/instance={RELEASE}");
    let cluster_wide = cp.kubectl_ok([
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        &release_label,
        "-o",
        "name",
    ])?;
    ensure!(
        cluster_wide.trim().is_empty(),
        "cluster-wide RBAC with watchNamespaces set:\n{cluster_wide}"
    );
    let roles = cp.kubectl_ok(["-n", &watched, "get", "roles,rolebindings", "-o", "name"])?;
    ensure!(
        roles.contains("role.rbac.authorization.k8s.io/") && roles.contains("rolebinding."),
        "no Role and RoleBinding in the watched namespace {watched}: {roles:?}"
    );

    // One of the two replicas holds the Lease.
    let pods = operator_pods(node)?;
    ensure!(pods.len() == 2, "operator pods: {pods:?}");
    let holder = wait_for_holder(node, &pods)?;
    step(started, &format!("{holder} holds the Lease"));

    // The leader runs a LogCluster in the watched namespace; the same LogCluster in a
    // namespace it does not watch is not touched (no RBAC there, and no watch).
    let example = std::fs::read_to_string(workspace().join("examples/minimal.yaml"))?;
    let single = example.replace("replicas: 3", "replicas: 1");
    ensure!(
        single != example,
        "examples/minimal.yaml has no `replicas: 3`"
    );
    for ns in [&watched, &unwatched] {
        cp.kubectl_with_stdin_ok(["-n", ns, "apply", "-f", "-"], &single)?;
    }
    wait_for_cluster(node, &watched, "demo", 1)?;
    step(started, "the watched namespace's LogCluster is ready");
    let untouched = cp.kubectl_ok([
        "-n",
        &unwatched,
        "get",
        "statefulsets,secrets,configmaps",
        "-l",
        "app.kubernetes.io/instance=demo",
        "-o",
        "name",
    ])?;
    let status = cp.kubectl_ok([
        "-n",
        &unwatched,
        "get",
        "lc",
        "demo",
        "-o",
        "jsonpath={.status}",
    ])?;
    ensure!(
        untouched.trim().is_empty() && status.trim().is_empty(),
        "the operator acted in {unwatched}, which it does not watch: {untouched} {status}"
    );

    // The leader's pod goes: the other replica (or its replacement) takes the Lease over and
    // the cluster stays reconciled.
    step(
        started,
        &format!("kubectl delete pod {holder} (the Lease holder)"),
    );
    cp.kubectl_ok(["-n", RELEASE_NAMESPACE, "delete", "pod", &holder])?;
    let deadline = Instant::now() + POD_PATIENCE;
    let successor = loop {
        let pods: Vec<String> = operator_pods(node)?
            .into_iter()
            .filter(|p| *p != holder)
            .collect();
        let current = lease_holder(node).unwrap_or_default();
        if pods.contains(&current) {
            break current;
        }
        ensure!(
            Instant::now() < deadline,
            "no new Lease holder among {pods:?} after {POD_PATIENCE:?} (holder {current:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    step(started, &format!("{successor} took the Lease over"));
    cp.kubectl_ok(["-n", &watched, "scale", "lc/demo", "--replicas=3"])?;
    wait_for_cluster(node, &watched, "demo", 3)?;

    step(started, "cleanup: delete the LogClusters, helm uninstall");
    for ns in [&watched, &unwatched] {
        cp.kubectl_ok(["-n", ns, "delete", "lc", "demo", "--timeout=300s"])?;
    }
    cp.helm_ok([
        "uninstall",
        RELEASE,
        "--namespace",
        RELEASE_NAMESPACE,
        "--wait",
    ])?;
    for ns in [&watched, &unwatched] {
        cp.kubectl_ok(["delete", "namespace", ns, "--wait=false"])?;
    }
    step(started, "done");
    Ok(())
}
