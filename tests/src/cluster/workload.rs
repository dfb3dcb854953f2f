//! Concurrent producers and one live consumer that record a [`History`] while faults happen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use logcluster_api::{ClientError, LogClient};
use tokio::task::JoinHandle;

use crate::history::{History, Outcome};

/// Most produces one client makes in a run (bounds every load loop).
const MAX_OPS_PER_CLIENT: u64 = 200_000;

/// Producers writing unique values `"{client}-{seq}"` until stopped.
pub struct Workload {
    stop: Arc<AtomicBool>,
    producers: Vec<JoinHandle<()>>,
    consumer: Option<JoinHandle<Vec<(u64, String)>>>,
    history: Arc<History>,
}

/// What a produce error says about whether the record was written.
pub fn outcome_of(error: &ClientError) -> Outcome {
    match error {
        // May have been appended: the client never retries these behind our back.
        ClientError::OutcomeUnknown(_) | ClientError::Other(_) => Outcome::Indeterminate,
        // Everything else is a refusal before anything was appended, or retries that were all
        // refused that way until the deadline.
        _ => Outcome::Failed,
    }
}

impl Workload {
    /// Starts `producers` producing through `client` (each sequentially, so each client's
    /// operations are ordered) and, if `consume`, a live consumer from offset 0.
    pub fn start(client: &LogClient, producers: u32, consume: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(History::new());
        let producers = (0..producers)
            .map(|id| {
                let client = client.clone();
                let stop = Arc::clone(&stop);
                let history = Arc::clone(&history);
                tokio::spawn(async move {
                    for seq in 0..MAX_OPS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let value = format!("{id}-{seq}");
                        let invoked = history.now();
                        let outcome = match client.produce(value.clone().into_bytes()).await {
                            Ok(offset) => Outcome::Acked(offset),
                            Err(error) => {
                                let outcome = outcome_of(&error);
                                // Keep going: errors are expected while faults happen.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                outcome
                            }
                        };
                        history.record(id, value, invoked, outcome);
                    }
                })
            })
            .collect();
        let consumer = consume.then(|| {
            let client = client.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut stream = Box::pin(client.consume_stream(0));
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                        Ok(Some(Ok(record))) => {
                            seen.push((
                                record.offset,
                                String::from_utf8_lossy(&record.value).into_owned(),
                            ));
                        }
                        Ok(Some(Err(_)) | None) => break,
                        Err(_) => {} // nothing new: check the stop flag
                    }
                }
                seen
            })
        });
        Workload {
            stop,
            producers,
            consumer,
            history,
        }
    }

    /// The history being recorded.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Stops producing; returns the history and what the consumer saw.
    pub async fn stop(self) -> (Arc<History>, Option<Vec<(u64, String)>>) {
        self.stop.store(true, Ordering::Relaxed);
        for producer in self.producers {
            let _ = producer.await;
        }
        let seen = match self.consumer {
            Some(consumer) => consumer.await.ok(),
            None => None,
        };
        (self.history, seen)
    }
}
