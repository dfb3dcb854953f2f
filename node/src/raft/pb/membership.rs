//! `Membership` / `StoredMembership` ↔ `raft.v1.Membership` / `StoredMembership`.

use std::collections::{BTreeMap, BTreeSet};

use super::{ConvertError, FromPb, ToPb, log_id, proto};
use crate::raft::types::{Membership, Node, StoredMembership};

impl ToPb for Membership {
    type Pb = proto::Membership;

    fn to_pb(&self) -> proto::Membership {
        let m = self;
        proto::Membership {
            configs: m
                .get_joint_config()
                .iter()
                .map(|voters| proto::VoterSet {
                    node_ids: voters.iter().copied().collect(),
                })
                .collect(),
            nodes: m
                .nodes()
                .map(|(id, node)| {
                    (
                        *id,
                        proto::Node {
                            addr: node.addr.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

impl FromPb for Membership {
    type Pb = proto::Membership;

    fn from_pb(m: proto::Membership) -> Result<Self, ConvertError> {
        let configs: Vec<BTreeSet<u64>> = m
            .configs
            .into_iter()
            .map(|set| set.node_ids.into_iter().collect())
            .collect();
        let nodes: BTreeMap<u64, Node> = m
            .nodes
            .into_iter()
            .map(|(id, node)| (id, Node::new(node.addr)))
            .collect();
        // An empty membership (no configuration at all) is openraft's initial state.
        if configs.is_empty() && nodes.is_empty() {
            return Ok(Membership::default());
        }
        Membership::new(configs, nodes)
            .map_err(|e| ConvertError(format!("invalid membership: {e}")))
    }
}

impl ToPb for StoredMembership {
    type Pb = proto::StoredMembership;

    fn to_pb(&self) -> proto::StoredMembership {
        proto::StoredMembership {
            log_id: log_id::to_pb(self.log_id().as_ref()),
            membership: Some(self.membership().to_pb()),
        }
    }
}

impl FromPb for StoredMembership {
    type Pb = proto::StoredMembership;

    fn from_pb(m: proto::StoredMembership) -> Result<Self, ConvertError> {
        let membership = match m.membership {
            Some(membership) => Membership::from_pb(membership)?,
            None => Membership::default(),
        };
        Ok(StoredMembership::new(log_id::from_pb(m.log_id), membership))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::strategies::{membership, stored_membership};
    use super::*;

    proptest! {
        #[test]
        fn memberships_round_trip(m in membership()) {
            let back = Membership::from_pb(m.to_pb()).expect("valid");
            prop_assert_eq!(back, m);
        }

        #[test]
        fn stored_memberships_round_trip(m in stored_membership()) {
            let back = StoredMembership::from_pb(m.to_pb()).expect("valid");
            prop_assert_eq!(back, m);
        }
    }

    #[test]
    fn a_voter_without_an_address_is_refused() {
        let m = proto::Membership {
            configs: vec![proto::VoterSet {
                node_ids: vec![1, 2],
            }],
            nodes: [(1, proto::Node { addr: "a:1".into() })]
                .into_iter()
                .collect(),
        };
        assert!(Membership::from_pb(m).is_err());
    }
}
