//! proptest strategies for the round-trip tests of the conversions.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use openraft::EntryPayload;
use proptest::prelude::*;

use crate::raft::types::{
    self, LogId, Membership, Node, RaftEntry, Record, StoredMembership, Vote,
};

pub fn log_id() -> impl Strategy<Value = LogId> {
    (0u64..1000, 0u64..1_000_000).prop_map(|(term, index)| types::log_id(term, index))
}

pub fn vote() -> impl Strategy<Value = Vote> {
    (0u64..1000, 0u64..16, any::<bool>()).prop_map(|(term, node, committed)| {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    })
}

pub fn membership() -> impl Strategy<Value = Membership> {
    (
        proptest::collection::btree_set(0u64..8, 1..4),
        proptest::option::of(proptest::collection::btree_set(0u64..8, 1..4)),
        proptest::collection::btree_set(8u64..12, 0..3),
    )
        .prop_map(|(voters, joint, learners)| {
            let mut configs = vec![voters];
            configs.extend(joint);
            let all: BTreeSet<u64> = configs.iter().flatten().copied().chain(learners).collect();
            let nodes: BTreeMap<u64, Node> = all
                .into_iter()
                .map(|id| (id, Node::new(format!("127.0.0.{}:8400", id + 1))))
                .collect();
            Membership::new(configs, nodes).expect("generated membership is valid")
        })
}

pub fn stored_membership() -> impl Strategy<Value = StoredMembership> {
    (proptest::option::of(log_id()), membership()).prop_map(|(id, m)| StoredMembership::new(id, m))
}

pub fn entry() -> impl Strategy<Value = RaftEntry> {
    let payload = prop_oneof![
        (proptest::collection::vec(any::<u8>(), 0..64), any::<u64>()).prop_map(
            |(value, timestamp_ms)| {
                EntryPayload::Normal(Record {
                    value: Bytes::from(value),
                    timestamp_ms,
                })
            }
        ),
        Just(EntryPayload::Blank),
        membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload).prop_map(|(log_id, payload)| RaftEntry { log_id, payload })
}
