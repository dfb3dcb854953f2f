//! The Raft network: openraft's network traits over `raft.v1` gRPC, with mutual TLS.
//!
//! [`PeerChannels`] keeps **one** tonic `Channel` (one HTTP/2 connection) per peer address,
//! created lazily on first use and reused by every RPC, heartbeat and stream to that peer —
//! replication, heartbeats, snapshots, votes and forwarded produces all multiplex over it. It
//! dials with the node certificate through the *current* client configuration of
//! [`ReloadingTlsFiles`], so connections opened after a certificate renewal present the new
//! certificate. tonic reconnects a channel whose connection broke.
//!
//! Errors: a failure to connect (TCP or TLS) is `Unreachable` (openraft backs off longer); a
//! call that exceeded its deadline ([`rpc_deadline`]) is `Timeout`; anything else is `Network`. Connection
//! failures are recognised by the [`CONNECT_FAILED`] prefix our connector puts on them, because
//! tonic reduces a connect error to a plain `UNAVAILABLE` status.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use logcluster_api::raft_v1::raft_client::RaftClient;
use openraft::base::BoxStream;
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{
    Backoff, NetBackoff, NetSnapshot, NetStreamAppend, NetTransferLeader, NetVote, RPCOption,
    RaftNetworkFactory,
};
use openraft::raft::{
    AppendEntriesRequest, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RPCTypes};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Uri};

use super::connect_backoff::ConnectBackoff;
use super::pb::{self, FromPb, ToPb, proto};
use super::types::{Node, NodeId, Snapshot, TypeConfig, Vote};
use super::unanswered::{Answer, Unanswered, next_answer};
use crate::auth::AuthError;
use crate::auth::tls::{ReloadingTlsFiles, TlsConnector, endpoint};

/// Prefix of the error of a connection attempt that failed (nothing was sent on it).
pub const CONNECT_FAILED: &str = "connecting to peer failed";

/// Time to establish TCP + TLS to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings detect a dead peer connection (e.g. a paused process) even while idle.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// The shortest deadline we give a peer RPC. openraft derives its deadlines from the heartbeat
/// interval (150 ms for heartbeats and for opening a replication stream), which is right on an
/// idle machine and wrong on a loaded one: a node starved of CPU for 200 ms answered every
/// heartbeat too late, each was cancelled (and with it the follower's handler), no ack was ever
/// recorded, and a five-pod cluster reported "2 of 5 voters healthy" for minutes while every
/// node was up. A late answer is still an answer — openraft ignores one for an old term — so
/// waiting longer costs nothing; a dead peer is found by the HTTP/2 keepalive and by elections,
/// not by these deadlines.
const MIN_RPC_DEADLINE: Duration = Duration::from_secs(2);
/// Largest raft.v1 message: a replication batch or one large record plus headers.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// One lazily created, reused gRPC channel per peer address, dialed with the node certificate.
#[derive(Clone)]
pub struct PeerChannels {
    inner: Arc<ChannelsInner>,
}

struct ChannelsInner {
    tls: ReloadingTlsFiles,
    source_ip: Option<IpAddr>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl std::fmt::Debug for PeerChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerChannels")
            .field(
                "peers",
                &self
                    .inner
                    .channels
                    .lock()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why no channel to a peer could be set up (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum PeerChannelError {
    #[error("no TLS client configuration: {0}")]
    Tls(#[source] AuthError),
    #[error("invalid peer address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: AuthError,
    },
}

impl PeerChannels {
    /// Channels that dial with `tls`'s current client configuration, from `source_ip` when
    /// given (the node's own address; see [`TlsConnector::with_source_ip`]).
    pub fn new(tls: ReloadingTlsFiles, source_ip: Option<IpAddr>) -> Self {
        PeerChannels {
            inner: Arc::new(ChannelsInner {
                tls,
                source_ip,
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The channel to `addr` (host:port), created on first use. No I/O happens here: the
    /// connection is made by the first call (and remade after it breaks).
    pub fn channel(&self, addr: &str) -> Result<Channel, PeerChannelError> {
        let mut channels = self.inner.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let config = self
            .inner
            .tls
            .client_config()
            .map_err(PeerChannelError::Tls)?;
        let endpoint = endpoint(addr)
            .map_err(|source| PeerChannelError::Address {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            // Replication batches are large; do not let flow control throttle a fast follower.
            .initial_connection_window_size(Some(32 << 20))
            .initial_stream_window_size(Some(8 << 20));
        let mut connector = TlsConnector::new(config);
        if let Some(ip) = self.inner.source_ip {
            connector = connector.with_source_ip(ip);
        }
        let channel = endpoint.connect_with_connector_lazy(MarkedConnector(connector));
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A `raft.v1` client on the channel to `addr`.
    pub fn client(&self, addr: &str) -> Result<RaftClient<Channel>, PeerChannelError> {
        Ok(RaftClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// [`TlsConnector`] whose errors say that the connection (and so no request) was made.
#[derive(Clone)]
struct MarkedConnector(TlsConnector);

impl tower::Service<Uri> for MarkedConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.0.clone();
        Box::pin(async move {
            connector
                .connect(&uri)
                .await
                .map(TokioIo::new)
                .map_err(|e| io::Error::new(e.kind(), format!("{CONNECT_FAILED} {uri}: {e}")))
        })
    }
}

/// Whether `status` reports a failed connection attempt (so the request was never sent).
pub fn is_connect_failure(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().contains(CONNECT_FAILED)
}

/// openraft's network factory: one [`PeerClient`] per target, sharing [`PeerChannels`].
#[derive(Clone, Debug)]
pub struct Network {
    id: NodeId,
    channels: PeerChannels,
}

impl Network {
    pub fn new(id: NodeId, channels: PeerChannels) -> Self {
        Network { id, channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            id: self.id,
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            backoff: Arc::default(),
        }
    }
}

/// The network to one peer.
pub struct PeerClient {
    id: NodeId,
    target: NodeId,
    addr: String,
    channels: PeerChannels,
    /// Shared with the response stream of each replication session.
    backoff: Arc<ConnectBackoff>,
}

impl PeerClient {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.channels
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    fn timeout(&self, action: RPCTypes, timeout: Duration) -> RPCError<TypeConfig> {
        RPCError::Timeout(Timeout {
            action,
            id: self.id,
            target: self.target,
            timeout,
        })
    }

    /// Runs `call` with openraft's deadline and maps every failure.
    async fn call<T, F>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
        call: F,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = rpc_deadline(option);
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status_error(&status)),
            Err(_) => Err(self.timeout(action, deadline)),
        }
    }
}

/// How long a peer RPC may take: openraft's deadline, but never less than [`MIN_RPC_DEADLINE`].
fn rpc_deadline(option: &RPCOption) -> Duration {
    option.hard_ttl().max(MIN_RPC_DEADLINE)
}

/// A failed call as openraft's RPC error.
fn status_error(status: &tonic::Status) -> RPCError<TypeConfig> {
    if is_connect_failure(status) {
        RPCError::Unreachable(Unreachable::new(status))
    } else {
        RPCError::Network(NetworkError::new(status))
    }
}

fn convert_error(e: pb::ConvertError) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&e))
}

impl NetBackoff<TypeConfig> for PeerClient {
    fn backoff(&self) -> Option<Backoff> {
        // openraft's configured default (Config::backoff).
        None
    }
}

impl NetVote<TypeConfig> for PeerClient {
    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let resp = self
            .call(RPCTypes::Vote, &option, client.vote(rpc.to_pb()))
            .await?;
        VoteResponse::from_pb(resp).map_err(convert_error)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let resp = self
            .call(RPCTypes::Vote, &option, client.pre_vote(rpc.to_pb()))
            .await?;
        VoteResponse::from_pb(resp).map_err(convert_error)
    }
}

impl NetTransferLeader<TypeConfig> for PeerClient {
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let resp = self
            .call(
                RPCTypes::TransferLeader,
                &option,
                client.transfer_leader(req.to_pb()),
            )
            .await?;
        pb::transfer_response_from_pb(resp).map_err(convert_error)
    }
}

impl NetSnapshot<TypeConfig> for PeerClient {
    type SnapshotData = ();

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let request = proto::InstallSnapshotRequest {
            vote: Some(vote.to_pb()),
            meta: Some(snapshot.meta.to_pb()),
        };
        let call = self.call(
            RPCTypes::InstallSnapshot,
            &option,
            client.install_snapshot(request),
        );
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            resp = call => resp?,
        };
        SnapshotResponse::from_pb(resp).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}

impl NetStreamAppend<TypeConfig> for PeerClient {
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> openraft::base::BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            // openraft sends on this stream only when it has something to replicate, so it
            // is silent while the cluster is idle: the deadline runs only while a request is
            // unanswered (see `unanswered`).
            let unanswered = Unanswered::default();
            let sending = unanswered.clone();
            let requests = input.map(move |req| {
                sending.sent();
                req.to_pb()
            });
            let opened = self
                .call(
                    RPCTypes::AppendEntries,
                    &option,
                    client.stream_append(requests),
                )
                .await;
            let responses = match opened {
                Ok(responses) => responses,
                Err(error) => {
                    if matches!(error, RPCError::Unreachable(_)) {
                        self.backoff.after_failure().await;
                    }
                    return Err(error);
                }
            };
            let backoff = Arc::clone(&self.backoff);
            // A response is due for every request sent; if the follower stops answering for
            // this long, the stream is broken (keepalive would also notice a dead connection).
            let item_timeout = (option.hard_ttl() * 20).max(rpc_deadline(&option));
            let (id, target) = (self.id, self.target);
            let stream = futures::stream::unfold(Some((responses, unanswered)), move |state| {
                let backoff = Arc::clone(&backoff);
                async move {
                    let (mut responses, unanswered) = state?;
                    match next_answer(&mut responses, &unanswered, item_timeout).await {
                        Answer::Message(resp) => {
                            backoff.reset();
                            let result =
                                pb::stream_append_result_from_pb(resp).map_err(convert_error);
                            let keep = result.is_ok();
                            Some((result, keep.then_some((responses, unanswered))))
                        }
                        Answer::End => None,
                        Answer::Failed(status) => {
                            let error = status_error(&status);
                            if matches!(error, RPCError::Unreachable(_)) {
                                backoff.after_failure().await;
                            }
                            Some((Err(error), None))
                        }
                        Answer::Overdue => Some((
                            Err(RPCError::Timeout(Timeout {
                                action: RPCTypes::AppendEntries,
                                id,
                                target,
                                timeout: item_timeout,
                            })),
                            None,
                        )),
                    }
                }
            });
            let stream: BoxStream<'s, _> = Box::pin(stream);
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_derived_deadlines_are_raised_to_the_floor_and_longer_ones_kept() {
        let heartbeat = RPCOption::new(Duration::from_millis(150));
        assert_eq!(rpc_deadline(&heartbeat), MIN_RPC_DEADLINE);
        let snapshot = RPCOption::new(Duration::from_secs(5));
        assert_eq!(rpc_deadline(&snapshot), Duration::from_secs(5));
    }
}
