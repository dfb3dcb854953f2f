//! Raft log `Entry` ↔ `raft.v1.Entry`. Record values are `Bytes` on both sides: encoding and
//! decoding a data entry never copies its value.

use bytes::Bytes;
use openraft::EntryPayload;

use super::{ConvertError, FromPb, ToPb, proto, required};
use crate::raft::types::{Membership, RaftEntry, Record, log_id};

impl ToPb for RaftEntry {
    type Pb = proto::Entry;

    fn to_pb(&self) -> proto::Entry {
        let entry = self;
        let (kind, timestamp_ms, payload, membership) = match &entry.payload {
            EntryPayload::Normal(record) => (
                proto::EntryKind::Data,
                record.timestamp_ms,
                record.value.clone(),
                None,
            ),
            EntryPayload::Blank => (proto::EntryKind::Blank, 0, Bytes::new(), None),
            EntryPayload::Membership(m) => (
                proto::EntryKind::Membership,
                0,
                Bytes::new(),
                Some(m.to_pb()),
            ),
        };
        proto::Entry {
            index: entry.log_id.index,
            term: entry.log_id.leader_id.term,
            kind: kind as i32,
            timestamp_ms,
            payload,
            membership,
        }
    }
}

impl FromPb for RaftEntry {
    type Pb = proto::Entry;

    fn from_pb(entry: proto::Entry) -> Result<Self, ConvertError> {
        let kind = proto::EntryKind::try_from(entry.kind).map_err(|_| {
            ConvertError(format!(
                "unknown entry kind {} at index {}",
                entry.kind, entry.index
            ))
        })?;
        let payload = match kind {
            proto::EntryKind::Data => EntryPayload::Normal(Record {
                value: entry.payload,
                timestamp_ms: entry.timestamp_ms,
            }),
            proto::EntryKind::Blank => EntryPayload::Blank,
            proto::EntryKind::Membership => EntryPayload::Membership(Membership::from_pb(
                required(entry.membership, "Entry.membership")?,
            )?),
        };
        Ok(RaftEntry {
            log_id: log_id(entry.term, entry.index),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::strategies::entry;
    use super::*;

    proptest! {
        #[test]
        fn entries_round_trip(e in entry()) {
            let back = RaftEntry::from_pb(e.to_pb()).expect("valid");
            prop_assert_eq!(back, e);
        }
    }

    #[test]
    fn an_unknown_entry_kind_is_refused() {
        let entry = proto::Entry {
            kind: 9,
            ..Default::default()
        };
        assert!(RaftEntry::from_pb(entry).is_err());
    }

    #[test]
    fn a_data_value_is_not_copied() {
        let value = Bytes::from(vec![7u8; 1024]);
        let entry = RaftEntry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Normal(Record {
                value: value.clone(),
                timestamp_ms: 1,
            }),
        };
        let pb = entry.to_pb();
        assert_eq!(pb.payload.as_ptr(), value.as_ptr());
        let back = RaftEntry::from_pb(pb).expect("valid");
        let EntryPayload::Normal(record) = back.payload else {
            panic!("not data")
        };
        assert_eq!(record.value.as_ptr(), value.as_ptr());
    }
}
