//! Waiting on openraft's metrics (never polling with sleeps).

use std::time::Duration;

use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;

use super::types::{Raft, TypeConfig};

/// The current metrics of `raft`.
pub fn current(raft: &Raft) -> RaftMetrics<TypeConfig> {
    raft.metrics().borrow_watched().clone()
}

/// Waits until `condition` holds for `raft`'s metrics and returns them; an error after
/// `timeout` (with the last metrics seen) or when Raft stopped.
pub async fn wait_until(
    raft: &Raft,
    timeout: Duration,
    mut condition: impl FnMut(&RaftMetrics<TypeConfig>) -> bool,
) -> Result<RaftMetrics<TypeConfig>, String> {
    let mut watch = raft.metrics();
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let metrics = watch.borrow_and_update().clone();
            if condition(&metrics) {
                return Ok(metrics);
            }
            if watch.changed().await.is_err() {
                return Err("raft has stopped".to_owned());
            }
        }
    })
    .await;
    match waited {
        Ok(result) => result,
        Err(_) => Err(format!(
            "condition not met within {timeout:?}; last metrics: {}",
            current(raft)
        )),
    }
}
