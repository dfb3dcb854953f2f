//! Every write of a reconcile, in the order the [`Plan`] implies: the gossip key, the ConfigMap and Services, the StatefulSet, the one step on the
//! cluster, the PodDisruptionBudget, the volume claims, then the status and its Events.
//!
//! A step that fails or is refused changes what the status reports (its progress message,
//! whether the cluster is initialized); a failed scaling action fails the reconcile after the
//! status was written, so the failure is visible on the resource too.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams};
use kube::runtime::events::Event;
use rand::RngCore;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::Context;
use super::plan::{ClaimChanges, ClusterStep, Note, Plan, certificate_events};
use crate::certificates::CertificatesOutcome;
use crate::crd::{LogCluster, ScalingPhase};
use crate::node_client::NodeAdmin;
use crate::node_id::NodeId;
use crate::resources::names::{ClusterNames, FIELD_MANAGER};
use crate::resources::secrets::gossip_secret;
use crate::rollout::Step;
use crate::scaling::{AdminAction, Progress};
use crate::{Error, Result};

/// Carries out `plan` and returns when to reconcile again. `admin` reaches the nodes; a step is
/// only ever planned from their answers, so without it there is no step to take.
pub async fn execute(
    ctx: &Context,
    lc: &LogCluster,
    names: &ClusterNames,
    mut plan: Plan,
    admin: Option<&dyn NodeAdmin>,
) -> Result<Duration> {
    let ns = &names.namespace;
    if let Some(note) = &plan.gossip_key {
        // Created once, never rotated by the operator: every node must hold the same key at the
        // same time.
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        apply_object(&secrets, &gossip_secret(lc, names, &key)?).await?;
        publish(ctx, lc, note).await;
    }

    let mut step_error = None;
    if let Some(objects) = plan.objects.take() {
        apply_object(
            &Api::<ConfigMap>::namespaced(ctx.client.clone(), ns),
            &objects.config_map,
        )
        .await?;
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        apply_object(&services, &objects.headless_service).await?;
        apply_object(&services, &objects.client_service).await?;
        let applied = apply_object(
            &Api::<StatefulSet>::namespaced(ctx.client.clone(), ns),
            &objects.statefulset,
        )
        .await?;
        for note in &plan.statefulset_events {
            publish(ctx, lc, note).await;
        }
        let generation = applied.metadata.generation;
        plan.status.report.statefulset = Some(applied);

        if let Some(step) = plan.step.take()
            && let Some(admin) = admin
        {
            step_error = take_step(ctx, lc, names, &mut plan, step, generation, admin).await?;
        }

        apply_object(
            &Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), ns),
            &objects.pdb,
        )
        .await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        plan.status.report.health.volume_problem =
            change_claims(ctx, lc, &claims, &plan.claims).await?;
    }

    write_status(ctx, lc, names, &plan).await?;
    match step_error {
        Some(e) => Err(e),
        None => Ok(plan.requeue_after()),
    }
}

/// Takes the plan's step and records its outcome in the plan's status. A failed scaling action
/// is returned (`Ok(Some)`) to fail the reconcile once the status is written; a failed eviction
/// request fails it at once.
async fn take_step(
    ctx: &Context,
    lc: &LogCluster,
    names: &ClusterNames,
    plan: &mut Plan,
    step: ClusterStep,
    applied_generation: Option<i64>,
    admin: &dyn NodeAdmin,
) -> Result<Option<Error>> {
    let report = &mut plan.status.report;
    match step {
        ClusterStep::Scale { action, leader } => match admin_call(admin, action, leader).await {
            Ok(()) => {
                if action == AdminAction::Initialize {
                    report.initialized = true;
                    report.health.initialized = true;
                }
                publish(ctx, lc, &ClusterStep::scale_note(action)).await;
                Ok(None)
            }
            Err(e) => {
                warn!(error = %e, %action, "admin step failed");
                Ok(Some(e))
            }
        },
        ClusterStep::Roll { generation, .. } if generation != applied_generation => {
            // The StatefulSet just got a new template: nothing to roll towards yet.
            report.health.progress = Some(Progress::Steady);
            Ok(None)
        }
        ClusterStep::Roll { step, .. } => {
            let mut message = step.to_string();
            match &step {
                Step::Done | Step::Wait(_) => {}
                Step::Evict { pod, .. } => {
                    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
                    match evict(&pods, pod).await {
                        Ok(true) => {
                            let note = rolling_note("PodReplaced", message.clone());
                            publish(ctx, lc, &note).await;
                        }
                        Ok(false) => {
                            message = format!(
                                "rolling update: the PodDisruptionBudget refused evicting {pod}; \
                                 retrying"
                            );
                        }
                        Err(e) => return Err(e),
                    }
                }
                Step::TransferLeader { from, to } => {
                    let action = AdminAction::TransferLeader {
                        from: *from,
                        to: *to,
                    };
                    match admin_call(admin, action, Some(*from)).await {
                        Ok(()) => {
                            let note = rolling_note("LeadershipTransferred", message.clone());
                            publish(ctx, lc, &note).await;
                        }
                        Err(e) => {
                            warn!(error = %e, %action, "leadership transfer before a pod replacement failed");
                            message = format!("rolling update: {action} failed ({e}); retrying");
                        }
                    }
                }
            }
            info!(%message, "rolling update");
            report.health.progress = Some(Progress::Working {
                phase: ScalingPhase::RollingUpdate,
                message,
            });
            Ok(None)
        }
    }
}

fn rolling_note(reason: &str, note: String) -> Note {
    Note {
        type_: kube::runtime::events::EventType::Normal,
        reason: reason.to_owned(),
        action: "RollingUpdate",
        note,
    }
}

/// Performs an admin action. `leader` is where membership changes are sent.
pub async fn admin_call(
    admin: &dyn NodeAdmin,
    action: AdminAction,
    leader: Option<NodeId>,
) -> Result<()> {
    match action {
        AdminAction::Initialize => {
            admin.initialize(0).await?;
        }
        AdminAction::AddNode(id) => {
            admin.add_node(leader.unwrap_or(0), id).await?;
        }
        AdminAction::TransferLeader { from, to } => {
            admin.transfer_leader(from, to).await?;
        }
        AdminAction::RemoveNode(id) => {
            admin.remove_node(leader.unwrap_or(0), id).await?;
        }
    }
    Ok(())
}

/// Evicts `pod` through the Eviction API, so the PodDisruptionBudget applies. `Ok(false)` when
/// the budget refused (HTTP 429): not an error, the next reconcile tries again.
async fn evict(pods: &Api<Pod>, pod: &str) -> Result<bool> {
    match pods.evict(pod, &EvictParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 429 => Ok(false),
        Err(e) => Err(Error::kube(format!("evicting pod {pod}"), e)),
    }
}

/// Grows and deletes claims. A failed resize is returned as a problem for the status instead of
/// failing the reconcile: a storage class without expansion must not stop everything else.
async fn change_claims(
    ctx: &Context,
    lc: &LogCluster,
    api: &Api<PersistentVolumeClaim>,
    changes: &ClaimChanges,
) -> Result<Option<String>> {
    let mut problems = Vec::new();
    for name in &changes.grow {
        let patch =
            serde_json::json!({"spec": {"resources": {"requests": {"storage": changes.size}}}});
        if let Err(e) = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            problems.push(format!("resizing {name}: {e}"));
        }
    }
    for (name, note) in &changes.delete {
        delete_claim(api, name).await?;
        publish(ctx, lc, note).await;
    }
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}

/// Deletes a volume claim; one already gone is fine.
pub async fn delete_claim(api: &Api<PersistentVolumeClaim>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(
            format!("deleting PersistentVolumeClaim {name}"),
            e,
        )),
    }
}

/// Writes the plan's status (server-side apply on the status subresource), then its Events.
async fn write_status(
    ctx: &Context,
    lc: &LogCluster,
    names: &ClusterNames,
    plan: &Plan,
) -> Result<()> {
    let status = plan.status.render();
    let patch = serde_json::json!({
        "apiVersion": "logcluster.io/v1alpha1",
        "kind": "LogCluster",
        "status": status,
    });
    let api: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &names.namespace);
    api.patch_status(
        &names.cluster,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("writing the status of LogCluster {}", names.cluster),
            e,
        )
    })?;
    for note in plan.status.events(&status) {
        publish(ctx, lc, &note).await;
    }
    Ok(())
}

/// Server-side apply by the operator's field manager, forced.
pub async fn apply_object<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|e| Error::kube(format!("applying {} {name}", K::kind(&())), e))
}

/// Reports what the certificate stage did: its Events and the expiry metric.
pub async fn certificates_done(
    ctx: &Context,
    lc: &LogCluster,
    names: &ClusterNames,
    certs: &CertificatesOutcome,
) {
    for note in certificate_events(certs, names) {
        publish(ctx, lc, &note).await;
    }
    let expiry: Vec<(String, SystemTime)> = certs
        .statuses
        .iter()
        .map(|(s, t)| (s.secret_name.clone(), *t))
        .collect();
    ctx.metrics
        .set_certificate_expiry(&names.namespace, &names.cluster, &expiry);
}

/// Publishes an Event about `lc`; a failure is logged, never fails the reconcile.
pub async fn publish(ctx: &Context, lc: &LogCluster, note: &Note) {
    let event = Event {
        type_: note.type_,
        reason: note.reason.clone(),
        note: Some(note.note.clone()),
        action: note.action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &lc.object_ref(&())).await {
        warn!(error = %e, reason = %note.reason, "publishing an Event failed");
    }
}
