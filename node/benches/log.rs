//! Commit-log benchmark: `cargo bench -p logcluster-node --bench log`.
//!
//! A plain binary (no criterion) because it compares against `dd` measured in the same run and
//! works on a 1 GiB data set. Prints one table:
//! - `dd bs=1M count=1024 conv=fdatasync` on the same filesystem (the disk's sequential write
//!   bandwidth with one final sync);
//! - appends with `FsyncPolicy::Always` for 100 B and 1 KiB entries in batches of 1, 16, 256
//!   (every batch is one `fdatasync`), in entries/s and payload MB/s;
//! - sequential `read_range` over a 1 GiB log from the page cache;
//! - random `read` latency (p50/p99) on that log;
//! - in addition, group commit: 4 threads appending 1 KiB batches of 256, each followed by
//!   `sync`, so that one `fdatasync` covers several batches (how Raft's storage uses the log).
//!
//! Data goes to a fresh directory under `$LOG_BENCH_DIR` (default `/var/tmp`), removed at the
//! end. `LOG_BENCH_SECONDS` (default 3) bounds each append measurement.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logcluster_node::log::{Entry, EntryKind, Log, LogConfig};

const MB: f64 = 1e6;
const GIB: u64 = 1 << 30;

fn main() {
    let root =
        std::env::var_os("LOG_BENCH_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let seconds = std::env::var("LOG_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::Builder::new()
        .prefix("logcluster-log-bench-")
        .tempdir_in(&root)
        .expect("create bench directory");
    println!("commit log benchmark in {}", dir.path().display());
    println!("{}", machine_summary());

    let dd = dd_bandwidth(dir.path());
    println!("\n{:<44} {:>12} {:>10}", "measurement", "entries/s", "MB/s");
    println!("{}", "-".repeat(68));
    println!(
        "{:<44} {:>12} {:>10.0}",
        "dd bs=1M count=1024 conv=fdatasync",
        "-",
        dd / MB
    );

    let mut batched_1k = 0.0;
    for size in [100usize, 1024] {
        for batch in [1usize, 16, 256] {
            let (eps, bps) = append_throughput(
                &dir.path().join(format!("append-{size}-{batch}")),
                size,
                batch,
                seconds,
            );
            println!(
                "{:<44} {:>12.0} {:>10.1}",
                format!("append {size} B, batch {batch}, fsync always"),
                eps,
                bps / MB
            );
            if size == 1024 && batch == 256 {
                batched_1k = bps;
            }
        }
    }
    let (eps, bps) = group_commit_throughput(&dir.path().join("group"), 1024, 256, 4, seconds);
    println!(
        "{:<44} {:>12.0} {:>10.1}",
        "append 1024 B, batch 256, 4 writers (group)",
        eps,
        bps / MB
    );
    let group_1k = bps;
    let mut reads = Vec::new();
    for size in [100usize, 1024] {
        let path = dir.path().join(format!("read-{size}"));
        let log = build_log(&path, size, GIB);
        let (eps, bps) = sequential_read(&log);
        println!(
            "{:<44} {:>12.0} {:>10.0}",
            format!("sequential read_range, 1 GiB of {size} B entries"),
            eps,
            bps / MB
        );
        let (p50, p99) = random_reads(&log, 200_000);
        reads.push((size, p50, p99));
        drop(log);
        std::fs::remove_dir_all(&path).ok();
    }
    println!();
    for (size, p50, p99) in reads {
        println!(
            "random read, {size} B entries (page cache):    p50 {:>6.2} µs   p99 {:>6.2} µs",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    println!(
        "\nbatched 1 KiB appends (batch 256) / dd = {:.0} / {:.0} MB/s = {:.0} %",
        batched_1k / MB,
        dd / MB,
        100.0 * batched_1k / dd
    );
    println!(
        "group commit, 4 writers x batch 256 of 1 KiB / dd = {:.0} / {:.0} MB/s = {:.0} %",
        group_1k / MB,
        dd / MB,
        100.0 * group_1k / dd
    );
}

fn machine_summary() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Runs `dd` into the bench directory and returns bytes/s from its own byte count and time.
fn dd_bandwidth(dir: &Path) -> f64 {
    let target = dir.join("dd.tmp");
    let output = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", "count=1024", "conv=fdatasync"])
        .output()
        .expect("run dd");
    std::fs::remove_file(&target).ok();
    let text = String::from_utf8_lossy(&output.stderr);
    // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.01 s, 534 MB/s"
    let line = text
        .lines()
        .find(|l| l.contains("copied"))
        .expect("dd summary line");
    let bytes: f64 = line
        .split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .expect("dd bytes");
    let secs: f64 = line
        .split(", ")
        .find(|p| p.ends_with(" s"))
        .and_then(|p| p.trim_end_matches(" s").parse().ok())
        .expect("dd seconds");
    bytes / secs
}

fn entry(index: u64, payload: &Bytes) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Data,
        timestamp_ms: 1_700_000_000_000 + index,
        payload: payload.clone(),
    }
}

/// Appends batches with fsync=always for about `seconds`; returns (entries/s, payload bytes/s).
fn append_throughput(path: &Path, size: usize, batch: usize, seconds: f64) -> (f64, f64) {
    let log = Log::open(path, LogConfig::default()).expect("open");
    let payload = Bytes::from(vec![0xA5u8; size]);
    let mut batch_entries: Vec<Entry> = Vec::with_capacity(batch);
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut next = 0u64;
    while start.elapsed() < budget {
        batch_entries.clear();
        batch_entries.extend((next..next + batch as u64).map(|i| entry(i, &payload)));
        log.append(&batch_entries).expect("append");
        next += batch as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    log.close().expect("close");
    std::fs::remove_dir_all(path).ok();
    (next as f64 / elapsed, next as f64 * size as f64 / elapsed)
}

/// Group commit as Raft's storage does it: `writers` threads take turns appending a batch with
/// `append_unsynced` (appends are ordered), then each calls `sync`, so that one `fdatasync`
/// covers whatever the others appended meanwhile. Returns (entries/s, payload bytes/s).
fn group_commit_throughput(
    path: &Path,
    size: usize,
    batch: usize,
    writers: usize,
    seconds: f64,
) -> (f64, f64) {
    let log = Log::open(path, LogConfig::default()).expect("open");
    let payload = Bytes::from(vec![0xC3u8; size]);
    let order = std::sync::Mutex::new(());
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..writers {
            scope.spawn(|| {
                while start.elapsed() < budget {
                    let end = {
                        let _turn = order.lock().expect("order lock");
                        let next = log.next_offset();
                        let entries: Vec<Entry> = (next..next + batch as u64)
                            .map(|i| entry(i, &payload))
                            .collect();
                        log.append_unsynced(&entries).expect("append").end
                    };
                    let durable = log.sync().expect("sync");
                    assert!(durable >= end);
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let appended = log.next_offset();
    log.close().expect("close");
    std::fs::remove_dir_all(path).ok();
    (
        appended as f64 / elapsed,
        appended as f64 * size as f64 / elapsed,
    )
}

/// Writes `bytes` of payload in entries of `size` (unsynced, then one sync).
fn build_log(path: &Path, size: usize, bytes: u64) -> Log {
    let log = Log::open(path, LogConfig::default()).expect("open");
    let payload = Bytes::from(vec![0x5Au8; size]);
    let count = bytes / size as u64;
    let mut next = 0;
    while next < count {
        let n = 4096.min(count - next);
        let batch: Vec<Entry> = (next..next + n).map(|i| entry(i, &payload)).collect();
        log.append_unsynced(&batch).expect("append");
        next += n;
    }
    log.sync().expect("sync");
    log
}

/// Reads the whole log twice with `read_range` (1 MiB per call) and times the second, warm,
/// pass; returns (entries/s, payload bytes/s).
fn sequential_read(log: &Log) -> (f64, f64) {
    let mut result = (0.0, 0.0);
    for _ in 0..2 {
        let start = Instant::now();
        let (mut offset, mut entries, mut bytes) = (log.first_offset(), 0u64, 0u64);
        let end = log.next_offset();
        while offset < end {
            let got = log
                .read_range(offset, usize::MAX, 1 << 20)
                .expect("read_range");
            entries += got.len() as u64;
            bytes += got.iter().map(|e| e.payload.len() as u64).sum::<u64>();
            offset += got.len() as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        result = (entries as f64 / secs, bytes as f64 / secs);
    }
    result
}

/// Latency of single `read`s at random offsets; returns (p50, p99).
fn random_reads(log: &Log, n: usize) -> (Duration, Duration) {
    let (first, next) = (log.first_offset(), log.next_offset());
    // xorshift: deterministic, no dependency.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = first + x % (next - first);
        let start = Instant::now();
        let e = log.read(offset).expect("read");
        latencies.push(start.elapsed());
        assert_eq!(e.index, offset);
    }
    latencies.sort();
    (latencies[n / 2], latencies[n * 99 / 100])
}
