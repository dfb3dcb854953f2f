//! `logctl bench`: load a cluster with concurrent producers and report throughput and latency.
//!
//! Produces go to the leader over a few shared HTTP/2 connections, in one of three modes:
//! `unary` (one record per call), `stream` (`ProduceStream` with many records in flight per
//! stream) or `batch` (`ProduceBatch` with many records per call). A progress bar shows the
//! rate while it runs; the summary gives records/s, MB/s and latency percentiles.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use logcluster_api::ProduceStream;
use logcluster_api::log_v1::log_client::LogClient as RawClient;
use logcluster_api::log_v1::{ProduceBatchRequest, ProduceRequest, Record};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::client::{ConnectArgs, explain};

/// How records are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// One `Produce` call per record.
    Unary,
    /// `ProduceStream`, with --in-flight records outstanding per stream.
    Stream,
    /// `ProduceBatch` calls of --batch-size records.
    Batch,
}

/// `logctl bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How records are produced.
    #[arg(long, value_enum, default_value_t = BenchMode::Batch)]
    pub mode: BenchMode,
    /// Concurrent producers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// HTTP/2 connections to the leader, shared by the producers.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per call in batch mode.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Records outstanding per stream in stream mode.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// How long to run (ignored when --count is given).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many records instead of after --duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Offer load at this many records/s in total instead of as fast as possible (unary and
    /// batch mode), e.g. to measure latency at half the peak rate. Calls start on schedule;
    /// latency is measured from each call's start.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Latencies (µs) and counts one producer measured.
#[derive(Default)]
struct WorkerReport {
    latencies_us: Vec<u32>,
    records: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Shared between producers: how many records to produce in total, and progress.
struct Budget {
    remaining: Option<AtomicU64>,
    deadline: Instant,
    stop: AtomicBool,
    produced: AtomicU64,
    /// `--rate`: records/s offered, and the records scheduled so far.
    pacing: Option<Pacing>,
}

/// An open-loop schedule: the k-th record is due at `started + k / rate`.
struct Pacing {
    rate: f64,
    started: Instant,
    scheduled: AtomicU64,
}

impl Budget {
    /// Waits until `n` more records are due under `--rate` (at once without it).
    async fn pace(&self, n: u64) {
        if let Some(pacing) = &self.pacing {
            let before = pacing.scheduled.fetch_add(n, Ordering::Relaxed);
            let due = pacing.started + Duration::from_secs_f64(before as f64 / pacing.rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// Takes up to `n` records from the budget; 0 means stop.
    fn take(&self, n: u64) -> u64 {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return 0;
        }
        match &self.remaining {
            None => n,
            Some(remaining) => {
                let mut current = remaining.load(Ordering::Relaxed);
                loop {
                    let take = current.min(n);
                    if take == 0 {
                        return 0;
                    }
                    match remaining.compare_exchange(
                        current,
                        current - take,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return take,
                        Err(actual) => current = actual,
                    }
                }
            }
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchSummary {
    pub mode: String,
    pub concurrency: usize,
    pub record_size: usize,
    pub records: u64,
    pub errors: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    pub megabytes_per_second: f64,
    /// Latency of one call (a record in unary and stream mode, a batch in batch mode), in ms.
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
}

fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted_us.len() as f64 - 1.0)).round() as usize;
    f64::from(sorted_us[rank.min(sorted_us.len() - 1)]) / 1000.0
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// Runs the benchmark and prints its summary.
pub async fn bench(args: BenchArgs) -> Result<()> {
    let summary = run(&args).await?;
    let mut out = crate::output::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        writeln!(
            out,
            "mode={} concurrency={} record_size={}B records={} errors={} time={:.2}s\n\
             throughput: {:.0} records/s, {:.2} MB/s\n\
             latency per call: p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms",
            summary.mode,
            summary.concurrency,
            summary.record_size,
            summary.records,
            summary.errors,
            summary.seconds,
            summary.records_per_second,
            summary.megabytes_per_second,
            summary.latency_ms_p50,
            summary.latency_ms_p99,
            summary.latency_ms_p999,
            summary.latency_ms_max,
        )?;
    }
    if summary.errors > 0 {
        bail!("{} calls failed", summary.errors);
    }
    Ok(())
}

/// Runs the benchmark and returns its figures.
pub async fn run(args: &BenchArgs) -> Result<BenchSummary> {
    if args.concurrency == 0 || args.connections == 0 || args.batch_size == 0 || args.in_flight == 0
    {
        bail!("--concurrency, --connections, --batch-size and --in-flight must be at least 1");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of records per second");
        }
        if args.mode == BenchMode::Stream {
            bail!("--rate applies to unary and batch mode; stream mode runs at full speed");
        }
    }
    let client = args.connect.connect().await?;
    let servers = client
        .servers()
        .await
        .map_err(explain)
        .context("listing the servers")?;
    let leader_addr = servers
        .iter()
        .find(|s| s.is_leader)
        .map(|s| s.rpc_addr.clone())
        .context("the cluster has no leader right now")?;
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        // Separate connections: `LogClient::channel` would share one.
        channels.push(connect_new(&args.connect, &leader_addr).await?);
    }
    let value = Bytes::from(vec![b'x'; args.record_size]);
    let budget = Arc::new(Budget {
        remaining: args.count.map(AtomicU64::new),
        deadline: Instant::now()
            + if args.count.is_some() {
                Duration::from_secs(24 * 3600)
            } else {
                args.duration
            },
        stop: AtomicBool::new(false),
        produced: AtomicU64::new(0),
        pacing: args.rate.map(|rate| Pacing {
            rate,
            started: Instant::now(),
            scheduled: AtomicU64::new(0),
        }),
    });

    let progress = match args.count {
        Some(count) => ProgressBar::new(count),
        None => ProgressBar::new(args.duration.as_secs().max(1)),
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for worker in 0..args.concurrency {
        let channel = channels[worker % channels.len()].clone();
        let budget = Arc::clone(&budget);
        let value = value.clone();
        let args = args.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let report = match args.mode {
                BenchMode::Unary => unary_worker(channel, &budget, value).await,
                BenchMode::Batch => batch_worker(channel, &budget, value, args.batch_size).await,
                BenchMode::Stream => stream_worker(channel, &budget, value, args.in_flight).await,
            };
            let _ = tx.send(report);
        });
    }
    drop(tx);

    let mut reports = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            report = rx.recv() => match report {
                Some(report) => reports.push(report),
                None => break,
            },
            _ = ticker.tick() => {
                let produced = budget.produced.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (produced - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, produced);
                progress.set_position(match args.count {
                    Some(_) => produced,
                    None => started.elapsed().as_secs(),
                });
                progress.set_message(format!("{produced} records, {rate:.0} records/s"));
            },
            _ = tokio::signal::ctrl_c() => budget.stop.store(true, Ordering::Relaxed),
        }
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();

    let mut latencies: Vec<u32> = reports
        .iter_mut()
        .flat_map(|r| r.latencies_us.drain(..))
        .collect();
    latencies.sort_unstable();
    let records: u64 = reports.iter().map(|r| r.records).sum();
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    if let Some(error) = reports.iter().find_map(|r| r.first_error.clone()) {
        eprintln!("first error: {error}");
    }
    Ok(BenchSummary {
        mode: format!("{:?}", args.mode).to_lowercase(),
        concurrency: args.concurrency,
        record_size: args.record_size,
        records,
        errors,
        seconds,
        records_per_second: records as f64 / seconds,
        megabytes_per_second: (records as f64 * args.record_size as f64) / seconds / 1e6,
        latency_ms_p50: percentile(&latencies, 50.0),
        latency_ms_p99: percentile(&latencies, 99.0),
        latency_ms_p999: percentile(&latencies, 99.9),
        latency_ms_max: latencies
            .last()
            .map(|us| f64::from(*us) / 1000.0)
            .unwrap_or(0.0),
    })
}

async fn connect_new(connect: &ConnectArgs, addr: &str) -> Result<Channel> {
    let client = logcluster_api::LogClient::connect(connect.config(vec![addr.to_owned()])?)
        .await
        .map_err(explain)?;
    client.channel(addr).await.map_err(explain)
}

fn raw(channel: Channel) -> RawClient<Channel> {
    RawClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn record(value: &Bytes) -> Record {
    Record {
        value: value.clone(),
        ..Record::default()
    }
}

fn note_error(report: &mut WorkerReport, error: impl std::fmt::Display) {
    report.errors += 1;
    if report.first_error.is_none() {
        report.first_error = Some(error.to_string());
    }
}

async fn unary_worker(channel: Channel, budget: &Budget, value: Bytes) -> WorkerReport {
    let mut client = raw(channel);
    let mut report = WorkerReport::default();
    while budget.take(1) == 1 {
        budget.pace(1).await;
        let started = Instant::now();
        match client
            .produce(ProduceRequest {
                record: Some(record(&value)),
            })
            .await
        {
            Ok(_) => {
                report.latencies_us.push(micros(started.elapsed()));
                report.records += 1;
                budget.produced.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => note_error(&mut report, status),
        }
    }
    report
}

async fn batch_worker(
    channel: Channel,
    budget: &Budget,
    value: Bytes,
    batch_size: usize,
) -> WorkerReport {
    let mut client = raw(channel);
    let mut report = WorkerReport::default();
    loop {
        let n = budget.take(batch_size as u64);
        if n == 0 {
            break;
        }
        let records = (0..n).map(|_| record(&value)).collect();
        budget.pace(n).await;
        let started = Instant::now();
        match client.produce_batch(ProduceBatchRequest { records }).await {
            Ok(response) => {
                report.latencies_us.push(micros(started.elapsed()));
                let appended = response.into_inner().offsets.len() as u64;
                report.records += appended;
                budget.produced.fetch_add(appended, Ordering::Relaxed);
            }
            Err(status) => note_error(&mut report, status),
        }
    }
    report
}

async fn stream_worker(
    channel: Channel,
    budget: &Budget,
    value: Bytes,
    in_flight: usize,
) -> WorkerReport {
    let mut report = WorkerReport::default();
    // At most `in_flight` records are outstanding; each response is matched to its request's
    // send time (responses come back in order). `ProduceStream` sends without waiting for the
    // response headers, which some servers send only with their first reply.
    let mut stream = ProduceStream::open(channel, in_flight);
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let mut open = true;
    loop {
        while open && sent.len() < in_flight {
            if budget.take(1) == 0 {
                open = false;
                stream.finish();
                break;
            }
            sent.push_back(Instant::now());
            if stream.send(value.clone()).await.is_err() {
                // The call ended; its responses say how.
                sent.pop_back();
                open = false;
                break;
            }
        }
        if sent.is_empty() {
            break;
        }
        match stream.next().await {
            Some(Ok(_)) => {
                if let Some(at) = sent.pop_front() {
                    report.latencies_us.push(micros(at.elapsed()));
                }
                report.records += 1;
                budget.produced.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(error)) => {
                note_error(&mut report, error);
                break;
            }
            None => break,
        }
    }
    report
}
