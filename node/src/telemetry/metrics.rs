//! The node's Prometheus metrics: one [`Metrics`] value owns the registry and hands out typed
//! recording methods, so callers never build label sets by hand and the series names live in
//! one place.
//!
//! Every series is prefixed `logcluster_`. Counters get the OpenMetrics `_total` suffix and
//! units (`_seconds`, `_bytes`) are appended by the encoder, e.g. `record_rpc` feeds
//! `logcluster_rpc_requests_total{method,code}` and `logcluster_rpc_duration_seconds{method,code}`.
//!
//! Values that another component already knows exactly (the commit log's offsets and sizes) are
//! not mirrored into gauges: they are *sampled at scrape time* from a provider the node
//! registers with [`Metrics::register_log_stats`], so the numbers on `/metrics` can never be
//! stale or drift from the log.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Prefix of every series this node exports.
pub const PREFIX: &str = "logcluster";

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The commit log's numbers at one instant, as the log reports them (`Log::stats()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogGauges {
    /// Offset of the oldest record still stored.
    pub first_offset: u64,
    /// Offset the next appended record will get.
    pub next_offset: u64,
    /// Number of segments on disk.
    pub segments: u64,
    /// Bytes of all segment files (store and index).
    pub segment_bytes: u64,
}

/// The Raft state worth alerting on, as openraft's metrics report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftGauges {
    /// Current term.
    pub term: u64,
    /// Highest log index known to be committed.
    pub commit_index: u64,
    /// Highest log index applied to the state machine.
    pub applied_index: u64,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Members of the current configuration (voters and learners).
    pub membership_size: u64,
}

/// Why a gossip datagram was dropped before chitchat saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GossipDropReason {
    /// The authentication tag did not verify (wrong cluster key or tampered).
    Forged,
    /// A valid datagram seen before (or too old to tell).
    Replayed,
    /// Too short, or not a datagram of ours at all.
    Malformed,
}

impl GossipDropReason {
    /// Every reason, so that each series exists (at 0) from the start.
    pub const ALL: [Self; 3] = [Self::Forged, Self::Replayed, Self::Malformed];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forged => "forged",
            Self::Replayed => "replayed",
            Self::Malformed => "malformed",
        }
    }
}

/// Which certificate a not-after timestamp belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertificateRole {
    /// The node's own certificate (server and peer-client).
    Node,
    /// The CA that signs node and client certificates.
    Ca,
}

impl CertificateRole {
    /// The `certificate` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Ca => "ca",
        }
    }
}

/// A function that reads the commit log's current numbers; called on every scrape, so it must
/// be cheap and must not block on I/O.
pub type LogStatsProvider = Arc<dyn Fn() -> LogGauges + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Which election request a node answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteKind {
    /// A pre-vote: "would you elect me?", which changes nothing on either side.
    PreVote,
    /// A real vote request (the candidate has raised its term).
    Vote,
}

impl VoteKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::PreVote => "pre_vote",
            Self::Vote => "vote",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VoteLabels {
    kind: &'static str,
    granted: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The node's metrics. Cheap to clone: every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    node_labels: NodeLabels,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: HistogramFamily<RpcLabels>,
    appended_records: Counter,
    appended_bytes: Counter,
    fsync_duration: Histogram,
    raft_term: Gauge<u64, AtomicU64>,
    raft_commit_index: Gauge<u64, AtomicU64>,
    raft_applied_index: Gauge<u64, AtomicU64>,
    raft_is_leader: Gauge,
    raft_membership_size: Gauge<u64, AtomicU64>,
    raft_joint_configs_finished: Counter,
    raft_vote_requests: Family<VoteLabels, Counter>,
    gossip_dropped: Family<ReasonLabels, Counter>,
    certificate_not_after: Family<CertificateLabels, Gauge>,
    consumed_records: Family<NodeLabels, Counter>,
    log_stats: Arc<LogStatsCollector>,
}

/// RPC latencies: 100 µs to ~26 s. Long-lived streams land in the top buckets, which is why
/// streaming methods are best read from `_count` rather than the quantiles.
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// fsync latencies: 25 µs (page cache on a fast NVMe) to ~3.3 s (a device in trouble).
fn fsync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 18))
}

impl Metrics {
    /// A registry with every LogCluster family registered. `node_id` labels the consume counter,
    /// which tests (and dashboards) sum across nodes to see where reads were served.
    pub fn new(node_id: u64) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);

        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "gRPC calls handled, by method and status code",
            rpc_requests.clone(),
        );
        let rpc_duration: HistogramFamily<RpcLabels> =
            Family::new_with_constructor(rpc_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "rpc_duration",
            "gRPC call latency from request to the end of the response (streams: their whole life)",
            Unit::Seconds,
            rpc_duration.clone(),
        );

        let appended_records = Counter::default();
        registry.register(
            "log_appended_records",
            "Records appended to the commit log",
            appended_records.clone(),
        );
        let appended_bytes = Counter::default();
        registry.register_with_unit(
            "log_appended",
            "Record payload bytes appended to the commit log",
            Unit::Bytes,
            appended_bytes.clone(),
        );
        let fsync_duration = fsync_histogram();
        registry.register_with_unit(
            "log_fsync_duration",
            "Latency of one fdatasync of the commit log (one sync covers a whole group commit)",
            Unit::Seconds,
            fsync_duration.clone(),
        );

        let raft_term = Gauge::<u64, AtomicU64>::default();
        registry.register("raft_term", "Current Raft term", raft_term.clone());
        let raft_commit_index = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "raft_commit_index",
            "Highest Raft log index known to be committed",
            raft_commit_index.clone(),
        );
        let raft_applied_index = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "raft_applied_index",
            "Highest Raft log index applied to the state machine",
            raft_applied_index.clone(),
        );
        let raft_is_leader = Gauge::default();
        registry.register(
            "raft_is_leader",
            "1 when this node is the Raft leader, else 0",
            raft_is_leader.clone(),
        );
        let raft_membership_size = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "raft_membership_size",
            "Members (voters and learners) of the current Raft configuration",
            raft_membership_size.clone(),
        );

        let raft_joint_configs_finished = Counter::default();
        registry.register(
            "raft_joint_configs_finished",
            "Joint configurations this node, as leader, proposed to finish after the leader that \
             began the change moved on (non-zero: leadership moved mid-change; repaired)",
            raft_joint_configs_finished.clone(),
        );

        let raft_vote_requests = Family::<VoteLabels, Counter>::default();
        registry.register(
            "raft_vote_requests",
            "Election requests this node answered, by kind (pre_vote, vote) and outcome; refused \
             pre-votes are a node that would have disrupted the leader (partitioned, restarted \
             on old data) and was kept from it",
            raft_vote_requests.clone(),
        );

        let gossip_dropped = Family::<ReasonLabels, Counter>::default();
        for reason in GossipDropReason::ALL {
            // Create every series at 0, so `rate()` and alerts work before the first drop.
            let _ = gossip_dropped.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        registry.register(
            "gossip_datagrams_dropped",
            "Gossip datagrams dropped before reaching chitchat, by reason",
            gossip_dropped.clone(),
        );

        // NB: no series is created up front: a 0 would read as "expired in 1970" to an alert.
        let certificate_not_after = Family::<CertificateLabels, Gauge>::default();
        registry.register_with_unit(
            "tls_certificate_not_after",
            "Expiry (not-after) of the TLS certificate in use, as a Unix timestamp",
            Unit::Seconds,
            certificate_not_after.clone(),
        );

        let node_labels = NodeLabels {
            node: node_id.to_string(),
        };
        let consumed_records = Family::<NodeLabels, Counter>::default();
        let _ = consumed_records.get_or_create(&node_labels);
        registry.register(
            "consumed_records",
            "Records served to consumers (Consume and ConsumeStream) by this node",
            consumed_records.clone(),
        );

        let log_stats = Arc::new(LogStatsCollector::default());
        registry.register_collector(Box::new(Arc::clone(&log_stats)));

        Self {
            inner: Arc::new(Inner {
                registry,
                node_labels,
                rpc_requests,
                rpc_duration,
                appended_records,
                appended_bytes,
                fsync_duration,
                raft_term,
                raft_commit_index,
                raft_applied_index,
                raft_is_leader,
                raft_membership_size,
                raft_joint_configs_finished,
                raft_vote_requests,
                gossip_dropped,
                certificate_not_after,
                consumed_records,
                log_stats,
            }),
        }
    }

    /// Counts one abandoned joint configuration this node proposed to finish (`raft::joint`).
    pub fn record_joint_config_finished(&self) {
        self.inner.raft_joint_configs_finished.inc();
    }

    /// Counts one election request this node answered.
    pub fn record_vote_request(&self, kind: VoteKind, granted: bool) {
        self.inner
            .raft_vote_requests
            .get_or_create(&VoteLabels {
                kind: kind.as_str(),
                granted: if granted { "true" } else { "false" },
            })
            .inc();
    }

    /// Counts one finished RPC and its latency. `method` is the gRPC path without the leading
    /// `/` (`log.v1.Log/Produce`); `code` a canonical status name (`OK`, `NOT_FOUND`, …).
    pub fn record_rpc(&self, method: &str, code: &'static str, duration: Duration) {
        let labels = RpcLabels {
            method: method.to_owned(),
            code,
        };
        self.inner.rpc_requests.get_or_create(&labels).inc();
        self.inner
            .rpc_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// Counts records appended to the commit log and their payload bytes.
    pub fn record_append(&self, records: u64, bytes: u64) {
        self.inner.appended_records.inc_by(records);
        self.inner.appended_bytes.inc_by(bytes);
    }

    /// Records the latency of one fsync of the commit log.
    pub fn observe_fsync(&self, duration: Duration) {
        self.inner.fsync_duration.observe(duration.as_secs_f64());
    }

    /// Registers the function that reads the commit log's numbers at scrape time; replaces the
    /// previous one (e.g. after the log was reopened). Until one is registered the log gauges
    /// are absent from `/metrics` rather than a misleading 0.
    pub fn register_log_stats(&self, provider: LogStatsProvider) {
        *self.inner.log_stats.provider.write() = Some(provider);
    }

    /// Publishes the current Raft state.
    pub fn set_raft(&self, raft: RaftGauges) {
        let inner = &self.inner;
        inner.raft_term.set(raft.term);
        inner.raft_commit_index.set(raft.commit_index);
        inner.raft_applied_index.set(raft.applied_index);
        inner.raft_is_leader.set(i64::from(raft.is_leader));
        inner.raft_membership_size.set(raft.membership_size);
    }

    /// Counts one gossip datagram dropped for `reason`.
    pub fn record_gossip_dropped(&self, reason: GossipDropReason) {
        self.inner
            .gossip_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Publishes the not-after time (seconds since the Unix epoch) of the certificate in use;
    /// call it again after every reload.
    pub fn set_certificate_not_after(&self, role: CertificateRole, unix_seconds: i64) {
        self.inner
            .certificate_not_after
            .get_or_create(&CertificateLabels {
                certificate: role.as_str(),
            })
            .set(unix_seconds);
    }

    /// Counts records served to consumers by this node.
    pub fn record_consumed(&self, records: u64) {
        self.inner
            .consumed_records
            .get_or_create(&self.inner.node_labels)
            .inc_by(records);
    }

    /// The registry in the OpenMetrics text format (serve it with [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // NB: encoding into a String cannot fail: fmt::Error only comes from the writer, and our
        // collector only fails when the writer does.
        if let Err(fmt::Error) =
            prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
        {
            tracing::error!("encoding the metrics registry failed");
        }
        text
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Samples the commit log's gauges on every scrape from the registered provider.
#[derive(Default)]
struct LogStatsCollector {
    provider: RwLock<Option<LogStatsProvider>>,
}

impl fmt::Debug for LogStatsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStatsCollector")
            .field("registered", &self.provider.read().is_some())
            .finish()
    }
}

impl Collector for LogStatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // Clone the Arc out so the provider runs without our lock held.
        let Some(provider) = self.provider.read().clone() else {
            return Ok(());
        };
        let stats = provider();
        let bytes = Unit::Bytes;
        let gauges: [(&str, &str, Option<&Unit>, u64); 4] = [
            (
                "log_first_offset",
                "Offset of the oldest record still stored",
                None,
                stats.first_offset,
            ),
            (
                "log_next_offset",
                "Offset the next appended record will get",
                None,
                stats.next_offset,
            ),
            ("log_segments", "Segments on disk", None, stats.segments),
            (
                "log_segment",
                "Bytes of all segment files (store and index)",
                Some(&bytes),
                stats.segment_bytes,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            let metric_encoder =
                encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
            gauge.encode(metric_encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `series` (name with labels, exactly as encoded).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    #[test]
    fn rpcs_are_counted_by_method_and_code() {
        let metrics = Metrics::new(1);
        metrics.record_rpc("log.v1.Log/Produce", "OK", Duration::from_millis(2));
        metrics.record_rpc("log.v1.Log/Produce", "OK", Duration::from_millis(3));
        metrics.record_rpc(
            "log.v1.Log/Consume",
            "OUT_OF_RANGE",
            Duration::from_millis(1),
        );
        let text = metrics.encode();
        let produce = r#"{method="log.v1.Log/Produce",code="OK"}"#;
        let consume = r#"{method="log.v1.Log/Consume",code="OUT_OF_RANGE"}"#;
        assert_eq!(
            sample(&text, &format!("logcluster_rpc_requests_total{produce}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("logcluster_rpc_requests_total{consume}")),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("logcluster_rpc_duration_seconds_count{produce}")
            ),
            Some(2.0)
        );
        let sum = sample(
            &text,
            &format!("logcluster_rpc_duration_seconds_sum{produce}"),
        );
        assert!(sum.is_some_and(|s| (s - 0.005).abs() < 1e-9), "{sum:?}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn log_gauges_are_sampled_from_the_provider_at_scrape_time() {
        let metrics = Metrics::new(1);
        assert!(!metrics.encode().contains("logcluster_log_next_offset"));

        let next = Arc::new(AtomicU64::new(10));
        let source = Arc::clone(&next);
        metrics.register_log_stats(Arc::new(move || LogGauges {
            first_offset: 3,
            next_offset: source.load(std::sync::atomic::Ordering::Relaxed),
            segments: 2,
            segment_bytes: 4096,
        }));
        let text = metrics.encode();
        assert_eq!(sample(&text, "logcluster_log_first_offset"), Some(3.0));
        assert_eq!(sample(&text, "logcluster_log_next_offset"), Some(10.0));
        assert_eq!(sample(&text, "logcluster_log_segments"), Some(2.0));
        assert_eq!(sample(&text, "logcluster_log_segment_bytes"), Some(4096.0));

        next.store(25, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            sample(&metrics.encode(), "logcluster_log_next_offset"),
            Some(25.0)
        );
    }

    #[test]
    fn typed_recorders_feed_their_series() {
        let metrics = Metrics::new(7);
        let clone = metrics.clone();
        clone.record_append(3, 300);
        clone.record_append(1, 50);
        clone.observe_fsync(Duration::from_micros(300));
        clone.set_raft(RaftGauges {
            term: 4,
            commit_index: 99,
            applied_index: 98,
            is_leader: true,
            membership_size: 3,
        });
        clone.record_gossip_dropped(GossipDropReason::Replayed);
        clone.record_gossip_dropped(GossipDropReason::Replayed);
        clone.set_certificate_not_after(CertificateRole::Node, 1_900_000_000);
        clone.record_consumed(5);

        let text = metrics.encode();
        let expect = [
            ("logcluster_log_appended_records_total", 4.0),
            ("logcluster_log_appended_bytes_total", 350.0),
            ("logcluster_log_fsync_duration_seconds_count", 1.0),
            ("logcluster_raft_term", 4.0),
            ("logcluster_raft_commit_index", 99.0),
            ("logcluster_raft_applied_index", 98.0),
            ("logcluster_raft_is_leader", 1.0),
            ("logcluster_raft_membership_size", 3.0),
            (
                r#"logcluster_gossip_datagrams_dropped_total{reason="replayed"}"#,
                2.0,
            ),
            (
                r#"logcluster_gossip_datagrams_dropped_total{reason="forged"}"#,
                0.0,
            ),
            (
                r#"logcluster_gossip_datagrams_dropped_total{reason="malformed"}"#,
                0.0,
            ),
            (
                r#"logcluster_tls_certificate_not_after_seconds{certificate="node"}"#,
                1_900_000_000.0,
            ),
            (r#"logcluster_consumed_records_total{node="7"}"#, 5.0),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        // Cumulative buckets: every bucket at or above 300 µs counts the sync, none below.
        assert!(text.contains("# TYPE logcluster_log_fsync_duration_seconds histogram"));
        let buckets: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|line| {
                let rest =
                    line.strip_prefix("logcluster_log_fsync_duration_seconds_bucket{le=\"")?;
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.parse().ok()?))
            })
            .collect();
        assert_eq!(buckets.len(), 19, "{text}");
        for (le, count) in buckets {
            let expected = if le >= 0.0003 { 1.0 } else { 0.0 };
            assert_eq!(count, expected, "bucket le={le}");
        }
    }
}
