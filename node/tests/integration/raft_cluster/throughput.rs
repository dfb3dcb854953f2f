//! Write throughput of an in-process 3-node cluster (real mTLS on loopback, fsync always).
//! Not a pass/fail benchmark (no timed assertion): run it by hand, in release, to see where the
//! write path stands:
//!
//! ```text
//! cargo test --release -p logcluster-node --test integration raft_cluster::throughput -- --ignored --nocapture
//! ```
//! `logctl bench` is the benchmark of record (through the client API).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::support::cluster::{Cluster, Options, produce};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a manual benchmark: run in release with --ignored --nocapture"]
async fn throughput_of_batched_100_byte_records_on_three_nodes() {
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader().await;
    let producers = 64;
    let batch = 100;
    let run_for = Duration::from_secs(5);
    let value = "v".repeat(100);
    let started = Instant::now();
    let cluster = &cluster;
    let work = (0..producers).map(|_| {
        let value = value.clone();
        async move {
            let mut offsets = Vec::new();
            while started.elapsed() < run_for {
                offsets.extend(produce(cluster, leader, vec![value.clone(); batch]).await);
            }
            offsets
        }
    });
    let acked: Vec<u64> = join_all(work).await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    let distinct: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        acked.len(),
        "an offset was acknowledged twice"
    );
    let rate = acked.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{} records of 100 B in {elapsed:?}: {rate:.0} records/s, {:.1} MB/s ({producers} producers x {batch}-record batches)",
        acked.len(),
        rate * 100.0 / 1e6
    );
}
