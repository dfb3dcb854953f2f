//! The operator against a real API server (tier 5): the CRD and its CEL rules, `kubectl apply` of
//! the examples and `kubectl scale`, the owned objects a LogCluster produces (certificate SANs
//! checked by parsing the Secrets), status following the StatefulSet, certificate renewal,
//! `paused`, deletion with PVC retention, the RBAC the chart must grant, leader election, and
//! one-at-a-time scaling against a simulated Raft cluster.
//!
//! The controller runs in-process (`controller::run`) against the shared control plane. There is
//! no kubelet: where a test needs the StatefulSet controller's effect, a task of the test plays it
//! (status patches; for the simulated cluster, "pods" that answer the admin API).
//!
//! NB: the scaling test here drives a *simulated* Raft membership behind the operator's
//! `NodeConnector`; `k8s_operator_scaling` runs the same protocol against real `lognode`
//! processes and shares this module's control plane, operator and polling helpers.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use logcluster_api::admin_v1::{ClusterStatusResponse, MemberRole, MemberStatus};
use logcluster_operator::certificates::ClientTls;
use logcluster_operator::controller::{self, Context, Scope};
use logcluster_operator::crd::LogCluster;
use logcluster_operator::leader_election::{LeaderElector, LeaseConfig};
use logcluster_operator::metrics::Metrics;
use logcluster_operator::node_client::{
    AddressResolver, GrpcConnector, NodeAdmin, NodeConnector, NodeEndpoint,
};
use logcluster_operator::rbac;
use logcluster_operator::resources::BuildSettings;
use logcluster_operator::resources::names::ClusterNames;
use logcluster_tests::k8s::{self, ControlPlane};
use serde_json::json;

const CRD_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/logcluster.yaml");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
/// Upper bound of every wait: the machine may be busy compiling. Not an assertion on speed.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

static CRD: OnceLock<Result<(), String>> = OnceLock::new();

/// The shared control plane with the LogCluster CRD installed and established.
pub(crate) fn control_plane() -> Result<&'static ControlPlane> {
    let cp = k8s::shared()?;
    CRD.get_or_init(|| {
        let install = || -> Result<()> {
            let crd = std::fs::read_to_string(CRD_PATH).context("reading crds/logcluster.yaml")?;
            let out = cp.kubectl_with_stdin(["apply", "--server-side", "-f", "-"], &crd)?;
            ensure!(
                out.status.success(),
                "installing the CRD: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // NB: not `kubectl wait`: it fails outright while the new CRD has no status yet.
            let deadline = Instant::now() + PATIENCE;
            let established = || -> Result<bool> {
                let crd =
                    cp.kubectl_ok(["get", "crd", "logclusters.logcluster.io", "-o", "json"])?;
                let crd: serde_json::Value = serde_json::from_str(&crd)?;
                Ok(crd["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                }))
            };
            while !established()? {
                ensure!(
                    Instant::now() < deadline,
                    "the LogCluster CRD was never established"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        };
        install().map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)?;
    Ok(cp)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `f` until it returns `Some`, for at most [`PATIENCE`].
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut last_error = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} (last error: {last_error})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A controller running in this process for one namespace; stopped when dropped.
pub(crate) struct Operator {
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn start_operator(
    client: kube::Client,
    ns: &str,
    connector: Arc<dyn NodeConnector>,
) -> Operator {
    let metrics = Arc::new(Metrics::new());
    let mut ctx = Context::new(client, BuildSettings::default(), connector, metrics.clone());
    ctx.step_interval = Duration::from_millis(500);
    let scope = Scope::Namespaces(vec![ns.to_owned()]);
    let task = tokio::spawn(async move {
        if let Err(e) = controller::run(Arc::new(ctx), scope).await {
            eprintln!("operator stopped: {e}");
        }
    });
    Operator { task, metrics }
}

/// A connector to nodes that do not exist (nothing listens on the discard port): the operator
/// reconciles everything around the nodes and reports that it cannot reach them.
fn unreachable_nodes() -> Arc<dyn NodeConnector> {
    struct Nowhere;
    impl AddressResolver for Nowhere {
        fn endpoint(&self, names: &ClusterNames, ordinal: u64) -> NodeEndpoint {
            NodeEndpoint {
                uri: "https://127.0.0.1:9".into(),
                tls_name: names.pod_fqdn(u32::try_from(ordinal).unwrap_or(u32::MAX)),
            }
        }
        fn advertise_addr(&self, names: &ClusterNames, ordinal: u64) -> String {
            names.pod_grpc_addr(u32::try_from(ordinal).unwrap_or(u32::MAX))
        }
    }
    Arc::new(GrpcConnector::new(
        Arc::new(Nowhere),
        Duration::from_secs(2),
    ))
}

fn apply_yaml(cp: &ControlPlane, ns: &str, yaml: &str) -> std::process::Output {
    cp.kubectl_with_stdin(
        [
            "-n",
            ns,
            "apply",
            "--server-side",
            "--field-manager=test",
            "-f",
            "-",
        ],
        yaml,
    )
    .expect("running kubectl")
}

fn lc_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: logcluster.io/v1alpha1\nkind: LogCluster\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// A namespace of the shared control plane with an in-process operator watching it.
struct Fixture {
    cp: &'static ControlPlane,
    ns: String,
    client: kube::Client,
    operator: Operator,
}

impl Fixture {
    /// An operator whose nodes never answer.
    async fn new(prefix: &str) -> Result<Self> {
        Self::with_nodes(prefix, unreachable_nodes()).await
    }

    async fn with_nodes(prefix: &str, connector: Arc<dyn NodeConnector>) -> Result<Self> {
        let cp = control_plane()?;
        let ns = cp.create_namespace(prefix)?;
        let client = cp.kube_client().await?;
        let operator = start_operator(client.clone(), &ns, connector);
        Ok(Fixture {
            cp,
            ns,
            client,
            operator,
        })
    }

    /// Applies a LogCluster `name` with this spec (YAML indented by two spaces).
    fn apply(&self, name: &str, spec: &str) -> Result<()> {
        let out = apply_yaml(self.cp, &self.ns, &lc_yaml(name, spec));
        ensure!(out.status.success(), "applying {name}: {}", stderr(&out));
        Ok(())
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

async fn get_lc(api: &Api<LogCluster>, name: &str) -> Result<LogCluster> {
    Ok(api.get(name).await?)
}

pub(crate) fn condition(lc: &LogCluster, type_: &str) -> Option<(String, String)> {
    lc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

// ---------------------------------------------------------------------------------------------
// CRD, CEL, kubectl

#[test]
fn k8s_operator_cel_rules_reject_invalid_specs_with_their_messages() -> Result<()> {
    let cp = control_plane()?;
    let ns = cp.create_namespace("lc-cel")?;
    let cases = [
        ("replicas: 0", "replicas must be at least 1"),
        ("replicas: 100", "replicas must be at most 99"),
        (
            "acl:\n    users:\n    - name: node\n      permissions: [admin]",
            "are reserved",
        ),
        (
            "acl:\n    users:\n    - name: operator\n      permissions: [admin]",
            "are reserved",
        ),
        (
            "tls:\n    validity: 1h\n    renewBefore: 2h",
            "tls.renewBefore must be shorter than tls.validity",
        ),
        (
            "tls:\n    validity: 30s\n    renewBefore: 1s",
            "tls.validity must be at least 1m",
        ),
        (
            "log:\n    maxSegmentBytes: 1Mi\n    maxRecordBytes: 2Mi",
            "log.maxRecordBytes must not exceed log.maxSegmentBytes",
        ),
        (
            "log:\n    maxSegmentBytes: 1Gi\n    retention:\n      bytes: 1Mi",
            "log.retention.bytes must be at least log.maxSegmentBytes",
        ),
        (
            "log:\n    fsyncInterval: 100ms",
            "log.fsyncInterval only applies with fsync: Interval",
        ),
        (
            "storage:\n    size: lots",
            "storage.size must be a positive quantity",
        ),
    ];
    for (i, (spec, message)) in cases.iter().enumerate() {
        let out = apply_yaml(
            cp,
            &ns,
            &lc_yaml(&format!("bad-{i}"), &format!("  {spec}\n")),
        );
        ensure!(!out.status.success(), "accepted an invalid spec:\n{spec}");
        ensure!(
            stderr(&out).contains(message),
            "for\n{spec}\nexpected {message:?} in: {}",
            stderr(&out)
        );
    }
    // Duplicate user names are refused by the list-map key.
    let dup = "  acl:\n    users:\n    - {name: a, permissions: [produce]}\n    - {name: a, permissions: [consume]}\n";
    let out = apply_yaml(cp, &ns, &lc_yaml("dup", dup));
    // (Server-side apply refuses it while building the typed object, before validation.)
    ensure!(
        !out.status.success() && stderr(&out).contains(r#"duplicate entries for key [name="a"]"#),
        "{}",
        stderr(&out)
    );
    // Nothing invalid was stored.
    let stored = cp.kubectl_ok(["-n", &ns, "get", "lc", "-o", "name"])?;
    ensure!(stored.trim().is_empty(), "stored: {stored}");
    Ok(())
}

#[test]
fn k8s_operator_cel_rules_guard_immutable_and_grow_only_fields() -> Result<()> {
    let cp = control_plane()?;
    let ns = cp.create_namespace("lc-immutable")?;
    let spec = |size: &str, class: Option<&str>, ca: Option<&str>| {
        let mut s = format!("  storage:\n    size: {size}\n");
        if let Some(c) = class {
            s.push_str(&format!("    storageClassName: {c}\n"));
        }
        if let Some(ca) = ca {
            s.push_str(&format!("  tls:\n    caSecretName: {ca}\n"));
        }
        lc_yaml("imm", &s)
    };
    let out = apply_yaml(cp, &ns, &spec("10Gi", Some("fast"), Some("ca-1")));
    ensure!(out.status.success(), "{}", stderr(&out));
    for (yaml, message) in [
        (
            spec("5Gi", Some("fast"), Some("ca-1")),
            "storage.size can only grow",
        ),
        (
            spec("10Gi", Some("slow"), Some("ca-1")),
            "storage.storageClassName is immutable",
        ),
        (
            spec("10Gi", None, Some("ca-1")),
            "storage.storageClassName is immutable",
        ),
        (
            spec("10Gi", Some("fast"), Some("ca-2")),
            "tls.caSecretName is immutable",
        ),
    ] {
        let out = apply_yaml(cp, &ns, &yaml);
        ensure!(!out.status.success(), "accepted:\n{yaml}");
        ensure!(
            stderr(&out).contains(message),
            "expected {message:?} in {}",
            stderr(&out)
        );
    }
    // Growing is fine, and 10240Mi is the same size as 10Gi.
    let out = apply_yaml(cp, &ns, &spec("10240Mi", Some("fast"), Some("ca-1")));
    ensure!(out.status.success(), "{}", stderr(&out));
    let out = apply_yaml(cp, &ns, &spec("20Gi", Some("fast"), Some("ca-1")));
    ensure!(out.status.success(), "{}", stderr(&out));
    // Setting a class where there was none is a change too.
    let out = apply_yaml(cp, &ns, &lc_yaml("noclass", "  replicas: 1\n"));
    ensure!(out.status.success(), "{}", stderr(&out));
    let out = apply_yaml(
        cp,
        &ns,
        &lc_yaml("noclass", "  storage:\n    storageClassName: fast\n"),
    );
    ensure!(
        !out.status.success() && stderr(&out).contains("immutable"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn k8s_operator_examples_apply_and_kubectl_scale_uses_the_scale_subresource() -> Result<()> {
    let cp = control_plane()?;
    let ns = cp.create_namespace("lc-examples")?;
    let mut applied = Vec::new();
    for entry in std::fs::read_dir(EXAMPLES)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let path = path.display().to_string();
            cp.kubectl_ok([
                "-n",
                &ns,
                "apply",
                "--server-side",
                "--dry-run=server",
                "-f",
                &path,
            ])?;
            cp.kubectl_ok(["-n", &ns, "apply", "--server-side", "-f", &path])?;
            applied.push(path);
        }
    }
    ensure!(
        applied.iter().any(|p| p.ends_with("minimal.yaml")),
        "{applied:?}"
    );
    // Defaults are filled in by the API server from the schema.
    let size = cp.kubectl_ok([
        "-n",
        &ns,
        "get",
        "lc",
        "demo",
        "-o",
        "jsonpath={.spec.storage.pvcRetention.whenDeleted}",
    ])?;
    assert_eq!(size, "Retain");
    cp.kubectl_ok(["-n", &ns, "scale", "lc/demo", "--replicas=5"])?;
    let replicas = cp.kubectl_ok([
        "-n",
        &ns,
        "get",
        "lc",
        "demo",
        "-o",
        "jsonpath={.spec.replicas}",
    ])?;
    assert_eq!(replicas, "5");
    let out = cp.kubectl(["-n", &ns, "scale", "lc/demo", "--replicas=0"])?;
    ensure!(
        !out.status.success() && stderr(&out).contains("replicas must be at least 1"),
        "{}",
        stderr(&out)
    );
    // The short name and the printer columns.
    let table = cp.kubectl_ok(["-n", &ns, "get", "lc"])?;
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "READY",
        "REPLICAS",
        "READY REPLICAS",
        "LEADER",
        "AGE",
    ] {
        ensure!(header.contains(column), "{column} missing from {header:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reconciling

fn secret_text(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| {
            format!(
                "{} has no {key}",
                secret.metadata.name.as_deref().unwrap_or("?")
            )
        })?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

fn assert_owned_by(meta: &ObjectMeta, lc: &LogCluster) -> Result<()> {
    let owner = meta
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .with_context(|| format!("{:?} has no owner", meta.name))?;
    ensure!(
        owner.kind == "LogCluster" && owner.controller == Some(true),
        "{owner:?}"
    );
    ensure!(Some(&owner.uid) == lc.metadata.uid.as_ref(), "{owner:?}");
    let managers: Vec<_> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    ensure!(
        managers.contains(&"logcluster-operator"),
        "{:?} managers {managers:?}",
        meta.name
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_reconciles_a_logcluster_into_every_owned_object() -> Result<()> {
    let f = Fixture::new("lc-owned").await?;
    let (cp, ns, client) = (f.cp, &f.ns, &f.client);
    let minimal = std::fs::read_to_string(format!("{EXAMPLES}/minimal.yaml"))?;
    let out = apply_yaml(cp, ns, &minimal);
    ensure!(out.status.success(), "{}", stderr(&out));

    let lcs: Api<LogCluster> = Api::namespaced(client.clone(), ns);
    let lc = wait_for("the first status", || async {
        let lc = get_lc(&lcs, "demo").await?;
        Ok(lc
            .status
            .as_ref()
            .is_some_and(|s| !s.conditions.is_empty())
            .then_some(lc))
    })
    .await?;
    ensure!(
        lc.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "logcluster.io/cleanup")
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in [
        "demo-ca",
        "demo-node-tls",
        "demo-operator-tls",
        "demo-user-app",
        "demo-gossip",
    ] {
        let s = secrets
            .get(name)
            .await
            .with_context(|| format!("Secret {name}"))?;
        assert_owned_by(&s.metadata, &lc)?;
    }
    let gossip = secrets.get("demo-gossip").await?;
    ensure!(
        gossip
            .data
            .as_ref()
            .and_then(|d| d.get("gossip.key"))
            .is_some_and(|k| k.0.len() == 32)
    );

    // Certificates: parse them.
    let ca = logcluster_certs::inspect(&secret_text(&secrets.get("demo-ca").await?, "tls.crt")?)?;
    ensure!(ca.is_ca);
    let node_secret = secrets.get("demo-node-tls").await?;
    assert_eq!(node_secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let node = logcluster_certs::inspect(&secret_text(&node_secret, "tls.crt")?)?;
    assert_eq!(node.subject_common_name.as_deref(), Some("node"));
    ensure!(
        node.server_auth && node.client_auth,
        "node certificates serve and dial"
    );
    assert_eq!(node.issuer, ca.subject);
    for ordinal in 0..3 {
        let fqdn = format!("demo-{ordinal}.demo-nodes.{ns}.svc.cluster.local");
        ensure!(
            node.dns_names.contains(&fqdn),
            "{fqdn} missing from {:?}",
            node.dns_names
        );
    }
    for name in [
        format!("demo-nodes.{ns}.svc.cluster.local"),
        format!("demo.{ns}.svc"),
        "localhost".into(),
    ] {
        ensure!(
            node.dns_names.contains(&name),
            "{name} missing from {:?}",
            node.dns_names
        );
    }
    ensure!(node.ip_addresses.contains(&"127.0.0.1".parse()?));
    assert_eq!(
        secret_text(&node_secret, "ca.crt")?.trim(),
        secret_text(&secrets.get("demo-ca").await?, "tls.crt")?.trim()
    );
    let operator = logcluster_certs::inspect(&secret_text(
        &secrets.get("demo-operator-tls").await?,
        "tls.crt",
    )?)?;
    assert_eq!(operator.subject_common_name.as_deref(), Some("operator"));
    ensure!(operator.client_auth && !operator.server_auth);
    let user = logcluster_certs::inspect(&secret_text(
        &secrets.get("demo-user-app").await?,
        "tls.crt",
    )?)?;
    assert_eq!(user.subject_common_name.as_deref(), Some("app"));

    // ConfigMap: node configuration and the ACL, no key material.
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("demo-config")
        .await?;
    assert_owned_by(&cm.metadata, &lc)?;
    let data = cm.data.clone().context("ConfigMap without data")?;
    ensure!(
        data["policy.csv"].contains("p, app, *, produce")
            && data["policy.csv"].contains("p, operator, *, admin")
    );
    ensure!(data["lognode.yaml"].contains(&format!("demo-nodes.{ns}.svc.cluster.local:8401")));
    for (key, value) in &data {
        ensure!(
            !value.contains("PRIVATE KEY") && !value.contains("BEGIN CERTIFICATE"),
            "key material in {key}"
        );
    }

    // Services, StatefulSet, PDB.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let headless = services.get("demo-nodes").await?;
    assert_owned_by(&headless.metadata, &lc)?;
    let spec = headless.spec.context("headless spec")?;
    assert_eq!(
        (spec.cluster_ip.as_deref(), spec.publish_not_ready_addresses),
        (Some("None"), Some(true))
    );
    assert_owned_by(&services.get("demo").await?.metadata, &lc)?;
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get("demo")
        .await?;
    assert_owned_by(&sts.metadata, &lc)?;
    let sts_spec = sts.spec.context("sts spec")?;
    assert_eq!(
        sts_spec.replicas,
        Some(1),
        "a new cluster starts with node 0 only"
    );
    let pod = sts_spec.template.spec.context("pod spec")?;
    let container = &pod.containers[0];
    let sc = container
        .security_context
        .clone()
        .context("container security context")?;
    ensure!(
        sc.read_only_root_filesystem == Some(true) && sc.allow_privilege_escalation == Some(false)
    );
    for env in container.env.iter().flatten() {
        ensure!(
            env.value_from
                .as_ref()
                .is_none_or(|v| v.secret_key_ref.is_none()),
            "secret in env {}",
            env.name
        );
    }
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .get("demo")
        .await?;
    assert_owned_by(&pdb.metadata, &lc)?;

    // Status: conditions, selector, certificates (no key material), why it is not ready.
    let status = lc.status.clone().context("status")?;
    assert_eq!(
        status.selector,
        "app.kubernetes.io/instance=demo,app.kubernetes.io/name=logcluster"
    );
    assert_eq!(
        condition(&lc, "CertificatesReady").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(condition(&lc, "Ready").map(|c| c.0), Some("False".into()));
    let names: BTreeSet<_> = status
        .certificates
        .iter()
        .map(|c| c.secret_name.as_str())
        .collect();
    ensure!(
        names.contains("demo-node-tls") && names.contains("demo-user-app"),
        "{names:?}"
    );
    let text = serde_json::to_string(&status)?;
    ensure!(
        !text.contains("PRIVATE KEY") && !text.contains("BEGIN CERTIFICATE"),
        "key material in status"
    );

    // Removing a user removes its certificate Secret.
    let out = apply_yaml(
        cp,
        ns,
        &lc_yaml("demo", "  replicas: 3\n  storage:\n    size: 1Gi\n"),
    );
    ensure!(out.status.success(), "{}", stderr(&out));
    wait_for("the removed user's Secret to go", || async {
        Ok(secrets
            .get_opt("demo-user-app")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_status_follows_the_statefulset_status() -> Result<()> {
    let f = Fixture::new("lc-status").await?;
    let (ns, client) = (&f.ns, &f.client);
    f.apply("demo", "  replicas: 1\n")?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    wait_for("the StatefulSet", || async {
        Ok(statefulsets.get_opt("demo").await?)
    })
    .await?;
    // What the controller-manager would write: a pod that is not ready yet, then ready.
    let patch = |ready: i32| {
        json!({"status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": ready,
            "currentReplicas": 1, "updatedReplicas": 1, "availableReplicas": ready}})
    };
    let lcs: Api<LogCluster> = Api::namespaced(client.clone(), ns);
    let follow = |ready: i32| {
        let lcs = lcs.clone();
        async move {
            wait_for(&format!("status.readyReplicas = {ready}"), || async {
                let lc = get_lc(&lcs, "demo").await?;
                let s = lc.status.clone().unwrap_or_default();
                Ok((s.replicas == 1 && s.ready_replicas == ready).then_some(lc))
            })
            .await
        }
    };
    statefulsets
        .patch_status("demo", &PatchParams::default(), &Patch::Merge(&patch(0)))
        .await?;
    let before = follow(0).await?;
    statefulsets
        .patch_status("demo", &PatchParams::default(), &Patch::Merge(&patch(1)))
        .await?;
    let after = follow(1).await?;
    // No node answers: not available, and the status says why.
    assert_eq!(
        condition(&after, "Available"),
        Some(("False".into(), "NoLeader".into()))
    );
    assert_eq!(
        after.status.as_ref().and_then(|s| s.observed_generation),
        after.metadata.generation
    );
    // lastTransitionTime only moves for conditions that flipped.
    let before = before.status.context("status")?.conditions;
    let after = after.status.context("status")?.conditions;
    ensure!(after.len() == 5, "{after:?}");
    for c in &after {
        let b = before
            .iter()
            .find(|b| b.type_ == c.type_)
            .context("condition appeared")?;
        if b.status == c.status {
            assert_eq!(
                b.last_transition_time, c.last_transition_time,
                "{} moved without a flip",
                c.type_
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_renews_certificates_before_they_expire() -> Result<()> {
    let f = Fixture::new("lc-renew").await?;
    let (ns, client) = (&f.ns, &f.client);
    // Renewal is due 5 s after issuance.
    let spec = "  replicas: 1\n  tls:\n    validity: 10m\n    renewBefore: 9m55s\n";
    f.apply("demo", spec)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let serial = |s: Secret| -> Result<String> {
        Ok(logcluster_certs::inspect(&secret_text(&s, "tls.crt")?)?.serial_hex)
    };
    let first = wait_for("the node certificate", || async {
        Ok(match secrets.get_opt("demo-node-tls").await? {
            Some(s) => Some(serial(s)?),
            None => None,
        })
    })
    .await?;
    let renewed = wait_for("a renewed node certificate", || async {
        let s = serial(secrets.get("demo-node-tls").await?)?;
        Ok((s != first).then_some(s))
    })
    .await?;
    ensure!(renewed != first);
    let lcs: Api<LogCluster> = Api::namespaced(client.clone(), ns);
    wait_for("CertificatesReady reason Renewed", || async {
        let lc = get_lc(&lcs, "demo").await?;
        Ok(
            (condition(&lc, "CertificatesReady") == Some(("True".into(), "Renewed".into())))
                .then_some(()),
        )
    })
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for("a CertificateRenewed Event", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("CertificateRenewed"))
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_paused_clusters_are_reported_but_not_changed() -> Result<()> {
    let f = Fixture::new("lc-paused").await?;
    let (cp, ns, client) = (f.cp, &f.ns, &f.client);
    f.apply("demo", "  replicas: 1\n")?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    wait_for("the client Service", || async {
        Ok(services.get_opt("demo").await?)
    })
    .await?;

    let paused = "  replicas: 1\n  paused: true\n  service:\n    type: NodePort\n";
    f.apply("demo", paused)?;
    let lcs: Api<LogCluster> = Api::namespaced(client.clone(), ns);
    wait_for("Progressing reason Paused", || async {
        let lc = get_lc(&lcs, "demo").await?;
        let seen = lc.status.as_ref().and_then(|s| s.observed_generation) == lc.metadata.generation;
        Ok((seen && condition(&lc, "Progressing").is_some_and(|c| c.1 == "Paused")).then_some(()))
    })
    .await?;
    let svc_type = services.get("demo").await?.spec.and_then(|s| s.type_);
    assert_eq!(
        svc_type.as_deref(),
        Some("ClusterIP"),
        "a paused cluster was changed"
    );

    ensure!(
        apply_yaml(
            cp,
            ns,
            &lc_yaml("demo", "  replicas: 1\n  service:\n    type: NodePort\n")
        )
        .status
        .success()
    );
    wait_for("the change after unpausing", || async {
        let t = services.get("demo").await?.spec.and_then(|s| s.type_);
        Ok((t.as_deref() == Some("NodePort")).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_deletion_runs_the_finalizer_and_honours_pvc_retention() -> Result<()> {
    let f = Fixture::new("lc-delete").await?;
    let (_cp, ns, client) = (f.cp, &f.ns, &f.client);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let lcs: Api<LogCluster> = Api::namespaced(client.clone(), ns);
    for (name, policy) in [("keep", "Retain"), ("drop", "Delete")] {
        let spec =
            format!("  replicas: 1\n  storage:\n    pvcRetention:\n      whenDeleted: {policy}\n");
        f.apply(name, &spec)?;
        wait_for("the finalizer", || async {
            let lc = get_lc(&lcs, name).await?;
            Ok(lc
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "logcluster.io/cleanup")
                .then_some(()))
        })
        .await?;
        // The claims the StatefulSet controller would have created from the template.
        for ordinal in 0..2 {
            let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": format!("data-{name}-{ordinal}"), "labels": {
                    "app.kubernetes.io/name": "logcluster", "app.kubernetes.io/instance": name,
                    "logcluster.io/cluster": name}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }))?;
            claims.create(&PostParams::default(), &pvc).await?;
        }
        lcs.delete(name, &DeleteParams::default()).await?;
        wait_for("the LogCluster to be gone", || async {
            Ok(lcs.get_opt(name).await?.is_none().then_some(()))
        })
        .await?;
        for ordinal in 0..2 {
            let claim = claims.get_opt(&format!("data-{name}-{ordinal}")).await?;
            // Without a controller-manager the pvc-protection finalizer keeps a deleted claim
            // around as terminating: "deleted" means it has a deletion timestamp.
            let deleted = claim
                .as_ref()
                .is_none_or(|c| c.metadata.deletion_timestamp.is_some());
            match policy {
                "Retain" => ensure!(!deleted, "{name}: a retained claim was deleted"),
                _ => ensure!(deleted, "{name}: claim {ordinal} was not deleted"),
            }
        }
    }
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    ensure!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Deleting")),
        "no Deleting event"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RBAC and leader election

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_works_with_exactly_the_documented_rbac() -> Result<()> {
    let cp = control_plane()?;
    let ns = cp.create_namespace("lc-rbac")?;
    let admin = cp.kube_client().await?;
    let pp = PostParams::default();
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "operator"}}))?;
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&pp, &sa)
        .await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("logcluster-operator".into()),
            ..ObjectMeta::default()
        },
        rules: Some(
            rbac::rules()
                .into_iter()
                .chain(rbac::lease_rules())
                .collect(),
        ),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&pp, &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("logcluster-operator".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "logcluster-operator".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "operator".into(),
            namespace: Some(ns.clone()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&pp, &binding)
        .await?;

    let user = format!("system:serviceaccount:{ns}:operator");
    // Least privilege: nothing cluster-wide, no Secrets elsewhere.
    for (args, expected) in [
        (vec!["list", "secrets", "--all-namespaces"], "no"),
        (vec!["get", "secrets", "-n", "default"], "no"),
        (vec!["create", "pods", "-n", ns.as_str()], "no"),
        (vec!["patch", "statefulsets", "-n", ns.as_str()], "yes"),
    ] {
        let mut full = vec!["auth", "can-i"];
        full.extend(args.iter().copied());
        full.extend(["--as", user.as_str()]);
        let out = cp.kubectl(&full)?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(answer == expected, "kubectl {} → {answer}", full.join(" "));
    }

    let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig_path())?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.auth_info.impersonate = Some(user.clone());
    let restricted = kube::Client::try_from(config)?;
    let operator = start_operator(restricted.clone(), &ns, unreachable_nodes());
    ensure!(
        apply_yaml(
            cp,
            &ns,
            &lc_yaml(
                "demo",
                "  replicas: 1\n  acl:\n    users:\n    - {name: u, permissions: [consume]}\n"
            )
        )
        .status
        .success()
    );
    let lcs: Api<LogCluster> = Api::namespaced(admin.clone(), &ns);
    wait_for("a reconciled LogCluster", || async {
        let forbidden = operator.metrics.failures("kube_forbidden");
        ensure!(
            forbidden == 0,
            "the operator was refused {forbidden} times: the rules miss a permission"
        );
        let lc = get_lc(&lcs, "demo").await?;
        Ok(
            (condition(&lc, "CertificatesReady").is_some_and(|c| c.0 == "True")
                && lc.status.as_ref().and_then(|s| s.observed_generation)
                    == lc.metadata.generation)
                .then_some(()),
        )
    })
    .await?;
    ensure!(
        Api::<StatefulSet>::namespaced(admin.clone(), &ns)
            .get_opt("demo")
            .await?
            .is_some()
    );
    ensure!(
        Api::<PodDisruptionBudget>::namespaced(admin.clone(), &ns)
            .get_opt("demo")
            .await?
            .is_some()
    );
    // Deleting a user and the cluster (finalizer, claims) also works with these rules.
    ensure!(
        apply_yaml(
            cp,
            &ns,
            &lc_yaml(
                "demo",
                "  replicas: 1\n  storage:\n    pvcRetention:\n      whenDeleted: Delete\n"
            )
        )
        .status
        .success()
    );
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    wait_for("the user Secret to go", || async {
        Ok(secrets
            .get_opt("demo-user-u")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    lcs.delete("demo", &DeleteParams::default()).await?;
    wait_for("the LogCluster to be gone", || async {
        Ok(lcs.get_opt("demo").await?.is_none().then_some(()))
    })
    .await?;
    assert_eq!(
        operator.metrics.failures("kube_forbidden"),
        0,
        "the operator hit a Forbidden"
    );

    // Leader election with the lease rules, as that ServiceAccount.
    let lease = LeaseConfig::new(ns.clone(), "rbac-lease".into(), "me".into());
    let mut elector = LeaderElector::new(restricted, lease);
    ensure!(
        elector.try_acquire_or_renew().await?,
        "could not take a free Lease"
    );
    ensure!(elector.try_acquire_or_renew().await?, "could not renew");
    elector.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_leader_election_lets_one_replica_lead() -> Result<()> {
    let cp = control_plane()?;
    let ns = cp.create_namespace("lc-lease")?;
    let client = cp.kube_client().await?;
    let config = |id: &str| {
        let mut c = LeaseConfig::new(ns.clone(), "operator".into(), id.into());
        c.lease_duration = Duration::from_secs(3);
        c.retry_period = Duration::from_millis(200);
        c
    };
    let mut a = LeaderElector::new(client.clone(), config("a"));
    let mut b = LeaderElector::new(client.clone(), config("b"));
    ensure!(
        a.try_acquire_or_renew().await?,
        "a did not get the free Lease"
    );
    ensure!(!b.try_acquire_or_renew().await?, "b took a live Lease");
    ensure!(a.try_acquire_or_renew().await?, "a could not renew");
    ensure!(!b.try_acquire_or_renew().await?, "b took a renewed Lease");
    // a stops renewing (crash): b takes over once the Lease has not changed for its duration.
    let deadline = Instant::now() + PATIENCE;
    while !b.try_acquire_or_renew().await? {
        ensure!(
            Instant::now() < deadline,
            "b never took over the expired Lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        !a.try_acquire_or_renew().await?,
        "a came back and took the Lease from b"
    );
    // A graceful release hands over at once.
    b.release().await?;
    ensure!(
        a.try_acquire_or_renew().await?,
        "a could not take a released Lease"
    );
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client, &ns)
        .get("operator")
        .await?;
    let spec = lease.spec.context("lease spec")?;
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    ensure!(
        spec.lease_transitions >= Some(2),
        "{:?}",
        spec.lease_transitions
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scaling against a simulated Raft membership

/// A Raft membership that obeys the admin API like the real one should: pods exist for ordinals
/// below `pods`; a new pod joins (is added and promoted by the leader) when it starts; removed
/// nodes stay out. Violations of the scaling protocol are recorded, not hidden.
#[derive(Default)]
struct SimState {
    pods: u32,
    initialized: bool,
    voters: BTreeSet<u64>,
    leader: u64,
    unhealthy: BTreeSet<u64>,
    calls: Vec<String>,
    violations: Vec<String>,
}

#[derive(Clone, Default)]
struct SimCluster(Arc<Mutex<SimState>>);

impl SimCluster {
    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The StatefulSet now has `pods` pods (what the kubelet + gossip would do).
    fn set_pods(&self, pods: u32) {
        let mut s = self.state();
        if s.initialized && pods > s.pods {
            for id in u64::from(s.pods)..u64::from(pods) {
                s.voters.insert(id);
            }
        }
        for id in s.voters.clone() {
            if id >= u64::from(pods) {
                let msg = format!("pod {id} removed while it was a voter");
                s.violations.push(msg);
            }
        }
        s.pods = pods;
    }
}

fn unreachable(node: u64) -> logcluster_operator::Error {
    logcluster_operator::Error::Admin {
        node: format!("node {node}"),
        reason: "Unavailable: no pod".into(),
    }
}

#[async_trait]
impl NodeAdmin for SimCluster {
    async fn cluster_status(
        &self,
        node: u64,
    ) -> logcluster_operator::Result<ClusterStatusResponse> {
        let s = self.state();
        if node >= u64::from(s.pods) || s.unhealthy.contains(&node) {
            return Err(unreachable(node));
        }
        if !s.initialized {
            return Ok(ClusterStatusResponse {
                node_id: node,
                ..Default::default()
            });
        }
        let members = s
            .voters
            .iter()
            .map(|&id| MemberStatus {
                node_id: id,
                rpc_addr: format!("n{id}"),
                role: if id == s.leader {
                    MemberRole::Leader
                } else {
                    MemberRole::Voter
                } as i32,
                matched_index: 1,
                lag: 0,
                healthy: !s.unhealthy.contains(&id),
            })
            .collect();
        Ok(ClusterStatusResponse {
            node_id: node,
            leader_id: Some(s.leader),
            term: 1,
            members,
            ..Default::default()
        })
    }
    async fn initialize(&self, node: u64) -> logcluster_operator::Result<bool> {
        let mut s = self.state();
        s.calls.push(format!("initialize {node}"));
        if s.initialized {
            s.violations.push("initialized twice".into());
        }
        s.initialized = true;
        s.voters = [node].into();
        s.leader = node;
        Ok(true)
    }
    async fn add_node(&self, _via: u64, node: u64) -> logcluster_operator::Result<()> {
        let mut s = self.state();
        s.calls.push(format!("add {node}"));
        s.voters.insert(node);
        Ok(())
    }
    async fn remove_node(&self, via: u64, node: u64) -> logcluster_operator::Result<()> {
        let mut s = self.state();
        s.calls.push(format!("remove {node}"));
        if via != s.leader {
            let leader = s.leader;
            s.violations.push(format!(
                "remove {node} sent to {via}, not the leader {leader}"
            ));
        }
        if node == s.leader {
            s.violations.push(format!("removed the leader {node}"));
        }
        let healthy_after = s
            .voters
            .iter()
            .filter(|&&v| v != node && !s.unhealthy.contains(&v))
            .count();
        let after = s.voters.len() - 1;
        if healthy_after < after / 2 + 1 {
            s.violations
                .push(format!("removing {node} broke the quorum"));
        }
        s.voters.remove(&node);
        Ok(())
    }
    async fn transfer_leader(&self, via: u64, to: u64) -> logcluster_operator::Result<()> {
        let mut s = self.state();
        s.calls.push(format!("transfer {via}->{to}"));
        s.leader = to;
        Ok(())
    }
}

impl NodeConnector for SimCluster {
    fn connect(
        &self,
        _names: &ClusterNames,
        tls: &ClientTls,
    ) -> logcluster_operator::Result<Arc<dyn NodeAdmin>> {
        // The operator must dial with its own certificate.
        let cn = logcluster_certs::inspect(&tls.cert_pem)
            .ok()
            .and_then(|i| i.subject_common_name);
        if cn.as_deref() != Some("operator") {
            self.state()
                .violations
                .push(format!("dialled with CN {cn:?}"));
        }
        Ok(Arc::new(self.clone()))
    }
}

/// Plays the StatefulSet controller: follows `spec.replicas`, publishes status, starts/stops
/// simulated pods, and records every replicas value it sees.
fn statefulset_controller(
    client: kube::Client,
    ns: &str,
    sim: SimCluster,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<i32>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let api: Api<StatefulSet> = Api::namespaced(client, ns);
    let task = tokio::spawn(async move {
        let stream = watcher(
            api.clone(),
            watcher::Config::default().fields("metadata.name=demo"),
        )
        .applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(sts)) = stream.next().await {
            let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            {
                let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                if seen.last() != Some(&replicas) {
                    seen.push(replicas);
                }
            }
            sim.set_pods(u32::try_from(replicas).unwrap_or(0));
            let current = sts.status.as_ref().map(|s| (s.replicas, s.ready_replicas));
            if current != Some((replicas, Some(replicas))) {
                let status = json!({"status": {"replicas": replicas, "readyReplicas": replicas,
                    "availableReplicas": replicas, "currentReplicas": replicas, "updatedReplicas": replicas}});
                let _ = api
                    .patch_status("demo", &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
    });
    (task, seen)
}

async fn wait_steady(lcs: &Api<LogCluster>, replicas: usize) -> Result<LogCluster> {
    wait_for(&format!("a steady cluster of {replicas}"), || async {
        let lc = get_lc(lcs, "demo").await?;
        let status = lc.status.clone().unwrap_or_default();
        let voters = status.members.iter().filter(|m| m.healthy).count();
        let steady = condition(&lc, "Progressing").is_some_and(|c| c.1 == "Complete")
            && voters == replicas
            && status.observed_generation == lc.metadata.generation;
        Ok(steady.then_some(lc))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_scales_a_simulated_raft_cluster_one_member_at_a_time() -> Result<()> {
    let sim = SimCluster::default();
    let mut f = Fixture::with_nodes("lc-scale", Arc::new(sim.clone())).await?;
    let (cp, ns, client) = (f.cp, &f.ns, &f.client);
    let (sts_task, seen) = statefulset_controller(client.clone(), ns, sim.clone());
    let lcs: Api<LogCluster> = Api::namespaced(client.clone(), ns);

    // Bootstrap: node 0 is initialized once, then nodes join one at a time.
    f.apply("demo", "  replicas: 3\n")?;
    let lc = wait_steady(&lcs, 3).await?;
    ensure!(lc.status.as_ref().is_some_and(|s| s.initialized));
    // Nodes 1 and 2 joined by gossip: the only admin call was the one Initialize.
    assert_eq!(sim.state().calls, ["initialize 0"]);
    assert_eq!(condition(&lc, "Ready").map(|c| c.0), Some("True".into()));
    assert_eq!(
        lc.status.as_ref().and_then(|s| s.leader.clone()).as_deref(),
        Some("demo-0")
    );
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .get("demo")
        .await?;
    assert_eq!(
        pdb.spec.and_then(|s| s.max_unavailable),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    // Up to 5 through the scale subresource.
    cp.kubectl_ok(["-n", ns, "scale", "lc/demo", "--replicas=5"])?;
    wait_steady(&lcs, 5).await?;
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5]);

    // Down to 3 while node 4 leads; the operator is killed right after its first removal and
    // a new one finishes the job.
    sim.state().leader = 4;
    sim.state().calls.clear();
    cp.kubectl_ok(["-n", ns, "scale", "lc/demo", "--replicas=3"])?;
    wait_for("the first removal", || async {
        Ok(sim
            .state()
            .calls
            .iter()
            .any(|c| c == "remove 4")
            .then_some(()))
    })
    .await?;
    // Replacing the operator aborts the old one.
    f.operator = start_operator(client.clone(), ns, Arc::new(sim.clone()));
    wait_steady(&lcs, 3).await?;
    assert_eq!(sim.state().calls, ["transfer 4->0", "remove 4", "remove 3"]);
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5, 4, 3]);

    // A scale-down that would break the quorum is refused, with the reason, until it would not.
    sim.state().unhealthy.insert(1);
    cp.kubectl_ok(["-n", ns, "scale", "lc/demo", "--replicas=2"])?;
    let lc = wait_for("the refusal in status", || async {
        let lc = get_lc(&lcs, "demo").await?;
        let blocked = lc
            .status
            .as_ref()
            .and_then(|s| s.scaling.as_ref())
            .is_some_and(|s| format!("{:?}", s.phase) == "Blocked");
        Ok(blocked.then_some(lc))
    })
    .await?;
    let message = lc
        .status
        .as_ref()
        .and_then(|s| s.scaling.as_ref())
        .map(|s| s.message.clone())
        .unwrap_or_default();
    ensure!(message.contains("quorum"), "{message}");
    // The Event follows the status write.
    let events: Api<Event> = f.api();
    wait_for("a ScalingBlocked Event", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ScalingBlocked"))
            .then_some(()))
    })
    .await?;
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2, 3, 4, 5, 4, 3],
        "a refused step changed the StatefulSet"
    );
    sim.state().unhealthy.clear();
    wait_steady(&lcs, 2).await?;

    sts_task.abort();
    let violations = sim.state().violations.clone();
    ensure!(violations.is_empty(), "protocol violations: {violations:?}");
    Ok(())
}
