//! Reading back what one node holds as committed, over a channel to that node alone (never
//! through a client that could pick another server): what the history checker compares.

use logcluster_api::log_v1::ConsumeRequest;
use logcluster_api::log_v1::log_client::LogClient as RawClient;
use tonic::transport::Channel;

use crate::history::NodeLog;

/// Why what a node holds as committed could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// The read past the end was refused without the `next_offset` detail that tells the end.
    #[error("{node}: the read at u64::MAX named no next_offset: {status}")]
    NoNextOffset {
        node: String,
        #[source]
        status: Box<tonic::Status>,
    },
    /// The node answered a read at `u64::MAX` with a record.
    #[error("{node}: a record at u64::MAX")]
    RecordPastTheEnd { node: String },
    /// Streaming the committed records failed.
    #[error("{node}: reading the committed records: {status}")]
    Consume {
        node: String,
        #[source]
        status: Box<tonic::Status>,
    },
}

/// The offset after the last entry the node behind `channel` serves as committed: it answers a
/// read at `u64::MAX` with the `next_offset` in its error details.
pub async fn committed_end(channel: Channel, node: &str) -> Result<u64, ReadBackError> {
    let mut client = RawClient::new(channel);
    match client
        .consume(ConsumeRequest {
            offset: u64::MAX,
            end_offset: 0,
        })
        .await
    {
        Err(status) => tonic_types::StatusExt::get_error_details(&status)
            .error_info()
            .and_then(|info| info.metadata.get("next_offset")?.parse().ok())
            .ok_or_else(|| ReadBackError::NoNextOffset {
                node: node.to_owned(),
                status: Box::new(status),
            }),
        Ok(_) => Err(ReadBackError::RecordPastTheEnd {
            node: node.to_owned(),
        }),
    }
}

/// Every committed data record of the node behind `channel`, in log order.
pub async fn committed_records(channel: Channel, node: &str) -> Result<NodeLog, ReadBackError> {
    let end = committed_end(channel.clone(), node).await?;
    let consume = |status| ReadBackError::Consume {
        node: node.to_owned(),
        status: Box::new(status),
    };
    let mut client = RawClient::new(channel);
    let mut stream = client
        .consume_stream(ConsumeRequest {
            offset: 0,
            end_offset: end,
        })
        .await
        .map_err(consume)?
        .into_inner();
    let mut records = Vec::new();
    while let Some(message) = stream.message().await.map_err(consume)? {
        if let Some(record) = message.record {
            records.push((
                record.offset,
                String::from_utf8_lossy(&record.value).into_owned(),
            ));
        }
    }
    Ok(NodeLog {
        node: node.to_owned(),
        records,
    })
}
