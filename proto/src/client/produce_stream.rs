//! `ProduceStream` calls whose records flow without waiting for the server's response headers.
//!
//! NB: tonic's generated `produce_stream(requests).await` resolves only once the response
//! headers have arrived. Our server sends them at once; grpc-go sends them only with its first
//! reply. A caller that awaits the call before queueing its first record therefore works
//! against ours and deadlocks against grpc-go: each side waits for the other, until a timeout
//! breaks the connection ("broken pipe"). Here the call runs in a task of its own and records go
//! through a channel, so sending never depends on when the server sends its headers.

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::error::ClientError;
use crate::log_v1::log_client::LogClient as RawLogClient;
use crate::log_v1::{ProduceRequest, ProduceResponse, Record};

/// One open `ProduceStream` call: [`ProduceStream::send`] records, read their offsets in order
/// with [`ProduceStream::next`].
///
/// Dropping it cancels the call. The stream is not retried: a record sent before a failure may
/// or may not have been appended.
#[derive(Debug)]
pub struct ProduceStream {
    requests: Option<mpsc::Sender<ProduceRequest>>,
    responses: mpsc::Receiver<Result<ProduceResponse, tonic::Status>>,
}

impl ProduceStream {
    /// Opens the call on `channel`; up to `in_flight` records are queued before
    /// [`ProduceStream::send`] waits.
    pub fn open(channel: Channel, in_flight: usize) -> Self {
        let mut raw = RawLogClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (requests, outbound) = mpsc::channel::<ProduceRequest>(in_flight.max(1));
        let (replies, responses) = mpsc::channel(in_flight.max(1));
        tokio::spawn(async move {
            let outbound = futures::stream::unfold(outbound, |mut rx| async move {
                rx.recv().await.map(|request| (request, rx))
            });
            let call = tokio::select! {
                () = replies.closed() => return,
                call = raw.produce_stream(outbound) => call,
            };
            let mut inbound = match call {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = replies.send(Err(status)).await;
                    return;
                }
            };
            loop {
                let message = tokio::select! {
                    () = replies.closed() => return,
                    message = inbound.message() => message,
                };
                let reply = match message {
                    Ok(Some(response)) => Ok(response),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if replies.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        ProduceStream {
            requests: Some(requests),
            responses,
        }
    }

    /// Queues one record, waiting while `in_flight` records are queued. Fails with
    /// [`ClientError::StreamClosed`] once the call has ended or [`ProduceStream::finish`] was
    /// called; [`ProduceStream::next`] then tells how it ended.
    pub async fn send(&self, value: impl Into<Bytes>) -> Result<(), ClientError> {
        let requests = self.requests.as_ref().ok_or(ClientError::StreamClosed)?;
        let request = ProduceRequest {
            record: Some(Record {
                value: value.into(),
                ..Record::default()
            }),
        };
        requests
            .send(request)
            .await
            .map_err(|_| ClientError::StreamClosed)
    }

    /// No more records: the server answers those sent and then ends the call.
    pub fn finish(&mut self) {
        self.requests = None;
    }

    /// The offset of the next record sent, in order; `None` once the server ended the call.
    pub async fn next(&mut self) -> Option<Result<u64, ClientError>> {
        let reply = self.responses.recv().await?;
        Some(
            reply
                .map(|response| response.offset)
                .map_err(ClientError::from),
        )
    }
}
