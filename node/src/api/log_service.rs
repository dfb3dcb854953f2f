//! `log.v1.Log`: the client API (proglog-compatible, plus batch produce and a server watch).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use logcluster_api::log_v1::{
    self, ConsumeRequest, ConsumeResponse, GetServersRequest, GetServersResponse,
    ProduceBatchRequest, ProduceBatchResponse, ProduceRequest, ProduceResponse, RecordType,
    log_server::Log,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::closing::{Closing, until_closed};
use super::status;
use crate::auth::{AccessControl, action};
use crate::commit_log::{CommitLog, CommitLogError, MemberRole, NewRecord, ServerInfo};
use crate::log::{Entry, EntryKind};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::rpc_layer::{RpcFields, rpc_fields};

/// Limits of the client API.
#[derive(Debug, Clone)]
pub struct LogServiceLimits {
    /// Most records in one `ProduceBatch`.
    pub max_batch_records: usize,
    /// Most bytes of record values in one `ProduceBatch`.
    pub max_batch_bytes: u64,
    /// Produces of one `ProduceStream` being committed at the same time.
    pub max_in_flight_per_stream: usize,
    /// Entries a `ConsumeStream` reads from the log at a time.
    pub stream_read_entries: usize,
    /// Bytes a `ConsumeStream` reads from the log at a time (about).
    pub stream_read_bytes: usize,
    /// Responses a `ConsumeStream` buffers ahead of a slow client.
    pub stream_buffer: usize,
}

impl Default for LogServiceLimits {
    fn default() -> Self {
        LogServiceLimits {
            max_batch_records: 10_000,
            max_batch_bytes: 16 << 20,
            max_in_flight_per_stream: 1024,
            stream_read_entries: 1024,
            stream_read_bytes: 1 << 20,
            stream_buffer: 256,
        }
    }
}

/// The `log.v1.Log` service over any [`CommitLog`].
pub struct LogService {
    log: Arc<dyn CommitLog>,
    access: AccessControl,
    limits: LogServiceLimits,
    metrics: Option<Metrics>,
    closing: Closing,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl LogService {
    pub fn new(log: Arc<dyn CommitLog>, access: AccessControl, limits: LogServiceLimits) -> Self {
        LogService {
            log,
            access,
            limits,
            metrics: None,
            closing: Closing::new(),
        }
    }

    /// Ends the streams that follow the tail when `closing` fires (the node is stopping).
    pub fn with_closing(mut self, closing: Closing) -> Self {
        self.closing = closing;
        self
    }

    /// Counts records served to consumers (per node: shows which nodes serve reads).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_consumed(&self, records: u64) {
        if let Some(metrics) = &self.metrics {
            metrics.record_consumed(records);
        }
    }

    /// The largest request message the service can need to decode: a full batch, or one
    /// maximal record, with room for framing. Configure the tonic server's decoding limit with it
    /// so oversized records reach our own check (and get `RESOURCE_EXHAUSTED` with details).
    pub fn max_message_bytes(&self) -> usize {
        let largest = self.limits.max_batch_bytes.max(self.log.max_record_bytes());
        usize::try_from(largest)
            .unwrap_or(usize::MAX)
            .saturating_add(64 << 10)
    }
}

/// Checks one client record; clients may only write data records.
fn new_record(record: Option<log_v1::Record>, max: u64) -> Result<NewRecord, CommitLogError> {
    let record = record
        .ok_or_else(|| CommitLogError::InvalidArgument("the request has no record".into()))?;
    if record.r#type != RecordType::Data as u32 {
        return Err(CommitLogError::InvalidArgument(format!(
            "record type {} cannot be produced: clients write data records (type 0) only",
            record.r#type
        )));
    }
    let size = record.value.len() as u64;
    if size > max {
        return Err(CommitLogError::RecordTooLarge { size, max });
    }
    Ok(NewRecord {
        value: record.value,
    })
}

/// Bytes read per step while `Consume` looks past Raft-internal entries: enough for a run of
/// them (they are tiny), while a large data record still ends the read after itself.
const SKIP_READ_BYTES: usize = 64 << 10;

/// The first data record at or after `offset`. Raft-internal entries (a new leader's blank
/// entry, membership changes) occupy offsets but are not data: `Consume` of such an offset
/// answers with the next data record — its `offset` says which, as a record always does — and
/// with `OUT_OF_RANGE` (proglog's end of the log) when no data record follows yet. Every node
/// holds the same log, so every node gives the same answer; `ConsumeStream` skips the same
/// entries.
async fn first_data_record(log: &dyn CommitLog, offset: u64) -> Result<Entry, Status> {
    let mut from = offset;
    // Almost every offset holds data: read just it first, and runs of internal entries after.
    let mut batch = 1;
    loop {
        let entries = log
            .read(from, batch, SKIP_READ_BYTES)
            .await
            .map_err(|e| match e {
                // Reported for the offset asked for, not for where the skipping got to.
                CommitLogError::OutOfRange { first, next, .. } => CommitLogError::OutOfRange {
                    offset,
                    first,
                    next,
                },
                other => other,
            })?;
        let Some(last) = entries.last().map(|e| e.index) else {
            return Err(Status::internal(format!(
                "the log returned nothing for committed offset {from}"
            )));
        };
        for (expected, entry) in (from..).zip(entries) {
            if entry.index != expected {
                return Err(Status::internal(format!(
                    "the log returned offset {} for offset {expected}",
                    entry.index
                )));
            }
            if entry.kind == EntryKind::Data {
                return Ok(entry);
            }
        }
        from = last + 1;
        batch = 256;
    }
}

fn to_record(entry: Entry) -> log_v1::Record {
    // Raft-internal entries (blank, membership) are not client data: their payload stays inside.
    let value = if entry.kind == EntryKind::Data {
        entry.payload
    } else {
        bytes::Bytes::new()
    };
    log_v1::Record {
        value,
        offset: entry.index,
        term: entry.term,
        r#type: entry.kind as u32,
        timestamp_unix_ms: entry.timestamp_ms,
    }
}

fn to_server(info: &ServerInfo) -> log_v1::Server {
    log_v1::Server {
        id: info.id.to_string(),
        rpc_addr: info.rpc_addr.clone(),
        is_leader: info.is_leader,
        role: match info.role {
            MemberRole::Voter => log_v1::ServerRole::Voter,
            MemberRole::Learner => log_v1::ServerRole::Learner,
        } as i32,
        replicated_offset: info.replicated_offset,
    }
}

fn servers_response(servers: &[ServerInfo]) -> GetServersResponse {
    GetServersResponse {
        servers: servers.iter().map(to_server).collect(),
    }
}

async fn produce_one(log: &dyn CommitLog, record: Option<log_v1::Record>) -> Result<u64, Status> {
    let record = new_record(record, log.max_record_bytes())?;
    let offsets = log.append(vec![record]).await?;
    offsets
        .first()
        .copied()
        .ok_or_else(|| Status::internal("the log returned no offset for an appended record"))
}

#[tonic::async_trait]
impl Log for LogService {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        self.access.check(&request, action::PRODUCE)?;
        let fields = rpc_fields(&request);
        let offset = produce_one(self.log.as_ref(), request.into_inner().record).await?;
        fields.set_offset(offset);
        fields.add_count(1);
        Ok(Response::new(ProduceResponse { offset }))
    }

    async fn consume(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<ConsumeResponse>, Status> {
        self.access.check(&request, action::CONSUME)?;
        let offset = request.get_ref().offset;
        let fields = rpc_fields(&request);
        fields.set_offset(offset);
        let entry = first_data_record(self.log.as_ref(), offset).await?;
        fields.add_count(1);
        self.count_consumed(1);
        Ok(Response::new(ConsumeResponse {
            record: Some(to_record(entry)),
        }))
    }

    type ConsumeStreamStream = BoxStream<ConsumeResponse>;

    async fn consume_stream(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        self.access.check(&request, action::CONSUME)?;
        let from = request.get_ref().offset;
        // 0: follow the tail forever, whatever `from` is (even u64::MAX: an offset past the end
        // is waited for, as proglog's ConsumeStream does).
        let end = match request.get_ref().end_offset {
            0 => None,
            end => Some(end),
        };
        let fields = rpc_fields(&request);
        fields.set_offset(from);
        let first = self.log.first_offset();
        if from < first {
            return Err(CommitLogError::OutOfRange {
                offset: from,
                first,
                next: *self.log.committed().borrow(),
            }
            .into());
        }
        let (tx, rx) = mpsc::channel(self.limits.stream_buffer);
        let follower = TailFollower {
            log: Arc::clone(&self.log),
            committed: self.log.committed(),
            next: from,
            end,
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
            fields,
        };
        tokio::spawn(follower.run(tx));
        let stream = until_closed(ReceiverStream::new(rx), self.closing.clone());
        Ok(Response::new(Box::pin(stream)))
    }

    type ProduceStreamStream = BoxStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let subject = self.access.check(&request, action::PRODUCE)?;
        let fields = rpc_fields(&request);
        let inbound = request.into_inner();
        // A reader task keeps draining the HTTP/2 stream into a bounded queue while a batch
        // commits, so that up to `max_in_flight_per_stream` produces wait together.
        let (queued_tx, queued) = mpsc::channel(self.limits.max_in_flight_per_stream.max(1));
        tokio::spawn(read_stream(inbound, queued_tx));
        let (tx, rx) = mpsc::channel(self.limits.max_in_flight_per_stream.max(1));
        let writer = StreamWriter {
            log: Arc::clone(&self.log),
            access: self.access.clone(),
            subject,
            fields,
            max_records: self.limits.max_batch_records,
            max_bytes: self.limits.max_batch_bytes,
        };
        tokio::spawn(writer.run(queued, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_servers(
        &self,
        request: Request<GetServersRequest>,
    ) -> Result<Response<GetServersResponse>, Status> {
        self.access.subject(&request)?;
        let servers = self.log.servers().borrow().clone();
        Ok(Response::new(servers_response(&servers)))
    }

    async fn produce_batch(
        &self,
        request: Request<ProduceBatchRequest>,
    ) -> Result<Response<ProduceBatchResponse>, Status> {
        self.access.check(&request, action::PRODUCE)?;
        let fields = rpc_fields(&request);
        let records = request.into_inner().records;
        if records.is_empty() {
            return Err(status::invalid_argument("the batch has no records".into()));
        }
        if records.len() > self.limits.max_batch_records {
            return Err(status::invalid_argument(format!(
                "the batch has {} records; at most {} are allowed",
                records.len(),
                self.limits.max_batch_records
            )));
        }
        let total: u64 = records.iter().map(|r| r.value.len() as u64).sum();
        if total > self.limits.max_batch_bytes {
            return Err(CommitLogError::RecordTooLarge {
                size: total,
                max: self.limits.max_batch_bytes,
            }
            .into());
        }
        let max = self.log.max_record_bytes();
        let records = records
            .into_iter()
            .map(|r| new_record(Some(r), max))
            .collect::<Result<Vec<_>, _>>()?;
        let count = records.len();
        let offsets = self.log.append(records).await?;
        if offsets.len() != count {
            return Err(Status::internal(format!(
                "the log returned {} offsets for {count} records",
                offsets.len()
            )));
        }
        if let Some(first) = offsets.first() {
            fields.set_offset(*first);
        }
        fields.add_count(count as u64);
        Ok(Response::new(ProduceBatchResponse { offsets }))
    }

    type WatchServersStream = BoxStream<GetServersResponse>;

    async fn watch_servers(
        &self,
        request: Request<GetServersRequest>,
    ) -> Result<Response<Self::WatchServersStream>, Status> {
        self.access.subject(&request)?;
        let servers = self.log.servers();
        let stream = futures::stream::unfold((servers, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let response = servers_response(&rx.borrow_and_update());
            Some((Ok(response), (rx, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Forwards a client's produce stream into a queue until it ends, fails, or nobody listens.
async fn read_stream(
    mut inbound: Streaming<ProduceRequest>,
    queued: mpsc::Sender<Result<ProduceRequest, Status>>,
) {
    loop {
        let item = tokio::select! {
            item = inbound.next() => item,
            () = queued.closed() => return,
        };
        let Some(item) = item else { return };
        let item = item.map_err(super::oversized::as_resource_exhausted);
        let failed = item.is_err();
        if queued.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// Appends a `ProduceStream` in order: everything queued when the previous batch finished goes
/// into the next append as one batch, so a stream's records get increasing offsets in request
/// order while many of them share a commit.
struct StreamWriter {
    log: Arc<dyn CommitLog>,
    access: AccessControl,
    subject: String,
    fields: RpcFields,
    max_records: usize,
    max_bytes: u64,
}

impl StreamWriter {
    async fn run(
        self,
        mut queued: mpsc::Receiver<Result<ProduceRequest, Status>>,
        responses: mpsc::Sender<Result<ProduceResponse, Status>>,
    ) {
        let max_record = self.log.max_record_bytes();
        while let Some(first) = queued.recv().await {
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            // The error that ends the stream once the records before it are answered.
            let mut failure = None;
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match self.accept(item, max_record) {
                    Ok(record) => {
                        bytes += record.value.len() as u64;
                        batch.push(record);
                    }
                    Err(status) => {
                        failure = Some(status);
                        break;
                    }
                }
                if batch.len() >= self.max_records || bytes >= self.max_bytes {
                    break;
                }
                next = queued.try_recv().ok();
            }
            if !batch.is_empty() {
                let count = batch.len();
                match self.log.append(batch).await {
                    Ok(offsets) if offsets.len() == count => {
                        for offset in offsets {
                            self.fields.set_offset(offset);
                            self.fields.add_count(1);
                            if responses
                                .send(Ok(ProduceResponse { offset }))
                                .await
                                .is_err()
                            {
                                return; // the client went away
                            }
                        }
                    }
                    Ok(offsets) => {
                        failure = Some(Status::internal(format!(
                            "the log returned {} offsets for {count} records",
                            offsets.len()
                        )));
                    }
                    Err(e) => failure = Some(e.into()),
                }
            }
            if let Some(status) = failure {
                // The first error ends the stream (gRPC has no per-message status).
                let _ = responses.send(Err(status)).await;
                return;
            }
        }
    }

    /// One queued request, checked: the ACL (re-checked per message, so a policy change applies
    /// to open streams) and the record itself.
    fn accept(
        &self,
        item: Result<ProduceRequest, Status>,
        max_record: u64,
    ) -> Result<NewRecord, Status> {
        self.access.check_subject(&self.subject, action::PRODUCE)?;
        Ok(new_record(item?.record, max_record)?)
    }
}

/// Sends committed data records from `next` onwards, waiting on the commit watermark at the
/// tail (never polling), until the client goes away or the log fails.
struct TailFollower {
    log: Arc<dyn CommitLog>,
    committed: watch::Receiver<u64>,
    next: u64,
    /// The stream ends (OK) on reaching this offset; `None` follows the tail forever.
    end: Option<u64>,
    limits: LogServiceLimits,
    metrics: Option<Metrics>,
    fields: RpcFields,
}

impl TailFollower {
    async fn run(mut self, tx: mpsc::Sender<Result<ConsumeResponse, Status>>) {
        loop {
            if self.end.is_some_and(|end| self.next >= end) {
                return; // the requested range is complete
            }
            let watermark = *self.committed.borrow_and_update();
            if self.next < watermark {
                let entries = match self
                    .log
                    .read(
                        self.next,
                        self.limits.stream_read_entries,
                        self.limits.stream_read_bytes,
                    )
                    .await
                {
                    Ok(entries) => entries,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for entry in entries {
                    if self.end.is_some_and(|end| entry.index >= end) {
                        return;
                    }
                    if entry.index != self.next {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "the log returned offset {} where {} was expected",
                                entry.index, self.next
                            ))))
                            .await;
                        return;
                    }
                    self.next += 1;
                    // Raft-internal entries occupy offsets but are not data.
                    if entry.kind != EntryKind::Data {
                        continue;
                    }
                    let response = ConsumeResponse {
                        record: Some(to_record(entry)),
                    };
                    if tx.send(Ok(response)).await.is_err() {
                        return; // the client went away
                    }
                    self.fields.add_count(1);
                    if let Some(metrics) = &self.metrics {
                        metrics.record_consumed(1);
                    }
                }
                continue;
            }
            tokio::select! {
                changed = self.committed.changed() => {
                    if changed.is_err() {
                        let _ = tx.send(Err(CommitLogError::ShuttingDown.into())).await;
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    }
}
