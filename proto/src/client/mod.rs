//! The leader-aware LogCluster client (proglog's resolver + picker, done with tonic).
//!
//! * Discovers the cluster with `GetServers` from any reachable address, refreshes the view
//!   periodically and after errors.
//! * Sends produces to the leader; follows the leader hint of a `NOT_LEADER` refusal and retries
//!   with backoff while the write is known not to have been appended (refusals that say so,
//!   connections that could not be made). Anything else that may have appended the record is
//!   reported as [`ClientError::OutcomeUnknown`], never retried behind the caller's back.
//! * Spreads consumes round-robin over followers and falls back to the leader.
//! * Keeps one HTTP/2 connection per server and reuses it for every call.

mod error;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{Mutex, RwLock};
use tonic::transport::{Channel, Endpoint};

pub use error::ClientError;
use error::{StatusInfo, is_connect_failure};
pub use tls::ClientTls;

use crate::log_v1::log_client::LogClient as RawLogClient;
use crate::log_v1::{
    ConsumeRequest, GetServersRequest, ProduceBatchRequest, ProduceRequest, Record, Server,
};

/// How a [`LogClient`] behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Addresses (`host:port`) to discover the cluster from; any one reachable is enough.
    pub seeds: Vec<String>,
    pub tls: ClientTls,
    /// Time to establish a connection to one server.
    pub connect_timeout: Duration,
    /// Time one call to one server may take (streams excepted).
    pub request_timeout: Duration,
    /// How long a call keeps retrying through elections and failovers before giving up.
    pub retry_deadline: Duration,
    /// How often the member list is refreshed in the background (while calls are made).
    pub refresh_interval: Duration,
    /// Read from followers (spreads load; they serve only committed records).
    pub read_from_followers: bool,
}

impl ClientConfig {
    /// Defaults suited to a cluster on a local network.
    pub fn new(seeds: Vec<String>, tls: ClientTls) -> Self {
        ClientConfig {
            seeds,
            tls,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            retry_deadline: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(10),
            read_from_followers: true,
        }
    }
}

/// The cluster as last seen.
#[derive(Debug, Default)]
struct ClusterView {
    servers: Vec<Server>,
    leader: Option<String>,
    refreshed: Option<Instant>,
}

struct Shared {
    config: ClientConfig,
    channels: Mutex<HashMap<String, Channel>>,
    view: RwLock<ClusterView>,
    next_reader: AtomicUsize,
}

/// A client of a LogCluster. Cheap to clone; clones share connections and the cluster view.
#[derive(Clone)]
pub struct LogClient {
    shared: Arc<Shared>,
}

/// Backoff between retries: 50 ms doubling to 1 s, with jitter so clients don't stampede.
fn backoff(attempt: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(5)).min(1_000);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}

fn uri_for(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.replacen("http://", "https://", 1)
    } else {
        format!("https://{addr}")
    }
}

impl LogClient {
    /// Connects to the cluster: discovers its members from the first reachable seed.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        if config.seeds.is_empty() {
            return Err(ClientError::InvalidAddress {
                addr: String::new(),
                reason: "no server address given".into(),
            });
        }
        let client = LogClient {
            shared: Arc::new(Shared {
                config,
                channels: Mutex::new(HashMap::new()),
                view: RwLock::new(ClusterView::default()),
                next_reader: AtomicUsize::new(0),
            }),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// A connected channel to `addr` (reused across calls). Errors mean nothing was sent.
    pub async fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        if let Some(channel) = self.shared.channels.lock().await.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(uri_for(addr))
            .map_err(|e| ClientError::InvalidAddress {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?
            .tls_config(self.shared.config.tls.tonic_config())
            .map_err(|e| ClientError::InvalidAddress {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(self.shared.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20));
        let channel = endpoint.connect().await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                source = inner.source();
            }
            ClientError::NoServerReachable {
                tried: addr.to_owned(),
                last_error: text,
            }
        })?;
        self.shared
            .channels
            .lock()
            .await
            .insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    async fn forget(&self, addr: &str) {
        self.shared.channels.lock().await.remove(addr);
    }

    fn raw(&self, channel: Channel) -> RawLogClient<Channel> {
        // Batches can be large; the server enforces the real limits.
        RawLogClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Addresses to try for discovery: known servers (leader first), then the seeds.
    async fn discovery_order(&self) -> Vec<String> {
        let view = self.shared.view.read().await;
        let mut order: Vec<String> = view.leader.iter().cloned().collect();
        for server in &view.servers {
            if !order.contains(&server.rpc_addr) {
                order.push(server.rpc_addr.clone());
            }
        }
        for seed in &self.shared.config.seeds {
            if !order.contains(seed) {
                order.push(seed.clone());
            }
        }
        order
    }

    /// Fetches the member list from the first server that answers.
    pub async fn refresh(&self) -> Result<Vec<Server>, ClientError> {
        let mut last_error = String::from("no address to try");
        let order = self.discovery_order().await;
        for addr in &order {
            let channel = match self.channel(addr).await {
                Ok(channel) => channel,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let mut request = tonic::Request::new(GetServersRequest {});
            request.set_timeout(self.shared.config.request_timeout);
            match self.raw(channel).get_servers(request).await {
                Ok(response) => {
                    let servers = response.into_inner().servers;
                    let leader = servers
                        .iter()
                        .find(|s| s.is_leader)
                        .map(|s| s.rpc_addr.clone());
                    let mut view = self.shared.view.write().await;
                    view.servers = servers.clone();
                    view.leader = leader;
                    view.refreshed = Some(Instant::now());
                    return Ok(servers);
                }
                Err(status) => {
                    let retryable = StatusInfo::of(&status).is_retryable();
                    last_error = format!("{addr}: {}", status.message());
                    if !retryable {
                        // A security refusal will not change on another server.
                        return Err(status.into());
                    }
                    self.forget(addr).await;
                }
            }
        }
        Err(ClientError::NoServerReachable {
            tried: order.join(", "),
            last_error,
        })
    }

    async fn refresh_if_stale(&self) {
        let stale = {
            let view = self.shared.view.read().await;
            view.refreshed
                .is_none_or(|at| at.elapsed() >= self.shared.config.refresh_interval)
        };
        if stale {
            let _ = self.refresh().await;
        }
    }

    /// The member list as last seen (refreshed when stale).
    pub async fn servers(&self) -> Result<Vec<Server>, ClientError> {
        self.refresh().await
    }

    /// Where writes go: the leader if known, else any server (it forwards to the leader).
    async fn write_target(&self) -> Option<String> {
        let view = self.shared.view.read().await;
        view.leader
            .clone()
            .or_else(|| view.servers.first().map(|s| s.rpc_addr.clone()))
            .or_else(|| self.shared.config.seeds.first().cloned())
    }

    /// Where a read goes: followers round-robin, else the leader.
    async fn read_targets(&self) -> Vec<String> {
        let view = self.shared.view.read().await;
        let mut followers: Vec<String> = view
            .servers
            .iter()
            .filter(|s| !s.is_leader)
            .map(|s| s.rpc_addr.clone())
            .collect();
        let mut targets = Vec::new();
        if self.shared.config.read_from_followers && !followers.is_empty() {
            let start = self.shared.next_reader.fetch_add(1, Ordering::Relaxed) % followers.len();
            followers.rotate_left(start);
            targets.extend(followers);
        }
        if let Some(leader) = &view.leader {
            targets.push(leader.clone());
        }
        for server in &view.servers {
            if !targets.contains(&server.rpc_addr) {
                targets.push(server.rpc_addr.clone());
            }
        }
        if targets.is_empty() {
            targets.extend(self.shared.config.seeds.iter().cloned());
        }
        targets
    }

    /// Runs a write against the leader, retrying only while the write surely was not appended.
    async fn write<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(RawLogClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.shared.config.retry_deadline;
        let mut attempt = 0u32;
        let mut hint: Option<String> = None;
        loop {
            self.refresh_if_stale().await;
            let target = match hint.take() {
                Some(addr) => Some(addr),
                None => self.write_target().await,
            };
            let Some(target) = target else {
                return Err(ClientError::NoServerReachable {
                    tried: String::new(),
                    last_error: "no server known".into(),
                });
            };
            let failure = match self.channel(&target).await {
                Err(e) => e.to_string(), // nothing was sent
                Ok(channel) => match call(self.raw(channel)).await {
                    Ok(value) => return Ok(value),
                    Err(status) => {
                        let info = StatusInfo::of(&status);
                        let safe = info.write_not_applied() || is_connect_failure(&status);
                        if !safe {
                            if status.code() == tonic::Code::Unavailable
                                || status.code() == tonic::Code::Internal
                                || status.code() == tonic::Code::Unknown
                                || status.code() == tonic::Code::Cancelled
                                || status.code() == tonic::Code::DeadlineExceeded
                            {
                                self.forget(&target).await;
                                let _ = self.refresh().await;
                                return Err(ClientError::OutcomeUnknown(format!(
                                    "{target}: {}",
                                    status.message()
                                )));
                            }
                            return Err(status.into());
                        }
                        if !info.is_retryable() && !is_connect_failure(&status) {
                            return Err(status.into());
                        }
                        if is_connect_failure(&status) {
                            self.forget(&target).await;
                        }
                        hint = info.leader_addr();
                        format!("{target}: {}", status.message())
                    }
                },
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(failure));
            }
            tracing::debug!(attempt, error = %failure, "write not applied; retrying");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            if hint.is_none() {
                let _ = self.refresh().await;
            }
        }
    }

    /// Appends one record; returns its offset once committed.
    pub async fn produce(&self, value: impl Into<Bytes>) -> Result<u64, ClientError> {
        let value = value.into();
        let timeout = self.shared.config.request_timeout;
        self.write(|mut raw| {
            let mut request = tonic::Request::new(ProduceRequest {
                record: Some(Record {
                    value: value.clone(),
                    ..Record::default()
                }),
            });
            request.set_timeout(timeout);
            async move { raw.produce(request).await.map(|r| r.into_inner().offset) }
        })
        .await
    }

    /// Appends many records in one round trip; offsets come back in order.
    pub async fn produce_batch(&self, values: Vec<Bytes>) -> Result<Vec<u64>, ClientError> {
        let timeout = self.shared.config.request_timeout;
        let records: Vec<Record> = values
            .into_iter()
            .map(|value| Record {
                value,
                ..Record::default()
            })
            .collect();
        self.write(|mut raw| {
            let mut request = tonic::Request::new(ProduceBatchRequest {
                records: records.clone(),
            });
            request.set_timeout(timeout);
            async move {
                raw.produce_batch(request)
                    .await
                    .map(|r| r.into_inner().offsets)
            }
        })
        .await
    }

    /// Reads the committed record at `offset` (from a follower when possible).
    pub async fn consume(&self, offset: u64) -> Result<Record, ClientError> {
        let deadline = Instant::now() + self.shared.config.retry_deadline;
        let mut attempt = 0u32;
        loop {
            self.refresh_if_stale().await;
            let mut last_error = String::new();
            let mut out_of_range = None;
            for target in self.read_targets().await {
                let channel = match self.channel(&target).await {
                    Ok(channel) => channel,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                };
                let mut request = tonic::Request::new(ConsumeRequest {
                    offset,
                    end_offset: 0,
                });
                request.set_timeout(self.shared.config.request_timeout);
                match self.raw(channel).consume(request).await {
                    Ok(response) => match response.into_inner().record {
                        Some(record) => return Ok(record),
                        None => last_error = format!("{target}: empty response"),
                    },
                    Err(status) => {
                        let error = ClientError::from(status.clone());
                        match error {
                            // A follower may not have applied the offset yet: ask the others
                            // (the leader last) before believing it.
                            ClientError::OutOfRange { .. } => out_of_range = Some(error),
                            ClientError::Unavailable(_) | ClientError::Other(_) => {
                                if is_connect_failure(&status) {
                                    self.forget(&target).await;
                                }
                                last_error = format!("{target}: {}", status.message());
                            }
                            other => return Err(other),
                        }
                    }
                }
            }
            if let Some(error) = out_of_range {
                return Err(error);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(last_error));
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            let _ = self.refresh().await;
        }
    }

    /// Streams committed data records from `from`, following the tail. When the serving node
    /// fails the stream continues on another one from the next offset, so the caller sees every
    /// data record once, in order.
    pub fn consume_stream(
        &self,
        from: u64,
    ) -> impl Stream<Item = Result<Record, ClientError>> + Send + 'static {
        self.spawn_follower(from, None)
    }

    /// Streams committed data records in `[from, end)` and then ends: "everything up to here"
    /// in one call (e.g. `end` = the committed end learned from an out-of-range answer).
    pub fn consume_range(
        &self,
        from: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Record, ClientError>> + Send + 'static {
        self.spawn_follower(from, Some(end))
    }

    fn spawn_follower(
        &self,
        from: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = Result<Record, ClientError>> + Send + 'static {
        let client = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        if end.is_none_or(|end| from < end) {
            tokio::spawn(async move { client.follow(from, end, tx).await });
        }
        tokio_stream_from(rx)
    }

    async fn follow(
        &self,
        from: u64,
        end: Option<u64>,
        tx: tokio::sync::mpsc::Sender<Result<Record, ClientError>>,
    ) {
        let mut next = from;
        let mut attempt = 0u32;
        let mut failing_since: Option<Instant> = None;
        loop {
            let targets = self.read_targets().await;
            let mut last_error = String::from("no server known");
            for target in targets {
                let channel = match self.channel(&target).await {
                    Ok(channel) => channel,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                };
                let mut stream = match self
                    .raw(channel)
                    .consume_stream(ConsumeRequest {
                        offset: next,
                        end_offset: end.unwrap_or(0),
                    })
                    .await
                {
                    Ok(response) => response.into_inner(),
                    Err(status) => {
                        let error = ClientError::from(status.clone());
                        if matches!(error, ClientError::Unavailable(_) | ClientError::Other(_)) {
                            last_error = format!("{target}: {}", status.message());
                            continue;
                        }
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                };
                loop {
                    tokio::select! {
                        () = tx.closed() => return,
                        message = stream.message() => match message {
                            Ok(Some(response)) => {
                                let Some(record) = response.record else { continue };
                                if record.offset < next {
                                    continue; // already delivered by a previous server
                                }
                                next = record.offset + 1;
                                failing_since = None;
                                attempt = 0;
                                if tx.send(Ok(record)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {
                                if end.is_some() {
                                    return; // the server reached `end`: the range is complete
                                }
                                last_error = format!("{target}: the stream ended");
                                break;
                            }
                            Err(status) => {
                                let error = ClientError::from(status.clone());
                                if matches!(error, ClientError::Unavailable(_) | ClientError::Other(_)) {
                                    if is_connect_failure(&status) {
                                        self.forget(&target).await;
                                    }
                                    last_error = format!("{target}: {}", status.message());
                                    break;
                                }
                                let _ = tx.send(Err(error)).await;
                                return;
                            }
                        }
                    }
                }
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.shared.config.retry_deadline {
                let _ = tx.send(Err(ClientError::Unavailable(last_error))).await;
                return;
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            let _ = self.refresh().await;
        }
    }

    /// A connected channel to the current leader (for the admin API).
    pub async fn leader_channel(&self) -> Result<Channel, ClientError> {
        self.refresh().await?;
        let target = self
            .write_target()
            .await
            .ok_or_else(|| ClientError::NoServerReachable {
                tried: String::new(),
                last_error: "no server known".into(),
            })?;
        self.channel(&target).await
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
