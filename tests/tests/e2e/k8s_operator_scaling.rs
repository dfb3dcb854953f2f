//! The operator's scaling against a real `lognode` process cluster (issue 6): the operator runs
//! in-process against the shared API server, which holds the LogCluster and its StatefulSet; a
//! task of the test plays the StatefulSet controller and the kubelet, starting a `lognode`
//! process on loopback for every pod the StatefulSet asks for (gossip discovery, like the pods)
//! and stopping the highest ordinals when it shrinks. The operator reaches the nodes through a
//! `StaticResolver` (`<ns>/demo-<i>` → `127.0.<subnet>.<i+1>:8400`) with the client certificate
//! it issues itself from the cluster's CA (`spec.tls.caSecretName`); the nodes' certificate holds
//! the pod DNS names the operator verifies, and their ACL grants the operator `admin`.
//!
//! What is checked, against the real Raft membership (the leader's admin `ClusterStatus`):
//! * the StatefulSet moves one pod at a time, and only when it may: it grows only once every
//!   node below its size is a voter, and shrinks only once the removed node is out of the
//!   leader's configuration, both halves of a joint one included (checked by the fake
//!   StatefulSet controller at each change);
//! * the voter sets sampled throughout are always `{0..k}` prefixes, in order, with at most one
//!   learner at a time;
//! * a scale-down of the current leader transfers leadership first (the operator's Events);
//! * growing again brings a removed node back on its old data directory (retained volume);
//! * a scale-down that would break the quorum is refused, with the reason in the status and a
//!   `ScalingBlocked` Event, and nothing changes until the dead voter is back;
//! * killing the operator mid-scale (up and down) and starting another completes the change;
//! * a produce workload runs throughout and its history passes the checker (P1–P7).
//!
//! Loopback subnets 40–42.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{
    ClusterStatusRequest, ClusterStatusResponse, MemberRole, TransferLeaderRequest,
};
use logcluster_operator::crd::{LogCluster, MemberRole as CrdRole, ScalingPhase};
use logcluster_operator::node_client::{GrpcConnector, NodeConnector, StaticResolver};
use logcluster_operator::resources::BuildSettings;
use logcluster_operator::resources::names::ClusterNames;
use logcluster_tests::cluster::{ClusterSpec, Discovery, GRPC_PORT, ProcessCluster, Workload};
use logcluster_tests::k8s::ControlPlane;
use serde_json::json;
use tokio::sync::Mutex as AsyncMutex;
use tonic::transport::Channel;

use crate::k8s_operator::{Operator, PATIENCE, condition, control_plane, start_operator, wait_for};

/// The LogCluster (and StatefulSet, and pod name prefix).
const NAME: &str = "demo";
/// The existing CA the LogCluster names in `spec.tls.caSecretName`.
const CA_SECRET: &str = "demo-test-ca";
/// Pods a test may ever have (addresses and certificate names are prepared for them).
const MAX_PODS: u8 = 8;
/// Faster gossip than production (1 s), as in the gossip process tests.
const GOSSIP_INTERVAL: &str = "--gossip-interval=250ms";
/// The operator's admin call timeout (its `--admin-timeout` default).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

type Shared = Arc<AsyncMutex<ProcessCluster>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The Raft membership as the leader reports it

/// The leader's own view of the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    leader: u64,
    voters: BTreeSet<u64>,
    learners: BTreeSet<u64>,
    /// A joint configuration is in flight.
    changing: bool,
    /// The configuration's log entry is committed.
    committed: bool,
}

impl View {
    /// `None` unless `status` comes from a node that says it leads.
    fn of(status: &ClusterStatusResponse) -> Option<View> {
        let leader = status.leader_id?;
        if leader != status.node_id {
            return None;
        }
        let mut voters = BTreeSet::new();
        let mut learners = BTreeSet::new();
        for m in &status.members {
            match MemberRole::try_from(m.role) {
                Ok(MemberRole::Leader | MemberRole::Voter) => voters.insert(m.node_id),
                _ => learners.insert(m.node_id),
            };
        }
        Some(View {
            leader,
            voters,
            learners,
            changing: status.membership_changing,
            committed: status.membership_log_index <= status.commit_index,
        })
    }

    fn members(&self) -> BTreeSet<u64> {
        self.voters.union(&self.learners).copied().collect()
    }
}

fn ids(range: std::ops::Range<u64>) -> BTreeSet<u64> {
    range.collect()
}

/// The leader's view, retried for a while (an election may be in progress).
async fn leader_view(cluster: &ProcessCluster) -> Result<View, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no leader");
    loop {
        if let Some(leader) = cluster.leader().await {
            match cluster.status_of(leader).await {
                Ok(status) => match View::of(&status) {
                    Some(view) => return Ok(view),
                    None => last = format!("node {leader} no longer leads"),
                },
                Err(e) => last = e.to_string(),
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("no leader's view within 30 s: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples the leader's view every 200 ms and records every change (leader, voters, learners).
struct Monitor {
    task: tokio::task::JoinHandle<()>,
    views: Arc<Mutex<Vec<View>>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Monitor {
    fn start(cluster: Shared) -> Self {
        let views: Arc<Mutex<Vec<View>>> = Arc::default();
        let record = views.clone();
        let task = tokio::spawn(async move {
            let mut channels: HashMap<usize, Channel> = HashMap::new();
            loop {
                if let Some(view) = Self::sample(&cluster, &mut channels).await {
                    let mut views = lock(&record);
                    let same = views.last().is_some_and(|last: &View| {
                        (last.leader, &last.voters, &last.learners)
                            == (view.leader, &view.voters, &view.learners)
                    });
                    if !same {
                        views.push(view);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Monitor { task, views }
    }

    /// The view of the node that claims leadership in the highest term, asked through cached
    /// channels (no new TLS connection per sample).
    async fn sample(cluster: &Shared, channels: &mut HashMap<usize, Channel>) -> Option<View> {
        {
            let cluster = cluster.lock().await;
            for (index, node) in cluster.nodes.iter().enumerate() {
                if node.is_running()
                    && !channels.contains_key(&index)
                    && let Ok(channel) = cluster.channel_to(index).await
                {
                    channels.insert(index, channel);
                }
            }
        }
        let mut best: Option<(u64, View)> = None;
        for channel in channels.values() {
            let mut request = tonic::Request::new(ClusterStatusRequest {});
            request.set_timeout(Duration::from_secs(2));
            let Ok(status) = AdminClient::new(channel.clone())
                .cluster_status(request)
                .await
                .map(tonic::Response::into_inner)
            else {
                continue;
            };
            if let Some(view) = View::of(&status)
                && best.as_ref().is_none_or(|(term, _)| status.term > *term)
            {
                best = Some((status.term, view));
            }
        }
        best.map(|(_, view)| view)
    }

    fn len(&self) -> usize {
        lock(&self.views).len()
    }

    fn since(&self, from: usize) -> Vec<View> {
        lock(&self.views)[from..].to_vec()
    }
}

/// Checks the views sampled during one scaling run: every voter set is one of `sets`, in that
/// order (a sample may skip a set, never go back), and there is never more than one learner.
fn check_views(views: &[View], sets: &[BTreeSet<u64>]) -> Result<()> {
    let mut at = 0;
    for view in views {
        ensure!(
            view.learners.len() <= 1,
            "two learners at once: {view:?} (all samples: {views:?})"
        );
        let Some(position) = sets.iter().position(|s| *s == view.voters) else {
            bail!(
                "voters {:?} are not one of the expected steps {sets:?} (all samples: {views:?})",
                view.voters
            );
        };
        ensure!(
            position >= at,
            "voters went back from {:?} to {:?} (all samples: {views:?})",
            sets[at],
            view.voters
        );
        at = position;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The StatefulSet controller and kubelet, played by the test

/// Follows the StatefulSet: starts a `lognode` process for every pod it asks for and stops the
/// highest ordinals when it shrinks, then publishes the StatefulSet status. Before acting on a
/// change it checks the protocol against the real membership and records violations.
struct Pods {
    task: tokio::task::JoinHandle<()>,
    /// Every distinct `spec.replicas`, in order.
    replicas: Arc<Mutex<Vec<u32>>>,
    violations: Arc<Mutex<Vec<String>>>,
    /// Pods that stay down (a crashed node whose pod the test does not let come back).
    held_down: Arc<Mutex<HashSet<usize>>>,
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pods {
    fn start(client: kube::Client, ns: &str, cluster: Shared) -> Self {
        let replicas: Arc<Mutex<Vec<u32>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let held_down: Arc<Mutex<HashSet<usize>>> = Arc::default();
        let api: Api<StatefulSet> = Api::namespaced(client, ns);
        let (seen, bad, held) = (replicas.clone(), violations.clone(), held_down.clone());
        let task = tokio::spawn(async move {
            let stream = watcher(
                api.clone(),
                watcher::Config::default().fields(&format!("metadata.name={NAME}")),
            )
            .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(sts) = event else { continue };
                let wanted = sts
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .and_then(|r| u32::try_from(r).ok())
                    .unwrap_or(0);
                let last = lock(&seen).last().copied();
                let mut cluster = cluster.lock().await;
                if last != Some(wanted) {
                    lock(&seen).push(wanted);
                    if let Some(last) = last {
                        let problems = Self::check_change(&cluster, last, wanted).await;
                        lock(&bad).extend(problems);
                    }
                    // Pods above the new size go (as Kubernetes deletes them, highest first).
                    for index in (wanted as usize..cluster.nodes.len()).rev() {
                        tokio::task::block_in_place(|| cluster.stop(index));
                    }
                }
                let held: HashSet<usize> = lock(&held).clone();
                for index in 0..wanted as usize {
                    let result = if index >= cluster.nodes.len() {
                        cluster.add_node_process().map(|_| ())
                    } else if !cluster.nodes[index].is_running() && !held.contains(&index) {
                        cluster.restart(index)
                    } else {
                        Ok(())
                    };
                    if let Err(e) = result {
                        lock(&bad).push(format!("starting pod {index}: {e}"));
                    }
                }
                let ready = (0..wanted as usize)
                    .filter(|&i| cluster.nodes.get(i).is_some_and(|n| n.is_running()))
                    .count();
                drop(cluster);
                let status = sts.status.as_ref();
                let current = status.map(|s| (s.replicas, s.ready_replicas));
                let (wanted, ready) = (wanted as i32, ready as i32);
                if current != Some((wanted, Some(ready))) {
                    let patch = json!({"status": {
                        "observedGeneration": sts.metadata.generation,
                        "replicas": wanted,
                        "readyReplicas": ready,
                        "availableReplicas": ready,
                        "currentReplicas": wanted,
                        "updatedReplicas": wanted,
                    }});
                    if let Err(e) = api
                        .patch_status(NAME, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        lock(&bad).push(format!("patching the StatefulSet status: {e}"));
                    }
                }
            }
        });
        Pods {
            task,
            replicas,
            violations,
            held_down,
        }
    }

    /// The protocol at a change of `spec.replicas` from `last` to `wanted`.
    async fn check_change(cluster: &ProcessCluster, last: u32, wanted: u32) -> Vec<String> {
        let mut problems = Vec::new();
        if wanted.abs_diff(last) != 1 {
            problems.push(format!("the StatefulSet went from {last} to {wanted} pods"));
        }
        let view = match leader_view(cluster).await {
            Ok(view) => view,
            Err(e) => {
                return vec![format!(
                    "StatefulSet {last} → {wanted}: could not read the membership: {e}"
                )];
            }
        };
        if wanted > last {
            // Up: every node below the old size is already a voter.
            let missing: Vec<u64> = (0..u64::from(last))
                .filter(|id| !view.voters.contains(id))
                .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "StatefulSet {last} → {wanted} while nodes {missing:?} were not voters \
                     ({view:?})"
                ));
            }
        } else {
            // Down: the removed nodes are out of the configuration, both halves of a joint one
            // included. NB: this view is read after the change, so a later change (the next
            // removal) may be in flight; it cannot tell an appended-but-uncommitted final
            // configuration from a committed one (the operator's unit tests cover that).
            let members = view.members();
            let still: Vec<u64> = (u64::from(wanted)..u64::from(last))
                .filter(|id| members.contains(id))
                .collect();
            if !still.is_empty() {
                problems.push(format!(
                    "StatefulSet {last} → {wanted} while nodes {still:?} were still members \
                     ({view:?})"
                ));
            }
        }
        problems
    }

    fn replicas(&self) -> Vec<u32> {
        lock(&self.replicas).clone()
    }

    fn violations(&self) -> Vec<String> {
        lock(&self.violations).clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Events of the LogCluster, in the order they were created

struct EventLog {
    task: tokio::task::JoinHandle<()>,
    /// (reason, note), first sighting of each Event.
    entries: Arc<Mutex<Vec<(String, String)>>>,
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventLog {
    fn start(client: kube::Client, ns: &str) -> Self {
        let entries: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let record = entries.clone();
        let api: Api<Event> = Api::namespaced(client, ns);
        let task = tokio::spawn(async move {
            let mut seen = HashSet::new();
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let about_us = event
                    .regarding
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(NAME));
                let uid = event.metadata.uid.clone().unwrap_or_default();
                if about_us && seen.insert(uid) {
                    lock(&record).push((
                        event.reason.clone().unwrap_or_default(),
                        event.note.clone().unwrap_or_default(),
                    ));
                }
            }
        });
        EventLog { task, entries }
    }

    fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    fn since(&self, from: usize) -> Vec<(String, String)> {
        lock(&self.entries)[from..].to_vec()
    }

    /// Position (from `from`) of the first Event with `reason` whose note contains `needle`.
    fn position(&self, from: usize, reason: &str, needle: &str) -> Option<usize> {
        self.since(from)
            .iter()
            .position(|(r, n)| r == reason && n.contains(needle))
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture

/// A namespace with a LogCluster `demo` whose pods are local `lognode` processes, an in-process
/// operator, and the observers above.
struct Harness {
    cp: &'static ControlPlane,
    ns: String,
    client: kube::Client,
    cluster: Shared,
    resolver: Arc<StaticResolver>,
    operator: Option<Operator>,
    pods: Pods,
    events: EventLog,
    monitor: Monitor,
}

impl Harness {
    async fn start(prefix: &str, subnet: u8) -> Result<Self> {
        let cp = control_plane()?;
        let ns = cp.create_namespace(prefix)?;
        let client = cp.kube_client().await?;
        let names = ClusterNames {
            cluster: NAME.to_owned(),
            namespace: ns.clone(),
            cluster_domain: BuildSettings::default().cluster_domain,
        };

        let mut spec = ClusterSpec::new(0, subnet);
        spec.discovery = Discovery::Gossip;
        spec.extra_args = vec![GOSSIP_INTERVAL.to_owned()];
        // As in Kubernetes: node 0 starts uninitialized and the operator initializes the
        // cluster through the admin API.
        spec.bootstrap = false;
        // The nodes' certificate also holds the pod names the operator verifies, and the ACL
        // grants the operator's certificate (CN `operator`) `admin`.
        spec.node_dns_names = (0..u32::from(MAX_PODS))
            .map(|i| names.pod_fqdn(i))
            .collect();
        spec.extra_policy = vec!["p, operator, *, admin".to_owned()];
        let cluster = ProcessCluster::create(spec)?;
        let pki = cluster.pki.clone();

        // The same CA, handed to the operator as an existing CA Secret.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let ca_secret = Secret {
            metadata: ObjectMeta {
                name: Some(CA_SECRET.to_owned()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            string_data: Some(
                [
                    ("tls.crt".to_owned(), read(&pki.ca)?),
                    ("tls.key".to_owned(), read(&pki.ca_key)?),
                ]
                .into(),
            ),
            ..Secret::default()
        };
        secrets.create(&PostParams::default(), &ca_secret).await?;

        let mut resolver = StaticResolver::new();
        for i in 0..MAX_PODS {
            resolver.insert(
                &ns,
                &names.pod(u32::from(i)),
                &format!("127.0.{subnet}.{}:{GRPC_PORT}", i + 1),
            );
        }
        let cluster: Shared = Arc::new(AsyncMutex::new(cluster));
        let events = EventLog::start(client.clone(), &ns);
        let pods = Pods::start(client.clone(), &ns, cluster.clone());
        let monitor = Monitor::start(cluster.clone());
        let mut harness = Harness {
            cp,
            ns,
            client,
            cluster,
            resolver: Arc::new(resolver),
            operator: None,
            pods,
            events,
            monitor,
        };
        harness.restart_operator();
        Ok(harness)
    }

    fn connector(&self) -> Arc<dyn NodeConnector> {
        Arc::new(GrpcConnector::new(self.resolver.clone(), ADMIN_TIMEOUT))
    }

    /// Aborts the running operator, wherever it is (mid-reconcile, mid-call), and starts a new
    /// one with fresh connections.
    fn restart_operator(&mut self) {
        drop(self.operator.take());
        self.operator = Some(start_operator(
            self.client.clone(),
            &self.ns,
            self.connector(),
        ));
    }

    fn lcs(&self) -> Api<LogCluster> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates the LogCluster with `replicas` and waits until it is steady.
    async fn create_cluster(&self, replicas: u32) -> Result<()> {
        let yaml = format!(
            "apiVersion: logcluster.io/v1alpha1\nkind: LogCluster\nmetadata:\n  name: {NAME}\n\
             spec:\n  replicas: {replicas}\n  tls:\n    caSecretName: {CA_SECRET}\n    \
             validity: 24h\n    renewBefore: 1h\n"
        );
        let out = self.cp.kubectl_with_stdin(
            [
                "-n",
                &self.ns,
                "apply",
                "--server-side",
                "--field-manager=test",
                "-f",
                "-",
            ],
            &yaml,
        )?;
        ensure!(
            out.status.success(),
            "creating the LogCluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_steady(replicas).await
    }

    /// `kubectl scale lc/demo`.
    fn scale(&self, replicas: u32) -> Result<()> {
        self.cp.kubectl_ok([
            "-n",
            &self.ns,
            "scale",
            &format!("lc/{NAME}"),
            &format!("--replicas={replicas}"),
        ])?;
        Ok(())
    }

    /// Waits until the operator reports `replicas` healthy voters as complete and ready, the
    /// StatefulSet has that many pods, and the leader's configuration is exactly `0..replicas`.
    async fn wait_steady(&self, replicas: u32) -> Result<()> {
        let lcs = self.lcs();
        let want = ids(0..u64::from(replicas));
        let result = wait_for(&format!("a steady cluster of {replicas}"), || async {
            let lc = lcs.get(NAME).await?;
            let status = lc.status.clone().unwrap_or_default();
            let voters: BTreeSet<u64> = status
                .members
                .iter()
                .filter(|m| m.healthy && matches!(m.role, CrdRole::Leader | CrdRole::Voter))
                .filter_map(|m| u64::try_from(m.node_id).ok())
                .collect();
            let reported = condition(&lc, "Progressing").is_some_and(|c| c.1 == "Complete")
                && condition(&lc, "Ready").is_some_and(|c| c.0 == "True")
                && status.observed_generation == lc.metadata.generation
                && status.members.len() == want.len()
                && voters == want
                && status.initialized;
            if !reported || self.pods.replicas().last() != Some(&replicas) {
                return Ok(None);
            }
            let cluster = self.cluster.lock().await;
            let view = leader_view(&cluster).await.map_err(anyhow::Error::msg)?;
            let settled = view.committed && !view.changing;
            Ok((view.voters == want && view.learners.is_empty() && settled).then_some(()))
        })
        .await;
        if let Err(e) = result {
            let lc = lcs.get(NAME).await.ok().and_then(|lc| lc.status);
            let logs = self.cluster.lock().await.logs();
            bail!(
                "{e:#}\nstatus: {lc:#?}\nStatefulSet replicas seen: {:?}\nviolations: {:?}\n\
                 events: {:?}\n{logs}",
                self.pods.replicas(),
                self.pods.violations(),
                self.events.since(0)
            );
        }
        Ok(())
    }

    /// Moves leadership to node `to` with the admin API (the `root` certificate).
    async fn transfer_leadership(&self, to: u64) -> Result<()> {
        wait_for(&format!("node {to} to lead"), || async {
            let cluster = self.cluster.lock().await;
            let view = leader_view(&cluster).await.map_err(anyhow::Error::msg)?;
            if view.leader == to {
                return Ok(Some(()));
            }
            let channel = cluster.channel_to(usize::try_from(view.leader)?).await?;
            AdminClient::new(channel)
                .transfer_leader(TransferLeaderRequest { node_id: Some(to) })
                .await?;
            Ok(None)
        })
        .await
    }

    /// A leader-aware client of the running nodes.
    async fn log_client(&self) -> Result<logcluster_api::LogClient> {
        Ok(self.cluster.lock().await.client().await?)
    }

    /// Stops the workload and checks its history against every running node (P1–P7).
    async fn verify(&self, workload: Workload) -> Result<()> {
        let (history, seen) = workload.stop().await;
        let cluster = self.cluster.lock().await;
        let summary = cluster.verify(&history, seen.as_deref()).await?;
        eprintln!("history: {summary:?}");
        Ok(())
    }

    fn ensure_no_violations(&self) -> Result<()> {
        let violations = self.pods.violations();
        ensure!(
            violations.is_empty(),
            "protocol violations: {violations:#?}"
        );
        Ok(())
    }
}

/// At least `count` produces acknowledged since `since` (bounded wait: traffic flowed).
async fn wait_for_traffic(workload: &Workload, since: Duration, count: usize) -> Result<()> {
    workload
        .history()
        .wait_for_acks(since, count, PATIENCE)
        .await
        .map_err(anyhow::Error::msg)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_scaling_grows_and_shrinks_a_real_cluster_one_voter_at_a_time() -> Result<()> {
    let h = Harness::start("lc-real-scale", 40).await?;

    // From nothing to 3: the StatefulSet starts with node 0, which the operator initializes,
    // and grows by one each time the newest node is a voter.
    h.create_cluster(3).await?;
    assert_eq!(h.pods.replicas(), [1, 2, 3]);
    ensure!(
        h.events.position(0, "ClusterInitialized", "").is_some(),
        "the operator initialized the cluster: {:?}",
        h.events.since(0)
    );
    check_views(&h.monitor.since(0), &[ids(0..1), ids(0..2), ids(0..3)])?;

    let workload = Workload::start(&h.log_client().await?, 2, true);
    wait_for_traffic(&workload, Duration::ZERO, 100).await?;

    // 3 → 5.
    let (views, since) = (h.monitor.len(), workload.history().now());
    h.scale(5)?;
    h.wait_steady(5).await?;
    wait_for_traffic(&workload, since, 100).await?;
    assert_eq!(h.pods.replicas(), [1, 2, 3, 4, 5]);
    check_views(&h.monitor.since(views), &[ids(0..3), ids(0..4), ids(0..5)])?;

    // 5 → 3 while node 4 (the first to go) leads: leadership moves before its removal.
    h.transfer_leadership(4).await?;
    let (views, events, since) = (h.monitor.len(), h.events.len(), workload.history().now());
    h.scale(3)?;
    h.wait_steady(3).await?;
    wait_for_traffic(&workload, since, 100).await?;
    assert_eq!(h.pods.replicas(), [1, 2, 3, 4, 5, 4, 3]);
    check_views(&h.monitor.since(views), &[ids(0..5), ids(0..4), ids(0..3)])?;
    let transfer = h
        .events
        .position(events, "LeadershipTransferred", "from node 4 ");
    let removed_4 = h.events.position(events, "NodeRemoved", "remove node 4 ");
    let removed_3 = h.events.position(events, "NodeRemoved", "remove node 3 ");
    ensure!(
        matches!((transfer, removed_4, removed_3), (Some(t), Some(r4), Some(r3)) if t < r4 && r4 < r3),
        "expected: leadership moved off node 4, then node 4 removed, then node 3; Events: {:#?}",
        h.events.since(events)
    );

    // 3 → 4: node 3 comes back on its old data (the default `whenScaled: Retain` keeps the
    // volume), holding a stale configuration in which it may still be a member.
    let (views, since) = (h.monitor.len(), workload.history().now());
    h.scale(4)?;
    h.wait_steady(4).await?;
    wait_for_traffic(&workload, since, 100).await?;
    assert_eq!(h.pods.replicas(), [1, 2, 3, 4, 5, 4, 3, 4]);
    check_views(&h.monitor.since(views), &[ids(0..3), ids(0..4)])?;

    h.verify(workload).await?;
    h.ensure_no_violations()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_scaling_refuses_a_scale_down_that_would_break_quorum() -> Result<()> {
    let h = Harness::start("lc-real-quorum", 41).await?;
    h.create_cluster(3).await?;

    // Kill a voter that is neither the leader nor the node a scale-down removes (node 2) and
    // keep its pod down; wait until the leader no longer hears from it.
    let view = leader_view(&*h.cluster.lock().await)
        .await
        .map_err(anyhow::Error::msg)?;
    let victim = if view.leader == 0 { 1 } else { 0 };
    {
        let mut cluster = h.cluster.lock().await;
        lock(&h.pods.held_down).insert(victim);
        cluster.kill(victim);
    }
    wait_for(
        &format!("the leader to see node {victim} as unhealthy"),
        || async {
            let cluster = h.cluster.lock().await;
            let Some(leader) = cluster.leader().await else {
                return Ok(None);
            };
            let status = cluster.status_of(leader).await?;
            Ok(status
                .members
                .iter()
                .any(|m| m.node_id == victim as u64 && !m.healthy)
                .then_some(()))
        },
    )
    .await?;

    // 3 → 2 would leave one healthy voter of two: refused, with the reason.
    let events = h.events.len();
    h.scale(2)?;
    let lcs = h.lcs();
    let lc = wait_for("the refusal in the status", || async {
        let lc = lcs.get(NAME).await?;
        let blocked = lc
            .status
            .as_ref()
            .and_then(|s| s.scaling.as_ref())
            .is_some_and(|s| s.phase == ScalingPhase::Blocked)
            && lc.status.as_ref().and_then(|s| s.observed_generation) == lc.metadata.generation;
        Ok(blocked.then_some(lc))
    })
    .await?;
    let message = lc
        .status
        .as_ref()
        .and_then(|s| s.scaling.as_ref())
        .map(|s| s.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains("removing node 2") && message.contains("quorum needs 2"),
        "{message}"
    );
    assert_eq!(
        condition(&lc, "Progressing"),
        Some(("False".to_owned(), "ScalingBlocked".to_owned()))
    );
    assert_eq!(
        condition(&lc, "Degraded").map(|c| c.0),
        Some("True".to_owned())
    );
    wait_for("a ScalingBlocked Event", || async {
        Ok(h.events
            .position(events, "ScalingBlocked", "quorum needs 2")
            .map(|_| ()))
    })
    .await?;

    // Nothing moves while it is refused: a few more reconciles (every 500 ms) change neither
    // the StatefulSet nor the membership.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.pods.replicas(),
        [1, 2, 3],
        "a refused step changed the StatefulSet"
    );
    let view = leader_view(&*h.cluster.lock().await)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        view.voters,
        ids(0..3),
        "a refused step changed the membership"
    );
    ensure!(
        h.events.position(events, "NodeRemoved", "").is_none(),
        "{:#?}",
        h.events.since(events)
    );

    // The voter comes back: the scale-down goes ahead.
    {
        let mut cluster = h.cluster.lock().await;
        lock(&h.pods.held_down).remove(&victim);
        cluster.restart(victim).map_err(anyhow::Error::msg)?;
    }
    h.wait_steady(2).await?;
    assert_eq!(h.pods.replicas(), [1, 2, 3, 2]);
    h.ensure_no_violations()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_operator_scaling_completes_after_the_operator_is_killed_mid_scale() -> Result<()> {
    let mut h = Harness::start("lc-real-restart", 42).await?;
    h.create_cluster(3).await?;
    let workload = Workload::start(&h.log_client().await?, 2, true);
    wait_for_traffic(&workload, Duration::ZERO, 100).await?;

    // Up: kill the operator as soon as the StatefulSet has the 4th pod (node 3 is starting or
    // joining), start a new one.
    let (views, since) = (h.monitor.len(), workload.history().now());
    h.scale(5)?;
    wait_for("the StatefulSet to grow to 4", || async {
        Ok(h.pods.replicas().contains(&4).then_some(()))
    })
    .await?;
    h.restart_operator();
    eprintln!(
        "operator killed during 3 → 5 with StatefulSet replicas {:?}, membership {:?}",
        h.pods.replicas(),
        h.monitor.since(0).last()
    );
    h.wait_steady(5).await?;
    wait_for_traffic(&workload, since, 100).await?;
    assert_eq!(h.pods.replicas(), [1, 2, 3, 4, 5]);
    check_views(&h.monitor.since(views), &[ids(0..3), ids(0..4), ids(0..5)])?;

    // Down: kill it right after it removed node 4, before it lowered the StatefulSet (usually:
    // the next step comes a reconcile later); the new one must lower it, not add node 4 back.
    let (views, events, since) = (h.monitor.len(), h.events.len(), workload.history().now());
    h.scale(3)?;
    wait_for("the removal of node 4", || async {
        Ok(h.events
            .position(events, "NodeRemoved", "remove node 4 ")
            .map(|_| ()))
    })
    .await?;
    h.restart_operator();
    eprintln!(
        "operator killed during 5 → 3 with StatefulSet replicas {:?}",
        h.pods.replicas()
    );
    h.wait_steady(3).await?;
    wait_for_traffic(&workload, since, 100).await?;
    assert_eq!(h.pods.replicas(), [1, 2, 3, 4, 5, 4, 3]);
    check_views(&h.monitor.since(views), &[ids(0..5), ids(0..4), ids(0..3)])?;
    ensure!(
        h.events.position(events, "NodeAdded", "").is_none(),
        "a node was added during the scale-down: {:#?}",
        h.events.since(events)
    );

    h.verify(workload).await?;
    h.ensure_no_violations()
}
