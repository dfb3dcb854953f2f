//! The leader-aware LogCluster client (proglog's resolver + picker, done with tonic).
//!
//! * Discovers the cluster with `GetServers` from any reachable address, refreshes the view
//!   periodically and after errors.
//! * Sends produces to the leader; follows the leader hint of a `NOT_LEADER` refusal and retries
//!   with backoff while the write is known not to have been appended (refusals that say so,
//!   connections that could not be made). Anything else that may have appended the record is
//!   reported as [`ClientError::OutcomeUnknown`], never retried behind the caller's back.
//! * Spreads consumes round-robin over followers and falls back to the leader. A definite
//!   refusal of a read is an answer, not unavailability ([`LogClient::consume_to_end`] finds the
//!   end of the log from it, whatever code a server uses); only transient failures are retried.
//! * Does not depend on our server's header timing: [`ProduceStream`] sends records before the
//!   response headers arrive.
//! * Keeps one HTTP/2 connection per server and reuses it for every call.
//! * Bounds everything by time: establishing a connection (TCP, TLS handshake and HTTP/2) by
//!   `connect_timeout`, each unary call by `request_timeout` (also enforced on the client side,
//!   so a server that accepted the connection but stopped answering — a paused process — cannot
//!   hold a call). A server that failed that way is *suspect* for a while: discovery asks it
//!   last and writes go elsewhere (a follower forwards to the leader or names it), so a stale
//!   leader does not cost every call a timeout.

mod connect_to;
mod consume_to_end;
mod error;
mod produce_stream;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{Mutex, RwLock};
use tonic::transport::{Channel, Endpoint};

use connect_to::host_of;
pub use connect_to::{ConnectTo, ConnectToError, parse_connect_to};
pub use consume_to_end::LogEnd;
pub use error::ClientError;
use error::{StatusInfo, is_connect_failure, is_transient};
pub use produce_stream::ProduceStream;
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
    /// Where to dial servers whose advertised addresses this client cannot reach as they are
    /// (certificates are still checked against the advertised names).
    pub connect_to: ConnectTo,
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
            connect_to: ConnectTo::direct(),
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
    /// Addresses that recently failed to connect or answer in time, and since when.
    suspects: std::sync::Mutex<HashMap<String, Instant>>,
}

/// A client of a LogCluster. Cheap to clone; clones share connections and the cluster view.
#[derive(Clone)]
pub struct LogClient {
    shared: Arc<Shared>,
}

/// Backoff between retries: 50 ms doubling to 250 ms, with jitter so clients don't stampede.
/// Retries mostly wait for an election (hundreds of ms): a low cap lets the first attempt after
/// it land soon, and a retry costs the cluster one cheap refusal.
fn backoff(attempt: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(3)).min(250);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}

/// `addresses` with the suspect ones moved to the end (each group keeps its order).
fn suspects_last(addresses: Vec<String>, is_suspect: impl Fn(&str) -> bool) -> Vec<String> {
    let (suspect, healthy): (Vec<String>, Vec<String>) =
        addresses.into_iter().partition(|addr| is_suspect(addr));
    healthy.into_iter().chain(suspect).collect()
}

/// What `call` returns, or `DEADLINE_EXCEEDED` when it takes longer than `timeout`. tonic
/// enforces the `grpc-timeout` of a request only once the request has reached the connection;
/// this bounds the whole call, including waiting for a connection to be (re)made.
async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            )))
        })
}

/// An error and its sources as one line. Many errors repeat their source's message in their
/// own (`tcp connect error: Connection refused` caused by `Connection refused`): a message the
/// next one starts with, or one already said, is left out.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = vec![error.to_string()];
    let mut source = error.source();
    while let Some(inner) = source {
        messages.push(inner.to_string());
        source = inner.source();
    }
    let mut line = String::new();
    for (i, message) in messages.iter().enumerate() {
        let repeated_next = messages
            .get(i + 1)
            .is_some_and(|next| next.starts_with(message.as_str()));
        if repeated_next || line.contains(message.as_str()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(message);
    }
    line
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
                suspects: std::sync::Mutex::new(HashMap::new()),
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
    ///
    /// Connecting — TCP, the TLS handshake and HTTP/2 — is bounded by `connect_timeout` as a
    /// whole: a stopped process's kernel still completes the TCP handshake, and then nothing
    /// answers the TLS one.
    pub async fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        if let Some(channel) = self.shared.channels.lock().await.get(addr) {
            return Ok(channel.clone());
        }
        let connect_timeout = self.shared.config.connect_timeout;
        let request_timeout = self.shared.config.request_timeout;
        // Looked up on every new connection: a mapped server may have moved since.
        let (dial, tls) = match self.shared.config.connect_to.dial(addr) {
            Some(dial) => (dial, self.shared.config.tls.tonic_config_for(host_of(addr))),
            None => (addr.to_owned(), self.shared.config.tls.tonic_config()),
        };
        let endpoint = Endpoint::from_shared(uri_for(&dial))
            .map_err(|e| ClientError::InvalidAddress {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?
            // The handshake timeout also bounds the handshakes of reconnections, which happen
            // inside the channel (tonic's `connect_timeout` covers only TCP).
            .tls_config(tls.timeout(connect_timeout))
            .map_err(|e| ClientError::InvalidAddress {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            // Pings notice a server that stopped answering on an open stream (a consumer's tail
            // has no deadline of its own) about as fast as a call would time out.
            .http2_keep_alive_interval(request_timeout.min(Duration::from_secs(10)))
            .keep_alive_timeout(request_timeout);
        let connected = match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("connecting took longer than {connect_timeout:?}")),
        };
        let channel = match connected {
            Ok(channel) => channel,
            Err(last_error) => {
                self.suspect(addr);
                return Err(ClientError::NoServerReachable {
                    tried: addr.to_owned(),
                    last_error,
                });
            }
        };
        self.shared
            .channels
            .lock()
            .await
            .insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Marks `addr` as failing (connect failure or no answer in time) for a while.
    fn suspect(&self, addr: &str) {
        if let Ok(mut suspects) = self.shared.suspects.lock() {
            suspects.insert(addr.to_owned(), Instant::now());
        }
    }

    /// `addr` answered: it is not suspect any more.
    fn trust(&self, addr: &str) {
        if let Ok(mut suspects) = self.shared.suspects.lock() {
            suspects.remove(addr);
        }
    }

    /// Whether `addr` failed recently (within the longer of the two timeouts: after that it is
    /// worth trying first again).
    fn is_suspect(&self, addr: &str) -> bool {
        let config = &self.shared.config;
        let for_how_long = config.request_timeout.max(config.connect_timeout);
        self.shared.suspects.lock().is_ok_and(|suspects| {
            suspects
                .get(addr)
                .is_some_and(|since| since.elapsed() < for_how_long)
        })
    }

    /// `addr` failed in a way that says nothing about the cluster but much about `addr`: forget
    /// its connection, suspect it, and stop believing it leads (until a server says so again).
    async fn failed(&self, addr: &str) {
        self.forget(addr).await;
        self.suspect(addr);
        let mut view = self.shared.view.write().await;
        if view.leader.as_deref() == Some(addr) {
            view.leader = None;
        }
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

    /// Addresses to try for discovery: known servers (leader first), then the seeds; suspect
    /// addresses last.
    async fn discovery_order(&self) -> Vec<String> {
        let order = {
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
        };
        suspects_last(order, |addr| self.is_suspect(addr))
    }

    /// Fetches the member list from the first server that answers.
    pub async fn refresh(&self) -> Result<Vec<Server>, ClientError> {
        let mut last_error = String::from("no address to try");
        let order = self.discovery_order().await;
        for addr in &order {
            let channel = match self.channel(addr).await {
                Ok(channel) => channel,
                Err(ClientError::NoServerReachable {
                    last_error: why, ..
                }) => {
                    last_error = format!("{addr}: {why}");
                    continue;
                }
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let timeout = self.shared.config.request_timeout;
            let mut request = tonic::Request::new(GetServersRequest {});
            request.set_timeout(timeout);
            match bounded(timeout, self.raw(channel).get_servers(request)).await {
                Ok(response) => {
                    self.trust(addr);
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
                    self.failed(addr).await;
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

    /// Where writes go: the leader if known, else any server (it forwards to the leader);
    /// servers that failed recently only when there is nothing else.
    async fn write_target(&self) -> Option<String> {
        let candidates: Vec<String> = {
            let view = self.shared.view.read().await;
            view.leader
                .iter()
                .cloned()
                .chain(view.servers.iter().map(|s| s.rpc_addr.clone()))
                .chain(self.shared.config.seeds.iter().cloned())
                .collect()
        };
        suspects_last(candidates, |addr| self.is_suspect(addr))
            .into_iter()
            .next()
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
        drop(view);
        suspects_last(targets, |addr| self.is_suspect(addr))
    }

    /// Runs a write against the leader, retrying only while the write surely was not appended.
    async fn write<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(RawLogClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let request_timeout = self.shared.config.request_timeout;
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
                Ok(channel) => match bounded(request_timeout, call(self.raw(channel))).await {
                    Ok(value) => {
                        self.trust(&target);
                        return Ok(value);
                    }
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
                                // The server broke the call or did not answer in time (it may
                                // be stopped): the next calls go elsewhere.
                                self.failed(&target).await;
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
                            self.failed(&target).await;
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
            let mut answered = None;
            for target in self.read_targets().await {
                let channel = match self.channel(&target).await {
                    Ok(channel) => channel,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                };
                let timeout = self.shared.config.request_timeout;
                let mut request = tonic::Request::new(ConsumeRequest {
                    offset,
                    end_offset: 0,
                });
                request.set_timeout(timeout);
                match bounded(timeout, self.raw(channel).consume(request)).await {
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
                            ClientError::Unavailable(_) | ClientError::Other(_)
                                if is_transient(&status) =>
                            {
                                if is_connect_failure(&status)
                                    || status.code() == tonic::Code::DeadlineExceeded
                                    || status.code() == tonic::Code::Cancelled
                                {
                                    self.failed(&target).await;
                                }
                                last_error = format!("{target}: {}", status.message());
                            }
                            // NB: a definite answer outside our vocabulary (another server's
                            // NOT_FOUND for past the end, say) is an answer, not unavailability:
                            // like out-of-range, ask the others and then believe it, instead of
                            // retrying until the deadline.
                            ClientError::Other(_) => answered = Some(error),
                            other => return Err(other),
                        }
                    }
                }
            }
            if let Some(error) = out_of_range.or(answered) {
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
                // Only opening the stream is bounded: a tail may then wait for new records
                // indefinitely (HTTP/2 keepalive notices a server that stopped answering).
                let opened = bounded(
                    self.shared.config.request_timeout,
                    self.raw(channel).consume_stream(ConsumeRequest {
                        offset: next,
                        end_offset: end.unwrap_or(0),
                    }),
                )
                .await;
                let mut stream = match opened {
                    Ok(response) => response.into_inner(),
                    Err(status) => {
                        let error = ClientError::from(status.clone());
                        if matches!(error, ClientError::Unavailable(_) | ClientError::Other(_)) {
                            if is_connect_failure(&status)
                                || status.code() == tonic::Code::DeadlineExceeded
                            {
                                self.failed(&target).await;
                            }
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
                                // The range is complete even if the server, not knowing
                                // `end_offset`, would keep the stream open.
                                if end.is_some_and(|end| next >= end) {
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
                                        self.failed(&target).await;
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

    /// Opens a `ProduceStream` call to the leader (see [`ProduceStream`]); up to `in_flight`
    /// records are queued before sending waits.
    pub async fn produce_stream(&self, in_flight: usize) -> Result<ProduceStream, ClientError> {
        Ok(ProduceStream::open(self.leader_channel().await?, in_flight))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Chained(&'static str, Option<Box<Chained>>);

    impl std::fmt::Display for Chained {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chained {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn an_error_chain_says_each_thing_once() {
        let error = Chained(
            "transport error",
            Some(Box::new(Chained(
                "tcp connect error",
                Some(Box::new(Chained(
                    "tcp connect error: Connection refused",
                    Some(Box::new(Chained("Connection refused", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "transport error: tcp connect error: Connection refused"
        );
        let plain = Chained("a", Some(Box::new(Chained("b", None))));
        assert_eq!(error_chain(&plain), "a: b");
    }

    #[test]
    fn suspect_addresses_go_last_in_their_order() {
        let order = suspects_last(
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
            |addr| addr == "a" || addr == "c",
        );
        assert_eq!(order, vec!["b", "d", "a", "c"]);
    }

    #[tokio::test]
    async fn a_call_that_does_not_answer_is_bounded() {
        let never = std::future::pending::<Result<(), tonic::Status>>();
        let status = bounded(Duration::from_millis(10), never)
            .await
            .expect_err("no answer");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }
}
