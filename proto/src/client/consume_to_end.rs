//! "Everything from here to the end of the log": finding the committed end without depending
//! on one server's error vocabulary.
//!
//! The rule: probe with `Consume` at `u64::MAX`, an offset no log reaches, and take the answer
//! as an answer.
//!
//! * Out of range *with the range* (our `google.rpc.ErrorInfo` metadata, `next_offset`): the
//!   server advertised where the log ends; stream `[from, end)` in one `ConsumeStream` call.
//! * Any other definite refusal of the probe (another server's `NOT_FOUND`, `INVALID_ARGUMENT`,
//!   a bare `OUT_OF_RANGE`, …) says "no record there" but not where the end is; read offset by
//!   offset from `from` with `Consume`, and the first definite refusal is the end.
//! * A security refusal, `UNIMPLEMENTED`, or a cluster unavailable until the retry deadline is
//!   an error, as it is for any call.
//!
//! Transient failures (see `is_transient`) are retried by [`LogClient::consume`] either way; a
//! definite answer is never mistaken for unavailability and retried until the deadline.

use futures::StreamExt;
use futures::stream::BoxStream;

use super::{ClientError, LogClient};
use crate::log_v1::{Record, RecordType};

/// Where the committed log ends, as far as a server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnd {
    /// The offset after the last committed entry (the server advertised its range).
    At(u64),
    /// The server refused an offset past any end without saying where the end is.
    Unadvertised,
}

/// Whether a refused read says "no record at this offset" rather than "you cannot read".
fn is_no_record(error: &ClientError) -> bool {
    match error {
        ClientError::OutOfRange { .. } | ClientError::InvalidArgument(_) => true,
        ClientError::Other(status) => status.code() != tonic::Code::Unimplemented,
        _ => false,
    }
}

impl LogClient {
    /// Where the committed log ends now (see the module documentation for the rule).
    pub async fn log_end(&self) -> Result<LogEnd, ClientError> {
        match self.consume(u64::MAX).await {
            Err(ClientError::OutOfRange { next, .. }) => Ok(LogEnd::At(next)),
            Err(error) if is_no_record(&error) => Ok(LogEnd::Unadvertised),
            Err(error) => Err(error),
            Ok(record) => Err(ClientError::RecordPastTheEnd {
                offset: record.offset,
            }),
        }
    }

    /// The committed data records from `from` to the end of the log as it is now, then the
    /// stream ends.
    pub async fn consume_to_end(
        &self,
        from: u64,
    ) -> Result<BoxStream<'static, Result<Record, ClientError>>, ClientError> {
        Ok(match self.log_end().await? {
            LogEnd::At(end) => self.consume_range(from, end).boxed(),
            LogEnd::Unadvertised => self.read_until_refused(from).boxed(),
        })
    }

    /// `Consume` at `from`, `from + 1`, … until a server refuses an offset as having no record.
    fn read_until_refused(
        &self,
        from: u64,
    ) -> impl futures::Stream<Item = Result<Record, ClientError>> + Send + 'static {
        let client = self.clone();
        futures::stream::unfold(Some(from), move |next| {
            let client = client.clone();
            async move {
                let mut offset = next?;
                loop {
                    match client.consume(offset).await {
                        Ok(record) => {
                            let after = record.offset.max(offset).saturating_add(1);
                            // Raft-internal entries occupy offsets; consumers see data only.
                            if record.r#type == RecordType::Data as u32 {
                                return Some((Ok(record), Some(after)));
                            }
                            offset = after;
                        }
                        Err(error) if is_no_record(&error) => return None,
                        Err(error) => return Some((Err(error), None)),
                    }
                }
            }
        })
    }
}
