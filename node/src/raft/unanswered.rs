//! The deadline of a replication stream: a follower must answer each request in time, but an
//! idle stream is not a broken one.
//!
//! openraft keeps one `StreamAppend` open per follower and sends a request only when there is
//! something to send (new entries, a commit index to pass on). Between writes the stream is
//! silent in both directions, so a plain "next response within N seconds" timer fires on every
//! idle cluster: every stream was torn down every 3 s with a warning, and each such "timeout"
//! added to openraft's error rank for that follower until it throttled real replication with
//! its backoff. [`Unanswered`] records when each request went out, and [`next_answer`] only
//! gives up when the *oldest unanswered* request has waited too long. A dead or paused peer is
//! still noticed: its answers stop (and HTTP/2 keepalive closes a dead connection).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Send times of the requests on one stream that have not been answered yet, oldest first.
#[derive(Clone, Default)]
pub struct Unanswered {
    sent: Arc<Mutex<VecDeque<Instant>>>,
    more: Arc<Notify>,
}

impl Unanswered {
    /// A request is being sent now.
    pub fn sent(&self) {
        self.sent.lock().push_back(Instant::now());
        // A stored permit wakes a waiter that has not started waiting yet.
        self.more.notify_one();
    }

    /// The oldest request got its answer (the follower answers in order, one per request).
    fn answered(&self) {
        self.sent.lock().pop_front();
    }

    fn oldest(&self) -> Option<Instant> {
        self.sent.lock().front().copied()
    }
}

/// What [`next_answer`] saw on the response stream.
#[derive(Debug)]
pub enum Answer<T, E> {
    Message(T),
    Failed(E),
    /// The follower ended the stream.
    End,
    /// The oldest unanswered request has waited `limit`.
    Overdue,
}

/// The next response on `responses`, waiting without a deadline while no request is
/// outstanding and at most `limit` past the oldest unanswered one.
pub async fn next_answer<S, T, E>(
    responses: &mut S,
    unanswered: &Unanswered,
    limit: Duration,
) -> Answer<T, E>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    loop {
        let deadline = unanswered.oldest().map(|sent| sent + limit);
        let wait = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => unanswered.more.notified().await,
            }
        };
        // `StreamExt::next` on an `Unpin` stream is cancel-safe: losing the race loses nothing.
        tokio::select! {
            biased;
            next = responses.next() => {
                return match next {
                    Some(Ok(message)) => {
                        unanswered.answered();
                        Answer::Message(message)
                    }
                    Some(Err(e)) => Answer::Failed(e),
                    None => Answer::End,
                };
            }
            () = wait => {
                if deadline.is_some() {
                    return Answer::Overdue;
                }
                // A request went out: wait again, now with its deadline.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc;

    use super::*;

    type Responses = mpsc::UnboundedReceiver<Result<u32, String>>;

    const LIMIT: Duration = Duration::from_secs(3);

    fn stream() -> (mpsc::UnboundedSender<Result<u32, String>>, Responses) {
        mpsc::unbounded()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_never_times_out() {
        let (_tx, mut rx) = stream();
        let unanswered = Unanswered::default();
        // With the clock paused, tokio advances time whenever every task waits: a deadline
        // would fire within this hour of virtual time.
        let waited = tokio::time::timeout(
            Duration::from_secs(3600),
            next_answer(&mut rx, &unanswered, LIMIT),
        )
        .await;
        assert!(waited.is_err(), "an idle stream gave {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_is_overdue_after_the_limit() {
        let (_tx, mut rx) = stream();
        let unanswered = Unanswered::default();
        unanswered.sent();
        let started = Instant::now();
        let answer = next_answer(&mut rx, &unanswered, LIMIT).await;
        assert!(matches!(answer, Answer::Overdue), "{answer:?}");
        assert_eq!(started.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_sent_while_waiting_gets_its_own_deadline() {
        let (_tx, mut rx) = stream();
        let unanswered = Unanswered::default();
        let sender = unanswered.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            sender.sent();
        });
        let started = Instant::now();
        let answer = next_answer(&mut rx, &unanswered, LIMIT).await;
        assert!(matches!(answer, Answer::Overdue), "{answer:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10) + LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_clear_their_requests_in_order() {
        let (tx, mut rx) = stream();
        let unanswered = Unanswered::default();
        unanswered.sent();
        unanswered.sent();
        tx.unbounded_send(Ok(1)).expect("send");
        assert!(matches!(
            next_answer(&mut rx, &unanswered, LIMIT).await,
            Answer::Message(1)
        ));
        // One request is still unanswered: it becomes overdue.
        assert!(matches!(
            next_answer(&mut rx, &unanswered, LIMIT).await,
            Answer::Overdue
        ));
        tx.unbounded_send(Ok(2)).expect("send");
        assert!(matches!(
            next_answer(&mut rx, &unanswered, LIMIT).await,
            Answer::Message(2)
        ));
        // Nothing outstanding any more: errors and the end still come through.
        tx.unbounded_send(Err("broken".into())).expect("send");
        assert!(matches!(
            next_answer(&mut rx, &unanswered, LIMIT).await,
            Answer::Failed(e) if e == "broken"
        ));
        drop(tx);
        assert!(matches!(
            next_answer(&mut rx, &unanswered, LIMIT).await,
            Answer::End
        ));
    }
}
