//! What a node announces about itself in gossip (typed keys), and the parsed [`ClusterMember`]
//! everyone else sees.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chitchat::{ChitchatId, NodeState};

/// The chitchat keys every LogCluster node sets on itself.
pub mod keys {
    /// The Raft node id (decimal), the same as the chitchat node id.
    pub const NODE_ID: &str = "node_id";
    /// host:port of the node's gRPC server (client, peer and admin APIs).
    pub const RPC_ADDR: &str = "rpc_addr";
    /// Start time in milliseconds since the Unix epoch; the chitchat generation id, so a
    /// restarted node (same id, later generation) supersedes its previous incarnation.
    pub const GENERATION: &str = "generation";
    /// `true` once the node serves (a voter or caught-up learner with its log open).
    pub const READY: &str = "ready";
    /// `true` once the node has announced a graceful leave: the Raft leader removes it.
    pub const LEAVING: &str = "leaving";
}

/// A live node as gossip describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterMember {
    /// Raft node id.
    pub node_id: u64,
    /// Incarnation: start time of the node's process (ms since the Unix epoch).
    pub generation: u64,
    /// host:port of its gRPC server.
    pub rpc_addr: String,
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// Whether it reports itself ready.
    pub ready: bool,
    /// Whether it announced that it is leaving the cluster.
    pub leaving: bool,
}

/// Why a node's gossip state is not a member (a confused or foreign node: ignored, logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberStateError {
    #[error("key `{key}` is missing")]
    Missing { key: &'static str },
    #[error("`{}` is not a node id", keys::NODE_ID)]
    NotANodeId,
    #[error(
        "key `{}` = {node_id} disagrees with chitchat node id {chitchat_id:?}",
        keys::NODE_ID
    )]
    NodeIdMismatch { node_id: u64, chitchat_id: String },
    #[error("`{}` is not a number", keys::GENERATION)]
    NotAGeneration,
    #[error(
        "key `{}` = {generation} disagrees with chitchat generation {chitchat_generation}",
        keys::GENERATION
    )]
    GenerationMismatch {
        generation: u64,
        chitchat_generation: u64,
    },
    #[error("`{}` = {rpc_addr:?} is not host:port", keys::RPC_ADDR)]
    BadRpcAddr { rpc_addr: String },
}

impl ClusterMember {
    /// Parses a node's gossip state. The node id and generation keys must agree with the
    /// chitchat id (a mismatch means a confused or foreign node, which is ignored).
    pub fn from_node_state(
        chitchat_id: &ChitchatId,
        state: &NodeState,
    ) -> Result<Self, MemberStateError> {
        let required = |key: &'static str| state.get(key).ok_or(MemberStateError::Missing { key });
        let node_id: u64 = required(keys::NODE_ID)?
            .parse()
            .map_err(|_| MemberStateError::NotANodeId)?;
        if chitchat_id.node_id.parse() != Ok(node_id) {
            return Err(MemberStateError::NodeIdMismatch {
                node_id,
                chitchat_id: chitchat_id.node_id.to_string(),
            });
        }
        let generation: u64 = required(keys::GENERATION)?
            .parse()
            .map_err(|_| MemberStateError::NotAGeneration)?;
        if generation != chitchat_id.generation_id {
            return Err(MemberStateError::GenerationMismatch {
                generation,
                chitchat_generation: chitchat_id.generation_id,
            });
        }
        let rpc_addr = required(keys::RPC_ADDR)?.to_string();
        if !is_host_port(&rpc_addr) {
            return Err(MemberStateError::BadRpcAddr { rpc_addr });
        }
        Ok(ClusterMember {
            node_id,
            generation,
            rpc_addr,
            gossip_addr: chitchat_id.gossip_advertise_addr,
            ready: flag(state.get(keys::READY)),
            leaving: flag(state.get(keys::LEAVING)),
        })
    }
}

/// The key-values a node starts gossiping with.
pub(crate) fn initial_key_values(
    node_id: u64,
    generation: u64,
    rpc_addr: &str,
) -> Vec<(String, String)> {
    vec![
        (keys::NODE_ID.to_string(), node_id.to_string()),
        (keys::RPC_ADDR.to_string(), rpc_addr.to_string()),
        (keys::GENERATION.to_string(), generation.to_string()),
        (keys::READY.to_string(), flag_value(false).to_string()),
        (keys::LEAVING.to_string(), flag_value(false).to_string()),
    ]
}

/// How a boolean key is written.
pub(crate) fn flag_value(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn flag(value: Option<&str>) -> bool {
    value == Some("true")
}

/// `host:port` with a non-empty host and a numeric port.
pub(crate) fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.is_empty() && port.parse::<u16>().is_ok()
    })
}

/// One member per node id from chitchat's live nodes, sorted by node id.
///
/// A restarted node is briefly live twice in chitchat (the old generation until the failure
/// detector gives up on it, and the new one); only its newest generation is kept, so a restart
/// reads as an update of one member, never as a departure. States that do not parse are left
/// out (logged at debug).
pub fn members_from_live_nodes<'a>(
    live: impl IntoIterator<Item = (&'a ChitchatId, &'a NodeState)>,
) -> Vec<ClusterMember> {
    let mut newest: BTreeMap<u64, ClusterMember> = BTreeMap::new();
    for (chitchat_id, state) in live {
        let member = match ClusterMember::from_node_state(chitchat_id, state) {
            Ok(member) => member,
            Err(reason) => {
                tracing::debug!(node = ?chitchat_id, %reason, "ignoring a gossip node");
                continue;
            }
        };
        match newest.get(&member.node_id) {
            // Same generation twice (two processes started in the same millisecond with one
            // id: a misconfiguration) keeps the greater gossip address, so every node picks the
            // same one.
            Some(current)
                if (current.generation, current.gossip_addr)
                    >= (member.generation, member.gossip_addr) => {}
            _ => {
                newest.insert(member.node_id, member);
            }
        }
    }
    newest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 1, last], 8401))
    }

    fn node(id: u64, generation: u64, last: u8) -> (ChitchatId, NodeState) {
        let chitchat_id = ChitchatId::new(id.to_string(), generation, addr(last));
        let mut state = NodeState::for_test();
        for (key, value) in initial_key_values(id, generation, &format!("node-{id}:8400")) {
            state.set(key, value);
        }
        (chitchat_id, state)
    }

    #[test]
    fn a_node_state_parses_into_a_member() {
        let (id, mut state) = node(3, 1_700, 3);
        state.set(keys::READY, "true");
        let member = ClusterMember::from_node_state(&id, &state).expect("parses");
        assert_eq!(
            member,
            ClusterMember {
                node_id: 3,
                generation: 1_700,
                rpc_addr: "node-3:8400".into(),
                gossip_addr: addr(3),
                ready: true,
                leaving: false,
            }
        );
    }

    /// A named way to break a node state, and what the error must say.
    type Breakage = (&'static str, fn(&mut NodeState), &'static str);

    #[test]
    fn incomplete_or_inconsistent_states_are_rejected() {
        let (id, state) = node(3, 1_700, 3);
        let cases: [Breakage; 5] = [
            ("no rpc addr", |s| s.delete(keys::RPC_ADDR), "missing"),
            (
                "bad rpc addr",
                |s| s.set(keys::RPC_ADDR, "node-3"),
                "host:port",
            ),
            ("other id", |s| s.set(keys::NODE_ID, "4"), "disagrees"),
            ("bad id", |s| s.set(keys::NODE_ID, "x"), "not a node id"),
            (
                "other generation",
                |s| s.set(keys::GENERATION, "9"),
                "disagrees",
            ),
        ];
        for (name, mutate, expected) in cases {
            let mut broken = state.clone();
            mutate(&mut broken);
            let err = ClusterMember::from_node_state(&id, &broken).expect_err(name);
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
    }

    #[test]
    fn only_the_newest_generation_of_a_node_is_a_member() {
        let nodes = [
            node(1, 100, 1),
            node(2, 100, 2),
            node(1, 200, 9),
            node(3, 50, 3),
        ];
        let members = members_from_live_nodes(nodes.iter().map(|(id, state)| (id, state)));
        let summary: Vec<_> = members
            .iter()
            .map(|m| (m.node_id, m.generation, m.gossip_addr))
            .collect();
        assert_eq!(
            summary,
            vec![(1, 200, addr(9)), (2, 100, addr(2)), (3, 50, addr(3))]
        );
    }

    #[test]
    fn rpc_addresses_must_be_host_and_port() {
        for good in [
            "node-1:8400",
            "10.1.2.3:8400",
            "[::1]:8400",
            "a.b.svc.cluster.local:1",
        ] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in [
            "",
            "node-1",
            ":8400",
            "node-1:",
            "node-1:http",
            "node-1:70000",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
