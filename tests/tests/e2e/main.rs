//! LogCluster's integration tests: one test binary (docs/testing.md, “Conventions”), one module per area.
//!
//! Kubernetes tests share one control plane per run of this binary (`k8s::shared()`), each in
//! its own namespace (`create_namespace`). Run only them with
//! `cargo test -p logcluster-tests --test e2e k8s_`.

mod cluster_gossip;
mod cluster_raft;
mod container_images;
mod helm_chart;
mod k8s_harness;
mod k8s_journey;
mod k8s_node;
mod k8s_operator;
mod k8s_operator_ha;
mod k8s_operator_scaling;
mod k8s_renewal;
mod logctl_dev;
