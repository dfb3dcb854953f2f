//! The LogCluster Kubernetes operator.
//!
//! It reconciles `LogCluster` resources ([`crd`]) into a StatefulSet of `lognode` pods and
//! everything around it ([`resources`]), keeps their certificates current ([`certificates`]),
//! scales the Raft cluster one member at a time through the nodes' admin API ([`scaling`],
//! [`node_client`]) and reports what it sees ([`status`], [`metrics`], Events through
//! [`events`]), and rolls a changed pod template out itself, the leader's pod last
//! ([`rollout`]). [`controller`] wires it together — observe, a pure plan, execute;
//! [`leader_election`] keeps two replicas from acting at once; [`rbac`] lists exactly the
//! permissions all of this needs.
//!
//! Layering, with no arrow back: [`node_id`] and [`crd`] (types) ← [`scaling`], [`rollout`],
//! [`status`] (pure decisions) ← [`resources`] (builders) ← [`certificates`], [`node_client`]
//! (clients) ← [`controller`] (the reconcile's I/O).
#![forbid(unsafe_code)]

pub mod certificates;
pub mod config;
pub mod controller;
pub mod crd;
mod error;
pub mod events;
pub mod leader_election;
pub mod metrics;
pub mod node_client;
pub mod node_id;
pub mod rbac;
pub mod resources;
pub mod rollout;
pub mod scaling;
pub mod status;
pub mod units;

pub use error::{Error, Result};
