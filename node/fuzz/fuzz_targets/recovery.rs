//! Recovery of a last segment made of `k` valid frames followed by arbitrary bytes, with an
//! arbitrary index: opening must never panic and must recover exactly the `k` valid frames.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logcluster_node::log::{Entry, EntryKind, FsyncPolicy, Log, LogConfig, frame, segment_paths};

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Data,
        timestamp_ms: index,
        payload: Bytes::from(vec![index as u8; (index as usize * 5) % 23]),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let valid = u64::from(k % 6);
    let split = rest.len() / 2;
    let (garbage, index) = rest.split_at(split);
    let dir = tempfile::tempdir().unwrap();
    let (store, index_path) = segment_paths(dir.path(), 0);
    let mut bytes = Vec::new();
    for i in 0..valid {
        frame::encode_into(&entry(i), &mut bytes);
    }
    bytes.extend_from_slice(garbage);
    std::fs::write(&store, &bytes).unwrap();
    std::fs::write(&index_path, index).unwrap();
    let config = LogConfig {
        max_store_bytes: 1 << 20,
        max_index_bytes: 1200,
        initial_offset: 0,
        fsync: FsyncPolicy::Never,
        max_record_bytes: 1024,
    };
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.next_offset(), valid);
    for i in 0..valid {
        assert_eq!(log.read(i).unwrap(), entry(i));
    }
});
