//! Model-based property test of the commit log against a `Vec<Entry>`.
//!
//! Random operation sequences (append, sync, read, read_range, truncate, purge, reset, clean
//! reopen, crash) run against a real [`Log`] with tiny segment limits (so rolls happen all the
//! time) and against an in-memory model. A crash drops the log without closing it, cuts the last
//! segment's store at a random point at or after the last synced length, and may garble bytes
//! after that point (store and index). After every reopen the log must be an exact prefix of the
//! model, no shorter than what was synced.

use std::path::Path;

use bytes::Bytes;
use logcluster_node::log::{
    Entry, EntryKind, Error, FsyncPolicy, Log, LogConfig, LogId, frame, parse_segment_file_name,
    segment_paths,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: usize,
        len: usize,
        sync: bool,
    },
    Sync,
    Read(u64),
    ReadRange {
        seed: u64,
        max_entries: usize,
        max_bytes: usize,
    },
    TruncateAfter(u64),
    PurgeBefore(u64),
    Reset(u64),
    Reopen,
    Crash {
        cut: u64,
        garble: Option<(u64, u8)>,
        garble_index: Option<(u64, u8)>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 0usize..40, any::<bool>())
            .prop_map(|(count, len, sync)| Op::Append { count, len, sync }),
        2 => Just(Op::Sync),
        3 => any::<u64>().prop_map(Op::Read),
        2 => (any::<u64>(), 0usize..8, 0usize..300)
            .prop_map(|(seed, max_entries, max_bytes)| Op::ReadRange { seed, max_entries, max_bytes }),
        2 => any::<u64>().prop_map(Op::TruncateAfter),
        1 => any::<u64>().prop_map(Op::PurgeBefore),
        1 => (0u64..4).prop_map(Op::Reset),
        1 => Just(Op::Reopen),
        2 => (any::<u64>(), proptest::option::of((any::<u64>(), 1u8..=255)),
              proptest::option::of((any::<u64>(), 1u8..=255)))
            .prop_map(|(cut, garble, garble_index)| Op::Crash { cut, garble, garble_index }),
    ]
}

struct Model {
    first: u64,
    entries: Vec<Entry>,
    /// Offsets below this are known durable.
    synced: u64,
    term: u64,
    stamp: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn get(&self, offset: u64) -> Option<&Entry> {
        offset
            .checked_sub(self.first)
            .and_then(|i| self.entries.get(i as usize))
    }

    fn truncate(&mut self, next: u64) {
        self.entries.truncate((next - self.first) as usize);
    }
}

fn check_matches(log: &Log, model: &Model) {
    assert_eq!(log.first_offset(), model.first, "first offset");
    assert_eq!(log.next_offset(), model.next(), "next offset");
    let last = model.entries.last().map(|e| LogId {
        term: e.term,
        index: e.index,
    });
    // After a reset or a truncation to the first offset, the log is empty: no last entry.
    assert_eq!(log.last_entry(), last, "last entry");
    assert!(
        log.durable_offset() >= model.synced,
        "durable offset went back"
    );
    assert!(log.durable_offset() <= model.next());
}

fn check_all_entries(log: &Log, model: &Model) {
    for e in &model.entries {
        assert_eq!(&log.read(e.index).unwrap(), e);
    }
    if !model.entries.is_empty() {
        let all = log.read_range(model.first, usize::MAX, usize::MAX).unwrap();
        assert_eq!(all, model.entries);
    }
}

/// Base offset of the last segment (largest store file).
fn last_base(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            parse_segment_file_name(&name)
                .filter(|(_, ext)| *ext == "store")
                .map(|(b, _)| b)
        })
        .max()
        .unwrap()
}

fn xor_byte(path: &Path, at: u64, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    if let Some(b) = bytes.get_mut(at as usize) {
        *b ^= mask;
    }
    std::fs::write(path, bytes).unwrap();
}

fn run(config: LogConfig, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    let mut model = Model {
        first: 0,
        entries: Vec::new(),
        synced: 0,
        term: 1,
        stamp: 0,
    };
    for op in ops {
        match op {
            Op::Append { count, len, sync } => {
                let start = model.next();
                let batch: Vec<Entry> = (start..start + count as u64)
                    .map(|index| {
                        model.stamp += 1;
                        Entry {
                            index,
                            term: model.term,
                            kind: [EntryKind::Data, EntryKind::Blank, EntryKind::Membership]
                                [(model.stamp % 3) as usize],
                            timestamp_ms: model.stamp,
                            payload: Bytes::from(vec![(model.stamp % 251) as u8; len]),
                        }
                    })
                    .collect();
                let range = if sync {
                    let r = log.append_unsynced(&batch).unwrap();
                    assert_eq!(log.sync().unwrap(), start + count as u64);
                    model.synced = start + count as u64;
                    r
                } else {
                    log.append_unsynced(&batch).unwrap()
                };
                assert_eq!(range, start..start + count as u64);
                model.entries.extend(batch);
            }
            Op::Sync => {
                assert_eq!(log.sync().unwrap(), model.next());
                model.synced = model.next();
            }
            Op::Read(seed) => {
                let offset =
                    model.first.saturating_sub(2) + seed % (model.entries.len() as u64 + 5);
                match (log.read(offset), model.get(offset)) {
                    (Ok(e), Some(m)) => assert_eq!(&e, m),
                    (
                        Err(Error::OutOfRange {
                            offset: o,
                            first,
                            next,
                        }),
                        None,
                    ) => {
                        assert_eq!((o, first, next), (offset, model.first, model.next()));
                    }
                    (got, want) => panic!("read {offset}: got {got:?}, model {want:?}"),
                }
            }
            Op::ReadRange {
                seed,
                max_entries,
                max_bytes,
            } => {
                let offset =
                    model.first.saturating_sub(1) + seed % (model.entries.len() as u64 + 3);
                match log.read_range(offset, max_entries, max_bytes) {
                    Ok(got) => {
                        let i = (offset - model.first) as usize;
                        assert!(!got.is_empty());
                        assert!(got.len() <= max_entries.max(1));
                        assert_eq!(got[..], model.entries[i..i + got.len()]);
                        let bytes: u64 =
                            got.iter().map(|e| frame::frame_len(e.payload.len())).sum();
                        assert!(got.len() == 1 || bytes <= max_bytes as u64);
                        // Maximal: the next entry would break a limit, or the log ended.
                        if let Some(more) = model.entries.get(i + got.len()) {
                            assert!(
                                got.len() == max_entries.max(1)
                                    || bytes + frame::frame_len(more.payload.len())
                                        > max_bytes as u64,
                                "read_range stopped early"
                            );
                        }
                    }
                    Err(Error::OutOfRange { .. }) => assert!(model.get(offset).is_none()),
                    Err(e) => panic!("read_range {offset}: {e}"),
                }
            }
            Op::TruncateAfter(seed) => {
                let len = model.entries.len() as u64;
                // Keep-up-to in [first - 1, next - 1], expressed as the first offset dropped.
                let new_next = model.first + seed % (len + 1);
                log.truncate_from(new_next).unwrap();
                if new_next < model.next() {
                    model.truncate(new_next);
                    model.synced = new_next;
                    model.term += 1;
                }
            }
            Op::PurgeBefore(seed) => {
                let offset = model.first + seed % (model.entries.len() as u64 + 2);
                let first = log.purge_before(offset).unwrap();
                assert!(first >= model.first && first <= model.next());
                assert!(
                    first == model.first || first <= offset,
                    "purged past {offset}"
                );
                model.entries.drain(..(first - model.first) as usize);
                model.first = first;
            }
            Op::Reset(delta) => {
                let next = model.next() + delta;
                log.reset(next).unwrap();
                model.first = next;
                model.entries.clear();
                model.synced = next;
            }
            Op::Reopen => {
                log.close().unwrap();
                log = Log::open(dir.path(), config.clone()).unwrap();
                model.synced = model.next();
                check_all_entries(&log, &model);
            }
            Op::Crash {
                cut,
                garble,
                garble_index,
            } => {
                let durable = log.durable_offset();
                drop(log);
                let base = last_base(dir.path());
                assert!(durable >= base, "sealed segments are always durable");
                let (store, index) = segment_paths(dir.path(), base);
                // Byte position of the first entry not known durable.
                let synced_pos: u64 = model
                    .entries
                    .iter()
                    .filter(|e| e.index >= base && e.index < durable)
                    .map(|e| frame::frame_len(e.payload.len()))
                    .sum();
                let store_len = std::fs::metadata(&store).unwrap().len();
                assert!(store_len >= synced_pos);
                let cut_at = synced_pos + cut % (store_len - synced_pos + 1);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&store)
                    .unwrap()
                    .set_len(cut_at)
                    .unwrap();
                if let Some((at, mask)) = garble
                    && cut_at > synced_pos
                {
                    xor_byte(&store, synced_pos + at % (cut_at - synced_pos), mask);
                }
                if let Some((at, mask)) = garble_index {
                    // The last index is never trusted after a crash: garble anything after the
                    // durable entries.
                    let index_len = std::fs::metadata(&index).unwrap().len();
                    let from = (durable - base) * 12;
                    if index_len > from {
                        xor_byte(&index, from + at % (index_len - from), mask);
                    }
                }
                log = Log::open(dir.path(), config.clone()).unwrap();
                let next = log.next_offset();
                assert!(
                    next >= durable,
                    "lost synced data: next {next} < durable {durable}"
                );
                assert!(next <= model.next(), "recovered more than was written");
                model.truncate(next);
                model.synced = next;
                check_all_entries(&log, &model);
            }
        }
        check_matches(&log, &model);
    }
    log.close().unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    check_matches(&log, &model);
    check_all_entries(&log, &model);
}

fn config() -> impl Strategy<Value = LogConfig> {
    (40u64..300, 1u64..7).prop_map(|(max_store_bytes, index_entries)| LogConfig {
        max_store_bytes,
        // Sometimes not a multiple of 12, to check that the capacity rounds down.
        max_index_bytes: index_entries * 12 + (max_store_bytes % 12),
        initial_offset: 0,
        fsync: FsyncPolicy::Never,
        max_record_bytes: 64,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_vec_across_rolls_reopens_and_crashes(
        config in config(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        run(config, ops);
    }
}

/// The same model with real fsyncs, fewer cases (fsync is slow): the bookkeeping must not
/// depend on the policy.
#[test]
fn the_model_holds_with_real_fsyncs() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 8,
        ..ProptestConfig::default()
    });
    let strategy = (config(), proptest::collection::vec(op(), 1..25));
    runner
        .run(&strategy, |(mut config, ops)| {
            config.fsync = FsyncPolicy::Always;
            run(config, ops);
            Ok(())
        })
        .unwrap();
}
