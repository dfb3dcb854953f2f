//! The `raft.v1.Raft` gRPC service: what peers call. Every call is authorized with the
//! `replicate` action (the node role), so a valid *client* certificate can never inject Raft
//! traffic.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use logcluster_api::raft_v1::raft_server::{Raft as RaftApi, RaftServer};
use openraft::errors::RaftError;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use parking_lot::Mutex;
use tonic::{Request, Response, Status, Streaming};

use super::closing::{Closing, until_closed};
use super::status::fatal_status;
use crate::auth::{AccessControl, action};
use crate::commit_log::NewRecord;
use crate::raft::Raft;
use crate::raft::metrics_watch;
use crate::raft::network::MAX_MESSAGE_BYTES;
use crate::raft::pb::{self, FromPb, ToPb, proto};
use crate::raft::types::{SnapshotMeta, TypeConfig, Vote};
use crate::raft::vote_gate::VoteGate;
use crate::raft::{RaftCommitLog, RaftNode};
use crate::telemetry::metrics::{Metrics, VoteKind};

/// The peer API of a node.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    commit_log: Arc<RaftCommitLog>,
    access: AccessControl,
    vote_gate: Arc<VoteGate>,
    closing: Closing,
    metrics: Metrics,
}

impl RaftService {
    pub fn new(
        raft: Raft,
        commit_log: Arc<RaftCommitLog>,
        access: AccessControl,
        vote_gate: Arc<VoteGate>,
        closing: Closing,
        metrics: Metrics,
    ) -> Self {
        RaftService {
            raft,
            commit_log,
            access,
            vote_gate,
            closing,
            metrics,
        }
    }

    /// The peer service of `node`.
    pub fn for_node(node: &RaftNode, access: AccessControl, closing: Closing) -> Self {
        RaftService::new(
            node.raft().clone(),
            Arc::clone(node.raft_commit_log()),
            access,
            Arc::clone(node.vote_gate()),
            closing,
            node.metrics().clone(),
        )
    }

    /// Refuses a vote request this node must not consider while it catches up (see
    /// [`VoteGate`]). The candidate sees an unreachable voter, which is all it needs to know.
    fn check_vote_gate(&self, req: &VoteRequest<TypeConfig>) -> Result<(), Status> {
        if self.vote_gate.admits(req.last_log_id.as_ref()) {
            Ok(())
        } else {
            Err(Status::unavailable(
                "this node has a new data directory and has not caught up with its cluster; \
                 it does not vote until it has",
            ))
        }
    }

    /// The tonic service, with message limits that fit a replication batch.
    pub fn into_server(self) -> RaftServer<RaftService> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn raft_error(e: RaftError<TypeConfig>) -> Status {
    match e {
        RaftError::Fatal(fatal) => fatal_status(fatal),
        RaftError::APIError(never) => match never {},
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<proto::StreamAppendResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RaftApi for RaftService {
    async fn append_entries(
        &self,
        request: Request<proto::AppendEntriesRequest>,
    ) -> Result<Response<proto::AppendEntriesResponse>, Status> {
        self.access.check(&request, action::REPLICATE)?;
        let req = AppendEntriesRequest::from_pb(request.into_inner())?;
        let leader_commit = req.leader_commit.map(|id| id.index);
        let resp = self.raft.append_entries(req).await.map_err(raft_error)?;
        observe_append(&self.vote_gate, &self.raft, leader_commit);
        Ok(Response::new(resp.to_pb()))
    }

    type StreamAppendStream = ResponseStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<proto::AppendEntriesRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.access.check(&request, action::REPLICATE)?;
        // A request that does not decode ends the input; the response stream then ends with
        // the reason instead of silently.
        let failure: Arc<Mutex<Option<Status>>> = Arc::new(Mutex::new(None));
        let input_failure = Arc::clone(&failure);
        // The newest leader commit index seen on the stream, for the vote gate.
        let leader_commit: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
        let input_commit = Arc::clone(&leader_commit);
        let input = futures::stream::unfold(Some(request.into_inner()), move |incoming| {
            let failure = Arc::clone(&input_failure);
            let leader_commit = Arc::clone(&input_commit);
            async move {
                let mut incoming = incoming?;
                let decoded = match incoming.message().await {
                    Ok(Some(req)) => AppendEntriesRequest::from_pb(req).map_err(Status::from),
                    Ok(None) => return None,
                    Err(status) => Err(status),
                };
                match decoded {
                    Ok(req) => {
                        *leader_commit.lock() = req.leader_commit.map(|id| id.index);
                        Some((req, Some(incoming)))
                    }
                    Err(status) => {
                        *failure.lock() = Some(status);
                        None
                    }
                }
            }
        });
        let gate = Arc::clone(&self.vote_gate);
        let output = self
            .raft
            .stream_append(input)
            .map(move |result| match result {
                Ok(result) => {
                    // The result names what this node has flushed: no metrics needed.
                    if let Ok(Some(flushed)) = &result {
                        gate.observe_append(*leader_commit.lock(), Some(flushed.index));
                    }
                    Ok(pb::stream_append_result_to_pb(&result))
                }
                Err(fatal) => Err(fatal_status(fatal)),
            });
        let trailer = futures::stream::once(async move { failure.lock().take() })
            .filter_map(|status| async move { status.map(Err) });
        // A leader's stream never ends by itself: the node's shutdown ends it.
        let stream: ResponseStream =
            Box::pin(until_closed(output.chain(trailer), self.closing.clone()));
        Ok(Response::new(stream))
    }

    async fn vote(
        &self,
        request: Request<proto::VoteRequest>,
    ) -> Result<Response<proto::VoteResponse>, Status> {
        self.access.check(&request, action::REPLICATE)?;
        let req = VoteRequest::from_pb(request.into_inner())?;
        self.check_vote_gate(&req)?;
        let resp = self.raft.vote(req).await.map_err(raft_error)?;
        self.metrics
            .record_vote_request(VoteKind::Vote, resp.vote_granted);
        Ok(Response::new(resp.to_pb()))
    }

    async fn pre_vote(
        &self,
        request: Request<proto::VoteRequest>,
    ) -> Result<Response<proto::VoteResponse>, Status> {
        self.access.check(&request, action::REPLICATE)?;
        let req = VoteRequest::from_pb(request.into_inner())?;
        self.check_vote_gate(&req)?;
        let resp = self.raft.pre_vote(req).await.map_err(raft_error)?;
        self.metrics
            .record_vote_request(VoteKind::PreVote, resp.vote_granted);
        Ok(Response::new(resp.to_pb()))
    }

    async fn install_snapshot(
        &self,
        request: Request<proto::InstallSnapshotRequest>,
    ) -> Result<Response<proto::SnapshotResponse>, Status> {
        self.access.check(&request, action::REPLICATE)?;
        let req = request.into_inner();
        let vote = Vote::from_pb(pb::required(req.vote, "InstallSnapshotRequest.vote")?)?;
        let meta = SnapshotMeta::from_pb(pb::required(req.meta, "InstallSnapshotRequest.meta")?)?;
        let snapshot = openraft::storage::Snapshot { meta, snapshot: () };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(fatal_status)?;
        Ok(Response::new(resp.to_pb()))
    }

    async fn transfer_leader(
        &self,
        request: Request<proto::TransferLeaderRequest>,
    ) -> Result<Response<proto::TransferLeaderResponse>, Status> {
        self.access.check(&request, action::REPLICATE)?;
        let req = TransferLeaderRequest::from_pb(request.into_inner())?;
        let resp = self
            .raft
            .handle_transfer_leader(req)
            .await
            .map_err(fatal_status)?;
        Ok(Response::new(pb::transfer_response_to_pb(&resp)))
    }

    async fn forward_produce(
        &self,
        request: Request<proto::ForwardProduceRequest>,
    ) -> Result<Response<proto::ForwardProduceResponse>, Status> {
        self.access.check(&request, action::REPLICATE)?;
        let records = request
            .into_inner()
            .values
            .into_iter()
            .map(|value| NewRecord { value })
            .collect();
        // Never forwarded again: a node that is no longer the leader refuses with a hint.
        let offsets = self
            .commit_log
            .append_local(records)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(proto::ForwardProduceResponse { offsets }))
    }
}

/// Lets the vote gate open once this node's log covers the leader's commit index (cheap once
/// open: the metrics are only read while the node catches up).
fn observe_append(gate: &VoteGate, raft: &Raft, leader_commit: Option<u64>) {
    if !gate.is_open() {
        let last = metrics_watch::current(raft).last_log_index;
        gate.observe_append(leader_commit, last);
    }
}
