//! The reconciler: [`reconcile`] hands a `LogCluster` to `kube::runtime::finalizer`, which runs
//! [`apply`] while it lives and [`cleanup`] once it is being deleted; [`error_policy`] counts
//! failures and backs off; [`run`] wires the watches.
//!
//! One reconcile is three stages, after the certificates are made current (they come first
//! because asking the nodes needs the operator's client certificate, which they may issue):
//! [`observe`] does every read (the StatefulSet, the gossip key, the nodes' admin API, the pods
//! of a roll, the volume claims); [`plan`] is a pure function from that to a [`plan::Plan`] —
//! the objects to apply, at most one step on the cluster (a scaling action, see
//! [`crate::scaling`], or when scaling is steady one step of a rolling update, see
//! [`crate::rollout`]), the claims to grow or delete, the Events and the status; [`execute`]
//! does the writes. With `spec.paused` it only observes and reports.

pub mod execute;
#[cfg(test)]
mod fixtures;
pub mod observe;
pub mod plan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use tracing::{Instrument, field, info, info_span, warn};

use self::observe::Credentials;
use self::plan::Note;
use crate::certificates::ensure_certificates;
use crate::crd::{FINALIZER, LogCluster, RetentionPolicy};
use crate::events::EventPublisher;
use crate::metrics::Metrics;
use crate::node_client::NodeConnector;
use crate::resources::BuildSettings;
use crate::resources::names::{ClusterNames, FIELD_MANAGER, MANAGED_BY};
use crate::{Error, Result};

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Settings the builders need.
    pub settings: BuildSettings,
    /// Reaches the nodes' admin API.
    pub connector: Arc<dyn NodeConnector>,
    /// Publishes Events.
    pub recorder: EventPublisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Requeue interval of a steady cluster (status refresh, drift repair).
    pub resync: Duration,
    /// Requeue interval while a scaling step is in progress.
    pub step_interval: Duration,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with the default intervals (resync 5 min, steps every 5 s).
    pub fn new(
        client: kube::Client,
        settings: BuildSettings,
        connector: Arc<dyn NodeConnector>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: EventPublisher::new(client.clone(), reporter),
            client,
            settings,
            connector,
            metrics,
            resync: Duration::from_secs(300),
            step_interval: Duration::from_secs(5),
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn object_key(lc: &LogCluster) -> String {
    format!("{}/{}", lc.namespace().unwrap_or_default(), lc.name_any())
}

/// Entry point of the controller for one `LogCluster`.
pub async fn reconcile(lc: Arc<LogCluster>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!("reconcile", namespace = field::Empty, name = %lc.name_any());
    if let Some(ns) = lc.namespace() {
        span.record("namespace", ns.as_str());
    }
    async move {
        ctx.metrics.reconcile_started();
        let started = Instant::now();
        let ns = lc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let key = object_key(&lc);
        let api: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
        let result = finalizer(&api, FINALIZER, lc, |event| async {
            match event {
                FinalizerEvent::Apply(lc) => apply(lc, ctx.clone()).await,
                FinalizerEvent::Cleanup(lc) => cleanup(lc, ctx.clone()).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        ctx.metrics.reconcile_finished(started.elapsed());
        if result.is_ok() {
            ctx.failures().remove(&key);
        }
        result
    }
    .instrument(span)
    .await
}

/// Backoff after a failed reconcile: 1 s doubling per consecutive failure of the same object, at
/// most 5 minutes. Every failure is counted by reason.
pub fn error_policy(lc: Arc<LogCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let failures = {
        let mut map = ctx.failures();
        let count = map.entry(object_key(&lc)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(failures);
    warn!(name = %lc.name_any(), error = %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

/// Reconciles a live `LogCluster`: certificates, then observe → plan → execute.
pub async fn apply(lc: Arc<LogCluster>, ctx: Arc<Context>) -> Result<Action> {
    let names = ClusterNames::new(&lc, &ctx.settings.cluster_domain)?;
    let ns = names.namespace.clone();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let sts = observe::statefulset(&Api::namespaced(ctx.client.clone(), &ns), &names).await?;
    let sts_replicas = observe::replicas_of(sts.as_ref());
    let now = SystemTime::now();

    // The certificate stage: everything else, including asking the nodes, needs them. A
    // failure is reported in the status, then fails the reconcile.
    let mut failure = None;
    let mut client_tls = None;
    let credentials = if lc.spec.paused {
        client_tls = observe::client_tls(&secrets, &names).await?;
        Credentials::Paused
    } else {
        let pods_for_names = lc.desired_replicas().max(sts_replicas.unwrap_or(0)).max(1);
        match ensure_certificates(&secrets, &lc, &names, pods_for_names, now).await {
            Ok(certs) => {
                execute::certificates_done(&ctx, &lc, &names, &certs).await;
                client_tls = Some(certs.client.clone());
                Credentials::Current(certs)
            }
            Err(e) => {
                let reason = e.to_string();
                failure = Some(e);
                Credentials::Failed(reason)
            }
        }
    };

    let admin = match &client_tls {
        Some(tls) => Some(ctx.connector.connect(&names, tls)?),
        None => None,
    };
    let observed =
        observe::observe(&ctx, &lc, &names, sts, credentials, admin.as_deref(), now).await?;

    let plan = plan::plan(&observed)?;
    info!(
        objects = plan.objects.is_some(),
        step = ?plan.step,
        progress = ?plan.status.report.health.progress,
        "reconcile planned"
    );
    let requeue = execute::execute(&ctx, &lc, &names, plan, admin.as_deref()).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Action::requeue(requeue))
}

/// Runs when a `LogCluster` is being deleted: honours `whenDeleted` for the volumes (the owned
/// objects go with the LogCluster through their owner references).
pub async fn cleanup(lc: Arc<LogCluster>, ctx: Arc<Context>) -> Result<Action> {
    let names = ClusterNames::new(&lc, &ctx.settings.cluster_domain)?;
    let claims_api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &names.namespace);
    let policy = lc.spec.storage.pvc_retention.when_deleted;
    let claims = observe::claims(&claims_api, &names).await?;
    if policy == RetentionPolicy::Delete {
        for claim in &claims {
            execute::delete_claim(&claims_api, &claim.name).await?;
        }
    }
    let note = match policy {
        RetentionPolicy::Delete => format!(
            "deleted {} volume claims (whenDeleted: Delete)",
            claims.len()
        ),
        RetentionPolicy::Retain => {
            format!("kept {} volume claims (whenDeleted: Retain)", claims.len())
        }
    };
    let note = Note {
        type_: EventType::Normal,
        reason: "Deleting".to_owned(),
        action: "Cleanup",
        note,
    };
    execute::publish(&ctx, &lc, &note).await;
    ctx.metrics.forget_cluster(&names.namespace, &names.cluster);
    ctx.connector.forget(&names);
    Ok(Action::await_change())
}

/// Which namespaces the operator watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs cluster-wide RBAC).
    All,
    /// Only these.
    Namespaces(Vec<String>),
}

fn api_for<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller for one namespace (or all) until shutdown.
async fn run_scope(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    // Metadata only: the operator never caches Secret contents (key material).
    let secrets = watcher(
        api_for::<PartialObjectMeta<Secret>>(&client, ns),
        owned.clone(),
    )
    .touched_objects();
    // NB: LogClusters trigger a reconcile only when their generation (spec, deletion) or
    // finalizers change. The operator writes the status on every reconcile, and member lag
    // changes under load: reacting to its own status writes would reconcile in a hot loop.
    let (reader, writer) = reflector::store();
    let logclusters = watcher(
        api_for::<LogCluster>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation.combine(predicates::finalizers),
        PredicateConfig::default(),
    );
    Controller::for_stream(logclusters, reader)
        .owns(api_for::<StatefulSet>(&client, ns), owned.clone())
        .owns(api_for::<Service>(&client, ns), owned.clone())
        .owns(api_for::<ConfigMap>(&client, ns), owned.clone())
        .owns(api_for::<PodDisruptionBudget>(&client, ns), owned.clone())
        .owns_stream(secrets)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object_name(&object), "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

fn object_name(object: &ObjectRef<LogCluster>) -> String {
    format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or(""),
        object.name
    )
}

/// Runs the controller over `scope` until a shutdown signal.
pub async fn run(ctx: Arc<Context>, scope: Scope) -> Result<()> {
    match scope {
        Scope::All => run_scope(ctx, None).await,
        Scope::Namespaces(namespaces) => {
            futures::future::join_all(
                namespaces
                    .into_iter()
                    .map(|ns| run_scope(ctx.clone(), Some(ns))),
            )
            .await;
        }
    }
    Ok(())
}
