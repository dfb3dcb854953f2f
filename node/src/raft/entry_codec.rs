//! Raft entries ↔ commit-log entries (ARCHITECTURE decision 1: the Raft log *is* the commit log).
//!
//! | openraft payload | frame kind   | frame payload                  | frame timestamp        |
//! |------------------|--------------|--------------------------------|------------------------|
//! | `Normal(Record)` | `Data`       | the record value (not copied)  | the record's timestamp |
//! | `Blank`          | `Blank`      | empty                          | 0                      |
//! | `Membership(m)`  | `Membership` | `m` as JSON                    | 0                      |
//!
//! The frame's index and term are the log id's. Decoding never panics: a membership payload
//! that is not valid JSON is an `io::Error` (openraft treats it as a storage failure).

use std::io;

use openraft::EntryPayload;

use super::types::{Membership, RaftEntry, Record, log_id};
use crate::log::{Entry, EntryKind};

/// The commit-log entry that stores `entry`.
pub fn to_log_entry(entry: &RaftEntry) -> io::Result<Entry> {
    let (kind, timestamp_ms, payload) = match &entry.payload {
        EntryPayload::Normal(record) => {
            (EntryKind::Data, record.timestamp_ms, record.value.clone())
        }
        EntryPayload::Blank => (EntryKind::Blank, 0, bytes::Bytes::new()),
        EntryPayload::Membership(membership) => {
            let json = serde_json::to_vec(membership).map_err(io::Error::other)?;
            (EntryKind::Membership, 0, bytes::Bytes::from(json))
        }
    };
    Ok(Entry {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        kind,
        timestamp_ms,
        payload,
    })
}

/// The Raft entry stored in `entry`.
pub fn from_log_entry(entry: Entry) -> io::Result<RaftEntry> {
    let payload = match entry.kind {
        EntryKind::Data => EntryPayload::Normal(Record {
            value: entry.payload,
            timestamp_ms: entry.timestamp_ms,
        }),
        EntryKind::Blank => EntryPayload::Blank,
        EntryKind::Membership => {
            EntryPayload::Membership(decode_membership(&entry.payload).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "membership entry at index {} is not valid: {e}",
                        entry.index
                    ),
                )
            })?)
        }
    };
    Ok(RaftEntry {
        log_id: log_id(entry.term, entry.index),
        payload,
    })
}

/// Decodes a membership stored by [`to_log_entry`].
pub fn decode_membership(json: &[u8]) -> Result<Membership, serde_json::Error> {
    serde_json::from_slice(json)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use bytes::Bytes;
    use openraft::BasicNode;

    use super::*;

    fn membership() -> Membership {
        let voters = BTreeSet::from([0, 1]);
        let nodes = BTreeMap::from([
            (0, BasicNode::new("127.0.0.1:8400")),
            (1, BasicNode::new("127.0.0.2:8400")),
            (2, BasicNode::new("127.0.0.3:8400")),
        ]);
        Membership::new(vec![voters], nodes).expect("valid membership")
    }

    #[test]
    fn every_payload_kind_round_trips_through_a_log_entry() {
        let entries = [
            RaftEntry {
                log_id: log_id(3, 7),
                payload: EntryPayload::Normal(Record {
                    value: Bytes::from_static(b"hello"),
                    timestamp_ms: 1_700_000_000_123,
                }),
            },
            RaftEntry {
                log_id: log_id(4, 8),
                payload: EntryPayload::Blank,
            },
            RaftEntry {
                log_id: log_id(4, 9),
                payload: EntryPayload::Membership(membership()),
            },
        ];
        for entry in entries {
            let stored = to_log_entry(&entry).expect("encode");
            assert_eq!(
                (stored.index, stored.term),
                (entry.log_id.index, entry.log_id.leader_id.term)
            );
            let back = from_log_entry(stored).expect("decode");
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn data_frames_keep_the_value_and_the_leader_timestamp() {
        let entry = RaftEntry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Normal(Record {
                value: Bytes::from_static(b"v"),
                timestamp_ms: 42,
            }),
        };
        let stored = to_log_entry(&entry).expect("encode");
        assert_eq!(stored.kind, EntryKind::Data);
        assert_eq!(stored.payload, Bytes::from_static(b"v"));
        assert_eq!(stored.timestamp_ms, 42);
    }

    #[test]
    fn a_corrupt_membership_payload_is_an_error_not_a_panic() {
        let stored = Entry {
            index: 5,
            term: 1,
            kind: EntryKind::Membership,
            timestamp_ms: 0,
            payload: Bytes::from_static(b"{not json"),
        };
        let err = from_log_entry(stored).expect_err("corrupt membership");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("index 5"), "{err}");
    }
}
