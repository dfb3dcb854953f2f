//! The README's "On Kubernetes" section, walked on the harness's one-node Kubernetes
//! ([`logcluster_tests::k8s::node`]): the chart installs the operator as a pod from its image,
//! `examples/minimal.yaml` becomes three lognode pods, and client pods built from the README's
//! own YAML produce and consume through the client Service with the user Secret.
//!
//! The commands and manifests are the README's: the client pod is parsed out of README.md, so
//! the documentation cannot drift from what is tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, PostParams};
use logcluster_api::{ClientConfig, LogClient};
use logcluster_certs::{CertificateAuthority, CertificateRequest};
use logcluster_tests::cluster::Workload;
use logcluster_tests::history::{History, Outcome, Summary, check};
use logcluster_tests::k8s::node::{self, KubeNode, NodeRuntime};
use logcluster_tests::k8s::pod_client::{self, PodAddresses};
use serde_yaml::Value;

use super::k8s_node::wait_for_jsonpath;

/// Starting pods while the machine compiles can take minutes.
pub(super) const POD_PATIENCE: Duration = Duration::from_secs(300);
/// A cluster of three pods: images are local, but each node waits for its certificates,
/// DNS and the operator's bootstrap.
pub(super) const CLUSTER_PATIENCE: Duration = Duration::from_secs(420);
/// The README's namespace for the operator.
pub(super) const OPERATOR_NAMESPACE: &str = "logcluster-system";

pub(super) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// Tests that run LogClusters share the node's two cores: one cluster at a time.
static CLUSTERS: Mutex<()> = Mutex::new(());

/// Takes the one-cluster-at-a-time lock, then installs the operator as the README does; the
/// guard is held for the whole test.
pub(super) fn one_cluster_with_operator(node: &KubeNode) -> Result<MutexGuard<'static, ()>> {
    let guard = one_cluster(node)?;
    install_operator(node).context("installing the operator")?;
    Ok(guard)
}

/// Takes the one-cluster-at-a-time lock on a node cleared of earlier tests' leftovers; the
/// test installs the operator its own way.
pub(super) fn one_cluster(node: &KubeNode) -> Result<MutexGuard<'static, ()>> {
    let guard = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    remove_leftovers(node).context("removing what an earlier failed test left")?;
    Ok(guard)
}

/// A test that failed half-way leaves its LogClusters, their pods and volumes, and the operator
/// release behind; the next test would meet them (a second `helm install` fails, old volumes
/// hold another cluster's data). Removes them, so one failure is reported once.
fn remove_leftovers(node: &KubeNode) -> Result<()> {
    let cp = node.control_plane();
    let listed = cp.helm_ok(["list", "--all-namespaces", "--output", "json"])?;
    let releases: Vec<serde_json::Value> =
        serde_json::from_str(&listed).with_context(|| format!("helm list: {listed:?}"))?;
    if releases.is_empty() {
        return Ok(());
    }
    eprintln!("k8s: an earlier test left releases installed: removing them and its LogClusters");
    // While the operator still runs, so that it sees the deletions through.
    cp.kubectl_ok([
        "delete",
        "lc",
        "--all",
        "--all-namespaces",
        "--timeout=300s",
    ])?;
    cp.kubectl_ok(["-n", "default", "delete", "pvc", "--all", "--timeout=300s"])?;
    for release in &releases {
        let field = |key: &str| release[key].as_str().unwrap_or_default().to_owned();
        let (name, namespace) = (field("name"), field("namespace"));
        cp.helm_ok(["uninstall", &name, "--namespace", &namespace, "--wait"])?;
    }
    wait_until_none_named(
        node,
        &["get", "clusterroles,clusterrolebindings"],
        "logcluster-operator",
    )
}

/// `helm install`, as the README gives it; waits for the operator's Deployment to be available.
fn install_operator(node: &KubeNode) -> Result<()> {
    let cp = node.control_plane();
    let chart = workspace().join("charts/logcluster-operator");
    cp.helm_ok([
        "install".as_ref(),
        "logcluster-operator".as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        OPERATOR_NAMESPACE.as_ref(),
        "--create-namespace".as_ref(),
    ])
    .context("helm install")?;
    wait_for_jsonpath(
        node,
        OPERATOR_NAMESPACE,
        "deployment/logcluster-operator",
        "{.status.availableReplicas}",
        "1",
        POD_PATIENCE,
    )
    .context("the operator's Deployment")?;
    Ok(())
}

/// The client pod of the README's "Connecting a client" section, as the README writes it.
fn readme_client_yaml() -> Result<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    let section = readme
        .split_once("### Connecting a client")
        .context("README.md has no \"Connecting a client\" section")?
        .1;
    let block = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .context("no yaml block in \"Connecting a client\"")?
        .0;
    Ok(block.to_owned())
}

/// The README's client pod as a value to edit.
///
/// kubectl reads YAML 1.1, where `defaultMode: 0440` is octal; serde_yaml reads YAML 1.2, where
/// a leading zero makes it a string, which the API server would refuse once re-serialized. The
/// mode is turned into the number kubectl sees.
fn readme_client_pod() -> Result<Value> {
    let mut pod: Value =
        serde_yaml::from_str(&readme_client_yaml()?).context("the README's client pod")?;
    ensure!(
        pod["kind"].as_str() == Some("Pod"),
        "the README's client manifest is not a Pod"
    );
    if let Some(volumes) = pod["spec"]["volumes"].as_sequence_mut() {
        for volume in volumes {
            let mode = &mut volume["secret"]["defaultMode"];
            if let Some(octal) = mode.as_str().and_then(|m| m.strip_prefix('0')) {
                let bits = u32::from_str_radix(octal, 8)
                    .with_context(|| format!("defaultMode {octal:?} is not octal"))?;
                *mode = Value::from(bits);
            }
        }
    }
    Ok(pod)
}

/// The README's client pod renamed and running `logctl` with other arguments.
pub(super) fn client_pod(name: &str, args: &[&str]) -> Result<Value> {
    let mut pod = readme_client_pod()?;
    pod["metadata"]["name"] = Value::from(name);
    pod["spec"]["containers"][0]["args"] =
        Value::Sequence(args.iter().map(|a| Value::from(*a)).collect());
    Ok(pod)
}

fn apply(node: &KubeNode, namespace: &str, manifest: &Value) -> Result<()> {
    let yaml = serde_yaml::to_string(manifest)?;
    node.control_plane()
        .kubectl_with_stdin_ok(["-n", namespace, "apply", "-f", "-"], &yaml)
        .map(drop)
        .context("kubectl apply")
}

fn logs(node: &KubeNode, namespace: &str, pod: &str) -> Result<String> {
    let out = node
        .control_plane()
        .kubectl(["-n", namespace, "logs", pod])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a client pod to its end and returns its phase and its logs.
pub(super) fn run_client(
    node: &KubeNode,
    namespace: &str,
    name: &str,
    pod: &Value,
) -> Result<(String, String)> {
    apply(node, namespace, pod)?;
    let cp = node.control_plane();
    let deadline = Instant::now() + POD_PATIENCE;
    loop {
        let phase = cp.kubectl_ok([
            "-n",
            namespace,
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.status.phase}",
        ])?;
        let phase = phase.trim().to_owned();
        if phase == "Succeeded" || phase == "Failed" {
            let logs = logs(node, namespace, name)?;
            cp.kubectl_ok(["-n", namespace, "delete", "pod", name, "--wait=false"])?;
            return Ok((phase, logs));
        }
        if Instant::now() >= deadline {
            let describe = cp.kubectl_ok(["-n", namespace, "describe", "pod", name])?;
            bail!("pod {name} is still {phase:?} after {POD_PATIENCE:?}\n{describe}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until a LogCluster reports Ready with `replicas` ready pods and a leader.
pub(super) fn wait_for_cluster(
    node: &KubeNode,
    namespace: &str,
    name: &str,
    replicas: u32,
) -> Result<()> {
    let what = format!("lc/{name}");
    wait_for_jsonpath(
        node,
        namespace,
        &what,
        r#"{.status.conditions[?(@.type=="Ready")].status}/{.status.readyReplicas}"#,
        &format!("True/{replicas}"),
        CLUSTER_PATIENCE,
    )
    .with_context(|| {
        let pods = node
            .control_plane()
            .kubectl_ok(["-n", namespace, "get", "pods", "-o", "wide"])
            .unwrap_or_default();
        let operator = node
            .control_plane()
            .kubectl_ok([
                "-n",
                OPERATOR_NAMESPACE,
                "logs",
                "deployment/logcluster-operator",
                "--tail=100",
            ])
            .unwrap_or_default();
        let status = node
            .control_plane()
            .kubectl_ok(["-n", namespace, "get", &what, "-o", "jsonpath={.status}"])
            .unwrap_or_default();
        // The nodes' own view (Raft warnings, membership changes) is what explains a stuck
        // change; every pod of the cluster, the last lines of each.
        let node_logs: String = node
            .control_plane()
            .kubectl_ok([
                "-n",
                namespace,
                "get",
                "pods",
                "-l",
                &format!("app.kubernetes.io/instance={name}"),
                "-o",
                "name",
            ])
            .unwrap_or_default()
            .lines()
            .map(|pod| {
                // Every RPC logs a line; the rest is what tells.
                let tail = match node.control_plane().kubectl_ok([
                    "-n",
                    namespace,
                    "logs",
                    pod,
                    "--tail=5000",
                ]) {
                    Ok(all) => {
                        let told: Vec<&str> = all
                            .lines()
                            .filter(|l| !l.contains("\"rpc finished\""))
                            .collect();
                        told[told.len().saturating_sub(40)..].join("\n")
                    }
                    Err(e) => format!("{e:#}"),
                };
                format!("--- {pod}\n{tail}\n")
            })
            .collect();
        format!(
            "{what} never became ready\nstatus: {status}\npods:\n{pods}\noperator log:\n\
             {operator}\nnode logs:\n{node_logs}"
        )
    })
}

/// Prints a step of the journey with the time since it began, so a slow or stuck step shows.
pub(super) fn step(started: Instant, what: &str) {
    eprintln!(
        "k8s step [{:>5.1}s] {what}",
        started.elapsed().as_secs_f64()
    );
}

/// Runs a client pod that must succeed and returns its logs.
fn run_client_ok(node: &KubeNode, namespace: &str, name: &str, args: &[&str]) -> Result<String> {
    let (phase, logs) = run_client(node, namespace, name, &client_pod(name, args)?)?;
    ensure!(
        phase == "Succeeded",
        "pod {name} (logctl {}) {phase}: {logs}",
        args.join(" ")
    );
    Ok(logs)
}

/// `logctl produce` in a pod; returns each value with the offset it was acknowledged at.
fn produce(
    node: &KubeNode,
    namespace: &str,
    name: &str,
    values: &[&str],
) -> Result<Vec<(u64, String)>> {
    let mut args = vec!["produce"];
    args.extend_from_slice(values);
    let out = run_client_ok(node, namespace, name, &args)?;
    let offsets: Vec<u64> = out
        .lines()
        .map(|l| l.trim().parse().with_context(|| format!("offset {l:?}")))
        .collect::<Result<_>>()?;
    ensure!(
        offsets.len() == values.len(),
        "{} offsets for {} values: {out:?}",
        offsets.len(),
        values.len()
    );
    Ok(offsets
        .into_iter()
        .zip(values.iter().map(|v| v.to_string()))
        .collect())
}

/// `logctl consume --from 0` (to the end) in a pod: the log as `offset<TAB>value` lines.
fn consume_all(node: &KubeNode, namespace: &str, name: &str) -> Result<Vec<String>> {
    let out = run_client_ok(node, namespace, name, &["consume", "--from", "0"])?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Checks that every acknowledged record is in the log at its offset, once.
fn ensure_log_holds(log: &[String], acked: &[(u64, String)]) -> Result<()> {
    for (offset, value) in acked {
        let line = format!("{offset}\t{value}");
        let found = log.iter().filter(|l| **l == line).count();
        ensure!(
            found == 1,
            "record {line:?} appears {found} times in the log:\n{}",
            log.join("\n")
        );
    }
    Ok(())
}

/// Asks the API server to evict a pod, once: an eviction the PodDisruptionBudget refuses fails
/// with `TooManyRequests`. (kube-rs 5's client retries 429 answers until they succeed, and its
/// `EvictParams` body drops `deleteOptions`, so a dry run would evict; kubectl's raw POST does
/// neither.)
fn evict(node: &KubeNode, namespace: &str, pod: &str) -> Result<()> {
    let body = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": { "name": pod, "namespace": namespace },
    })
    .to_string();
    node.control_plane()
        .kubectl_with_stdin_ok(
            [
                "create",
                "--raw",
                &format!("/api/v1/namespaces/{namespace}/pods/{pod}/eviction"),
                "-f",
                "-",
            ],
            &body,
        )
        .map(drop)?;
    Ok(())
}

/// Waits until `kubectl <args> -o name` lists nothing whose name contains `pattern` (everything,
/// for an empty pattern).
fn wait_until_none_named(node: &KubeNode, args: &[&str], pattern: &str) -> Result<()> {
    let deadline = Instant::now() + POD_PATIENCE;
    loop {
        let mut full = args.to_vec();
        full.extend(["-o", "name"]);
        let listed = node.control_plane().kubectl_ok(full)?;
        let left: Vec<&str> = listed.lines().filter(|l| l.contains(pattern)).collect();
        if left.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "still there after {POD_PATIENCE:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The cluster's leader, as its status reports it.
/// The operator's Events about `cluster` with `reason` and `action`, oldest first, as
/// `(eventTime, note)`.
fn operator_events(
    node: &KubeNode,
    namespace: &str,
    cluster: &str,
    reason: &str,
    action: &str,
) -> Result<Vec<(Timestamp, String)>> {
    node.block_on(async {
        let client = node.control_plane().kube_client().await?;
        let events: Api<Event> = Api::namespaced(client, namespace);
        let mut found: Vec<(Timestamp, String)> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.action.as_deref() == Some(action)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(cluster)
            })
            .filter_map(|e| Some((e.event_time?.0, e.note.unwrap_or_default())))
            .collect();
        found.sort();
        Ok(found)
    })
}

/// The rolling update replaced every pod once, `leader`'s last, and moved leadership away from
/// it (to a pod already replaced) before replacing it.
fn ensure_leader_replaced_last(
    node: &KubeNode,
    namespace: &str,
    cluster: &str,
    leader: &str,
) -> Result<()> {
    let replaced = operator_events(node, namespace, cluster, "PodReplaced", "RollingUpdate")?;
    let transfers = operator_events(
        node,
        namespace,
        cluster,
        "LeadershipTransferred",
        "RollingUpdate",
    )?;
    let leader_pod = format!("pod {leader} ");
    ensure!(
        replaced.len() == 3,
        "expected 3 pod replacements, the Events say {replaced:?}"
    );
    let (last_at, last) = &replaced[2];
    ensure!(
        last.contains(&leader_pod) && !replaced[..2].iter().any(|(_, n)| n.contains(&leader_pod)),
        "the leader's pod {leader} was not replaced last: {replaced:?}"
    );
    let moved_before = transfers
        .iter()
        .any(|(at, _)| at > &replaced[1].0 && at < last_at);
    ensure!(
        moved_before,
        "leadership did not move between the followers' replacements and the leader's: \
         transfers {transfers:?}, replacements {replaced:?}"
    );
    Ok(())
}

/// Producers and a live consumer in the test process, on the node's network, writing to a
/// LogCluster through the Rust client while the journey scales it and kills its pods.
struct Load {
    runtime: NodeRuntime,
    config: ClientConfig,
    // Kept for the client's address map while the workload runs.
    _addresses: PodAddresses,
    workload: Workload,
    history: Arc<History>,
    namespace: String,
    cluster: String,
}

/// How a window of the workload's produces ended: what a client saw.
#[derive(Debug, Default)]
struct Outcomes {
    acked: usize,
    failed: usize,
    indeterminate: usize,
}

/// Producers of the journey's workload (each has one produce in flight).
const LOAD_PRODUCERS: u32 = 3;
/// Produces that must be acknowledged after each fault, all invoked after it ended.
const ACKS_AFTER_A_FAULT: usize = 20;

impl Load {
    fn start(node: &'static KubeNode, namespace: &str, cluster: &str) -> Result<Self> {
        let runtime = node.runtime().context("a runtime on the node's network")?;
        let cp = node.control_plane();
        let kube = runtime.run(async move { cp.kube_client().await })?;
        let (ns, name) = (namespace.to_owned(), cluster.to_owned());
        let (addresses, config) = runtime
            .run(async move {
                let addresses = PodAddresses::watch(kube.clone(), &ns, &name);
                let nodes: Vec<String> = (0..3).map(|i| format!("{name}-{i}")).collect();
                addresses.wait_for(&nodes, POD_PATIENCE).await?;
                let tls = pod_client::user_tls(kube, &ns, &format!("{name}-user-app")).await?;
                let seeds = (0..3)
                    .map(|i| pod_client::advertised(&name, &ns, i))
                    .collect();
                let mut config = ClientConfig::new(seeds, tls);
                config.connect_to = addresses.connect_to();
                Ok::<_, String>((addresses, config))
            })
            .map_err(anyhow::Error::msg)?;
        let connect = config.clone();
        let workload = runtime
            .run(async move {
                let client = LogClient::connect(connect).await?;
                Ok::<_, logcluster_api::ClientError>(Workload::start(&client, LOAD_PRODUCERS, true))
            })
            .context("connecting the workload's client")?;
        let history = Arc::clone(workload.history());
        Ok(Load {
            runtime,
            config,
            _addresses: addresses,
            workload,
            history,
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
        })
    }

    /// The workload's clock.
    fn now(&self) -> Duration {
        self.history.now()
    }

    /// How the produces invoked since `since` ended so far.
    fn outcomes_invoked_since(&self, since: Duration) -> Outcomes {
        let mut outcomes = Outcomes::default();
        for op in self.history.operations() {
            if op.invoked < since {
                continue;
            }
            match op.outcome {
                Outcome::Acked(_) => outcomes.acked += 1,
                Outcome::Failed => outcomes.failed += 1,
                Outcome::Indeterminate => outcomes.indeterminate += 1,
            }
        }
        outcomes
    }

    /// After a fault healed: produces invoked from now on are acknowledged again (bounded).
    fn keeps_acknowledging(&self, after: &str) -> Result<()> {
        let history = Arc::clone(&self.history);
        let since = history.now();
        self.runtime
            .run(async move {
                history
                    .wait_for_acks_invoked_since(since, ACKS_AFTER_A_FAULT, CLUSTER_PATIENCE)
                    .await
            })
            .map_err(|e| anyhow::anyhow!("after {after}: {e}"))
    }

    /// Stops the workload and checks its history against the logs of the cluster's first
    /// `replicas` pods, each read from that pod alone once they all serve the same committed
    /// end. Returns the checked history's counts and how many records the live consumer saw.
    fn check(self, replicas: usize) -> Result<(Summary, usize)> {
        let Load {
            runtime,
            config,
            workload,
            namespace,
            cluster,
            ..
        } = self;
        let nodes: Vec<String> = (0..replicas)
            .map(|i| pod_client::advertised(&cluster, &namespace, i))
            .collect();
        let (operations, seen, logs) = runtime
            .run(async move {
                let (history, seen) = workload.stop().await;
                pod_client::wait_converged(&config, &nodes, CLUSTER_PATIENCE).await?;
                let logs = pod_client::read_every_node(&config, &nodes).await?;
                Ok::<_, String>((history.operations(), seen, logs))
            })
            .map_err(anyhow::Error::msg)?;
        let summary = check(&operations, &logs, seen.as_deref()).map_err(|violations| {
            let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("the workload's history violates:\n{}", listed.join("\n"))
        })?;
        ensure!(
            summary.acked > 0,
            "the workload had no produce acknowledged: {summary:?}"
        );
        Ok((summary, seen.map_or(0, |seen| seen.len())))
    }
}

pub(super) fn leader(node: &KubeNode, namespace: &str, cluster: &str) -> Result<String> {
    let leader = node.control_plane().kubectl_ok([
        "-n",
        namespace,
        "get",
        "lc",
        cluster,
        "-o",
        "jsonpath={.status.leader}",
    ])?;
    Ok(leader.trim().to_owned())
}

/// A client certificate signed by the cluster's own CA for a user the ACL does not know, in a
/// Secret shaped like the operator's user Secrets. Returns the Secret's name.
fn stranger_secret(node: &KubeNode, namespace: &str, cluster: &str, user: &str) -> Result<String> {
    let name = format!("{cluster}-stranger-{user}");
    node.block_on(async {
        let client = node.control_plane().kube_client().await?;
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let ca_secret = secrets.get(&format!("{cluster}-ca")).await?;
        let data = ca_secret.data.unwrap_or_default();
        let text = |key: &str| -> Result<String> {
            let bytes = data
                .get(key)
                .with_context(|| format!("the CA Secret has no {key}"))?;
            Ok(String::from_utf8(bytes.0.clone())?)
        };
        let ca = CertificateAuthority::from_pem(&text("tls.crt")?, &text("tls.key")?)?;
        let cert = ca.issue(&CertificateRequest::client(user, Duration::from_secs(3600)))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            string_data: Some(BTreeMap::from([
                ("ca.crt".to_owned(), ca.cert_pem().to_owned()),
                ("tls.crt".to_owned(), cert.cert_pem.clone()),
                ("tls.key".to_owned(), cert.key_pem.clone()),
            ])),
            ..Secret::default()
        };
        secrets.create(&PostParams::default(), &secret).await?;
        anyhow::Ok(())
    })?;
    Ok(name)
}

#[test]
fn k8s_journey_helm_install_apply_minimal_produce_consume_scale_and_lose_the_leader() -> Result<()>
{
    let started = Instant::now();
    let node = node::shared()?;
    step(started, "the node is up; helm install of the operator");
    let _one_cluster = one_cluster_with_operator(node)?;
    let cp = node.control_plane();
    let ns = "default";
    let cluster = "demo";
    let pods = |n: usize| (0..n).map(|i| format!("{cluster}-{i}")).collect::<Vec<_>>();

    // The README: `kubectl apply -f examples/minimal.yaml`, in the default namespace.
    step(started, "kubectl apply -f examples/minimal.yaml");
    let example = workspace().join("examples/minimal.yaml");
    cp.kubectl_ok([
        "-n".as_ref(),
        ns.as_ref(),
        "apply".as_ref(),
        "-f".as_ref(),
        example.as_os_str(),
    ])?;
    wait_for_cluster(node, ns, cluster, 3)?;
    let first_leader = leader(node, ns, cluster)?;
    ensure!(
        pods(3).contains(&first_leader),
        "leader {first_leader:?} is not one of the pods"
    );

    // A producer pod (the README's client pod with other arguments), then the README's
    // consumer pod as written: it follows the log, so it is read while it runs.
    step(
        started,
        "ready; a producer pod, then the README's consumer pod",
    );
    let values = ["one", "two", "three"];
    let mut acked = produce(node, ns, "demo-producer", &values)?;
    node.control_plane()
        .kubectl_with_stdin_ok(["-n", ns, "apply", "-f", "-"], &readme_client_yaml()?)
        .context("kubectl apply of the README's client pod")?;
    let expected: Vec<String> = acked.iter().map(|(o, v)| format!("{o}\t{v}")).collect();
    let deadline = Instant::now() + POD_PATIENCE;
    loop {
        let consumed = logs(node, ns, "demo-consumer")?;
        let lines: Vec<&str> = consumed.lines().collect();
        if expected.iter().all(|e| lines.contains(&e.as_str())) {
            break;
        }
        if Instant::now() >= deadline {
            let describe = cp.kubectl_ok(["-n", ns, "describe", "pod", "demo-consumer"])?;
            bail!("the consumer printed {consumed:?}, not {expected:?}\n{describe}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    cp.kubectl_ok(["-n", ns, "delete", "pod", "demo-consumer", "--wait=false"])?;

    // `logctl servers` inside a pod names the same members as the LogCluster's status.
    step(started, "logctl servers from a pod");
    let servers = run_client_ok(node, ns, "demo-servers", &["servers"])?;
    for pod in pods(3) {
        ensure!(
            servers.contains(&pod),
            "logctl servers does not name {pod}: {servers}"
        );
    }

    // A certificate from the cluster's own CA is not enough: the ACL refuses a user it does
    // not list, and the refusal writes nothing.
    step(started, "a user the ACL does not know is refused");
    let stranger = stranger_secret(node, ns, cluster, "mallory")?;
    let mut pod = client_pod("demo-mallory", &["produce", "intruder"])?;
    pod["spec"]["volumes"][0]["secret"]["secretName"] = Value::from(stranger.as_str());
    let (phase, refused) = run_client(node, ns, "demo-mallory", &pod)?;
    ensure!(
        phase == "Failed" && refused.contains("permission denied"),
        "mallory's produce {phase}: {refused}"
    );

    // From here to the end of the rolling update, producers in the test process write all the
    // time (on the node's network, dialing the pods by IP) and a consumer follows the log; the
    // history they record is checked against every node's log at the end (P1–P7).
    step(started, "a produce workload from the test process");
    let load = Load::start(node, ns, cluster)?;

    // Scaling up adds voters one at a time; every acknowledged record stays.
    step(started, "kubectl scale lc/demo --replicas=5");
    cp.kubectl_ok(["-n", ns, "scale", "lc/demo", "--replicas=5"])?;
    wait_for_cluster(node, ns, cluster, 5)?;
    load.keeps_acknowledging("scaling to 5")?;
    let servers = run_client_ok(node, ns, "demo-servers-5", &["servers"])?;
    for pod in pods(5) {
        ensure!(
            servers.contains(&pod),
            "after scaling up, logctl servers does not name {pod}: {servers}"
        );
    }
    acked.extend(produce(node, ns, "demo-producer-5", &["four"])?);

    // Losing the leader's pod: the StatefulSet brings it back, the cluster elects a leader
    // and keeps every record.
    let lost = leader(node, ns, cluster)?;
    step(started, &format!("kubectl delete pod {lost} (the leader)"));
    cp.kubectl_ok(["-n", ns, "delete", "pod", &lost])?;
    wait_for_cluster(node, ns, cluster, 5)?;
    load.keeps_acknowledging("the leader's pod deleted")?;
    acked.extend(produce(node, ns, "demo-producer-failover", &["five"])?);

    // Scaling back down removes the last two voters before their pods; the log is whole.
    step(started, "kubectl scale lc/demo --replicas=3");
    cp.kubectl_ok(["-n", ns, "scale", "lc/demo", "--replicas=3"])?;
    wait_for_cluster(node, ns, cluster, 3)?;
    load.keeps_acknowledging("scaling to 3")?;
    let servers = run_client_ok(node, ns, "demo-servers-3", &["servers"])?;
    for gone in ["demo-3", "demo-4"] {
        ensure!(
            !servers.contains(gone),
            "after scaling down, logctl servers still names {gone}: {servers}"
        );
    }

    // Scaling up again lands demo-3 on the volume it kept (`whenScaled: Retain`), holding the
    // log and Raft state of a member that was removed: it must join again and catch up.
    step(
        started,
        "kubectl scale lc/demo --replicas=4 (onto demo-3's retained volume)",
    );
    let claim_uid = || {
        cp.kubectl_ok([
            "-n",
            ns,
            "get",
            "pvc",
            "data-demo-3",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .map(|uid| uid.trim().to_owned())
    };
    let retained = claim_uid().context("demo-3's volume was not retained")?;
    cp.kubectl_ok(["-n", ns, "scale", "lc/demo", "--replicas=4"])?;
    wait_for_cluster(node, ns, cluster, 4)?;
    ensure!(
        claim_uid()? == retained,
        "demo-3 came back on a new volume, not its retained one"
    );
    let servers = run_client_ok(node, ns, "demo-servers-4", &["servers"])?;
    ensure!(
        servers.contains("demo-3"),
        "after scaling onto the retained volume, logctl servers does not name demo-3: {servers}"
    );
    acked.extend(produce(node, ns, "demo-producer-4", &["four-again"])?);
    cp.kubectl_ok(["-n", ns, "scale", "lc/demo", "--replicas=3"])?;
    wait_for_cluster(node, ns, cluster, 3)?;
    load.keeps_acknowledging("scaling onto the retained volume and back")?;

    // The PodDisruptionBudget keeps a quorum: with three healthy voters one pod may be
    // evicted; while it is gone, evicting another is refused by the API server.
    step(started, "evictions against the PodDisruptionBudget");
    let budget = "{.spec.maxUnavailable}/{.status.expectedPods}/{.status.currentHealthy}/{.status.disruptionsAllowed}";
    wait_for_jsonpath(node, ns, "pdb/demo", budget, "1/3/3/1", CLUSTER_PATIENCE)?;
    evict(node, ns, "demo-2").context("evicting one of three healthy voters")?;
    let refusal = match evict(node, ns, "demo-1") {
        Ok(()) => bail!("a second eviction while demo-2 is gone was allowed"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        refusal.contains("TooManyRequests") && refusal.contains("disruption budget"),
        "the second eviction failed, but not by the budget: {refusal}"
    );
    // The evicted pod comes back (the budget counts it healthy again) and rejoins.
    wait_for_jsonpath(node, ns, "pdb/demo", budget, "1/3/3/1", CLUSTER_PATIENCE)?;
    wait_for_cluster(node, ns, cluster, 3)?;
    load.keeps_acknowledging("an eviction")?;

    // A container killed in place (not its pod): the kubelet restarts it, the node rejoins
    // as the same member with its volume, and the cluster keeps every record.
    let victim = leader(node, ns, cluster)?;
    step(
        started,
        &format!("ctr task kill -s SIGKILL {victim}'s container (the leader)"),
    );
    let container = |field: &str| -> Result<String> {
        let out = cp.kubectl_ok([
            "-n",
            ns,
            "get",
            "pod",
            &victim,
            "-o",
            &format!("jsonpath={{.status.containerStatuses[0].{field}}}"),
        ])?;
        Ok(out.trim().to_owned())
    };
    let restarts: u32 = container("restartCount")?.parse()?;
    let id = container("containerID")?;
    let id = id
        .strip_prefix("containerd://")
        .with_context(|| format!("container id {id:?}"))?;
    node.ctr(["tasks", "kill", "--signal", "SIGKILL", id])?;
    wait_for_jsonpath(
        node,
        ns,
        &format!("pod/{victim}"),
        "{.status.containerStatuses[0].restartCount}/{.status.containerStatuses[0].ready}",
        &format!("{}/true", restarts + 1),
        POD_PATIENCE,
    )?;
    wait_for_cluster(node, ns, cluster, 3)?;
    load.keeps_acknowledging("the leader's container killed")?;
    acked.extend(produce(node, ns, "demo-producer-killed", &["six"])?);

    // A spec change that changes the pod template: the operator rolls it out itself (the
    // StatefulSet is OnDelete), one pod at a time, the leader's pod last and only after
    // leadership moved, while producer pods keep writing; client-visible failures are counted.
    let rolled_leader = leader(node, ns, cluster)?;
    step(
        started,
        &format!(
            "kubectl patch lc/demo (a pod annotation): a rolling update, {rolled_leader} leads"
        ),
    );
    let revision = |field: &str| -> Result<String> {
        let out = cp.kubectl_ok([
            "-n",
            ns,
            "get",
            "sts",
            cluster,
            "-o",
            &format!("jsonpath={{.status.{field}}}"),
        ])?;
        Ok(out.trim().to_owned())
    };
    let old_revision = revision("updateRevision")?;
    let roll_began = load.now();
    cp.kubectl_ok([
        "-n",
        ns,
        "patch",
        "lc",
        cluster,
        "--type=merge",
        "-p",
        r#"{"spec":{"pod":{"annotations":{"journey.logcluster.io/rollout":"1"}}}}"#,
    ])?;
    let deadline = Instant::now() + CLUSTER_PATIENCE;
    let (mut attempts, mut failures) = (0, Vec::new());
    loop {
        // NB: an OnDelete StatefulSet never advances currentRevision; updatedReplicas counts
        // the pods on updateRevision.
        let rolled = revision("updateRevision")? != old_revision
            && revision("updatedReplicas")? == "3"
            && revision("readyReplicas")? == "3";
        if rolled {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the rolling update did not finish in {CLUSTER_PATIENCE:?}"
        );
        attempts += 1;
        let name = format!("demo-roll-{attempts}");
        let value = format!("roll-{attempts}");
        let (phase, out) = run_client(
            node,
            ns,
            &name,
            &client_pod(&name, &["produce", value.as_str()])?,
        )?;
        match (phase.as_str(), out.trim().parse::<u64>()) {
            ("Succeeded", Ok(offset)) => acked.push((offset, value)),
            _ => failures.push(format!("{name}: {phase}: {}", out.trim())),
        }
    }
    step(
        started,
        &format!(
            "rolled: {attempts} produces during the update, {} failed {failures:?}",
            failures.len()
        ),
    );
    let during_roll = load.outcomes_invoked_since(roll_began);
    step(
        started,
        &format!("the workload during the rolling update: {during_roll:?}"),
    );
    wait_for_cluster(node, ns, cluster, 3)?;
    ensure_leader_replaced_last(node, ns, cluster, &rolled_leader)?;
    load.keeps_acknowledging("the rolling update")?;
    step(started, "the workload's history against every node's log");
    let (summary, consumed) = load.check(3)?;
    step(
        started,
        &format!("history checked: {summary:?}; the live consumer saw {consumed} records"),
    );
    acked.extend(produce(node, ns, "demo-producer-rolled", &["seven"])?);

    // Every acknowledged record, once, at its offset; nothing of the refused user.
    step(started, "the whole log, from a pod");
    let log = consume_all(node, ns, "demo-consume-all")?;
    ensure_log_holds(&log, &acked)?;
    ensure!(
        !log.iter().any(|l| l.ends_with("\tintruder")),
        "the refused record is in the log: {log:?}"
    );

    // Deleting the LogCluster runs its finalizer: every object of the cluster goes, the
    // volumes stay (the default `pvcRetention.whenDeleted: Retain`).
    step(started, "kubectl delete lc demo");
    cp.kubectl_ok(["-n", ns, "delete", "lc", cluster, "--timeout=300s"])?;
    // The owned objects go by garbage collection, after the LogCluster itself.
    let selector = format!("app.kubernetes.io/instance={cluster}");
    wait_until_none_named(
        node,
        &[
            "-n",
            ns,
            "get",
            "statefulsets,services,configmaps,secrets,pdb,pods",
            "-l",
            &selector,
        ],
        "",
    )
    .context("deleting lc/demo")?;
    let claims = cp.kubectl_ok(["-n", ns, "get", "pvc", "-o", "name"])?;
    for i in 0..5 {
        ensure!(
            claims.contains(&format!("persistentvolumeclaim/data-demo-{i}")),
            "the retained volume data-demo-{i} is gone: {claims}"
        );
    }
    cp.kubectl_ok(["-n", ns, "delete", "secret", &stranger])?;
    cp.kubectl_ok(["-n", ns, "delete", "pvc", "--all", "--wait=false"])?;

    // `helm uninstall` removes the operator and its RBAC; the CRD stays, as Helm does with
    // `crds/`.
    step(started, "helm uninstall");
    cp.helm_ok([
        "uninstall",
        "logcluster-operator",
        "--namespace",
        OPERATOR_NAMESPACE,
        "--wait",
    ])?;
    // Deletion and garbage collection finish after helm returns (the operator's pod, for
    // one, terminates gracefully).
    wait_until_none_named(
        node,
        &["get", "clusterroles,clusterrolebindings"],
        "logcluster-operator",
    )
    .context("cluster-wide RBAC after helm uninstall")?;
    wait_until_none_named(
        node,
        &[
            "-n",
            OPERATOR_NAMESPACE,
            "get",
            "all,serviceaccounts,roles,rolebindings,leases",
        ],
        "logcluster-operator",
    )
    .context("the release namespace after helm uninstall")?;
    step(started, "done");
    Ok(())
}
