//! Long-lived response streams end when the node shuts down.
//!
//! A graceful gRPC shutdown waits for every open call to finish, but two of our calls never
//! finish on their own: a leader's replication stream (`raft.v1.Raft/StreamAppend`) and a
//! `ConsumeStream` that follows the tail. Left open, they hold a stopping node until it is
//! killed — the Raft log is then not closed cleanly and a rolling update waits out the pod's
//! grace period at every step. [`until_closed`] ends such a stream with `UNAVAILABLE` once
//! the node's [`Closing`] signal fires, so the peer or client goes to another node at once.

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Fired once when the node stops serving; shared by every service.
pub type Closing = CancellationToken;

/// What a client reads when its stream was cut by a shutdown.
pub const SHUTTING_DOWN: &str = "the node is shutting down; retry on another node";

/// `stream` until it ends or `closing` fires; in the second case one last
/// `UNAVAILABLE` item says why.
pub fn until_closed<S, T>(stream: S, closing: Closing) -> impl Stream<Item = Result<T, Status>>
where
    S: Stream<Item = Result<T, Status>>,
{
    let closed = closing.clone();
    stream.take_until(closing.cancelled_owned()).chain(
        futures::stream::once(async move { closed.is_cancelled() }).filter_map(
            |closed| async move { closed.then(|| Err(Status::unavailable(SHUTTING_DOWN))) },
        ),
    )
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc;

    use super::*;

    #[tokio::test]
    async fn a_stream_that_ends_by_itself_ends_without_an_error() {
        let items = futures::stream::iter([Ok::<u32, Status>(1), Ok(2)]);
        let seen: Vec<_> = until_closed(items, Closing::new()).collect().await;
        assert_eq!(
            seen.into_iter()
                .map(|r| r.expect("no error"))
                .collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[tokio::test]
    async fn closing_ends_an_open_stream_with_unavailable() {
        let (tx, rx) = mpsc::unbounded::<Result<u32, Status>>();
        let closing = Closing::new();
        let mut stream = Box::pin(until_closed(rx, closing.clone()));
        tx.unbounded_send(Ok(7)).expect("send");
        assert_eq!(stream.next().await.map(|r| r.ok()), Some(Some(7)));
        // The sender stays open: only the signal can end the stream.
        closing.cancel();
        let last = stream.next().await.expect("a last item");
        let status = last.expect_err("the last item is the shutdown");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), SHUTTING_DOWN);
        assert!(stream.next().await.is_none());
        drop(tx);
    }
}
