//! The StatefulSet of lognode pods.
//!
//! `podManagementPolicy: Parallel`. The operator already changes `replicas` one node at a time,
//! so `OrderedReady` adds no safety for scaling — but it would deadlock a restart of the whole
//! cluster: it starts pod 1 only once pod 0 is ready, and a node is ready only once a quorum has
//! elected a leader, which needs the other pods. Parallel starts every pod at once so a quorum
//! can form. `updateStrategy: OnDelete`: a changed template is rolled out by the operator, one
//! pod at a time and the leader's pod last ([`crate::rollout`]), not by the StatefulSet
//! controller, which would take the pods from the highest ordinal down whatever their role.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::EmptyDirVolumeSource;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::BuildSettings;
use super::config::{CONFIG_DIR, DATA_DIR, GOSSIP_DIR, NODE_CONFIG_KEY, TLS_DIR};
use super::names::{ClusterNames, DATA_VOLUME, GOSSIP_PORT, GRPC_PORT, HTTP_PORT};
use crate::Result;
use crate::crd::LogCluster;

/// Name of the lognode container.
pub const CONTAINER: &str = "lognode";
/// Pod template annotation with the hash of the node configuration (a change rolls the pods).
pub const CONFIG_HASH_ANNOTATION: &str = "logcluster.io/config-hash";
/// The non-root user and group lognode runs as (the distroless "nonroot" ids).
pub const RUN_AS: i64 = 65532;

/// What the StatefulSet builder needs beyond the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatefulSetInputs {
    /// `spec.replicas` of the StatefulSet: decided by the scaling logic, one step at a time.
    pub replicas: i32,
    /// Size in the volume claim template. A StatefulSet's claim templates are immutable, so once
    /// it exists this is the size it was created with; growing `spec.storage.size` resizes the
    /// claims themselves instead.
    pub claim_size: String,
    /// Hash of the node configuration file.
    pub config_hash: String,
}

/// The StatefulSet.
pub fn statefulset(
    lc: &LogCluster,
    names: &ClusterNames,
    settings: &BuildSettings,
    inputs: &StatefulSetInputs,
) -> Result<StatefulSet> {
    let spec = &lc.spec;
    let selector = names.selector_labels();

    // User labels first: the operator's own labels must win, the selector depends on them.
    let mut pod_labels = spec.pod.labels.clone();
    pod_labels.extend(names.labels("node"));
    let mut pod_annotations = spec.pod.annotations.clone();
    pod_annotations.insert(
        CONFIG_HASH_ANNOTATION.to_owned(),
        inputs.config_hash.clone(),
    );

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(names.labels("node")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(inputs.claim_size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    Ok(StatefulSet {
        metadata: super::child_meta(lc, names, names.statefulset(), "node")?,
        spec: Some(StatefulSetSpec {
            replicas: Some(inputs.replicas),
            service_name: Some(names.headless_service()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(spec.storage.pvc_retention.when_deleted.as_str().to_owned()),
                    when_scaled: Some(spec.storage.pvc_retention.when_scaled.as_str().to_owned()),
                },
            ),
            volume_claim_templates: Some(vec![claim]),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(lc, names, settings, &selector)),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn pod_spec(
    lc: &LogCluster,
    names: &ClusterNames,
    settings: &BuildSettings,
    selector: &BTreeMap<String, String>,
) -> PodSpec {
    let spec = &lc.spec;
    let affinity = spec.pod.affinity.clone().unwrap_or_else(|| Affinity {
        // Preferred, not required: a cluster must still start on a single Kubernetes node.
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector.clone()),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    });

    let secret_volume = |name: &str, secret: String| Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            // Owner and group read only; the group is the pod's fsGroup.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let volumes = vec![
        secret_volume("tls", names.node_tls_secret()),
        secret_volume("gossip", names.gossip_secret()),
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];

    PodSpec {
        affinity: Some(affinity),
        node_selector: (!spec.pod.node_selector.is_empty()).then(|| spec.pod.node_selector.clone()),
        tolerations: (!spec.pod.tolerations.is_empty()).then(|| spec.pod.tolerations.clone()),
        priority_class_name: spec.pod.priority_class_name.clone(),
        // lognode needs no Kubernetes API access.
        automount_service_account_token: Some(false),
        // Time for a leader to hand over and for the log to sync before SIGKILL.
        termination_grace_period_seconds: Some(60),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            fs_group_change_policy: Some("OnRootMismatch".to_owned()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container(lc, names, settings)],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

fn container(lc: &LogCluster, names: &ClusterNames, settings: &BuildSettings) -> Container {
    let field_env = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let probe = |path: &str, failure_threshold: i32, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    // Dependent environment variables: Kubernetes expands $(POD_NAME) from the entries above.
    let advertise = format!(
        "$(POD_NAME).{}.$(POD_NAMESPACE).svc.{}:{GRPC_PORT}",
        names.headless_service(),
        names.cluster_domain
    );
    Container {
        name: CONTAINER.to_owned(),
        image: Some(
            lc.spec
                .image
                .clone()
                .unwrap_or_else(|| settings.default_image.clone()),
        ),
        image_pull_policy: lc.spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(vec![
            "--config".to_owned(),
            format!("{CONFIG_DIR}/{NODE_CONFIG_KEY}"),
        ]),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            EnvVar {
                name: "LOGCLUSTER_ADVERTISE_ADDR".to_owned(),
                value: Some(advertise),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".to_owned()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("gossip".to_owned()),
                container_port: GOSSIP_PORT,
                protocol: Some("UDP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".to_owned()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        // Recovery of a large log may take a while: the startup probe holds off the liveness
        // probe for up to 10 minutes.
        startup_probe: Some(probe("/livez", 120, 5)),
        liveness_probe: Some(probe("/livez", 3, 10)),
        readiness_probe: Some(probe("/readyz", 3, 5)),
        resources: lc.spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, DATA_DIR, false),
            mount("tls", TLS_DIR, true),
            mount("gossip", GOSSIP_DIR, true),
            mount("config", CONFIG_DIR, true),
            mount("tmp", "/tmp", false),
        ]),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::fixtures::{cluster, cluster_with};

    fn build(lc: &LogCluster, replicas: i32) -> StatefulSet {
        let names = ClusterNames::new(lc, "cluster.local").unwrap();
        let inputs = StatefulSetInputs {
            replicas,
            claim_size: lc.spec.storage.size.clone(),
            config_hash: "abc".into(),
        };
        statefulset(lc, &names, &BuildSettings::default(), &inputs).unwrap()
    }

    fn container_of(sts: &StatefulSet) -> Container {
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .clone()
    }

    #[test]
    fn statefulset_is_parallel_with_the_decided_replicas_and_headless_service() {
        let sts = build(&cluster(), 2);
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.service_name.as_deref(), Some("demo-nodes"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(template_labels.get(k), Some(v), "selector label {k}");
        }
    }

    #[test]
    fn pods_are_hardened() {
        let sts = build(&cluster(), 3);
        let pod = sts.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let sc = container_of(&sts).security_context.unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    }

    #[test]
    fn probes_use_the_health_port_and_env_carries_no_secrets() {
        let c = container_of(&build(&cluster(), 3));
        for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.port, IntOrString::String("http".into()));
        }
        let http = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.name.as_deref() == Some("http"));
        assert_eq!(http.unwrap().container_port, 8402);
        let env = c.env.unwrap();
        let advertise = env
            .iter()
            .find(|e| e.name == "LOGCLUSTER_ADVERTISE_ADDR")
            .unwrap();
        assert_eq!(
            advertise.value.as_deref(),
            Some("$(POD_NAME).demo-nodes.$(POD_NAMESPACE).svc.cluster.local:8400")
        );
        for e in &env {
            // Key material only ever arrives as files from Secret volumes.
            assert!(
                e.value_from
                    .as_ref()
                    .is_none_or(|v| v.secret_key_ref.is_none()),
                "{}",
                e.name
            );
            assert!(
                !e.value.as_deref().unwrap_or("").contains("PRIVATE"),
                "{}",
                e.name
            );
        }
    }

    #[test]
    fn claims_and_retention_follow_the_storage_spec() {
        let lc = cluster_with(json!({"storage": {
            "size": "20Gi", "storageClassName": "fast",
            "pvcRetention": {"whenDeleted": "Delete", "whenScaled": "Retain"}
        }}));
        let sts = build(&lc, 3);
        let spec = sts.spec.unwrap();
        let policy = spec.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(policy.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        let storage = &claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"];
        assert_eq!(storage.0, "20Gi");
    }

    #[test]
    fn default_affinity_prefers_spreading_and_a_user_affinity_replaces_it() {
        let sts = build(&cluster(), 3);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let preferred = anti
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            preferred[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );

        let lc = cluster_with(json!({"pod": {
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}},
            "labels": {"app.kubernetes.io/name": "hijack", "team": "a"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "priorityClassName": "high"
        }}));
        let sts = build(&lc, 3);
        let spec = sts.spec.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            labels["app.kubernetes.io/name"], "logcluster",
            "operator labels must win"
        );
        assert_eq!(labels["team"], "a");
        let pod = spec.template.spec.unwrap();
        assert!(pod.affinity.unwrap().node_affinity.is_some());
        assert_eq!(pod.tolerations.unwrap().len(), 1);
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
    }

    #[test]
    fn image_defaults_to_the_operator_setting() {
        let c = container_of(&build(&cluster(), 1));
        assert_eq!(c.image, Some(BuildSettings::default().default_image));
        let lc = cluster_with(
            json!({"image": "registry.local/lognode:dev", "imagePullPolicy": "Always"}),
        );
        let c = container_of(&build(&lc, 1));
        assert_eq!(c.image.as_deref(), Some("registry.local/lognode:dev"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    }
}
