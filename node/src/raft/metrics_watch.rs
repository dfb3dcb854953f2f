//! Waiting on openraft's metrics (never polling with sleeps).

use std::time::Duration;

use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;

use super::Raft;
use super::types::TypeConfig;

/// The current metrics of `raft`.
pub fn current(raft: &Raft) -> RaftMetrics<TypeConfig> {
    raft.metrics().borrow_watched().clone()
}

/// Why a wait on the metrics ended without the condition holding.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("raft has stopped")]
    Stopped,
    /// `last` is the last metrics seen, for the log line that reports the wait.
    #[error("condition not met within {after:?}; last metrics: {last}")]
    TimedOut { after: Duration, last: String },
}

/// Waits until `condition` holds for `raft`'s metrics and returns them; an error after
/// `timeout` (with the last metrics seen) or when Raft stopped.
pub async fn wait_until(
    raft: &Raft,
    timeout: Duration,
    mut condition: impl FnMut(&RaftMetrics<TypeConfig>) -> bool,
) -> Result<RaftMetrics<TypeConfig>, WaitError> {
    let mut watch = raft.metrics();
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let metrics = watch.borrow_and_update().clone();
            if condition(&metrics) {
                return Ok(metrics);
            }
            if watch.changed().await.is_err() {
                return Err(WaitError::Stopped);
            }
        }
    })
    .await;
    match waited {
        Ok(result) => result,
        Err(_) => Err(WaitError::TimedOut {
            after: timeout,
            last: current(raft).to_string(),
        }),
    }
}
